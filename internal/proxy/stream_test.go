package proxy

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/balance"
)

func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "lbd test"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// headerRecorder is an HTTP backend that records the forwarding headers of
// every request it serves.
type headerRecorder struct {
	mu   sync.Mutex
	xff  []string
	xfp  []string
	addr netip.AddrPort
}

func newHeaderRecorder(t *testing.T) *headerRecorder {
	hr := &headerRecorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hr.mu.Lock()
		hr.xff = append(hr.xff, strings.Join(r.Header.Values("X-Forwarded-For"), "|"))
		hr.xfp = append(hr.xfp, strings.Join(r.Header.Values("X-Forwarded-Proto"), "|"))
		hr.mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(body))
	}))
	t.Cleanup(srv.Close)
	hr.addr = netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
	return hr
}

func startStream(t testing.TB, o Options, backends ...netip.AddrPort) *StreamServer {
	t.Helper()
	o.Listen = netip.MustParseAddrPort("127.0.0.1:0")
	o.ConnectTimeout = 2 * time.Second
	var servers []balance.Server
	for _, b := range backends {
		servers = append(servers, balance.Server{Addr: b, Weight: 1})
	}
	pool := balance.New(balance.Options{Blacklist: time.Minute, TrackingSize: 16}, servers)
	ss, err := ServeStream(NewService(o, pool, t.Logf))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ss.Close)
	return ss
}

func TestHTTPModeForwardedHeadersOnEveryRequest(t *testing.T) {
	hr := newHeaderRecorder(t)
	ss := startStream(t, Options{HTTP: true}, hr.addr)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	url := "http://" + ss.Addr().String()
	for i := range 4 {
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/r%d", url, i), nil)
		if i == 2 {
			req.Header.Set("X-Forwarded-For", "6.6.6.6")
			req.Header.Set("X-Forwarded-Proto", "https")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	resp, err := client.Post(url+"/post", "text/plain", strings.NewReader("GET /smuggled HTTP/1.1\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "POST /post 26" {
		t.Errorf("POST answered %q", body)
	}
	hr.mu.Lock()
	defer hr.mu.Unlock()
	want := []string{"127.0.0.1", "127.0.0.1", "6.6.6.6, 127.0.0.1", "127.0.0.1", "127.0.0.1"}
	if fmt.Sprint(hr.xff) != fmt.Sprint(want) {
		t.Errorf("X-Forwarded-For per request = %q, want %q", hr.xff, want)
	}
	for i, p := range hr.xfp {
		if p != "http" {
			t.Errorf("request %d X-Forwarded-Proto = %q, want http", i, p)
		}
	}
}

func TestTLSTermination(t *testing.T) {
	hr := newHeaderRecorder(t)
	cert := selfSigned(t)
	ss := startStream(t, Options{HTTP: true, TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}, hr.addr)
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + ss.Addr().String() + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "GET /x 0" {
		t.Fatalf("body %q", body)
	}
	if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("TLS state %+v", resp.TLS)
	}
	if hr.xfp[0] != "https" {
		t.Errorf("X-Forwarded-Proto = %q, want https", hr.xfp[0])
	}
	// TLS 1.1 is refused by default.
	c, err := tls.Dial("tcp", ss.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err == nil {
		c.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
}

// A client that connects and says nothing must not hold anything up.
func TestStreamIdleHandshakeDoesNotBlock(t *testing.T) {
	hr := newHeaderRecorder(t)
	ss := startStream(t, Options{TLS: &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}}, hr.addr)
	idle, err := net.Dial("tcp", ss.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 3 * time.Second}
	resp, err := cl.Get("https://" + ss.Addr().String() + "/")
	if err != nil {
		t.Fatalf("request behind an idle client: %v", err)
	}
	resp.Body.Close()
}

func TestHTTPModeBadRequestAnswered400(t *testing.T) {
	hr := newHeaderRecorder(t)
	ss := startStream(t, Options{HTTP: true}, hr.addr)
	c, err := net.Dial("tcp", ss.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
	got, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(got), "HTTP/1.1 400") {
		t.Fatalf("got %q, want a 400", got)
	}
}

// lenientBackend is an HTTP/1.1 backend that reads request lines as
// leniently as Python's http.server: split on any run of whitespace or
// control bytes. It never switches protocols: every request, upgrade or not,
// gets "200 ok". It records the X-Forwarded-For of every request it reads.
type lenientBackend struct {
	ln  net.Listener
	mu  sync.Mutex
	xff []string
}

func newLenientBackend(t *testing.T) *lenientBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb := &lenientBackend{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					fields := strings.FieldsFunc(line, func(r rune) bool { return r <= ' ' })
					if len(fields) == 0 {
						continue // an empty line before a request
					}
					var xff []string
					for {
						h, err := br.ReadString('\n')
						if err != nil {
							return
						}
						h = strings.TrimRight(h, "\r\n")
						if h == "" {
							break
						}
						if name, value, ok := strings.Cut(h, ":"); ok && strings.EqualFold(name, "X-Forwarded-For") {
							xff = append(xff, strings.TrimSpace(value))
						}
					}
					lb.mu.Lock()
					lb.xff = append(lb.xff, strings.Join(xff, " | "))
					lb.mu.Unlock()
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
		}
	})
	return lb
}

func (lb *lenientBackend) addr() netip.AddrPort {
	return lb.ln.Addr().(*net.TCPAddr).AddrPort()
}

func (lb *lenientBackend) seen() []string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return append([]string(nil), lb.xff...)
}

// After an upgrade request that the backend ignores (it answers 200), what
// the client sends next is parsed as HTTP and rewritten, whatever it looks
// like: it never reaches the backend unrewritten.
func TestStreamUpgradeIgnoredStillRewritten(t *testing.T) {
	const upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
	lb := newLenientBackend(t)
	ss := startStream(t, Options{HTTP: true}, lb.addr())
	for _, tc := range []struct {
		name, next string
		wantStatus int
	}{
		{"valid request", "GET /2 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n", 200},
		{"request line led by a space", " GET /2 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n", 400},
		{"request line split by control bytes", "GET\x1f/2\x1fHTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ss.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			io.WriteString(c, upgrade)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 200 {
				t.Fatalf("upgrade answered %d, want the backend's 200", resp.StatusCode)
			}
			io.WriteString(c, tc.next)
			resp, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("second request: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("second request answered %d, want %d", resp.StatusCode, tc.wantStatus)
			}
		})
	}
	// Every request the backend read carries the client's address last.
	seen := lb.seen()
	want := []string{"127.0.0.1", "6.6.6.6, 127.0.0.1", "127.0.0.1", "127.0.0.1"}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("backend read X-Forwarded-For %q, want %q", seen, want)
	}
}

// upgradeBackend answers the first request with 101 after a pause, checking
// that nothing arrives before it answers, then sends a greeting and echoes
// what it gets. It reports what it read after the head on got.
func upgradeBackend(t *testing.T, answer string, got chan<- string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Errorf("backend: %v", err)
			return
		}
		if xff := req.Header.Get("X-Forwarded-For"); xff != "127.0.0.1" {
			t.Errorf("backend: upgrade request X-Forwarded-For %q", xff)
		}
		// The client sent its first frame at once; it must be held until
		// the backend has answered.
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := br.Peek(1); err == nil {
			t.Errorf("backend: bytes arrived before the answer to the upgrade")
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, answer+"greeting\n")
		line, err := br.ReadString('\n')
		got <- line
		if err == nil {
			io.WriteString(c, "echo "+line)
		}
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// After the backend's 101 (or 2xx to CONNECT) the stream is a raw tunnel
// both ways: a request sent through it is not rewritten; before the answer,
// nothing the client sends reaches the backend.
func TestStreamUpgradeSwitchedTunnels(t *testing.T) {
	for _, tc := range []struct{ name, request, answer string }{
		{"websocket 101", "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
			"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"},
		{"CONNECT 200", "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
			"HTTP/1.1 200 Connection established\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan string, 1)
			ss := startStream(t, Options{HTTP: true}, upgradeBackend(t, tc.answer, got))
			c, err := net.Dial("tcp", ss.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			const tunnelled = "GET / HTTP/1.1 X-Forwarded-For: 6.6.6.6\n"
			io.WriteString(c, tc.request+tunnelled)
			br := bufio.NewReader(c)
			want := tc.answer + "greeting\necho " + tunnelled
			buf := make([]byte, len(want))
			if _, err := io.ReadFull(br, buf); err != nil {
				t.Fatalf("client read %q: %v", buf, err)
			}
			if string(buf) != want {
				t.Errorf("client read %q, want %q", buf, want)
			}
			select {
			case line := <-got:
				if line != tunnelled {
					t.Errorf("backend read %q through the tunnel, want %q", line, tunnelled)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("backend read nothing")
			}
		})
	}
}
