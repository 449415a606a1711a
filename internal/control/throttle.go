package control

import (
	"net/netip"
	"sync"
	"time"
)

// Brute-force slowing: failures are counted per source; once a source has
// failFree failures within failWindow, each further failure blocks it for a
// delay that doubles from minBlock up to maxBlock. While blocked, its
// requests are answered 429 without looking at the token.
const (
	failFree   = 5
	failWindow = time.Minute
	minBlock   = time.Second
	maxBlock   = 5 * time.Minute
	// MaxSources bounds the per-source table.
	MaxSources = 4096
)

type source struct {
	first time.Time // start of the counting window
	fails int       // failures since first
	until time.Time // blocked until
}

// throttle is the per-source failure table.
type throttle struct {
	mu  sync.Mutex
	src map[netip.Addr]*source
}

// sourceKey is an address's table key: IPv4 as is, IPv6 by its /64 (one
// host usually has a whole /64).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// blocked reports how long a source must still wait; 0 when it may try.
func (t *throttle) blocked(a netip.Addr, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.src[sourceKey(a)]
	if s == nil || !now.Before(s.until) {
		return 0
	}
	return s.until.Sub(now)
}

// fail records a failure and returns the block it causes (0 for none).
func (t *throttle) fail(a netip.Addr, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.src == nil {
		t.src = make(map[netip.Addr]*source)
	}
	k := sourceKey(a)
	s := t.src[k]
	if s == nil {
		if len(t.src) >= MaxSources {
			t.evict(now)
		}
		s = &source{first: now}
		t.src[k] = s
	}
	// A window of failures ends a minute after the last block ends.
	if now.Sub(s.first) > failWindow && now.Sub(s.until) > failWindow {
		s.first, s.fails = now, 0
	}
	s.fails++
	if s.fails < failFree {
		return 0
	}
	d := minBlock
	for i := failFree; i < s.fails && d < maxBlock; i++ {
		d *= 2
	}
	d = min(d, maxBlock)
	s.until = now.Add(d)
	return d
}

// ok forgets a source's failures (it presented the token).
func (t *throttle) ok(a netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.src, sourceKey(a))
}

// evict makes room: stale entries go first; if none is stale, the entry
// closest to being forgotten goes.
func (t *throttle) evict(now time.Time) {
	var oldest netip.Addr
	var oldestEnd time.Time
	for k, s := range t.src {
		end := s.first.Add(failWindow)
		if s.until.Add(failWindow).After(end) {
			end = s.until.Add(failWindow)
		}
		if now.After(end) {
			delete(t.src, k)
			continue
		}
		if !oldest.IsValid() || end.Before(oldestEnd) {
			oldest, oldestEnd = k, end
		}
	}
	if len(t.src) >= MaxSources && oldest.IsValid() {
		delete(t.src, oldest)
	}
}

func (t *throttle) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.src)
}
