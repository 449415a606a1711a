package proxy

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/balance"
)

// keepAliveOptions reads a socket's keepalive settings back.
func keepAliveOptions(t *testing.T, fd int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for name, opt := range map[string][2]int{
		"SO_KEEPALIVE":  {unix.SOL_SOCKET, unix.SO_KEEPALIVE},
		"TCP_KEEPIDLE":  {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
		"TCP_KEEPINTVL": {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
		"TCP_KEEPCNT":   {unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
	} {
		v, err := unix.GetsockoptInt(fd, opt[0], opt[1])
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		got[name] = v
	}
	return got
}

// checkClientKeepAlive fails unless the socket has clientKeepAlive's
// settings.
func checkClientKeepAlive(t *testing.T, fd int) {
	t.Helper()
	got := keepAliveOptions(t, fd)
	want := map[string]int{
		"SO_KEEPALIVE":  1,
		"TCP_KEEPIDLE":  int(clientKeepAlive.Idle / time.Second),
		"TCP_KEEPINTVL": int(clientKeepAlive.Interval / time.Second),
		"TCP_KEEPCNT":   clientKeepAlive.Count,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
}

// A connection accepted from the engine's listening socket has the client
// keepalive settings (inherited from the listener: no system call per
// accept).
func TestListenTCPAcceptedKeepAlive(t *testing.T) {
	lfd, err := listenTCP(netip.MustParseAddrPort("127.0.0.1:0"), 16)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	addr, err := getsockname(lfd)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var fd int
	for deadline := time.Now().Add(2 * time.Second); ; {
		fd, _, err = accept4(lfd)
		if err != unix.EAGAIN || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	checkClientKeepAlive(t, fd)
}

// The TCP engine's client sockets have TCP keepalive with the stream path's
// settings, so a client gone without a FIN or RST is found.
func TestTCPClientKeepAlive(t *testing.T) {
	be := newBackend(t, echo)
	f := startTCP(t, Options{}, balance.Options{}, be.addr)
	c := dial(t, f.addr)
	roundTrip(t, c, "x")
	var fds []int
	setHooks(f.engine, func(l *loop) {
		for s := l.head.next; s != &l.head; s = s.next {
			fds = append(fds, s.client.fd)
		}
	})
	if len(fds) != 1 {
		t.Fatalf("%d sessions, want 1", len(fds))
	}
	// The session stays open (c is), so its socket can be read from here.
	checkClientKeepAlive(t, fds[0])
}

// Once one direction of a connection has ended, the other is cut after the
// half-close timeout without traffic; a side still sending keeps it open.
func TestTCPHalfCloseTimeout(t *testing.T) {
	const halfClose = 300 * time.Millisecond
	start := func(t *testing.T, backend netip.AddrPort) *fixture {
		f := startTCP(t, Options{}, balance.Options{}, backend)
		setHooks(f.engine, func(l *loop) { l.halfClose = halfClose })
		return f
	}
	t.Run("client ended, backend silent", func(t *testing.T) {
		release := make(chan struct{})
		be := newBackend(t, func(c net.Conn) {
			io.Copy(io.Discard, c) // until the client's FIN
			<-release              // then silent, and never closes
		})
		defer close(release)
		f := start(t, be.addr)
		c := dial(t, f.addr)
		io.WriteString(c, "hello")
		c.CloseWrite()
		if d := waitClosed(t, c, 3*time.Second); d > 2*time.Second {
			t.Errorf("half-closed connection cut after %v, want about %v", d, halfClose)
		}
		waitActive(t, f.svc, 0)
	})
	t.Run("backend ended, client silent", func(t *testing.T) {
		gone := make(chan time.Duration, 1)
		be := newBackend(t, func(c net.Conn) {
			io.WriteString(c, "bye")
			c.(*net.TCPConn).CloseWrite()
			start := time.Now()
			c.SetReadDeadline(start.Add(3 * time.Second))
			io.Copy(io.Discard, c) // until the proxy closes
			gone <- time.Since(start)
		})
		f := start(t, be.addr)
		c := dial(t, f.addr)
		if b, err := io.ReadAll(c); err != nil || string(b) != "bye" {
			t.Fatalf("read %q, %v", b, err)
		}
		// The client says nothing more and does not close.
		if d := <-gone; d > 2*time.Second {
			t.Errorf("backend's connection closed after %v, want about %v", d, halfClose)
		}
		waitActive(t, f.svc, 0)
	})
	t.Run("backend still sending", func(t *testing.T) {
		be := newBackend(t, func(c net.Conn) {
			io.Copy(io.Discard, c) // until the client's FIN
			for range 10 {         // 1s in all, 100ms apart
				time.Sleep(100 * time.Millisecond)
				io.WriteString(c, "x")
			}
		})
		f := start(t, be.addr)
		c := dial(t, f.addr)
		io.WriteString(c, "hello")
		c.CloseWrite()
		b, err := io.ReadAll(bufio.NewReader(c))
		if err != nil || string(b) != "xxxxxxxxxx" {
			t.Errorf("read %q, %v; want all of it", b, err)
		}
	})
}
