package lbd

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/netconfig"
)

// lbdBin is the program the tests run as lbd: a symlink named lbd to this
// test binary, which TestMain turns into lbd when it is started by that
// name (or with asLbdEnv set). No go build, and the code under test is
// exactly the code compiled into the test. (Not an environment variable for
// every child: go test -fuzz starts its workers from this binary too.)
var lbdBin string

func TestMain(m *testing.M) {
	// childEnv: lbd detaching itself (no -f) re-executes os.Executable().
	if os.Getenv(asLbdEnv) != "" || os.Getenv(childEnv) != "" || filepath.Base(os.Args[0]) == "lbd" {
		os.Exit(testBinaryAsLbd())
	}
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	dir, err := os.MkdirTemp("", "lbd-test")
	if err != nil {
		panic(err)
	}
	lbdBin = filepath.Join(dir, "lbd")
	if err := os.Symlink(exe, lbdBin); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func runLbd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(lbdBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, config.DefaultTOML(), 0o644)
	if out, errOut, code := runLbd(t, "-check", good); code != 0 {
		t.Fatalf("valid config: exit %d, %s%s", code, out, errOut)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[[service]]\nname = \"x\"\nlisten = \"127.0.0.1:80\"\nprotocl = \"tcp\"\n"), 0o644)
	_, errOut, code := runLbd(t, "-check", bad)
	if code != 1 {
		t.Fatalf("invalid config: exit %d, want 1", code)
	}
	if !strings.Contains(errOut, "bad.toml:4:") || !strings.Contains(errOut, "protocl") {
		t.Fatalf("error does not name file:line and key: %q", errOut)
	}
}

func TestPrintTOMLParses(t *testing.T) {
	out, errOut, code := runLbd(t, "-print-toml", "-r", "-x", "100", "127.0.0.1:8080", "127.0.0.1:81", "127.0.0.1:82:10:20:3:1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	cfg, err := config.Parse("printed", []byte(out))
	if err != nil {
		t.Fatalf("printed TOML does not parse: %v\n%s", err, out)
	}
	s := cfg.Services[0]
	if s.Tracking || s.MaxConnections != 100 || len(s.Backends) != 2 || s.Backends[1].Max != 10 || s.Backends[1].Hard != 20 || s.Backends[1].Weight != 3 || s.Backends[1].Prio != 1 {
		t.Fatalf("printed config lost settings: %+v", s)
	}
}

// daemonProc is a running lbd started by a test.
type daemonProc struct {
	cmd  *exec.Cmd
	out  syncBuffer
	done chan error
}

func startLbd(t *testing.T, args ...string) *daemonProc {
	t.Helper()
	p, err := startCmd(t, exec.Command(lbdBin, args...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startCmd starts cmd as a daemonProc, killed when the test ends.
func startCmd(t *testing.T, cmd *exec.Cmd) (*daemonProc, error) {
	t.Helper()
	p := &daemonProc{cmd: cmd, done: make(chan error, 1)}
	p.cmd.Stderr = &p.out
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("lbd stderr:\n%s", p.logs())
		}
	})
	return p, nil
}

func (p *daemonProc) logs() string { return p.out.String() }

func (p *daemonProc) waitLog(t *testing.T, s string) {
	t.Helper()
	p.out.waitFor(t, s, 10*time.Second)
}

func writeTOML(t *testing.T, path string, cfg *config.Config) {
	t.Helper()
	b, err := config.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSignals(t *testing.T) {
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	listen := freePort(t)
	file := filepath.Join(t.TempDir(), "lbd.toml")
	writeTOML(t, file, oneService(listen, a))
	p := startLbd(t, "-config", file)
	p.waitLog(t, "started")
	_, held := greet(t, listen)

	writeTOML(t, file, oneService(listen, b))
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "reloaded "+file)
	if name, _ := greet(t, listen); name != "b" {
		t.Fatalf("after SIGHUP: %q, want b", name)
	}
	echoes(t, held, "kept")

	os.WriteFile(file, []byte("[[service]]\nname = 'web'\nlisten = 'nonsense'\n"), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "keeping the running config")
	if name, _ := greet(t, listen); name != "b" {
		t.Fatalf("after a bad SIGHUP: %q, want b", name)
	}

	held.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("SIGTERM exit: %v", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("lbd did not exit on SIGTERM")
	}
}

// Without -f, lbd detaches like Pen, but only returns once it serves, and
// reports a startup failure with a non-zero exit.
func TestBackgroundStart(t *testing.T) {
	a := namedBackend(t, "a")
	listen := freePort(t)
	pidFile := filepath.Join(t.TempDir(), "lbd.pid")
	_, errOut, code := runLbd(t, "-p", pidFile, listen.String(), a.String())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || pid == os.Getpid() {
		t.Fatalf("pid file holds %q", b)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	name, c := greet(t, listen)
	if name != "a" {
		t.Fatalf("background lbd answered %q", name)
	}
	c.Close() // or SIGTERM would wait shutdownGrace for it (TestShutdownGrace)
	// Same port again: the second start must fail loudly.
	_, errOut, code = runLbd(t, listen.String(), a.String())
	if code == 0 || !strings.Contains(errOut, "address already in use") {
		t.Fatalf("second start on a busy port: exit %d, %q", code, errOut)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(8 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatal("background lbd did not stop on SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file left behind after a clean exit")
	}
}

// -dsr-path and LBD_DSR_PATH take auto, xdp, xdp-generic or packet;
// anything else is a usage error before anything starts.
func TestDSRPathChecked(t *testing.T) {
	if _, stderr, code := runLbd(t, "-config", "/nonexistent.toml", "-dsr-path", "ebpf"); code != 2 || !strings.Contains(stderr, "want auto, xdp, xdp-generic or packet") {
		t.Errorf("-dsr-path ebpf: exit %d, %s", code, stderr)
	}
	for _, p := range []string{"auto", "xdp", "xdp-generic", "packet"} {
		// Accepted: lbd gets as far as the missing config file.
		if _, stderr, code := runLbd(t, "-config", "/nonexistent.toml", "-dsr-path", p); code == 0 || strings.Contains(stderr, "-dsr-path") || !strings.Contains(stderr, "nonexistent.toml") {
			t.Errorf("-dsr-path %s: exit %d, %s", p, code, stderr)
		}
	}
	t.Setenv("LBD_DSR_PATH", "fast")
	for _, args := range [][]string{{"-check", "/nonexistent.toml"}, {"-f", "127.0.0.1:0", "127.0.0.1:1"}} {
		if _, stderr, code := runLbd(t, args...); code != 2 || !strings.Contains(stderr, "LBD_DSR_PATH") {
			t.Errorf("LBD_DSR_PATH=fast %v: exit %d, %s", args, code, stderr)
		}
	}
}

// netconfig finds -config and -state among the appliance's lbd arguments
// without lbd's flag set; its list of flags that take no value must be
// lbd's, or a flag before -config would swallow it.
func TestNetconfigKnowsLbdFlags(t *testing.T) {
	fs, _ := nativeFlags("auto")
	fs.VisitAll(func(f *flag.Flag) {
		b, ok := f.Value.(interface{ IsBoolFlag() bool })
		isBool := ok && b.IsBoolFlag()
		if netconfig.IsBoolFlag(f.Name) != isBool {
			t.Errorf("-%s: netconfig.IsBoolFlag %t, lbd's flag takes no value: %t", f.Name, !isBool, isBool)
		}
	})
}
