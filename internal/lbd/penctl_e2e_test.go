package lbd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nib-lb/nib/internal/control"
	"github.com/nib-lb/nib/internal/penctl"
)

// Every penctl verb against a real lbd, through its HTTPS API, with the
// error paths: what an operator types, what they see, the exit status.
func TestPenctlEveryVerb(t *testing.T) {
	x := startAPIAppliance(t)
	two := namedBackend(t, "two")
	sec, err := control.EnsureSecrets(x.e.state, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(t.TempDir(), "penctl.json")
	js, _ := json.Marshal(map[string]string{"address": x.apiAddr.String(), "token_file": sec.TokenPath, "fingerprint": sec.Fingerprint})
	putFile(t, cfgFile, js)
	run := func(wantCode int, args ...string) (string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := penctl.Main(append([]string{"-config", cfgFile}, args...), &out, &errb)
		if code != wantCode {
			t.Fatalf("penctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, out.String(), errb.String())
		}
		return out.String(), errb.String()
	}
	has := func(what, got string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s lacks %q:\n%s", what, w, got)
			}
		}
	}
	dummy, twoAddr := x.dummyAddr.String(), two.String()

	out, _ := run(0, "status")
	has("status", out, "service web", "listen "+x.svcAddr.String(), dummy, "ok")
	out, _ = run(0, "status", "-json")
	var st control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Services) != 1 || st.Services[0].Backends[0].Address != dummy {
		t.Errorf("status -json: %v\n%s", err, out)
	}

	out, _ = run(0, "backend", "add", "web", twoAddr, "2")
	has("backend add", out, "added backend "+twoAddr+" of service web (index 1)")
	run(0, "backend", "drain", "web", dummy)
	out, _ = run(0, "status")
	has("status after drain", out, "drained", twoAddr)
	run(0, "backend", "undrain", "web", dummy)
	run(0, "backend", "weight", "web", twoAddr, "5")
	run(0, "backend", "blacklist", "web", twoAddr, "60")
	out, _ = run(0, "servers") // Pen's verb, Pen's output
	has("servers", out, "1 addr 127.0.0.1 port "+fmt.Sprint(two.Port())+" conn 0 max 0 hard 0 weight 5 prio 0")
	run(0, "backend", "blacklist", "web", twoAddr, "0")
	_, errs := run(1, "backend", "add", "web", twoAddr)
	has("adding twice", errs, "already exists")
	_, errs = run(1, "backend", "drain", "mail", dummy)
	has("unknown service", errs, `no such service "mail"`)
	_, errs = run(2, "backend", "weight", "web", twoAddr)
	has("missing weight", errs, "usage: penctl backend")
	run(0, "backend", "remove", "web", twoAddr)

	out, _ = run(0, "config")
	has("config", out, "[[service]]", "name = 'web'", dummy)
	out, _ = run(0, "config", "-json")
	var cj map[string]any
	if err := json.Unmarshal([]byte(out), &cj); err != nil || cj["service"] == nil {
		t.Errorf("config -json: %v\n%s", err, out)
	}

	// Pen verbs: a change, a read, an unknown verb, bad arguments, a
	// refused file verb.
	run(0, "server", "0", "weight", "3")
	out, _ = run(0, "pen", "servers")
	has("pen servers", out, "weight 3")
	_, errs = run(1, "bogus")
	has("unknown verb", errs, `unknown verb "bogus"`, "servers", "penctl help")
	_, errs = run(1, "server", "0", "frobnicate", "1")
	has("bad arguments", errs, "unknown keyword")
	_, errs = run(1, "pen", "write", "/etc/passwd")
	has("write FILE", errs, "refused")

	// write, reload, and a broken file.
	out, _ = run(0, "write")
	has("write", out, "write: ok")
	if data, _ := os.ReadFile(x.e.file); !strings.Contains(string(data), "weight = 3") {
		t.Errorf("written file:\n%s", data)
	}
	out, _ = run(0, "reload")
	has("reload", out, "reload: ok")
	putFile(t, x.e.file, []byte(x.cfg+"bogus = 1\n"))
	_, errs = run(1, "reload")
	has("broken reload", errs, "reload rejected", "config.toml:", "bogus")
	out, _ = run(0, "servers")
	has("servers after the rejected reload", out, "weight 3")

	out, _ = run(0, "url")
	has("url", out, "https://"+x.apiAddr.String()+"/", sec.Fingerprint)
	out, _ = run(0, "help")
	has("help", out, "status", "backend", "config", "write", "reload", "url", "pen")

	// The wrong token, another instance's certificate.
	bad := filepath.Join(t.TempDir(), "bad.token")
	putFile(t, bad, []byte(strings.Repeat("0", 64)))
	var o, e bytes.Buffer
	if code := penctl.Main([]string{"-config", cfgFile, "-token-file", bad, "status"}, &o, &e); code != penctl.ExitConnect || !strings.Contains(e.String(), "token") {
		t.Errorf("wrong token: exit %d\n%s", code, e.String())
	}
	other, err := control.EnsureSecrets(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Reset()
	e.Reset()
	if code := penctl.Main([]string{"-config", cfgFile, "-fingerprint", other.Fingerprint, "status"}, &o, &e); code != penctl.ExitConnect ||
		!strings.Contains(e.String(), other.Fingerprint) || !strings.Contains(e.String(), sec.Fingerprint) {
		t.Errorf("another instance's certificate: exit %d\n%s", code, e.String())
	}
}
