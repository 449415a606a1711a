package netnstest

import (
	"bytes"
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
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/needs"
)

// checkGone registers a cleanup, to be called before New so that it runs
// after the topology's own cleanup, that fails the test if anything named
// with the prefix stored in *prefix is left.
func checkGone(t *testing.T) *string {
	t.Helper()
	prefix := new(string)
	t.Cleanup(func() {
		if *prefix == "" {
			return
		}
		left, err := LeftOver(*prefix)
		if err != nil {
			t.Errorf("listing what is left of %s: %v", *prefix, err)
		}
		if len(left) > 0 {
			t.Errorf("left behind by topology %s: %q", *prefix, left)
		}
	})
	return prefix
}

// hostname answers every request with the host's name and the topology prefix.
func hostname(tp *Topology, h *Host) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", h.Name(), tp.Prefix())
	})
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(b)
}

// ipAddrs returns the IPv4 addresses `ip -j addr show` lists in h's namespace, by device.
func ipAddrs(t *testing.T, h *Host) map[string][]netip.Prefix {
	t.Helper()
	out := h.Run(t, "ip", "-4", "-j", "addr", "show")
	var links []struct {
		IfName   string `json:"ifname"`
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatalf("%s: ip -j addr show: %v\n%s", h.Name(), err, out)
	}
	m := make(map[string][]netip.Prefix)
	for _, l := range links {
		for _, a := range l.AddrInfo {
			m[l.IfName] = append(m[l.IfName], netip.PrefixFrom(netip.MustParseAddr(a.Local), a.PrefixLen))
		}
	}
	return m
}

type linkInfo struct {
	OperState string `json:"operstate"`
	MTU       int    `json:"mtu"`
	Address   string `json:"address"`
	Master    string `json:"master"`
}

func link(t *testing.T, ns, dev string) linkInfo {
	t.Helper()
	out, err := command("ip", "-n", ns, "-j", "link", "show", "dev", dev)
	if err != nil {
		t.Fatal(err)
	}
	var ls []linkInfo
	if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls) != 1 {
		t.Fatalf("ip -n %s -j link show dev %s: %v\n%s", ns, dev, err, out)
	}
	return ls[0]
}

// threadsElsewhere lists this process's threads whose network namespace is
// not the process's own.
func threadsElsewhere(t *testing.T) []string {
	t.Helper()
	want, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var odd []string
	for _, task := range tasks {
		got, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err == nil && got != want {
			odd = append(odd, task.Name()+": "+got)
		}
	}
	return odd
}

func TestLinuxTopology(t *testing.T) {
	SkipUnprivileged(t)
	prefix := checkGone(t)
	start := time.Now()
	tp := New(t, Options{})
	*prefix = tp.Prefix()
	t.Logf("built %s in %v", tp.Prefix(), time.Since(start))
	client, lb := tp.Client(), tp.LB()
	be := tp.Backends()
	if len(be) != 2 || be[0].Name() != "be1" || be[1].Name() != "be2" {
		t.Fatalf("Backends() = %v, want [be1 be2]", be)
	}
	if got := tp.VIP(); got != netip.MustParseAddr("198.51.100.100") {
		t.Fatalf("VIP() = %v", got)
	}

	t.Run("addresses", func(t *testing.T) {
		want := map[string]string{"client": "198.51.100.10", "lb": "198.51.100.2", "be1": "198.51.100.21", "be2": "198.51.100.22"}
		for _, h := range tp.Hosts() {
			if got := h.Addr().String(); got != want[h.Name()] {
				t.Errorf("%s: Addr() = %s, want %s", h.Name(), got, want[h.Name()])
			}
			if !strings.HasPrefix(h.NS(), tp.Prefix()+"-") {
				t.Errorf("%s: NS() = %q, want prefix %q", h.Name(), h.NS(), tp.Prefix())
			}
			addrs := ipAddrs(t, h)
			if got := addrs["eth0"]; len(got) != 1 || got[0] != netip.PrefixFrom(h.Addr(), 24) {
				t.Errorf("%s: eth0 has %v, want %v/24", h.Name(), got, h.Addr())
			}
			for dev, ps := range addrs {
				for _, p := range ps {
					if p.Addr() == tp.VIP() && (h.Name() == "lb" || h.Name() == "client") {
						t.Errorf("%s: VIP configured on %s", h.Name(), dev)
					}
				}
			}
			if h.Name() == "be1" || h.Name() == "be2" {
				if got := addrs["lo"]; !containsPrefix(got, netip.PrefixFrom(tp.VIP(), 32)) {
					t.Errorf("%s: lo has %v, want the VIP /32", h.Name(), got)
				}
				for _, key := range []string{"all.arp_ignore", "eth0.arp_ignore", "all.arp_announce", "eth0.arp_announce"} {
					got := strings.TrimSpace(h.Run(t, "sysctl", "-n", "net.ipv4.conf."+key))
					want := map[bool]string{true: "1", false: "2"}[strings.HasSuffix(key, "arp_ignore")]
					if got != want {
						t.Errorf("%s: net.ipv4.conf.%s = %s, want %s", h.Name(), key, got, want)
					}
				}
			}
		}
	})

	t.Run("links", func(t *testing.T) {
		for _, h := range tp.Hosts() {
			l := link(t, h.NS(), "eth0")
			if l.OperState != "UP" || l.MTU != 1500 {
				t.Errorf("%s: eth0 %+v, want UP with MTU 1500", h.Name(), l)
			}
			if got, want := h.MAC().String(), macFor(h.Addr()).String(); got != want || l.Address != want {
				t.Errorf("%s: MAC() = %s, ip link shows %s, want %s", h.Name(), got, l.Address, want)
			}
			port := link(t, tp.SwitchNS(), h.Name())
			if port.Master != "br0" || port.OperState != "UP" {
				t.Errorf("switch port %s: %+v, want UP in br0", h.Name(), port)
			}
			if lo := link(t, h.NS(), "lo"); lo.OperState != "UNKNOWN" && lo.OperState != "UP" {
				t.Errorf("%s: lo is %s", h.Name(), lo.OperState)
			}
		}
	})

	t.Run("ping", func(t *testing.T) {
		needs.Tool(t, "ping")
		for _, h := range []*Host{lb, be[0], be[1]} {
			client.Run(t, "ping", "-c1", "-W1", h.Addr().String())
		}
	})

	t.Run("nobody answers ARP for the VIP", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := client.Dial(ctx, "tcp", netip.AddrPortFrom(tp.VIP(), 80).String())
		if err == nil {
			c.Close()
			t.Fatalf("dial VIP:80 succeeded; nobody should answer ARP for the VIP")
		}
		n, ok := ARPEntry(t, client, tp.VIP())
		if !ok || n.MAC != nil || !(n.Has("INCOMPLETE") || n.Has("FAILED")) {
			t.Fatalf("client's neighbour entry for the VIP = %+v (found %v), want INCOMPLETE or FAILED without MAC", n, ok)
		}
		t.Logf("dial VIP:80: %v; neighbour entry %v", err, n.State)
	})

	t.Run("HTTP from client to backends", func(t *testing.T) {
		for _, h := range be {
			ServeHTTP(t, h, ":80", hostname(tp, h))
		}
		c := client.HTTPClient(t)
		for _, h := range be {
			want := h.Name() + " " + tp.Prefix()
			if got := get(t, c, "http://"+h.Addr().String()+"/"); got != want {
				t.Errorf("GET from %s = %q, want %q", h.Name(), got, want)
			}
			n, ok := ARPEntry(t, client, h.Addr())
			if !ok || n.MAC.String() != h.MAC().String() {
				t.Errorf("client's neighbour entry for %s = %+v, want MAC %s", h.Name(), n, h.MAC())
			}
		}
	})

	t.Run("UDP from client to be2", func(t *testing.T) {
		pc, err := be[1].ListenPacket("udp4", "198.51.100.22:5353")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		pc.SetDeadline(time.Now().Add(5 * time.Second))
		go func() {
			buf := make([]byte, 512)
			n, from, err := pc.ReadFrom(buf)
			if err == nil {
				pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
			}
		}()
		c, err := client.Dial(context.Background(), "udp4", "198.51.100.22:5353")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "echo hello" {
			t.Fatalf("UDP reply %q, %v; want \"echo hello\"", buf[:n], err)
		}
		if got := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr(); got != client.Addr() {
			t.Errorf("client's UDP source %v, want %v", got, client.Addr())
		}
	})

	t.Run("Do keeps the root namespace", func(t *testing.T) {
		ln, err := be[0].Listen("tcp", "198.51.100.21:0")
		if err != nil {
			t.Fatalf("listen on be1's address inside be1: %v", err)
		}
		defer ln.Close()
		// Binding (no traffic) in the root namespace must fail: the address
		// is not local there.
		if ln2, err := net.Listen("tcp", "198.51.100.21:0"); err == nil {
			ln2.Close()
			t.Fatalf("198.51.100.21 can be bound in the root namespace: Do leaked a namespace")
		}
		for i := range 20 {
			func() {
				defer func() {
					if v := recover(); v == nil || !strings.Contains(fmt.Sprint(v), "boom") {
						t.Errorf("recovered %v, want the panic from inside Do", v)
					}
				}()
				_ = be[i%2].Do(func() error { panic("boom") })
			}()
		}
		if err := lb.Do(func() error { return errors.New("inner") }); err == nil || err.Error() != "inner" {
			t.Errorf("Do returned %v, want f's error", err)
		}
		if odd := threadsElsewhere(t); len(odd) > 0 {
			t.Errorf("threads left in another network namespace: %v", odd)
		}
		if _, err := client.Dial(context.Background(), "tcp", "localhost:80"); err == nil {
			t.Errorf("Dial accepted a host name")
		}
	})

	t.Run("helper process in a namespace", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := be[0].HelperCommand(ctx, t, "TestHelperInNamespace").CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestHelperInNamespace")) {
			t.Fatalf("helper in be1: %v\n%s", err, out)
		}
	})

	// Last: it changes be1's ARP settings.
	t.Run("arp_ignore is what keeps the backends quiet", func(t *testing.T) {
		client.Run(t, "ip", "neigh", "flush", "to", tp.VIP().String())
		be[0].Sysctl(t, "net.ipv4.conf.all.arp_ignore", "0")
		be[0].Sysctl(t, "net.ipv4.conf.eth0.arp_ignore", "0")
		defer func() {
			be[0].Sysctl(t, "net.ipv4.conf.all.arp_ignore", "1")
			be[0].Sysctl(t, "net.ipv4.conf.eth0.arp_ignore", "1")
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := client.Dial(ctx, "tcp", netip.AddrPortFrom(tp.VIP(), 81).String())
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("dial VIP:81 with be1 answering ARP: %v, want connection refused", err)
		}
		n, ok := ARPEntry(t, client, tp.VIP())
		if !ok || n.MAC.String() != be[0].MAC().String() {
			t.Fatalf("client's neighbour entry for the VIP = %+v, want be1's MAC %s", n, be[0].MAC())
		}
	})
}

func containsPrefix(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// TestHelperInNamespace is the helper process of TestLinuxTopology: it runs
// under `ip netns exec <be1>`, where eth0 is be1's.
func TestHelperInNamespace(t *testing.T) {
	if !IsHelper(t.Name()) {
		t.Skip("runs only as the helper process of TestLinuxTopology")
	}
	ifi, err := net.InterfaceByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].String() != "198.51.100.21/24" {
		t.Fatalf("eth0 has %v, want be1's 198.51.100.21/24", addrs)
	}
	ln, err := net.Listen("tcp", "198.51.100.21:0")
	if err != nil {
		t.Fatalf("listen on be1's address: %v", err)
	}
	ln.Close()
}

func TestLinuxOffloads(t *testing.T) {
	SkipUnprivileged(t)
	prefix := checkGone(t)
	tp := New(t, Options{
		Backends: 1,
		MTU:      9000,
		Offloads: map[string]Offloads{
			"*":      {},
			"client": {TxChecksum: true, TSO: true, GSO: true},
			"lb":     {GRO: true},
		},
	})
	*prefix = tp.Prefix()
	client, lb, be1 := tp.Client(), tp.LB(), tp.Host("be1")

	want := map[string]map[string]bool{
		"client": {"tx": true, "tso": true, "gso": true, "gro": false},
		"lb":     {"tx": false, "tso": false, "gso": false, "gro": true},
		"be1":    {"tx": false, "tso": false, "gso": false, "gro": false},
	}
	for name, feats := range want {
		h := tp.Host(name)
		for f, on := range feats {
			if got := h.Offload(t, f); got != on {
				t.Errorf("%s: %s is %v, want %v", name, f, got, on)
			}
		}
		// The same, read from ethtool's text directly.
		out := h.Run(t, "ethtool", "-k", "eth0")
		line := "tx-checksumming: " + onOff(feats["tx"])
		if !strings.Contains(out, line+"\n") {
			t.Errorf("%s: ethtool -k eth0 lacks %q:\n%s", name, line, out)
		}
		if l := link(t, h.NS(), "eth0"); l.MTU != 9000 {
			t.Errorf("%s: eth0 MTU %d, want 9000", name, l.MTU)
		}
	}
	if l := link(t, tp.SwitchNS(), "br0"); l.MTU != 9000 {
		t.Errorf("br0 MTU %d, want 9000", l.MTU)
	}

	// Toggle and read back.
	be1.SetOffload(t, "gro", true)
	lb.SetOffload(t, "gro", false)
	client.SetOffload(t, "tx", false) // takes TSO with it
	if !be1.Offload(t, "gro") || lb.Offload(t, "gro") || client.Offload(t, "tx") || client.Offload(t, "tso") {
		t.Errorf("after toggling: be1 gro %v, lb gro %v, client tx %v tso %v; want true false false false",
			be1.Offload(t, "gro"), lb.Offload(t, "gro"), client.Offload(t, "tx"), client.Offload(t, "tso"))
	}
	// TSO without tx checksum offload is refused by the kernel, and said so.
	err := client.ethtool([]string{"tso"}, []bool{true})
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("tso on with tx off: %v, want an error saying the kernel refused", err)
	}
	client.SetOffload(t, "tx", true)
	client.SetOffload(t, "tso", true)

	// A large transfer between hosts with different offloads and MTU 9000.
	body := bytes.Repeat([]byte("nib"), 1<<20)
	ServeHTTP(t, be1, ":80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	}))
	if got := get(t, client.HTTPClient(t), "http://198.51.100.21/"); got != string(body) {
		t.Errorf("GET 3 MB from be1: got %d bytes, want %d", len(got), len(body))
	}
}

func TestLinuxParallel(t *testing.T) {
	SkipUnprivileged(t)
	prefixes := make(chan string, 2)
	t.Run("group", func(t *testing.T) {
		for i := range 2 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				prefix := checkGone(t)
				tp := New(t, Options{Backends: 1})
				*prefix = tp.Prefix()
				prefixes <- tp.Prefix()
				be1 := tp.Host("be1")
				ServeHTTP(t, be1, ":80", hostname(tp, be1))
				want := "be1 " + tp.Prefix()
				c := tp.Client().HTTPClient(t)
				for range 5 {
					if got := get(t, c, "http://198.51.100.21/"); got != want {
						t.Fatalf("GET = %q, want %q (answered by another topology?)", got, want)
					}
				}
			})
		}
	})
	close(prefixes)
	a, b := <-prefixes, <-prefixes
	if a == b {
		t.Errorf("both topologies are named %s", a)
	}
}

func TestLinuxSetupFailureCleansUp(t *testing.T) {
	SkipUnprivileged(t)
	prefix := newPrefix()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := HelperCommand(ctx, t, "TestHelperBadMTU", "NIB_NETNSTEST_PREFIX="+prefix).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("helper with MTU 70000: %v, want exit status 1\n%s", err, out)
	}
	// The failing command and its output are in the message; sw and client
	// existed when it failed.
	for _, s := range []string{
		"--- FAIL: TestHelperBadMTU",
		"building topology " + prefix,
		"ip -n " + prefix + "-client link add eth0 mtu 70000",
		"RTNETLINK answers",
	} {
		if !bytes.Contains(out, []byte(s)) {
			t.Errorf("helper output lacks %q:\n%s", s, out)
		}
	}
	if left, err := LeftOver(prefix); err != nil || len(left) > 0 {
		t.Errorf("after the failed setup: left %q (%v)", left, err)
	}
}

// TestHelperBadMTU is the helper process of TestLinuxSetupFailureCleansUp: New
// fails halfway (after creating the switch and the client namespaces).
func TestHelperBadMTU(t *testing.T) {
	if !IsHelper(t.Name()) {
		t.Skip("runs only as the helper process of TestLinuxSetupFailureCleansUp")
	}
	New(t, Options{MTU: 70000, prefix: os.Getenv("NIB_NETNSTEST_PREFIX")})
	t.Errorf("New succeeded with MTU 70000")
}

func TestLinuxReapsDeadTopologies(t *testing.T) {
	SkipUnprivileged(t)
	prefix := newPrefix()
	t.Cleanup(func() {
		deleteNamespaces(prefix)
		removeRecord(prefix)
	})
	// A topology whose process died without cleaning up: its record names a
	// process that has exited.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(recordDir, 0o755); err != nil {
		t.Fatal(err)
	}
	rec := fmt.Sprintf("%d 1\n", cmd.Process.Pid)
	if err := os.WriteFile(filepath.Join(recordDir, prefix), []byte(rec), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{prefix + "-sw", prefix + "-client"} {
		if _, err := command("ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
	}
	// A live one (this process) must be kept.
	live := newPrefix()
	if err := writeRecord(live); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeRecord(live) })

	notes := reapStale()
	t.Logf("reapStale: %q", notes)
	if left, err := LeftOver(prefix); err != nil || len(left) > 0 {
		t.Errorf("after reapStale: left %q (%v)", left, err)
	}
	if _, err := os.Stat(filepath.Join(recordDir, live)); err != nil {
		t.Errorf("the live topology's record was removed: %v", err)
	}
}
