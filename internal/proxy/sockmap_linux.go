package proxy

import (
	"errors"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/sockmap"
)

// The kernel relay, an experiment that is off unless NIB_SOCKMAP=1 is in
// lbd's environment (see internal/sockmap). Once an established plain TCP
// connection has moved defaultKernelAfter bytes and the engine holds none
// of its bytes, both sockets go into the sockmap (bytes that arrived but
// were not read yet are handed to the kernel with sockmap.Pair.Kick) and
// the kernel relays their data (an sk_skb verdict program redirecting each side's segments
// to the other's send queue). The engine keeps the sockets in its epoll set
// and still handles their ends: a FIN (EPOLLRDHUP) is forwarded with
// shutdown(2) once the peer's send queue has taken every byte received
// (TCP_INFO and SIOCOUTQ; the kernel queues redirected data through a
// workqueue, so the check is repeated every millisecond until it holds),
// an error or reset (EPOLLERR) closes both, and the byte counts come from
// TCP_INFO (tcpi_bytes_received of each socket, less its peer's FIN), read
// when a session looks idle to the sweep, every kernelRefresh for the live
// counters, and at the end. When the program cannot be loaded or attached, or adding a
// pair fails, connections are relayed by the engine as usual.

// kernelRefresh is how often all kernel-relayed sessions' counters are
// read (for the live counters); a session about to time out is read at
// every sweep.
const kernelRefresh = 5 * time.Second

// kernConn is a kernel-relayed session's state.
type kernConn struct {
	pair    *sockmap.Pair
	eof     [2]bool // FIN (or hang-up) seen: 0 the client's, 1 the backend's
	shut    [2]bool // that FIN forwarded to the other side
	waiting bool    // on the loop's finWait list
}

// defaultKernelAfter is how many bytes a connection moves through the
// engine before it goes to the kernel relay: adding a pair costs more
// than relaying a short connection's few bytes (NIB_SOCKMAP_AFTER sets
// another value; 0 hands connections over as soon as they are connected).
const defaultKernelAfter = 64 << 10

// newKernelRelay loads the kernel relay if NIB_SOCKMAP=1, or returns nil,
// and the number of bytes after which connections are handed over.
func newKernelRelay(logf func(string, ...any)) (*sockmap.Relay, uint64) {
	if os.Getenv("NIB_SOCKMAP") != "1" {
		return nil, 0
	}
	after := uint64(defaultKernelAfter)
	if v := os.Getenv("NIB_SOCKMAP_AFTER"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			logf("proxy: NIB_SOCKMAP_AFTER=%q: want a number of bytes", v)
		} else {
			after = n
		}
	}
	r, err := sockmap.New()
	if err != nil {
		logf("proxy: NIB_SOCKMAP=1: %v; relaying in userspace", err)
		return nil, 0
	}
	return r, after
}

// tryKernel moves an established plain TCP session into the kernel relay
// once it has moved kernelAfter bytes, at a moment the engine holds none
// of its bytes.
func (l *loop) tryKernel(s *tcpConn) {
	o := s.opts
	c, b := &s.client, &s.backend
	if s.next == nil || s.state != established || s.kern != nil {
		return
	}
	if o.ProxyProtocol != 0 || o.HTTP || o.TLS != nil || c.eof || b.eof {
		s.noKern = true
		return
	}
	if s.bytes[0]+s.bytes[1] < l.kernelAfter || s.queued || c.pend > 0 || b.pend > 0 {
		return // not yet
	}
	s.noKern = true // one attempt
	p, err := l.relay.Add(c.fd, b.fd)
	if err != nil {
		// EOPNOTSUPP: a socket is no longer established (its peer's FIN
		// came), which the sockmap refuses; not worth a warning.
		if !errors.Is(err, unix.EOPNOTSUPP) {
			s.svc.warn(s.svc.localLog, "sockmap: %v (this connection is relayed in userspace)", err)
		}
		return
	}
	s.kern = &kernConn{pair: p}
	// Only ends and errors matter now: no wake-up for every ACK that
	// frees send space.
	for _, ep := range [2]*endpoint{c, b} {
		ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(ep.fd), Pad: int32(ep.gen)}
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, ep.fd, &ev)
	}
	// Bytes that arrived after the engine's last read wait in the
	// receive queues for the next segment: have the kernel take them now.
	// A FIN among them, whose EPOLLRDHUP the engine may have consumed
	// already, shows in the socket's state.
	if err := p.Kick(); err != nil {
		l.kernelClose(s)
		return
	}
	for i, ep := range [2]*endpoint{c, b} {
		fin, reset, err := sockmap.PeerClosed(ep.fd)
		if err != nil || reset {
			l.kernelClose(s)
			return
		}
		if fin {
			s.kern.eof[i], ep.eof = true, true
		}
	}
	l.kernelFlush(s)
}

// kernelEvent handles an event on a kernel-relayed session's socket.
func (l *loop) kernelEvent(ep *endpoint, events uint32) {
	s := ep.sess
	if events&unix.EPOLLERR != 0 {
		l.kernelClose(s)
		return
	}
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP) == 0 {
		return
	}
	i := 0
	if ep.kind == kindBackend {
		i = 1
	}
	if !s.kern.eof[i] {
		// ep.eof too, for the sweep's half-close timeout.
		s.kern.eof[i], ep.eof = true, true
		s.last = l.now // the half-close clock starts
	}
	l.kernelFlush(s)
}

// kernelFlush forwards each FIN whose bytes have all reached the other
// side's send queue, closes the session when both are forwarded, and
// otherwise keeps it on the finWait list.
func (l *loop) kernelFlush(s *tcpConn) {
	k := s.kern
	eps := [2]*endpoint{&s.client, &s.backend}
	for i := range 2 {
		if !k.eof[i] || k.shut[i] {
			continue
		}
		_, ok, err := k.pair.Moved(i, true)
		if err != nil {
			l.kernelClose(s)
			return
		}
		if ok {
			unix.Shutdown(eps[1-i].fd, unix.SHUT_WR)
			k.shut[i] = true
		}
	}
	if k.shut[0] && k.shut[1] {
		l.kernelClose(s)
		return
	}
	if ((k.eof[0] && !k.shut[0]) || (k.eof[1] && !k.shut[1])) && !k.waiting {
		k.waiting = true
		l.finWait = append(l.finWait, s)
	}
}

// kernelFins retries the FINs waiting for their bytes to be flushed.
func (l *loop) kernelFins() {
	w := l.finWait
	l.finWait = nil
	for _, s := range w {
		s.kern.waiting = false
		if s.next != nil {
			l.kernelFlush(s)
		}
	}
}

// kernelCount sets the session's byte counts from TCP_INFO.
func (l *loop) kernelCount(s *tcpConn) {
	k := s.kern
	for i, ep := range [2]*endpoint{&s.client, &s.backend} {
		c, err := sockmap.Count(ep.fd)
		if err != nil {
			continue
		}
		n := c.Received
		if k.eof[i] && n > 0 {
			n-- // the FIN
		}
		if n != s.bytes[i] {
			s.bytes[i] = n
			s.last = l.now
		}
	}
}

func (l *loop) kernelClose(s *tcpConn) {
	l.kernelCount(s)
	l.closeSession(s)
}

// kernelSweep refreshes the counters of kernel-relayed sessions before the
// sweep: those the sweep would time out (their traffic is seen only
// here), and all of them every kernelRefresh for the live counters.
func (l *loop) kernelSweep() {
	if l.relay == nil {
		return
	}
	all := l.now.Sub(l.lastKernel) >= kernelRefresh
	if all {
		l.lastKernel = l.now
	}
	for s := l.head.next; s != &l.head; s = s.next {
		if s.kern == nil {
			continue
		}
		if !all {
			// As the sweep computes it.
			it := s.opts.IdleTimeout
			if (s.client.eof || s.backend.eof) && (it <= 0 || l.halfClose < it) {
				it = l.halfClose
			}
			if it <= 0 || l.now.Sub(s.last) <= it {
				continue
			}
		}
		l.kernelCount(s)
	}
}
