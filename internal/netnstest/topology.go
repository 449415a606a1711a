package netnstest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Options configure a Topology. The zero value gives client, lb, be1 and be2,
// MTU 1500, the kernel's veth offload defaults and the VIP on the backends.
type Options struct {
	// Backends is the number of backend hosts be1..beN, 1 to MaxBackends;
	// 0 means 2.
	Backends int

	// MTU of every eth0 and bridge port; 0 means 1500. It is passed to
	// `ip link add` unchecked, so an invalid value fails setup.
	MTU int

	// Offloads sets eth0's features per host name ("client", "lb", "be1",
	// ...). The key "*" applies to every host that has no entry of its own.
	// A host with neither keeps the veth defaults (on this kernel: tx
	// checksum, TSO and GSO on, GRO off).
	Offloads map[string]Offloads

	// NoBackendVIP leaves the VIP off the backends' lo (and their ARP
	// sysctls at the defaults), e.g. to test that `setup check` notices.
	NoBackendVIP bool

	// prefix, if set, names the topology (tests of this package).
	prefix string
}

// Offloads are eth0 features, set with `ethtool -K eth0 tx .. gro .. tso ..
// gso ..` and checked afterwards. TSO needs TxChecksum: the kernel keeps TSO
// off while tx checksum offload is off, and New then fails.
type Offloads struct {
	TxChecksum bool // "tx": CHECKSUM_PARTIAL frames, checksum left to "the NIC"
	GRO        bool // "gro": receive super-frames larger than the MTU
	TSO        bool // "tso"
	GSO        bool // "gso"
}

// MaxBackends is the largest Options.Backends (addresses .21 to .60).
const MaxBackends = 40

// Addresses of the topology (TEST-NET-2, RFC 5737; not 192.0.2.0/24, which some build machines use for real).
var (
	subnet     = netip.MustParsePrefix("198.51.100.0/24")
	vip        = netip.MustParseAddr("198.51.100.100")
	clientAddr = netip.MustParseAddr("198.51.100.10")
	lbAddr     = netip.MustParseAddr("198.51.100.2")
)

// backendAddr is 198.51.100.(20+i) for be<i>.
func backendAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 51, 100, byte(20 + i)})
}

// macFor is the MAC New gives a host's eth0: 02:00 followed by its IPv4 address.
func macFor(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x00, b[0], b[1], b[2], b[3]}
}

// A Topology is client, lb and backends on one Ethernet segment.
type Topology struct {
	prefix string
	sw     string // namespace holding the bridge
	mtu    int
	hosts  []*Host // client, lb, be1, ...
}

// New builds a topology and registers its removal with t.Cleanup. It skips the
// test like SkipUnprivileged when not privileged. When a step fails, New
// removes whatever exists and fails the test with the command and its output.
//
// The cleanup is registered before anything is created, so it runs after
// every cleanup the caller registers later (servers, processes).
func New(t testing.TB, opts Options) *Topology {
	t.Helper()
	SkipUnprivileged(t)
	reapOnce.Do(func() {
		for _, note := range reapStale() {
			t.Logf("netnstest: %s", note)
		}
	})
	for _, tool := range []string{"ethtool", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("netnstest: %s is not installed (Debian packages ethtool, procps): %v", tool, err)
		}
	}
	n := opts.Backends
	if n == 0 {
		n = 2
	}
	if n < 1 || n > MaxBackends {
		t.Fatalf("netnstest: Backends = %d, want 1 to %d", opts.Backends, MaxBackends)
	}
	mtu := opts.MTU
	if mtu == 0 {
		mtu = 1500
	}
	prefix := opts.prefix
	if prefix == "" {
		prefix = newPrefix()
	}
	if !validPrefix(prefix) {
		t.Fatalf("netnstest: invalid prefix %q", prefix)
	}

	tp := &Topology{prefix: prefix, sw: prefix + "-sw", mtu: mtu}
	tp.hosts = append(tp.hosts,
		&Host{name: "client", addr: clientAddr},
		&Host{name: "lb", addr: lbAddr})
	for i := 1; i <= n; i++ {
		tp.hosts = append(tp.hosts, &Host{name: "be" + strconv.Itoa(i), addr: backendAddr(i), backend: true})
	}
	for _, h := range tp.hosts {
		h.topo = tp
		h.ns = prefix + "-" + h.name
	}
	for name := range opts.Offloads {
		if name != "*" && !slices.ContainsFunc(tp.hosts, func(h *Host) bool { return h.name == name }) {
			t.Fatalf("netnstest: Offloads names unknown host %q", name)
		}
	}

	t.Cleanup(func() {
		for _, err := range tp.destroy() {
			t.Errorf("netnstest: cleanup: %v", err)
		}
	})
	if err := writeRecord(prefix); err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	if err := tp.build(opts); err != nil {
		t.Fatalf("netnstest: building topology %s: %v", prefix, err)
	}
	t.Logf("netnstest: topology %s: %s", prefix, tp)
	return tp
}

// newPrefix returns "nib" and six random hex digits, unused so far.
func newPrefix() string {
	for range 16 {
		p := "nib" + randomHex(3)
		if left, err := LeftOver(p); err == nil && len(left) == 0 {
			return p
		}
	}
	return "nib" + randomHex(3)
}

// String describes the hosts, e.g. "client=198.51.100.10 lb=198.51.100.2 ...".
func (tp *Topology) String() string {
	var b strings.Builder
	for i, h := range tp.hosts {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", h.name, h.addr)
	}
	fmt.Fprintf(&b, " vip=%s mtu=%d", vip, tp.mtu)
	return b.String()
}

// build creates the namespaces in order; destroy removes what exists.
func (tp *Topology) build(opts Options) error {
	ip := func(args ...string) error {
		_, err := command("ip", args...)
		return err
	}
	sw := tp.sw
	if err := ip("netns", "add", sw); err != nil {
		return err
	}
	quiet := []string{"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"}
	if err := sysctl(sw, quiet...); err != nil {
		return err
	}
	if err := ip("-n", sw, "link", "add", "br0", "type", "bridge",
		"stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"); err != nil {
		return err
	}
	if err := ip("-n", sw, "link", "set", "br0", "up"); err != nil {
		return err
	}
	// A switch forwards frames as they are. Where br_netfilter is loaded
	// (container hosts), bridged IPv4 would go through iptables, which
	// drops malformed headers and so hides them from the tests that send
	// such frames on purpose. The settings exist only with the module.
	for _, key := range []string{"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables", "net.bridge.bridge-nf-call-arptables"} {
		if _, err := os.Stat("/proc/sys/" + strings.ReplaceAll(key, ".", "/")); err == nil {
			if err := sysctl(sw, key+"=0"); err != nil {
				return err
			}
		}
	}
	mtu := strconv.Itoa(tp.mtu)
	for _, h := range tp.hosts {
		ns := h.ns
		if err := ip("netns", "add", ns); err != nil {
			return err
		}
		if err := ip("-n", ns, "link", "set", "lo", "up"); err != nil {
			return err
		}
		if err := sysctl(ns, quiet...); err != nil {
			return err
		}
		// Created in place: no link ever exists in the root namespace. The
		// switch side is named after the host ("client", "be1") inside sw.
		if err := ip("-n", ns, "link", "add", "eth0", "mtu", mtu, "address", macFor(h.addr).String(),
			"type", "veth", "peer", "name", h.name, "netns", sw, "mtu", mtu); err != nil {
			return err
		}
		if err := ip("-n", sw, "link", "set", h.name, "master", "br0", "up"); err != nil {
			return err
		}
		if err := ip("-n", ns, "addr", "add", netip.PrefixFrom(h.addr, subnet.Bits()).String(), "dev", "eth0"); err != nil {
			return err
		}
		if h.backend && !opts.NoBackendVIP {
			if err := ip("-n", ns, "addr", "add", netip.PrefixFrom(vip, 32).String(), "dev", "lo"); err != nil {
				return err
			}
			if err := sysctl(ns,
				"net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.eth0.arp_ignore=1",
				"net.ipv4.conf.all.arp_announce=2", "net.ipv4.conf.eth0.arp_announce=2"); err != nil {
				return err
			}
		}
		off, ok := opts.Offloads[h.name]
		if !ok {
			off, ok = opts.Offloads["*"]
		}
		if ok {
			if err := h.setOffloads(off); err != nil {
				return err
			}
		}
		if err := ip("-n", ns, "link", "set", "eth0", "up"); err != nil {
			return err
		}
	}
	return tp.waitUp(2 * time.Second)
}

// waitUp waits until every eth0 reports operstate UP.
func (tp *Topology) waitUp(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, h := range tp.hosts {
		for {
			out, err := command("ip", "-n", h.ns, "-j", "link", "show", "dev", "eth0")
			if err != nil {
				return err
			}
			var links []struct {
				OperState string `json:"operstate"`
			}
			if err := json.Unmarshal([]byte(out), &links); err != nil {
				return fmt.Errorf("ip -n %s -j link show dev eth0: %v", h.ns, err)
			}
			if len(links) == 1 && links[0].OperState == "UP" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: eth0 not up after %v: %s", h.ns, limit, out)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// destroy deletes the host namespaces (which deletes their veths), then the
// switch namespace, then the owner record. It tries every step and returns
// the errors. Namespaces that do not exist are skipped.
func (tp *Topology) destroy() []error {
	var errs []error
	del := func(ns string) {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); os.IsNotExist(err) {
			return
		}
		if _, err := command("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(tp.hosts) - 1; i >= 0; i-- {
		del(tp.hosts[i].ns)
	}
	del(tp.sw)
	if err := removeRecord(tp.prefix); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// Prefix is the topology's unique name, e.g. "nib3fa9c1"; every namespace it
// created is named Prefix()+"-"+host.
func (tp *Topology) Prefix() string { return tp.prefix }

// SwitchNS is the namespace holding the bridge "br0" and its ports, one per
// host and named after it ("client", "lb", "be1", ...), e.g. for tcpdump
// or `ip -s link` on a port.
func (tp *Topology) SwitchNS() string { return tp.sw }

// SwitchDo runs f on a thread in the switch's namespace, as Host.Do does
// for a host (e.g. to attach a program to a bridge port there).
func (tp *Topology) SwitchDo(f func() error) error {
	return (&Host{name: "switch", ns: tp.sw}).Do(f)
}

// MTU is the MTU of every eth0.
func (tp *Topology) MTU() int { return tp.mtu }

// VIP is the virtual address: 198.51.100.100. It is configured on the backends'
// lo (unless Options.NoBackendVIP) and nowhere else; nobody answers ARP for it
// until lbd does.
func (tp *Topology) VIP() netip.Addr { return vip }

// Subnet is the topology's one IPv4 subnet, 198.51.100.0/24.
func (tp *Topology) Subnet() netip.Prefix { return subnet }

// Hosts returns client, lb and the backends, in that order.
func (tp *Topology) Hosts() []*Host { return slices.Clone(tp.hosts) }

// Backends returns be1..beN.
func (tp *Topology) Backends() []*Host {
	var bs []*Host
	for _, h := range tp.hosts {
		if h.backend {
			bs = append(bs, h)
		}
	}
	return bs
}

// Host returns the host with the given name ("client", "lb", "be1", ...). It
// panics for an unknown name: that is a bug in the test.
func (tp *Topology) Host(name string) *Host {
	for _, h := range tp.hosts {
		if h.name == name {
			return h
		}
	}
	names := make([]string, len(tp.hosts))
	for i, h := range tp.hosts {
		names[i] = h.name
	}
	sort.Strings(names)
	panic(fmt.Sprintf("netnstest: no host %q in topology %s (have %s)", name, tp.prefix, strings.Join(names, ", ")))
}

// Client is Host("client").
func (tp *Topology) Client() *Host { return tp.Host("client") }

// LB is Host("lb").
func (tp *Topology) LB() *Host { return tp.Host("lb") }

func sysctl(ns string, settings ...string) error {
	args := append([]string{"netns", "exec", ns, "sysctl", "-q", "-w"}, settings...)
	_, err := command("ip", args...)
	return err
}
