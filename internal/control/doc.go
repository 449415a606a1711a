// Package control is lbd's authenticated HTTPS control API: the remote,
// secure channel that nib's penctl uses (Pen's plain-text -C listener stays
// for local use). It owns the API's secrets in lbd's state directory and the
// HTTPS server; lbd supplies what the API reads and changes through the
// Backend interface, so the server is testable without lbd.
//
// # Secrets
//
// EnsureSecrets keeps three files in the state directory, each mode 0600,
// created (atomically) when missing and reused when present:
//
//	control.key    ECDSA P-256 private key, PKCS#8 PEM ("PRIVATE KEY")
//	control.crt    self-signed certificate for the key, PEM; SANs are the
//	               host name, "localhost" and the names and addresses given;
//	               valid 10 years
//	control.token  the bearer token: 32 random bytes as 64 lower-case hex
//	               digits (and a newline, which readers trim)
//
// The certificate's fingerprint (Secrets.Fingerprint, Fingerprint) is the
// SHA-256 of its DER encoding as 64 lower-case hex digits without colons;
// clients pin it instead of trusting a CA.
//
// # API (version 1; stable)
//
// HTTPS only (TLS 1.3 preferred, 1.2 minimum). Every request needs the
// header "Authorization: Bearer TOKEN" (the status page's routes and its
// read-only session cookie are the exceptions: see Status page). Bodies
// and replies are JSON (UTF-8) unless noted; a request body is at most
// 64 KiB.
//
//	POST /api/v1/pen     body {"command":"servers"}
//	                     → 200 {"output":"<Pen's text output>"}
//	                     The command is one Pen control verb line, run by the
//	                     same interpreter as lbd's -C listener (verbs that
//	                     name files are refused). An unknown verb is 400
//	                     {"error":"unknown verb ...; Pen's verbs: ..."}; a
//	                     command that fails (bad arguments, a change that
//	                     cannot be applied) is 422 {"output":"...",
//	                     "error":"..."}, with the running config unchanged.
//	GET  /api/v1/status  → 200 Status (see the Status type for the fields)
//	GET  /api/v1/history → 200 HistoryReply: the status page's chart data
//	                     (see Status page), oldest point first:
//	                     {"interval_seconds":5,"points":[{"time":
//	                     "<RFC 3339>","services":[{"name":"web",
//	                     "active":3,"accepted_per_second":1.5,
//	                     "sent_bytes_per_second":2048,
//	                     "received_bytes_per_second":8192,
//	                     "packets_per_second":0}]}]}
//	GET  /api/v1/config  → 200 text/plain: the running config as TOML; with
//	                     ?format=json or "Accept: application/json", the
//	                     same as a JSON object (the TOML's keys and tables)
//	POST /api/v1/write   → 200 {"ok":true}: the running config was saved as
//	                     TOML, atomically, to lbd's -config file;
//	                     500 {"error":"..."} when it could not be
//	POST /api/v1/backend body {"service":"web","backend":"10.0.0.5:80",
//	                     "op":"add"} → 200 {"ok":true,"index":N}
//	                     One change to a backend named by service and
//	                     address ("ip:port", or "ip" when unique in the
//	                     service; DSR backends by ip): op add (optional
//	                     "weight", default 1), remove, drain, undrain,
//	                     weight ("weight" required) — changes of the
//	                     running config, applied like a reload (nothing
//	                     established is dropped) and saved only by write —
//	                     or blacklist ("seconds", 0 clears), runtime state
//	                     as Pen's "server N blacklist T". index is the
//	                     backend's position (remove: the one it had).
//	                     404 no such service or backend, 409 add of an
//	                     existing backend, 400 a bad request, 422 the
//	                     change could not be applied (the config stays)
//	POST /api/v1/check   body {"service":"web"} → 200 {"ok":false,
//	                     "lines":["198.51.100.22 02:00:... arp leak: ..."]}
//	                     Checks a DSR service's backends from lbd's own
//	                     interface (internal/dsrcheck, as setup check):
//	                     one line per backend (ok, arp leak, vip not bound,
//	                     not listening, unreachable) and warnings; ok is
//	                     true when every backend is ready. Takes up to a
//	                     few seconds. 404 no such service, 400 not a DSR
//	                     service, 500 the check could not run
//	POST /api/v1/reload  → 200 {"ok":true}: lbd's -config file was re-read
//	                     and applied; 422 {"error":"<errors>"} when it is
//	                     invalid or cannot be applied (the errors are
//	                     file:line:col lines for an invalid file), with the
//	                     old config still running
//	GET  /metrics        → 200 Prometheus text exposition format (see
//	                     Metrics below)
//
// Errors, all with a JSON body {"error":"<message>"}:
//
//	400 malformed request body (bad JSON, empty command)
//	401 missing or wrong token ("unauthorized"; with WWW-Authenticate: Bearer)
//	403 the client's address is refused by the control ACL ("forbidden")
//	404 unknown path
//	405 wrong method (with Allow)
//	413 request body over 64 KiB
//	429 too many failed attempts from this source; Retry-After says when
//	    the next attempt is checked. The token is not even looked at
//	    until then, so a brute force gets nowhere.
//	500 the operation failed inside lbd
//
// Failed attempts are counted per source address (IPv6 per /64): after 5
// failures within a minute the source is blocked for 1s, doubling with each
// further failure up to 5 minutes. A correct token resets the source's
// count. The table is bounded (MaxSources entries). Refused requests
// (401, 403, 429) close their connection. A source may hold at most 16
// connections, the server 256; connections over that are closed at once.
//
// # Metrics
//
// GET /metrics serves Prometheus metrics, behind the same token as the rest
// of the API: a scrape job authenticates with Prometheus' authorization
// setting and pins nothing, so give it the certificate as its CA (the
// certificate is self-signed; its SANs must match the target) or set
// insecure_skip_verify:
//
//	scrape_configs:
//	  - job_name: lbd
//	    scheme: https
//	    authorization: {type: Bearer, credentials_file: /etc/prometheus/lbd.token}
//	    tls_config: {ca_file: /etc/prometheus/lbd.crt}
//	    static_configs: [{targets: ["nib.example:8443"]}]
//
// A Collector builds the metrics from one Status snapshot per scrape, so
// nothing is counted on lbd's data path for them. They live in a registry
// of their own (no Go runtime or process metrics):
//
//	lbd_build_info{version}                        always 1
//	lbd_reloads_total{outcome}                     counter: config file
//	                                               re-reads, outcome applied,
//	                                               rejected (invalid) or failed
//	lbd_service_connections_active{service}        gauge   (proxy services)
//	lbd_service_connections_total{service}         counter (proxy services)
//	lbd_service_refused_total{service}             counter (proxy services)
//	lbd_service_local_errors_total{service}        counter (proxy services)
//	lbd_service_flow_limited_total{service}        counter (proxy services)
//	lbd_backend_connections_active{service,backend,index}    gauge (proxy)
//	lbd_backend_connections_total{service,backend,index}     counter (proxy)
//	lbd_backend_connect_failures_total{service,backend,index} counter (proxy)
//	lbd_backend_bytes_sent_total{service,backend,index}      counter
//	lbd_backend_bytes_received_total{service,backend,index}  counter (proxy)
//	lbd_backend_packets_total{service,backend,index}         counter (DSR)
//	lbd_backend_up{service,backend,index}          1 when its state is ok
//	lbd_backend_health_up{service,backend,index}   1 while it passes its
//	                                               service's health check
//	lbd_backend_health_check_latency_seconds{service,backend,index} gauge
//	lbd_backend_health_checks_total{service,backend,index}          counter
//	lbd_backend_health_check_failures_total{service,backend,index}  counter
//	lbd_backend_health_transitions_total{service,backend,index}     counter
//	                                               (health metrics only for
//	                                               services with a check)
//	lbd_dsr_frames_received_total{interface}       counter
//	lbd_dsr_frames_forwarded_total{interface}      counter
//	lbd_dsr_frames_dropped_total{interface,reason} counter
//	lbd_dsr_partial_checksums_total{interface}     counter
//	lbd_dsr_super_frames_total{interface}          counter
//	lbd_dsr_read_errors_total{interface}           counter
//	lbd_tarpit_replies_total{interface}            counter
//	lbd_arp_requests_seen_total{interface}         counter
//	lbd_arp_replies_total{interface,kind}          counter (kind vip, tarpit)
//	lbd_arp_backend_learned_total{interface}       counter
//	lbd_arp_unsolicited_ignored_total{interface}   counter
//	lbd_arp_conflicts_total{interface}             counter
//
// backend is the backend's address, index its position in the service.
// DSR and ARP counters belong to the interface, shared by the DSR services
// on it, and appear once. Counters restart from zero when lbd restarts.
//
// # Status page
//
// GET / is a live status page for a browser: per service its counters, a
// table of its backends (state, weight, connections, bytes, packets), the
// DSR, ARP and tarpit counters of DSR services, and small charts of
// connections/s (packets/s for DSR) and throughput over the last minutes.
// Its script polls /api/v1/status every 2 s and /api/v1/history every
// sampling interval, shows when it last updated and a banner when a poll
// fails. Everything it uses is embedded (the web directory): it loads
// nothing from elsewhere and works offline.
//
//	GET  /             the page with a valid session, else the login form
//	POST /login        form field "token" (application/x-www-form-urlencoded,
//	                   at most 4 KiB) → 303 to / with the session cookie;
//	                   a wrong token → 401 and the form again, counted as a
//	                   failed attempt as for the API; while the source is
//	                   blocked → 429 and the form, with Retry-After
//	POST /logout       ends the session, expires the cookie → 303 to /
//	GET  /static/NAME  the page's script and style sheet (no session needed)
//
// A session is 32 random bytes as 64 hex digits in the cookie nib_session
// (Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200). lbd keeps
// at most 64 sessions in memory (a new one evicts the oldest); each lives
// 12 hours, and all end when lbd restarts. A session only reads: besides
// the page it authorizes GET /api/v1/status and GET /api/v1/history, and
// nothing else (no changes, no config, no metrics). Cross-origin posts to
// /login and /logout are refused (403). The page's replies carry
// Content-Security-Policy "default-src 'self'; img-src 'self' data:;
// frame-ancestors 'none'; form-action 'self'" (no inline scripts),
// X-Content-Type-Options: nosniff and Referrer-Policy: no-referrer; its
// HTML is never cached.
//
// lbd samples the history every 5 s (Options.HistoryInterval) and keeps
// the last 10 minutes (at most 600 points). Each point holds, per service,
// the current connections and per-second rates since the point before:
// connections accepted, bytes to and from the backends (summed over them)
// and frames forwarded (DSR). A counter that went backwards (a reload
// restarted it) counts as 0, as does a service or backend the point before
// did not have. The first sample is the baseline, so the first point comes
// one interval after the API starts.
package control
