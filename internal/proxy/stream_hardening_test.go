package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/balance"
)

// startStreamWith is startStream with the stream path's time limits set by
// the test.
func startStreamWith(t *testing.T, o Options, cfg streamConfig, backends ...netip.AddrPort) *StreamServer {
	t.Helper()
	o.Listen = netip.MustParseAddrPort("127.0.0.1:0")
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 2 * time.Second
	}
	var servers []balance.Server
	for _, b := range backends {
		servers = append(servers, balance.Server{Addr: b, Weight: 1})
	}
	pool := balance.New(balance.Options{Blacklist: time.Minute, TrackingSize: 16}, servers)
	lc := net.ListenConfig{KeepAliveConfig: clientKeepAlive}
	ln, err := lc.Listen(context.Background(), "tcp", o.Listen.String())
	if err != nil {
		t.Fatal(err)
	}
	ss := serveStream(NewService(o, pool, t.Logf), ln, cfg)
	t.Cleanup(ss.Close)
	return ss
}

// streamBackend is a raw backend. Each connection reads request heads (no
// bodies) with a small buffer and, unless silent, answers each with
// "200 ok"; a silent one reads, never answers, and does not close even after
// the proxy's FIN. Its connections are closed at the end of the test (after
// the proxy's cleanup would have waited on them).
type streamBackend struct {
	ln       net.Listener
	silent   bool
	end      chan struct{} // closed by release
	once     sync.Once
	accepted atomic.Int32
	heads    atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
}

// release lets silent connections end and closes all connections.
func (b *streamBackend) release() {
	b.once.Do(func() { close(b.end) })
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}

func newStreamBackend(t testing.TB, silent bool) *streamBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &streamBackend{ln: ln, silent: silent, end: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			wg.Go(func() { b.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		b.release()
		wg.Wait()
	})
	return b
}

func (b *streamBackend) serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 256)
	var tail [4]byte
	for {
		n, err := c.Read(buf)
		for _, ch := range buf[:n] {
			copy(tail[:], tail[1:])
			tail[3] = ch
			if string(tail[:]) == "\r\n\r\n" {
				b.heads.Add(1)
				if !b.silent {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}
		}
		if err != nil {
			if b.silent {
				<-b.end
			}
			return
		}
	}
}

func (b *streamBackend) addr() netip.AddrPort { return b.ln.Addr().(*net.TCPAddr).AddrPort() }

// waitClosed waits up to within for the proxy to close c, reading and
// discarding what comes, and returns how long that took.
func waitClosed(t *testing.T, c net.Conn, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(within))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", within)
		}
		return time.Since(start)
	}
}

// A connect that fails because of this host (here EADDRNOTAVAIL: the source
// address is not ours) closes that client only: no backend is blacklisted
// or failed over from, and its reservation is released.
func TestStreamLocalDialErrorBlamesNoBackend(t *testing.T) {
	src := nonLocalSource(t)
	a, b := newStreamBackend(t, false), newStreamBackend(t, false)
	ss := startStream(t, Options{HTTP: true, Source: src}, a.addr(), b.addr())
	var warns logLines
	ss.svc.SetWarnf(warns.logf)
	for range 3 {
		c, err := net.Dial("tcp", ss.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		waitClosed(t, c, 3*time.Second)
		c.Close()
	}
	waitActive(t, ss.svc, 0)
	for i, st := range ss.svc.Pool().Stats(time.Now()) {
		if !st.BlacklistedUntil.IsZero() {
			t.Errorf("backend %d blacklisted after a local error", i)
		}
		if st.Conns != 0 {
			t.Errorf("backend %d still counts %d connections", i, st.Conns)
		}
	}
	if c := ss.svc.Counters(); c.LocalErrors != 3 || c.Refused != 0 {
		t.Errorf("counters %+v, want 3 local errors and none refused", c)
	}
	if n := warns.count("cannot assign requested address"); n != 1 {
		t.Errorf("%d warnings for 3 local errors within a second, want 1: %q", n, warns.lines)
	}
}

// A client that sends nothing gets no backend connection, on a plain HTTP
// service and after a TLS handshake; it is cut when its first request head
// has not come within the head limit.
func TestStreamNoBackendForSilentClient(t *testing.T) {
	cfg := streamConfig{handshake: 5 * time.Second, head: 500 * time.Millisecond, halfClose: time.Minute}
	for _, useTLS := range []bool{false, true} {
		name := "http"
		if useTLS {
			name = "https"
		}
		t.Run(name, func(t *testing.T) {
			be := newStreamBackend(t, false)
			o := Options{HTTP: true}
			if useTLS {
				o.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
			}
			ss := startStreamWith(t, o, cfg, be.addr())
			var c net.Conn
			var err error
			if useTLS {
				c, err = tls.Dial("tcp", ss.Addr().String(), &tls.Config{InsecureSkipVerify: true})
			} else {
				c, err = net.Dial("tcp", ss.Addr().String())
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			time.Sleep(300 * time.Millisecond)
			if n := be.accepted.Load(); n != 0 {
				t.Errorf("backend accepted %d connections for a client that sent nothing", n)
			}
			if d := waitClosed(t, c, 3*time.Second); d > 2*time.Second {
				t.Errorf("silent client cut after %v, want about the head limit", d)
			}
			if n := be.accepted.Load(); n != 0 {
				t.Errorf("backend accepted %d connections for a client that sent nothing", n)
			}
		})
	}
}

// A client that trickles a request head is cut once the head limit has
// passed since the head began, the first one or one on a kept-alive
// connection; the backend never sees the head.
func TestStreamSlowlorisCut(t *testing.T) {
	cfg := streamConfig{handshake: 5 * time.Second, head: 400 * time.Millisecond, halfClose: time.Minute}
	for _, first := range []bool{true, false} {
		name := "first request"
		if !first {
			name = "second request"
		}
		t.Run(name, func(t *testing.T) {
			be := newStreamBackend(t, false)
			ss := startStreamWith(t, Options{HTTP: true}, cfg, be.addr())
			c, err := net.Dial("tcp", ss.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if !first {
				io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
				c.SetReadDeadline(time.Now().Add(3 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				// Idle between requests is not a head: longer than the limit.
				time.Sleep(600 * time.Millisecond)
			}
			start := time.Now()
			io.WriteString(c, "GET /slow HTTP/1.1\r\n")
			cut := time.Duration(0)
			for range 60 { // at most 3s of one byte each 50ms
				time.Sleep(50 * time.Millisecond)
				if _, err := c.Write([]byte("X")); err != nil {
					cut = time.Since(start)
					break
				}
			}
			if cut == 0 {
				cut = time.Since(start) + waitClosed(t, c, time.Second)
			}
			if cut > 2*time.Second {
				t.Errorf("trickling client cut after %v, want about %v", cut, cfg.head)
			}
			want := int32(1) // the first request only
			if first {
				want = 0
			}
			if n := be.heads.Load(); n != want {
				t.Errorf("backend saw %d heads, want %d", n, want)
			}
		})
	}
}

// Pipelined requests arriving steadily in many reads are not taken for one
// slow head: the head clock restarts with each request.
func TestStreamHeadClockRestartsPerRequest(t *testing.T) {
	cfg := streamConfig{handshake: 5 * time.Second, head: 300 * time.Millisecond, halfClose: time.Minute}
	be := newStreamBackend(t, false)
	ss := startStreamWith(t, Options{HTTP: true}, cfg, be.addr())
	c, err := net.Dial("tcp", ss.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go io.Copy(io.Discard, c)
	req := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	// Each write ends a request and starts the next: a head is always in
	// progress, for 12 × 100ms in all.
	if _, err := io.WriteString(c, req[:10]); err != nil {
		t.Fatal(err)
	}
	for range 12 {
		time.Sleep(100 * time.Millisecond)
		if _, err := io.WriteString(c, req[10:]+req[:10]); err != nil {
			t.Fatalf("steady pipelining client cut: %v", err)
		}
	}
	if _, err := io.WriteString(c, req[10:]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for be.heads.Load() != 13 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := be.heads.Load(); n != 13 {
		t.Errorf("backend saw %d requests, want 13", n)
	}
}

// Once one direction has ended, the other is closed after the half-close
// limit without traffic, however long the idle timeout (none here); while
// bytes flow, it goes on.
func TestStreamHalfCloseTimeout(t *testing.T) {
	cfg := streamConfig{handshake: 5 * time.Second, head: 5 * time.Second, halfClose: 300 * time.Millisecond}
	t.Run("silent backend", func(t *testing.T) {
		be := newStreamBackend(t, true)
		ss := startStreamWith(t, Options{HTTP: true}, cfg, be.addr())
		t.Cleanup(be.release) // before ss.Close, should the proxy wait on it
		c, err := net.Dial("tcp", ss.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.(*net.TCPConn).CloseWrite()
		if d := waitClosed(t, c, 3*time.Second); d > 2*time.Second {
			t.Errorf("half-closed connection cut after %v, want about %v", d, cfg.halfClose)
		}
		waitActive(t, ss.svc, 0)
	})
	t.Run("backend still sending", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			io.Copy(io.Discard, c) // until the client's FIN
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
			for range 10 { // 1s in all, 100ms apart
				time.Sleep(100 * time.Millisecond)
				io.WriteString(c, "x")
			}
		}()
		ss := startStreamWith(t, Options{HTTP: true}, cfg, ln.Addr().(*net.TCPAddr).AddrPort())
		c, err := net.Dial("tcp", ss.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || string(body) != "xxxxxxxxxx" {
			t.Errorf("body %q, %v; want all of it", body, err)
		}
	})
}

// Close returns promptly although a backend never closes its connection,
// on a connection in every state: waiting for a response, waiting for the
// answer to an upgrade, and a plain TLS tunnel.
func TestStreamCloseWithBackendThatNeverCloses(t *testing.T) {
	cert := selfSigned(t)
	for _, tc := range []struct {
		name string
		o    Options
		req  string
	}{
		{"request", Options{HTTP: true}, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"upgrade", Options{HTTP: true}, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"},
		{"tls tunnel", Options{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}}, "hello\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newStreamBackend(t, true)
			ss := startStream(t, tc.o, be.addr())
			t.Cleanup(be.release) // before ss.Close, should the proxy wait on it
			var c net.Conn
			var err error
			if tc.o.TLS != nil {
				c, err = tls.Dial("tcp", ss.Addr().String(), &tls.Config{InsecureSkipVerify: true})
			} else {
				c, err = net.Dial("tcp", ss.Addr().String())
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			before := be.heads.Load()
			io.WriteString(c, tc.req)
			deadline := time.Now().Add(3 * time.Second)
			for be.heads.Load() == before && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if be.heads.Load() == before {
				t.Fatal("the request did not reach the backend")
			}
			closed := make(chan struct{})
			go func() {
				ss.Close()
				close(closed)
			}()
			select {
			case <-closed:
			case <-time.After(2 * time.Second):
				t.Fatal("Close still waiting after 2s on a backend that never closes")
			}
		})
	}
}

// An idle connection holds no copy buffer: after a request and its response
// have gone through, 100 idle connections cost the heap a few KiB each
// (two 32 KiB buffers each if the readers kept theirs while blocked).
func TestStreamIdleConnectionsHoldNoBuffers(t *testing.T) {
	const conns = 100
	be := newStreamBackend(t, false)
	ss := startStream(t, Options{HTTP: true}, be.addr())
	heapInUse := func() uint64 {
		var ms runtime.MemStats
		for range 3 {
			runtime.GC()
		}
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	cs := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	exchange := func(c net.Conn, br *bufio.Reader) {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// Warm up: one connection through every code path.
	warm, err := net.Dial("tcp", ss.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	exchange(warm, bufio.NewReaderSize(warm, 64))
	warm.Close()
	waitActive(t, ss.svc, 0)
	base := heapInUse()
	var readers []*bufio.Reader
	for range conns {
		c, err := net.Dial("tcp", ss.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
		br := bufio.NewReaderSize(c, 64)
		readers = append(readers, br)
		exchange(c, br)
	}
	waitActive(t, ss.svc, conns)
	grown := int64(heapInUse()) - int64(base)
	t.Logf("heap grew %d bytes for %d idle connections", grown, conns)
	if per := grown / conns; per > 16<<10 {
		t.Errorf("each idle connection holds %d bytes of heap, want under 16 KiB", per)
	}
	// They still work.
	for i, c := range cs[:5] {
		exchange(c, readers[i])
	}
}

// Client sockets have TCP keepalive with the stream path's settings, so a
// client gone without a FIN or RST is found.
func TestStreamClientKeepAlive(t *testing.T) {
	be := newStreamBackend(t, false)
	ss := startStream(t, Options{HTTP: true}, be.addr())
	c, err := net.Dial("tcp", ss.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitActive(t, ss.svc, 1)
	ss.mu.Lock()
	var raw net.Conn
	for sc := range ss.conns {
		raw = sc.raw
	}
	ss.mu.Unlock()
	rc, err := raw.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { checkClientKeepAlive(t, int(fd)) })
}

// TLS handshake failures, which any client can cause at will, are logged at
// most once a second.
func TestStreamHandshakeLogRateLimited(t *testing.T) {
	be := newStreamBackend(t, false)
	o := Options{Listen: netip.MustParseAddrPort("127.0.0.1:0"), ConnectTimeout: time.Second,
		TLS: &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}}
	var logs logLines
	pool := balance.New(balance.Options{}, []balance.Server{{Addr: be.addr(), Weight: 1}})
	ss, err := ServeStream(NewService(o, pool, logs.logf))
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	for range 20 {
		c, err := net.Dial("tcp", ss.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\n\r\n") // not a TLS record
		waitClosed(t, c, 3*time.Second)
		c.Close()
	}
	waitActive(t, ss.svc, 0)
	if n := logs.count("tls handshake"); n < 1 || n > 2 {
		t.Errorf("%d handshake failure lines for 20 failures, want 1 (or 2 across a second): %q", n, logs.lines)
	}
}

// failingListener fails every Accept with err until closed.
type failingListener struct {
	err     error
	accepts atomic.Int32
	closed  chan struct{}
	once    sync.Once
}

func (l *failingListener) Accept() (net.Conn, error) {
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	l.accepts.Add(1)
	return nil, &net.OpError{Op: "accept", Net: "tcp", Err: l.err}
}

func (l *failingListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *failingListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// An accept failing for want of descriptors pauses accepting for
// acceptBackoff instead of retrying at once, logs rate-limited warnings,
// and counts as a local error.
func TestStreamAcceptBackoff(t *testing.T) {
	ln := &failingListener{err: syscall.EMFILE, closed: make(chan struct{})}
	pool := balance.New(balance.Options{}, nil)
	svc := NewService(Options{HTTP: true}, pool, t.Logf)
	var warns logLines
	svc.SetWarnf(warns.logf)
	ss := serveStream(svc, ln, defaultStreamConfig)
	time.Sleep(4*acceptBackoff + acceptBackoff/2)
	start := time.Now()
	ss.Close()
	if d := time.Since(start); d > acceptBackoff {
		t.Errorf("Close took %v during an accept pause", d)
	}
	if n := ln.accepts.Load(); n < 3 || n > 6 {
		t.Errorf("%d accepts in %v, want about one per %v", n, 4*acceptBackoff+acceptBackoff/2, acceptBackoff)
	}
	if n := warns.count("too many open files"); n != 1 {
		t.Errorf("%d warnings, want 1: %q", n, warns.lines)
	}
	if c := svc.Counters(); c.LocalErrors != uint64(ln.accepts.Load()) {
		t.Errorf("%d local errors counted for %d failed accepts", c.LocalErrors, ln.accepts.Load())
	}
}

// A client that leaves while its upgrade request waits for the backend's
// answer is noticed although its reader is not reading: its FIN starts the
// half-close limit, its reset ends the connection.
func TestStreamClientLeavesWhileUpgradeWaits(t *testing.T) {
	cfg := streamConfig{handshake: 5 * time.Second, head: 5 * time.Second, halfClose: 300 * time.Millisecond}
	const upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
	for _, how := range []string{"fin", "reset"} {
		t.Run(how, func(t *testing.T) {
			be := newStreamBackend(t, true)
			ss := startStreamWith(t, Options{HTTP: true}, cfg, be.addr())
			t.Cleanup(be.release) // before ss.Close, should the proxy wait on it
			c, err := net.Dial("tcp", ss.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, upgrade)
			deadline := time.Now().Add(3 * time.Second)
			for be.heads.Load() == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if how == "fin" {
				c.(*net.TCPConn).CloseWrite()
				if d := waitClosed(t, c, 3*time.Second); d > 2*time.Second {
					t.Errorf("cut after %v, want about %v", d, cfg.halfClose)
				}
			} else {
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
			deadline = time.Now().Add(2 * time.Second)
			for ss.svc.Counters().Active != 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := ss.svc.Counters().Active; n != 0 {
				t.Errorf("%d connections still open", n)
			}
		})
	}
}
