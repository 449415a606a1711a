package arpd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/packet"

	"github.com/nib-lb/nib/internal/needs"
	"github.com/nib-lb/nib/internal/netnstest"
)

// waitFor polls cond every 20 ms for at most d.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawARP is a packet socket for ARP in namespace b, for sending spoofed
// replies and our own requests.
type rawARP struct {
	pc  *packet.Conn
	ifi *net.Interface
}

func (r *rawARP) send(t *testing.T, dst [6]byte, op arp.Operation, sha [6]byte, spa netip.Addr, tha [6]byte, tpa netip.Addr) {
	t.Helper()
	f := mustBuildARP(dst, sha, op, sha, spa, tha, tpa)
	if _, err := r.pc.WriteTo(f[:], &packet.Addr{HardwareAddr: dst[:]}); err != nil {
		t.Fatalf("raw send: %v", err)
	}
}

// replyFrom waits up to d for an ARP reply from mac for addr.
func (r *rawARP) replyFrom(mac [6]byte, addr netip.Addr, d time.Duration) bool {
	buf := make([]byte, 256)
	end := time.Now().Add(d)
	for i := 0; i < 1000 && time.Now().Before(end); i++ {
		r.pc.SetReadDeadline(end)
		n, _, err := r.pc.ReadFrom(buf)
		if err != nil {
			return false
		}
		if p, ok := ParseFrame(buf[:n]); ok && p.Op == opReply && p.SHA == mac && p.SPA == addr {
			return true
		}
	}
	return false
}

// TestNetns runs the daemon on lb's eth0 of a netnstest topology with one
// backend, be1, which plays the other hosts of the segment: it owns
// 198.51.100.101 (configured as a VIP: must never be claimed) and
// 198.51.100.202 (in the tarpit range: must never be claimed), and sends
// spoofed ARP through a packet socket.
func TestNetns(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	needs.Tool(t, "ping")
	topo := netnstest.New(t, netnstest.Options{Backends: 1, NoBackendVIP: true})
	lb, be := topo.LB(), topo.Host("be1")
	be.Run(t, "ip", "addr", "add", "198.51.100.101/32", "dev", "eth0")
	be.Run(t, "ip", "addr", "add", "198.51.100.202/32", "dev", "eth0")

	// Wait until the link carries frames (linkwatch activates the qdisc
	// up to a second after "up"): a probe lost then would let us claim.
	for i := 0; ; i++ {
		if be.Command(t.Context(), "ping", "-c1", "-W1", lb.Addr().String()).Run() == nil {
			break
		}
		if i == 4 {
			t.Fatal("no connectivity between lb and be1")
		}
	}

	var (
		d     *Daemon
		aMAC  [6]byte
		bMAC  [6]byte
		raw   rawARP
		vipA  = topo.VIP() // 198.51.100.100
		vipB  = netip.MustParseAddr("198.51.100.101")
		beB   = be.Addr() // 198.51.100.21
		tpNet = netip.MustParsePrefix("198.51.100.200/29")
	)
	err := lb.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		aMAC = [6]byte(ifi.HardwareAddr)
		d, err = NewWithOptions(ifi, t.Logf, Options{
			ProbeWindow: 300 * time.Millisecond, ReplyWindow: 500 * time.Millisecond,
			Refresh: time.Second, RetryMin: 200 * time.Millisecond, RetryMax: time.Second,
			AnnounceInterval: 200 * time.Millisecond, Tick: 20 * time.Millisecond,
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if d.IP() != lb.Addr() || d.MAC() != aMAC {
		t.Fatalf("own address %s %s", d.IP(), macString(d.MAC()))
	}
	err = be.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		bMAC = [6]byte(ifi.HardwareAddr)
		raw.ifi = ifi
		raw.pc, err = packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.pc.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Error("Run did not stop")
		}
	})
	d.SetTarpit(tpNet.Contains)
	d.SetBackends([]netip.Addr{beB})
	d.SetVIPs([]netip.Addr{vipA, vipB})

	state := func(a netip.Addr) VIPStatus {
		for _, s := range d.VIPs() {
			if s.Addr == a {
				return s
			}
		}
		return VIPStatus{}
	}
	if !waitFor(3*time.Second, func() bool { return state(vipA).State == VIPClaimed }) {
		t.Fatalf("VIP %s not claimed: %+v", vipA, d.VIPs())
	}
	if s := state(vipB); s.State != VIPInUse || s.OtherMAC != bMAC {
		t.Errorf("VIP %s that b owns: %+v, want in use by %s", vipB, s, macString(bMAC))
	}

	t.Run("VIP answered", func(t *testing.T) {
		be.Command(t.Context(), "ping", "-c1", "-W1", vipA.String()).Run() // fails: only its ARP matters
		n, ok := netnstest.ARPEntry(t, be, vipA)
		if !ok || n.Dev != "eth0" || !bytes.Equal(n.MAC, aMAC[:]) {
			t.Fatalf("be1's neighbour entry for the VIP: %+v (found %v), want lladdr %s on eth0", n, ok, macString(aMAC))
		}
		if d.Counters().RepliesVIP == 0 {
			t.Fatal("RepliesVIP not counted")
		}
	})

	t.Run("backend resolved", func(t *testing.T) {
		if !waitFor(3*time.Second, func() bool { m, ok := d.Lookup(beB); return ok && m == bMAC }) {
			m, ok := d.Lookup(beB)
			t.Fatalf("Lookup(%s) = %s %v, want %s", beB, macString(m), ok, macString(bMAC))
		}
	})

	t.Run("unsolicited reply ignored", func(t *testing.T) {
		fake := [6]byte{0x02, 0xba, 0xd0, 0, 0, 0x66}
		// The reply is unsolicited, or, when it happens to arrive while
		// the window of a refresh request is open, a second answer to that
		// request: a conflict. Either way it is not believed.
		ignored := func() uint64 { c := d.Counters(); return c.UnsolicitedIgnored + c.BackendConflicts }
		before, beforeUnsolicited := ignored(), d.Counters().UnsolicitedIgnored
		raw.send(t, aMAC, opReply, fake, beB, aMAC, d.IP())
		raw.send(t, broadcast, opRequest, fake, beB, [6]byte{}, beB) // and a gratuitous ARP
		start := time.Now()
		if !waitFor(2*time.Second, func() bool {
			return ignored() >= before+2 && d.Counters().UnsolicitedIgnored >= beforeUnsolicited+1
		}) {
			t.Fatalf("spoofed replies not counted: %+v", d.Counters())
		}
		t.Logf("counted after %v", time.Since(start))
		for range 10 { // across an early refresh
			if m, _ := d.Lookup(beB); m != bMAC {
				t.Fatalf("spoofed: Lookup = %s", macString(m))
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("backend MAC change learned by refresh", func(t *testing.T) {
		newMAC := [6]byte{0x02, 0x42, 0, 0, 0, 0x77}
		be.Run(t, "ip", "link", "set", "dev", "eth0", "address", macString(newMAC))
		if !waitFor(5*time.Second, func() bool { m, _ := d.Lookup(beB); return m == newMAC }) {
			m, _ := d.Lookup(beB)
			t.Fatalf("Lookup = %s after the MAC change, want %s", macString(m), macString(newMAC))
		}
		if d.Down(beB) {
			t.Fatal("backend reported down")
		}
		bMAC = newMAC
	})

	t.Run("tarpit", func(t *testing.T) {
		x := netip.MustParseAddr("198.51.100.201")
		probes := d.Counters().ProbesSent
		raw.send(t, broadcast, opRequest, bMAC, beB, [6]byte{}, x)
		if raw.replyFrom(aMAC, x, 150*time.Millisecond) {
			t.Fatal("tarpit address answered before the probe window")
		}
		if d.Counters().ProbesSent <= probes {
			t.Fatalf("no probe: %+v", d.Counters())
		}
		time.Sleep(300 * time.Millisecond)
		raw.send(t, broadcast, opRequest, bMAC, beB, [6]byte{}, x)
		if !raw.replyFrom(aMAC, x, time.Second) {
			t.Fatal("tarpit address not answered after the probe window")
		}

		// b owns .202: our probe is answered, the address never claimed.
		used := netip.MustParseAddr("198.51.100.202")
		for range 3 {
			raw.send(t, broadcast, opRequest, bMAC, beB, [6]byte{}, used)
			if raw.replyFrom(aMAC, used, 400*time.Millisecond) {
				t.Fatal("claimed a tarpit address another host uses")
			}
		}
		if d.Counters().InUseRefused < 2 { // VIP .101 and tarpit .202
			t.Fatalf("refusals not counted: %+v", d.Counters())
		}

		// Outside the tarpit set: never answered, never probed.
		out := netip.MustParseAddr("198.51.100.150")
		probes = d.Counters().ProbesSent
		for range 2 {
			raw.send(t, broadcast, opRequest, bMAC, beB, [6]byte{}, out)
			if raw.replyFrom(aMAC, out, 400*time.Millisecond) {
				t.Fatal("answered an address outside the tarpit set")
			}
		}
		if d.Counters().ProbesSent != probes {
			t.Fatal("probed an address outside the tarpit set")
		}
	})
	t.Logf("counters %+v", d.Counters())
}

// TestNewNoIPv4 gives New lb's eth0 with its address removed.
func TestNewNoIPv4(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	topo := netnstest.New(t, netnstest.Options{Backends: 1, NoBackendVIP: true})
	lb := topo.LB()
	lb.Run(t, "ip", "-4", "addr", "flush", "dev", "eth0")
	err := lb.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		d, err := New(ifi, t.Logf)
		if err == nil {
			d.Close()
			return errors.New("New accepted an interface without IPv4")
		}
		if !strings.Contains(err.Error(), "no IPv4 address") {
			return fmt.Errorf("unclear error: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
