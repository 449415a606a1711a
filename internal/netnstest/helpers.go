package netnstest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// ServeHTTP serves handler with an http.Server listening on addr (e.g. ":80"
// or "198.51.100.100:80") inside h's namespace, and returns the address it
// listens on. The server is shut down in t.Cleanup (5 s grace, then closed).
func ServeHTTP(t testing.TB, h *Host, addr string, handler http.Handler) netip.AddrPort {
	t.Helper()
	ln, err := h.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("netnstest: %s: listen on %s: %v", h.name, addr, err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		select {
		case err := <-done:
			if !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("netnstest: %s: http server on %s: %v", h.name, ln.Addr(), err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("netnstest: %s: http server on %s did not stop", h.name, ln.Addr())
		}
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// A Neighbor is an entry of a host's neighbour (ARP) table.
type Neighbor struct {
	Addr  netip.Addr       // e.g. 198.51.100.100
	Dev   string           // "eth0"
	MAC   net.HardwareAddr // nil while unresolved
	State []string         // e.g. ["REACHABLE"], ["INCOMPLETE"], ["FAILED"]
}

// Has reports whether the entry is in state s (e.g. "FAILED").
func (n Neighbor) Has(s string) bool { return slices.Contains(n.State, s) }

// ARPEntries reads h's IPv4 neighbour table (`ip -4 -j neigh show`), e.g. to
// check that the client learned the VIP's MAC as lb's.
func ARPEntries(t testing.TB, h *Host) []Neighbor {
	t.Helper()
	out, err := command("ip", "-n", h.ns, "-4", "-j", "neigh", "show")
	if err != nil {
		t.Fatalf("netnstest: %s: %v", h.name, err)
	}
	var raw []struct {
		Dst    string   `json:"dst"`
		Dev    string   `json:"dev"`
		LLAddr string   `json:"lladdr"`
		State  []string `json:"state"`
	}
	if strings.TrimSpace(out) != "" {
		if err := json.Unmarshal([]byte(out), &raw); err != nil {
			t.Fatalf("netnstest: %s: parsing ip -j neigh show: %v\n%s", h.name, err, out)
		}
	}
	ns := make([]Neighbor, 0, len(raw))
	for _, r := range raw {
		a, err := netip.ParseAddr(r.Dst)
		if err != nil {
			t.Fatalf("netnstest: %s: neighbour %q: %v", h.name, r.Dst, err)
		}
		n := Neighbor{Addr: a, Dev: r.Dev, State: r.State}
		if r.LLAddr != "" {
			if n.MAC, err = net.ParseMAC(r.LLAddr); err != nil {
				t.Fatalf("netnstest: %s: neighbour %s: %v", h.name, r.Dst, err)
			}
		}
		ns = append(ns, n)
	}
	return ns
}

// ARPEntry returns the neighbour entry for a, if h has one.
func ARPEntry(t testing.TB, h *Host, a netip.Addr) (Neighbor, bool) {
	t.Helper()
	for _, n := range ARPEntries(t, h) {
		if n.Addr == a {
			return n, true
		}
	}
	return Neighbor{}, false
}

// helperEnv marks a process started by HelperCommand; its value is the name
// of the test to run.
const helperEnv = "NIB_NETNSTEST_HELPER"

// IsHelper reports whether this test binary was started by HelperCommand to
// run the test named name (pass t.Name()). A helper test skips itself unless
// IsHelper(t.Name()):
//
//	func TestHelperLBD(t *testing.T) {
//		if !netnstest.IsHelper(t.Name()) {
//			t.Skip("helper process of TestLinuxDSR")
//		}
//		...
//	}
func IsHelper(name string) bool { return name != "" && os.Getenv(helperEnv) == name }

// HelperCommand returns a command that re-executes the running test binary to
// run only the test named name (its t.Name(), subtests included), with env
// added to the environment. Use it for code that must run with a whole
// process inside a namespace (see Host.HelperCommand): Do moves one thread
// only.
//
// It avoids the usual re-exec pitfalls: the binary is os.Executable (not a
// relative os.Args[0]); -test.run is anchored per subtest level so no other
// test runs; the parent's -test flags (count, coverprofile, cpuprofile,
// parallel) are not passed on; -test.v is set so the output shows what
// failed; -test.timeout follows ctx's deadline (else 1 minute); GORACE gets
// atexit_sleep_ms=0 (a -race binary otherwise sleeps 1 s before exiting); and
// the marker variable makes a helper that calls HelperCommand again start the
// test it names, not itself.
func HelperCommand(ctx context.Context, t testing.TB, name string, env ...string) *exec.Cmd {
	t.Helper()
	exe, args := helperArgs(ctx, t, name)
	cmd := exec.CommandContext(ctx, exe, args...)
	helperEnvAndWait(cmd, name, env)
	return cmd
}

// HelperCommand is the package-level HelperCommand run under
// `ip netns exec NS`, so that the whole helper process (every thread it ever
// starts) lives in the host's namespace.
func (h *Host) HelperCommand(ctx context.Context, t testing.TB, name string, env ...string) *exec.Cmd {
	t.Helper()
	exe, args := helperArgs(ctx, t, name)
	cmd := h.Command(ctx, exe, args...)
	helperEnvAndWait(cmd, name, env)
	return cmd
}

func helperArgs(ctx context.Context, t testing.TB, name string) (string, []string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("netnstest: finding the test binary: %v", err)
	}
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	timeout := time.Minute
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
		if timeout < time.Second {
			timeout = time.Second
		}
	}
	return exe, []string{"-test.run=" + strings.Join(parts, "/"), "-test.count=1", "-test.v", "-test.timeout=" + timeout.String()}
}

func helperEnvAndWait(cmd *exec.Cmd, name string, env []string) {
	// A -race binary sleeps 1 s at exit (TSan's atexit_sleep_ms) unless told
	// otherwise.
	gorace := strings.TrimSpace(os.Getenv("GORACE"))
	if !strings.Contains(gorace, "atexit_sleep_ms") {
		gorace = strings.TrimSpace(gorace + " atexit_sleep_ms=0")
	}
	cmd.Env = append(append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, helperEnv+"=") || strings.HasPrefix(kv, "GORACE=")
	}), helperEnv+"="+name, "GORACE="+gorace), env...)
	cmd.WaitDelay = 5 * time.Second
}

// ServeTCP accepts connections on addr inside h's namespace and runs handle
// for each on its own goroutine (handle closes nothing: the connection is
// closed when it returns). The listener closes when the test ends or when
// stop is called; connections already accepted run on.
func ServeTCP(t testing.TB, h *Host, addr string, handle func(net.Conn)) (stop func()) {
	t.Helper()
	ln, err := h.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("netnstest: %s: listen on %s: %v", h.name, addr, err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	stop = func() { ln.Close() }
	t.Cleanup(stop)
	return stop
}

// NameEcho is a ServeTCP handler: the host's name on a line, then
// everything the connection sends echoed back.
func (h *Host) NameEcho(c net.Conn) {
	fmt.Fprintf(c, "%s\n", h.name)
	io.Copy(c, c)
}

// Names opens n connections from h to addr, each a new flow, and counts
// the first line each one reads: the backend's name, from NameEcho. A
// connection that fails or reads no line within 3 s counts as "error".
func (h *Host) Names(t testing.TB, addr string, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		c, err := h.Dial(ctx, "tcp", addr)
		cancel()
		if err != nil {
			seen["error"]++
			continue
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			seen["error"]++
			continue
		}
		seen[strings.TrimSpace(line)]++
	}
	return seen
}

// CountBytes is a ServeTCP handler: it reads until the peer's FIN, then
// answers with the number of bytes read, in decimal.
func CountBytes(c net.Conn) {
	n, _ := io.Copy(io.Discard, c)
	fmt.Fprintf(c, "%d", n)
}
