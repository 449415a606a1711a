package penctl

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/needs"
)

// TestDebianPen drives Debian's pen through nib's penctl in Pen's
// positional form (Unix socket), and compares the replies with Debian's
// penctl's, byte for byte.
func TestDebianPen(t *testing.T) {
	penBin := needs.Tool(t, "pen")
	penctlBin := needs.Tool(t, "penctl")
	dir, err := os.MkdirTemp("", "penctl") // short: a socket path has ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctl := filepath.Join(dir, "ctl")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()

	ctx, cancel := context.WithCancel(context.Background())
	args := []string{"-f", "-C", ctl}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // pen refuses -C as root without -u
	}
	args = append(args, "127.0.0.1:"+strconv.Itoa(port), "127.0.0.1:1", "127.0.0.1:2")
	cmd := exec.CommandContext(ctx, penBin, args...)
	out, err := os.Create(filepath.Join(dir, "pen.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })

	ours := func(words ...string) result { return runWith(nil, append([]string{ctl}, words...)...) }
	for deadline := time.Now().Add(10 * time.Second); ; {
		if r := ours("mode"); r.code == 0 && r.stdout != "" {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(out.Name())
			t.Fatalf("pen's control socket did not come up; pen's output:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, words := range [][]string{
		{"mode"}, {"servers"}, {"server", "1", "weight", "3"}, {"servers"}, {"recent"},
		{"blacklist"}, {"blacklist", "45"}, {"blacklist"}, {"clients_max"}, {"conn_max"}, {"control"},
		{"debug"}, {"hash"}, {"mode"}, {"no", "hash"}, {"tracking"}, {"timeout"}, {"idle_timeout"},
		{"server", "0", "blacklist", "10"}, {"servers"}, {"nosuchverb"},
	} {
		r := ours(words...)
		theirs, err := exec.Command(penctlBin, append([]string{ctl}, words...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("Debian's penctl %v: %v\n%s", words, err, theirs)
		}
		if r.code != 0 || r.stdout != string(theirs) {
			t.Errorf("penctl %v: exit %d, %q (stderr %q); Debian's penctl: %q", words, r.code, r.stdout, r.stderr, theirs)
		}
	}
}
