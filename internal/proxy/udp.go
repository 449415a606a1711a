package proxy

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// UDP: each client address:port is a flow with its own connected socket
// toward the chosen backend. Replies leave through the listener socket, from
// the address the client sent to. A flow with no traffic for IdleTimeout is
// closed, so descriptors never pile up (Pen issue #46). A backend that
// answers with ICMP port unreachable is blacklisted and the flow moves to the
// next backend, resending its last datagram.
//
// Source addresses are easy to spoof, so what a stranger can make the server
// hold is bounded: flows per source address (MaxFlowsPerSource) and in all
// (MaxConnections, else DefaultMaxFlows); a datagram beyond either limit is
// dropped, counted and logged (rate-limited). A flow keeps its last datagram
// only until the backend first answers (it is what failover resends), and
// only up to maxSaved bytes.

const (
	maxDatagram = 64 << 10
	// maxSaved is the largest datagram a flow keeps for resending after a
	// failover. The resend only spares the client a retry on its first
	// exchange; requests that open UDP exchanges (DNS, NTP, RADIUS, SIP,
	// syslog) are much smaller, and a larger one is simply not resent.
	maxSaved = 2 << 10
	// DefaultMaxFlows is a UDP service's flow limit when MaxConnections
	// is 0.
	DefaultMaxFlows = 4096
)

// flowLimits returns the service's flow limit and per-source limit.
func flowLimits(o *Options) (total, perSource int) {
	total = o.MaxConnections
	if total <= 0 {
		total = DefaultMaxFlows
	}
	perSource = o.MaxFlowsPerSource
	if perSource <= 0 {
		perSource = max(total/8, 1)
	}
	return total, perSource
}

// UDPServer serves one UDP service.
type UDPServer struct {
	svc   *Service
	conn  *net.UDPConn
	pc4   *ipv4.PacketConn // set when replies need an explicit source
	pc6   *ipv6.PacketConn
	mu    sync.Mutex
	flows map[netip.AddrPort]*flow
	perIP map[netip.Addr]int // flows per client address
	wg    sync.WaitGroup
	done  chan struct{}
}

// flow is one client address:port's exchange with a backend.
type flow struct {
	srv   *UDPServer
	local netip.Addr // where the client sent to (for the reply source)
	mu    sync.Mutex
	// session is the flow's backend choice and bookkeeping, guarded by mu
	// but for the client (peer) and options, set once. It is served once
	// a socket to a backend is open.
	session
	conn       *net.UDPConn
	last       atomic.Int64 // unix nanoseconds of the last datagram
	replied    bool
	lastPkt    []byte // the last datagram (up to maxSaved) until a reply
	sent, recv atomic.Uint64
}

// ServeUDP listens on the service address and serves it until Close: Open
// and ServeUDPSocket in one.
func ServeUDP(svc *Service) (*UDPServer, error) {
	s, err := Open(UDPKind, svc.Options().Listen, 0)
	if err != nil {
		return nil, err
	}
	return ServeUDPSocket(svc, s), nil
}

// Addr returns the listening address.
func (u *UDPServer) Addr() net.Addr { return u.conn.LocalAddr() }

// Close stops the listener and every flow.
func (u *UDPServer) Close() {
	close(u.done)
	u.conn.Close()
	u.mu.Lock()
	for _, f := range u.flows {
		f.mu.Lock()
		f.conn.Close()
		f.mu.Unlock()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

// Flows returns the number of open flows.
func (u *UDPServer) Flows() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.flows)
}

func (u *UDPServer) read(b []byte) (int, netip.AddrPort, netip.Addr, error) {
	switch {
	case u.pc4 != nil:
		n, cm, src, err := u.pc4.ReadFrom(b)
		var dst netip.Addr
		if cm != nil {
			dst, _ = netip.AddrFromSlice(cm.Dst)
		}
		return n, netAddrPort(src), dst.Unmap(), err
	case u.pc6 != nil:
		n, cm, src, err := u.pc6.ReadFrom(b)
		var dst netip.Addr
		if cm != nil {
			dst, _ = netip.AddrFromSlice(cm.Dst)
		}
		return n, netAddrPort(src), dst.Unmap(), err
	}
	n, src, err := u.conn.ReadFromUDPAddrPort(b)
	return n, netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), netip.Addr{}, err
}

func (u *UDPServer) reply(b []byte, to netip.AddrPort, from netip.Addr) error {
	switch {
	case u.pc4 != nil && from.IsValid():
		_, err := u.pc4.WriteTo(b, &ipv4.ControlMessage{Src: from.AsSlice()}, net.UDPAddrFromAddrPort(to))
		return err
	case u.pc6 != nil && from.IsValid():
		src := from
		if src.Is4() {
			src = netip.AddrFrom16(src.As16())
		}
		_, err := u.pc6.WriteTo(b, &ipv6.ControlMessage{Src: src.AsSlice()}, net.UDPAddrFromAddrPort(to))
		return err
	}
	_, err := u.conn.WriteToUDPAddrPort(b, to)
	return err
}

func (u *UDPServer) serve() {
	defer u.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, client, local, err := u.read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if isLocalError(err) {
				u.svc.localErrs.Add(1)
				u.svc.warn(u.svc.localLog, "udp: receive: %v", err)
				t := time.NewTimer(acceptBackoff)
				select {
				case <-u.done: // Close need not wait out the pause
					t.Stop()
					return
				case <-t.C:
				}
			} else {
				u.svc.acceptLog.Logf(u.svc.logf, "udp: receive: %v", err)
			}
			continue
		}
		u.mu.Lock()
		f := u.flows[client]
		if f == nil {
			f = u.newFlow(client, local)
			if f != nil {
				u.flows[client] = f
				u.perIP[client.Addr()]++
			}
		}
		u.mu.Unlock()
		if f != nil {
			f.send(buf[:n])
		}
	}
}

// newFlow picks a backend for a new client; nil drops the datagram. It is
// called with u.mu held.
func (u *UDPServer) newFlow(client netip.AddrPort, local netip.Addr) *flow {
	o := u.svc.opts.Load()
	total, perSource := flowLimits(o)
	switch {
	case len(u.flows) >= total:
		u.svc.refused.Add(1)
		u.svc.flowLimited.Add(1)
		u.svc.warn(u.svc.flowLog, "udp: %d flows, the limit: dropping datagrams of new clients (%s)", len(u.flows), client)
		return nil
	case u.perIP[client.Addr()] >= perSource:
		u.svc.refused.Add(1)
		u.svc.flowLimited.Add(1)
		u.svc.warn(u.svc.flowLog, "udp: %s has %d flows, the limit per source address: dropping its datagrams for new flows", client.Addr(), perSource)
		return nil
	}
	now := time.Now()
	f := &flow{srv: u, local: local}
	if !f.admit(u.svc, o, client, now) {
		return nil
	}
	f.last.Store(now.UnixNano())
	if f.pick(now) && f.dial(now, nil) {
		return f
	}
	// No backend, or this host is out of descriptors, memory or ports:
	// the datagram is dropped.
	f.done(0, 0, now)
	return nil
}

// dial opens a socket to the reserved backend, failing over as the session
// decides, and resends resend there. It reports false when the flow has no
// backend left. It is called with f.mu held, or before f is shared.
func (f *flow) dial(now time.Time, resend []byte) bool {
	u := f.srv
	for {
		c, err := dialUDP(f.opts, f.choice.Addr)
		if err == nil {
			f.conn = c
			f.connected(now)
			if len(resend) > 0 {
				c.Write(resend)
			}
			u.wg.Add(1)
			go f.readReplies(c)
			return true
		}
		if !f.failed(err, now) {
			return false
		}
	}
}

func dialUDP(o *Options, addr netip.AddrPort) (*net.UDPConn, error) {
	var laddr *net.UDPAddr
	if o.Source.IsValid() {
		laddr = &net.UDPAddr{IP: o.Source.AsSlice()}
	}
	return net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(addr))
}

func (f *flow) send(p []byte) {
	f.last.Store(time.Now().UnixNano())
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.replied {
		if len(p) <= maxSaved {
			f.lastPkt = append(f.lastPkt[:0], p...)
		} else {
			f.lastPkt = f.lastPkt[:0] // too big to keep: not resent
		}
	}
	if _, err := f.conn.Write(p); err != nil && isConnRefused(err) {
		f.failoverLocked(err)
		return
	}
	f.sent.Add(uint64(len(p)))
}

// failoverLocked moves the flow, whose backend refused a datagram (err),
// to the next backend and resends the last datagram. It returns false when
// no backend is left.
func (f *flow) failoverLocked(err error) bool {
	f.conn.Close()
	now := time.Now()
	return f.failed(err, now) && f.dial(now, f.lastPkt)
}

// readReplies relays the backend's datagrams to the client until the flow
// idles out or the socket is replaced.
func (f *flow) readReplies(c *net.UDPConn) {
	u := f.srv
	defer u.wg.Done()
	rc, err := c.SyscallConn()
	if err != nil {
		f.close()
		return
	}
	relay := func(b []byte) {
		f.last.Store(time.Now().UnixNano())
		f.mu.Lock()
		f.replied = true
		f.lastPkt = nil
		f.mu.Unlock()
		f.recv.Add(uint64(len(b)))
		u.reply(b, f.peer, f.local)
	}
	for {
		idle := u.svc.opts.Load().IdleTimeout
		if idle > 0 {
			c.SetReadDeadline(time.Unix(0, f.last.Load()).Add(idle))
		}
		err := readDatagram(rc, relay)
		if err == nil {
			continue
		}
		f.mu.Lock()
		current := f.conn == c
		switch {
		case !current:
			f.mu.Unlock()
			return // replaced by failover
		case isConnRefused(err):
			if f.failoverLocked(err) {
				f.mu.Unlock()
				return
			}
		case isTimeout(err) && time.Since(time.Unix(0, f.last.Load())) < idle:
			f.mu.Unlock()
			continue
		}
		f.mu.Unlock()
		f.close()
		return
	}
}

func (f *flow) close() {
	u := f.srv
	u.mu.Lock()
	if u.flows[f.peer] != f {
		u.mu.Unlock()
		return
	}
	delete(u.flows, f.peer)
	if n := u.perIP[f.peer.Addr()] - 1; n > 0 {
		u.perIP[f.peer.Addr()] = n
	} else {
		delete(u.perIP, f.peer.Addr())
	}
	u.mu.Unlock()
	f.mu.Lock()
	f.conn.Close()
	f.done(f.sent.Load(), f.recv.Load(), time.Now())
	f.mu.Unlock()
}

// datagramPool holds receive buffers for the flows' reply readers.
var datagramPool = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// readDatagram waits until the connected socket has a datagram and hands it
// to use. The 64 KiB buffer comes from a pool only once the socket is
// readable, so thousands of waiting flows hold no buffers.
func readDatagram(rc syscall.RawConn, use func([]byte)) error {
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		bp := datagramPool.Get().(*[]byte)
		defer datagramPool.Put(bp)
		n, e := unix.Read(int(fd), *bp)
		switch {
		case e == unix.EAGAIN:
			return false
		case e != nil:
			rerr = e // e.g. ECONNREFUSED after an ICMP port unreachable
		default:
			use((*bp)[:n])
		}
		return true
	})
	if err != nil {
		return err // deadline or closed
	}
	return rerr
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
