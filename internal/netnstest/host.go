package netnstest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A Host is one network namespace of a Topology, with lo and eth0.
type Host struct {
	topo    *Topology
	name    string // "client", "lb", "be1", ...
	ns      string // e.g. "nib3fa9c1-be1"
	addr    netip.Addr
	backend bool
}

// Name is the host's name in the topology: "client", "lb", "be1", ...
func (h *Host) Name() string { return h.name }

// NS is the name of the host's network namespace, e.g. "nib3fa9c1-lb", for
// `ip -n NS ...` and `ip netns exec NS ...`.
func (h *Host) NS() string { return h.ns }

// Addr is eth0's IPv4 address, e.g. 198.51.100.21 for be1.
func (h *Host) Addr() netip.Addr { return h.addr }

// String is the host's name.
func (h *Host) String() string { return h.name }

// MAC reads eth0's current hardware address from the namespace (a test may
// have changed it). It panics if eth0 cannot be read, which only happens when
// the topology is gone.
func (h *Host) MAC() net.HardwareAddr {
	var mac net.HardwareAddr
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("netnstest: %s: reading eth0's MAC: %v", h.ns, err))
	}
	return mac
}

// Command returns `ip netns exec NS name args...` for a long-running process
// that the caller starts, stops and waits for. `ip netns exec` execs the
// program itself, so cancelling ctx kills the program (with SIGKILL).
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Run runs `ip netns exec NS args...` (bounded to 30 s) and returns its
// combined output. It fails the test with the command line and the output if
// the command fails.
func (h *Host) Run(t testing.TB, args ...string) string {
	t.Helper()
	if len(args) == 0 {
		t.Fatalf("netnstest: %s: Run without a command", h.name)
	}
	out, err := command("ip", append([]string{"netns", "exec", h.ns}, args...)...)
	if err != nil {
		t.Fatalf("netnstest: %s: %v", h.name, err)
	}
	return out
}

// Sysctl sets key (e.g. "net.ipv4.conf.eth0.arp_ignore") to value in the
// host's namespace, failing the test on error.
func (h *Host) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	if err := sysctl(h.ns, key+"="+value); err != nil {
		t.Fatalf("netnstest: %s: %v", h.name, err)
	}
}

// Do runs f on an OS thread that has been switched into the host's network
// namespace, and returns f's error.
//
// Sockets that f creates belong to the namespace for their whole life and can
// be used from any goroutine after Do returns; that is how Listen, ListenPacket
// and Dial work. Only the thread that runs f is in the namespace, so f must
// not create sockets in goroutines it starts (they run on other threads, in
// the root namespace, whose addresses may be real: see the package doc), must
// not resolve host names (the resolver may use other goroutines), and must
// not call t.FailNow (t.Fatal): return an error instead.
//
// f runs on a goroutine of its own, locked to its thread. Afterwards the
// thread is switched back to the namespace it came from, also when f panics
// (the panic is then re-raised in the caller) or calls runtime.Goexit. If
// switching back fails, the thread stays locked so that the runtime ends it
// with the goroutine instead of reusing it.
func (h *Host) Do(f func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
		stack    []byte
	}
	ch := make(chan result, 1)
	go func() {
		var r result
		defer func() { ch <- r }()
		runtime.LockOSThread()
		// Until the switch succeeds the thread is in its original namespace.
		orig, err := unix.Open(threadNetns(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			r.err = fmt.Errorf("netnstest: opening this thread's network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if switched, err := enterNetns(h.ns); err != nil {
			r.err = err
			if switched {
				if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
					// Stay locked: the runtime terminates the thread.
					r.err = errors.Join(r.err, fmt.Errorf("netnstest: %s: switching the thread back to its network namespace: %w", h.ns, err))
					return
				}
			}
			runtime.UnlockOSThread()
			return
		}
		finished := false
		defer func() {
			if !finished && !r.panicked {
				r.err = errors.Join(r.err, fmt.Errorf("netnstest: %s: the function passed to Do called runtime.Goexit (t.FailNow?)", h.ns))
			}
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				// Stay locked: the runtime terminates the thread.
				r.err = errors.Join(r.err, fmt.Errorf("netnstest: %s: switching the thread back to its network namespace: %w", h.ns, err))
				return
			}
			runtime.UnlockOSThread()
		}()
		defer func() {
			if v := recover(); v != nil {
				r.panicked, r.value, r.stack = true, v, debug.Stack()
			}
		}()
		r.err = f()
		finished = true
	}()
	r := <-ch
	if r.panicked {
		panic(fmt.Sprintf("netnstest: panic in Do (%s): %v\n\n%s", h.ns, r.value, r.stack))
	}
	return r.err
}

// threadNetns is the path of the calling thread's network namespace.
func threadNetns() string {
	return fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
}

// enterNetns switches the calling (locked) thread into the named namespace
// and checks that the switch happened. switched reports whether the thread
// may have left its namespace (and must be switched back).
func enterNetns(ns string) (switched bool, err error) {
	path := "/run/netns/" + ns
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("netnstest: opening network namespace %s: %w", path, err)
	}
	defer unix.Close(fd)
	var want, got unix.Stat_t
	if err := unix.Fstat(fd, &want); err != nil {
		return false, fmt.Errorf("netnstest: stat %s: %w", path, err)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return false, fmt.Errorf("netnstest: setns %s: %w", path, err)
	}
	if err := unix.Stat(threadNetns(), &got); err != nil {
		return true, fmt.Errorf("netnstest: stat %s: %w", threadNetns(), err)
	}
	if want.Ino != got.Ino || want.Dev != got.Dev {
		return true, fmt.Errorf("netnstest: setns %s: thread is in namespace inode %d, want %d", path, got.Ino, want.Ino)
	}
	return true, nil
}

// checkLiteral rejects addresses whose host part is a name: resolving it would
// use the resolver's goroutines, outside the namespace.
func checkLiteral(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "" {
		return nil
	}
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i]
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("netnstest: %q: use an IP address, not a host name", addr)
	}
	return nil
}

// Listen is net.Listen inside the host's namespace. addr must hold an IP
// address or no host ("198.51.100.21:80", ":80").
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	if err := checkLiteral(addr); err != nil {
		return nil, err
	}
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket is net.ListenPacket inside the host's namespace, e.g.
// ListenPacket("udp4", "198.51.100.100:53") on a backend.
func (h *Host) ListenPacket(network, addr string) (net.PacketConn, error) {
	if err := checkLiteral(addr); err != nil {
		return nil, err
	}
	var pc net.PacketConn
	err := h.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Dial connects from the host's namespace, like net.Dialer.DialContext. addr
// must hold an IP address, e.g. "198.51.100.100:80". Without a deadline in ctx
// the dial gives up after 10 s.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := checkLiteral(addr); err != nil {
		return nil, err
	}
	var c net.Conn
	err := h.Do(func() error {
		var err error
		d := net.Dialer{Timeout: 10 * time.Second}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient returns an HTTP client whose connections are dialled from the
// host's namespace (no proxy from the environment; 10 s per request). Its
// idle connections are closed in t.Cleanup. URLs must use IP addresses.
func (h *Host) HTTPClient(t testing.TB) *http.Client {
	tr := &http.Transport{
		DialContext:         h.Dial,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     10 * time.Second,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// ethtoolNames maps ethtool -K's short names to the `ethtool -k` line that
// shows the feature's state. TSO is read from tx-tcp-segmentation: on kernels
// newer than ethtool, the summary line "tcp-segmentation-offload" also counts
// features ethtool does not know (tx-tcp-accecn-segmentation) and can read
// "on" while TCP segmentation is off.
var ethtoolNames = map[string]string{
	"rx":  "rx-checksumming",
	"tx":  "tx-checksumming",
	"sg":  "scatter-gather",
	"tso": "tx-tcp-segmentation",
	"gso": "generic-segmentation-offload",
	"gro": "generic-receive-offload",
	"lro": "large-receive-offload",
}

// SetOffload switches an eth0 feature with `ethtool -K eth0 feature on|off`
// ("tx", "rx", "sg", "tso", "gso", "gro", or a long name from `ethtool -k`)
// and fails the test if `ethtool -k` does not then show the wanted state,
// e.g. TSO on while tx checksum offload is off.
func (h *Host) SetOffload(t testing.TB, feature string, on bool) {
	t.Helper()
	if err := h.ethtool([]string{feature}, []bool{on}); err != nil {
		t.Fatalf("netnstest: %s: %v", h.name, err)
	}
}

// Offload reports whether eth0's feature (as for SetOffload) is on.
func (h *Host) Offload(t testing.TB, feature string) bool {
	t.Helper()
	st, err := h.features()
	if err != nil {
		t.Fatalf("netnstest: %s: %v", h.name, err)
	}
	v, ok := st[longName(feature)]
	if !ok {
		t.Fatalf("netnstest: %s: ethtool -k eth0 shows no feature %q", h.name, longName(feature))
	}
	return v
}

func (h *Host) setOffloads(o Offloads) error {
	return h.ethtool([]string{"tx", "gro", "tso", "gso"}, []bool{o.TxChecksum, o.GRO, o.TSO, o.GSO})
}

func longName(f string) string {
	if l, ok := ethtoolNames[f]; ok {
		return l
	}
	return f
}

// ethtool sets features in one `ethtool -K` and checks the result.
func (h *Host) ethtool(features []string, on []bool) error {
	args := []string{"netns", "exec", h.ns, "ethtool", "-K", "eth0"}
	for i, f := range features {
		args = append(args, f, onOff(on[i]))
	}
	out, err := command("ip", args...)
	if err != nil {
		return err
	}
	st, err := h.features()
	if err != nil {
		return err
	}
	for i, f := range features {
		got, ok := st[longName(f)]
		if !ok {
			return fmt.Errorf("%s: ethtool -k eth0 shows no feature %q", cmdline("ip", args), longName(f))
		}
		if got != on[i] {
			return fmt.Errorf("%s: %s is %s, want %s (the kernel refused it)\n%s",
				cmdline("ip", args), longName(f), onOff(got), onOff(on[i]), strings.TrimSpace(out))
		}
	}
	return nil
}

// features parses `ethtool -k eth0`: "name: on|off [fixed]" lines.
func (h *Host) features() (map[string]bool, error) {
	out, err := command("ip", "netns", "exec", h.ns, "ethtool", "-k", "eth0")
	if err != nil {
		return nil, err
	}
	st := make(map[string]bool)
	s := bufio.NewScanner(strings.NewReader(out))
	for s.Scan() {
		name, val, ok := strings.Cut(strings.TrimSpace(s.Text()), ": ")
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(val, "on"):
			st[name] = true
		case strings.HasPrefix(val, "off"):
			st[name] = false
		}
	}
	return st, nil
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}
