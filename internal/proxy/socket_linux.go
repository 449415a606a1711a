package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Sockets opened ahead of serving, for a reload that is all or nothing (lbd
// opens every socket a new configuration needs before it changes anything,
// then serves them, or closes them if anything failed):
//
//   - Open opens a service's listening socket as Engine.Listen, ServeStream
//     or ServeUDP would, but serves nothing: a TCP socket is listening, so
//     the kernel queues connections until it is served (or resets them when
//     it is closed unserved).
//   - Engine.Share, StreamServer.Share and UDPServer.Share give another
//     descriptor of a socket that runs now, for the server that takes it
//     over: a TCP service that changes between the engine and the stream
//     path, or its name, keeps its socket, so the port is never closed and
//     no queued connection is lost.
//   - Engine.Serve, ServeStreamSocket and ServeUDPSocket serve a Socket, and
//     cannot fail.
//
// A Socket serves once; Close releases it if it is never served. Closing
// a shared Socket closes only its own descriptor: the socket lives on with
// the server it came from.

// Kind is who serves a Socket.
type Kind uint8

const (
	// EngineKind is the TCP engine (Engine.Serve).
	EngineKind Kind = iota + 1
	// StreamKind is the stream path, TLS and HTTP (ServeStreamSocket).
	StreamKind
	// UDPKind is the UDP server (ServeUDPSocket).
	UDPKind
)

func (k Kind) String() string {
	switch k {
	case EngineKind:
		return "tcp engine"
	case StreamKind:
		return "stream"
	case UDPKind:
		return "udp"
	}
	return fmt.Sprintf("kind %d", k)
}

// Socket is a listening socket opened for a service and not served yet.
type Socket struct {
	kind Kind
	addr netip.AddrPort
	fd   int          // EngineKind: the descriptor; -1 once served or closed
	ln   net.Listener // StreamKind
	// relisten: the socket was listening with another backlog (taken
	// over from the stream path); Engine.Serve sets the service's.
	relisten bool
	udp      *net.UDPConn // UDPKind
	pc4      *ipv4.PacketConn
	pc6      *ipv6.PacketConn
	once     sync.Once
}

// Kind returns who can serve s.
func (s *Socket) Kind() Kind { return s.kind }

// Close releases s if it was not served. A shared socket lives on with the
// server it came from.
func (s *Socket) Close() error {
	var err error
	s.once.Do(func() {
		switch s.kind {
		case EngineKind:
			if s.fd >= 0 {
				err = unix.Close(s.fd)
				s.fd = -1
			}
		case StreamKind:
			err = s.ln.Close()
		case UDPKind:
			err = s.udp.Close()
		}
	})
	return err
}

// served marks s as handed to its server: Close does nothing more.
func (s *Socket) served() { s.once.Do(func() {}) }

// Open opens a service's socket on addr for kind, exactly as Engine.Listen
// (with backlog), ServeStream or ServeUDP open it, without serving it.
func Open(kind Kind, addr netip.AddrPort, backlog int) (*Socket, error) {
	s := &Socket{kind: kind, addr: addr, fd: -1}
	switch kind {
	case EngineKind:
		fd, err := listenTCP(addr, backlog)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		s.fd = fd
	case StreamKind:
		lc := net.ListenConfig{KeepAliveConfig: clientKeepAlive}
		ln, err := lc.Listen(context.Background(), "tcp", addr.String())
		if err != nil {
			return nil, err
		}
		s.ln = ln
	case UDPKind:
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return nil, err
		}
		if err := s.setUDP(conn); err != nil {
			conn.Close()
			return nil, err
		}
	default:
		return nil, fmt.Errorf("proxy: cannot open a socket for %v", kind)
	}
	return s, nil
}

// setUDP completes a UDP socket as ServeUDP does: on a wildcard address
// replies need the address each datagram came to.
func (s *Socket) setUDP(conn *net.UDPConn) error {
	s.udp = conn
	if !s.addr.Addr().IsUnspecified() {
		return nil
	}
	if s.addr.Addr().Is4() {
		s.pc4 = ipv4.NewPacketConn(conn)
		return s.pc4.SetControlMessage(ipv4.FlagDst, true)
	}
	s.pc6 = ipv6.NewPacketConn(conn)
	return s.pc6.SetControlMessage(ipv6.FlagDst, true)
}

// share makes a Socket for kind from another descriptor of the running
// socket fd (which stays open and served until its server lets it go).
func share(fd int, addr netip.AddrPort, from, kind Kind) (*Socket, error) {
	if (kind == UDPKind) != (from == UDPKind) {
		return nil, fmt.Errorf("proxy: a %v socket cannot be served by %v", from, kind)
	}
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sharing the socket on %s: %w", addr, err)
	}
	s := &Socket{kind: kind, addr: addr, fd: -1}
	if kind == EngineKind {
		s.fd = nfd
		s.relisten = from != EngineKind
		return s, nil
	}
	f := os.NewFile(uintptr(nfd), "socket "+addr.String())
	defer f.Close() // the net package makes its own descriptor
	switch kind {
	case StreamKind:
		ln, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("sharing the socket on %s: %w", addr, err)
		}
		tl, ok := ln.(*net.TCPListener)
		if !ok {
			ln.Close()
			return nil, fmt.Errorf("sharing the socket on %s: not a TCP listener", addr)
		}
		// A listener made from a descriptor has the net package's default
		// keepalive; the stream path's accepted sockets get its own.
		s.ln = keepAliveListener{tl}
	case UDPKind:
		pc, err := net.FilePacketConn(f)
		if err != nil {
			return nil, fmt.Errorf("sharing the socket on %s: %w", addr, err)
		}
		conn, ok := pc.(*net.UDPConn)
		if !ok {
			pc.Close()
			return nil, fmt.Errorf("sharing the socket on %s: not a UDP socket", addr)
		}
		if err := s.setUDP(conn); err != nil {
			conn.Close()
			return nil, err
		}
	default:
		unix.Close(nfd)
		return nil, fmt.Errorf("proxy: cannot share a socket for %v", kind)
	}
	return s, nil
}

// keepAliveListener gives accepted sockets the stream path's keepalive.
type keepAliveListener struct{ *net.TCPListener }

func (l keepAliveListener) Accept() (net.Conn, error) {
	c, err := l.AcceptTCP()
	if err != nil {
		return nil, err
	}
	c.SetKeepAliveConfig(clientKeepAlive)
	return c, nil
}

// rawFD runs f with the descriptor of a net socket.
func rawFD(c syscall.Conn, f func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// Share returns a Socket for kind on svc's listening socket, which the
// engine keeps serving until Unlisten(svc).
func (e *Engine) Share(svc *Service, kind Kind) (*Socket, error) {
	e.mu.Lock()
	fd, ok := e.lfds[svc]
	e.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("proxy: the engine does not serve %s", svc.Options().Listen)
	}
	return share(fd, svc.Options().Listen, EngineKind, kind)
}

// Share returns a Socket for kind on the server's listening socket, which
// it keeps serving until Unlisten or Close.
func (ss *StreamServer) Share(kind Kind) (*Socket, error) {
	c, ok := ss.ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("proxy: the listener on %s has no descriptor", ss.svc.Options().Listen)
	}
	var s *Socket
	err := rawFD(c, func(fd int) error {
		var err error
		s, err = share(fd, ss.svc.Options().Listen, StreamKind, kind)
		return err
	})
	return s, err
}

// Share returns a Socket on the server's UDP socket, which it keeps
// serving until Close.
func (u *UDPServer) Share() (*Socket, error) {
	var s *Socket
	err := rawFD(u.conn, func(fd int) error {
		var err error
		s, err = share(fd, u.svc.Options().Listen, UDPKind, UDPKind)
		return err
	})
	return s, err
}

// Serve serves svc on s (an EngineKind socket) on every loop, as Listen
// does; s belongs to the engine from now on. It cannot fail: a loop whose
// epoll set refuses the socket (the kernel out of memory, or at
// fs.epoll.max_user_watches) retries every acceptBackoff, as after an
// accept that failed for lack of resources, logging through svc's warnf,
// while connections wait in the backlog.
func (e *Engine) Serve(svc *Service, s *Socket) {
	if s.kind != EngineKind || s.fd < 0 {
		panic("proxy: Engine.Serve of a socket that is not an unserved engine socket")
	}
	fd := s.fd
	s.fd = -1
	s.served()
	o := svc.Options()
	if s.relisten {
		// Taken over from the stream path, which listens with the
		// system's backlog and sets keepalive on each accepted socket:
		// use the service's backlog (listen on a listening socket only
		// sets it), and keepalive on the listener, as listenTCP does,
		// for accepted sockets to inherit. Neither fails on a listening
		// socket; should one, it is said.
		backlog := o.Backlog
		if backlog <= 0 {
			backlog = 512
		}
		if err := errors.Join(unix.Listen(fd, backlog), setClientKeepAlive(fd)); err != nil {
			svc.warn(svc.acceptLog, "listen on %s: %v", o.Listen, err)
		}
	}
	e.mu.Lock()
	e.lfds[svc] = fd
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range e.loops {
		wg.Add(1)
		l.do(func() {
			defer wg.Done()
			ep := &endpoint{kind: kindListener, fd: fd, svc: svc}
			l.set(ep)
			err := serveCtl(l, fd)
			if err == nil {
				return
			}
			svc.warn(svc.acceptLog, "listen on %s: epoll: %v (trying again every %v)", o.Listen, err, acceptBackoff)
			ep.off = true
			if len(l.disarmed) == 0 {
				l.rearmAt = l.now.Add(acceptBackoff)
			}
			l.disarmed = append(l.disarmed, ep)
		})
	}
	wg.Wait()
}

// serveCtl adds a listener to a loop's epoll set (a test seam).
var serveCtl = func(l *loop, fd int) error {
	return l.ctl(unix.EPOLL_CTL_ADD, fd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE)
}

// SetBacklog sets the listen backlog of svc's socket (0: the default).
func (e *Engine) SetBacklog(svc *Service, backlog int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	fd, ok := e.lfds[svc]
	if !ok {
		return fmt.Errorf("proxy: the engine does not serve %s", svc.Options().Listen)
	}
	if backlog <= 0 {
		backlog = 512
	}
	return unix.Listen(fd, backlog)
}

// ServeStreamSocket serves svc on s (a StreamKind socket) until Close, as
// ServeStream does.
func ServeStreamSocket(svc *Service, s *Socket) *StreamServer {
	if s.kind != StreamKind {
		panic("proxy: ServeStreamSocket of a socket that is not a stream socket")
	}
	s.served()
	return serveStream(svc, s.ln, defaultStreamConfig)
}

// ServeUDPSocket serves svc on s (a UDPKind socket) until Close, as
// ServeUDP does.
func ServeUDPSocket(svc *Service, s *Socket) *UDPServer {
	if s.kind != UDPKind {
		panic("proxy: ServeUDPSocket of a socket that is not a UDP socket")
	}
	s.served()
	u := &UDPServer{svc: svc, conn: s.udp, pc4: s.pc4, pc6: s.pc6, flows: make(map[netip.AddrPort]*flow), perIP: make(map[netip.Addr]int), done: make(chan struct{})}
	u.wg.Add(1)
	go u.serve()
	return u
}
