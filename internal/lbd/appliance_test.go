package lbd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/needs"
)

// The appliance tests run the test binary itself as lbd (see TestMain), so
// that the built-in appliance default can be replaced: the real one listens
// on 0.0.0.0:80.
const (
	asLbdEnv    = "LBD_TEST_AS_LBD"      // set: this process is lbd
	defaultEnv  = "LBD_TEST_DEFAULT"     // file holding the built-in default to use
	retryEnv    = "LBD_TEST_APPLY_RETRY" // applyRetry
	readOnlyEnv = "LBD_TEST_READ_ONLY"   // directories to bind-mount read-only first
)

// mountFailed is the exit code of a test lbd that could not set up its
// read-only mounts.
const mountFailed = 99

// testBinaryAsLbd runs lbd.Main in a re-executed test binary.
func testBinaryAsLbd() int {
	if f := os.Getenv(defaultEnv); f != "" {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		applianceDefault = func() []byte { return bytes.Clone(data) }
	}
	if s := os.Getenv(retryEnv); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		applyRetry = d
	}
	if dirs := os.Getenv(readOnlyEnv); dirs != "" {
		// The test started this process in a mount namespace of its own.
		for dir := range strings.SplitSeq(dirs, ":") {
			if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
				fmt.Fprintf(os.Stderr, "bind mount %s: %v\n", dir, err)
				return mountFailed
			}
			if err := syscall.Mount("", dir, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
				fmt.Fprintf(os.Stderr, "read-only remount %s: %v\n", dir, err)
				return mountFailed
			}
		}
	}
	return Main(os.Args[1:], os.Stdout, os.Stderr)
}

// applianceEnv is one appliance-mode lbd's world: /perm in a temporary
// directory and a built-in default on free loopback ports.
type applianceEnv struct {
	perm, file, state string
	builtin           []byte
	welcome           string // URL of the built-in default's service
	retry             time.Duration
	readOnly          []string
	flags             []string // more lbd flags (-d)
}

func newApplianceEnv(t *testing.T) *applianceEnv {
	t.Helper()
	perm := filepath.Join(t.TempDir(), "perm")
	if err := os.Mkdir(perm, 0o755); err != nil {
		t.Fatal(err)
	}
	dummy, svc := freePort(t), freePort(t)
	builtin := fmt.Sprintf(`[[dummy]]
listen = "%s"
body = """
welcome
Config: {{config}}
Addresses: {{addresses}}
"""

[[service]]
name = "welcome"
listen = "%s"

[[service.backend]]
address = "%s"
`, dummy, svc, dummy)
	return &applianceEnv{
		perm:    perm,
		file:    filepath.Join(perm, "lbd", "config.toml"),
		state:   filepath.Join(perm, "lbd"),
		builtin: []byte(builtin),
		welcome: "http://" + svc.String() + "/",
		retry:   time.Hour,
	}
}

func (e *applianceEnv) lastGood() string { return filepath.Join(e.state, "last-good.toml") }

// command is the appliance-mode lbd command, not started.
func (e *applianceEnv) command(t *testing.T) *exec.Cmd {
	t.Helper()
	def := filepath.Join(t.TempDir(), "builtin.toml")
	if err := os.WriteFile(def, e.builtin, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], append([]string{"-config", e.file, "-state", e.state}, e.flags...)...)
	// GORACE: a race-enabled lbd would sleep a second before exiting.
	cmd.Env = append(os.Environ(), asLbdEnv+"=1", defaultEnv+"="+def, retryEnv+"="+e.retry.String(), "GORACE=atexit_sleep_ms=0")
	if len(e.readOnly) > 0 {
		cmd.Env = append(cmd.Env, readOnlyEnv+"="+strings.Join(e.readOnly, ":"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	}
	return cmd
}

// start runs lbd in appliance mode and waits until it serves.
func (e *applianceEnv) start(t *testing.T) *daemonProc {
	t.Helper()
	p, err := startCmd(t, e.command(t))
	if err != nil {
		if len(e.readOnly) > 0 && errors.Is(err, syscall.EPERM) {
			needs.Unmet(t, "no mount namespace: %v", err)
		}
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.logs(), "started (") {
		select {
		case err := <-p.done:
			p.done <- err
			if p.cmd.ProcessState.ExitCode() == mountFailed {
				needs.Unmet(t, "cannot mount read-only: %s", p.logs())
			}
			t.Fatalf("lbd exited during startup: %v\n%s", err, p.logs())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("lbd did not start:\n%s", p.logs())
		}
	}
	return p
}

// stop sends SIGTERM and returns lbd's exit code.
func (p *daemonProc) stop(t *testing.T) int {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	return p.wait(t)
}

// wait waits for lbd to exit and returns its exit code.
func (p *daemonProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(10 * time.Second):
		t.Fatal("lbd did not exit")
		return -1
	}
}

// userConfig is an operator's config: a dummy on a free port answering
// body.
func userConfig(t *testing.T, body string) ([]byte, string) {
	t.Helper()
	addr := freePort(t)
	return fmt.Appendf(nil, "[[dummy]]\nlisten = %q\nbody = %q\n", addr.String(), body), "http://" + addr.String() + "/"
}

// refused reports whether nothing listens at url's address any more.
func refused(url string) bool {
	c, err := net.DialTimeout("tcp", strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/"), time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

func putFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func wantFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("%s holds %q, want %q", path, got, data)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode() != mode {
		t.Errorf("%s: mode %v, want %v (%v)", path, fi.Mode(), mode, err)
	}
}

func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s lacks %q:\n%s", what, sub, s)
		}
	}
}

// First start: no config. lbd writes the appliance default (0600, in a
// directory it creates 0700), keeps it as last-good, serves it, and the
// welcome page shows the live facts.
func TestApplianceFirstStart(t *testing.T) {
	e := newApplianceEnv(t)
	p := e.start(t)
	wantFile(t, e.file, e.builtin, 0o600)
	wantFile(t, e.lastGood(), e.builtin, 0o600)
	if fi, err := os.Stat(e.state); err != nil || fi.Mode() != os.ModeDir|0o700 {
		t.Errorf("state directory: %v, %v", fi.Mode(), err)
	}
	page := httpGet(t, e.welcome)
	wantContains(t, "welcome page", page, "welcome\nConfig: "+e.file+"\nAddresses: ")
	if strings.Contains(page, "{{") {
		t.Errorf("placeholders left on the page:\n%s", page)
	}
	wantContains(t, "log", p.logs(), e.file+" was missing: wrote the appliance default")
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d, want 0", code)
	}
	// A second start serves the file as it is and rewrites nothing.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(e.lastGood(), old, old)
	e.start(t)
	wantContains(t, "welcome page", httpGet(t, e.welcome), "Config: "+e.file+"\n")
	if fi, _ := os.Stat(e.lastGood()); !fi.ModTime().Equal(old) {
		t.Errorf("an unchanged last-good was rewritten")
	}
}

// An empty config is invalid: it is reported, left alone, and with no
// last-good the built-in default serves from memory.
func TestApplianceEmptyConfig(t *testing.T) {
	e := newApplianceEnv(t)
	putFile(t, e.file, nil)
	p := e.start(t)
	wantContains(t, "log", p.logs(),
		e.file+" is invalid:",
		e.file+":1:1: service: no [[service]] or [[dummy]] defined",
		"there is no last good config",
		"serving the built-in appliance default from memory, because "+e.file+" is invalid")
	wantContains(t, "welcome page", httpGet(t, e.welcome),
		"Config: the built-in appliance default, from memory,\n    because "+e.file+" is invalid:\n    "+e.file+":1:1: ")
	wantFile(t, e.file, nil, 0o600)
	if _, err := os.Stat(e.lastGood()); !os.IsNotExist(err) {
		t.Errorf("the built-in default was kept as last-good: %v", err)
	}
}

// A broken config: the last good one serves; without a usable last-good, the
// built-in default from memory.
func TestApplianceBrokenConfig(t *testing.T) {
	e := newApplianceEnv(t)
	good, url := userConfig(t, "user v1\n")
	putFile(t, e.file, good)
	p := e.start(t)
	if got := httpGet(t, url); got != "user v1\n" {
		t.Fatalf("good config: %q", got)
	}
	wantFile(t, e.lastGood(), good, 0o600)
	p.stop(t)

	broken := []byte("[[dummy]]\nlisten = \"127.0.0.1:1\"\nbody = 7\n")
	putFile(t, e.file, broken)
	p = e.start(t)
	if got := httpGet(t, url); got != "user v1\n" {
		t.Fatalf("broken config: the last good one answers %q", got)
	}
	wantContains(t, "log", p.logs(), e.file+":3:8: ", "serving "+e.lastGood()+", the last good config, because "+e.file+" is invalid")
	if !refused(e.welcome) {
		t.Error("the built-in default serves too")
	}
	wantFile(t, e.lastGood(), good, 0o600)
	wantFile(t, e.file, broken, 0o600)
	p.stop(t)

	putFile(t, e.lastGood(), []byte("nonsense"))
	p = e.start(t)
	wantContains(t, "log", p.logs(), "the last good config is no good either", e.lastGood()+":1:")
	wantContains(t, "welcome page", httpGet(t, e.welcome), "the built-in appliance default, from memory,\n    because "+e.file+" is invalid:\n    "+e.file+":3:8: ")
	if !refused(url) {
		t.Error("the broken config's dummy answers")
	}
}

// A config that parses but cannot be applied (its port is taken) is
// reported, the fallback serves, and the config is retried until it applies;
// then it is kept as last-good.
func TestApplianceApplyErrorRetries(t *testing.T) {
	e := newApplianceEnv(t)
	e.retry = 100 * time.Millisecond
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	addr := held.Addr().(*net.TCPAddr).AddrPort()
	cfg := fmt.Appendf(nil, "[[dummy]]\nlisten = %q\nbody = \"mine\"\n", addr.String())
	putFile(t, e.file, cfg)
	p := e.start(t)
	wantContains(t, "log", p.logs(), e.file+" cannot be applied:", "address already in use", "trying "+e.file+" again every 100ms")
	wantContains(t, "welcome page", httpGet(t, e.welcome), "from memory,\n    because "+e.file+" cannot be applied:")
	if _, err := os.Stat(e.lastGood()); !os.IsNotExist(err) {
		t.Errorf("a config that did not apply was kept as last-good: %v", err)
	}
	held.Close()
	p.waitLog(t, "applied "+e.file+" (tried again)")
	if got := httpGet(t, "http://"+addr.String()+"/"); got != "mine" {
		t.Fatalf("after the retry: %q", got)
	}
	wantFile(t, e.lastGood(), cfg, 0o600)
	if !refused(e.welcome) {
		t.Error("the built-in default still serves")
	}
}

// A state directory that cannot be created (root ignores permission bits,
// so it lies under a regular file): the built-in default from memory, said
// in the log and on the page.
func TestApplianceStateUnderFile(t *testing.T) {
	e := newApplianceEnv(t)
	base := filepath.Join(e.perm, "file")
	putFile(t, base, []byte("x"))
	e.state = filepath.Join(base, "lbd")
	e.file = filepath.Join(e.state, "config.toml")
	p := e.start(t)
	wantContains(t, "log", p.logs(), "state directory "+e.state+" is not usable", "not a directory",
		"serving the built-in appliance default from memory, because cannot read "+e.file)
	wantContains(t, "welcome page", httpGet(t, e.welcome), "the built-in appliance default, from memory,\n    because cannot read "+e.file)
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}

// /perm not mounted: gokrazy leaves it an empty read-only directory. lbd
// cannot write its first config and serves the built-in default from memory.
func TestAppliancePermReadOnly(t *testing.T) {
	e := newApplianceEnv(t)
	e.readOnly = []string{e.perm}
	p := e.start(t)
	wantContains(t, "log", p.logs(), "state directory "+e.state+" is not usable", "read-only file system",
		"serving the built-in appliance default from memory, because "+e.file+" is missing and cannot be written")
	wantContains(t, "welcome page", httpGet(t, e.welcome),
		"Config: the built-in appliance default, from memory,\n    because "+e.file+" is missing and cannot be written: mkdir "+e.state+": read-only file system")
	if _, err := os.Stat(e.state); !os.IsNotExist(err) {
		t.Errorf("lbd wrote through the read-only mount: %v", err)
	}
}

// A read-only /perm that holds a valid config: the config serves (better
// than the welcome page), and the log and page say no last-good is kept.
func TestApplianceStateReadOnlyConfigServes(t *testing.T) {
	e := newApplianceEnv(t)
	cfg, url := userConfig(t, "{{config}}")
	putFile(t, e.file, cfg)
	e.readOnly = []string{e.perm}
	p := e.start(t)
	wantContains(t, "log", p.logs(), "state directory "+e.state+" is not usable, so no last good config is kept", "read-only file system")
	wantContains(t, "page", httpGet(t, url), e.file+"\n    (no last good config is kept: access "+e.state+": read-only file system)")
	if _, err := os.Stat(e.lastGood()); !os.IsNotExist(err) {
		t.Errorf("last-good written through a read-only mount: %v", err)
	}
}

// SIGHUP: a good config is applied and becomes last-good; a broken or empty
// one is rejected, the running one keeps serving, and last-good stays.
func TestApplianceSIGHUP(t *testing.T) {
	e := newApplianceEnv(t)
	v1, url := userConfig(t, "v1")
	putFile(t, e.file, v1)
	p := e.start(t)
	if got := httpGet(t, url); got != "v1" {
		t.Fatalf("v1: %q", got)
	}
	v2 := bytes.Replace(v1, []byte(`"v1"`), []byte(`"v2"`), 1)
	putFile(t, e.file, v2)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "reloaded "+e.file)
	if got := httpGet(t, url); got != "v2" {
		t.Fatalf("after SIGHUP: %q", got)
	}
	wantFile(t, e.lastGood(), v2, 0o600)

	for i, bad := range [][]byte{[]byte("[[dummy]]\nlisten = 'nonsense'\n"), nil} {
		putFile(t, e.file, bad)
		p.cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(p.logs(), "keeping the running config") < i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("bad config %d: no rejection logged", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := httpGet(t, url); got != "v2" {
			t.Fatalf("after a bad SIGHUP %d: %q", i, got)
		}
		wantFile(t, e.lastGood(), v2, 0o600)
	}
	wantContains(t, "log", p.logs(), e.file+":2:10: dummy[0].listen")
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}

// When not even the built-in default can be served, lbd exits non-zero, so
// that gokrazy restarts it.
func TestApplianceCannotStartExitsNonZero(t *testing.T) {
	e := newApplianceEnv(t)
	held, err := net.Listen("tcp", strings.TrimSuffix(strings.TrimPrefix(e.welcome, "http://"), "/"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	p, err := startCmd(t, e.command(t))
	if err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	wantContains(t, "log", p.logs(), "cannot serve even the built-in appliance default", "address already in use")
}

func TestStateNeedsConfig(t *testing.T) {
	_, errOut, code := runLbd(t, "-state", t.TempDir())
	if code != 2 || !strings.Contains(errOut, "-state needs -config") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
}

// Outside appliance mode {{config}} names the file.
func TestDummyFactsWithoutState(t *testing.T) {
	cfg, url := userConfig(t, "{{config}} {{version}} {{nope}}")
	file := filepath.Join(t.TempDir(), "lbd.toml")
	putFile(t, file, cfg)
	p := startLbd(t, "-config", file)
	p.waitLog(t, "started")
	if got := httpGet(t, url); got != file+" devel {{nope}}" {
		t.Fatalf("%q", got)
	}
}

// httpGet fetches url and returns the body; it fails the test on errors or a
// status other than 200. It keeps no connection open (lbd's SIGTERM waits
// for open connections).
func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// A reload that keeps a dummy's address but changes its body serves the new
// body (the listener is kept).
func TestReloadChangesDummyBody(t *testing.T) {
	addr := freePort(t)
	cfg := &config.Config{Dummies: []config.Dummy{{Listen: addr, Body: "one\n"}}}
	d, _ := newDaemon(t, cfg)
	url := "http://" + addr.String() + "/"
	if got := httpGet(t, url); got != "one\n" {
		t.Fatalf("before reload: %q", got)
	}
	cfg.Dummies[0].Body = "two\n"
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if got := httpGet(t, url); got != "two\n" {
		t.Fatalf("after reload: %q", got)
	}
}

// A reload's outcome is counted by its error: none is applied, an
// *applyError (a valid file that could not be applied) failed, anything
// else (the file is invalid) rejected.
func TestReloadCountsNote(t *testing.T) {
	var r reloadCounts
	r.note(nil)
	r.note(fmt.Errorf("reload: %w", &applyError{"lbd.toml", errors.New("address in use")}))
	r.note(errors.New("lbd.toml:3:1: bad"))
	r.note(errors.New("lbd.toml:4:1: bad"))
	want := map[string]uint64{"applied": 1, "failed": 1, "rejected": 2}
	if got := r.counts(); !maps.Equal(got, want) {
		t.Errorf("counts %v, want %v", got, want)
	}
}

// SIGHUP's re-read of -config counts its outcome like the appliance's and
// the API's reloads: applied, rejected (does not parse) or failed (parses,
// cannot be applied: the port is taken).
func TestSIGHUPReloadCounted(t *testing.T) {
	file := filepath.Join(t.TempDir(), "lbd.toml")
	svc := func(listen netip.AddrPort) []byte {
		return []byte(fmt.Sprintf("[[service]]\nname = \"web\"\nlisten = %q\n\n[[service.backend]]\naddress = \"127.0.0.1:9\"\n", listen))
	}
	putFile(t, file, svc(freePort(t)))
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	d, logs := newDaemon(t, cfg)
	inv := &invocation{tomlFile: file}
	logger := log.New(logs, "", 0)
	reload(d, inv, logger) // the same file: applied
	putFile(t, file, []byte("[[service]]\nname = 3\n"))
	reload(d, inv, logger) // rejected
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	putFile(t, file, svc(netip.MustParseAddrPort(taken.Addr().String())))
	reload(d, inv, logger) // failed
	want := map[string]uint64{"applied": 1, "rejected": 1, "failed": 1}
	if got := d.reloads.counts(); !maps.Equal(got, want) {
		t.Errorf("reloads %v, want %v\n%s", got, want, logs.String())
	}
}
