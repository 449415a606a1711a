package lbd

import (
	"bytes"
	"errors"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/pen"
	"github.com/nib-lb/nib/internal/syncbuf"
	"github.com/nib-lb/nib/internal/tcptest"
)

// namedBackend answers every connection with its name, then echoes.
func namedBackend(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	return tcptest.Serve(t, func(c net.Conn) {
		io.WriteString(c, name+"\n")
		io.Copy(c, c)
	})
}

func freePort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func oneService(listen netip.AddrPort, backends ...netip.AddrPort) *config.Config {
	s := config.NewService("web", listen, config.TCP)
	s.Tracking = false
	for _, b := range backends {
		s.Backends = append(s.Backends, config.NewBackend(b))
	}
	return &config.Config{Services: []config.Service{s}}
}

func newDaemon(t *testing.T, cfg *config.Config) (*Daemon, *syncBuffer) {
	t.Helper()
	var logs syncBuffer
	d := New(log.New(&logs, "", 0))
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d, &logs
}

// syncBuffer collects output written from several goroutines (a logger, a
// child process) for the test to read and wait on.
type syncBuffer struct{ syncbuf.Buffer }

func (s *syncBuffer) waitFor(t *testing.T, what string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(s.String(), what) {
		if time.Now().After(deadline) {
			t.Fatalf("lbd never logged %q", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// greet connects and returns the backend's name line, keeping the
// connection open for the caller.
func greet(t *testing.T, addr netip.AddrPort) (string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no greeting: %v", err)
	}
	return strings.TrimSpace(string(buf[:n])), c
}

func echoes(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo %q: got %q, %v", msg, buf, err)
	}
}

func TestReloadKeepsEstablishedConnections(t *testing.T) {
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	listen := freePort(t)
	d, _ := newDaemon(t, oneService(listen, a))
	name, held := greet(t, listen)
	if name != "a" {
		t.Fatalf("first backend %q", name)
	}
	if err := d.Apply(oneService(listen, b)); err != nil {
		t.Fatal(err)
	}
	echoes(t, held, "still here") // the connection to a survives
	if name, _ := greet(t, listen); name != "b" {
		t.Fatalf("after reload new connections go to %q, want b", name)
	}
}

func TestInvalidReloadKeepsRunningConfig(t *testing.T) {
	a := namedBackend(t, "a")
	listen := freePort(t)
	d, _ := newDaemon(t, oneService(listen, a))
	bad := oneService(listen, a)
	bad.Services = append(bad.Services, bad.Services[0]) // duplicate name
	if err := d.Apply(bad); err == nil {
		t.Fatal("duplicate service accepted")
	}
	if name, _ := greet(t, listen); name != "a" {
		t.Fatalf("after a rejected reload: %q", name)
	}
	// A new service whose port is taken fails as a whole.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	conflict := oneService(listen, a)
	s2 := config.NewService("other", busy.Addr().(*net.TCPAddr).AddrPort(), config.TCP)
	s2.Backends = []config.Backend{config.NewBackend(a)}
	conflict.Services = append(conflict.Services, s2)
	conflict.Services[0].Backends[0].Weight = 7
	if err := d.Apply(conflict); err == nil {
		t.Fatal("reload with a busy port accepted")
	}
	if got := d.Config().Services; len(got) != 1 || got[0].Backends[0].Weight != 1 {
		t.Fatalf("running config changed by a failed reload: %+v", got)
	}
	if name, _ := greet(t, listen); name != "a" {
		t.Fatalf("after a failed reload: %q", name)
	}
}

func TestRemovedServiceStopsAcceptingKeepsConnections(t *testing.T) {
	a := namedBackend(t, "a")
	l1, l2 := freePort(t), freePort(t)
	cfg := oneService(l1, a)
	s2 := config.NewService("second", l2, config.TCP)
	s2.Backends = []config.Backend{config.NewBackend(a)}
	cfg.Services = append(cfg.Services, s2)
	d, _ := newDaemon(t, cfg)
	_, held := greet(t, l2)
	if err := d.Apply(oneService(l1, a)); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", l2.String(), time.Second); err == nil {
		c.Close()
		t.Fatal("removed service still accepts")
	}
	echoes(t, held, "ok")
}

// penCommand sends one Pen control command and returns the reply.
func penCommand(t *testing.T, addr, cmd string) string {
	t.Helper()
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		network = "unix"
	}
	c, err := net.DialTimeout(network, addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, cmd+"\n")
	b, _ := io.ReadAll(c)
	return string(b)
}

func TestPenControl(t *testing.T) {
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	listen := freePort(t)
	cfg := oneService(listen, a, b)
	ctl := t.TempDir() + "/ctl"
	cfg.Control.PenListen = ctl
	newDaemon(t, cfg)

	// An idle control client blocks neither traffic nor other clients.
	idle, err := net.Dial("unix", ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if name, _ := greet(t, listen); name != "b" {
		t.Fatalf("round-robin starts at server 1; got %q", name)
	}
	if got := penCommand(t, ctl, "mode"); got != "no hash roundrobin no stubborn no weight no prio\n" {
		t.Fatalf("mode: %q", got)
	}
	// Blacklisting server 1 sends everyone to server 0.
	if got := penCommand(t, ctl, "server 1 blacklist 60"); got != "" {
		t.Fatalf("blacklist replied %q", got)
	}
	for range 3 {
		if name, _ := greet(t, listen); name != "a" {
			t.Fatalf("with server 1 blacklisted got %q", name)
		}
	}
	// A config verb changes the running config.
	penCommand(t, ctl, "server 0 weight 5")
	if w := penCommand(t, ctl, "servers"); !strings.Contains(w, "0 addr 127.0.0.1 port "+itoa(a.Port())+" conn ") || !strings.Contains(w, "weight 5 prio 0") {
		t.Fatalf("servers after weight change: %q", w)
	}
	if got := penCommand(t, ctl, "bogus"); !strings.Contains(got, "ignoring command starting with 'bogus'") {
		t.Fatalf("bogus: %q", got)
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

func TestPenControlACL(t *testing.T) {
	a := namedBackend(t, "a")
	cfg := oneService(freePort(t), a)
	ctlAddr := freePort(t)
	cfg.Control.PenListen = ctlAddr.String()
	cfg.Control.PenACL = "ctl"
	cfg.ACLs = map[string]config.ACL{"ctl": {Rules: []config.Rule{{Action: config.Permit, Prefix: netip.MustParsePrefix("127.0.0.2/32")}}}}
	newDaemon(t, cfg)
	if got := penCommand(t, ctlAddr.String(), "mode"); got != "" {
		t.Fatalf("denied client got %q", got)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", ctlAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "mode\n")
	got, _ := io.ReadAll(c)
	if !strings.Contains(string(got), "roundrobin") {
		t.Fatalf("permitted client got %q", got)
	}
}

// Our penctl client against our control listener, as Debian's penctl is
// used against it in internal/compat.
func TestPenSendClient(t *testing.T) {
	a := namedBackend(t, "a")
	cfg := oneService(freePort(t), a)
	ctl := t.TempDir() + "/ctl"
	cfg.Control.PenListen = ctl
	newDaemon(t, cfg)
	var out bytes.Buffer
	if err := pen.Send(ctl, []string{"server", "0", "weight", "3"}, &out); err != nil || out.Len() != 0 {
		t.Fatalf("server 0 weight 3: %q, %v", out.String(), err)
	}
	if err := pen.Send(ctl, []string{"servers"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), " weight 3 prio 0 ") {
		t.Fatalf("servers: %q", out.String())
	}
	if err := pen.Send(t.TempDir()+"/none", []string{"mode"}, &out); err == nil {
		t.Fatal("no error for a missing socket")
	}
}

// With a TOML config, the write verb saves the running config there,
// atomically and owner-only, and the result reloads to the same config.
func TestPenWriteSavesTOML(t *testing.T) {
	a := namedBackend(t, "a")
	cfg := oneService(freePort(t), a)
	dir := t.TempDir()
	cfg.Control.PenListen = dir + "/ctl"
	d, _ := newDaemon(t, cfg)
	d.TOMLFile = dir + "/lbd.toml"
	if got := penCommand(t, cfg.Control.PenListen, "server 0 weight 9"); got != "" {
		t.Fatalf("weight: %q", got)
	}
	if got := penCommand(t, cfg.Control.PenListen, "write"); got != "" {
		t.Fatalf("write: %q", got)
	}
	st, err := os.Stat(d.TOMLFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("saved with mode %v, want 0600", st.Mode().Perm())
	}
	back, err := config.Load(d.TOMLFile)
	if err != nil {
		t.Fatal(err)
	}
	if back.Services[0].Backends[0].Weight != 9 {
		t.Fatalf("saved config lost the change: %+v", back.Services[0].Backends[0])
	}
	// Over the control socket no other path may be written.
	if got := penCommand(t, cfg.Control.PenListen, "write "+dir+"/other"); !strings.Contains(got, "only the -F file") {
		t.Fatalf("write to another path: %q", got)
	}
	if _, err := os.Stat(dir + "/other"); err == nil {
		t.Fatal("control client wrote an arbitrary file")
	}
	// Without a -F file, "." used to pass the path check (Clean("") is ".").
	for _, p := range []string{".", "./", dir + "/sub/.."} {
		if got := penCommand(t, cfg.Control.PenListen, "write "+p); !strings.Contains(got, "refused") {
			t.Fatalf("write %s: %q", p, got)
		}
	}
}

// Shutdown stops accepting at once, lets an open connection work on for up
// to the grace period, and returns as soon as the last one ends; one that
// outlives the grace is cut.
func TestShutdownGrace(t *testing.T) {
	a := namedBackend(t, "a")
	listen := freePort(t)
	for _, tc := range []struct {
		name  string
		close bool // the client ends its connection during the grace
	}{{"ends in time", true}, {"outlives the grace", false}} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := newDaemon(t, oneService(listen, a))
			_, held := greet(t, listen)
			const grace = 3 * time.Second
			done := make(chan struct{})
			start := time.Now()
			go func() {
				d.Shutdown(grace)
				close(done)
			}()
			deadline := time.Now().Add(time.Second)
			for {
				c, err := net.DialTimeout("tcp", listen.String(), time.Second)
				if err != nil {
					break // the listener is closed
				}
				c.Close()
				if time.Now().After(deadline) {
					t.Fatal("still accepting a second after Shutdown began")
				}
				time.Sleep(10 * time.Millisecond)
			}
			echoes(t, held, "during the grace")
			select {
			case <-done:
				t.Fatalf("Shutdown returned after %v with a connection open", time.Since(start))
			default:
			}
			if tc.close {
				closed := time.Now()
				held.Close()
				select {
				case <-done:
					if el := time.Since(closed); el > grace/2 {
						t.Errorf("Shutdown returned %v after the last connection ended; want it at once", el)
					}
				case <-time.After(grace + 5*time.Second):
					t.Fatal("Shutdown did not return")
				}
				return
			}
			select {
			case <-done:
				if el := time.Since(start); el < grace {
					t.Errorf("Shutdown returned after %v, before the %v grace", el, grace)
				}
			case <-time.After(grace + 5*time.Second):
				t.Fatal("Shutdown did not return after the grace")
			}
			held.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := held.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("connection after the grace: read %v; want it cut", err)
			}
		})
	}
}
