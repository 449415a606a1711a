package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/balance"
)

// nonLocalSource returns an address that is not configured on this host
// (TEST-NET-3), so binding a socket to it fails with EADDRNOTAVAIL before
// anything is sent. It skips the test if the host can bind it.
func nonLocalSource(t *testing.T) netip.Addr {
	t.Helper()
	a := netip.MustParseAddr("203.0.113.77")
	ln, err := net.Listen("tcp", netip.AddrPortFrom(a, 0).String())
	if err == nil {
		ln.Close()
		t.Skipf("%s is local here (or non-local binds are allowed)", a)
	}
	if !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Skipf("binding %s: %v, want EADDRNOTAVAIL", a, err)
	}
	return a
}

// logLines collects log lines for tests.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logLines) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

// A backend connect that fails because of this host (here EADDRNOTAVAIL:
// the source address is not ours) closes the client and does not go
// through the pool's failure path: no backend is blacklisted, no failover
// to the next one, the reservation is released.
func TestLocalDialErrorBlamesNoBackend(t *testing.T) {
	src := nonLocalSource(t)
	a, b := newBackend(t, echo), newBackend(t, echo)
	f := startTCP(t, Options{Source: src}, balance.Options{Algorithm: balance.Prio}, a.addr, b.addr)
	var warns logLines
	f.svc.SetWarnf(warns.logf)
	for range 3 {
		c := dial(t, f.addr)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("read %d bytes, %v; want the client closed", n, err)
		}
	}
	waitActive(t, f.svc, 0)
	for i, st := range f.pool.Stats(time.Now()) {
		if !st.BlacklistedUntil.IsZero() {
			t.Errorf("backend %d blacklisted after a local error", i)
		}
		if st.Conns != 0 {
			t.Errorf("backend %d still counts %d connections", i, st.Conns)
		}
	}
	c := f.svc.Counters()
	if c.LocalErrors != 3 || c.Refused != 0 {
		t.Errorf("counters %+v, want 3 local errors and none refused", c)
	}
	if n := warns.count("cannot assign requested address"); n != 1 {
		t.Errorf("%d warnings for 3 local errors within a second, want 1: %q", n, warns.lines)
	}
}

// The UDP path: a flow whose socket cannot be bound is dropped, and no
// backend is blamed.
func TestUDPLocalDialErrorBlamesNoBackend(t *testing.T) {
	src := nonLocalSource(t)
	be := dnsServer(t, [4]byte{1, 2, 3, 4})
	be2 := dnsServer(t, [4]byte{5, 6, 7, 8})
	u, pool := startUDP(t, Options{IdleTimeout: time.Minute, Source: src}, balance.Options{}, be, be2)
	c, err := net.Dial("udp", u.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("query"))
	deadline := time.Now().Add(5 * time.Second)
	for u.svc.Counters().LocalErrors == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no local error counted: %+v", u.svc.Counters())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, st := range pool.Stats(time.Now()) {
		if !st.BlacklistedUntil.IsZero() || st.Conns != 0 {
			t.Errorf("backend %d after a local error: %+v; want untouched", i, st)
		}
	}
	if n, c := u.Flows(), u.svc.Counters(); n != 0 || c.Active != 0 || c.Refused != 0 {
		t.Errorf("%d flows, counters %+v; want none open or refused", n, c)
	}
}

// When registering an accepted client with epoll fails, the session is
// closed before any backend was chosen: nothing must be released (the
// zero Choice is server 0, whose count would drop).
func TestFailedRegisterReleasesNoServer(t *testing.T) {
	be := newBackend(t, echo)
	f := startTCP(t, Options{}, balance.Options{}, be.addr)
	first := dial(t, f.addr)
	roundTrip(t, first, "held")
	if st := f.pool.Stats(time.Now()); st[0].Conns != 1 {
		t.Fatalf("server 0 counts %d connections, want 1", st[0].Conns)
	}
	setHooks(f.engine, func(l *loop) {
		l.ctlHook = func(int, int, int, *unix.EpollEvent) error { return unix.ENOSPC }
	})
	c := dial(t, f.addr)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read %d bytes, %v; want the client closed", n, err)
	}
	waitActive(t, f.svc, 1)
	if st := f.pool.Stats(time.Now()); st[0].Conns != 1 {
		t.Errorf("after a failed registration server 0 counts %d connections, want 1 (the held one)", st[0].Conns)
	}
	setHooks(f.engine, func(l *loop) { l.ctlHook = nil })
	roundTrip(t, first, "still")
	roundTrip(t, dial(t, f.addr), "again")
}

// setHooks runs set on every loop's goroutine and waits for it.
func setHooks(e *Engine, set func(*loop)) {
	var wg sync.WaitGroup
	for _, l := range e.loops {
		wg.Add(1)
		l.do(func() { set(l); wg.Done() })
	}
	wg.Wait()
}

// An epoll_wait error is retried (EINTR) or logged and survived, without a
// panic and without spinning; the loop serves again once it clears.
func TestEpollWaitErrorIsNotFatal(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs a spare P, for the loop's busy wait")
	}
	be := newBackend(t, echo)
	// One loop and a spare P: right after an event the loop waits in
	// epoll_wait itself (busy wait) rather than parking on the netpoller,
	// so an error returned at once would spin there.
	f := startTCPLoops(t, 1, Options{}, balance.Options{}, be.addr)
	var logs logLines
	f.engine.SetLogf(logs.logf)
	roundTrip(t, dial(t, f.addr), "first")
	var calls, intr atomic.Int64
	until := time.Now().Add(300 * time.Millisecond)
	setHooks(f.engine, func(l *loop) {
		l.waitHook = func(epfd int, ev []unix.EpollEvent, ms int) (int, error) {
			if time.Now().Before(until) {
				if intr.Add(1) == 1 {
					return -1, unix.EINTR
				}
				calls.Add(1)
				return -1, unix.EBADF
			}
			return unix.EpollWait(epfd, ev, ms)
		}
	})
	c := dial(t, f.addr) // queued while the loop fails; served after
	time.Sleep(time.Until(until))
	roundTrip(t, c, "after the errors")
	// Pausing 10ms per error makes at most about 30 calls in 300ms;
	// spinning makes thousands.
	t.Logf("%d failing epoll_wait calls", calls.Load())
	if n := calls.Load(); n == 0 || n > 60 {
		t.Errorf("%d failing epoll_wait calls in 300ms; want a few (paused, not spinning)", n)
	}
	if n := logs.count("epoll_wait: bad file descriptor"); n != 1 {
		t.Errorf("%d epoll_wait errors logged in 300ms, want 1: %q", n, logs.lines)
	}
	if n := logs.count("interrupted"); n != 0 {
		t.Errorf("EINTR logged: %q", logs.lines)
	}
	setHooks(f.engine, func(l *loop) { l.waitHook = nil })
	roundTrip(t, dial(t, f.addr), "next")
}

// A listener paused after an accept error and closed meanwhile is not put
// back when the pause ends, even if its descriptor number now belongs to
// another service's listener; that one serves normally.
func TestUnlistenWhileAcceptPaused(t *testing.T) {
	be := newBackend(t, echo)
	f := startTCPLoops(t, 1, Options{}, balance.Options{}, be.addr)
	l := f.engine.loops[0]
	f.engine.mu.Lock()
	fd := f.engine.lfds[f.svc]
	f.engine.mu.Unlock()
	var warns logLines
	f.svc.SetWarnf(warns.logf)
	setHooks(f.engine, func(l *loop) {
		l.now = time.Now()
		l.disarm(l.fds[fd])
	})
	f.engine.Unlisten(f.svc)
	other := NewService(Options{Listen: freeAddr(t), ConnectTimeout: time.Second}, f.pool, t.Logf)
	other.SetWarnf(warns.logf)
	if err := f.engine.Listen(other); err != nil {
		t.Fatal(err)
	}
	f.engine.mu.Lock()
	t.Logf("paused listener fd %d, new listener fd %d", fd, f.engine.lfds[other])
	f.engine.mu.Unlock()
	time.Sleep(2 * acceptBackoff)
	roundTrip(t, dial(t, other.Options().Listen.String()), "served")
	done := make(chan int)
	l.do(func() { done <- len(l.disarmed) })
	if n := <-done; n != 0 {
		t.Errorf("%d listeners still waiting to be re-armed", n)
	}
	if len(warns.lines) != 0 {
		t.Errorf("warnings: %q", warns.lines)
	}
	if _, err := net.DialTimeout("tcp", f.addr, time.Second); err == nil {
		t.Errorf("closed listener %s still accepts", f.addr)
	}
}
