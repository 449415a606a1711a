package lbd

import (
	"bytes"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/config"
)

// quietDaemon applies cfg to a daemon whose Close the test calls itself: a
// Close that deadlocks must fail the test, not hang its cleanup.
func quietDaemon(t *testing.T, cfg *config.Config) *Daemon {
	t.Helper()
	d := New(log.New(io.Discard, "", 0))
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	return d
}

// dialControl connects to a Unix control socket and gives lbd's control
// goroutine time to take the connection and wait for its command.
func dialControl(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	time.Sleep(50 * time.Millisecond)
	return c
}

// whileLocked returns once another goroutine holds d.mu (and still holds it
// a moment later) or done is closed: the moment a control command arriving
// has to wait for whoever holds the lock.
func whileLocked(d *Daemon, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		default:
		}
		if d.mu.TryLock() {
			d.mu.Unlock()
			time.Sleep(time.Millisecond)
			continue
		}
		time.Sleep(20 * time.Millisecond)
		if !d.mu.TryLock() {
			return
		}
		d.mu.Unlock()
	}
}

// An idle control client (connected, nothing sent) does not hold up Close
// until its read deadline: Close disconnects it.
func TestCloseWithIdleControlClient(t *testing.T) {
	cfg := oneService(freePort(t), namedBackend(t, "a"))
	cfg.Control.PenListen = t.TempDir() + "/ctl"
	d := quietDaemon(t, cfg)
	idle := dialControl(t, cfg.Control.PenListen)
	done := make(chan struct{})
	start := time.Now()
	go func() { d.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatalf("Close still waiting for an idle control client after 2s (read deadline is %v)", penReadTimeout)
	}
	t.Logf("Close took %v", time.Since(start))
	idle.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle control client after Close: read %d, %v; want EOF", n, err)
	}
}

// A control client whose command arrives while Close runs must not
// deadlock Close (the client's goroutine waits for the daemon lock that
// Close held while waiting for that goroutine).
func TestCloseWithControlClientMidCommand(t *testing.T) {
	cfg := oneService(freePort(t), namedBackend(t, "a"))
	cfg.Control.PenListen = t.TempDir() + "/ctl"
	d := quietDaemon(t, cfg)
	c := dialControl(t, cfg.Control.PenListen)
	done := make(chan struct{})
	go func() { d.Close(); close(done) }()
	whileLocked(d, done)
	io.WriteString(c, "server 0 weight 5\n") // may fail: Close may have hung up already
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Close deadlocked with a control client mid-command")
	}
	// The client is answered or disconnected, never left hanging.
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(c); err != nil && !isReset(err) {
		t.Fatalf("control client after Close: %v", err)
	}
	// A closed daemon runs no more commands and takes no new config.
	var out bytes.Buffer
	d.ExecPen("server 0 weight 7", &out, false)
	if !strings.Contains(out.String(), "shutting down") {
		t.Fatalf("command after Close: %q", out.String())
	}
	if err := d.Apply(cfg); err == nil {
		t.Fatal("Apply after Close succeeded")
	}
	if c, err := net.DialTimeout("tcp", cfg.Services[0].Listen.String(), time.Second); err == nil {
		c.Close()
		t.Fatal("service still listening after Close")
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// Moving the control socket while a client of the old one is mid-command:
// Apply returns at once and the client's command still runs to the end.
func TestApplyMovesControlWithClientMidCommand(t *testing.T) {
	cfg := oneService(freePort(t), namedBackend(t, "a"))
	dir := t.TempDir()
	cfg.Control.PenListen = dir + "/ctl1"
	d := quietDaemon(t, cfg)
	c := dialControl(t, cfg.Control.PenListen)
	moved := cfg.Clone()
	moved.Control.PenListen = dir + "/ctl2"
	errc := make(chan error, 1)
	done := make(chan struct{})
	go func() { errc <- d.Apply(moved); close(done) }()
	whileLocked(d, done)
	if _, err := io.WriteString(c, "server 0 weight 5\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Apply deadlocked with a control client mid-command")
	}
	t.Cleanup(d.Close)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if got, err := io.ReadAll(c); err != nil || len(got) != 0 {
		t.Fatalf("mid-command client of the old socket: %q, %v", got, err)
	}
	if w := d.Config().Services[0].Backends[0].Weight; w != 5 {
		t.Fatalf("weight %d after the old socket's command, want 5", w)
	}
	if got := penCommand(t, moved.Control.PenListen, "mode"); !strings.Contains(got, "roundrobin") {
		t.Fatalf("new control socket: %q", got)
	}
	if _, err := os.Lstat(cfg.Control.PenListen); !os.IsNotExist(err) {
		t.Fatalf("old control socket left behind: %v", err)
	}
}

// The control ACL is read from a snapshot that a reload replaces: a kept
// control listener enforces the new ACL at once.
func TestPenControlACLFollowsReload(t *testing.T) {
	cfg := oneService(freePort(t), namedBackend(t, "a"))
	ctl := freePort(t).String()
	cfg.Control.PenListen = ctl
	d, _ := newDaemon(t, cfg)
	if got := penCommand(t, ctl, "mode"); !strings.Contains(got, "roundrobin") {
		t.Fatalf("no ACL: %q", got)
	}
	deny := cfg.Clone()
	deny.Control.PenACL = "ctl"
	deny.ACLs = map[string]config.ACL{"ctl": {Rules: []config.Rule{{Action: config.Permit, Prefix: netip.MustParsePrefix("127.0.0.2/32")}}}}
	if err := d.Apply(deny); err != nil {
		t.Fatal(err)
	}
	if got := penCommand(t, ctl, "mode"); got != "" {
		t.Fatalf("client outside the new ACL got %q", got)
	}
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if got := penCommand(t, ctl, "mode"); !strings.Contains(got, "roundrobin") {
		t.Fatalf("ACL removed again: %q", got)
	}
}

// The control socket is born owner-only: never chmodded after bind (which
// leaves a window with the umask's permissions), whatever the umask.
func TestControlSocketCreatedOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	ino, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ino)
	if _, err := unix.InotifyAddWatch(ino, dir, unix.IN_CREATE|unix.IN_ATTRIB); err != nil {
		t.Fatal(err)
	}
	cfg := oneService(freePort(t), namedBackend(t, "a"))
	cfg.Control.PenListen = filepath.Join(dir, "ctl")
	old := syscall.Umask(0) // the worst case: bind alone would give 0777
	d := New(log.New(io.Discard, "", 0))
	err = d.Apply(cfg)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	st, err := os.Lstat(cfg.Control.PenListen)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %v, want socket 0600", st.Mode())
	}
	created := false
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(ino, buf)
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if name != "ctl" {
				continue
			}
			switch {
			case ev.Mask&unix.IN_ATTRIB != 0:
				t.Fatal("control socket's permissions were changed after it was created")
			case ev.Mask&unix.IN_CREATE != 0:
				created = true
			}
		}
	}
	if !created {
		t.Fatal("no inotify event for the socket's creation")
	}
	if got := penCommand(t, cfg.Control.PenListen, "mode"); !strings.Contains(got, "roundrobin") {
		t.Fatalf("control socket: %q", got)
	}
}
