package proxy

import (
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/proxyproto"
)

// The relay: what a loop does for one event on a connection socket.

const (
	evRead  = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	evWrite = unix.EPOLLOUT | unix.EPOLLHUP | unix.EPOLLERR
)

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
		return
	case kindListener:
		l.accept(ep)
		return
	}
	if events&evRead != 0 {
		ep.readable = true
		if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			ep.hup = true // read until EOF or error: no more edges come
		}
	}
	if events&evWrite != 0 {
		ep.writable = true
	}
	s := ep.sess
	if s.state == connecting {
		if ep.kind != kindBackend {
			return // client input waits until the backend is there
		}
		switch {
		case events&(unix.EPOLLERR|unix.EPOLLHUP) != 0:
			l.connectFailed(s)
			return
		case events&unix.EPOLLOUT != 0:
			if !l.connected(s) {
				return
			}
		default:
			return
		}
	}
	l.pump(s)
}

// accept takes the connections queued on a listener, up to maxAccepts (the
// level-triggered listener reports again if more are left). When this host
// is out of descriptors or memory, the listener is disarmed for
// acceptBackoff: the queued clients wait in the backlog instead of the loop
// spinning on an error that only closing connections can clear.
func (l *loop) accept(ep *endpoint) {
	svc := ep.svc
	o := svc.opts.Load()
	for range maxAccepts {
		fd, peer, err := accept4(ep.fd)
		if err != nil {
			switch {
			case err == unix.EAGAIN:
			case acceptRetry(err):
				svc.acceptLog.Logf(svc.logf, "accept: %v", err)
				continue // that connection failed; the next may not
			default:
				// Out of resources, or the listener itself is broken:
				// either way another accept now fails the same way.
				if isLocalError(err) {
					svc.localErrs.Add(1)
				}
				svc.warn(svc.acceptLog, "accept: %v (pausing accepts on %s for %v)", err, o.Listen, acceptBackoff)
				l.disarm(ep)
			}
			return
		}
		// Admitted before the connection is allocated: a flood beyond
		// MaxConnections costs no garbage.
		var sess session
		if !sess.admit(svc, o, peer, l.now) {
			unix.Close(fd)
			continue
		}
		s := &tcpConn{session: sess, last: l.now}
		if o.NoDelay {
			unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		}
		s.client = endpoint{kind: kindClient, fd: fd, sess: s, pr: -1, pw: -1, writable: true}
		s.backend = endpoint{kind: kindBackend, fd: -1, sess: s, pr: -1, pw: -1}
		s.client.peer, s.backend.peer = &s.backend, &s.client
		l.link(s)
		if err := l.register(&s.client); err != nil {
			svc.localError("epoll_ctl", peer, err)
			l.closeSession(s)
			continue
		}
		if !s.pick(l.now) {
			l.closeSession(s)
			continue
		}
		l.dial(s)
	}
}

// acceptRetry reports whether an accept error belongs to the one connection
// being accepted (Linux passes a new connection's pending network error to
// accept), so the next accept may succeed.
func acceptRetry(err error) bool {
	switch err {
	case unix.EINTR, unix.ECONNABORTED, unix.EPROTO, unix.EPERM, unix.ENETDOWN, unix.ENOPROTOOPT,
		unix.EHOSTDOWN, unix.ENONET, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.ETIMEDOUT:
		return true
	}
	return false
}

// dial starts connecting to the reserved backend, failing over (as the
// session decides) while connects fail at once, until one is under way or
// the client must be closed.
func (l *loop) dial(s *tcpConn) {
	for {
		err := l.startConnect(s)
		if err == nil {
			return
		}
		if !s.failed(err, l.now) {
			l.closeSession(s)
			return
		}
	}
}

// startConnect starts a non-blocking connect to s.choice. The epoll set
// refusing the socket is an error of this host's own (hostError).
func (l *loop) startConnect(s *tcpConn) error {
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
	b := &s.backend
	b.fd, b.readable, b.writable = fd, false, false
	s.state = connecting
	s.deadline = l.now.Add(o.ConnectTimeout)
	if err := l.register(b); err != nil {
		l.fds[fd] = nil
		unix.Close(fd)
		b.fd = -1
		return hostError{err}
	}
	return nil
}

// errConnect stands for a failed connect whose error could not be read.
var errConnect = errors.New("connect failed")

// errConnectTimeout is a connect that took longer than ConnectTimeout.
var errConnectTimeout = errors.New("connect timed out")

// connectFailed handles an error reported on a connecting backend socket
// (its SO_ERROR): the backend's fault (refused, unreachable) fails over;
// this host's own closes the client only.
func (l *loop) connectFailed(s *tcpConn) {
	err := errConnect
	if e, gerr := unix.GetsockoptInt(s.backend.fd, unix.SOL_SOCKET, unix.SO_ERROR); gerr == nil && e != 0 {
		err = unix.Errno(e)
	}
	l.failover(s, err)
}

// connected finishes a connect the backend socket reported writable (an
// edge-triggered socket that failed reports EPOLLERR instead). It reports
// whether the session is still open.
func (l *loop) connected(s *tcpConn) bool {
	s.session.connected(l.now)
	s.state = established
	s.last = l.now
	if p := s.opts.ProxyProtocol; p != 0 {
		if err := l.sendProxyHeader(s, p); err != nil {
			l.closeSession(s)
			return false
		}
	}
	return true
}

func (l *loop) sendProxyHeader(s *tcpConn, version int) error {
	local, err := getsockname(s.client.fd)
	if err != nil {
		return err
	}
	var hdr []byte
	if version == 1 {
		hdr = proxyproto.AppendV1(nil, s.peer, local)
	} else {
		hdr = proxyproto.AppendV2(nil, true, s.peer, local)
	}
	n, err := unix.Write(s.backend.fd, hdr)
	if err != nil {
		return err
	}
	if n != len(hdr) {
		return errors.New("short write of PROXY header")
	}
	s.bytes[0] += uint64(n)
	return nil
}

// failover abandons the current backend connect, which failed with err,
// and tries the next backend if the session says so.
func (l *loop) failover(s *tcpConn, err error) {
	l.fds[s.backend.fd] = nil
	unix.Close(s.backend.fd)
	s.backend.fd = -1
	if !s.failed(err, l.now) {
		l.closeSession(s)
		return
	}
	l.dial(s)
}

// pump moves data both ways as far as readiness allows.
func (l *loop) pump(s *tcpConn) {
	if !l.transfer(&s.client) || !l.transfer(&s.backend) {
		return
	}
	c, b := &s.client, &s.backend
	if c.eof && b.eof && c.pend == 0 && b.pend == 0 {
		l.closeSession(s)
	}
}

// transfer flushes what src has pending for its peer, then reads more from
// src while both sides are ready. It reports whether the session is open.
func (l *loop) transfer(src *endpoint) bool {
	dst := src.peer
	for n := 0; ; n++ {
		if src.pend > 0 {
			if !dst.writable {
				return true
			}
			if !l.flush(src) {
				return false
			}
			if src.pend > 0 {
				return true
			}
		}
		if !src.readable || src.eof {
			return true
		}
		if n == maxReads {
			l.queue(src.sess)
			return true
		}
		var ok bool
		if src.splice {
			ok = l.readSplice(src)
		} else {
			ok = l.readCopy(src)
		}
		if !ok {
			return false
		}
	}
}

// readCopy reads into the loop's buffer and writes straight to the peer;
// what the peer cannot take yet is kept. A short read means the socket is
// drained (TCP returns less than asked only when its queue is empty) unless
// the peer's FIN or an error was signalled, which must still be read. A
// full buffer means a bulk transfer: switch to splice.
func (l *loop) readCopy(src *endpoint) bool {
	n, err := unix.Read(src.fd, l.buf[:])
	switch {
	case n > 0:
		l.count(src, n)
		if n == len(l.buf) {
			src.splice = true
		} else if !src.hup {
			src.readable = false
		}
		return l.write(src, l.buf[:n])
	case n == 0:
		return l.readEOF(src)
	case err == unix.EAGAIN:
		src.readable = false
		return true
	case err == unix.EINTR:
		return true
	}
	l.closeSession(src.sess)
	return false
}

// write sends p, just read from src, to src's peer and keeps what does not
// fit. It reports whether the session is still open.
func (l *loop) write(src *endpoint, p []byte) bool {
	dst := src.peer
	m := 0
	for dst.writable && m < len(p) {
		k, err := unix.Write(dst.fd, p[m:])
		switch {
		case k > 0:
			m += k
		case err == unix.EAGAIN:
			dst.writable = false
		case err == unix.EINTR:
		default:
			l.closeSession(src.sess)
			return false
		}
	}
	if m < len(p) {
		src.buf = append(src.buf[:0], p[m:]...)
		src.pend = len(p) - m
	}
	return true
}

// readSplice moves up to a pipe's worth from the socket into a pipe, then
// on to the peer. A few small splices in a row end the bulk transfer (one
// small one is usually just the end of a response, with another to come).
func (l *loop) readSplice(src *endpoint) bool {
	if src.pr < 0 && !l.takePipe(src) {
		// No descriptors for a pipe: copy through the loop's buffer.
		src.splice, src.small = false, 0
		return l.readCopy(src)
	}
	n, err := unix.Splice(src.fd, nil, src.pw, nil, maxSplice, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	switch {
	case n > 0:
		l.count(src, int(n))
		if n >= smallSplice {
			src.small = 0
		} else if src.small++; src.small == smallSplices {
			src.splice, src.small = false, 0
		}
		src.pend = int(n)
		return l.flush(src)
	case n == 0 && err == nil:
		return l.readEOF(src)
	case err == unix.EAGAIN:
		src.readable = false
		l.putPipe(src)
		return true
	case err == unix.EINTR:
		return true
	}
	l.closeSession(src.sess)
	return false
}

func (l *loop) count(src *endpoint, n int) {
	s := src.sess
	s.last = l.now
	if src.kind == kindClient {
		s.bytes[0] += uint64(n)
	} else {
		s.bytes[1] += uint64(n)
	}
}

// readEOF propagates the end of src's stream to its peer.
func (l *loop) readEOF(src *endpoint) bool {
	l.putPipe(src)
	src.eof, src.readable = true, false
	src.sess.last = l.now // the half-close clock starts
	if src.peer.eof {
		if src.peer.pend == 0 {
			l.closeSession(src.sess)
			return false
		}
		return true
	}
	unix.Shutdown(src.peer.fd, unix.SHUT_WR)
	return true
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
		switch {
		case m > 0:
			src.pend -= m
		case err == unix.EAGAIN:
			dst.writable = false
			return true
		case err == unix.EINTR:
		default:
			l.closeSession(src.sess)
			return false
		}
	}
	l.putPipe(src)
	if cap(src.buf) > copyBuf {
		src.buf = nil // do not keep big buffers on idle connections
	}
	src.buf = src.buf[:0]
	return true
}

// queue puts a session that still has input on the ready list, to continue
// after the other events of this batch (edge-triggered sockets will not
// report it again).
func (l *loop) queue(s *tcpConn) {
	if !s.queued {
		s.queued = true
		l.ready = append(l.ready, s)
	}
}

func (l *loop) runReady() {
	ready := l.ready
	l.ready = nil
	for _, s := range ready {
		s.queued = false
		if s.next != nil {
			l.pump(s)
		}
	}
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

func (l *loop) link(s *tcpConn) {
	s.prev, s.next = l.head.prev, &l.head
	l.head.prev.next = s
	l.head.prev = s
	l.nsess++
}

func (l *loop) closeSession(s *tcpConn) {
	if s.next == nil {
		return // already closed
	}
	s.prev.next, s.next.prev = s.next, s.prev
	s.prev, s.next = nil, nil
	l.nsess--
	if len(l.disarmed) > 0 {
		l.rearmAt = l.now // descriptors are free again: accept at once
	}
	for _, ep := range [...]*endpoint{&s.client, &s.backend} {
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
		ep.buf = nil
	}
	s.done(s.bytes[0], s.bytes[1], l.now)
}

// sweep enforces connect, idle and half-close timeouts and reports byte
// counters of long-lived connections.
func (l *loop) sweep() {
	l.lastSw = l.now
	for s := l.head.next; s != &l.head; {
		next := s.next
		switch s.state {
		case connecting:
			if l.now.After(s.deadline) {
				l.failover(s, errConnectTimeout)
			}
		case established:
			it := s.opts.IdleTimeout
			if (s.client.eof || s.backend.eof) && (it <= 0 || l.halfClose < it) {
				it = l.halfClose // one direction has ended
			}
			if it > 0 && l.now.Sub(s.last) > it {
				l.closeSession(s)
			} else {
				s.progress(s.bytes[0], s.bytes[1])
			}
		}
		s = next
	}
}
