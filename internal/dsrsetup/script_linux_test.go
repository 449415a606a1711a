package dsrsetup

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/netnstest"
)

// The Linux scripts run for real as root in a backend's network namespace
// of a netnstest topology (its own lo, eth0 and net.ipv4.conf sysctls, so
// the host is never touched), with every file they write under a temporary
// NIB_DSR_ROOT.

// linuxHost is a backend namespace without the VIP and with the kernel's
// default ARP sysctls, and the root directory its scripts write under.
type linuxHost struct {
	be   *netnstest.Host
	root string
}

func newLinuxHost(t *testing.T) *linuxHost {
	t.Helper()
	netnstest.SkipUnprivileged(t)
	tp := netnstest.New(t, netnstest.Options{Backends: 1, NoBackendVIP: true})
	h := &linuxHost{be: tp.Backends()[0], root: t.TempDir()}
	// The directories a Debian system has (the scripts create missing
	// ones, and do not remove what they did not create).
	for _, d := range []string{"var/lib", "etc/sysctl.d", "etc/systemd/network", "etc/network/interfaces.d"} {
		if err := os.MkdirAll(filepath.Join(h.root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// run runs the script for o in the namespace and returns its output; it
// fails the test unless the exit status is code.
func (h *linuxHost) run(t *testing.T, o ScriptOptions, code int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := h.be.Command(ctx, "sh", "-s")
	cmd.Env = append(os.Environ(), "NIB_DSR_ROOT="+h.root)
	return runScript(t, cmd, o, code)
}

// sysctl reads net.ipv4.conf.IF.KEY in the namespace.
func (h *linuxHost) sysctl(t *testing.T, iface, key string) string {
	t.Helper()
	return strings.TrimSpace(h.be.Run(t, "cat", "/proc/sys/net/ipv4/conf/"+iface+"/"+key))
}

// setSysctl writes net.ipv4.conf.IF.KEY in the namespace.
func (h *linuxHost) setSysctl(t *testing.T, iface, key, value string) {
	t.Helper()
	h.be.Run(t, "sh", "-c", "echo "+value+" >/proc/sys/net/ipv4/conf/"+iface+"/"+key)
}

// loAddrs is lo's IPv4 addresses with prefix length, sorted.
func (h *linuxHost) loAddrs(t *testing.T) []string {
	t.Helper()
	var addrs []string
	for _, line := range strings.Split(h.be.Run(t, "ip", "-4", "-o", "addr", "show", "dev", "lo"), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[2] == "inet" {
			addrs = append(addrs, f[3])
		}
	}
	slices.Sort(addrs)
	return addrs
}

// snapshot is everything the scripts may change: lo's addresses, the ARP
// and rp_filter sysctls of every interface, and every file under the root.
func (h *linuxHost) snapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "lo: %v\n", h.loAddrs(t))
	b.WriteString(h.be.Run(t, "sh", "-c", `cd /proc/sys/net/ipv4/conf && for i in *; do
		for k in arp_ignore arp_announce rp_filter; do echo "$i.$k=$(cat "$i/$k")"; done
	done`))
	filepath.WalkDir(h.root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(h.root, p)
		if d.IsDir() {
			fmt.Fprintf(&b, "dir %s\n", rel)
			return nil
		}
		data, _ := os.ReadFile(p)
		fi, _ := d.Info()
		fmt.Fprintf(&b, "file %s %v\n%s\n", rel, fi.Mode(), data)
		return nil
	})
	return b.String()
}

// file reads a file under the root ("" if it does not exist).
func (h *linuxHost) file(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.root, rel))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

func (h *linuxHost) exists(rel string) bool {
	_, err := os.Stat(filepath.Join(h.root, rel))
	return err == nil
}

// wantARP fails the test unless arp_ignore and arp_announce of every
// interface in ifs are ignore and announce.
func (h *linuxHost) wantARP(t *testing.T, ignore, announce string, ifs ...string) {
	t.Helper()
	for _, i := range ifs {
		if got := h.sysctl(t, i, "arp_ignore"); got != ignore {
			t.Errorf("net.ipv4.conf.%s.arp_ignore = %s, want %s", i, got, ignore)
		}
		if got := h.sysctl(t, i, "arp_announce"); got != announce {
			t.Errorf("net.ipv4.conf.%s.arp_announce = %s, want %s", i, got, announce)
		}
	}
}

// TestLinuxScriptApplyAgainUndo: on a backend with no VIP and default
// sysctls the script puts the VIPs on lo as /32 and sets the ARP sysctls
// of all and of the interfaces that are up (not of one that is down);
// running it again changes nothing; -undo restores the state from before,
// and running that again changes nothing either.
func TestLinuxScriptApplyAgainUndo(t *testing.T) {
	h := newLinuxHost(t)
	h.be.Run(t, "ip", "link", "add", "spare0", "type", "veth", "peer", "name", "spare1") // down: not facing the LB
	// Up, and named like a VLAN (a dot: net.ipv4.conf.eth1/100 for sysctl(8)).
	h.be.Run(t, "ip", "link", "add", "eth1.100", "type", "veth", "peer", "name", "eth2.100")
	h.be.Run(t, "ip", "link", "set", "eth1.100", "up")
	h.be.Run(t, "ip", "link", "set", "eth2.100", "up")
	before := h.snapshot(t)
	up := ScriptOptions{VIPs: []netip.Addr{vipA, vipB}, OS: OSLinux}

	out := h.run(t, up, 0)
	if got, want := h.loAddrs(t), []string{"127.0.0.1/8", "198.51.100.100/32", "198.51.100.101/32"}; !slices.Equal(got, want) {
		t.Fatalf("lo: %v, want %v\n%s", got, want, out)
	}
	h.wantARP(t, "1", "2", "all", "eth0", "eth1.100", "eth2.100")
	h.wantARP(t, "0", "0", "spare0", "spare1", "default", "lo")
	for _, want := range []string{
		"net.ipv4.conf.all.arp_ignore: 0 -> 1\n",
		"net.ipv4.conf.eth0.arp_announce: 0 -> 2\n",
		"added 198.51.100.101/32 to lo\n",
		"rp_filter on eth0:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// (In the order of the interfaces' indexes, which the test does not fix.)
	if _, line, _ := strings.Cut(out, "the interfaces that face the load balancer: "); !sameFields(strings.SplitN(line, "\n", 2)[0], "eth0 eth1.100 eth2.100") {
		t.Errorf("interfaces facing the load balancer: %q, want eth0 eth1.100 eth2.100", line)
	}
	state := "# nib-dsr: what setup script changed, for its -undo. Do not edit.\n" +
		"sysctl all/arp_ignore 0\nsysctl all/arp_announce 0\nsysctl eth0/arp_ignore 0\nsysctl eth0/arp_announce 0\n" +
		"sysctl eth1.100/arp_ignore 0\nsysctl eth1.100/arp_announce 0\nsysctl eth2.100/arp_ignore 0\nsysctl eth2.100/arp_announce 0\n" +
		"addr 198.51.100.100 added\naddr 198.51.100.101 added\n"
	if got := h.file(t, StatePath); !sameFields(got, state) {
		t.Errorf("state file:\n%s\nwant:\n%s", got, state)
	}

	applied := h.snapshot(t)
	out = h.run(t, up, 0)
	if again := h.snapshot(t); again != applied {
		t.Fatalf("the second run changed something:\nafter one run:\n%s\nafter two:\n%s", applied, again)
	}
	if strings.Contains(out, "->") || strings.Contains(out, "added") || !strings.Contains(out, "198.51.100.100 is on lo already") {
		t.Errorf("second run's output:\n%s", out)
	}

	down := ScriptOptions{VIPs: []netip.Addr{vipA, vipB}, OS: OSLinux, Undo: true}
	out = h.run(t, down, 0)
	if after := h.snapshot(t); after != before {
		t.Fatalf("undo did not restore the state:\nbefore:\n%s\nafter undo:\n%s\n%s", before, after, out)
	}
	if !strings.Contains(out, "net.ipv4.conf.all.arp_ignore restored to 0") || !strings.Contains(out, "removed 198.51.100.100/32 from lo") {
		t.Errorf("undo's output:\n%s", out)
	}
	h.run(t, down, 0)
	if after := h.snapshot(t); after != before {
		t.Fatalf("a second undo changed something:\n%s", after)
	}
}

// TestLinuxScriptUndoKeepsWhatWasThere: a VIP that was on lo before and
// sysctls that had other values come back as they were, and a VIP on
// another interface is refused before anything changes.
func TestLinuxScriptUndoKeepsWhatWasThere(t *testing.T) {
	h := newLinuxHost(t)
	h.be.Run(t, "ip", "addr", "add", "198.51.100.100/32", "dev", "lo")
	h.setSysctl(t, "all", "arp_ignore", "1")    // already right: not recorded
	h.setSysctl(t, "eth0", "arp_announce", "1") // changed to 2, back to 1
	h.setSysctl(t, "eth0", "arp_ignore", "8")   // lowered to 1 (8: never answer)
	before := h.snapshot(t)

	out := h.run(t, ScriptOptions{VIPs: []netip.Addr{vipA, vipB}, OS: OSLinux}, 0)
	h.wantARP(t, "1", "2", "all", "eth0")
	if !strings.Contains(out, "198.51.100.100 is on lo already") || !strings.Contains(out, "net.ipv4.conf.all.arp_ignore is 1 already") {
		t.Errorf("output:\n%s", out)
	}
	if s := h.file(t, StatePath); !strings.Contains(s, "addr 198.51.100.100 kept\n") || strings.Contains(s, "all/arp_ignore") {
		t.Errorf("state file:\n%s", s)
	}

	// Undo one VIP: the other still needs the ARP settings.
	out = h.run(t, ScriptOptions{VIPs: []netip.Addr{vipB}, OS: OSLinux, Undo: true}, 0)
	if got := h.loAddrs(t); !slices.Equal(got, []string{"127.0.0.1/8", "198.51.100.100/32"}) {
		t.Fatalf("lo after undoing %s: %v", vipB, got)
	}
	h.wantARP(t, "1", "2", "all", "eth0")
	if !strings.Contains(out, "ARP settings kept: still needed for 198.51.100.100") {
		t.Errorf("partial undo's output:\n%s", out)
	}
	// Undo the other: it stays on lo (it was there before), the sysctls
	// go back.
	out = h.run(t, ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinux, Undo: true}, 0)
	if after := h.snapshot(t); after != before {
		t.Fatalf("undo did not restore the state:\nbefore:\n%s\nafter:\n%s\n%s", before, after, out)
	}
	if !strings.Contains(out, "198.51.100.100 was on lo before setup: left there") {
		t.Errorf("undo's output:\n%s", out)
	}

	// The VIP on eth0 (where it would answer ARP) is refused, and nothing
	// changes.
	h.be.Run(t, "ip", "addr", "add", "198.51.100.101/24", "dev", "eth0")
	before = h.snapshot(t)
	out = h.run(t, ScriptOptions{VIPs: []netip.Addr{vipA, vipB}, OS: OSLinux}, 1)
	if !strings.Contains(out, "nib-dsr: error: 198.51.100.101 is on eth0: a DSR backend must hold the VIP on lo only") {
		t.Errorf("output:\n%s", out)
	}
	if after := h.snapshot(t); after != before {
		t.Fatalf("a refused run changed something:\n%s", after)
	}
}

// TestLinuxScriptIfaces: -iface names the interfaces, also one that is
// down, and an interface that does not exist stops the script before it
// changes anything.
func TestLinuxScriptIfaces(t *testing.T) {
	h := newLinuxHost(t)
	h.be.Run(t, "ip", "link", "add", "spare0", "type", "veth", "peer", "name", "spare1")
	before := h.snapshot(t)
	out := h.run(t, ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinux, Interfaces: []string{"spare0", "eth9"}}, 1)
	if !strings.Contains(out, "no interface eth9") {
		t.Errorf("output:\n%s", out)
	}
	if after := h.snapshot(t); after != before {
		t.Fatalf("a refused run changed something:\n%s", after)
	}
	h.run(t, ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinux, Interfaces: []string{"spare0"}}, 0)
	h.wantARP(t, "1", "2", "all", "spare0")
	h.wantARP(t, "0", "0", "eth0")
	h.run(t, ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinux, Interfaces: []string{"spare0"}, Undo: true}, 0)
	if after := h.snapshot(t); after != before {
		t.Fatalf("undo did not restore the state:\n%s", after)
	}
}

// TestLinuxPersistentScript: linux-persistent writes the sysctl.d file and
// the networkd or ifupdown configuration of lo (exact content), applies
// the settings at once, changes nothing when run again, and its -undo
// removes the files and reverts the run-time state.
func TestLinuxPersistentScript(t *testing.T) {
	const sysctlConf = "# nib DSR: never answer ARP for the VIPs on lo, nor announce them.\n" +
		"# Written by setup script -os linux-persistent; its -undo removes this file.\n" +
		"net/ipv4/conf/all/arp_ignore = 1\nnet/ipv4/conf/all/arp_announce = 2\n" +
		"net/ipv4/conf/eth0/arp_ignore = 1\nnet/ipv4/conf/eth0/arp_announce = 2\n"
	dropIn := func(vip string) string {
		return "# nib DSR: VIP " + vip + " on lo.\n# Written by setup script -os linux-persistent; its -undo removes this file.\n[Address]\nAddress=" + vip + "/32\n"
	}
	stanza := func(vip string) string {
		return "# nib DSR: VIP " + vip + " on lo.\n# Written by setup script -os linux-persistent; its -undo removes this file.\niface lo inet static\n\taddress " + vip + "/32\n"
	}
	for _, tc := range []struct {
		name  string
		net   string
		setup map[string]string // files under the root before the script
		want  map[string]string // files the script writes
	}{
		{"networkd", NetNetworkd, nil, map[string]string{
			"etc/systemd/network/10-nib-dsr-lo.network.d/nib-dsr-198-51-100-100.conf": dropIn("198.51.100.100"),
			"etc/systemd/network/10-nib-dsr-lo.network.d/nib-dsr-198-51-100-101.conf": dropIn("198.51.100.101"),
		}},
		// A .network file of the system's matches lo: the VIPs go into its
		// drop-ins, and no .network file of ours shadows it.
		{"networkd with lo configured", NetNetworkd, map[string]string{
			"usr/lib/systemd/network/80-lo.network": "[Match]\nName=lo\n",
			"etc/systemd/network/90-eth.network":    "[Match]\nName=eth0\n",
		}, map[string]string{
			"etc/systemd/network/80-lo.network.d/nib-dsr-198-51-100-100.conf": dropIn("198.51.100.100"),
			"etc/systemd/network/80-lo.network.d/nib-dsr-198-51-100-101.conf": dropIn("198.51.100.101"),
		}},
		{"ifupdown", NetIfupdown, map[string]string{
			"etc/network/interfaces": "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n",
		}, map[string]string{
			"etc/network/interfaces.d/nib-dsr-198-51-100-100": stanza("198.51.100.100"),
			"etc/network/interfaces.d/nib-dsr-198-51-100-101": stanza("198.51.100.101"),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newLinuxHost(t)
			for rel, text := range tc.setup {
				os.MkdirAll(filepath.Dir(filepath.Join(h.root, rel)), 0o755)
				if err := os.WriteFile(filepath.Join(h.root, rel), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := h.snapshot(t)
			up := ScriptOptions{VIPs: []netip.Addr{vipA, vipB}, OS: OSLinuxPersistent, Net: tc.net}
			out := h.run(t, up, 0)

			want := map[string]string{SysctlConfPath[1:]: sysctlConf}
			for k, v := range tc.want {
				want[k] = v
			}
			if tc.name == "networkd" {
				want[NetworkdLoFile[1:]] = "# nib DSR: lo for systemd-networkd, as no other .network file matches lo.\n" +
					"# Written by setup script -os linux-persistent; its -undo removes it with the last VIP.\n" +
					"# The VIPs are in the drop-ins of 10-nib-dsr-lo.network.d/.\n[Match]\nName=lo\n\n[Network]\nKeepConfiguration=yes\n"
			} else if h.exists(NetworkdLoFile[1:]) {
				t.Errorf("wrote %s although it is not needed", NetworkdLoFile)
			}
			for rel, text := range want {
				if got := h.file(t, rel); got != text {
					t.Errorf("%s:\n%s\nwant:\n%s", rel, got, text)
				}
				if !strings.Contains(out, "wrote "+filepath.Join(h.root, rel)+"\n") {
					t.Errorf("output does not say it wrote %s:\n%s", rel, out)
				}
			}
			if !strings.Contains(out, "VIPs on lo at boot: "+tc.net+"\n") {
				t.Errorf("output does not say how the VIPs stay:\n%s", out)
			}
			// Applied now, too.
			if got := h.loAddrs(t); !slices.Equal(got, []string{"127.0.0.1/8", "198.51.100.100/32", "198.51.100.101/32"}) {
				t.Fatalf("lo: %v\n%s", got, out)
			}
			h.wantARP(t, "1", "2", "all", "eth0")

			applied := h.snapshot(t)
			h.run(t, up, 0)
			if again := h.snapshot(t); again != applied {
				t.Fatalf("the second run changed something:\nafter one run:\n%s\nafter two:\n%s", applied, again)
			}

			down := ScriptOptions{VIPs: []netip.Addr{vipA, vipB}, OS: OSLinuxPersistent, Net: tc.net, Undo: true}
			out = h.run(t, down, 0)
			if after := h.snapshot(t); after != before {
				t.Fatalf("undo did not restore the state:\nbefore:\n%s\nafter:\n%s\n%s", before, after, out)
			}
			h.run(t, down, 0)
			if after := h.snapshot(t); after != before {
				t.Fatalf("a second undo changed something:\n%s", after)
			}
		})
	}
}

// TestLinuxPersistentScriptDetects: without -net the script picks ifupdown
// where /etc/network/interfaces exists, and where nothing tells it stops
// before changing anything. (Skipped where systemd-networkd runs, since
// the script would rightly pick it.)
func TestLinuxPersistentScriptDetects(t *testing.T) {
	if exec.Command("systemctl", "is-active", "--quiet", "systemd-networkd").Run() == nil {
		t.Skip("systemd-networkd runs here")
	}
	h := newLinuxHost(t)
	up := ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinuxPersistent}
	before := h.snapshot(t)
	out := h.run(t, up, 1)
	if !strings.Contains(out, "nib-dsr: error: cannot tell what configures the network here") {
		t.Errorf("output:\n%s", out)
	}
	if after := h.snapshot(t); after != before {
		t.Fatalf("a refused run changed something:\n%s", after)
	}

	// Without the source line: a warning, and the stanza all the same.
	if err := os.WriteFile(filepath.Join(h.root, "etc/network/interfaces"), []byte("auto lo\niface lo inet loopback\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out = h.run(t, up, 0)
	for _, want := range []string{"VIPs on lo at boot: ifupdown\n", "warning: /etc/network/interfaces does not read", "wrote " + h.root + "/etc/network/interfaces.d/nib-dsr-198-51-100-100\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	h.run(t, ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinuxPersistent, Undo: true}, 0)
	if h.exists("etc/network/interfaces.d/nib-dsr-198-51-100-100") || h.exists(SysctlConfPath[1:]) {
		t.Fatal("undo left the files")
	}
}

// sameFields reports whether a and b have the same lines, or the same
// words in one line, in any order.
func sameFields(a, b string) bool {
	split := func(s string) []string {
		f := strings.Split(strings.TrimSpace(s), "\n")
		if len(f) == 1 {
			f = strings.Fields(f[0])
		}
		slices.Sort(f)
		return f
	}
	return slices.Equal(split(a), split(b))
}
