// Package health runs the active health checks of a service's backends
// (Pen has none): probes, a state machine per backend and a scheduler.
//
// # Probes
//
// A Probe runs one check under a context that carries its timeout and
// returns a Result: OK, a short Reason ("timeout", "connection refused",
// "http 503", "body lacks \"ok\"", "dns SERVFAIL", ...) and the Latency.
// TCP connects and closes. HTTP sends one HTTP/1.1 GET with Connection:
// close, over TLS (no certificate verification, SNI from the Host when it
// is a name) for HTTPS, and reads the response with its own bounded
// reader: a status line up to 1 KiB, headers up to 16 KiB, 1xx interim
// responses skipped, and, only when a body substring is expected, the
// body's first 64 KiB (Content-Length, chunked or until the close). The
// status must be within a range (200..399 by default). DNS sends one A
// query over UDP or TCP and passes on a response with our ID and question
// whose RCODE is NOERROR or NXDOMAIN. All combines probes that must all
// pass, e.g. a TCP connect and lbd's DSR VIP probe ("VIP not bound").
//
// # State machine
//
// State is pure: a backend that is up goes down after Fall consecutive
// failed checks, one that is down comes up after Rise consecutive
// successes; a result agreeing with the state resets the count, so
// flapping results (with Rise and Fall above 1) change nothing. A new
// backend starts up, or down with StartDown.
//
// # Schedule and limits
//
// A Checker checks a set of backends (Targets, identified by Key) every
// Interval. One scheduler goroutine per Checker keeps a heap of next-check
// times; the first checks of N backends are spread over the interval
// (backend i at i×Interval/N) and each keeps its phase afterwards, so
// checks never come as a herd. A due check runs in a goroutine of its own
// that waits for room in a Limiter, which bounds the checks in flight
// across every Checker that shares it (32 process-wide by default); the
// timeout runs from when the check starts, not while it waits. A backend
// never has more than one check queued or in flight: a check still
// running when the next is due makes the backend skip that round. A check
// that outlasts Timeout is cancelled and fails with the probe's reason, or
// "timeout" when it gives none or passed too late. The checks never touch
// the data path: it reads the state with Up, an atomic load. A Checker
// without targets runs nothing, not even its scheduler; no Checker (check
// = none) costs nothing: a nil *Checker reports every backend up.
//
// # Transitions and history
//
// Each transition calls Options.OnChange once (outside the Checker's
// locks, after Up reports the new state) with the backend's key, its new
// state and the check that decided it, whose Reason is the one for the
// log line: the failure's reason for a down transition, "ok" or the
// probe's note (e.g. "http 200") for an up one. Status reports a backend's
// state, when it last changed and why, the last check's time, outcome and
// latency, the last failure's reason, and counters of checks, failures and
// transitions.
//
// # Reloads
//
// Update replaces the options and the set of backends: the backends whose
// Key stays keep their state, history and phase; new ones start up (or
// down with StartDown) with their first checks spread over the next
// interval; gone ones are dropped and their checks in flight cancelled.
//
// Time is not injectable: the scheduler runs on the real clock, and its
// tests use intervals of tens of milliseconds.
package health
