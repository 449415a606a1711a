package lbd

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"

	"github.com/nib-lb/nib/internal/dsrsetup"
	"github.com/nib-lb/nib/internal/netnstest"
)

// runSetupScript runs a `setup script` script in a backend's namespace,
// with its files (the state for -undo) under root, and returns its output.
func runSetupScript(t *testing.T, be *netnstest.Host, root, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := be.Command(ctx, "sh", "-s")
	cmd.Stdin = strings.NewReader(script)
	cmd.Env = append(os.Environ(), "NIB_DSR_ROOT="+root)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: setup script: %v\n%s", be, err, out)
	}
	return string(out)
}

// backendDSRState is what the setup script may change on a backend: lo's
// addresses, the ARP sysctls of every interface and the script's state file.
func backendDSRState(t *testing.T, be *netnstest.Host, root string) string {
	t.Helper()
	s := be.Run(t, "sh", "-c", `ip -4 -o addr show dev lo | awk '{ print "lo", $4 }'
		cd /proc/sys/net/ipv4/conf && for i in *; do echo "$i arp_ignore=$(cat "$i/arp_ignore") arp_announce=$(cat "$i/arp_announce")"; done`)
	state, err := os.ReadFile(root + dsrsetup.StatePath)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return s + "state:\n" + string(state)
}

// arpRepliesForVIP asks for the VIP from the client (its neighbour entry
// flushed, then a connection attempt) and returns the MACs that answered
// within a second.
func arpRepliesForVIP(t *testing.T, tp *netnstest.Topology, sniff *arpSniffer) []string {
	t.Helper()
	client, vip := tp.Client(), tp.VIP()
	client.Run(t, "ip", "neigh", "flush", "to", vip.String())
	since := time.Now()
	// A second for the connection, two for the replies: arpd answers at
	// once, but a busy machine (CI) can take a while to show it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if c, err := client.Dial(ctx, "tcp", netip.AddrPortFrom(vip, 80).String()); err == nil {
		c.Close()
	}
	var macs []string
	for end := since.Add(2 * time.Second); ; {
		f, ok := sniff.wait(since, time.Until(end), func(f sniffed) bool {
			return f.p.Operation == arp.OperationReply && f.p.SenderIP == vip
		})
		if !ok {
			return macs
		}
		macs = append(macs, f.p.SenderHardwareAddr.String())
		since = f.at.Add(time.Nanosecond)
	}
}

// TestLinuxDSRSetupScript: backends without the VIP and with the default
// ARP sysctls do not work behind lbd's DSR (requests through the VIP time
// out); the script `setup script -os linux` prints, run on each backend,
// makes DSR work end to end, with only the LB answering ARP for the VIP;
// running it again changes nothing; its -undo script takes the VIP off lo
// and puts the sysctls back. And the ARP check can fail: a VIP on lo
// without the script's sysctls leaks.
func TestLinuxDSRSetupScript(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	tp := netnstest.New(t, netnstest.Options{NoBackendVIP: true})
	vip := tp.VIP()
	bes := tp.Backends()
	up, err := dsrsetup.Script(dsrsetup.ScriptOptions{VIPs: []netip.Addr{vip}, OS: dsrsetup.OSLinux})
	if err != nil {
		t.Fatal(err)
	}
	down, err := dsrsetup.Script(dsrsetup.ScriptOptions{VIPs: []netip.Addr{vip}, OS: dsrsetup.OSLinux, Undo: true})
	if err != nil {
		t.Fatal(err)
	}

	// The services listen on every address, as most do: before the script
	// they run but cannot see requests for the VIP.
	roots := map[string]string{}
	before := map[string]string{}
	for _, be := range bes {
		name := be.Name()
		netnstest.ServeHTTP(t, be, ":80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
		roots[name] = t.TempDir()
		before[name] = backendDSRState(t, be, roots[name])
	}
	out := lbdIn(t, tp.LB(), "-df", "-r", "-O", "dsr_if eth0", vip.String()+":80", bes[0].Addr().String(), bes[1].Addr().String())
	out.waitFor(t, "forwarding", 10*time.Second)

	url := "http://" + vip.String() + "/"
	hc := tp.Client().HTTPClient(t)
	hc.Timeout = 1500 * time.Millisecond
	hc.Transport.(*http.Transport).DisableKeepAlives = true
	// Without the script: each backend gets (and drops) one request.
	for i := range 2 {
		if resp, err := hc.Get(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Fatalf("request %d through the VIP worked before the setup script: %q", i, b)
		}
	}

	for _, be := range bes {
		o := runSetupScript(t, be, roots[be.Name()], up)
		if !strings.Contains(o, "added "+vip.String()+"/32 to lo") {
			t.Fatalf("%s: setup script:\n%s", be, o)
		}
	}
	seen := getAll(t, tp.Client(), url, 20, 10*time.Second)
	if seen["be1"] == 0 || seen["be2"] == 0 || seen["be1"]+seen["be2"] != 20 {
		t.Fatalf("answers by backend after the setup script: %v", seen)
	}
	// Only the LB answers ARP for the VIP, and the client has it at the LB.
	sniff := sniffARP(t, tp.Client())
	lbMAC := tp.LB().MAC().String()
	macs := arpRepliesForVIP(t, tp, sniff)
	if len(macs) == 0 || slices.ContainsFunc(macs, func(m string) bool { return m != lbMAC }) {
		t.Fatalf("ARP replies for the VIP from %v, want only the LB's %s", macs, lbMAC)
	}
	if n, ok := netnstest.ARPEntry(t, tp.Client(), vip); !ok || n.MAC.String() != lbMAC {
		t.Fatalf("client's entry for the VIP: %+v, want the LB's MAC %s", n, lbMAC)
	}

	// Again: nothing changes, and DSR still works.
	for _, be := range bes {
		applied := backendDSRState(t, be, roots[be.Name()])
		o := runSetupScript(t, be, roots[be.Name()], up)
		if again := backendDSRState(t, be, roots[be.Name()]); again != applied {
			t.Fatalf("%s: the second run changed something:\nafter one run:\n%s\nafter two:\n%s\n%s", be, applied, again, o)
		}
	}
	if seen := getAll(t, tp.Client(), url, 4, 5*time.Second); seen["be1"]+seen["be2"] != 4 {
		t.Fatalf("answers after the second run: %v", seen)
	}

	// Undo: the state from before, and DSR does not work any more.
	for _, be := range bes {
		o := runSetupScript(t, be, roots[be.Name()], down)
		if after := backendDSRState(t, be, roots[be.Name()]); after != before[be.Name()] {
			t.Fatalf("%s: undo did not restore the state:\nbefore:\n%s\nafter undo:\n%s\n%s", be, before[be.Name()], after, o)
		}
	}
	if resp, err := hc.Get(url); err == nil {
		resp.Body.Close()
		t.Fatal("a request through the VIP worked after the undo script")
	}

	// The ARP check above can fail: the VIP on lo with the default
	// sysctls (the usual mistake) makes the backend answer for it.
	bes[0].Run(t, "ip", "addr", "add", vip.String()+"/32", "dev", "lo")
	macs = arpRepliesForVIP(t, tp, sniff)
	if !slices.Contains(macs, bes[0].MAC().String()) {
		t.Fatalf("with the VIP on lo and arp_ignore=0, %s did not answer ARP for it (replies from %v)", bes[0], macs)
	}
}
