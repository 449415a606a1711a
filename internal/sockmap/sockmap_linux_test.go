package sockmap

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/netnstest"
)

// conns is a proxied connection on loopback: client → (pc proxy pb) →
// backend. The proxy's sockets pc and pb are Go conns that are never read:
// their descriptors go into the relay.
type conns struct {
	client, pc, pb, backend *net.TCPConn
}

func dialPair(t testing.TB) *conns {
	t.Helper()
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	c := &conns{}
	cc, err := net.Dial("tcp", pl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.client = cc.(*net.TCPConn)
	pc, err := pl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.pc = pc.(*net.TCPConn)
	pb, err := net.Dial("tcp", bl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.pb = pb.(*net.TCPConn)
	b, err := bl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.backend = b.(*net.TCPConn)
	t.Cleanup(func() {
		for _, x := range []*net.TCPConn{c.client, c.pc, c.pb, c.backend} {
			x.Close()
		}
	})
	for _, x := range []*net.TCPConn{c.client, c.backend} {
		x.SetDeadline(time.Now().Add(10 * time.Second))
	}
	return c
}

func fdOf(t testing.TB, c *net.TCPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

func newRelay(t testing.TB) *Relay {
	t.Helper()
	netnstest.SkipUnprivileged(t)
	r, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// watcher is an epoll set of its own over the proxy's sockets (the
// runtime's netpoller has them too, which does not matter: nobody reads).
type watcher struct {
	epfd int
}

func newWatcher(t testing.TB, fds ...int) *watcher {
	t.Helper()
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(epfd) })
	for _, fd := range fds {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			t.Fatal(err)
		}
	}
	return &watcher{epfd: epfd}
}

// collect returns the events seen within d, ORed per descriptor.
func (w *watcher) collect(t testing.TB, d time.Duration) map[int]uint32 {
	t.Helper()
	got := map[int]uint32{}
	end := time.Now().Add(d)
	var evs [16]unix.EpollEvent
	for {
		ms := int(time.Until(end) / time.Millisecond)
		if ms <= 0 {
			return got
		}
		n, err := unix.EpollWait(w.epfd, evs[:], ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs[:n] {
			got[int(ev.Fd)] |= ev.Events
		}
	}
}

// waitEvent waits up to d for want on fd.
func (w *watcher) waitEvent(t testing.TB, fd int, want uint32, d time.Duration) uint32 {
	t.Helper()
	end := time.Now().Add(d)
	var evs [16]unix.EpollEvent
	for time.Now().Before(end) {
		n, err := unix.EpollWait(w.epfd, evs[:], 50)
		if err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		for _, ev := range evs[:max(n, 0)] {
			if int(ev.Fd) == fd && ev.Events&want != 0 {
				return ev.Events
			}
		}
	}
	t.Fatalf("fd %d: no event %#x within %v", fd, want, d)
	return 0
}

func inq(t testing.TB, fd int) int {
	t.Helper()
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func count(t testing.TB, fd int) Counts {
	t.Helper()
	c, err := Count(fd)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFlushed waits until the peer of p's socket i has queued everything
// socket i received, and returns how much that was.
func waitFlushed(t testing.TB, p *Pair, i int, fin bool) uint64 {
	t.Helper()
	end := time.Now().Add(5 * time.Second)
	for {
		n, ok, err := p.Moved(i, fin)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return n
		}
		if time.Now().After(end) {
			t.Fatalf("socket %d: %d bytes received, not all queued on its peer", i, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func evString(e uint32) string {
	var b []byte
	for _, f := range []struct {
		bit  uint32
		name string
	}{{unix.EPOLLIN, "IN"}, {unix.EPOLLOUT, "OUT"}, {unix.EPOLLRDHUP, "RDHUP"}, {unix.EPOLLHUP, "HUP"}, {unix.EPOLLERR, "ERR"}} {
		if e&f.bit != 0 {
			if len(b) > 0 {
				b = append(b, '|')
			}
			b = append(b, f.name...)
		}
	}
	return string(b)
}

// TestRelay: bytes flow both ways without the proxy reading, the proxy's
// sockets report no input, TCP_INFO counts what went through, a FIN shows
// as EPOLLRDHUP and is forwarded by shutdown once the peer has queued
// everything, and the other direction goes on after a half-close.
func TestRelay(t *testing.T) {
	r := newRelay(t)
	c := dialPair(t)
	pc, pb := fdOf(t, c.pc), fdOf(t, c.pb)
	w := newWatcher(t, pc, pb)
	w.collect(t, 20*time.Millisecond) // the initial EPOLLOUT
	p, err := r.Add(pc, pb)
	if err != nil {
		t.Fatal(err)
	}

	// 4 MB each way at once.
	const size = 4 << 20
	up, down := make([]byte, size), make([]byte, size)
	rand.Read(up)
	rand.Read(down)
	var wg sync.WaitGroup
	var gotUp, gotDown []byte
	var errUp, errDown error
	wg.Add(4)
	go func() { defer wg.Done(); c.client.Write(up) }()
	go func() { defer wg.Done(); c.backend.Write(down) }()
	go func() { defer wg.Done(); gotUp, errUp = readN(c.backend, size) }()
	go func() { defer wg.Done(); gotDown, errDown = readN(c.client, size) }()
	wg.Wait()
	if errUp != nil || errDown != nil {
		t.Fatalf("read: %v, %v", errUp, errDown)
	}
	if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
		t.Fatal("data differs")
	}
	evs := w.collect(t, 20*time.Millisecond)
	t.Logf("events on the proxy's sockets during the transfer: client side %s, backend side %s", evString(evs[pc]), evString(evs[pb]))
	if evs[pc]&unix.EPOLLIN != 0 || evs[pb]&unix.EPOLLIN != 0 {
		t.Errorf("the proxy's sockets reported input")
	}
	if inq(t, pc) != 0 || inq(t, pb) != 0 {
		t.Errorf("data left in the proxy's receive queues: %d, %d", inq(t, pc), inq(t, pb))
	}
	for i := range 2 {
		if n, ok, err := p.Moved(i, false); n != size || !ok || err != nil {
			t.Errorf("socket %d moved %d, flushed %v, %v; want %d, true", i, n, ok, err, size)
		}
	}

	// Half-close from the client.
	c.client.CloseWrite()
	ev := w.waitEvent(t, pc, unix.EPOLLRDHUP, 2*time.Second)
	cnt := count(t, pc)
	t.Logf("client FIN: %s on the proxy's client socket; received %d (data %d)", evString(ev), cnt.Received, size)
	if cnt.Received != size+1 {
		t.Errorf("received after FIN %d, want data+1", cnt.Received)
	}
	var b [1]byte
	if n, err := unix.Read(pc, b[:]); n != 0 || err != nil {
		t.Errorf("read after FIN: %d, %v (want EOF)", n, err)
	}
	if got := c.backend.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); got != nil {
		t.Fatal(got)
	}
	if _, err := c.backend.Read(b[:]); !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
		t.Errorf("backend read before the proxy forwarded the FIN: %v (want a timeout: the kernel does not forward it)", err)
	}
	if n := waitFlushed(t, p, 0, true); n != size {
		t.Errorf("moved after FIN: %d, want %d", n, size)
	}
	unix.Shutdown(pb, unix.SHUT_WR)
	c.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.backend.Read(b[:]); n != 0 || err != io.EOF {
		t.Errorf("backend read after shutdown: %d, %v (want EOF)", n, err)
	}
	// The other direction goes on.
	c.backend.Write([]byte("bye"))
	if got, err := readN(c.client, 3); err != nil || string(got) != "bye" {
		t.Errorf("after half-close: %q, %v", got, err)
	}
	c.backend.CloseWrite()
	w.waitEvent(t, pb, unix.EPOLLRDHUP, 2*time.Second)
	if n := waitFlushed(t, p, 1, true); n != size+3 {
		t.Errorf("moved after FIN: %d, want %d", n, size+3)
	}
	unix.Shutdown(pc, unix.SHUT_WR)
	if n, err := c.client.Read(b[:]); n != 0 || err != io.EOF {
		t.Errorf("client read after shutdown: %d, %v (want EOF)", n, err)
	}
	end := [2]Counts{count(t, pc), count(t, pb)}
	t.Logf("at the end: client side %+v, backend side %+v", end[0], end[1])
}

// TestReset: a client's RST shows on the proxy's socket as EPOLLERR|EPOLLHUP
// with SO_ERROR ECONNRESET while it is in the map.
func TestReset(t *testing.T) {
	r := newRelay(t)
	c := dialPair(t)
	pc, pb := fdOf(t, c.pc), fdOf(t, c.pb)
	w := newWatcher(t, pc, pb)
	if _, err := r.Add(pc, pb); err != nil {
		t.Fatal(err)
	}
	c.client.Write([]byte("x"))
	if got, err := readN(c.backend, 1); err != nil || string(got) != "x" {
		t.Fatalf("%q, %v", got, err)
	}
	w.collect(t, 20*time.Millisecond)
	c.client.SetLinger(0)
	c.client.Close()
	ev := w.waitEvent(t, pc, unix.EPOLLERR|unix.EPOLLHUP, 2*time.Second)
	soerr, _ := unix.GetsockoptInt(pc, unix.SOL_SOCKET, unix.SO_ERROR)
	t.Logf("client RST: %s on the proxy's client socket, SO_ERROR %v", evString(ev), unix.Errno(soerr))
	if unix.Errno(soerr) != unix.ECONNRESET {
		t.Errorf("SO_ERROR %v, want ECONNRESET", unix.Errno(soerr))
	}
}

// TestLateAdd: bytes that arrived before the pair was added stay in the
// receive queue until more arrive, or until Kick.
func TestLateAdd(t *testing.T) {
	r := newRelay(t)
	c := dialPair(t)
	pc, pb := fdOf(t, c.pc), fdOf(t, c.pb)
	c.client.Write([]byte("early "))
	c.backend.Write([]byte("banner"))
	for inq(t, pc) == 0 || inq(t, pb) == 0 {
		time.Sleep(time.Millisecond)
	}
	p, err := r.Add(pc, pb)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	t.Logf("after Add: SIOCINQ %d (it no longer shows the receive queue)", inq(t, pc))
	c.backend.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	var b [16]byte
	if n, err := c.backend.Read(b[:]); !isTimeout(err) {
		t.Errorf("backend read before Kick: %q, %v (want a timeout)", b[:n], err)
	}
	c.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := p.Kick(); err != nil {
		t.Fatal(err)
	}
	if got, err := readN(c.backend, 6); err != nil || string(got) != "early " {
		t.Errorf("backend after Kick: %q, %v", got, err)
	}
	if got, err := readN(c.client, 6); err != nil || string(got) != "banner" {
		t.Errorf("client after Kick: %q, %v", got, err)
	}
	c.client.Write([]byte("late"))
	if got, err := readN(c.backend, 4); err != nil || string(got) != "late" {
		t.Errorf("%q, %v", got, err)
	}
	for i := range 2 {
		if n, ok, err := p.Moved(i, false); n != 6+uint64(4*(1-i)) || !ok || err != nil {
			t.Errorf("socket %d: moved %d, flushed %v, %v", i, n, ok, err)
		}
	}
}

// TestPeerClosed: a socket whose peer has sent its FIN (CLOSE_WAIT) cannot
// be added (the sockmap takes established TCP sockets only); one whose FIN
// comes after Add shows it in its state, and the bytes before it go
// through.
func TestPeerClosed(t *testing.T) {
	r := newRelay(t)
	c := dialPair(t)
	pc, pb := fdOf(t, c.pc), fdOf(t, c.pb)
	waitFIN := func(fd int) {
		t.Helper()
		for {
			fin, _, err := PeerClosed(fd)
			if err != nil {
				t.Fatal(err)
			}
			if fin {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	c.backend.CloseWrite()
	waitFIN(pb)
	if _, err := r.Add(pc, pb); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("Add with a socket in CLOSE_WAIT: %v, want EOPNOTSUPP", err)
	}

	c = dialPair(t)
	pc, pb = fdOf(t, c.pc), fdOf(t, c.pb)
	p, err := r.Add(pc, pb)
	if err != nil {
		t.Fatal(err)
	}
	c.backend.Write([]byte("bye"))
	c.backend.CloseWrite()
	waitFIN(pb)
	if n := waitFlushed(t, p, 1, true); n != 3 {
		t.Errorf("moved %d, want 3", n)
	}
	unix.Shutdown(pc, unix.SHUT_WR)
	if got, err := io.ReadAll(c.client); err != nil || string(got) != "bye" {
		t.Errorf("client: %q, %v", got, err)
	}
	if soerr, _ := unix.GetsockoptInt(pc, unix.SOL_SOCKET, unix.SO_ERROR); soerr != 0 {
		t.Errorf("SO_ERROR on the client side after the FIN: %v (the empty FIN segment must not be redirected)", unix.Errno(soerr))
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func readN(c net.Conn, n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(c, b)
	return b, err
}

// TestSlowReader documents why the relay is not used by lbd: an egress
// redirect has no flow control. While the client reads nothing, the
// backend side keeps receiving (its window never closes): the client
// side's send queue fills up to its send buffer, and everything beyond
// piles up in the sockmap's own queue (the psock's), without bound; the
// backend is never held back. A userspace relay stops reading once the
// client side's send buffer is full, so TCP holds the backend back after
// a few MB of socket buffers.
//
// Once the client reads again, the kernel is supposed to send the rest.
// Through lbd's engine (internal/proxy's TestSlowClientDoesNotBlockOthers
// with the relay on, about one run in twenty) Linux 6.18 sometimes stopped
// for good with data left in that queue and no error on either socket; if
// that happens here it is logged, not failed, as the kernel's behaviour.
func TestSlowReader(t *testing.T) {
	r := newRelay(t)
	c := dialPair(t)
	pc, pb := fdOf(t, c.pc), fdOf(t, c.pb)
	p, err := r.Add(pc, pb)
	if err != nil {
		t.Fatal(err)
	}
	const size = 32 << 20
	sndbuf, _ := unix.GetsockoptInt(pc, unix.SOL_SOCKET, unix.SO_SNDBUF)
	c.backend.SetWriteDeadline(time.Now().Add(3 * time.Second))
	n, err := c.backend.Write(make([]byte, size))
	rcv := count(t, pb).Received
	ti, _ := unix.GetsockoptTCPInfo(pc, unix.IPPROTO_TCP, unix.TCP_INFO)
	t.Logf("client not reading: the backend wrote %d of %d bytes (%v); the proxy's backend side received %d; "+
		"the client side's send queue holds %d unsent bytes (SO_SNDBUF %d); the rest, %d bytes, waits in the sockmap's queue",
		n, size, err, rcv, ti.Notsent_bytes, sndbuf, rcv-count(t, pc).Written)
	if queued := rcv - count(t, pc).Written; queued < 8<<20 {
		t.Errorf("only %d bytes wait outside the socket buffers: flow control works after all (update doc.go)", queued)
	}
	c.backend.CloseWrite()
	c.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	done := make(chan struct{})
	go func() {
		defer close(done)
		waitFlushedOrNot(t, p)
	}()
	got, err := io.Copy(io.Discard, c.client)
	<-done
	if got < int64(n) {
		w := count(t, pc).Written
		t.Logf("KERNEL STALL: the client got %d of %d bytes (%v); the client side has %d written, %d never left the sockmap's queue",
			got, n, err, w, rcv-1-w)
	} else {
		t.Logf("the client got all %d bytes", got)
	}
}

// waitFlushedOrNot forwards the backend's FIN to the client once the
// client side has queued everything, giving up after 5s.
func waitFlushedOrNot(t *testing.T, p *Pair) {
	end := time.Now().Add(5 * time.Second)
	for time.Now().Before(end) {
		if _, ok, err := p.Moved(1, true); err != nil || ok {
			if ok {
				unix.Shutdown(p.fd[0], unix.SHUT_WR)
			}
			return
		}
		time.Sleep(time.Millisecond)
	}
}
