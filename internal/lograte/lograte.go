// Package lograte limits how often a repeated diagnostic is logged: at most
// one line per interval, with a count of the lines left out since the last
// one. The data paths use it for errors a client or the network can cause at
// will (accept failures, handshake errors, refused sends), so an attack or an
// outage fills neither the disk nor the CPU with log lines.
package lograte

import (
	"sync"
	"time"
)

// Limiter lets one event through per interval. The zero value is not usable;
// use New. A Limiter is safe for concurrent use.
type Limiter struct {
	every time.Duration
	now   func() time.Time

	mu         sync.Mutex
	last       time.Time
	suppressed uint64
}

// New returns a limiter that allows one event per every (at least 1ms).
func New(every time.Duration) *Limiter {
	if every < time.Millisecond {
		every = time.Millisecond
	}
	return &Limiter{every: every, now: time.Now}
}

// Allow reports whether the event may be logged now, and how many events
// were suppressed since the last allowed one (reset when allowed).
func (l *Limiter) Allow() (ok bool, suppressed uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.now()
	if !l.last.IsZero() && t.Sub(l.last) < l.every {
		l.suppressed++
		return false, 0
	}
	l.last = t
	s := l.suppressed
	l.suppressed = 0
	return true, s
}

// Logf calls logf with the message when the limiter allows it, appending
// "(N similar suppressed)" when earlier events were left out.
func (l *Limiter) Logf(logf func(string, ...any), format string, args ...any) {
	ok, n := l.Allow()
	if !ok || logf == nil {
		return
	}
	if n > 0 {
		args = append(args, n)
		format += " (%d similar suppressed)"
	}
	logf(format, args...)
}
