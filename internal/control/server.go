package control

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/lograte"
	"github.com/nib-lb/nib/internal/pen"
)

// Limits of the HTTPS server.
const (
	MaxBody           = 64 << 10
	maxHeaderBytes    = 16 << 10
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 60 * time.Second // a reload may take a while
	idleTimeout       = 2 * time.Minute
)

// Backend is what the API reads and changes: lbd implements it. Its methods
// are called from the server's goroutines, concurrently.
type Backend interface {
	// Pen runs one Pen control command as the -C listener does and
	// returns its text output and its error (which the -C listener
	// writes after the output).
	Pen(command string) (string, error)
	// Status returns the live state.
	Status() Status
	// ConfigTOML returns the running config as TOML.
	ConfigTOML() ([]byte, error)
	// Write saves the running config to the -config file.
	Write() error
	// Reload re-reads the -config file and applies it; on error the old
	// config keeps running.
	Reload() error
	// EditBackend changes one backend by service and address and returns
	// the backend's index. Its errors wrap config.ErrNoService,
	// ErrNoBackend (404), ErrExists (409) or ErrBadBackend (400); any
	// other error means the change could not be applied (422).
	EditBackend(BackendRequest) (int, error)
	// CheckDSR checks the backends of a DSR service from lbd's interface
	// (internal/dsrcheck: ARP leak, VIP bound and listening, reachable).
	// Its errors wrap config.ErrNoService (404) or ErrNotDSR (400); any
	// other error means the check could not run (500).
	CheckDSR(ctx context.Context, service string) (CheckReply, error)
}

// ErrNotDSR refuses a DSR check of a proxy service.
var ErrNotDSR = errors.New("not a DSR service: the DSR check is for mode \"dsr\" services (a proxy's backends are checked by connecting to them)")

// Status is the reply of GET /api/v1/status.
type Status struct {
	Version  string          `json:"version"`
	Services []ServiceStatus `json:"services"`
	// Reloads counts re-reads of the config file (SIGHUP, POST
	// /api/v1/reload) by outcome: "applied", "rejected" (invalid file,
	// old config kept), "failed" (valid, but it could not be applied).
	Reloads map[string]uint64 `json:"reloads"`
}

// ServiceStatus is one service.
type ServiceStatus struct {
	Name     string `json:"name"`
	Listen   string `json:"listen"`
	Protocol string `json:"protocol"`
	Mode     string `json:"mode"` // "proxy" or "dsr"
	// Connections (proxy services): current, accepted and refused.
	Active   int64  `json:"active"`
	Accepted uint64 `json:"accepted"`
	Refused  uint64 `json:"refused"`
	// LocalErrors and FlowLimited are proxy counters: this host out of
	// descriptors or buffers; UDP datagrams over the flow limits.
	LocalErrors uint64          `json:"local_errors"`
	FlowLimited uint64          `json:"flow_limited"`
	Backends    []BackendStatus `json:"backends"`
	// DSR holds the DSR machinery's counters of the service's interface
	// (shared by the DSR services on it); nil for proxy services.
	DSR *DSRStatus `json:"dsr,omitempty"`
	// HealthCheck is the kind of active health check ("" for none);
	// AllDown is set while every backend fails it (the service then uses
	// them all, or none with fail_closed: FailClosed).
	HealthCheck string `json:"health_check,omitempty"`
	AllDown     bool   `json:"all_down,omitempty"`
	FailClosed  bool   `json:"fail_closed,omitempty"`
}

// HealthStatus is a backend's active health check state.
type HealthStatus struct {
	Up bool `json:"up"`
	// Since is the last transition (or when checks began), RFC 3339.
	Since string `json:"since"`
	// Reason is the last transition's ("http 503", "timeout", "vip not
	// bound"); LastFailure the last failed check's.
	Reason      string  `json:"reason,omitempty"`
	LastFailure string  `json:"last_failure,omitempty"`
	LatencyMs   float64 `json:"latency_ms"` // of the last check
	Checks      uint64  `json:"checks"`
	Failures    uint64  `json:"failures"`
	Transitions uint64  `json:"transitions"`
}

// BackendStatus is one backend of a service.
type BackendStatus struct {
	Index int `json:"index"`
	// Address is ip:port (proxy) or ip (DSR: no port).
	Address string `json:"address"`
	Weight  int    `json:"weight"`
	Prio    int    `json:"prio"`
	Max     int    `json:"max"`
	Hard    int    `json:"hard"`
	// Drain is the backend's drain setting (no new clients or flows).
	Drain bool `json:"drain"`
	// State is "ok", "blacklisted", "drained" (drain, or weight 0 where
	// the algorithm uses weights), "down" (its health check fails; for
	// DSR also: no ARP reply) or, for DSR, "unresolved".
	State string `json:"state"`
	// Health is the active health check's state; nil without checks.
	Health *HealthStatus `json:"health,omitempty"`
	// BlacklistedUntil is set while blacklisted (RFC 3339).
	BlacklistedUntil string `json:"blacklisted_until,omitempty"`
	// Active is the current connections (proxy services).
	Active int `json:"active"`
	// Sent and Received are bytes to and from the backend (DSR: Sent is
	// bytes forwarded; replies bypass lbd).
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	// Packets is frames forwarded (DSR).
	Packets uint64 `json:"packets,omitempty"`
	// Connects and Failures count successful and failed connects to the
	// backend (proxy services) since it joined the service.
	Connects uint64 `json:"connects"`
	Failures uint64 `json:"connect_failures"`
}

// DSRStatus are the DSR, ARP and tarpit counters of one interface.
type DSRStatus struct {
	Interface        string            `json:"interface"`
	Received         uint64            `json:"received"`
	Forwarded        uint64            `json:"forwarded"`
	PartialChecksums uint64            `json:"partial_checksums"`
	SuperFrames      uint64            `json:"super_frames"`
	TarpitReplies    uint64            `json:"tarpit_replies"`
	ReadErrors       uint64            `json:"read_errors"`
	Drops            map[string]uint64 `json:"drops"`
	ARP              ARPStatus         `json:"arp"`
}

// ARPStatus are the ARP responder's counters.
type ARPStatus struct {
	RequestsSeen       uint64 `json:"requests_seen"`
	RepliesVIP         uint64 `json:"replies_vip"`
	RepliesTarpit      uint64 `json:"replies_tarpit"`
	BackendLearned     uint64 `json:"backend_learned"`
	UnsolicitedIgnored uint64 `json:"unsolicited_ignored"`
	Conflicts          uint64 `json:"conflicts"`
}

// Options configure a Server.
type Options struct {
	Backend Backend
	Secrets Secrets
	// Allowed is the control ACL, checked for every client; nil permits
	// all. It is called on every request, so it may change (a reload).
	Allowed func(netip.Addr) bool
	// Logf logs; nil means log.Printf.
	Logf func(string, ...any)
	// HistoryInterval is how often the status page's history (the chart
	// of recent minutes) is sampled; 0 means DefaultHistoryInterval.
	HistoryInterval time.Duration
	// now is the clock (tests).
	now func() time.Time
}

// Server is the HTTPS control API.
type Server struct {
	o         Options
	token     []byte
	thr       throttle
	failLog   *lograte.Limiter
	mu        sync.Mutex
	srv       *http.Server
	serveErr  chan error
	serveOnce sync.Once    // Wait reads serveErr once
	metrics   http.Handler // GET /metrics
	page      pageState    // the status page (page.go)
}

// New returns a server; nothing listens until Serve.
func New(o Options) *Server {
	if o.Logf == nil {
		o.Logf = log.Printf
	}
	if o.now == nil {
		o.now = time.Now
	}
	s := &Server{o: o, token: []byte(o.Secrets.Token), failLog: lograte.New(10 * time.Second)}
	// A registry of its own: only lbd's collector, no process-wide state.
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(func() Status { return s.o.Backend.Status() }))
	s.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: log.New(logWriter{s}, "metrics: ", 0)})
	return s
}

// TLSConfig is the server's TLS configuration.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{s.o.Secrets.Cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// Serve serves HTTPS on ln (a TCP listener) on its own goroutine until
// Close.
func (s *Server) Serve(ln net.Listener) {
	srv := &http.Server{
		Handler:           s,
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          log.New(logWriter{s}, "", 0),
	}
	s.mu.Lock()
	s.srv = srv
	s.serveErr = make(chan error, 1)
	s.mu.Unlock()
	s.startSampler()
	go func() { s.serveErr <- srv.Serve(tls.NewListener(newLimitListener(ln), srv.TLSConfig)) }()
}

// Close stops the listener and closes every connection, and waits until
// the server's goroutines are gone: Stop, then Wait.
func (s *Server) Close() error {
	err := s.Stop()
	s.Wait()
	return err
}

// Stop closes the listener and every connection at once (the address is
// free when it returns) and tells the history sampler to stop, without
// waiting for the goroutines: a caller that holds a lock the Backend
// takes (lbd's daemon lock) calls Stop under it and Wait after it.
func (s *Server) Stop() error {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Close()
	s.signalSampler()
	return err
}

// Wait waits for the goroutines Serve started to end, after Stop.
func (s *Server) Wait() {
	s.mu.Lock()
	srv, errc := s.srv, s.serveErr
	s.mu.Unlock()
	if srv == nil {
		return
	}
	s.waitSampler()
	if errc != nil {
		s.serveOnce.Do(func() { <-errc })
	}
}

// logWriter sends net/http's own messages (TLS handshake errors and the
// like) through a rate limit.
type logWriter struct{ s *Server }

func (w logWriter) Write(p []byte) (int, error) {
	w.s.failLog.Logf(w.s.o.Logf, "control: %s", strings.TrimSpace(string(p)))
	return len(p), nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// remote returns the client's address (invalid if unparsable).
func remote(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// authorized checks the bearer token in constant time.
func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	return len(h) >= len(p) && strings.EqualFold(h[:len(p)], p) && s.tokenOK(h[len(p):])
}

// tokenOK checks a token (the bearer token, the login form's) in constant
// time.
func (s *Server) tokenOK(token string) bool {
	return len(s.token) > 0 && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), s.token) == 1
}

// authFailed counts a wrong or missing token (the API's, the login form's)
// against src, logs it (rate-limited; format and args say what), and sets
// the headers of the 401 the caller then writes.
func (s *Server) authFailed(w http.ResponseWriter, src netip.Addr, now time.Time, format string, args ...any) {
	if block := s.thr.fail(src, now); block > 0 {
		s.failLog.Logf(s.o.Logf, "control: "+format+"; source blocked for %v", append(args, block)...)
	} else {
		s.failLog.Logf(s.o.Logf, "control: "+format, args...)
	}
	w.Header().Set("Connection", "close") // no idle connections for strangers
	w.Header().Set("WWW-Authenticate", `Bearer realm="lbd"`)
}

// retrySeconds is a block's remaining wait in whole seconds, rounded up
// (Retry-After, the login form's note).
func retrySeconds(wait time.Duration) int {
	return int((wait + time.Second - 1) / time.Second)
}

// ServeHTTP is the API (see the package documentation).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	src := remote(r)
	if s.o.Allowed != nil && (!src.IsValid() || !s.o.Allowed(src)) {
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusForbidden, "forbidden")
		return
	}
	now := s.o.now()
	// The status page, its login form and its assets authenticate with a
	// session cookie instead of the bearer token (page.go).
	if s.servePage(w, r, src, now) {
		return
	}
	if wait := s.thr.blocked(src, now); wait > 0 {
		w.Header().Set("Connection", "close")
		w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(wait)))
		writeError(w, http.StatusTooManyRequests, "too many failed attempts; retry later")
		return
	}
	if !s.authorized(r) && !(r.Method == http.MethodGet && cookieReadable(r.URL.Path) && s.sessionOK(r, now)) {
		s.authFailed(w, src, now, "unauthorized request from %s (%s %q)", src, r.Method, r.URL.Path)
		writeError(w, http.StatusUnauthorized, "unauthorized")
		return
	}
	s.thr.ok(src)
	r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
	switch r.URL.Path {
	case "/api/v1/pen":
		if method(w, r, http.MethodPost) {
			s.pen(w, r)
		}
	case "/api/v1/status":
		if method(w, r, http.MethodGet) {
			writeJSON(w, http.StatusOK, s.o.Backend.Status())
		}
	case "/api/v1/config":
		if method(w, r, http.MethodGet) {
			b, err := s.o.Backend.ConfigTOML()
			if err != nil {
				writeError(w, http.StatusInternalServerError, err.Error())
				return
			}
			if wantsJSON(r) {
				var m map[string]any
				if err := toml.Unmarshal(b, &m); err != nil {
					writeError(w, http.StatusInternalServerError, "the running config as JSON: "+err.Error())
					return
				}
				writeJSON(w, http.StatusOK, m)
				return
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.Write(b)
		}
	case "/api/v1/write":
		if method(w, r, http.MethodPost) && drain(w, r) {
			if err := s.o.Backend.Write(); err != nil {
				writeError(w, http.StatusInternalServerError, err.Error())
				return
			}
			writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
		}
	case "/api/v1/reload":
		if method(w, r, http.MethodPost) && drain(w, r) {
			if err := s.o.Backend.Reload(); err != nil {
				writeError(w, http.StatusUnprocessableEntity, err.Error())
				return
			}
			writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
		}
	case "/api/v1/backend":
		if method(w, r, http.MethodPost) {
			s.backend(w, r)
		}
	case "/api/v1/check":
		if method(w, r, http.MethodPost) {
			s.check(w, r)
		}
	case "/api/v1/history":
		if method(w, r, http.MethodGet) {
			s.history(w, r)
		}
	case "/metrics":
		if method(w, r, http.MethodGet) {
			s.metrics.ServeHTTP(w, r)
		}
	default:
		writeError(w, http.StatusNotFound, "not found")
	}
}

// wantsJSON reports whether a read asks for JSON: ?format=json, or an Accept
// header naming application/json.
func wantsJSON(r *http.Request) bool {
	return r.URL.Query().Get("format") == "json" || strings.Contains(r.Header.Get("Accept"), "application/json")
}

// method answers 405 unless r uses m.
func method(w http.ResponseWriter, r *http.Request, m string) bool {
	if r.Method == m {
		return true
	}
	w.Header().Set("Allow", m)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	return false
}

// drain reads an unused body (bounded), answering 413 when it is too large.
func drain(w http.ResponseWriter, r *http.Request) bool {
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		bodyError(w, err)
		return false
	}
	return true
}

func bodyError(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	writeError(w, http.StatusBadRequest, "reading request body: "+err.Error())
}

// PenRequest is the body of POST /api/v1/pen.
type PenRequest struct {
	Command string `json:"command"`
}

// PenReply is its reply: 200 with the output, or 422 when the command
// failed (bad arguments, or a change that could not be applied), with the
// output before the failure and the error.
type PenReply struct {
	Output string `json:"output"`
	Error  string `json:"error,omitempty"`
}

// readJSON decodes r's body (bounded by ServeHTTP) into v, refusing
// unknown fields; it answers 400 or 413 itself and returns false then.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		bodyError(w, err)
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "bad request body: more than one JSON value")
		return false
	}
	return true
}

func (s *Server) pen(w http.ResponseWriter, r *http.Request) {
	var req PenRequest
	if !readJSON(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Command) == "" {
		writeError(w, http.StatusBadRequest, "empty command")
		return
	}
	if strings.ContainsAny(req.Command, "\n\r\x00") {
		writeError(w, http.StatusBadRequest, "command must be one line")
		return
	}
	if !pen.IsVerb(req.Command) {
		verb, _, _ := strings.Cut(strings.TrimSpace(req.Command), " ")
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown verb %q; Pen's verbs: %s", verb, strings.Join(pen.Verbs(), " ")))
		return
	}
	out, err := s.o.Backend.Pen(req.Command)
	if err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, PenReply{Output: out, Error: strings.TrimSpace(err.Error())})
		return
	}
	writeJSON(w, http.StatusOK, PenReply{Output: out})
}

// BackendRequest is the body of POST /api/v1/backend: one change to the
// backend of Service named by Backend ("ip:port", or "ip" when that is
// unique in the service; DSR backends by ip alone).
type BackendRequest struct {
	Service string `json:"service"`
	Backend string `json:"backend"`
	// Op is add, remove, drain, undrain, weight (config.BackendOps:
	// changes of the running config, saved by write) or blacklist
	// (runtime state, as Pen's "server N blacklist T").
	Op string `json:"op"`
	// Weight is weight's new weight (required) and add's initial one
	// (default 1).
	Weight *int `json:"weight,omitempty"`
	// Seconds is how long blacklist skips the backend; 0 clears it.
	Seconds *int `json:"seconds,omitempty"`
}

// BackendReply is its reply.
type BackendReply struct {
	OK bool `json:"ok"`
	// Index is the backend's position in the service (for remove, the
	// one it had).
	Index int `json:"index"`
}

// OpBlacklist is the backend operation that is runtime state, not config.
const OpBlacklist = "blacklist"

// CheckBackendRequest checks what it can of a request without lbd's state.
func CheckBackendRequest(req BackendRequest) error {
	switch {
	case req.Service == "":
		return errors.New("missing service")
	case req.Backend == "":
		return errors.New("missing backend")
	}
	known := req.Op == OpBlacklist
	for _, op := range config.BackendOps {
		known = known || req.Op == string(op)
	}
	switch {
	case !known:
		return fmt.Errorf("unknown op %q (add, remove, drain, undrain, weight, blacklist)", req.Op)
	case req.Op == string(config.OpWeight) && req.Weight == nil:
		return errors.New("weight needs \"weight\"")
	case req.Op == OpBlacklist && req.Seconds == nil:
		return errors.New("blacklist needs \"seconds\"")
	case req.Seconds != nil && (*req.Seconds < 0 || *req.Seconds > MaxBlacklistSeconds):
		return fmt.Errorf("seconds must be 0 to %d", MaxBlacklistSeconds)
	}
	return nil
}

// MaxBlacklistSeconds bounds a blacklist (a year); penctl checks it too.
const MaxBlacklistSeconds = 365 * 24 * 3600

func (s *Server) backend(w http.ResponseWriter, r *http.Request) {
	var req BackendRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := CheckBackendRequest(req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	i, err := s.o.Backend.EditBackend(req)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, BackendReply{OK: true, Index: i})
	case errors.Is(err, config.ErrNoService), errors.Is(err, config.ErrNoBackend):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, config.ErrExists):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, config.ErrBadBackend):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		writeError(w, http.StatusUnprocessableEntity, err.Error())
	}
}

// CheckRequest is the body of POST /api/v1/check.
type CheckRequest struct {
	Service string `json:"service"`
}

// CheckReply is its reply: the report of internal/dsrcheck, one line per
// backend (and warnings), and whether every backend is ready.
type CheckReply struct {
	OK    bool     `json:"ok"`
	Lines []string `json:"lines"`
}

// checkTimeout bounds a DSR check (it waits for ARP and SYN answers).
const checkTimeout = 30 * time.Second

func (s *Server) check(w http.ResponseWriter, r *http.Request) {
	var req CheckRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Service == "" {
		writeError(w, http.StatusBadRequest, "missing service")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), checkTimeout)
	defer cancel()
	rep, err := s.o.Backend.CheckDSR(ctx, req.Service)
	switch {
	case err == nil:
		if rep.Lines == nil {
			rep.Lines = []string{}
		}
		writeJSON(w, http.StatusOK, rep)
	case errors.Is(err, config.ErrNoService):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrNotDSR):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "the DSR check could not run: "+err.Error())
	}
}
