package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/proxyproto"
)

// The TCP engine: each loop owns an epoll set and relays with splice(2)
// through pipes taken from a per-loop pool only while data is in flight, so
// an idle connection costs two sockets and one small struct. A loop parks on
// Go's netpoller (its epoll fd is itself pollable), so loops never hold a
// scheduler thread hostage and other goroutines (UDP, TLS, control) stay
// responsive.

const (
	maxSplice   = 1 << 16 // bytes moved per splice call (one pipe's worth)
	copyBuf     = 16 << 10
	maxEvents   = 256
	maxAccepts  = 64 // accepts per listener wakeup
	maxPipePool = 64
	sweepEvery  = 250 * time.Millisecond
	yieldEvery  = time.Millisecond
)

type kind uint8

const (
	kindListener kind = iota + 1
	kindClient
	kindBackend
	kindWake
)

// endpoint is one socket of a relayed connection (or a listener).
type endpoint struct {
	kind kind
	fd   int
	svc  *Service // listeners
	sess *session
	peer *endpoint
	// pr, pw hold bytes read from this endpoint that its peer has not taken
	// yet; -1 when no pipe is attached.
	pr, pw int
	buf    []byte // copy mode: bytes read from this endpoint not yet written
	pend   int    // bytes waiting in the pipe or buf
	splice bool   // bulk transfer: relay with splice(2)
	eof    bool   // read side finished
	ev     uint32 // registered epoll events
}

type state uint8

const (
	connecting state = iota + 1
	established
)

type session struct {
	client, backend endpoint
	svc             *Service
	opts            *Options
	state           state
	choice          balance.Choice
	peer            netip.AddrPort // the client
	deadline        time.Time      // connect deadline
	last            time.Time      // last traffic
	sent, recv      uint64         // bytes to / from the backend, not yet reported
	prev, next      *session       // the loop's session list
}

// Engine runs the TCP loops.
type Engine struct {
	loops []*loop
	mu    sync.Mutex
	lfds  map[*Service]int
}

type loop struct {
	epfd      int
	file      *os.File
	rc        syscall.RawConn
	wakefd    int
	events    [maxEvents]unix.EpollEvent
	buf       [copyBuf]byte
	fds       []*endpoint // by file descriptor
	pipes     [][2]int
	now       time.Time
	head      session // sentinel of the session list
	nsess     int
	lastSw    time.Time
	lastYield time.Time
	// deadline is when a parked wait wakes up for the sweep.
	deadline time.Time

	mu     sync.Mutex
	cmds   []func()
	closed bool
	done   chan struct{}
}

// NewEngine starts n loops (n < 1 means 1).
func NewEngine(n int) (*Engine, error) {
	if n < 1 {
		n = 1
	}
	e := &Engine{lfds: make(map[*Service]int)}
	for range n {
		l, err := newLoop()
		if err != nil {
			e.Close()
			return nil, err
		}
		e.loops = append(e.loops, l)
		go l.run()
	}
	return e, nil
}

func newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	l := &loop{epfd: epfd, wakefd: wfd, done: make(chan struct{})}
	l.head.prev, l.head.next = &l.head, &l.head
	l.file = os.NewFile(uintptr(epfd), "epoll")
	if l.rc, err = l.file.SyscallConn(); err != nil {
		l.file.Close()
		unix.Close(wfd)
		return nil, err
	}
	l.set(&endpoint{kind: kindWake, fd: wfd})
	if err := l.ctl(unix.EPOLL_CTL_ADD, wfd, unix.EPOLLIN); err != nil {
		l.file.Close()
		unix.Close(wfd)
		return nil, err
	}
	return l, nil
}

// Listen opens svc's listening socket and serves it on every loop.
func (e *Engine) Listen(svc *Service) error {
	o := svc.Options()
	fd, err := listenTCP(o.Listen, o.Backlog)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.Listen, err)
	}
	e.mu.Lock()
	e.lfds[svc] = fd
	e.mu.Unlock()
	for _, l := range e.loops {
		errc := make(chan error, 1)
		l.do(func() {
			l.set(&endpoint{kind: kindListener, fd: fd, svc: svc})
			errc <- l.ctl(unix.EPOLL_CTL_ADD, fd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE)
		})
		if err := <-errc; err != nil {
			e.Unlisten(svc)
			return fmt.Errorf("listen on %s: epoll: %w", o.Listen, err)
		}
	}
	return nil
}

// Unlisten stops accepting for svc; its established connections go on.
func (e *Engine) Unlisten(svc *Service) {
	e.mu.Lock()
	fd, ok := e.lfds[svc]
	delete(e.lfds, svc)
	e.mu.Unlock()
	if !ok {
		return
	}
	var wg sync.WaitGroup
	for _, l := range e.loops {
		wg.Add(1)
		l.do(func() {
			defer wg.Done()
			if fd < len(l.fds) && l.fds[fd] != nil {
				unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
				l.fds[fd] = nil
			}
		})
	}
	wg.Wait()
	unix.Close(fd)
}

// Close stops accepting everywhere and closes every connection.
func (e *Engine) Close() {
	e.mu.Lock()
	svcs := make([]*Service, 0, len(e.lfds))
	for s := range e.lfds {
		svcs = append(svcs, s)
	}
	e.mu.Unlock()
	for _, s := range svcs {
		e.Unlisten(s)
	}
	for _, l := range e.loops {
		l.do(func() {
			for s := l.head.next; s != &l.head; {
				n := s.next
				l.closeSession(s)
				s = n
			}
			l.closed = true
		})
		<-l.done
	}
}

// do runs f on the loop's goroutine.
func (l *loop) do(f func()) {
	l.mu.Lock()
	l.cmds = append(l.cmds, f)
	l.mu.Unlock()
	var one = [8]byte{1}
	unix.Write(l.wakefd, one[:])
}

func (l *loop) ctl(op, fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	return unix.EpollCtl(l.epfd, op, fd, &ev)
}

func (l *loop) set(ep *endpoint) {
	for ep.fd >= len(l.fds) {
		l.fds = append(l.fds, make([]*endpoint, len(l.fds)+256)...)
	}
	l.fds[ep.fd] = ep
}

// watch sets the events an endpoint is registered for.
func (l *loop) watch(ep *endpoint, events uint32) {
	if ep.ev == events {
		return
	}
	op := unix.EPOLL_CTL_MOD
	if ep.ev == 0 {
		op = unix.EPOLL_CTL_ADD
	}
	if events == 0 {
		op = unix.EPOLL_CTL_DEL
	}
	if err := l.ctl(op, ep.fd, events); err == nil {
		ep.ev = events
	}
}

func (l *loop) run() {
	defer close(l.done)
	defer l.file.Close()
	defer unix.Close(l.wakefd)
	for !l.closed {
		n := l.wait()
		l.now = time.Now()
		for i := range n {
			ev := &l.events[i]
			fd := int(ev.Fd)
			if fd >= len(l.fds) || l.fds[fd] == nil {
				continue
			}
			l.handle(l.fds[fd], ev.Events)
		}
		if l.now.Sub(l.lastSw) >= sweepEvery {
			l.sweep()
		}
		if l.now.Sub(l.lastYield) >= yieldEvery {
			// Let the rest of the process run: a loop that never parks
			// holds its P, and looks stuck to the runtime's monitor.
			// A short sleep parks (runtime.Gosched would requeue the
			// loop ahead of the netpoller, starving goroutines that
			// wait for the network when GOMAXPROCS is 1).
			l.lastYield = l.now
			time.Sleep(time.Nanosecond)
		}
	}
}

// wait collects ready events. When there are none it parks the goroutine on
// the netpoller (the epoll fd is readable while events are pending) until
// events arrive or the next sweep is due, using no CPU. (Blocking in
// epoll_wait behind the scheduler's back was tried: no measurable gain, and
// it starves the process's other goroutines when GOMAXPROCS is 1.)
func (l *loop) wait() int {
	if n := l.epollWait(0); n > 0 {
		return n
	}
	if now := time.Now(); !now.Before(l.deadline) {
		l.deadline = now.Add(sweepEvery)
		l.file.SetReadDeadline(l.deadline)
	}
	var n int
	l.rc.Read(func(uintptr) bool {
		n = l.epollWait(0)
		return n > 0
	})
	return n
}

func (l *loop) epollWait(ms int) int {
	for {
		n, err := unix.EpollWait(l.epfd, l.events[:], ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			panic(fmt.Sprintf("epoll_wait: %v", err))
		}
		return n
	}
}

func (l *loop) handle(ep *endpoint, events uint32) {
	switch ep.kind {
	case kindWake:
		var b [8]byte
		unix.Read(ep.fd, b[:])
		l.mu.Lock()
		cmds := l.cmds
		l.cmds = nil
		l.mu.Unlock()
		for _, f := range cmds {
			f()
		}
	case kindListener:
		l.accept(ep.svc, ep.fd)
	default:
		s := ep.sess
		if s.state == connecting {
			if ep.kind == kindBackend {
				l.connected(s)
			}
			return
		}
		if events&unix.EPOLLOUT != 0 && ep.peer.pend > 0 {
			if !l.flush(ep.peer) {
				return
			}
		}
		if events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			if ep.eof {
				// Reads are done, so this is an error or a reset.
				l.closeSession(s)
				return
			}
			if ep.pend == 0 {
				l.relay(ep)
			}
		}
	}
}

func (l *loop) accept(svc *Service, lfd int) {
	o := svc.opts.Load()
	for range maxAccepts {
		fd, sa, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			if err != unix.EAGAIN && err != unix.ECONNABORTED && err != unix.EINTR {
				svc.logf("accept: %v", err)
			}
			return
		}
		if !svc.admit(o) {
			unix.Close(fd)
			continue
		}
		if o.NoDelay {
			unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		}
		s := &session{svc: svc, opts: o, peer: addrPort(sa), last: l.now}
		s.client = endpoint{kind: kindClient, fd: fd, sess: s, pr: -1, pw: -1}
		s.backend = endpoint{kind: kindBackend, fd: -1, sess: s, pr: -1, pw: -1}
		s.client.peer, s.backend.peer = &s.backend, &s.client
		l.link(s)
		l.set(&s.client)
		s.choice = svc.pool.Pick(s.peer, l.now)
		l.dial(s)
	}
}

// dial connects to s.choice, failing over until a connect is under way or
// no backend is left.
func (l *loop) dial(s *session) {
	for {
		if s.choice.Index == balance.NoServer {
			l.closeSession(s)
			return
		}
		err := l.startConnect(s)
		if err == nil {
			return
		}
		s.choice = s.svc.pool.Failed(s.choice, s.peer, l.now)
	}
}

func (l *loop) startConnect(s *session) error {
	sa, family := sockaddr(s.choice.Addr)
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	o := s.opts
	if o.NoDelay {
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	if o.KeepAlive {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	}
	if o.Source.IsValid() {
		src, _ := sockaddr(netip.AddrPortFrom(o.Source, 0))
		if err := unix.Bind(fd, src); err != nil {
			unix.Close(fd)
			return err
		}
	}
	err = unix.Connect(fd, sa)
	if err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return err
	}
	s.backend.fd = fd
	s.backend.ev = 0
	s.state = connecting
	s.deadline = l.now.Add(o.ConnectTimeout)
	l.set(&s.backend)
	l.watch(&s.backend, unix.EPOLLOUT)
	return nil
}

// connected runs when the backend socket becomes writable (or fails).
func (l *loop) connected(s *session) {
	if errno, err := unix.GetsockoptInt(s.backend.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || errno != 0 {
		l.failover(s)
		return
	}
	s.svc.pool.Connected(s.choice, s.peer, l.now)
	s.state = established
	s.last = l.now
	if p := s.opts.ProxyProtocol; p != 0 {
		if err := l.sendProxyHeader(s, p); err != nil {
			l.closeSession(s)
			return
		}
	}
	l.update(&s.backend)
	l.update(&s.client)
}

func (l *loop) sendProxyHeader(s *session, version int) error {
	local, err := unix.Getsockname(s.client.fd)
	if err != nil {
		return err
	}
	var hdr []byte
	if version == 1 {
		hdr = proxyproto.AppendV1(nil, s.peer, addrPort(local))
	} else {
		hdr = proxyproto.AppendV2(nil, true, s.peer, addrPort(local))
	}
	n, err := unix.Write(s.backend.fd, hdr)
	if err != nil {
		return err
	}
	if n != len(hdr) {
		return errors.New("short write of PROXY header")
	}
	s.sent += uint64(n)
	return nil
}

// failover abandons the current backend connect and tries the next one.
func (l *loop) failover(s *session) {
	l.fds[s.backend.fd] = nil
	unix.Close(s.backend.fd)
	s.backend.fd, s.backend.ev = -1, 0
	s.choice = s.svc.pool.Failed(s.choice, s.peer, l.now)
	l.dial(s)
}

// relay moves what src has to its peer. Small reads are copied through the
// loop's buffer (two syscalls, like splicing, but cheaper for small
// messages); once a read fills the buffer the direction is a bulk transfer
// and switches to splice(2), which moves pages without copying them, until
// a splice moves less than a buffer's worth.
func (l *loop) relay(src *endpoint) {
	if src.splice {
		l.relaySplice(src)
		return
	}
	s := src.sess
	n, err := unix.Read(src.fd, l.buf[:])
	switch {
	case n > 0:
		l.count(src, n)
		if n == len(l.buf) {
			src.splice = true
		}
		m, err := unix.Write(src.peer.fd, l.buf[:n])
		if m == n {
			return
		}
		if m < 0 {
			m = 0
			if err != unix.EAGAIN {
				l.closeSession(s)
				return
			}
		}
		// The peer is full: keep the rest and wait for it to drain.
		src.buf = append(src.buf[:0], l.buf[m:n]...)
		src.pend = n - m
		l.update(src)
		l.update(src.peer)
	case n == 0:
		l.readEOF(src)
	case err == unix.EAGAIN || err == unix.EINTR:
	default:
		l.closeSession(s)
	}
}

func (l *loop) count(src *endpoint, n int) {
	s := src.sess
	s.last = l.now
	if src.kind == kindClient {
		s.sent += uint64(n)
	} else {
		s.recv += uint64(n)
	}
}

// readEOF propagates the end of src's stream to its peer.
func (l *loop) readEOF(src *endpoint) {
	l.putPipe(src)
	src.eof = true
	l.update(src)
	if src.peer.eof {
		l.closeSession(src.sess)
		return
	}
	unix.Shutdown(src.peer.fd, unix.SHUT_WR)
}

func (l *loop) relaySplice(src *endpoint) {
	s := src.sess
	if src.pr < 0 && !l.takePipe(src) {
		l.closeSession(s)
		return
	}
	n, err := unix.Splice(src.fd, nil, src.pw, nil, maxSplice, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	switch {
	case n > 0:
		l.count(src, int(n))
		if n < int64(len(l.buf)) {
			src.splice = false
		}
		src.pend = int(n)
		l.flush(src)
	case n == 0 && err == nil:
		l.readEOF(src)
	case err == unix.EAGAIN || err == unix.EINTR:
		l.putPipe(src)
	default:
		l.closeSession(s)
	}
}

// flush writes src's pending bytes (pipe or buffer) to its peer. It
// reports whether the session is still open.
func (l *loop) flush(src *endpoint) bool {
	dst := src.peer
	for src.pend > 0 {
		var m int
		var err error
		if src.pr >= 0 {
			var m64 int64
			m64, err = unix.Splice(src.pr, nil, dst.fd, nil, src.pend, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			m = int(m64)
		} else {
			m, err = unix.Write(dst.fd, src.buf[len(src.buf)-src.pend:])
		}
		if m > 0 {
			src.pend -= m
			continue
		}
		if err == unix.EINTR {
			continue
		}
		if err != unix.EAGAIN {
			l.closeSession(src.sess)
			return false
		}
		break // the peer is full: stop reading src until it drains
	}
	if src.pend == 0 {
		l.putPipe(src)
		if cap(src.buf) > copyBuf {
			src.buf = nil // do not keep big buffers on idle connections
		}
		src.buf = src.buf[:0]
	}
	l.update(src)
	l.update(dst)
	return true
}

// update registers the events an endpoint needs now: input while it has
// nothing waiting for its peer, output while its peer has data for it.
func (l *loop) update(ep *endpoint) {
	var want uint32
	if !ep.eof && ep.pend == 0 {
		want |= unix.EPOLLIN
	}
	if ep.peer.pend > 0 {
		want |= unix.EPOLLOUT
	}
	l.watch(ep, want)
}

func (l *loop) takePipe(ep *endpoint) bool {
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		ep.pr, ep.pw = p[0], p[1]
		return true
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return false
	}
	ep.pr, ep.pw = p[0], p[1]
	return true
}

// putPipe returns an endpoint's empty pipe to the pool.
func (l *loop) putPipe(ep *endpoint) {
	if ep.pr < 0 {
		return
	}
	if ep.pend == 0 && len(l.pipes) < maxPipePool {
		l.pipes = append(l.pipes, [2]int{ep.pr, ep.pw})
	} else {
		unix.Close(ep.pr)
		unix.Close(ep.pw)
	}
	ep.pr, ep.pw, ep.pend = -1, -1, 0
}

func (l *loop) link(s *session) {
	s.prev, s.next = l.head.prev, &l.head
	l.head.prev.next = s
	l.head.prev = s
	l.nsess++
}

func (l *loop) closeSession(s *session) {
	if s.next == nil {
		return // already closed
	}
	s.prev.next, s.next.prev = s.next, s.prev
	s.prev, s.next = nil, nil
	l.nsess--
	for _, ep := range []*endpoint{&s.client, &s.backend} {
		if ep.fd >= 0 {
			l.fds[ep.fd] = nil
			unix.Close(ep.fd)
			ep.fd = -1
		}
		ep.pend = 0
		if ep.pr >= 0 {
			unix.Close(ep.pr)
			unix.Close(ep.pw)
			ep.pr, ep.pw = -1, -1
		}
	}
	if s.choice.Index != balance.NoServer {
		if s.state == established {
			s.svc.pool.Done(s.choice, s.sent, s.recv)
		} else {
			s.svc.pool.Done(s.choice, 0, 0)
		}
	}
	s.svc.release()
}

// sweep enforces connect and idle timeouts and reports byte counters of
// long-lived connections.
func (l *loop) sweep() {
	l.lastSw = l.now
	for s := l.head.next; s != &l.head; {
		next := s.next
		switch s.state {
		case connecting:
			if l.now.After(s.deadline) {
				l.failover(s)
			}
		case established:
			if it := s.opts.IdleTimeout; it > 0 && l.now.Sub(s.last) > it {
				l.closeSession(s)
			} else if s.sent+s.recv >= 1<<20 {
				s.svc.pool.AddBytes(s.choice.Index, s.sent, s.recv)
				s.sent, s.recv = 0, 0
			}
		}
		s = next
	}
}
