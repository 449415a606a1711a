package arpd

import (
	"net/netip"
	"testing"
	"time"
)

// The interface changes under a running arpd: the LB's own address (a new
// DHCP lease), its MAC, its link going down and up.

// TestSetIP: after the own address changes, the backend is asked again at
// once, from the new address; the request that was open does not count as
// missed; a reply to the old address answers nothing, one to the new
// address does. The new address is the kernel's (never answered, never a
// VIP); a VIP that was the old address is taken back.
func TestSetIP(t *testing.T) {
	newIP := netip.MustParseAddr("192.0.2.3")
	h := resolved(t)
	h.c.setTarpit(tarpitNet)
	h.c.setVIPs([]netip.Addr{vip, newIP, lbIP})
	h.c.tpClaimed.put(newIP, struct{}{}) // as if it had been a tarpit address
	h.at(30*time.Second + 100*time.Millisecond)
	h.tick() // the refresh request, from the old address, is open now
	if b := h.c.backends[be1]; !b.waiting(h.now) {
		t.Fatal("no request open")
	}

	h.c.setIP(newIP)
	h.at(30*time.Second + 200*time.Millisecond)
	var asked bool
	for _, f := range h.tick() {
		if d := decode(t, f); d.Op == opRequest && d.TPA == be1 {
			asked = true
			if d.SPA != newIP || d.SHA != lbMAC || d.dst != broadcast {
				t.Fatalf("request after the change: %+v, want from %s", d, newIP)
			}
		}
	}
	if !asked {
		t.Fatal("the backend was not asked again at once")
	}
	if b := h.c.backends[be1]; b.missed != 0 || b.down {
		t.Fatalf("the open request counted as missed: %+v", b)
	}
	if _, v := h.in(reply(be1MAC2, be1, lbMAC, lbIP)); v&(vLearned|vBackendConflict) != 0 {
		t.Fatalf("a reply to the old address answered our request: verdict %b", v)
	}
	if _, v := h.in(reply(be1MAC, be1, lbMAC, newIP)); v&vLearned == 0 {
		t.Fatalf("the reply to the new address was not taken: verdict %b", v)
	}
	if out, _ := h.in(request(client, clientIP, newIP)); len(out) != 0 {
		t.Fatal("answered for the LB's new address (the kernel's)")
	}
	if _, ok := h.c.vips[newIP]; ok {
		t.Fatal("the new own address is still a VIP")
	}
	if _, ok := h.c.tpClaimed.get(newIP); ok {
		t.Fatal("the new own address is still a claimed tarpit address")
	}
	if e, ok := h.c.vips[lbIP]; !ok || (e.state != VIPPending && e.state != VIPProbing) {
		t.Fatalf("the old own address, configured as a VIP, was not taken back: %+v", e)
	}
	if _, ok := h.c.vips[vip]; !ok {
		t.Fatal("another VIP was lost")
	}
}

// TestSetMAC: after the interface's MAC changes, the claimed VIP is
// announced again at the new MAC, answered with it, and backends are
// asked again and learned from replies to it.
func TestSetMAC(t *testing.T) {
	newMAC := [6]byte{0x02, 0, 0, 0, 0, 0x02}
	h := resolved(t)
	h.claimVIPs(vip)
	h.at(10 * time.Second) // the claim's announcements are long done
	h.tick()

	h.c.setMAC(newMAC)
	var announced, asked int
	for ms := 10100; ms <= 14000; ms += 100 {
		h.at(time.Duration(ms) * time.Millisecond)
		for _, f := range h.tick() {
			d := decode(t, f)
			if d.SHA != newMAC || d.EthSrc != newMAC {
				t.Fatalf("sent from the old MAC: %+v", d)
			}
			switch {
			case d.SPA == vip && d.TPA == vip:
				announced++
			case d.TPA == be1 && d.SPA == lbIP:
				asked++
				h.in(reply(be1MAC, be1, newMAC, lbIP))
			}
		}
	}
	if announced != testOpt.AnnounceCount || asked != 1 {
		t.Fatalf("%d announcements, %d requests; want %d and 1", announced, asked, testOpt.AnnounceCount)
	}
	if b := h.c.backends[be1]; !b.has || b.mac != be1MAC || b.missed != 0 {
		t.Fatalf("backend %+v", b)
	}
	out, _ := h.in(request(client, clientIP, vip))
	if len(out) != 1 {
		t.Fatalf("%d frames for a request for the VIP", len(out))
	}
	if d := decode(t, out[0]); d.Op != opReply || d.SHA != newMAC || d.EthSrc != newMAC || d.SPA != vip {
		t.Fatalf("reply %+v, want the VIP at %s", d, macString(newMAC))
	}
	if _, v := h.in(request(lbMAC, lbIP, be1)); v&vOwn != 0 {
		t.Fatal("a frame from the old MAC is still taken for ours")
	}
}

// TestLinkUp: when the link comes back up the claimed VIP is announced
// again (AnnounceCount gratuitous ARPs, AnnounceInterval apart, from the
// next tick), a VIP still probing or not ours is not, and every backend
// is asked at once, even one in a long backoff.
func TestLinkUp(t *testing.T) {
	h := newHarness(t)
	h.c.setBackends([]netip.Addr{be1})
	h.claimVIPs(vip)
	h.c.setVIPs([]netip.Addr{vip, vip2})
	h.c.vips[vip2].state = VIPInUse
	h.c.inUse.put(vip2, inUseEntry{mac: fakeMAC, seen: h.now})
	// be1 never answers: after a few misses it is asked only every
	// RetryMax.
	for s := 1; s <= 60; s++ {
		h.at(time.Duration(s) * time.Second)
		h.tick()
	}
	if b := h.c.backends[be1]; !b.down || b.nextReq.Sub(h.now) < 5*time.Second {
		t.Fatalf("backend %+v, want down and in backoff", b)
	}
	h.at(60*time.Second + 50*time.Millisecond)
	if out := h.tick(); len(out) != 0 {
		t.Fatalf("%d frames before the link came up", len(out))
	}

	h.c.linkUp()
	var announces []time.Duration
	var asked bool
	for ms := 60100; ms <= 65000; ms += 100 {
		h.at(time.Duration(ms) * time.Millisecond)
		for _, f := range h.tick() {
			d := decode(t, f)
			switch {
			case d.Op == opRequest && d.SPA == d.TPA:
				if d.SPA != vip {
					t.Fatalf("announced %s", d.SPA)
				}
				announces = append(announces, h.now.Sub(t0))
			case d.TPA == be1:
				if h.now.Sub(t0) == 60100*time.Millisecond {
					asked = true
				}
			}
		}
	}
	if len(announces) != testOpt.AnnounceCount || announces[0] != 60100*time.Millisecond || announces[1]-announces[0] != testOpt.AnnounceInterval {
		t.Fatalf("announcements at %v", announces)
	}
	if !asked {
		t.Fatal("the backend was not asked at once")
	}
}
