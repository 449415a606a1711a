package health

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// TestTCPTimeout connects to a loopback listener whose accept queue is
// full: Linux drops the SYNs, so the connect hangs until the timeout.
func TestTCPTimeout(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*syscall.SockaddrInet4).Port))
	// Fill the accept queue (never accepted) until a connect hangs.
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; ; i++ {
		if i == 8 {
			t.Skip("the accept queue never filled")
		}
		c, err := net.DialTimeout("tcp", addr.String(), 100*time.Millisecond)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	start := time.Now()
	r := run(TCP(addr), 150*time.Millisecond)
	if r.OK || r.Reason != "timeout" {
		t.Errorf("%+v", r)
	}
	if d := time.Since(start); d < 140*time.Millisecond || d > time.Second {
		t.Errorf("took %v", d)
	}
}
