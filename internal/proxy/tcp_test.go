package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/proxyproto"
	"github.com/nib-lb/nib/internal/tcptest"
)

// backend is a loopback TCP server for tests.
type backend struct {
	addr netip.AddrPort
}

func newBackend(t *testing.T, handle func(net.Conn)) *backend {
	t.Helper()
	return &backend{addr: tcptest.Serve(t, handle)}
}

// echo copies everything back, then closes its write side at EOF.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
}

// freeAddr returns a loopback address nobody listens on.
func freeAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return a
}

type fixture struct {
	svc    *Service
	pool   *balance.Pool
	addr   string
	engine *Engine
}

// startTCP runs a splice-engine service over the given backends.
func startTCP(t *testing.T, o Options, bo balance.Options, backends ...netip.AddrPort) *fixture {
	t.Helper()
	return startTCPLoops(t, 2, o, bo, backends...)
}

// startTCPLoops is startTCP with an engine of n loops.
func startTCPLoops(t *testing.T, n int, o Options, bo balance.Options, backends ...netip.AddrPort) *fixture {
	t.Helper()
	if !o.Listen.IsValid() {
		o.Listen = freeAddr(t)
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 2 * time.Second
	}
	if bo.Blacklist == 0 {
		bo.Blacklist = 30 * time.Second
	}
	if bo.TrackingSize == 0 {
		bo.TrackingSize = 64
	}
	var servers []balance.Server
	for _, b := range backends {
		servers = append(servers, balance.Server{Addr: b, Weight: 1})
	}
	pool := balance.New(bo, servers)
	svc := NewService(o, pool, t.Logf)
	e, err := NewEngine(n)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Listen(svc); err != nil {
		e.Close()
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return &fixture{svc: svc, pool: pool, addr: o.Listen.String(), engine: e}
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func TestRelayEchoAndHalfClose(t *testing.T) {
	be := newBackend(t, func(c net.Conn) {
		// Read to EOF (the client's half-close must arrive), then answer.
		b, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %d bytes: %s", len(b), b)
	})
	f := startTCP(t, Options{}, balance.Options{}, be.addr)
	c := dial(t, f.addr)
	io.WriteString(c, "hello")
	c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := "got 5 bytes: hello"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestRelayLargeBothWays(t *testing.T) {
	be := newBackend(t, echo)
	f := startTCP(t, Options{}, balance.Options{}, be.addr)
	c := dial(t, f.addr)
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	want := sha256.Sum256(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		c.CloseWrite()
		errc <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("echoed %d bytes, hash mismatch=%v", n, !bytes.Equal(h.Sum(nil), want[:]))
	}
	// The bytes are counted for the backend once the connection is over.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := f.pool.Stats(time.Now())
		if st[0].Conns == 0 && st[0].Sent == uint64(len(data)) && st[0].Recv == uint64(len(data)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want conns 0, sent and recv %d", st[0], len(data))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFailoverOnRefused(t *testing.T) {
	dead := freeAddr(t)
	be := newBackend(t, func(c net.Conn) { io.WriteString(c, "alive") })
	f := startTCP(t, Options{}, balance.Options{Algorithm: balance.RoundRobin}, dead, be.addr)
	for i := range 4 {
		c := dial(t, f.addr)
		got, _ := io.ReadAll(c)
		if string(got) != "alive" {
			t.Fatalf("request %d: got %q", i, got)
		}
	}
	st := f.pool.Stats(time.Now())
	if !st[0].BlacklistedUntil.After(time.Now()) {
		t.Errorf("refused backend not blacklisted: %+v", st[0])
	}
}

func TestNoBackendClosesClient(t *testing.T) {
	f := startTCP(t, Options{}, balance.Options{}, freeAddr(t))
	c := dial(t, f.addr)
	if _, err := io.ReadAll(c); err != nil && !isReset(err) {
		t.Fatal(err)
	}
	waitActive(t, f.svc, 0)
	// The refused counter counts clients closed for want of a backend.
	if got := f.svc.Counters().Refused; got != 1 {
		t.Errorf("refused = %d, want 1 (no backend)", got)
	}
}

func TestDeniedClientCountedRefused(t *testing.T) {
	be := newBackend(t, echo)
	f := startTCP(t, Options{}, balance.Options{ClientAllowed: func(netip.Addr) bool { return false }}, be.addr)
	c := dial(t, f.addr)
	if _, err := io.ReadAll(c); err != nil && !isReset(err) {
		t.Fatal(err)
	}
	waitActive(t, f.svc, 0)
	if got := f.svc.Counters().Refused; got != 1 {
		t.Errorf("refused = %d, want 1 (denied by the ACL)", got)
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

func waitActive(t *testing.T, svc *Service, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for svc.Counters().Active != want {
		if time.Now().After(deadline) {
			t.Fatalf("active = %d, want %d", svc.Counters().Active, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConnectTimeoutFailsOver(t *testing.T) {
	// A listener whose accept queue is full drops SYNs, so a connect to it
	// hangs until our timeout fires.
	hung := freeAddr(t)
	lfd, err := listenTCP(hung, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	var fillers []net.Conn
	defer func() {
		for _, c := range fillers {
			c.Close()
		}
	}()
	for range 64 {
		c, err := net.DialTimeout("tcp", hung.String(), 200*time.Millisecond)
		if err != nil {
			break
		}
		fillers = append(fillers, c)
	}
	be := newBackend(t, func(c net.Conn) { io.WriteString(c, "second") })
	f := startTCP(t, Options{ConnectTimeout: 300 * time.Millisecond}, balance.Options{Algorithm: balance.Prio}, hung, be.addr)
	start := time.Now()
	c := dial(t, f.addr)
	got, _ := io.ReadAll(c)
	if string(got) != "second" {
		t.Fatalf("got %q, want the second backend", got)
	}
	if el := time.Since(start); el < 250*time.Millisecond || el > 3*time.Second {
		t.Errorf("failover after %v, want about the 300ms connect timeout", el)
	}
}

func TestMaxConnectionsRefusesNewKeepsOld(t *testing.T) {
	be := newBackend(t, echo)
	f := startTCP(t, Options{MaxConnections: 2}, balance.Options{}, be.addr)
	a, b := dial(t, f.addr), dial(t, f.addr)
	roundTrip(t, a, "a1")
	roundTrip(t, b, "b1")
	c := dial(t, f.addr)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("third connection read %d bytes; want it refused", n)
	} else if isTimeout(err) {
		t.Fatal("third connection left hanging; want it closed at once")
	}
	roundTrip(t, a, "a2")
	roundTrip(t, b, "b2")
	if got := f.svc.Counters().Refused; got != 1 {
		t.Errorf("refused = %d, want 1", got)
	}
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("round trip %q: %v", msg, err)
	}
	if string(buf) != msg {
		t.Fatalf("got %q, want %q", buf, msg)
	}
}

func TestIdleTimeout(t *testing.T) {
	be := newBackend(t, echo)
	f := startTCP(t, Options{IdleTimeout: 400 * time.Millisecond}, balance.Options{}, be.addr)
	c := dial(t, f.addr)
	roundTrip(t, c, "x")
	start := time.Now()
	_, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 3*time.Second {
		t.Errorf("closed after %v idle, want about 400ms", el)
	}
	waitActive(t, f.svc, 0)
}

// A client that never reads must not stall anybody else.
func TestSlowClientDoesNotBlockOthers(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 32<<20)
	be := newBackend(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		line, _ := r.ReadString('\n')
		if line == "big\n" {
			c.Write(big)
			return
		}
		io.WriteString(c, "small\n")
	})
	f := startTCP(t, Options{}, balance.Options{}, be.addr)
	slow := dial(t, f.addr)
	io.WriteString(slow, "big\n")
	time.Sleep(200 * time.Millisecond) // let the relay fill every buffer
	for i := range 20 {
		c := dial(t, f.addr)
		io.WriteString(c, "hi\n")
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || got != "small\n" {
			t.Fatalf("request %d behind a stalled client: %q, %v", i, got, err)
		}
		c.Close()
	}
	// The stalled transfer still completes once the client reads.
	n, err := io.Copy(io.Discard, slow)
	if err != nil || n != int64(len(big)) {
		t.Fatalf("stalled client got %d bytes (%v), want %d", n, err, len(big))
	}
}

func TestProxyProtocolHeader(t *testing.T) {
	for _, v := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			hdrs := make(chan proxyproto.Header, 1)
			be := newBackend(t, func(c net.Conn) {
				buf := make([]byte, 0, 256)
				tmp := make([]byte, 256)
				for {
					n, err := c.Read(tmp)
					buf = append(buf, tmp[:n]...)
					h, used, perr := proxyproto.Parse(buf)
					if perr == nil {
						hdrs <- h
						c.Write(buf[used:])
						io.Copy(c, c)
						return
					}
					if !errors.Is(perr, proxyproto.ErrIncomplete) || err != nil {
						close(hdrs)
						return
					}
				}
			})
			f := startTCP(t, Options{ProxyProtocol: v}, balance.Options{}, be.addr)
			c := dial(t, f.addr)
			roundTrip(t, c, "payload")
			h, ok := <-hdrs
			if !ok {
				t.Fatal("backend saw no valid PROXY header")
			}
			local := c.LocalAddr().(*net.TCPAddr).AddrPort()
			if h.Src != local || h.Dst.String() != f.addr {
				t.Errorf("header %+v, want src %v dst %v", h, local, f.addr)
			}
		})
	}
}

func TestManyConcurrentConnections(t *testing.T) {
	be := newBackend(t, echo)
	f := startTCP(t, Options{}, balance.Options{}, be.addr)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := fmt.Sprintf("conn %d", i)
			io.WriteString(c, msg)
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
				errs <- fmt.Errorf("conn %d: %q %v", i, buf, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitActive(t, f.svc, 0)
}

func TestSourceAddress(t *testing.T) {
	from := make(chan netip.Addr, 1)
	be := newBackend(t, func(c net.Conn) {
		from <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
		io.WriteString(c, "ok")
	})
	f := startTCP(t, Options{Source: netip.MustParseAddr("127.0.0.2")}, balance.Options{}, be.addr)
	c := dial(t, f.addr)
	if got, _ := io.ReadAll(c); string(got) != "ok" {
		t.Fatalf("got %q", got)
	}
	if a := <-from; a != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("backend saw the connection from %v, want 127.0.0.2", a)
	}
}

func TestRequestLog(t *testing.T) {
	path := t.TempDir() + "/req.log"
	cl, err := OpenConnLog(path)
	if err != nil {
		t.Fatal(err)
	}
	be := newBackend(t, echo)
	f := startTCP(t, Options{Name: "web", Log: cl}, balance.Options{}, be.addr)
	c := dial(t, f.addr)
	roundTrip(t, c, "hello")
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	c.Close()
	waitActive(t, f.svc, 0)
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b))
	if len(fields) != 9 || fields[0] != "127.0.0.1" || fields[2] != be.addr.Addr().String() || fields[3] != "web" ||
		fields[4] != strconv.Itoa(int(local.Port())) || fields[5] != strconv.Itoa(int(be.addr.Port())) || fields[6] != "5" || fields[7] != "5" {
		t.Fatalf("log line %q", b)
	}
}
