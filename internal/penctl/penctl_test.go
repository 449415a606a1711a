package penctl

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/control"
)

const testToken = "s3cret-token"

// fake implements the control API's server contract.
type fake struct {
	srv *httptest.Server
	fp  string

	mu        sync.Mutex
	commands  []string // /api/v1/pen command lines received
	edits     []string // /api/v1/backend request bodies received
	reloadErr string   // non-empty: reload answers 422 with it
	writeErr  string   // non-empty: write answers 500 with it
	status    int      // non-zero: every request answers it
	requests  int
}

func newFake(t *testing.T) *fake {
	t.Helper()
	f := &fake{}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	// Each fake has its own self-signed certificate, as each lbd has
	// (httptest's default one is shared by every server).
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	f.fp = control.Fingerprint(f.srv.Certificate().Raw)
	return f
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "lbd"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (f *fake) set(change func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change()
}

func (f *fake) addr() string { return f.srv.Listener.Addr().String() }

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if f.status != 0 {
		w.Header().Set("Retry-After", "7")
		reply(w, f.status, map[string]string{"error": http.StatusText(f.status)})
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+testToken {
		reply(w, 401, map[string]string{"error": "unauthorized"})
		return
	}
	switch r.Method + " " + r.URL.Path {
	case "POST /api/v1/pen":
		var req struct{ Command string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			reply(w, 400, map[string]string{"error": err.Error()})
			return
		}
		f.commands = append(f.commands, req.Command)
		if req.Command == "bogus" {
			reply(w, 400, map[string]string{"error": "bogus: unknown command"})
			return
		}
		reply(w, 200, map[string]string{"output": "0 127.0.0.1:8081 0 0 0 0 0\n"})
	case "GET /api/v1/status":
		reply(w, 200, Status{Version: "0.9", Services: []control.ServiceStatus{{
			Name: "web", Listen: ":80", Protocol: "tcp", Mode: "proxy", Active: 2, Accepted: 40, Refused: 1,
			Backends: []control.BackendStatus{
				{Index: 0, Address: "10.0.0.1:8080", Weight: 1, State: "ok", Active: 1},
				{Index: 1, Address: "10.0.0.2:8080", Weight: 3, State: "blacklisted", Active: 1, Sent: 12345, Received: 678},
			},
		}}})
	case "POST /api/v1/backend":
		b, _ := io.ReadAll(r.Body)
		f.edits = append(f.edits, strings.TrimSpace(string(b)))
		var req control.BackendRequest
		json.Unmarshal(b, &req)
		if req.Service != "web" {
			reply(w, 404, map[string]string{"error": `no such service "` + req.Service + `"`})
			return
		}
		reply(w, 200, control.BackendReply{OK: true, Index: 1})
	case "POST /api/v1/check":
		var req control.CheckRequest
		json.NewDecoder(r.Body).Decode(&req)
		switch req.Service {
		case "good":
			reply(w, 200, control.CheckReply{OK: true, Lines: []string{"10.0.0.1 02:00:00:00:00:01 ok: VIP bound"}})
		case "bad":
			reply(w, 200, control.CheckReply{OK: false, Lines: []string{"10.0.0.1 02:00:00:00:00:01 arp leak: answers ARP"}})
		default:
			reply(w, 404, map[string]string{"error": `no such service "` + req.Service + `"`})
		}
	case "GET /api/v1/config":
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("[service.web]\nlisten = \":80\"\n"))
	case "POST /api/v1/write":
		if f.writeErr != "" {
			reply(w, 500, map[string]string{"error": f.writeErr})
			return
		}
		reply(w, 200, map[string]bool{"ok": true})
	case "POST /api/v1/reload":
		if f.reloadErr != "" {
			reply(w, 422, map[string]string{"error": f.reloadErr})
			return
		}
		reply(w, 200, map[string]bool{"ok": true})
	default:
		reply(w, 404, map[string]string{"error": "not found"})
	}
}

type result struct {
	code           int
	stdout, stderr string
}

func runWith(env map[string]string, args ...string) result {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb, func(k string) string { return env[k] })
	return result{code, out.String(), errb.String()}
}

// good returns the flags that reach f with the right token and pin.
func (f *fake) env() map[string]string {
	return map[string]string{"NIB_HOST": f.addr(), "NIB_TOKEN": testToken}
}

func (f *fake) run(args ...string) result {
	return runWith(f.env(), append([]string{"-fingerprint", f.fp}, args...)...)
}

func expect(t *testing.T, r result, code int, stdout, stderr []string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stdout {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
		}
	}
	for _, s := range stderr {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
}

func TestVerbs(t *testing.T) {
	f := newFake(t)
	expect(t, f.run("status"), 0, []string{"lbd 0.9", "service web", "accepted 40", "10.0.0.2:8080", "blacklisted", "BACKEND", "12345"}, nil)
	for _, args := range [][]string{{"-json", "status"}, {"status", "-json"}} {
		r := f.run(args...)
		expect(t, r, 0, nil, nil)
		var st Status
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Services) != 1 || len(st.Services[0].Backends) != 2 {
			t.Errorf("%v: %v %+v\n%s", args, err, st, r.stdout)
		}
	}
	expect(t, f.run("config"), 0, []string{"[service.web]\nlisten = \":80\"\n"}, nil)
	expect(t, f.run("write"), 0, []string{"write: ok"}, nil)
	expect(t, f.run("reload"), 0, []string{"reload: ok"}, nil)
	expect(t, f.run("-json", "reload"), 0, []string{`"ok": true`}, nil)
	r := f.run("servers")
	expect(t, r, 0, nil, nil)
	if r.stdout != "0 127.0.0.1:8081 0 0 0 0 0\n" {
		t.Errorf("servers: %q", r.stdout)
	}
	expect(t, f.run("-json", "servers"), 0, []string{`"output": "0 127.0.0.1:8081`}, nil)
	expect(t, f.run("server", "1", "weight", "3"), 0, nil, nil)
	expect(t, f.run("pen", "status"), 0, nil, nil)
	expect(t, f.run("bogus"), 1, nil, []string{"bogus: unknown command", "penctl help lists"})
	want := []string{"servers", "servers", "server 1 weight 3", "status", "bogus"}
	if strings.Join(f.commands, "|") != strings.Join(want, "|") {
		t.Errorf("commands %q, want %q", f.commands, want)
	}
}

func TestHelp(t *testing.T) {
	r := runWith(nil, "help") // no server needed
	expect(t, r, 0, []string{"status", "config", "write", "reload", "help", "Pen command"}, nil)
	if n := strings.Count(r.stdout, "\n"); n != len(verbOrder)+2 {
		t.Errorf("help has %d lines:\n%s", n, r.stdout)
	}
	expect(t, runWith(nil, "-h"), 0, nil, []string{"usage: penctl", "-token-file", "exit status: 0 ok"})
}

func TestURL(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	expect(t, runWith(nil, "-s", "lb1", "-fingerprint", strings.ToUpper(fp), "url"), 0, []string{"https://lb1:9443/\n", fp}, nil)
	expect(t, runWith(map[string]string{"NIB_HOST": "[::1]:8443"}, "url"), 0, []string{"https://[::1]:8443/\n"}, nil)
	expect(t, runWith(nil, "url"), 2, nil, []string{"no server"})
}

func TestHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"lb": "lb:9443", "lb:10": "lb:10", "10.0.0.1": "10.0.0.1:9443", "::1": "[::1]:9443",
		"[::1]": "[::1]:9443", "[fe80::1]:7": "[fe80::1]:7",
		"": "", ":9443": "", "lb:": "", "a:b:c": "", "[lb": "", "lb]": "", "[lb]": "", "[]": "", "a/b": "",
	} {
		got, err := hostPort(in)
		if got != want || (err != nil) != (want == "") {
			t.Errorf("hostPort(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestUsage(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		args []string
		msg  string
	}{
		{nil, nil, "missing verb"},
		{nil, []string{"-nosuchflag", "status"}, "not defined"},
		{nil, []string{"status"}, "no server"},
		{map[string]string{"NIB_HOST": "lb"}, []string{"status"}, "no token"},
		{map[string]string{"NIB_HOST": "lb", "NIB_TOKEN": "x"}, []string{"-fingerprint", "abc", "status"}, "not a SHA-256"},
		{map[string]string{"NIB_HOST": "lb", "NIB_TOKEN": "x"}, []string{"status", "extra"}, "takes no arguments"},
		{map[string]string{"NIB_TOKEN": "x"}, []string{"-s", "a:b:c", "status"}, "invalid server address"},
		{nil, []string{"-token-file", "/nonexistent/token", "-s", "lb", "status"}, "token file"},
		{nil, []string{"-config", "/nonexistent/penctl.json", "status"}, "config file"},
		{nil, []string{"lb:10080"}, "usage: penctl host:port"},
		{map[string]string{"NIB_HOST": "lb", "NIB_TOKEN": "x"}, []string{"server", "1\nexit"}, "one line"},
		{map[string]string{"NIB_HOST": "lb", "NIB_TOKEN": "a b\r\nX-Evil: 1"}, []string{"status"}, "characters a bearer token cannot have"},
	} {
		expect(t, runWith(c.env, c.args...), 2, nil, []string{c.msg})
	}
}

func TestTokenSources(t *testing.T) {
	f := newFake(t)
	dir := t.TempDir()
	tok := filepath.Join(dir, "control.token")
	os.WriteFile(tok, []byte(testToken+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "wrong.token"), []byte("nope\n"), 0o600)

	// -token-file wins over NIB_TOKEN.
	env := map[string]string{"NIB_HOST": f.addr(), "NIB_TOKEN": "wrong"}
	expect(t, runWith(env, "-fingerprint", f.fp, "-token-file", tok, "write"), 0, nil, nil)
	// NIB_TOKEN alone.
	expect(t, f.run("write"), 0, nil, nil)
	// The config file has everything; its token_file is relative to it.
	cfg := filepath.Join(dir, "lb.json")
	if err := WriteFile(cfg, File{Address: f.addr(), TokenFile: "control.token", Fingerprint: strings.ToUpper(colons(f.fp))}); err != nil {
		t.Fatal(err)
	}
	expect(t, runWith(nil, "-config", cfg, "write"), 0, nil, nil)
	expect(t, runWith(map[string]string{"NIB_PENCTL_CONFIG": cfg}, "status"), 0, []string{"service web"}, nil)
	// NIB_TOKEN wins over the config file's token file.
	expect(t, runWith(map[string]string{"NIB_PENCTL_CONFIG": cfg, "NIB_TOKEN": "wrong"}, "status"), 3, nil, []string{"refused the token"})
	// Unknown fields are refused.
	os.WriteFile(cfg, []byte(`{"adress":"x"}`), 0o600)
	expect(t, runWith(nil, "-config", cfg, "status"), 2, nil, []string{"unknown field"})
}

func colons(hex string) string {
	var parts []string
	for i := 0; i < len(hex); i += 2 {
		parts = append(parts, hex[i:i+2])
	}
	return strings.Join(parts, ":")
}

func TestWrongToken(t *testing.T) {
	f := newFake(t)
	env := map[string]string{"NIB_HOST": f.addr(), "NIB_TOKEN": "wrong"}
	r := runWith(env, "-fingerprint", f.fp, "servers")
	expect(t, r, 3, nil, []string{"refused the token", "401", "-token-file"})
	if strings.Contains(r.stderr, "wrong") {
		t.Errorf("the message shows the token: %s", r.stderr)
	}
}

func TestFingerprint(t *testing.T) {
	f := newFake(t)
	// Another instance's certificate, and a made-up fingerprint.
	other := newFake(t)
	for _, wrong := range []string{other.fp, strings.Repeat("ab", 32)} {
		r := f.runNoPin("-fingerprint", wrong, "servers")
		expect(t, r, 3, nil, []string{"MISMATCH", "expected (pinned) fingerprint: " + wrong, "server's fingerprint:          " + f.fp})
	}
	if len(f.commands) != 0 {
		t.Errorf("a command reached the server: %q", f.commands)
	}
	// Upper case and colons are accepted.
	expect(t, f.runNoPin("-fingerprint", strings.ToUpper(colons(f.fp)), "servers"), 0, nil, nil)
	// No fingerprint: refused, with the server's and how to trust it.
	r := f.runNoPin("servers")
	expect(t, r, 3, nil, []string{"no certificate fingerprint", f.fp, "-fingerprint " + f.fp, "-trust"})
}

func (f *fake) runNoPin(args ...string) result { return runWith(f.env(), args...) }

func TestTrust(t *testing.T) {
	f := newFake(t)
	// Without -config: printed, not saved. No request is made.
	expect(t, f.runNoPin("-trust"), 0, []string{f.fp, "not saved"}, nil)
	expect(t, runWith(map[string]string{"NIB_HOST": f.addr()}, "-trust"), 0, []string{f.fp}, nil) // no token needed
	var n int
	f.set(func() { n = f.requests })
	if n != 0 {
		t.Errorf("-trust made %d requests", n)
	}
	// With -config: printed and saved (the file is created), then used.
	cfg := filepath.Join(t.TempDir(), "lb.json")
	expect(t, f.runNoPin("-config", cfg, "-trust"), 0, []string{f.fp, "saved to " + cfg}, nil)
	var saved File
	b, err := os.ReadFile(cfg)
	if err != nil || json.Unmarshal(b, &saved) != nil || saved.Fingerprint != f.fp || saved.Address != f.addr() {
		t.Fatalf("saved %v %s", err, b)
	}
	if fi, _ := os.Stat(cfg); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	expect(t, runWith(map[string]string{"NIB_TOKEN": testToken}, "-config", cfg, "status"), 0, []string{"service web"}, nil)
	// -trust with a verb runs it; the fingerprint goes to stderr. It
	// replaces a stale pin.
	saved.Fingerprint = strings.Repeat("0", 64)
	b, _ = json.Marshal(saved)
	os.WriteFile(cfg, b, 0o600)
	r := runWith(map[string]string{"NIB_TOKEN": testToken}, "-config", cfg, "-trust", "servers")
	expect(t, r, 0, []string{"127.0.0.1:8081"}, []string{f.fp, "replaces the previously pinned fingerprint " + saved.Fingerprint})
	if strings.Contains(r.stdout, f.fp) {
		t.Errorf("fingerprint on stdout: %s", r.stdout)
	}
	b, _ = os.ReadFile(cfg)
	if !strings.Contains(string(b), f.fp) {
		t.Errorf("not saved: %s", b)
	}
	// -trust -s another server: its fingerprint is saved with its address;
	// a broken pin in the file does not stand in the way.
	other := newFake(t)
	os.WriteFile(cfg, []byte(`{"address":"`+f.addr()+`","fingerprint":"junk","token_file":"t"}`), 0o600)
	expect(t, runWith(nil, "-config", cfg, "-s", other.addr(), "-trust"), 0, []string{other.fp}, nil)
	saved = File{}
	b, _ = os.ReadFile(cfg)
	if json.Unmarshal(b, &saved) != nil || saved.Address != other.addr() || saved.Fingerprint != other.fp || saved.TokenFile != "t" {
		t.Errorf("saved %s", b)
	}
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	r := runWith(map[string]string{"NIB_TOKEN": "x"}, "-s", addr, "-fingerprint", strings.Repeat("a", 64), "status")
	expect(t, r, 3, nil, []string{"cannot connect to " + addr, "connection refused"})
}

func TestNotTLS(t *testing.T) {
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	// A server that talks plain text at once, like a line-based protocol.
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	go func() {
		for {
			c, err := raw.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello, this is not TLS\n"))
			c.Close()
		}
	}()
	for _, addr := range []string{plain.Listener.Addr().String(), raw.Addr().String()} {
		r := runWith(map[string]string{"NIB_TOKEN": "x"}, "-s", addr, "-fingerprint", strings.Repeat("a", 64), "status")
		expect(t, r, 3, nil, []string{addr + " does not speak TLS"})
	}
}

func TestServerRefusals(t *testing.T) {
	f := newFake(t)
	f.set(func() { f.status = 429 })
	expect(t, f.run("status"), 3, nil, []string{"too many failed attempts", "429", "Retry-After: 7"})
	f.set(func() { f.status = 403 })
	expect(t, f.run("status"), 3, nil, []string{"403", "ACL"})
	f.set(func() { f.status = 0 })
	f.set(func() { f.reloadErr = "lbd.toml:3:7: unknown key \"lisen\"\nlbd.toml:9:1: backend: missing address" })
	expect(t, f.run("reload"), 1, nil, []string{"reload rejected", "unchanged", "lbd.toml:3:7: unknown key \"lisen\"\nlbd.toml:9:1: backend: missing address"})
	f.set(func() { f.writeErr = "open /perm/lbd.toml: read-only file system" })
	expect(t, f.run("write"), 1, nil, []string{"write", "read-only file system"})
}

// fakePen is a tiny Pen control server: it reads one line and answers
// with what it got, then closes, as Pen does.
func fakePen(t *testing.T, network, addr string) string {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Write([]byte("pen got: " + line))
			c.Close()
		}
	}()
	return l.Addr().String()
}

func TestPenPlainProtocol(t *testing.T) {
	tcp := fakePen(t, "tcp", "127.0.0.1:0")
	sock := fakePen(t, "unix", filepath.Join(t.TempDir(), "pen.ctl"))
	// The environment does not divert the old form to the HTTPS API.
	env := map[string]string{"NIB_HOST": "example.invalid", "NIB_TOKEN": "x"}
	for _, addr := range []string{tcp, sock} {
		r := runWith(env, addr, "server", "1", "weight", "3")
		expect(t, r, 0, nil, nil)
		if r.stdout != "pen got: server 1 weight 3\n" {
			t.Errorf("%s: %q", addr, r.stdout)
		}
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	expect(t, runWith(nil, dead, "servers"), 1, nil, []string{"error connecting to server"})
}

func TestBackendVerb(t *testing.T) {
	f := newFake(t)
	expect(t, f.run("backend", "add", "web", "10.0.0.5:80"), 0, []string{"add: added backend 10.0.0.5:80 of service web (index 1)", "penctl write saves it"}, nil)
	expect(t, f.run("backend", "add", "web", "10.0.0.6", "4"), 0, nil, nil)
	expect(t, f.run("backend", "drain", "web", "10.0.0.5:80"), 0, []string{"drained backend"}, nil)
	expect(t, f.run("backend", "undrain", "web", "10.0.0.5:80"), 0, nil, nil)
	expect(t, f.run("backend", "weight", "web", "10.0.0.5", "0"), 0, nil, nil)
	expect(t, f.run("backend", "blacklist", "web", "10.0.0.5", "30"), 0, []string{"blacklisted", "not saved"}, nil)
	expect(t, f.run("backend", "remove", "web", "10.0.0.5:80"), 0, []string{"removed"}, nil)
	expect(t, f.run("-json", "backend", "remove", "web", "10.0.0.5:80"), 0, []string{`"index": 1`}, nil)
	expect(t, f.run("backend", "drain", "mail", "10.0.0.5"), 1, nil, []string{"backend drain", `no such service "mail"`})
	want := []string{
		`{"service":"web","backend":"10.0.0.5:80","op":"add"}`,
		`{"service":"web","backend":"10.0.0.6","op":"add","weight":4}`,
		`{"service":"web","backend":"10.0.0.5:80","op":"drain"}`,
		`{"service":"web","backend":"10.0.0.5:80","op":"undrain"}`,
		`{"service":"web","backend":"10.0.0.5","op":"weight","weight":0}`,
		`{"service":"web","backend":"10.0.0.5","op":"blacklist","seconds":30}`,
		`{"service":"web","backend":"10.0.0.5:80","op":"remove"}`,
		`{"service":"web","backend":"10.0.0.5:80","op":"remove"}`,
		`{"service":"mail","backend":"10.0.0.5","op":"drain"}`,
	}
	if strings.Join(f.edits, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(f.edits, "\n"), strings.Join(want, "\n"))
	}
	// Shape errors never reach the server.
	n := len(f.edits)
	for _, args := range [][]string{
		{"backend"}, {"backend", "add", "web"}, {"backend", "explode", "web", "10.0.0.5"},
		{"backend", "add", "web", "10.0.0.5", "0"}, {"backend", "add", "web", "10.0.0.5", "1", "2"},
		{"backend", "drain", "web", "10.0.0.5", "1"}, {"backend", "weight", "web", "10.0.0.5"},
		{"backend", "weight", "web", "10.0.0.5", "-1"}, {"backend", "weight", "web", "10.0.0.5", "x"},
		{"backend", "blacklist", "web", "10.0.0.5"}, {"backend", "blacklist", "web", "10.0.0.5", "99999999999"},
		{"backend", "drain", "", "10.0.0.5"},
	} {
		expect(t, f.run(args...), 2, nil, []string{"penctl"})
	}
	if len(f.edits) != n {
		t.Errorf("bad command lines reached the server: %q", f.edits[n:])
	}
}

func TestCheckVerb(t *testing.T) {
	f := newFake(t)
	expect(t, f.run("check", "good"), 0, []string{"ok: VIP bound"}, nil)
	expect(t, f.run("check", "bad"), 1, []string{"arp leak"}, []string{"some backends of bad are not ready"})
	expect(t, f.run("-json", "check", "bad"), 1, []string{`"ok": false`}, nil)
	expect(t, f.run("check", "mail"), 1, nil, []string{`no such service "mail"`})
	expect(t, f.run("check"), 2, nil, []string{"check takes one DSR service"})
	expect(t, f.run("check", "a", "b"), 2, nil, []string{"check takes one DSR service"})
}
