package proxy

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/balance"
)

// newSvc is a service over backends, for serving a Socket.
func newSvc(t *testing.T, o Options, backends ...netip.AddrPort) *Service {
	t.Helper()
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 2 * time.Second
	}
	var servers []balance.Server
	for _, b := range backends {
		servers = append(servers, balance.Server{Addr: b, Weight: 1})
	}
	return NewService(o, balance.New(balance.Options{Blacklist: time.Minute, TrackingSize: 16}, servers), t.Logf)
}

// keepDialing connects to addr every millisecond until stop is closed and
// returns the connects that failed: a port that is closed for a moment
// refuses some.
func keepDialing(addr string, stop <-chan struct{}) <-chan []error {
	out := make(chan []error, 1)
	go func() {
		var failed []error
		for {
			select {
			case <-stop:
				out <- failed
				return
			case <-time.After(time.Millisecond):
			}
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				failed = append(failed, err)
				continue
			}
			c.Close()
		}
	}()
	return out
}

// An opened socket queues connections but nobody accepts them until it is
// served; then they are served.
func TestOpenQueuesUntilServed(t *testing.T) {
	be := newBackend(t, echo)
	for _, kind := range []Kind{EngineKind, StreamKind} {
		t.Run(kind.String(), func(t *testing.T) {
			addr := freeAddr(t)
			s, err := Open(kind, addr, 0)
			if err != nil {
				t.Fatal(err)
			}
			c := dial(t, addr.String())
			svc := newSvc(t, Options{Listen: addr}, be.addr)
			time.Sleep(50 * time.Millisecond)
			if n := svc.Counters().Accepted; n != 0 {
				t.Fatalf("accepted %d before Serve", n)
			}
			if kind == EngineKind {
				e, err := NewEngine(2)
				if err != nil {
					t.Fatal(err)
				}
				defer e.Close()
				e.Serve(svc, s)
			} else {
				ss := ServeStreamSocket(svc, s)
				defer ss.Close()
			}
			s.Close() // served: does nothing
			roundTrip(t, c, "queued")
			roundTrip(t, dial(t, addr.String()), "next")
		})
	}
}

// Closing an unserved socket closes the port; closing an unserved shared
// socket leaves its server serving.
func TestSocketClose(t *testing.T) {
	addr := freeAddr(t)
	s, err := Open(EngineKind, addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		c.Close()
		t.Fatal("a closed socket still accepts")
	}

	be := newBackend(t, echo)
	f := startTCP(t, Options{}, balance.Options{}, be.addr)
	ss := startStream(t, Options{}, be.addr)
	u, _ := startUDP(t, Options{}, balance.Options{}, dnsServer(t, [4]byte{192, 0, 2, 1}))
	for _, kind := range []Kind{EngineKind, StreamKind} {
		s1, err := f.engine.Share(f.svc, kind)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := ss.Share(kind)
		if err != nil {
			t.Fatal(err)
		}
		s1.Close()
		s2.Close()
	}
	s3, err := u.Share()
	if err != nil {
		t.Fatal(err)
	}
	s3.Close()
	if _, err := f.engine.Share(f.svc, UDPKind); err == nil {
		t.Fatal("a TCP socket shared for UDP")
	}
	roundTrip(t, dial(t, f.addr), "engine")
	roundTrip(t, dial(t, ss.Addr().String()), "stream")
	if _, _, err := lookup(t, u.Addr().String()); err != nil {
		t.Fatal(err)
	}
}

// A TCP socket goes from the engine to the stream path and back without
// ever being closed: no connect is refused, connections established
// before go on, and each side's accepted sockets get the client keepalive.
func TestShareHandsOverTCPSocket(t *testing.T) {
	be := newBackend(t, echo)
	f := startTCP(t, Options{}, balance.Options{}, be.addr)
	held := dial(t, f.addr)
	roundTrip(t, held, "before")
	stop := make(chan struct{})
	failed := keepDialing(f.addr, stop)
	time.Sleep(20 * time.Millisecond)

	// Engine to stream.
	s, err := f.engine.Share(f.svc, StreamKind)
	if err != nil {
		t.Fatal(err)
	}
	f.engine.Unlisten(f.svc)
	time.Sleep(20 * time.Millisecond) // a closed port would refuse now
	svc2 := newSvc(t, Options{Listen: f.svc.Options().Listen}, be.addr)
	ss := ServeStreamSocket(svc2, s)
	defer ss.Close()
	c := dial(t, f.addr)
	roundTrip(t, c, "stream")
	waitActive(t, svc2, 1)
	ss.mu.Lock()
	var raw net.Conn
	for sc := range ss.conns {
		raw = sc.raw
	}
	ss.mu.Unlock()
	rc, _ := raw.(*net.TCPConn).SyscallConn()
	rc.Control(func(fd uintptr) { checkClientKeepAlive(t, int(fd)) })
	roundTrip(t, held, "engine still")

	// And back to the engine, with the service's backlog.
	s2, err := ss.Share(EngineKind)
	if err != nil {
		t.Fatal(err)
	}
	ss.Unlisten()
	time.Sleep(20 * time.Millisecond)
	svc3 := newSvc(t, Options{Listen: f.svc.Options().Listen, Backlog: 64}, be.addr)
	f.engine.Serve(svc3, s2)
	roundTrip(t, dial(t, f.addr), "engine again")
	if svc3.Counters().Accepted == 0 {
		t.Fatal("the engine accepted nothing")
	}
	f.engine.mu.Lock()
	lfd := f.engine.lfds[svc3]
	f.engine.mu.Unlock()
	checkClientKeepAlive(t, lfd) // inherited by what the engine accepts
	roundTrip(t, c, "stream still")
	roundTrip(t, held, "engine still")

	close(stop)
	if errs := <-failed; len(errs) != 0 {
		t.Fatalf("%d connects failed while the socket changed hands: %v", len(errs), errs)
	}
}

// A UDP socket goes to a new server: datagrams queued meanwhile are not
// lost.
func TestShareHandsOverUDPSocket(t *testing.T) {
	dns := dnsServer(t, [4]byte{192, 0, 2, 7})
	u, err := ServeUDP(newSvc(t, Options{Listen: netip.MustParseAddrPort("127.0.0.1:0")}, dns))
	if err != nil {
		t.Fatal(err)
	}
	s, err := u.Share()
	if err != nil {
		t.Fatal(err)
	}
	addr := u.Addr().(*net.UDPAddr).AddrPort()
	u.Close()
	u2 := ServeUDPSocket(newSvc(t, Options{Listen: addr}, dns), s)
	defer u2.Close()
	if a, _, err := lookup(t, addr.String()); err != nil || a != netip.AddrFrom4([4]byte{192, 0, 2, 7}) {
		t.Fatalf("after the hand-over: %v, %v", a, err)
	}
}

// Serve cannot fail: a loop whose epoll set refuses the listener tries
// again after acceptBackoff, and says so, while clients wait in the
// backlog.
func TestEngineServeRetriesEpoll(t *testing.T) {
	be := newBackend(t, echo)
	var refused atomic.Int32
	orig := serveCtl
	serveCtl = func(l *loop, fd int) error {
		refused.Add(1)
		return unix.ENOSPC
	}
	defer func() { serveCtl = orig }()
	e, err := NewEngine(2)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	addr := freeAddr(t)
	s, err := Open(EngineKind, addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var warned []string
	svc := newSvc(t, Options{Listen: addr}, be.addr)
	svc.SetWarnf(func(format string, args ...any) {
		mu.Lock()
		warned = append(warned, format)
		mu.Unlock()
	})
	start := time.Now()
	e.Serve(svc, s)
	if refused.Load() != 2 {
		t.Fatalf("epoll refused %d times, want once per loop", refused.Load())
	}
	roundTrip(t, dial(t, addr.String()), "later")
	if d := time.Since(start); d < acceptBackoff/2 {
		t.Fatalf("served after %v, before any retry", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(warned) == 0 || !strings.Contains(warned[0], "epoll") {
		t.Fatalf("warnings: %q", warned)
	}
	if err := e.SetBacklog(svc, 32); err != nil {
		t.Fatal(err)
	}
	if err := e.SetBacklog(newSvc(t, Options{}), 32); err == nil || errors.Is(err, unix.EBADF) {
		t.Fatalf("SetBacklog of a service the engine does not serve: %v", err)
	}
}
