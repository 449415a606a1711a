package control

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nib-lb/nib/config"
)

type fakeBackend struct {
	mu        sync.Mutex
	commands  []string
	reloadErr error
	edits     []BackendRequest
	editErr   error
}

func (f *fakeBackend) Pen(c string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.commands = append(f.commands, c)
	if strings.Contains(c, "fail") {
		return "partial\n", errors.New("server: unknown keyword 'fail'")
	}
	return "ran " + c + "\n", nil
}
func (f *fakeBackend) Status() Status {
	return Status{Version: "test", Services: []ServiceStatus{{Name: "web", Backends: []BackendStatus{{Address: "127.0.0.1:80", State: "ok"}}}}}
}
func (f *fakeBackend) ConfigTOML() ([]byte, error) { return []byte("debug = 1\n"), nil }
func (f *fakeBackend) Write() error                { return nil }
func (f *fakeBackend) Reload() error               { return f.reloadErr }
func (f *fakeBackend) CheckDSR(_ context.Context, service string) (CheckReply, error) {
	switch service {
	case "web":
		return CheckReply{OK: false, Lines: []string{"198.51.100.22 02:00:c6:33:64:16: arp leak"}}, nil
	case "proxy":
		return CheckReply{}, ErrNotDSR
	case "broken":
		return CheckReply{}, errors.New("eth9: no such interface")
	}
	return CheckReply{}, fmt.Errorf("%w %q", config.ErrNoService, service)
}

func (f *fakeBackend) EditBackend(r BackendRequest) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.edits = append(f.edits, r)
	if f.editErr != nil {
		return -1, f.editErr
	}
	return 2, nil
}

func TestSecretsCreatedAndReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s1, err := EnsureSecrets(dir, []string{"nib.example", "192.0.2.5"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{KeyFile, CertFile, TokenFile} {
		st, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", n, st.Mode().Perm())
		}
	}
	if len(s1.Token) != 64 || len(s1.Fingerprint) != 64 {
		t.Errorf("token %d chars, fingerprint %q", len(s1.Token), s1.Fingerprint)
	}
	if s1.TokenPath != filepath.Join(dir, TokenFile) {
		t.Errorf("TokenPath %q", s1.TokenPath)
	}
	leaf := s1.Cert.Leaf
	if leaf == nil {
		t.Fatal("no leaf")
	}
	if !strings.Contains(strings.Join(leaf.DNSNames, ","), "nib.example") || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("192.0.2.5")) {
		t.Errorf("SANs %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if leaf.NotAfter.Before(time.Now().AddDate(9, 11, 0)) {
		t.Errorf("NotAfter %v", leaf.NotAfter)
	}
	s2, err := EnsureSecrets(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Token != s1.Token || s2.Fingerprint != s1.Fingerprint {
		t.Error("secrets not reused")
	}
	// A lost certificate is re-made for the same key; the token stays.
	os.Remove(filepath.Join(dir, CertFile))
	s3, err := EnsureSecrets(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s3.Token != s1.Token || s3.Fingerprint == s1.Fingerprint {
		t.Error("certificate not re-made or token changed")
	}
	// A broken token file is refused.
	os.WriteFile(filepath.Join(dir, TokenFile), []byte("x\n"), 0o600)
	if _, err := EnsureSecrets(dir, nil); err == nil {
		t.Error("short token accepted")
	}
}

// start serves a Server on loopback.
func start(t *testing.T, o Options) (*Server, string) {
	t.Helper()
	if o.Backend == nil {
		o.Backend = &fakeBackend{}
	}
	if o.Secrets.Token == "" {
		s, err := EnsureSecrets(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		o.Secrets = s
	}
	if o.Logf == nil {
		o.Logf = t.Logf
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(o)
	s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return s, "https://" + ln.Addr().String()
}

// client pins fingerprint and dials from the local address from ("" for
// any).
func client(fingerprint, from string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: d.DialContext,
		TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // verified by pinning below
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 || Fingerprint(raw[0]) != fingerprint {
					return errMismatch
				}
				return nil
			},
		},
	}}
}

var errMismatch = errors.New("certificate fingerprint mismatch")

func do(t *testing.T, c *http.Client, method, url, token string, body []byte) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), method, url, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestAPI(t *testing.T) {
	fb := &fakeBackend{}
	s, base := start(t, Options{Backend: fb})
	sec := s.o.Secrets
	c := client(sec.Fingerprint, "")

	code, body, _ := do(t, c, "POST", base+"/api/v1/pen", sec.Token, []byte(`{"command":"servers"}`))
	var pr PenReply
	if code != 200 || json.Unmarshal([]byte(body), &pr) != nil || pr.Output != "ran servers\n" {
		t.Errorf("pen: %d %s", code, body)
	}
	code, body, _ = do(t, c, "GET", base+"/api/v1/status", sec.Token, nil)
	var st Status
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Services[0].Backends[0].Address != "127.0.0.1:80" {
		t.Errorf("status: %d %s", code, body)
	}
	if code, body, _ = do(t, c, "GET", base+"/api/v1/config", sec.Token, nil); code != 200 || body != "debug = 1\n" {
		t.Errorf("config: %d %s", code, body)
	}
	if code, body, _ = do(t, c, "GET", base+"/api/v1/config?format=json", sec.Token, nil); code != 200 || strings.TrimSpace(body) != `{"debug":1}` {
		t.Errorf("config as JSON: %d %s", code, body)
	}
	if code, body, _ = do(t, c, "POST", base+"/api/v1/write", sec.Token, nil); code != 200 || strings.TrimSpace(body) != `{"ok":true}` {
		t.Errorf("write: %d %s", code, body)
	}
	code, body, _ = do(t, c, "POST", base+"/api/v1/pen", sec.Token, []byte(`{"command":"bogus"}`))
	if code != 400 || !strings.Contains(body, `unknown verb \"bogus\"`) || !strings.Contains(body, " servers ") {
		t.Errorf("unknown verb: %d %s", code, body)
	}
	code, body, _ = do(t, c, "POST", base+"/api/v1/pen", sec.Token, []byte(`{"command":"server 0 fail 1"}`))
	if code != 422 || json.Unmarshal([]byte(body), &pr) != nil || pr.Output != "partial\n" || pr.Error != "server: unknown keyword 'fail'" {
		t.Errorf("failed verb: %d %s", code, body)
	}
	fb.reloadErr = errors.New("lbd.toml:1:1: bad")
	if code, body, _ = do(t, c, "POST", base+"/api/v1/reload", sec.Token, nil); code != 422 || !strings.Contains(body, "lbd.toml:1:1: bad") {
		t.Errorf("reload: %d %s", code, body)
	}
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/api/v1/pen", "", 405},
		{"POST", "/api/v1/status", "", 405},
		{"GET", "/nope", "", 404},
		{"POST", "/api/v1/pen", `{"command":""}`, 400},
		{"POST", "/api/v1/pen", `not json`, 400},
		{"POST", "/api/v1/pen", `{"command":"bogus 1"}`, 400},
		{"POST", "/api/v1/pen", `{"command":"server 1 fail"}`, 422},
		{"POST", "/api/v1/pen", `{"command":"` + strings.Repeat("a", MaxBody) + `"}`, 413},
		{"POST", "/api/v1/write", strings.Repeat("a", MaxBody+1), 413},
	} {
		if code, body, _ := do(t, c, tc.method, base+tc.path, sec.Token, []byte(tc.body)); code != tc.want {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.want)
		}
	}
}

func TestUnauthorized(t *testing.T) {
	s, base := start(t, Options{})
	sec := s.o.Secrets
	c := client(sec.Fingerprint, "")
	for _, tok := range []string{"", "wrong", sec.Token + "x", strings.ToUpper(sec.Token)} {
		code, body, h := do(t, c, "GET", base+"/api/v1/status", tok, nil)
		if code != 401 || !strings.Contains(body, `"unauthorized"`) || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("token %q: %d %s %v", tok, code, body, h)
		}
	}
	// Another instance's certificate does not match the pinned
	// fingerprint.
	other, err := EnsureSecrets(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", base+"/api/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+sec.Token)
	if _, err := client(other.Fingerprint, "").Do(req); err == nil || !strings.Contains(err.Error(), errMismatch.Error()) {
		t.Errorf("other instance's fingerprint: %v", err)
	}
	// The fingerprint is that of the served certificate.
	conn, err := tls.Dial("tcp", strings.TrimPrefix(base, "https://"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cs := conn.ConnectionState()
	if got := Fingerprint(cs.PeerCertificates[0].Raw); got != sec.Fingerprint {
		t.Errorf("served %s, want %s", got, sec.Fingerprint)
	}
	if cs.Version != tls.VersionTLS13 {
		t.Errorf("TLS version %x", cs.Version)
	}
	// TLS 1.1 is refused.
	if c, err := tls.Dial("tcp", strings.TrimPrefix(base, "https://"), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Error("TLS 1.1 accepted")
	}
}

func TestBruteForceSlowed(t *testing.T) {
	s, base := start(t, Options{})
	sec := s.o.Secrets
	attacker := client(sec.Fingerprint, "127.0.0.1")
	got429 := false
	for i := 0; i < 20; i++ {
		code, _, h := do(t, attacker, "GET", base+"/api/v1/status", "guess", nil)
		if code == 429 {
			got429 = true
			if h.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			break
		}
		if code != 401 {
			t.Fatalf("attempt %d: %d", i, code)
		}
	}
	if !got429 {
		t.Fatal("brute force never slowed")
	}
	// While blocked, even the right token from that source waits.
	if code, _, _ := do(t, attacker, "GET", base+"/api/v1/status", sec.Token, nil); code != 429 {
		t.Errorf("blocked source with token: %d", code)
	}
	// Another source is unaffected.
	other := client(sec.Fingerprint, "127.0.0.2")
	start := time.Now()
	if code, body, _ := do(t, other, "GET", base+"/api/v1/status", sec.Token, nil); code != 200 {
		t.Errorf("other source: %d %s", code, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("other source waited %v", d)
	}
}

func TestThrottle(t *testing.T) {
	var th throttle
	now := time.Unix(1e9, 0)
	a := netip.MustParseAddr("192.0.2.1")
	for i := 1; i < failFree; i++ {
		if d := th.fail(a, now); d != 0 {
			t.Fatalf("failure %d blocks %v", i, d)
		}
	}
	var last time.Duration
	for i := 0; i < 20; i++ {
		d := th.fail(a, now)
		if d < last || d > maxBlock || d == 0 {
			t.Fatalf("failure %d: block %v after %v", failFree+i, d, last)
		}
		last = d
		if th.blocked(a, now) != d {
			t.Fatal("blocked disagrees")
		}
		now = now.Add(d)
	}
	if last != maxBlock {
		t.Errorf("cap %v", last)
	}
	// A quiet source is forgotten after the window.
	now = now.Add(2 * failWindow)
	if d := th.fail(a, now); d != 0 {
		t.Errorf("after quiet: %v", d)
	}
	th.ok(a)
	// IPv6 by /64.
	b1, b2 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	for range failFree {
		th.fail(b1, now)
	}
	if th.blocked(b2, now) == 0 {
		t.Error("same /64 not blocked")
	}
	// Bounded table.
	for i := range MaxSources + 100 {
		th.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	if n := th.size(); n > MaxSources {
		t.Errorf("table has %d entries", n)
	}
}

func TestACL(t *testing.T) {
	s, base := start(t, Options{Allowed: func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.2") }})
	sec := s.o.Secrets
	if code, body, _ := do(t, client(sec.Fingerprint, "127.0.0.1"), "GET", base+"/api/v1/status", sec.Token, nil); code != 403 {
		t.Errorf("denied source: %d %s", code, body)
	}
	if code, body, _ := do(t, client(sec.Fingerprint, "127.0.0.2"), "GET", base+"/api/v1/status", sec.Token, nil); code != 200 {
		t.Errorf("permitted source: %d %s", code, body)
	}
}

func TestConnectionLimit(t *testing.T) {
	s, base := start(t, Options{})
	addr := strings.TrimPrefix(base, "https://")
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range maxPerSource {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The next connection from this source is closed at once.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("over the limit: %v", err)
	}
	c.Close()
	// Another source is served.
	sec := s.o.Secrets
	if code, body, _ := do(t, client(sec.Fingerprint, "127.0.0.2"), "GET", base+"/api/v1/status", sec.Token, nil); code != 200 {
		t.Errorf("other source: %d %s", code, body)
	}
	// Once this source lets go, it is served again.
	for _, c := range held {
		c.Close()
	}
	held = nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		req, _ := http.NewRequest("GET", base+"/api/v1/status", nil)
		req.Header.Set("Authorization", "Bearer "+sec.Token)
		resp, err := client(sec.Fingerprint, "127.0.0.1").Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("after release: %d", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after release: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// POST /api/v1/backend: requests checked before lbd sees them, lbd's
// errors mapped to status codes.
func TestBackendEndpoint(t *testing.T) {
	fb := &fakeBackend{}
	s, base := start(t, Options{Backend: fb})
	sec := s.o.Secrets
	c := client(sec.Fingerprint, "")
	for _, tc := range []struct {
		body    string
		editErr error
		want    int
		reached bool // the request got to lbd
	}{
		{body: `{"service":"web","backend":"10.0.0.5:80","op":"add"}`, want: 200, reached: true},
		{body: `{"service":"web","backend":"10.0.0.5","op":"weight","weight":3}`, want: 200, reached: true},
		{body: `{"service":"web","backend":"10.0.0.5","op":"blacklist","seconds":30}`, want: 200, reached: true},
		{body: `{"service":"web","backend":"10.0.0.5","op":"weight"}`, want: 400},
		{body: `{"service":"web","backend":"10.0.0.5","op":"blacklist"}`, want: 400},
		{body: `{"service":"web","backend":"10.0.0.5","op":"blacklist","seconds":-1}`, want: 400},
		{body: `{"service":"web","backend":"10.0.0.5","op":"explode"}`, want: 400},
		{body: `{"service":"","backend":"10.0.0.5","op":"drain"}`, want: 400},
		{body: `{"service":"web","op":"drain"}`, want: 400},
		{body: `{"service":"web","backend":"10.0.0.5","op":"drain","extra":1}`, want: 400},
		{body: `{"service":"web","backend":"10.0.0.5","op":"drain"} {}`, want: 400},
		{body: `{"service":"nope","backend":"10.0.0.5","op":"drain"}`, editErr: fmt.Errorf("%w %q", config.ErrNoService, "nope"), want: 404, reached: true},
		{body: `{"service":"web","backend":"10.0.0.9","op":"drain"}`, editErr: config.ErrNoBackend, want: 404, reached: true},
		{body: `{"service":"web","backend":"10.0.0.5","op":"add"}`, editErr: config.ErrExists, want: 409, reached: true},
		{body: `{"service":"web","backend":"10.0.0.2","op":"remove"}`, editErr: config.ErrBadBackend, want: 400, reached: true},
		{body: `{"service":"web","backend":"10.0.0.5","op":"add"}`, editErr: errors.New("listen: address in use"), want: 422, reached: true},
	} {
		fb.mu.Lock()
		fb.edits, fb.editErr = nil, tc.editErr
		fb.mu.Unlock()
		code, body, _ := do(t, c, "POST", base+"/api/v1/backend", sec.Token, []byte(tc.body))
		if code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.body, code, body, tc.want)
		}
		fb.mu.Lock()
		reached := len(fb.edits) == 1
		fb.mu.Unlock()
		if reached != tc.reached {
			t.Errorf("%s: reached lbd %v, want %v", tc.body, reached, tc.reached)
		}
		if code == 200 && strings.TrimSpace(body) != `{"ok":true,"index":2}` {
			t.Errorf("%s: reply %s", tc.body, body)
		}
		if code != 200 && !strings.Contains(body, `"error"`) {
			t.Errorf("%s: reply %s has no error", tc.body, body)
		}
	}
	if code, _, _ := do(t, c, "GET", base+"/api/v1/backend", sec.Token, nil); code != 405 {
		t.Errorf("GET /api/v1/backend: %d, want 405", code)
	}
}

// POST /api/v1/check: lbd's report, its errors as status codes.
func TestCheckEndpoint(t *testing.T) {
	s, base := start(t, Options{})
	sec := s.o.Secrets
	c := client(sec.Fingerprint, "")
	code, body, _ := do(t, c, "POST", base+"/api/v1/check", sec.Token, []byte(`{"service":"web"}`))
	var rep CheckReply
	if code != 200 || json.Unmarshal([]byte(body), &rep) != nil || rep.OK || len(rep.Lines) != 1 || !strings.Contains(rep.Lines[0], "arp leak") {
		t.Errorf("check web: %d %s", code, body)
	}
	for _, tc := range []struct {
		body string
		want int
	}{
		{`{"service":"nope"}`, 404},
		{`{"service":"proxy"}`, 400},
		{`{"service":"broken"}`, 500},
		{`{"service":""}`, 400},
		{`{"service":"web","x":1}`, 400},
	} {
		if code, body, _ := do(t, c, "POST", base+"/api/v1/check", sec.Token, []byte(tc.body)); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.body, code, body, tc.want)
		}
	}
}

// lockedBackend's Status takes a lock its test holds, as lbd's takes the
// daemon lock that lbd holds while it stops the API.
type lockedBackend struct {
	fakeBackend
	mu *sync.Mutex
}

func (b *lockedBackend) Status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fakeBackend.Status()
}

// Stop returns while the history sampler waits for a lock the caller
// holds (lbd stops the API under its daemon lock); Wait returns once the
// lock is released.
func TestStopUnderBackendLock(t *testing.T) {
	var mu sync.Mutex
	s, _ := start(t, Options{Backend: &lockedBackend{mu: &mu}, HistoryInterval: 10 * time.Millisecond})
	mu.Lock()
	time.Sleep(50 * time.Millisecond) // the sampler is now waiting for mu
	stopped := make(chan struct{})
	go func() { s.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		mu.Unlock()
		t.Fatal("Stop waited for the sampler, which waits for the caller's lock")
	}
	mu.Unlock()
	waited := make(chan struct{})
	go func() { s.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the lock was released")
	}
}
