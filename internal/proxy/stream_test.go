package proxy

import (
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

func selfSigned(t *testing.T) tls.Certificate {
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

func startStream(t *testing.T, o Options, backends ...netip.AddrPort) *StreamServer {
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
