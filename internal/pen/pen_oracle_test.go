package pen

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/needs"
)

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// penctl sends one command to Pen's Unix control socket and returns the
// reply, which ends when Pen closes the connection.
func penctl(t *testing.T, ctl, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", ctl, 2*time.Second)
	if err != nil {
		t.Fatalf("penctl %s: %v", cmd, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("penctl %s: %v", cmd, err)
	}
	return string(b)
}

// TestPenOracle runs Debian's pen on 127.0.0.1 with a Unix control socket
// and compares its replies byte for byte with the interpreter's for the
// same command line.
//
// Left out because the values legitimately differ: pid (another process),
// conn_max (nib's default is 4096, Pen's 500), exit (it would stop pen),
// and status/recent (live state). Server 0 is given an explicit weight 0 on
// nib's side: Pen's default weight is 0, nib's is 1.
func TestPenOracle(t *testing.T) {
	penBin := needs.Tool(t, "pen")
	dir := t.TempDir()
	ctl := filepath.Join(dir, "x.ctl")
	pidFile := filepath.Join(dir, "pen.pid")
	port, p1, p2 := freePort(t), freePort(t), freePort(t)
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	s1 := fmt.Sprintf("127.0.0.1:%d", p1)
	s2 := fmt.Sprintf("127.0.0.1:%d:10:20:2:1", p2)

	args := []string{"-f", "-X", "-C", ctl, "-p", pidFile}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // pen refuses the control port as root otherwise
	}
	cmd := exec.Command(penBin, append(args, listen, s1, s2)...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill() // by pid: the process we started
		cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("unix", ctl); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pen did not open %s: %s", ctl, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := penctl(t, ctl, "pid"); got != strconv.Itoa(cmd.Process.Pid)+"\n" {
		t.Fatalf("pen pid = %q, want %d", got, cmd.Process.Pid)
	}

	inv, err := ParseArgs([]string{"-f", "-X", "-C", ctl, "-p", pidFile, listen, s1 + ":0:0:0", s2})
	if err != nil {
		t.Fatal(err)
	}
	in := &Interp{Cfg: inv.Config}

	compare := func(cmds ...string) {
		t.Helper()
		for _, c := range cmds {
			want := penctl(t, ctl, c)
			var b bytes.Buffer
			if _, err := in.Exec(c, &b); err != nil {
				t.Errorf("%q: our error %v; pen said %q", c, err, want)
				continue
			}
			if got := b.String(); got != want {
				t.Errorf("%q:\n pen %q\n nib %q", c, want, got)
			}
		}
	}
	queries := []string{"mode", "servers", "blacklist", "timeout", "tracking", "idle_timeout", "clients_max",
		"debug", "client_acl", "control_acl", "tarpit_acl", "listen", "control", "log", "web_stats", "status",
		"idlers", "tcp_fastclose", "bogus", "bogus x y", "no bogus", "# comment", "mode\nservers"}
	compare(queries...)

	// The same changes on both sides; setting verbs echo like Pen's. Pen
	// keeps each algorithm flag separately; nib keeps the one that wins
	// (prio > weight > hash), so mode is compared with one flag set at a
	// time (see VERBS.md).
	compare("hash", "mode", "roundrobin", "mode", "stubborn", "mode", "no hash", "mode",
		"weight", "mode", "no weight", "prio", "mode", "no prio", "mode")
	compare("weight", "server 1 max 5 hard 6 weight 3 prio 2",
		"server 0 weight 4", "tracking 7", "timeout 4", "blacklist 9", "idle_timeout 11", "clients_max 4096",
		"acl 1 permit 127.0.0.1", "client_acl 1", "control_acl 0", "debug 1", "no stubborn", "no roundrobin",
		"server 2 address 127.0.0.1 port "+strconv.Itoa(freePort(t))+" weight 0")
	compare(queries...)

	// A file written by pen reads back to the same state.
	written := filepath.Join(dir, "written.cfg")
	if got := penctl(t, ctl, "write "+written); got != "" {
		t.Fatalf("pen write: %q", got)
	}
	fresh, err := ParseArgs([]string{"-f", "-X", "-C", ctl, "-p", pidFile, listen, s1, s2})
	if err != nil {
		t.Fatal(err)
	}
	in = &Interp{Cfg: fresh.Config}
	if _, err := in.ExecFile(written, io.Discard); err != nil {
		b, _ := os.ReadFile(written)
		t.Fatalf("reading pen's written file: %v\n%s", err, b)
	}
	// Pen writes per-server weight and prio only when that algorithm is
	// on, so only compare what the file carries.
	compare("mode", "blacklist", "timeout", "tracking", "client_acl", "control_acl", "debug")
}
