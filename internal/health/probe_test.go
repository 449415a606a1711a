package health

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/dnstest"
	"github.com/nib-lb/nib/internal/tcptest"
	"golang.org/x/net/dns/dnsmessage"
)

// run runs p with timeout.
func run(p Probe, timeout time.Duration) Result {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p(ctx)
}

// readRequest reads a request's head from c.
func readRequest(c net.Conn) (string, error) {
	br := bufio.NewReader(c)
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if line == "\r\n" {
			return b.String(), nil
		}
	}
}

// respond is a handler answering every request with resp.
func respond(resp string) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := readRequest(c); err == nil {
			c.Write([]byte(resp))
		}
	}
}

func TestTCP(t *testing.T) {
	addr := tcptest.Serve(t, func(net.Conn) {})
	if r := run(TCP(addr), time.Second); !r.OK || r.Latency <= 0 {
		t.Errorf("listening: %+v", r)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	if r := run(TCP(closed), time.Second); r.OK || r.Reason != "connection refused" {
		t.Errorf("closed port: %+v", r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := TCP(addr)(ctx); r.OK || r.Reason != "cancelled" {
		t.Errorf("cancelled: %+v", r)
	}
}

func TestHTTP(t *testing.T) {
	const ok200 = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nstatus ok"
	chunked := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nall \r\n4\r\ngood\r\n0\r\n\r\n"
	tests := []struct {
		name   string
		handle func(net.Conn)
		o      HTTPOptions
		ok     bool
		reason string
	}{
		{"200", respond(ok200), HTTPOptions{}, true, "http 200"},
		{"200 body", respond(ok200), HTTPOptions{Body: "ok"}, true, "http 200"},
		{"200 body lacks", respond(ok200), HTTPOptions{Body: "good"}, false, `body lacks "good"`},
		{"503", respond("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"), HTTPOptions{}, false, "http 503"},
		{"503 in range", respond("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"), HTTPOptions{StatusLo: 500, StatusHi: 599}, true, "http 503"},
		{"204 exact", respond("HTTP/1.1 204 No Content\r\n\r\n"), HTTPOptions{StatusLo: 204}, true, "http 204"},
		{"200 not exact", respond(ok200), HTTPOptions{StatusLo: 204}, false, "http 200"},
		{"301 default range", respond("HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n"), HTTPOptions{}, true, "http 301"},
		{"301 outside 2xx", respond("HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n"), HTTPOptions{StatusLo: 200, StatusHi: 299}, false, "http 301"},
		{"chunked body", respond(chunked), HTTPOptions{Body: "all good"}, true, "http 200"},
		{"chunked body lacks", respond(chunked), HTTPOptions{Body: "bad"}, false, `body lacks "bad"`},
		{"close-delimited body", respond("HTTP/1.0 200 OK\r\n\r\nfine"), HTTPOptions{Body: "fine"}, true, "http 200"},
		{"oversized headers", respond("HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n"), HTTPOptions{}, false, "headers too large"},
		{"not http", respond("220 smtp ready\r\n"), HTTPOptions{}, false, "bad status line"},
		{"closes at once", func(c net.Conn) { readRequest(c) }, HTTPOptions{}, false, "empty reply"},
		{"never answers", func(c net.Conn) { readRequest(c); c.Read(make([]byte, 1)) }, HTTPOptions{}, false, "timeout"},
		{"slow loris", func(c net.Conn) {
			readRequest(c)
			for _, b := range []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(30 * time.Millisecond)
			}
		}, HTTPOptions{}, false, "timeout"},
		{"body cut short", respond("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nnope"), HTTPOptions{Body: "ok"}, false, `body lacks "ok" (connection closed)`},
		{"bad path", respond(ok200), HTTPOptions{Path: "/a b"}, false, "bad path"},
		{"bad host", respond(ok200), HTTPOptions{Host: "a\r\nX: y"}, false, "bad host"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := tcptest.Serve(t, tc.handle)
			start := time.Now()
			r := run(HTTP(addr, tc.o), 300*time.Millisecond)
			if r.OK != tc.ok || r.Reason != tc.reason {
				t.Errorf("got %+v, want OK %v reason %q", r, tc.ok, tc.reason)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestHTTPRequest(t *testing.T) {
	reqs := make(chan string, 2)
	addr := tcptest.Serve(t, func(c net.Conn) {
		req, _ := readRequest(c)
		reqs <- req
		c.Write([]byte("HTTP/1.1 200 OK\r\n\r\n"))
	})
	if r := run(HTTP(addr, HTTPOptions{Path: "/healthz?x=1", Host: "svc.example"}), time.Second); !r.OK {
		t.Fatalf("%+v", r)
	}
	want := "GET /healthz?x=1 HTTP/1.1\r\nHost: svc.example\r\nUser-Agent: nib-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
	if got := <-reqs; got != want {
		t.Errorf("request %q, want %q", got, want)
	}
	if r := run(HTTP(addr, HTTPOptions{}), time.Second); !r.OK {
		t.Fatalf("%+v", r)
	}
	if got := <-reqs; !strings.HasPrefix(got, "GET / HTTP/1.1\r\nHost: "+addr.String()+"\r\n") {
		t.Errorf("request %q", got)
	}
}

func TestHTTPS(t *testing.T) {
	var (
		mu  sync.Mutex
		sni []string
	)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sni = append(sni, r.TLS.ServerName)
		mu.Unlock()
		if r.URL.Path == "/down" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "healthy")
	}))
	defer srv.Close()
	addr := netip.MustParseAddrPort(srv.Listener.Addr().String())
	if r := run(HTTP(addr, HTTPOptions{TLS: true, Host: "svc.example", Body: "healthy"}), time.Second); !r.OK {
		t.Errorf("https: %+v", r)
	}
	if r := run(HTTP(addr, HTTPOptions{TLS: true, Path: "/down"}), time.Second); r.OK || r.Reason != "http 503" {
		t.Errorf("https 503: %+v", r)
	}
	mu.Lock()
	if len(sni) != 2 || sni[0] != "svc.example" || sni[1] != "" {
		t.Errorf("SNI %q, want svc.example and none", sni)
	}
	mu.Unlock()
	// HTTPS to a plain HTTP server fails in the handshake.
	plain := tcptest.Serve(t, func(c net.Conn) { c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) })
	if r := run(HTTP(plain, HTTPOptions{TLS: true}), time.Second); r.OK || !strings.HasPrefix(r.Reason, "tls") {
		t.Errorf("https to http: %+v", r)
	}
}

func TestSNIName(t *testing.T) {
	for host, want := range map[string]string{
		"svc.example":      "svc.example",
		"svc.example:8443": "svc.example",
		"10.0.0.1":         "",
		"10.0.0.1:443":     "",
		"[::1]:443":        "",
		"::1":              "",
	} {
		if got := sniName(host); got != want {
			t.Errorf("sniName(%q) = %q, want %q", host, got, want)
		}
	}
}

// dnsServer answers DNS queries over UDP with answer (nil: no answer)
// until the test ends.
func dnsServer(t *testing.T, answer func(req []byte) []byte) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := answer(buf[:n]); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// dnsReply answers req with rcode, its ID changed by idDelta.
func dnsReply(rcode dnsmessage.RCode, idDelta uint16) func([]byte) []byte {
	return func(req []byte) []byte {
		resp, ok := dnstest.Answer(req, [4]byte{10, 0, 0, 1})
		if !ok {
			return nil
		}
		var m dnsmessage.Message
		if m.Unpack(resp) != nil {
			return nil
		}
		m.RCode = rcode
		m.ID += idDelta
		if rcode != dnsmessage.RCodeSuccess {
			m.Answers = nil
		}
		b, _ := m.Pack()
		return b
	}
}

func TestDNS(t *testing.T) {
	tests := []struct {
		name   string
		answer func([]byte) []byte
		ok     bool
		reason string
	}{
		{"noerror", dnsReply(dnsmessage.RCodeSuccess, 0), true, "dns NOERROR"},
		{"nxdomain", dnsReply(dnsmessage.RCodeNameError, 0), true, "dns NXDOMAIN"},
		{"servfail", dnsReply(dnsmessage.RCodeServerFailure, 0), false, "dns SERVFAIL"},
		{"refused", dnsReply(dnsmessage.RCodeRefused, 0), false, "dns REFUSED"},
		{"wrong id", dnsReply(dnsmessage.RCodeSuccess, 1), false, "dns ID mismatch"},
		{"no answer", func([]byte) []byte { return nil }, false, "timeout"},
		{"garbage", func([]byte) []byte { return []byte{1, 2, 3} }, false, "dns bad response"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := dnsServer(t, tc.answer)
			r := run(DNS(addr, "udp", "svc.example"), 200*time.Millisecond)
			if r.OK != tc.ok || r.Reason != tc.reason {
				t.Errorf("got %+v, want OK %v reason %q", r, tc.ok, tc.reason)
			}
		})
	}
}

func TestDNSIgnoresStrayReply(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(dnsReply(dnsmessage.RCodeSuccess, 7)(buf[:n]), from)
		pc.WriteTo(dnsReply(dnsmessage.RCodeSuccess, 0)(buf[:n]), from)
	}()
	addr := netip.MustParseAddrPort(pc.LocalAddr().String())
	if r := run(DNS(addr, "", "svc.example."), time.Second); !r.OK {
		t.Errorf("%+v", r)
	}
}

func TestDNSTCP(t *testing.T) {
	addr := tcptest.Serve(t, func(c net.Conn) {
		var n [2]byte
		if _, err := c.Read(n[:]); err != nil {
			return
		}
		req := make([]byte, int(n[0])<<8|int(n[1]))
		if _, err := c.Read(req); err != nil {
			return
		}
		resp := dnsReply(dnsmessage.RCodeServerFailure, 0)(req)
		c.Write(append([]byte{byte(len(resp) >> 8), byte(len(resp))}, resp...))
	})
	if r := run(DNS(addr, "tcp", "svc.example"), time.Second); r.OK || r.Reason != "dns SERVFAIL" {
		t.Errorf("%+v", r)
	}
	if r := run(DNS(addr, "sctp", "svc.example"), time.Second); r.OK || !strings.HasPrefix(r.Reason, "bad network") {
		t.Errorf("%+v", r)
	}
	if r := run(DNS(addr, "tcp", strings.Repeat("a", 300)), time.Second); r.OK || r.Reason != "bad query name" {
		t.Errorf("%+v", r)
	}
}

func TestAll(t *testing.T) {
	pass := func(context.Context) Result { return Result{OK: true} }
	failing := func(reason string) Probe {
		return func(context.Context) Result { return Result{Reason: reason} }
	}
	var ran []string
	mark := func(name string, p Probe) Probe {
		return func(ctx context.Context) Result { ran = append(ran, name); return p(ctx) }
	}
	r := run(All(mark("a", pass), mark("b", failing("VIP not bound")), mark("c", failing("other"))), time.Second)
	if r.OK || r.Reason != "VIP not bound" || strings.Join(ran, "") != "ab" {
		t.Errorf("%+v, ran %v", r, ran)
	}
	if r := run(All(pass, pass), time.Second); !r.OK {
		t.Errorf("%+v", r)
	}
	if r := run(All(), time.Second); !r.OK {
		t.Errorf("none: %+v", r)
	}
}

func TestHTTPIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	defer ln.Close()
	hosts := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, _ := readRequest(c)
		hosts <- req
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	}()
	addr := netip.MustParseAddrPort(ln.Addr().String())
	if r := run(HTTP(addr, HTTPOptions{}), time.Second); !r.OK {
		t.Fatalf("%+v", r)
	}
	if req := <-hosts; !strings.Contains(req, "\r\nHost: [::1]:"+fmt.Sprint(addr.Port())+"\r\n") {
		t.Errorf("request %q", req)
	}
}
