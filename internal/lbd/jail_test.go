package lbd

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func needRootForJail(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("chroot and -u need root, and CI runs as root")
		}
		t.Skip("chroot and -u need root")
	}
}

// The seed's jail line, `pen -u pen -j /var/lib/pen -C 10080 -F
// /etc/pen.cfg -p /tmp/pen.pid 8080`: the -F file, the pid file and the
// request log are inside the jail, as in Pen; SIGHUP re-reads the -F file
// inside it.
func TestPenJailPaths(t *testing.T) {
	needRootForJail(t)
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	listen := freePort(t)
	jail := t.TempDir()
	os.Chmod(jail, 0o755)
	os.MkdirAll(filepath.Join(jail, "etc"), 0o755)
	os.MkdirAll(filepath.Join(jail, "tmp"), 0o1777)
	os.Chmod(filepath.Join(jail, "tmp"), 0o1777)
	cfg := filepath.Join(jail, "etc", "pen.cfg")
	write := func(addr string) {
		host, port, _ := strings.Cut(addr, ":")
		os.WriteFile(cfg, []byte("server 0 address "+host+" port "+port+"\n"), 0o644)
	}
	write(a.String())
	// No /etc/pen.cfg outside the jail is involved: the path only exists
	// inside it (unless the host has one, which must not be read).
	if _, err := os.Stat("/etc/pen.cfg"); err == nil {
		t.Log("/etc/pen.cfg exists on this host; the test still checks lbd read the jail's")
	}
	p := startLbd(t, "-f", "-u", "nobody", "-j", jail, "-F", "/etc/pen.cfg", "-p", "/tmp/pen.pid", "-l", "/tmp/pen.log", listen.String())
	p.waitLog(t, "started")
	if name, c := greet(t, listen); name != "a" {
		t.Fatalf("served by %q, want a (the jail's -F file)", name)
	} else {
		c.Close()
	}
	pid, err := os.ReadFile(filepath.Join(jail, "tmp", "pen.pid"))
	if err != nil {
		t.Fatalf("pid file inside the jail: %v", err)
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(string(pid))); n != p.cmd.Process.Pid {
		t.Errorf("pid file holds %q, want %d", pid, p.cmd.Process.Pid)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(jail, "tmp", "pen.log"))
		if strings.Contains(string(b), "127.0.0.1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request log inside the jail is %q", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The process runs as nobody.
	st, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	if err != nil || !strings.Contains(string(st), "\nUid:\t65534\t65534\t65534\t65534") {
		t.Errorf("lbd does not run as nobody:\n%s", st)
	}

	write(b.String())
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "reloaded /etc/pen.cfg")
	if name, c := greet(t, listen); name != "b" {
		t.Fatalf("after SIGHUP served by %q, want b", name)
	} else {
		c.Close()
	}
}

// A pid file that cannot be written is a startup error, reported with the
// reason, not a line in a log nobody reads.
func TestPenPidFileUnwritable(t *testing.T) {
	needRootForJail(t)
	a := namedBackend(t, "a")
	dir := t.TempDir()
	os.Chmod(dir, 0o755) // root's: nobody cannot create files here
	for _, args := range [][]string{
		{"-f", "-u", "nobody", "-p", filepath.Join(dir, "pen.pid")},
		{"-u", "nobody", "-p", filepath.Join(dir, "pen.pid")}, // detached: the parent reports it
		{"-f", "-j", dir, "-p", "/missing/pen.pid"},
	} {
		listen := freePort(t)
		_, errOut, code := runLbd(t, append(args, listen.String(), a.String())...)
		if code == 0 || !strings.Contains(errOut, "pid file") {
			t.Errorf("lbd %v: exit %d, stderr %q; want a non-zero exit naming the pid file", args, code, errOut)
		}
	}
}
