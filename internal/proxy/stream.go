package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/httpxff"
	"github.com/nib-lb/nib/internal/proxyproto"
)

// The stream path serves services whose bytes must pass through userspace:
// TLS termination and HTTP header rewriting. It runs a goroutine pair per
// connection; plain TCP services use the splice engine instead.

const (
	handshakeTimeout = 10 * time.Second
	maxHTTPHeader    = 64 << 10
	streamBuf        = 32 << 10
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, streamBuf); return &b }}

// StreamServer serves one service on a net.Listener, one goroutine pair per
// connection.
type StreamServer struct {
	svc *Service
	ln  net.Listener
	wg  sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// ServeStream listens on the service address and serves it until Close.
func ServeStream(svc *Service) (*StreamServer, error) {
	o := svc.Options()
	ln, err := net.Listen("tcp", o.Listen.String())
	if err != nil {
		return nil, err
	}
	ss := &StreamServer{svc: svc, ln: ln, conns: make(map[net.Conn]struct{})}
	ss.wg.Add(1)
	go ss.serve()
	return ss, nil
}

// Addr returns the listening address.
func (ss *StreamServer) Addr() net.Addr { return ss.ln.Addr() }

// Unlisten stops accepting; established connections go on.
func (ss *StreamServer) Unlisten() { ss.ln.Close() }

// Close stops accepting and closes every connection.
func (ss *StreamServer) Close() {
	ss.ln.Close()
	ss.mu.Lock()
	for c := range ss.conns {
		c.Close()
	}
	ss.mu.Unlock()
	ss.wg.Wait()
}

func (ss *StreamServer) serve() {
	defer ss.wg.Done()
	for {
		c, err := ss.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			ss.svc.logf("accept: %v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		o := ss.svc.opts.Load()
		if !ss.svc.admit(o) {
			c.Close()
			continue
		}
		ss.track(c, true)
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			defer ss.svc.release()
			defer ss.track(c, false)
			serveConn(ss.svc, o, c)
		}()
	}
}

func (ss *StreamServer) track(c net.Conn, add bool) {
	ss.mu.Lock()
	if add {
		ss.conns[c] = struct{}{}
	} else {
		delete(ss.conns, c)
	}
	ss.mu.Unlock()
}

func serveConn(svc *Service, o *Options, c net.Conn) {
	defer c.Close()
	peer := netAddrPort(c.RemoteAddr())
	local := netAddrPort(c.LocalAddr())
	tc, _ := c.(*net.TCPConn)
	if tc != nil && o.NoDelay {
		tc.SetNoDelay(true)
	}
	proto := "http"
	if o.TLS != nil {
		t := tls.Server(c, o.TLS)
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		err := t.HandshakeContext(ctx)
		cancel()
		if err != nil {
			svc.logf("tls handshake from %s: %v", peer, err)
			return
		}
		c, proto = t, "https"
	}
	pool := svc.pool
	now := time.Now()
	choice := pool.Pick(peer, now)
	var bc net.Conn
	for choice.Index != balance.NoServer {
		var err error
		bc, err = dialBackend(o, choice.Addr)
		if err == nil {
			break
		}
		choice = pool.Failed(choice, peer, time.Now())
	}
	if bc == nil {
		return
	}
	pool.Connected(choice, peer, time.Now())
	var sent, recv uint64
	start := time.Now()
	defer func() {
		pool.Done(choice, sent, recv)
		logConn(o, peer, choice.Addr, sent, recv, start)
	}()
	defer bc.Close()
	if o.ProxyProtocol != 0 {
		var hdr []byte
		if o.ProxyProtocol == 1 {
			hdr = proxyproto.AppendV1(nil, peer, local)
		} else {
			hdr = proxyproto.AppendV2(nil, true, peer, local)
		}
		if _, err := bc.Write(hdr); err != nil {
			return
		}
		sent += uint64(len(hdr))
	}
	idle := newIdleTimer(o.IdleTimeout, c, bc)
	defer idle.stop()
	var rw *httpxff.Rewriter
	if o.HTTP {
		rw = httpxff.New(peer.Addr(), proto, maxHTTPHeader)
	}
	// answered wakes the client's reader when the backend answered the
	// CONNECT or upgrade request it waits for.
	answered := make(chan struct{}, 1)
	done := make(chan uint64, 1)
	go func() {
		n, _ := copyResponses(c, bc, rw, answered, idle)
		closeWrite(c)
		done <- n
	}()
	n, err := copyStream(bc, c, rw, answered, idle)
	sent += n
	if err != nil && rw != nil && !errors.Is(err, io.EOF) && isRewriteError(err) {
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		c.Close()
		bc.Close()
	} else {
		closeWrite(bc)
	}
	recv += <-done
}

// copyStream copies src to dst until EOF or an error, through rw when set.
// While rw waits for the backend's answer to a CONNECT or upgrade request,
// it stops reading src until answered.
func copyStream(dst, src net.Conn, rw *httpxff.Rewriter, answered <-chan struct{}, idle *idleTimer) (uint64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var out []byte
	var total uint64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			idle.touch()
			p := buf[:n]
			if rw != nil {
				var ferr error
				out, ferr = rw.Feed(out[:0], p)
				for ferr == nil && rw.Waiting() {
					if len(out) > 0 {
						m, werr := dst.Write(out)
						total += uint64(m)
						if werr != nil {
							return total, werr
						}
					}
					<-answered
					out, ferr = rw.Resume(out[:0])
				}
				if ferr != nil {
					return total, rewriteError{ferr}
				}
				p = out
			}
			m, werr := dst.Write(p)
			total += uint64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return total, nil
			}
			return total, err
		}
	}
}

// copyResponses copies the backend's src to the client's dst until EOF or
// an error, through rw's response follower when rw is set: it tells the
// client's reader, through answered, when the backend answered a CONNECT or
// upgrade request (and when the backend is gone).
func copyResponses(dst, src net.Conn, rw *httpxff.Rewriter, answered chan<- struct{}, idle *idleTimer) (uint64, error) {
	if rw == nil {
		return copyStream(dst, src, nil, nil, idle)
	}
	resp := rw.Responses()
	wake := func(settled bool) {
		if settled {
			select {
			case answered <- struct{}{}:
			default:
			}
		}
	}
	defer func() { wake(resp.Close()) }()
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var total uint64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			idle.touch()
			wake(resp.Feed(buf[:n]))
			m, werr := dst.Write(buf[:n])
			total += uint64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return total, nil
			}
			return total, err
		}
	}
}

type rewriteError struct{ err error }

func (e rewriteError) Error() string { return e.err.Error() }
func (e rewriteError) Unwrap() error { return e.err }

func isRewriteError(err error) bool {
	var re rewriteError
	return errors.As(err, &re)
}

func closeWrite(c net.Conn) {
	switch c := c.(type) {
	case *net.TCPConn:
		c.CloseWrite()
	case *tls.Conn:
		c.CloseWrite()
	default:
		c.Close()
	}
}

func dialBackend(o *Options, addr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: o.ConnectTimeout}
	if o.KeepAlive {
		d.KeepAlive = 15 * time.Second
	} else {
		d.KeepAlive = -1
	}
	if o.Source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: o.Source.AsSlice()}
	}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		return nil, err
	}
	if o.NoDelay {
		c.(*net.TCPConn).SetNoDelay(true)
	}
	return c, nil
}

func netAddrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// idleTimer closes both connections after a period with no traffic.
type idleTimer struct {
	d     time.Duration
	t     *time.Timer
	mu    sync.Mutex
	last  time.Time
	conns [2]net.Conn
}

func newIdleTimer(d time.Duration, a, b net.Conn) *idleTimer {
	it := &idleTimer{d: d, conns: [2]net.Conn{a, b}, last: time.Now()}
	if d > 0 {
		it.t = time.AfterFunc(d, it.fire)
	}
	return it
}

func (it *idleTimer) touch() {
	if it.t == nil {
		return
	}
	it.mu.Lock()
	it.last = time.Now()
	it.mu.Unlock()
}

func (it *idleTimer) fire() {
	it.mu.Lock()
	left := it.d - time.Since(it.last)
	it.mu.Unlock()
	if left > 0 {
		it.t.Reset(left)
		return
	}
	it.conns[0].Close()
	it.conns[1].Close()
}

func (it *idleTimer) stop() {
	if it.t != nil {
		it.t.Stop()
	}
}

// isConnRefused reports whether err is a refused connection or datagram.
func isConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
