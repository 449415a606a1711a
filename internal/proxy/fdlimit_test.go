package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/netnstest"
)

// The descriptor-exhaustion test runs the proxy in a child process (this test
// binary, re-executed) whose RLIMIT_NOFILE it lowers on command, so that the
// test process itself keeps its limit. The parent runs the backend and the
// clients and talks to the child over its stdin and stdout:
//
//	parent -> child: "limit N" (leave N descriptors free), "stats", "exit"
//	child -> parent: "fdtest: proxy ADDR", "fdtest: ok", "fdtest: stats ...",
//	                 "fdtest: log: ..." (every service diagnostic)

const fdTestBackendEnv = "NIB_FDTEST_BACKEND"

// TestHelperFDLimitedProxy is the child of TestFDExhaustionBlamesNoBackend.
func TestHelperFDLimitedProxy(t *testing.T) {
	if !netnstest.IsHelper(t.Name()) {
		t.Skip("helper process of TestFDExhaustionBlamesNoBackend")
	}
	be := netip.MustParseAddrPort(os.Getenv(fdTestBackendEnv))
	var mu sync.Mutex
	out := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, "fdtest: "+format+"\n", args...)
	}
	pool := balance.New(balance.Options{Blacklist: 30 * time.Second, TrackingSize: 64}, []balance.Server{{Addr: be, Weight: 1}})
	svc := NewService(Options{Listen: freeAddr(t), ConnectTimeout: 2 * time.Second}, pool, func(format string, args ...any) {
		out("log: "+format, args...)
	})
	// One loop: the test counts descriptors exactly, and Linux's accept4
	// takes the lowest free descriptor before it looks for a connection, so
	// a second loop's accept that finds none holds a descriptor for a
	// moment, and a connect on the first can fail with EMFILE one
	// descriptor early (a client closed that the arithmetic says fits).
	e, err := NewEngine(1)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Listen(svc); err != nil {
		t.Fatal(err)
	}
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig)
	out("proxy %s", svc.Options().Listen)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "limit":
			n, _ := strconv.Atoi(f[1])
			lim := limitLeavingFree(t, n)
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: lim, Max: orig.Max}); err != nil {
				t.Fatal(err)
			}
			out("ok")
		case "stats":
			st := pool.Stats(time.Now())[0]
			out("stats blacklisted=%t conns=%d active=%d", !st.BlacklistedUntil.IsZero(), st.Conns, svc.Counters().Active)
		case "exit":
			return
		}
	}
}

// limitLeavingFree returns the RLIMIT_NOFILE value under which exactly n
// descriptor numbers are free (new descriptors take the lowest free number
// below the limit).
func limitLeavingFree(t *testing.T, n int) uint64 {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	dirfd := int(d.Fd())
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	open := make(map[int]bool)
	for _, s := range names {
		if fd, err := strconv.Atoi(s); err == nil && fd != dirfd {
			open[fd] = true
		}
	}
	free := 0
	for lim := 0; ; lim++ {
		if free == n {
			return uint64(lim)
		}
		if !open[lim] {
			free++
		}
	}
}

// fdChild is the parent's handle on the helper process.
type fdChild struct {
	t       *testing.T
	pid     int
	stdin   io.Writer
	replies chan string
	accepts atomic.Int64 // "accept" diagnostics logged
	mu      sync.Mutex
	tail    []string // last lines, for failure messages
}

func (c *fdChild) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		c.mu.Lock()
		c.tail = append(c.tail, line)
		if len(c.tail) > 20 {
			c.tail = c.tail[1:]
		}
		c.mu.Unlock()
		rest, ok := strings.CutPrefix(line, "fdtest: ")
		switch {
		case !ok:
		case strings.HasPrefix(rest, "log: "):
			if strings.Contains(rest, "accept") {
				c.accepts.Add(1)
			}
		default:
			c.replies <- rest
		}
	}
	close(c.replies)
}

func (c *fdChild) lastLines() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.tail, "\n")
}

// do sends a command and returns the reply.
func (c *fdChild) do(cmd string) string {
	c.t.Helper()
	if cmd != "" {
		fmt.Fprintln(c.stdin, cmd)
	}
	select {
	case r, ok := <-c.replies:
		if !ok {
			c.t.Fatalf("helper exited; its last lines:\n%s", c.lastLines())
		}
		return r
	case <-time.After(10 * time.Second):
		c.t.Fatalf("no reply to %q; the helper's last lines:\n%s", cmd, c.lastLines())
	}
	return ""
}

// waitIdle waits until the child has closed every session.
func (c *fdChild) waitIdle() string {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := c.do("stats")
		if strings.HasSuffix(st, " active=0") || time.Now().After(deadline) {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cpuTime returns the child's user+system CPU time so far.
func (c *fdChild) cpuTime() time.Duration {
	c.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid))
	if err != nil {
		c.t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// echoOnce writes one byte and reports whether it came back.
func echoOnce(c net.Conn, b byte) error {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte{b}); err != nil {
		return err
	}
	got := make([]byte, 1)
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if got[0] != b {
		return fmt.Errorf("echo %q, want %q", got, b)
	}
	return nil
}

// With few descriptors left, a burst of clients must close only the clients
// that hit EMFILE: the backend stays in service, and the next client after
// the burst is served at once (it used to be blacklisted for 30s). Accept
// failing with EMFILE must pause the listener (not spin on a level-triggered
// epoll, logging each time), and resume as soon as descriptors are free.
func TestFDExhaustionBlamesNoBackend(t *testing.T) {
	be := newBackend(t, echo)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel) // after the helper's cleanup below: it must exit by itself
	cmd := netnstest.HelperCommand(ctx, t, "TestHelperFDLimitedProxy", fdTestBackendEnv+"="+be.addr.String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child := &fdChild{t: t, pid: cmd.Process.Pid, stdin: stdin, replies: make(chan string, 16)}
	go child.read(stdout)
	t.Cleanup(func() {
		fmt.Fprintln(stdin, "exit")
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper: %v\n%s\n%s", err, child.lastLines(), stderr.String())
		}
	})
	addr, ok := strings.CutPrefix(child.do(""), "proxy ")
	if !ok {
		t.Fatalf("helper did not start: %s", child.lastLines())
	}
	dialAll := func(n int) []net.Conn {
		var cs []net.Conn
		for range n {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			cs = append(cs, c)
		}
		return cs
	}
	closeAll := func(cs []net.Conn) {
		for _, c := range cs {
			c.Close()
		}
	}

	// Phase 1: 21 free descriptors. Ten sessions (client and backend
	// socket) fit; each later client is accepted with the last descriptor
	// and its backend socket() fails with EMFILE.
	if r := child.do("limit 21"); r != "ok" {
		t.Fatalf("limit: %q", r)
	}
	burst := dialAll(40)
	held, closed := 0, 0
	for i, c := range burst {
		if err := echoOnce(c, byte('a'+i%26)); err != nil {
			if isTimeout(err) {
				t.Fatalf("client %d left hanging: %v", i, err)
			}
			closed++
		} else {
			held++
		}
	}
	t.Logf("burst of %d: %d served, %d closed", len(burst), held, closed)
	if held == 0 || closed == 0 {
		t.Fatalf("burst of %d: %d served, %d closed; want both (descriptors exhausted)", len(burst), held, closed)
	}
	if st := child.do("stats"); !strings.Contains(st, "blacklisted=false") {
		t.Errorf("after EMFILE on the backend socket: %s; want the backend not blacklisted", st)
	}
	closeAll(burst)
	if st := child.waitIdle(); !strings.HasSuffix(st, " active=0") {
		t.Fatalf("sessions not closed after the burst: %s", st)
	}
	start := time.Now()
	after := dialAll(1)[0]
	if err := echoOnce(after, 'z'); err != nil {
		t.Fatalf("client after the burst: %v; want it served at once (lbd's log:\n%s)", err, child.lastLines())
	}
	t.Logf("client after the burst served in %v", time.Since(start))
	after.Close()
	child.waitIdle()

	// Phase 2: 20 free descriptors. Ten sessions fit exactly; then accept
	// itself fails with EMFILE while clients wait in the backlog.
	if r := child.do("limit 20"); r != "ok" {
		t.Fatalf("limit: %q", r)
	}
	hold := dialAll(10)
	for i, c := range hold {
		if err := echoOnce(c, 'h'); err != nil {
			t.Fatalf("session %d of 10 within the limit: %v; the helper's last lines:\n%s", i, err, child.lastLines())
		}
	}
	pending := dialAll(10)
	for _, c := range pending {
		c.Write([]byte{'p'})
	}
	time.Sleep(300 * time.Millisecond) // the loops meet EMFILE
	child.accepts.Store(0)
	cpu0, t0 := child.cpuTime(), time.Now()
	time.Sleep(time.Second)
	cpu, wall := child.cpuTime()-cpu0, time.Since(t0)
	logged := child.accepts.Load()
	t.Logf("with accept failing: %v CPU in %v, %d accept lines logged", cpu, wall, logged)
	if cpu > wall/4 {
		t.Errorf("proxy used %v CPU in %v while accept failed with EMFILE; want it idle (listener paused)", cpu, wall)
	}
	if logged > 3 {
		t.Errorf("%d accept errors logged in %v; want at most one a second", logged, wall)
	}
	start = time.Now()
	closeAll(hold)
	for i, c := range pending {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		got := make([]byte, 1)
		if _, err := io.ReadFull(c, got); err != nil || got[0] != 'p' {
			t.Fatalf("waiting client %d once descriptors were free: %q, %v; the helper's last lines:\n%s", i, got, err, child.lastLines())
		}
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("waiting clients served %v after descriptors were freed; want at once", el)
	}
	if st := child.do("stats"); !strings.Contains(st, "blacklisted=false") {
		t.Errorf("after EMFILE on accept: %s; want the backend not blacklisted", st)
	}
	closeAll(pending)
	child.waitIdle()
}
