package compat

// Test harness: the two implementations under test, free ports, process
// start/stop, penctl, real clients (curl, dig) with Go fallbacks, and the
// hermetic replacements for the testsuite's Apache vhosts and split-horizon
// BIND.
//
// Pen's testsuite.sh is re-implemented here from its described behaviour
// (reference/pen.md §4); no Pen code is copied.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/nib-lb/nib/internal/dnstest"
	"github.com/nib-lb/nib/internal/needs"
	"github.com/nib-lb/nib/internal/syncbuf"
)

const (
	penBin    = "/usr/bin/pen"
	penctlBin = "/usr/bin/penctl"

	// The two client sources (the testsuite's IP1 and IP2).
	ip1 = "127.0.0.1"
	ip2 = "127.0.0.2"

	// readyTimeout bounds every "wait until X" poll.
	readyTimeout = 5 * time.Second
	pollEvery    = 20 * time.Millisecond
)

var (
	lbdBin      string // path of the lbd binary built by TestMain
	lbdBuildErr string // non-empty: the build failed; its output
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nib-compat-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	lbdBin = filepath.Join(dir, "lbd")
	goBin, err := exec.LookPath("go")
	if err != nil {
		lbdBuildErr = "go tool not found in PATH: " + err.Error()
	} else {
		out, err := exec.Command(goBin, "build", "-o", lbdBin, "github.com/nib-lb/nib/lbd").CombinedOutput()
		if err != nil {
			lbdBuildErr = fmt.Sprintf("go build -o %s github.com/nib-lb/nib/lbd: %v\n%s", lbdBin, err, out)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// impl is one implementation of Pen's command line and control protocol.
type impl struct {
	name string
	bin  string
	// ctlArgs are added whenever the control socket (-C) is used. Pen
	// refuses -C as root without -u.
	ctlArgs []string
}

// implementations returns pen and lbd, in that order.
func implementations() []impl {
	pen := impl{name: "pen", bin: penBin}
	if os.Geteuid() == 0 {
		pen.ctlArgs = []string{"-u", "root"}
	}
	return []impl{pen, {name: "lbd", bin: lbdBin}}
}

// require skips (pen not installed; under CI it fails, see package needs)
// or fails (lbd did not build) t when im cannot run.
func (im impl) require(t *testing.T) {
	t.Helper()
	switch im.name {
	case "pen":
		needs.Tool(t, im.bin)
	case "lbd":
		if lbdBuildErr != "" {
			t.Fatalf("lbd did not build:\n%s", lbdBuildErr)
		}
	}
}

func requirePenctl(t *testing.T) {
	t.Helper()
	needs.Tool(t, penctlBin) // this case is driven through it
}

// ---------------------------------------------------------------------------
// Ports and directories

var (
	portMu   sync.Mutex
	portUsed = map[int]bool{}
)

// freePort returns a loopback port that no other test in this binary uses
// and that is free for TCP and UDP on 127.0.0.1 (and ::1 when available).
// It is picked below the kernel's ephemeral range, so no outgoing connection
// (curl, dig, a proxy's upstream socket) can take it between the pick and
// the listener's bind.
func freePort(t *testing.T) int {
	t.Helper()
	lo, hi := 20000, ephemeralLow()-1
	if hi-lo < 1000 {
		lo, hi = 1024+1, 65535 // odd range setting: fall back to any high port
	}
	portMu.Lock()
	defer portMu.Unlock()
	for range 500 {
		p := lo + mrand.IntN(hi-lo)
		if portUsed[p] || !portFree(p) {
			continue
		}
		portUsed[p] = true
		return p
	}
	t.Fatalf("no free port found in [%d,%d) after 500 tries", lo, hi)
	return 0
}

func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 2048 {
		return 32768
	}
	return n
}

func portFree(p int) bool {
	hosts := []string{ip1}
	if haveIPv6() {
		hosts = append(hosts, "::1")
	}
	for _, h := range hosts {
		addr := net.JoinHostPort(h, strconv.Itoa(p))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		l.Close()
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

var haveIPv6 = sync.OnceValue(func() bool {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	defer l.Close()
	c, err := net.Dial("tcp6", l.Addr().String())
	if err != nil {
		return false
	}
	c.Close()
	return true
})

// shortDir returns a fresh temporary directory with a short path, so that a
// Unix control socket inside it stays well below sun_path's 108 bytes.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "nibc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// ---------------------------------------------------------------------------
// Processes

// lb is one running pen or lbd process.
type lb struct {
	im      impl
	args    []string
	dir     string
	pidFile string
	ctlPath string // "" when started without -C
	cmd     *exec.Cmd
	out     *syncbuf.Buffer
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done
}

// startLB starts `<bin> -f -p PIDFILE [-C CTL -X <ctlArgs>] args...` and
// waits until it listens on listen (proto "tcp" or "udp"). It is stopped in
// t.Cleanup: SIGTERM, then SIGKILL after a 2 s grace.
func startLB(t *testing.T, im impl, withCtl bool, proto string, listenPort int, args ...string) *lb {
	t.Helper()
	dir := shortDir(t)
	p := &lb{im: im, dir: dir, pidFile: filepath.Join(dir, "pid"), out: &syncbuf.Buffer{}, done: make(chan struct{})}
	full := []string{"-f", "-p", p.pidFile}
	if withCtl {
		p.ctlPath = filepath.Join(dir, "ctl")
		full = append(full, "-C", p.ctlPath, "-X")
		full = append(full, im.ctlArgs...)
	}
	full = append(full, args...)
	p.args = full

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, im.bin, full...)
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	cmd.Dir = dir
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 2 * time.Second
	p.cmd = cmd
	t.Logf("%s: %s", im.name, p.cmdline())
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", p.cmdline(), err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			t.Errorf("%s exited during the test: %v\noutput:\n%s", p.cmdline(), p.waitErr, p.out.String())
			cancel()
			return
		default:
		}
		cancel() // SIGTERM via cmd.Cancel; SIGKILL after WaitDelay
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", p.cmdline(), cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", p.cmdline(), p.out.String())
		}
	})
	p.waitListening(t, proto, listenPort)
	return p
}

func (p *lb) cmdline() string {
	return p.im.bin + " " + strings.Join(p.args, " ")
}

// waitFor polls cond every pollEvery until it holds, the process exits, or
// readyTimeout passes.
func (p *lb) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		if cond() {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited while waiting for %s: %v\noutput:\n%s", p.cmdline(), what, p.waitErr, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not reached within %v\noutput:\n%s", p.cmdline(), what, readyTimeout, p.out.String())
		}
		time.Sleep(pollEvery)
	}
}

// waitListening waits until a socket of proto is bound to port. It reads
// /proc/net instead of connecting, so that no probe connection is proxied
// (that would move the round-robin cursor and show up in the counters).
func (p *lb) waitListening(t *testing.T, proto string, port int) {
	t.Helper()
	p.waitFor(t, fmt.Sprintf("%s listener on port %d", proto, port), func() bool { return boundPort(proto, port) })
}

// boundPort reports whether /proc/net/{proto,proto6} has a listening TCP
// socket (state 0A) or a bound UDP socket (state 07) on port.
func boundPort(proto string, port int) bool {
	state := "0A"
	if proto == "udp" {
		state = "07"
	}
	suffix := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/" + proto, "/proc/net/" + proto + "6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) > 3 && strings.HasSuffix(fs[1], suffix) && fs[3] == state {
				return true
			}
		}
	}
	return false
}

// pid waits for the pid file and returns its pid. It fails unless that is
// the pid of the process the test started: a signal never goes to anything
// else.
func (p *lb) pid(t *testing.T) int {
	t.Helper()
	var pid int
	p.waitFor(t, "pid file "+p.pidFile, func() bool {
		b, err := os.ReadFile(p.pidFile)
		if err != nil {
			return false
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return false
		}
		pid = n
		return true
	})
	if pid != p.cmd.Process.Pid {
		t.Fatalf("pid file %s says %d, but the process started is %d", p.pidFile, pid, p.cmd.Process.Pid)
	}
	return pid
}

// ctl runs `penctl CTL words...` and returns its output. A failed connect
// (the control socket not yet listening) is retried for up to readyTimeout:
// the command was not delivered then.
func (p *lb) ctl(t *testing.T, words ...string) string {
	t.Helper()
	if p.ctlPath == "" {
		t.Fatal("ctl: process started without -C")
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		out, err := exec.CommandContext(ctx, penctlBin, append([]string{p.ctlPath}, words...)...).CombinedOutput()
		cancel()
		if err == nil {
			t.Logf("penctl %s %s -> %q", p.ctlPath, strings.Join(words, " "), out)
			return string(out)
		}
		if !bytes.Contains(out, []byte("error connecting")) || time.Now().After(deadline) {
			t.Fatalf("penctl %s %s: %v\n%s", p.ctlPath, strings.Join(words, " "), err, out)
		}
		time.Sleep(pollEvery)
	}
}

// ---------------------------------------------------------------------------
// Backends

// httpBackend serves body on 127.0.0.1 (or ::1 when host is "::1") on an
// ephemeral port and returns the port. It stands in for one of the
// testsuite's Apache vhosts ("100", "101", "Emergency", "Abuse").
func httpBackend(t *testing.T, host, body string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, body)
		}),
		ReadHeaderTimeout: readyTimeout,
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// dnsBackend answers A queries for example.com with addr (1.1.1.1 or
// 2.2.2.2) on 127.0.0.1, an ephemeral UDP port, which it returns. Two of
// them replace the testsuite's split-horizon BIND: the answer tells which
// backend the balancer used.
func dnsBackend(t *testing.T, addr string) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", ip1+":0")
	if err != nil {
		t.Fatal(err)
	}
	go dnstest.Serve(pc, netip.MustParseAddr(addr).As4())
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// selfSignedPEM writes a fresh RSA-2048 self-signed certificate for
// 127.0.0.1 followed by its key into one PEM file (Pen's -E takes both when
// -K is not given) and returns its path.
func selfSignedPEM(t *testing.T) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.ParseIP(ip1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	path := filepath.Join(shortDir(t), "cert.pem")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---------------------------------------------------------------------------
// Clients

// result is what a client printed (trailing newlines removed, as the shell's
// backticks do) and its exit status (curl's or dig's; the Go fallbacks
// emulate the codes the tests look at).
type result struct {
	out  string
	code int
}

const (
	curlTimeout = 28 // curl: operation timed out
	digNoReply  = 9  // dig: no reply from server
)

// get fetches url with curl -s (from source address src when not empty).
// https URLs get -k; a URL with a [v6] literal gets -g -6, others -4.
func get(t *testing.T, src, url string) result {
	t.Helper()
	if curl, err := lookClient(t, "curl"); err == nil {
		args := []string{"-s", "-m", "5"}
		if src != "" {
			args = append(args, "--interface", src)
		}
		if strings.HasPrefix(url, "https:") {
			args = append(args, "-k")
		}
		if strings.Contains(url, "[") {
			args = append(args, "-g", "-6")
		} else {
			args = append(args, "-4")
		}
		args = append(args, url)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, curl, args...).Output()
		r := result{out: strings.TrimRight(string(out), "\n"), code: exitCode(err)}
		t.Logf("curl %s -> %q (exit %d)", strings.Join(args, " "), r.out, r.code)
		return r
	}
	return goGet(t, src, url)
}

func goGet(t *testing.T, src, url string) result {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:       d.DialContext,
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		},
	}
	resp, err := c.Get(url)
	if err != nil {
		code := 56
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			code = curlTimeout
		}
		t.Logf("GET %s from %s -> error %v", url, src, err)
		return result{code: code}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	code := 0
	if err != nil {
		code = 56
	}
	r := result{out: strings.TrimRight(string(b), "\n"), code: code}
	t.Logf("GET %s from %s -> %q", url, src, r.out)
	return r
}

// lookClient finds a real client (curl, dig). NIB_COMPAT_GO_CLIENTS=1 makes
// it report none, to exercise the Go fallbacks. A missing client also means
// the Go fallback, except under CI (CI=true), which installs both: there it
// fails t (needs.Tool), so that CI compares with the real clients.
func lookClient(t *testing.T, name string) (string, error) {
	t.Helper()
	if os.Getenv("NIB_COMPAT_GO_CLIENTS") == "1" {
		return "", errors.New("NIB_COMPAT_GO_CLIENTS=1")
	}
	if needs.CI() {
		return needs.Tool(t, name), nil
	}
	return exec.LookPath(name)
}

// dig asks 127.0.0.1:port for example.com A from source src, like the
// testsuite's `dig +short +time=3 +retry=0`.
func dig(t *testing.T, src string, port int) result {
	t.Helper()
	if digBin, err := lookClient(t, "dig"); err == nil {
		args := []string{"+short", "+time=3", "+retry=0", "-b", src, "-p", strconv.Itoa(port), "@" + ip1, "example.com"}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, digBin, args...).Output()
		r := result{out: strings.TrimRight(string(out), "\n"), code: exitCode(err)}
		t.Logf("dig %s -> %q (exit %d)", strings.Join(args, " "), r.out, r.code)
		return r
	}
	return goDig(t, src, port)
}

func goDig(t *testing.T, src string, port int) result {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.ParseIP(ip1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := uint16(mrand.Uint32())
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	for range 10 { // skip stray datagrams, bounded
		n, err := c.Read(buf)
		if err != nil {
			t.Logf("dns query from %s to port %d -> no reply (%v)", src, port, err)
			return result{code: digNoReply}
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil || h.ID != id {
			continue
		}
		p.SkipAllQuestions()
		var ips []string
		for {
			rh, err := p.AnswerHeader()
			if err != nil {
				break
			}
			if rh.Type != dnsmessage.TypeA {
				p.SkipAnswer()
				continue
			}
			a, err := p.AResource()
			if err != nil {
				break
			}
			ips = append(ips, netip.AddrFrom4(a.A).String())
		}
		r := result{out: strings.Join(ips, "\n")}
		t.Logf("dns query from %s to port %d -> %q", src, port, r.out)
		return r
	}
	return result{code: digNoReply}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		return ee.ExitCode()
	}
	return -1
}

// ---------------------------------------------------------------------------
// Assertions in testsuite.sh's terms

// checkResult: got must be non-empty and equal to want (check_result).
func checkResult(t *testing.T, label, want string, got result) {
	t.Helper()
	if got.out == "" || got.out != want {
		t.Errorf("%s: expected %q, got %q (exit %d)", label, want, got.out, got.code)
	}
}

// checkDifferent: got must be non-empty and differ from notWant
// (check_different).
func checkDifferent(t *testing.T, label, notWant string, got result) {
	t.Helper()
	if got.out == "" || got.out == notWant {
		t.Errorf("%s: expected non-empty and not %q, got %q (exit %d)", label, notWant, got.out, got.code)
	}
}
