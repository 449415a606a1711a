package netconfig

import (
	"context"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/netnstest"
)

// ipAddrs lists eth0's addresses in h's namespace as `ip` shows them.
func ipAddrs(t *testing.T, h *netnstest.Host) []string {
	t.Helper()
	var out []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(h.Run(t, "ip", "-j", "addr", "show", "dev", "eth0")), &out); err != nil {
		t.Fatal(err)
	}
	var l []string
	for _, i := range out {
		for _, a := range i.AddrInfo {
			l = append(l, netip.PrefixFrom(netip.MustParseAddr(a.Local), a.PrefixLen).String())
		}
	}
	slices.Sort(l)
	return l
}

// ipDefaults lists the default routes of a family ("-4", "-6") in h's
// namespace as "via GW dev DEV metric M".
func ipDefaults(t *testing.T, h *netnstest.Host, family string) []string {
	t.Helper()
	var out []struct {
		Gateway string `json:"gateway"`
		Dev     string `json:"dev"`
		Metric  int    `json:"metric"`
	}
	if err := json.Unmarshal([]byte(h.Run(t, "ip", "-j", family, "route", "show", "default")), &out); err != nil {
		t.Fatal(err)
	}
	var l []string
	for _, r := range out {
		l = append(l, "via "+r.Gateway+" dev "+r.Dev+" metric "+strconv.Itoa(r.Metric))
	}
	return l
}

// applyOK applies n and checks the changes it reports.
func applyOK(t *testing.T, ap *Applier, n *config.Network, want []string) {
	t.Helper()
	got, err := ap.Apply(n)
	if err != nil {
		t.Fatalf("Apply(%v): %v (changes so far %q)", n, err, got)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Apply(%v) changes (-want +got):\n%s", n, diff)
	}
}

// The apply code in a network namespace: the address, default route and
// resolver file are set, a second apply changes nothing, a new address
// replaces the old one, a link taken down comes back with its route, and
// IPv6 is added and removed next to the kernel's link-local address.
func TestApplyNetns(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	topo := netnstest.New(t, netnstest.Options{Backends: 1})
	lb, client := topo.LB(), topo.Client()
	var h *netlink.Handle
	if err := lb.Do(func() (err error) {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)

	// gokrazy's /tmp/resolv.conf starts as a symlink to /proc/net/pnp.
	dir := t.TempDir()
	pnp := filepath.Join(dir, "pnp")
	if err := os.WriteFile(pnp, []byte("#PROTO: none\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.Symlink(pnp, resolv); err != nil {
		t.Fatal(err)
	}
	ap := &Applier{Handle: h, ResolvConf: resolv}

	n := &config.Network{
		Interface: "eth0", Mode: config.NetworkStatic,
		Address: pfx("198.51.100.5/24"), Gateway: addr("198.51.100.10"),
		DNS: []netip.Addr{addr("198.51.100.53")},
	}
	applyOK(t, ap, n, []string{
		"eth0: removed address 198.51.100.2/24",
		"eth0: added address 198.51.100.5/24",
		"eth0: set default route 0.0.0.0/0 via 198.51.100.10 metric 1",
		resolv + ": name servers 198.51.100.53",
	})
	if got, want := ipAddrs(t, lb), []string{"198.51.100.5/24"}; !slices.Equal(got, want) {
		t.Errorf("addresses %q, want %q", got, want)
	}
	if got, want := ipDefaults(t, lb, "-4"), []string{"via 198.51.100.10 dev eth0 metric 1"}; !slices.Equal(got, want) {
		t.Errorf("default routes %q, want %q", got, want)
	}
	// Off-link traffic would go through the gateway, from the new address
	// (a lookup only: nothing is sent).
	if out := lb.Run(t, "ip", "route", "get", "203.0.113.1"); !strings.Contains(out, "via 198.51.100.10 dev eth0 src 198.51.100.5") {
		t.Errorf("ip route get 203.0.113.1: %s", out)
	}
	if fi, err := os.Lstat(resolv); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Errorf("resolver file: %v, %v (want a regular file, 0644)", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(resolv); string(b) != resolvHeader+"nameserver 198.51.100.53\n" {
		t.Errorf("resolver file: %q", b)
	}
	if b, _ := os.ReadFile(pnp); string(b) != "#PROTO: none\n" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	reachable(t, lb, client, "198.51.100.5")

	// Idempotent.
	applyOK(t, ap, n, nil)

	// A new address and gateway: the old address goes.
	n.Address, n.Gateway = pfx("198.51.100.6/25"), addr("198.51.100.21")
	applyOK(t, ap, n, []string{
		"eth0: removed address 198.51.100.5/24",
		"eth0: added address 198.51.100.6/25",
		"eth0: set default route 0.0.0.0/0 via 198.51.100.21 metric 1",
	})
	if got, want := ipAddrs(t, lb), []string{"198.51.100.6/25"}; !slices.Equal(got, want) {
		t.Errorf("addresses %q, want %q", got, want)
	}
	if got, want := ipDefaults(t, lb, "-4"), []string{"via 198.51.100.21 dev eth0 metric 1"}; !slices.Equal(got, want) {
		t.Errorf("default routes %q, want %q", got, want)
	}
	reachable(t, lb, client, "198.51.100.6")

	// A stale default route of another metric goes; a link taken down
	// (which drops its routes) comes back up with its route.
	lb.Run(t, "ip", "route", "add", "default", "via", "198.51.100.10", "dev", "eth0", "metric", "100")
	lb.Run(t, "ip", "link", "set", "eth0", "down")
	applyOK(t, ap, n, []string{
		"eth0: set up",
		"eth0: set default route 0.0.0.0/0 via 198.51.100.21 metric 1",
	})
	if got, want := ipDefaults(t, lb, "-4"), []string{"via 198.51.100.21 dev eth0 metric 1"}; !slices.Equal(got, want) {
		t.Errorf("default routes %q, want %q", got, want)
	}
	lb.Run(t, "ip", "route", "add", "default", "via", "198.51.100.10", "dev", "eth0", "metric", "100")
	applyOK(t, ap, n, []string{"eth0: removed default route 0.0.0.0/0 via 198.51.100.10 metric 100"})

	// IPv6 next to the kernel's link-local address.
	lb.Sysctl(t, "net.ipv6.conf.eth0.disable_ipv6", "0")
	lb.Sysctl(t, "net.ipv6.conf.eth0.accept_ra", "0")
	linkLocal := waitLinkLocal(t, lb)
	n6 := n.Clone()
	n6.Address6, n6.Gateway6 = pfx("2001:db8::5/64"), addr("fe80::1")
	applyOK(t, ap, n6, []string{
		"eth0: added address 2001:db8::5/64",
		"eth0: set default route ::/0 via fe80::1 metric 1",
	})
	if got, want := ipAddrs(t, lb), []string{"198.51.100.6/25", "2001:db8::5/64", linkLocal}; !slices.Equal(got, want) {
		t.Errorf("addresses %q, want %q", got, want)
	}
	if got, want := ipDefaults(t, lb, "-6"), []string{"via fe80::1 dev eth0 metric 1"}; !slices.Equal(got, want) {
		t.Errorf("IPv6 default routes %q, want %q", got, want)
	}
	applyOK(t, ap, n6, nil)
	applyOK(t, ap, n, []string{
		"eth0: removed address 2001:db8::5/64",
		"eth0: removed default route ::/0 via fe80::1 metric 1",
	})
	if got, want := ipAddrs(t, lb), []string{"198.51.100.6/25", linkLocal}; !slices.Equal(got, want) {
		t.Errorf("addresses %q, want %q", got, want)
	}

	// Errors name the interface; nothing changes.
	bad := n.Clone()
	bad.Interface = "nope0"
	if got, err := ap.Apply(bad); err == nil || !strings.Contains(err.Error(), "interface nope0: ") || got != nil {
		t.Errorf("Apply on a missing interface = %q, %v", got, err)
	}
	if _, err := ap.Apply(config.NewNetwork()); err == nil {
		t.Error("Apply(dhcp) succeeded")
	}
	if st, err := ap.State("eth0"); err != nil || !st.Up || len(st.Defaults) != 1 {
		t.Errorf("State = %+v, %v", st, err)
	}
}

// reachable checks that client reaches a listener of lb on a.
func reachable(t *testing.T, lb, client *netnstest.Host, a string) {
	t.Helper()
	ln, err := lb.Listen("tcp", a+":7")
	if err != nil {
		t.Fatalf("listening on %s: %v", a, err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.WriteString(c, "hello")
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "tcp", a+":7")
	if err != nil {
		t.Fatalf("client cannot reach %s: %v", a, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); string(b) != "hello" {
		t.Errorf("from %s: %q, %v", a, b, err)
	}
}

// waitLinkLocal waits for eth0's IPv6 link-local address and returns it.
func waitLinkLocal(t *testing.T, h *netnstest.Host) string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, a := range ipAddrs(t, h) {
			if strings.HasPrefix(a, "fe80:") {
				return a
			}
		}
	}
	t.Fatal("no IPv6 link-local address on eth0")
	return ""
}
