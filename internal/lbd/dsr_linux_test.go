package lbd

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/packet"

	"github.com/nib-lb/nib/internal/netnstest"
	"github.com/nib-lb/nib/internal/pen"
)

// lbdIn runs the lbd binary in a host's namespace until the test ends.
func lbdIn(t *testing.T, h *netnstest.Host, args ...string) *syncBuffer {
	t.Helper()
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	cmd := h.Command(ctx, lbdBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("lbd output:\n%s", out.String())
		}
	})
	return &out
}

// The seed's DSR and tarpit command lines, with lbd in place of pen, on the
// LB's one interface (which keeps its own address): HTTP through the VIP,
// ARP answered for the VIP and the tarpit address only, tarpit holding a
// request, and the control verbs reading the DSR counters.
func TestLinuxDSRSeedCommandLine(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	tp := netnstest.New(t, netnstest.Options{})
	vip := tp.VIP().String()
	for _, be := range tp.Backends() {
		name := be.Name()
		netnstest.ServeHTTP(t, be, vip+":80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
	}
	ctl := t.TempDir() + "/ctl"
	trap, outside := "198.51.100.77", "198.51.100.78"
	out := lbdIn(t, tp.LB(), "-df", "-C", ctl, "-w", t.TempDir()+"/web.html", "-r",
		"-O", "acl 1 permit "+trap, "-O", "tarpit_acl 1", "-O", "dsr_if eth0",
		vip+":80", tp.Backends()[0].Addr().String(), tp.Backends()[1].Addr().String())
	out.waitFor(t, "forwarding", 10*time.Second)

	client := tp.Client()
	hc := client.HTTPClient(t)
	hc.Timeout = 3 * time.Second
	hc.Transport.(*http.Transport).DisableKeepAlives = true
	seen := map[string]int{}
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; i < 40; {
		// The first requests wait for lbd to claim the VIP and resolve
		// the backends.
		resp, err := hc.Get("http://" + vip + "/")
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("request %d: %v", i, err)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[string(b)]++
		i++
	}
	if seen["be1"] == 0 || seen["be2"] == 0 {
		t.Fatalf("answers by backend: %v", seen)
	}
	// The client learned the VIP at the LB's MAC (lbd answered ARP).
	if n, ok := netnstest.ARPEntry(t, client, tp.VIP()); !ok || n.MAC.String() != tp.LB().MAC().String() {
		t.Fatalf("client's entry for the VIP: %+v", n)
	}

	// The control verbs see the DSR counters (sx: bytes to each backend).
	var sb strings.Builder
	if err := pen.Send(ctl, []string{"servers"}, &sb); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(sb.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "addr "+tp.Backends()[0].Addr().String()) || strings.Contains(lines[0], " sx 0 ") {
		t.Fatalf("servers:\n%s", sb.String())
	}

	sb.Reset()
	if err := pen.Send(ctl, []string{"status"}, &sb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DSR on eth0", "Frames received", "Dropped:", "ARP: requests seen", "VIP " + vip + ": claimed"} {
		if !strings.Contains(sb.String(), want) {
			t.Fatalf("status lacks %q:\n%s", want, sb.String())
		}
	}

	// The tarpit address is answered (after lbd's probe found nobody
	// else using it), and a request to it never completes.
	tc := client.HTTPClient(t)
	tc.Timeout = 2 * time.Second
	for range 3 {
		if resp, err := tc.Get("http://" + trap + "/"); err == nil {
			resp.Body.Close()
			t.Fatal("a request to the tarpit completed")
		}
	}
	if n, ok := netnstest.ARPEntry(t, client, netip.MustParseAddr(trap)); !ok || n.MAC.String() != tp.LB().MAC().String() {
		t.Fatalf("client's entry for the tarpit address: %+v", n)
	}
	// An address outside the tarpit ACL gets no ARP reply.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if c, err := client.Dial(ctx, "tcp", outside+":80"); err == nil {
		c.Close()
		t.Fatal("connected to an address outside the tarpit ACL")
	}
	if n, ok := netnstest.ARPEntry(t, client, netip.MustParseAddr(outside)); ok && n.MAC != nil {
		t.Fatalf("%s resolved to %v", outside, n.MAC)
	}
}

// arpSniffer reads every ARP frame on a host's eth0 (a packet socket made
// in its namespace) and passes them on with the time they were read.
type arpSniffer struct {
	frames chan sniffed
}

type sniffed struct {
	at     time.Time
	ethSrc net.HardwareAddr
	p      arp.Packet
}

func sniffARP(t *testing.T, h *netnstest.Host) *arpSniffer {
	t.Helper()
	var pc *packet.Conn
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		pc, err = packet.Listen(ifi, packet.Raw, 0x0806, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &arpSniffer{frames: make(chan sniffed, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 256)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 14+28 || buf[12] != 0x08 || buf[13] != 0x06 {
				continue
			}
			var p arp.Packet
			if p.UnmarshalBinary(buf[14:n]) != nil {
				continue
			}
			select {
			case s.frames <- sniffed{at: time.Now(), ethSrc: slices.Clone(buf[6:12]), p: p}:
			default:
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return s
}

// wait returns the first frame read after since that matches ok, waiting at
// most d; false if none came.
func (s *arpSniffer) wait(since time.Time, d time.Duration, ok func(sniffed) bool) (sniffed, bool) {
	deadline := time.After(d)
	for {
		select {
		case f := <-s.frames:
			if !f.at.Before(since) && ok(f) {
				return f, true
			}
		case <-deadline:
			return sniffed{}, false
		}
	}
}

// quiet waits (at most d) until no frame matching ok came for gap.
func (s *arpSniffer) quiet(t *testing.T, gap, d time.Duration, ok func(sniffed) bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); {
		if _, seen := s.wait(time.Time{}, gap, ok); !seen {
			return
		}
	}
	t.Fatalf("ARP frames kept coming for %v", d)
}

// getAll makes n requests through url and counts the answers by backend.
func getAll(t *testing.T, client *netnstest.Host, url string, n int, patience time.Duration) map[string]int {
	t.Helper()
	hc := client.HTTPClient(t)
	hc.Timeout = 2 * time.Second
	hc.Transport.(*http.Transport).DisableKeepAlives = true
	seen := map[string]int{}
	deadline := time.Now().Add(patience)
	for i := 0; i < n; {
		resp, err := hc.Get(url)
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("request %d: %v", i, err)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[string(b)]++
		i++
	}
	return seen
}

// TestLinuxDSRFollowsLink: lbd's DSR port follows its interface without a
// restart. When the LB's own address changes (as with a new DHCP lease)
// arpd asks for the backends from the new address at once and traffic
// keeps flowing; when the link goes down and up the VIP is announced again
// (gratuitous ARP) and traffic flows again; when the interface's MAC
// changes the VIP is announced at the new MAC and the forwarder takes
// frames for it.
func TestLinuxDSRFollowsLink(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	tp := netnstest.New(t, netnstest.Options{})
	vip := tp.VIP()
	for _, be := range tp.Backends() {
		name := be.Name()
		netnstest.ServeHTTP(t, be, vip.String()+":80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
	}
	lb, client, be1 := tp.LB(), tp.Client(), tp.Backends()[0]
	atBE1, atClient := sniffARP(t, be1), sniffARP(t, client)
	out := lbdIn(t, lb, "-df", "-r", "-O", "dsr_if eth0",
		vip.String()+":80", be1.Addr().String(), tp.Backends()[1].Addr().String())
	out.waitFor(t, "forwarding", 10*time.Second)
	url := "http://" + vip.String() + "/"
	if seen := getAll(t, client, url, 20, 15*time.Second); seen["be1"] == 0 || seen["be2"] == 0 {
		t.Fatalf("answers by backend: %v", seen)
	}
	lbMAC := lb.MAC()
	fromLB := func(f sniffed) bool { return bytes.Equal(f.ethSrc, lbMAC) }
	announce := func(mac net.HardwareAddr) func(sniffed) bool {
		return func(f sniffed) bool {
			return bytes.Equal(f.ethSrc, mac) && bytes.Equal(f.p.SenderHardwareAddr, mac) && f.p.SenderIP == vip && f.p.TargetIP == vip
		}
	}

	t.Run("address change", func(t *testing.T) {
		oldIP, newIP := lb.Addr(), netip.MustParseAddr("198.51.100.3")
		// As a DHCP client moving to a new lease does: the new address
		// first, then the old one goes. (Promoted to primary, as most
		// distributions configure it; otherwise deleting the primary
		// takes its secondaries with it.)
		lb.Sysctl(t, "net.ipv4.conf.eth0.promote_secondaries", "1")
		changed := time.Now()
		lb.Run(t, "ip", "addr", "add", newIP.String()+"/24", "dev", "eth0")
		lb.Run(t, "ip", "addr", "del", oldIP.String()+"/24", "dev", "eth0")
		// arpd asks for the backend again at once, from the new address
		// (refreshes are 30 s apart: an unchanged arpd sends nothing now,
		// and later still from the address the LB no longer has).
		req, ok := atBE1.wait(changed, 5*time.Second, func(f sniffed) bool {
			return fromLB(f) && f.p.Operation == arp.OperationRequest && f.p.TargetIP == be1.Addr()
		})
		if !ok {
			t.Fatalf("no ARP request for %s from lbd within 5 s of the address change", be1.Addr())
		}
		if req.p.SenderIP != newIP {
			t.Fatalf("lbd asked for %s from %s, want the LB's new address %s", be1.Addr(), req.p.SenderIP, newIP)
		}
		if seen := getAll(t, client, url, 20, 5*time.Second); seen["be1"] == 0 || seen["be2"] == 0 {
			t.Fatalf("answers by backend after the address change: %v", seen)
		}
		// be1 learned the LB's new address from the request: its reply
		// went there.
		if n, ok := netnstest.ARPEntry(t, be1, newIP); !ok || !bytes.Equal(n.MAC, lbMAC) {
			t.Fatalf("be1's entry for %s: %+v", newIP, n)
		}
	})

	t.Run("link down and up", func(t *testing.T) {
		atClient.quiet(t, 1500*time.Millisecond, 10*time.Second, announce(lbMAC))
		lb.Run(t, "ip", "link", "set", "eth0", "down")
		time.Sleep(300 * time.Millisecond)
		up := time.Now()
		lb.Run(t, "ip", "link", "set", "eth0", "up")
		if _, ok := atClient.wait(up, 5*time.Second, announce(lbMAC)); !ok {
			t.Fatal("no gratuitous ARP for the VIP within 5 s of the link coming back up")
		}
		if seen := getAll(t, client, url, 20, 10*time.Second); seen["be1"] == 0 || seen["be2"] == 0 {
			t.Fatalf("answers by backend after the link came back: %v", seen)
		}
	})

	t.Run("MAC change", func(t *testing.T) {
		newMAC := net.HardwareAddr{0x02, 0, 0xc6, 0x33, 0x64, 0x99}
		changed := time.Now()
		lb.Run(t, "ip", "link", "set", "eth0", "address", newMAC.String())
		if _, ok := atClient.wait(changed, 5*time.Second, announce(newMAC)); !ok {
			t.Fatal("no gratuitous ARP for the VIP at the new MAC within 5 s")
		}
		if seen := getAll(t, client, url, 20, 10*time.Second); seen["be1"] == 0 || seen["be2"] == 0 {
			t.Fatalf("answers by backend after the MAC change: %v", seen)
		}
		if n, ok := netnstest.ARPEntry(t, client, vip); !ok || !bytes.Equal(n.MAC, newMAC) {
			t.Fatalf("client's entry for the VIP: %+v, want %s", n, newMAC)
		}
	})
}
