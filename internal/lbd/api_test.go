package lbd

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/control"
)

// apiClient talks to lbd's control API, pinning its certificate.
type apiClient struct {
	t     *testing.T
	base  string
	token string
	c     *http.Client
}

func newAPIClient(t *testing.T, addr, state string) *apiClient {
	t.Helper()
	var sec control.Secrets
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		sec, err = control.EnsureSecrets(state, nil) // loads what lbd created
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	fp := sec.Fingerprint
	return &apiClient{t: t, base: "https://" + addr, token: sec.Token, c: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || control.Fingerprint(raw[0]) != fp {
				return errors.New("certificate mismatch")
			}
			return nil
		}},
	}}}
}

func (a *apiClient) do(method, path, body string) (int, string) {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// apiAppliance is an appliance-mode lbd serving the control API, with one
// service "web" balancing to one dummy backend whose body is "v1".
type apiAppliance struct {
	e                           *applianceEnv
	p                           *daemonProc
	a                           *apiClient
	cfg                         string // the config file's text
	apiAddr, dummyAddr, svcAddr netip.AddrPort
}

// startAPIAppliance starts an apiAppliance; the test stops it.
func startAPIAppliance(t *testing.T) *apiAppliance {
	t.Helper()
	x := &apiAppliance{e: newApplianceEnv(t), apiAddr: freePort(t), dummyAddr: freePort(t), svcAddr: freePort(t)}
	x.cfg = fmt.Sprintf(`[control]
listen = %q

[[dummy]]
listen = %q
body = "v1"

[[service]]
name = "web"
listen = %q

[[service.backend]]
address = %q
`, x.apiAddr, x.dummyAddr, x.svcAddr, x.dummyAddr)
	putFile(t, x.e.file, []byte(x.cfg))
	x.p = x.e.start(t)
	t.Cleanup(func() { x.p.stop(t) })
	x.a = newAPIClient(t, x.apiAddr.String(), x.e.state)
	return x
}

// The API end to end, through an appliance-mode lbd.
func TestControlAPI(t *testing.T) {
	x := startAPIAppliance(t)
	e, p, a, cfg := x.e, x.p, x.a, x.cfg
	apiAddr, dummyAddr, svcAddr := x.apiAddr, x.dummyAddr, x.svcAddr
	for _, n := range []string{control.KeyFile, control.CertFile, control.TokenFile} {
		if fi, err := os.Stat(filepath.Join(e.state, n)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", n, fi, err)
		}
	}
	logs := p.logs()
	wantContains(t, "log", logs, "control: HTTPS API on "+apiAddr.String(), filepath.Join(e.state, control.TokenFile))
	if strings.Contains(logs, a.token) {
		t.Error("the token is in the log")
	}
	sec, _ := control.EnsureSecrets(e.state, nil)
	wantContains(t, "log", logs, sec.Fingerprint)

	// A wrong token.
	bad := *a
	bad.token = strings.Repeat("0", 64)
	if code, body := bad.do("GET", "/api/v1/status", ""); code != 401 {
		t.Errorf("wrong token: %d %s", code, body)
	}

	code, body := a.do("POST", "/api/v1/pen", `{"command":"servers"}`)
	var pr control.PenReply
	if code != 200 || json.Unmarshal([]byte(body), &pr) != nil || !strings.Contains(pr.Output, dummyAddr.Addr().String()) {
		t.Errorf("servers: %d %s", code, body)
	}
	// Verbs that name files stay refused.
	if code, body := a.do("POST", "/api/v1/pen", `{"command":"log /tmp/x"}`); code != 422 || !strings.Contains(body, "refused over the control socket") {
		t.Errorf("log verb: %d %s", code, body)
	}

	code, body = a.do("GET", "/api/v1/status", "")
	var st control.Status
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || len(st.Services) != 1 ||
		st.Services[0].Name != "web" || len(st.Services[0].Backends) != 1 || st.Services[0].Backends[0].Address != dummyAddr.String() ||
		st.Services[0].Backends[0].State != "ok" || st.Version == "" {
		t.Errorf("status: %d %s %v", code, body, err)
	}

	code, body = a.do("GET", "/api/v1/config", "")
	if _, err := config.Parse("api", []byte(body)); code != 200 || err != nil || !strings.Contains(body, apiAddr.String()) {
		t.Errorf("config: %d %v\n%s", code, err, body)
	}

	// write saves the running config (with a Pen change) over the file.
	if code, body := a.do("POST", "/api/v1/pen", `{"command":"server 0 weight 7"}`); code != 200 {
		t.Errorf("weight: %d %s", code, body)
	}
	if code, body := a.do("POST", "/api/v1/write", ""); code != 200 || strings.TrimSpace(body) != `{"ok":true}` {
		t.Errorf("write: %d %s", code, body)
	}
	saved, err := config.Load(e.file)
	if err != nil || saved.Services[0].Backends[0].Weight != 7 {
		t.Errorf("written file: %v %+v", err, saved)
	}

	// A broken file is refused with its positions; the old config serves.
	putFile(t, e.file, []byte(strings.Replace(cfg, `body = "v1"`, `body = "v2"`+"\nbogus = 1", 1)))
	code, body = a.do("POST", "/api/v1/reload", "")
	if code != 422 || !strings.Contains(body, e.file+":7:1: dummy[0].bogus") {
		t.Errorf("broken reload: %d %s", code, body)
	}
	if got := httpGet(t, "http://"+svcAddr.String()+"/"); got != "v1" {
		t.Errorf("after a broken reload: %q", got)
	}
	// A good file is applied.
	putFile(t, e.file, []byte(strings.Replace(cfg, `body = "v1"`, `body = "v2"`, 1)))
	if code, body := a.do("POST", "/api/v1/reload", ""); code != 200 {
		t.Errorf("reload: %d %s", code, body)
	}
	if got := httpGet(t, "http://"+svcAddr.String()+"/"); got != "v2" {
		t.Errorf("after reload: %q", got)
	}
	wantFile(t, e.lastGood(), []byte(strings.Replace(cfg, `body = "v1"`, `body = "v2"`, 1)), 0o600)
	if code, body := a.do("GET", "/api/v1/status", ""); code != 200 {
		t.Errorf("status after reload: %d %s", code, body)
	}
}

// Without a state directory the API is refused, with a clear error.
func TestControlAPINeedsState(t *testing.T) {
	d := New(log.New(io.Discard, "", 0))
	defer d.Close()
	cfg, err := config.Parse("x.toml", fmt.Appendf(nil, "[control]\nlisten = %q\n[[dummy]]\nlisten = %q\n", freePort(t), freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(cfg); err == nil || !strings.Contains(err.Error(), "-state") {
		t.Errorf("Apply: %v", err)
	}
}

// The API moves with a reload and stops with Close; its ACL applies.
func TestControlAPIReloadMoves(t *testing.T) {
	var logs bytes.Buffer
	d := New(log.New(&logs, "", 0))
	d.StateDir = t.TempDir()
	defer d.Close()
	a1, a2, dummy := freePort(t), freePort(t), freePort(t)
	apply := func(listen, aclText string) {
		t.Helper()
		cfg, err := config.Parse("x.toml", fmt.Appendf(nil, "[control]\nlisten = %q\n%s\n[[dummy]]\nlisten = %q\n", listen, aclText, dummy))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Apply(cfg); err != nil {
			t.Fatal(err)
		}
	}
	apply(a1.String(), "")
	c := newAPIClient(t, a1.String(), d.StateDir)
	if code, body := c.do("GET", "/api/v1/status", ""); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	apply(a1.String(), "acl = \"none\"\n[acl]\nnone = [\"deny any\"]\n")
	if code, body := c.do("GET", "/api/v1/status", ""); code != 403 {
		t.Errorf("ACL: %d %s", code, body)
	}
	apply(a2.String(), "")
	c2 := newAPIClient(t, a2.String(), d.StateDir)
	if code, body := c2.do("GET", "/api/v1/status", ""); code != 200 {
		t.Errorf("moved: %d %s", code, body)
	}
	if !refused("http://" + a1.String() + "/") {
		t.Error("old address still listens")
	}
	// The reload verb needs the main loop: without one it says so.
	if code, body := c2.do("POST", "/api/v1/reload", ""); code != 422 || !strings.Contains(body, "not available") {
		t.Errorf("reload without main loop: %d %s", code, body)
	}
}

// Secrets that can be neither read nor created leave the API off; the rest
// of the config is served.
func TestControlAPIBrokenState(t *testing.T) {
	var logs bytes.Buffer
	d := New(log.New(&logs, "", 0))
	file := filepath.Join(t.TempDir(), "file")
	putFile(t, file, nil)
	d.StateDir = filepath.Join(file, "dir") // under a regular file: cannot be created
	defer d.Close()
	api, dummy := freePort(t), freePort(t)
	cfg, err := config.Parse("x.toml", fmt.Appendf(nil, "[control]\nlisten = %q\n[[dummy]]\nlisten = %q\n", api, dummy))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "HTTPS API on "+api.String()+" is off") || !refused("http://"+api.String()+"/") {
		t.Errorf("API not off:\n%s", logs.String())
	}
	if refused("http://" + dummy.String() + "/") {
		t.Error("dummy not served")
	}
	// Once the directory can be made, a reload brings the API up.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	c := newAPIClient(t, api.String(), d.StateDir)
	if code, body := c.do("GET", "/api/v1/status", ""); code != 200 {
		t.Errorf("%d %s", code, body)
	}
}

// A reload that fails after the API's listener was opened closes it again.
func TestControlAPIAbort(t *testing.T) {
	d := New(log.New(io.Discard, "", 0))
	d.StateDir = t.TempDir()
	defer d.Close()
	api, dummy := freePort(t), freePort(t)
	cfg, err := config.Parse("x.toml", fmt.Appendf(nil, "[control]\nlisten = %q\n[[dummy]]\nlisten = %q\n", api, dummy))
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	d.failAt = "control-api"
	d.mu.Unlock()
	if err := d.Apply(cfg); !errors.Is(err, errInjected) {
		t.Fatalf("Apply: %v", err)
	}
	if !refused("http://" + api.String() + "/") {
		t.Error("the API listener was left open")
	}
	d.mu.Lock()
	d.failAt = ""
	d.mu.Unlock()
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if refused("http://" + api.String() + "/") {
		t.Error("the API does not listen")
	}
}

// The API and the status page report a backend whose connect failed as
// blacklisted and a drained one as drained.
func TestBackendStates(t *testing.T) {
	// idle listens (its backlog accepts) so that a failover to it works.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	svc, dead, idle := freePort(t), freePort(t), ln.Addr().(*net.TCPAddr).AddrPort()
	cfg := oneService(svc, dead, idle)
	cfg.Services[0].Backends[1].Drain = true
	d, _ := newDaemon(t, cfg)
	states := func() []string {
		var out []string
		for _, b := range (apiBackend{d}).Status().Services[0].Backends {
			out = append(out, b.State)
		}
		return out
	}
	if got := strings.Join(states(), " "); got != "ok drained" {
		t.Errorf("before: %s", got)
	}
	// Clients come until round-robin has sent one to the dead backend: its
	// connect fails and blacklists it.
	var got string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", svc.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got = strings.Join(states(), " "); got == "blacklisted drained" || time.Now().After(deadline) {
			break
		}
	}
	if got != "blacklisted drained" {
		t.Errorf("after a failed connect: %s", got)
	}
	var page strings.Builder
	if err := (runtimeView{d}).StatusHTML("web", &page); err != nil {
		t.Fatal(err)
	}
	wantContains(t, "status page", page.String(), "<td>blacklisted until ", "<td>drained</td>")
}

// The state shown is the pool's: blacklisted first, then drained as the
// pool decides it (balance.TestStatsDrained: weight 0 drains only where the
// algorithm uses weights and not every weight is 0; drain always).
func TestProxyBackendState(t *testing.T) {
	now := time.Now()
	bl := now.Add(time.Second)
	for _, tc := range []struct {
		s    balance.ServerStats
		want string
	}{
		{balance.ServerStats{}, "ok"},
		{balance.ServerStats{Drained: true}, "drained"},
		{balance.ServerStats{BlacklistedUntil: bl, Drained: true}, "blacklisted"},
		{balance.ServerStats{BlacklistedUntil: now.Add(-time.Second)}, "ok"},
	} {
		if got := proxyBackendState(tc.s, now); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.s, got, tc.want)
		}
	}
	// Pen's servers default to weight 0; with every weight 0 the pool
	// counts each as 1 and chooses them all, so none shows drained.
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	listen := freePort(t)
	cfg := oneService(listen, a, b)
	cfg.Services[0].Algorithm = config.Weight
	for i := range cfg.Services[0].Backends {
		cfg.Services[0].Backends[i].Weight = 0
	}
	d, _ := newDaemon(t, cfg)
	if got := greetings(t, listen, 4); got["a"] == 0 || got["b"] == 0 {
		t.Fatalf("all weights 0 under weight: served %v, want both", got)
	}
	for _, bs := range (apiBackend{d}).Status().Services[0].Backends {
		if bs.State != "ok" {
			t.Errorf("backend %s: state %q with every weight 0, want ok", bs.Address, bs.State)
		}
	}
}
