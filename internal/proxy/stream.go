package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nib-lb/nib/internal/httpxff"
	"github.com/nib-lb/nib/internal/lograte"
	"github.com/nib-lb/nib/internal/proxyproto"
)

// The stream path serves services whose bytes must pass through userspace:
// TLS termination and HTTP header rewriting. It runs a goroutine pair per
// connection; plain TCP services use the splice engine instead.
//
// A connection costs no backend and no buffer while it says nothing: an HTTP
// client gets a backend once its first request head is complete (a TLS
// client without HTTP, once its handshake is), and each direction takes a
// buffer from a pool only while data flows (see flowReader). The time a
// client may take is bounded: the TLS handshake, each request head (a
// client trickling header bytes is cut), inactivity once one direction has
// ended, and Options.IdleTimeout. Client sockets get TCP keepalive, so a
// client gone without a trace is found too.

const (
	maxHTTPHeader = 64 << 10
	streamBuf     = 32 << 10
)

// streamConfig holds the stream path's time limits; tests shorten them.
type streamConfig struct {
	// handshake bounds a TLS handshake.
	handshake time.Duration
	// head bounds the time a client takes to send a request head: the
	// first from the accept, each later one from its first byte.
	head time.Duration
	// halfClose bounds inactivity once one direction has ended (a FIN
	// either way): the other direction then gets this long between reads,
	// or IdleTimeout if that is shorter.
	halfClose time.Duration
}

var defaultStreamConfig = streamConfig{
	handshake: 10 * time.Second,
	head:      20 * time.Second,
	halfClose: halfCloseTimeout,
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, streamBuf); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

// putBuf returns a buffer to the pool. b may have been grown by append; one
// much larger than streamBuf is left to the garbage collector.
func putBuf(bp *[]byte, b []byte) {
	if cap(b) > 2*streamBuf {
		return
	}
	*bp = b[:cap(b)]
	bufPool.Put(bp)
}

// StreamServer serves one service on a net.Listener, one goroutine pair per
// connection.
type StreamServer struct {
	svc  *Service
	ln   net.Listener
	cfg  streamConfig
	wg   sync.WaitGroup
	stop chan struct{} // closed by Close
	once sync.Once

	// handshakeLog limits TLS handshake failure lines, which any client
	// can cause at will.
	handshakeLog *lograte.Limiter

	mu     sync.Mutex
	closed bool
	conns  map[*streamConn]struct{}
}

// ServeStream listens on the service address and serves it until Close:
// Open and ServeStreamSocket in one.
func ServeStream(svc *Service) (*StreamServer, error) {
	s, err := Open(StreamKind, svc.Options().Listen, 0)
	if err != nil {
		return nil, err
	}
	return ServeStreamSocket(svc, s), nil
}

// serveStream serves svc on ln with cfg's limits.
func serveStream(svc *Service, ln net.Listener, cfg streamConfig) *StreamServer {
	ss := &StreamServer{
		svc: svc, ln: ln, cfg: cfg, stop: make(chan struct{}),
		handshakeLog: lograte.New(logEvery),
		conns:        make(map[*streamConn]struct{}),
	}
	ss.wg.Add(1)
	go ss.serve()
	return ss
}

// Addr returns the listening address.
func (ss *StreamServer) Addr() net.Addr { return ss.ln.Addr() }

// Unlisten stops accepting; established connections go on.
func (ss *StreamServer) Unlisten() { ss.ln.Close() }

// Close stops accepting, closes every connection, client and backend side,
// and waits for their goroutines.
func (ss *StreamServer) Close() {
	ss.once.Do(func() { close(ss.stop) })
	ss.ln.Close()
	ss.mu.Lock()
	ss.closed = true
	conns := make([]*streamConn, 0, len(ss.conns))
	for sc := range ss.conns {
		conns = append(conns, sc)
	}
	ss.mu.Unlock()
	for _, sc := range conns {
		sc.shut()
	}
	ss.wg.Wait()
}

func (ss *StreamServer) serve() {
	defer ss.wg.Done()
	svc := ss.svc
	for {
		c, err := ss.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or memory: the queued clients wait in the
			// backlog while some are freed, rather than the loop spinning
			// on an error only closing connections can clear.
			pause := 10 * time.Millisecond
			if isLocalError(err) {
				pause = acceptBackoff
				svc.localErrs.Add(1)
				svc.warn(svc.acceptLog, "accept: %v (pausing accepts on %s for %v)", err, ss.ln.Addr(), pause)
			} else {
				svc.acceptLog.Logf(svc.logf, "accept: %v", err)
			}
			t := time.NewTimer(pause)
			select {
			case <-ss.stop:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		sc := &streamConn{ss: ss, raw: c, down: make(chan struct{})}
		if !sc.admit(svc, svc.opts.Load(), netAddrPort(c.RemoteAddr()), time.Now()) {
			c.Close()
			continue
		}
		if !ss.track(sc, true) {
			c.Close()
			sc.done(0, 0, time.Now())
			continue
		}
		ss.wg.Add(1)
		go func() {
			defer ss.wg.Done()
			defer func() { sc.done(sc.sent, sc.recv, time.Now()) }()
			defer ss.track(sc, false)
			defer sc.shut()
			sc.run()
		}()
	}
}

// track adds or removes sc; adding fails once the server is closed.
func (ss *StreamServer) track(sc *streamConn, add bool) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !add {
		delete(ss.conns, sc)
		return true
	}
	if ss.closed {
		return false
	}
	ss.conns[sc] = struct{}{}
	return true
}

// streamConn is one client connection and, once connected, its backend.
type streamConn struct {
	session    // the base of last is its start, the accept time
	ss         *StreamServer
	raw        net.Conn // the accepted socket
	last       atomic.Int64
	down       chan struct{} // closed by shut
	sent, recv uint64        // bytes to and from the backend (run's)

	mu       sync.Mutex
	dead     bool
	backend  net.Conn
	cancel   context.CancelFunc // aborts a backend connect in progress
	timer    *time.Timer
	armed    time.Time     // when timer fires; zero when not armed
	idle     time.Duration // inactivity allowed; 0 for none
	headFrom time.Time     // start of the request head being received; zero if none
}

// shut closes both sides of the connection at once (no TLS close_notify, no
// waiting), which ends both of its goroutines.
func (sc *streamConn) shut() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.dead {
		return
	}
	sc.dead = true
	close(sc.down)
	if sc.cancel != nil {
		sc.cancel()
	}
	if sc.timer != nil {
		sc.timer.Stop()
	}
	sc.raw.Close()
	if sc.backend != nil {
		sc.backend.Close()
	}
}

// touch records traffic now.
func (sc *streamConn) touch() { sc.last.Store(int64(time.Since(sc.start))) }

// deadlineLocked returns when the connection must be cut; zero for never.
func (sc *streamConn) deadlineLocked() time.Time {
	var d time.Time
	if sc.idle > 0 {
		d = sc.start.Add(time.Duration(sc.last.Load()) + sc.idle)
	}
	if !sc.headFrom.IsZero() {
		if h := sc.headFrom.Add(sc.ss.cfg.head); d.IsZero() || h.Before(d) {
			d = h
		}
	}
	return d
}

// scheduleLocked makes the timer fire by the deadline. A timer armed for
// earlier is left alone: when it fires, it looks again.
func (sc *streamConn) scheduleLocked() {
	d := sc.deadlineLocked()
	if d.IsZero() || sc.dead || !sc.armed.IsZero() && !d.Before(sc.armed) {
		return
	}
	sc.armed = d
	if sc.timer == nil {
		sc.timer = time.AfterFunc(time.Until(d), sc.fire)
	} else {
		sc.timer.Reset(time.Until(d))
	}
}

func (sc *streamConn) fire() {
	sc.mu.Lock()
	d := sc.deadlineLocked()
	if sc.dead || d.IsZero() {
		sc.armed = time.Time{}
		sc.mu.Unlock()
		return
	}
	if left := time.Until(d); left > 0 {
		sc.armed = d
		sc.timer.Reset(left)
		sc.mu.Unlock()
		return
	}
	sc.mu.Unlock()
	sc.shut()
}

// setIdle sets the inactivity allowed from now on, if shorter than the
// current one (or there was none).
func (sc *streamConn) setIdle(d time.Duration) {
	if d <= 0 {
		return
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.idle == 0 || d < sc.idle {
		sc.idle = d
	}
	sc.touch()
	sc.scheduleLocked()
}

// headClock follows the request heads of a Rewriter for the head time limit.
type headClock struct {
	seen uint64 // heads passed on when last looked
	on   bool   // the clock runs
}

// trackHead starts the head clock when a request head begins and stops it
// when it is complete.
func (sc *streamConn) trackHead(hc *headClock, rw *httpxff.Rewriter) {
	n, in := rw.Requests(), rw.InHead()
	if n == hc.seen && in == hc.on {
		return
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	switch {
	case !in:
		sc.headFrom = time.Time{}
	case n != hc.seen || !hc.on:
		// A head completed and the next began in the same read, or a
		// head began.
		sc.headFrom = time.Now()
		sc.scheduleLocked()
	}
	hc.seen, hc.on = n, in
}

// setBackend records the backend connection, unless the connection was shut
// meanwhile.
func (sc *streamConn) setBackend(bc net.Conn) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.dead {
		return false
	}
	sc.backend = bc
	return true
}

func (sc *streamConn) isDead() bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.dead
}

const badRequest = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

func (sc *streamConn) run() {
	o, svc, cfg, peer := sc.opts, sc.ss.svc, sc.ss.cfg, sc.peer
	var c net.Conn = sc.raw
	local := netAddrPort(c.LocalAddr())
	if tc, ok := c.(*net.TCPConn); ok && o.NoDelay {
		tc.SetNoDelay(true)
	}
	sc.setIdle(o.IdleTimeout)
	var hc headClock
	if o.HTTP {
		// The first request head is timed from the accept, handshake
		// included: a client that says nothing is cut as one that
		// trickles.
		sc.mu.Lock()
		sc.headFrom, hc.on = sc.start, true
		sc.scheduleLocked()
		sc.mu.Unlock()
	}
	proto := "http"
	if o.TLS != nil {
		t := tls.Server(c, o.TLS)
		ctx, cancel := context.WithTimeout(context.Background(), cfg.handshake)
		err := t.HandshakeContext(ctx)
		cancel()
		if err != nil {
			if !sc.isDead() {
				sc.ss.handshakeLog.Logf(svc.logf, "tls handshake from %s: %v", peer, err)
			}
			return
		}
		c, proto = t, "https"
	}
	src := newFlowReader(c)
	defer src.close()

	// An HTTP client gets a backend once its first request head is
	// complete.
	var rw *httpxff.Rewriter
	var first []byte
	var firstBuf *[]byte
	if o.HTTP {
		rw = httpxff.New(peer.Addr(), proto, maxHTTPHeader)
		for len(first) == 0 {
			p, err := src.read()
			if err != nil {
				return // gone, cut, or shut: no request, no backend
			}
			sc.touch()
			firstBuf = getBuf()
			var ferr error
			first, ferr = rw.Feed((*firstBuf)[:0], p)
			sc.trackHead(&hc, rw)
			if ferr != nil {
				io.WriteString(c, badRequest)
				putBuf(firstBuf, first)
				return
			}
			if len(first) == 0 {
				putBuf(firstBuf, first) // the head is held by rw
			}
		}
	}

	bc, ok := sc.connect()
	if !ok {
		if firstBuf != nil {
			putBuf(firstBuf, first)
		}
		return
	}
	sc.connected(time.Now())
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
		sc.sent += uint64(len(hdr))
	}
	if first != nil {
		n, err := bc.Write(first)
		sc.sent += uint64(n)
		putBuf(firstBuf, first)
		if err != nil {
			return
		}
	}

	// answered wakes the client's reader when the backend answered the
	// CONNECT or upgrade request it waits for (or is gone).
	answered := make(chan struct{}, 1)
	done := make(chan uint64, 1)
	var rejecting atomic.Bool // the responses are stopped to answer 400
	go func() {
		n, _ := sc.toClient(c, bc, rw, answered)
		if !rejecting.Load() {
			closeWrite(c)
		}
		sc.setIdle(cfg.halfClose)
		done <- n
	}()
	n, err := sc.toBackend(bc, src, rw, &hc, answered)
	sc.sent += n
	if isRewriteError(err) {
		// Stop the responses before answering, so that the 400 is not
		// mixed into one.
		rejecting.Store(true)
		bc.Close()
		sc.setIdle(cfg.halfClose)
		sc.recv += <-done
		io.WriteString(c, badRequest)
		return
	}
	closeWrite(bc)
	sc.setIdle(cfg.halfClose)
	sc.recv += <-done
}

// connect picks a backend and connects to it, failing over as the session
// decides. When it reports false, the client is to be closed; a backend
// still reserved (the connection was shut while connecting: not the
// backend's fault) is released by done.
func (sc *streamConn) connect() (net.Conn, bool) {
	sc.mu.Lock()
	if sc.dead {
		sc.mu.Unlock()
		return nil, false
	}
	ctx, cancel := context.WithCancel(context.Background())
	sc.cancel = cancel
	sc.mu.Unlock()
	defer cancel()
	if !sc.pick(time.Now()) {
		return nil, false
	}
	for {
		bc, err := dialBackend(ctx, sc.opts, sc.choice.Addr)
		if err == nil {
			if !sc.setBackend(bc) {
				bc.Close()
				return nil, false
			}
			return bc, true
		}
		if sc.isDead() || !sc.failed(err, time.Now()) {
			return nil, false
		}
	}
}

// toBackend copies the client's bytes to the backend until EOF or an error,
// through rw when set. While rw waits for the backend's answer to a CONNECT
// or upgrade request, it stops reading the client until answered.
func (sc *streamConn) toBackend(dst net.Conn, src *flowReader, rw *httpxff.Rewriter, hc *headClock, answered <-chan struct{}) (uint64, error) {
	var total uint64
	write := func(p []byte) error {
		if len(p) == 0 {
			return nil
		}
		n, err := dst.Write(p)
		total += uint64(n)
		return err
	}
	for {
		var gone <-chan error
		if rw != nil && rw.Waiting() {
			// Not reading the client for now: hold no buffer, and notice
			// if it leaves.
			src.release()
			gone = src.watch()
		}
		for rw != nil && rw.Waiting() {
			select {
			case <-answered:
			case <-sc.down:
				return total, net.ErrClosed
			case err := <-gone:
				gone = nil
				if !errors.Is(err, io.EOF) {
					return total, err
				}
				// Its FIN: the answer still goes to it, within the
				// half-close limit.
				sc.setIdle(sc.ss.cfg.halfClose)
				continue
			}
			ob := getBuf()
			out, err := rw.Resume((*ob)[:0])
			sc.trackHead(hc, rw)
			werr := write(out)
			putBuf(ob, out)
			if err != nil {
				return total, rewriteError{err}
			}
			if werr != nil {
				return total, werr
			}
		}
		p, err := src.read()
		if len(p) > 0 {
			sc.touch()
			var werr error
			if rw == nil {
				werr = write(p)
			} else {
				ob := getBuf()
				out, ferr := rw.Feed((*ob)[:0], p)
				sc.trackHead(hc, rw)
				werr = write(out)
				putBuf(ob, out)
				if ferr != nil {
					return total, rewriteError{ferr}
				}
			}
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

// toClient copies the backend's bytes to the client until EOF or an error,
// through rw's response follower when rw is set: it tells the client's
// reader, through answered, when the backend answered a CONNECT or upgrade
// request (or is gone).
func (sc *streamConn) toClient(dst, src net.Conn, rw *httpxff.Rewriter, answered chan<- struct{}) (uint64, error) {
	var resp *httpxff.Responses
	wake := func(settled bool) {
		if settled {
			select {
			case answered <- struct{}{}:
			default:
			}
		}
	}
	if rw != nil {
		resp = rw.Responses()
		defer func() { wake(resp.Close()) }()
	}
	r := newFlowReader(src)
	defer r.close()
	var total uint64
	for {
		p, err := r.read()
		if len(p) > 0 {
			sc.touch()
			if resp != nil {
				wake(resp.Feed(p))
			}
			n, werr := dst.Write(p)
			total += uint64(n)
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

func dialBackend(ctx context.Context, o *Options, addr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: o.ConnectTimeout}
	if o.KeepAlive {
		d.KeepAlive = 15 * time.Second
	} else {
		d.KeepAlive = -1
	}
	if o.Source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: o.Source.AsSlice()}
	}
	c, err := d.DialContext(ctx, "tcp", addr.String())
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

// isConnRefused reports whether err is a refused connection or datagram.
func isConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
