package arpd

import (
	"net/netip"
	"testing"
	"time"
)

// fuzzHarness is a core in the state where every rule has something to act
// on: a claimed VIP and one still probing, a claimed tarpit address, and a
// backend whose request is waiting for its reply.
func fuzzHarness(t *testing.T) *harness {
	h := newHarness(t)
	h.c.setTarpit(tarpitNet)
	h.claimVIPs(vip)
	h.c.setVIPs([]netip.Addr{vip, vip2})
	h.c.setBackends([]netip.Addr{be1})
	h.tick() // probes vip2, asks for be1
	h.c.tpClaimed.put(netip.MustParseAddr("192.0.2.200"), struct{}{})
	h.now = h.now.Add(100 * time.Millisecond)
	return h
}

// FuzzHandle feeds core.handle, the function that takes each frame read
// from the socket and decides, two arbitrary frames in a row (the second
// sees the state the first left), with a tick after each. It must never
// panic, and whatever it does must keep arpd's rules:
//   - every frame it sends is a well-formed ARP frame from our MAC;
//   - a reply is only ever for a claimed VIP or tarpit address, never for
//     our own address or a backend, and goes back to the asker;
//   - a backend's MAC changes only through a reply from the backend's own
//     address to our address and MAC (an answer to our request).
func FuzzHandle(f *testing.F) {
	for _, s := range [][2][]byte{
		{request(client, clientIP, vip), reply(be1MAC, be1, lbMAC, lbIP)},
		{request(client, clientIP, vip2), request(client, netip.IPv4Unspecified(), vip)},
		{request(client, clientIP, netip.MustParseAddr("192.0.2.230")), request(client, clientIP, netip.MustParseAddr("192.0.2.200"))},
		{reply(fakeMAC, be1, broadcast, be1), reply(be1MAC2, be1, lbMAC, lbIP)},
		{request(fakeMAC, vip, vip), request(client, clientIP, lbIP)},
		{request(lbMAC, lbIP, be1), nil},
		{request(client, clientIP, vip)[:41], []byte{}},
		// Lengths that lie: the Packet codec sizes its reads by them,
		// and ParseFrame must reject whatever they parse to.
		{append(request(client, clientIP, vip)[:14:14], 0, 1, 8, 0, 0xff, 0xff, 0, 1), nil},
		{append(request(client, clientIP, vip)[:14:14], 0, 1, 8, 0, 0, 0, 0, 2), nil},
		{append(request(client, clientIP, vip)[:14:14], 0, 1, 8, 0, 6, 16, 0, 1), nil},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		h := fuzzHarness(t)
		for i, in := range [][]byte{a, b} {
			before := h.c.backends[be1].mac
			hadMAC := h.c.backends[be1].has
			out, _ := h.in(in)
			p, parsed := ParseFrame(in)
			for _, f := range out {
				d := decode(t, f)
				if d.EthSrc != lbMAC || d.SHA != lbMAC {
					t.Fatalf("frame %d: sent a frame not from our MAC: %+v", i, d)
				}
				if d.Op != opReply {
					continue
				}
				claimedTP := h.c.tpClaimed.touch(d.SPA)
				if e, ok := h.c.vips[d.SPA]; !(ok && e.state == VIPClaimed) && !claimedTP {
					t.Fatalf("frame %d: answered for %s, neither a claimed VIP nor a claimed tarpit address", i, d.SPA)
				}
				if d.SPA == lbIP || d.SPA == be1 {
					t.Fatalf("frame %d: answered for %s", i, d.SPA)
				}
				if !parsed || d.dst != p.SHA || d.THA != p.SHA || d.TPA != p.SPA || d.SPA != p.TPA {
					t.Fatalf("frame %d: reply %+v does not answer %+v", i, d, p)
				}
			}
			if be := h.c.backends[be1]; be.has && (!hadMAC || be.mac != before) {
				if !parsed || p.Op != opReply || p.SPA != be1 || p.TPA != lbIP || p.THA != lbMAC || p.SHA != be.mac {
					t.Fatalf("frame %d: backend MAC set to %s by %+v (parsed %v)", i, macString(be.mac), p, parsed)
				}
			}
			h.now = h.now.Add(50 * time.Millisecond)
			for _, f := range h.tick() {
				if d := decode(t, f); d.EthSrc != lbMAC || d.SHA != lbMAC || d.Op == opReply {
					t.Fatalf("tick sent %+v", d)
				}
			}
		}
	})
}
