package arpd

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
)

var (
	lbMAC    = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	lbIP     = netip.MustParseAddr("192.0.2.2")
	client   = [6]byte{0x02, 0, 0, 0, 0, 0x10}
	clientIP = netip.MustParseAddr("192.0.2.10")
	be1MAC   = [6]byte{0x02, 0, 0, 0, 0, 0x21}
	be1MAC2  = [6]byte{0x02, 0, 0, 0, 0, 0x22} // be1 after replacement
	fakeMAC  = [6]byte{0x02, 0xba, 0xd0, 0, 0, 0x66}
	be1      = netip.MustParseAddr("192.0.2.21")
	vip      = netip.MustParseAddr("192.0.2.100")
	vip2     = netip.MustParseAddr("192.0.2.101")
	t0       = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

var testOpt = Options{
	ProbeWindow: time.Second, Probes: 1, ReplyWindow: 3 * time.Second, Refresh: 30 * time.Second,
	RetryMin: time.Second, RetryMax: 30 * time.Second, DownAfter: 3,
	AnnounceCount: 3, AnnounceInterval: time.Second, InUseTTL: 5 * time.Minute,
	InUseMax: 16, TarpitMax: 4, TarpitProbes: 4,
}

// tarpitNet matches 192.0.2.200-192.0.2.255.
func tarpitNet(a netip.Addr) bool {
	return netip.MustParsePrefix("192.0.2.200/29").Contains(a) || netip.MustParsePrefix("192.0.2.208/28").Contains(a) ||
		netip.MustParsePrefix("192.0.2.224/27").Contains(a)
}

type harness struct {
	t   *testing.T
	c   *core
	ctr counters
	now time.Time
	log []string
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, now: t0}
	h.c = newCore(lbMAC, lbIP, testOpt, func(f string, a ...any) { h.log = append(h.log, fmt.Sprintf(f, a...)) }, &h.ctr)
	return h
}

func (h *harness) at(d time.Duration) { h.now = t0.Add(d) }

func (h *harness) in(b []byte) ([]frame, verdict) { return h.c.handle(h.now, b, nil) }

func (h *harness) tick() []frame { return h.c.tick(h.now, nil) }

// claimVIPs configures VIPs and runs the probe window with no answer.
func (h *harness) claimVIPs(vips ...netip.Addr) {
	h.c.setVIPs(vips)
	h.tick()
	h.now = h.now.Add(testOpt.ProbeWindow)
	h.tick()
}

func arpFrame(op arp.Operation, sha [6]byte, spa netip.Addr, tha [6]byte, tpa netip.Addr) []byte {
	dst := broadcast
	if op == opReply {
		dst = tha
	}
	f := mustBuildARP(dst, sha, op, sha, spa, tha, tpa)
	return f[:]
}

func mustBuildARP(dst, src [6]byte, op arp.Operation, sha [6]byte, spa netip.Addr, tha [6]byte, tpa netip.Addr) frame {
	f, err := buildARP(dst, src, op, sha, spa, tha, tpa)
	if err != nil {
		panic(err)
	}
	return f
}

func request(sha [6]byte, spa, tpa netip.Addr) []byte {
	return arpFrame(opRequest, sha, spa, [6]byte{}, tpa)
}

func reply(sha [6]byte, spa netip.Addr, tha [6]byte, tpa netip.Addr) []byte {
	return arpFrame(opReply, sha, spa, tha, tpa)
}

// decoded is a sent frame, parsed back.
type decoded struct {
	dst [6]byte
	Packet
}

func decode(t *testing.T, f frame) decoded {
	t.Helper()
	p, ok := ParseFrame(f[:])
	if !ok {
		t.Fatalf("we built an unparsable frame % x", f[:])
	}
	return decoded{dst: [6]byte(f[0:6]), Packet: p}
}

func wantReplyFrame(t *testing.T, out []frame, to [6]byte, toIP, forIP netip.Addr) {
	t.Helper()
	if len(out) != 1 {
		t.Fatalf("sent %d frames, want 1 reply", len(out))
	}
	d := decode(t, out[0])
	if d.dst != to || d.Op != opReply || d.SHA != lbMAC || d.EthSrc != lbMAC || d.SPA != forIP || d.THA != to || d.TPA != toIP {
		t.Fatalf("reply = %+v, want from %s (%s) to %s (%s)", d, forIP, macString(lbMAC), toIP, macString(to))
	}
}

func TestParseMalformed(t *testing.T) {
	good := request(client, clientIP, vip)
	mut := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	cases := []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"padded 60", good, true},
		{"exactly 42", good[:42], true},
		{"truncated 41", good[:41], false},
		{"ethernet only", good[:14], false},
		{"empty", nil, false},
		{"ethertype IPv4", mut(func(b []byte) { b[12], b[13] = 0x08, 0x00 }), false},
		{"vlan tag", mut(func(b []byte) { b[12], b[13] = 0x81, 0x00 }), false},
		{"htype 6", mut(func(b []byte) { b[15] = 6 }), false},
		{"ptype IPv6", mut(func(b []byte) { b[16], b[17] = 0x86, 0xdd }), false},
		{"hlen 8", mut(func(b []byte) { b[18] = 8 }), false},
		{"plen 16", mut(func(b []byte) { b[19] = 16 }), false},
		{"op 3 (RARP)", mut(func(b []byte) { b[21] = 3 }), false},
		{"op 0", mut(func(b []byte) { b[21] = 0 }), false},
		{"sender MAC broadcast", mut(func(b []byte) { copy(b[22:28], broadcast[:]) }), false},
		{"sender MAC multicast", mut(func(b []byte) { b[22] = 0x01 }), false},
		{"sender MAC zero", mut(func(b []byte) { clear(b[22:28]) }), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.claimVIPs(vip)
			out, v := h.in(tc.b)
			if tc.ok {
				if v&vMalformed != 0 || len(out) != 1 {
					t.Fatalf("verdict %b, %d frames; want one reply", v, len(out))
				}
				return
			}
			if v != vMalformed || len(out) != 0 || h.ctr.malformed.Load() != 1 || h.ctr.requestsSeen.Load() != 0 {
				t.Fatalf("verdict %b, %d frames, malformed=%d; want dropped and counted", v, len(out), h.ctr.malformed.Load())
			}
		})
	}
}

// TestAnswer is the table of which requests get our MAC, with one claimed
// VIP (vip), one configured but unclaimed (vip2), one claimed tarpit
// address (.200), tarpit addresses not claimed, and backends.
func TestAnswer(t *testing.T) {
	claimedTP := netip.MustParseAddr("192.0.2.200")
	cases := []struct {
		name   string
		pkt    []byte
		answer netip.Addr // invalid: no answer
	}{
		{"claimed VIP", request(client, clientIP, vip), vip},
		{"claimed VIP, probe from 0.0.0.0 is defended", request(client, netip.IPv4Unspecified(), vip), vip},
		{"unclaimed VIP", request(client, clientIP, vip2), netip.Addr{}},
		{"not a VIP", request(client, clientIP, netip.MustParseAddr("192.0.2.50")), netip.Addr{}},
		{"our own address (the kernel's job)", request(client, clientIP, lbIP), netip.Addr{}},
		{"a backend", request(client, clientIP, be1), netip.Addr{}},
		{"claimed tarpit address", request(client, clientIP, claimedTP), claimedTP},
		{"tarpit address not yet claimed", request(client, clientIP, netip.MustParseAddr("192.0.2.230")), netip.Addr{}},
		{"outside the tarpit set", request(client, clientIP, netip.MustParseAddr("192.0.2.199")), netip.Addr{}},
		{"reply for a VIP is not answered", reply(client, clientIP, lbMAC, vip), netip.Addr{}},
		{"broadcast target", request(client, clientIP, netip.MustParseAddr("255.255.255.255")), netip.Addr{}},
		{"zero target", request(client, clientIP, netip.IPv4Unspecified()), netip.Addr{}},
		{"our own frame", request(lbMAC, lbIP, vip), netip.Addr{}},
		{"gratuitous ARP for a VIP", request(client, vip, vip), netip.Addr{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.c.setTarpit(tarpitNet)
			h.c.setBackends([]netip.Addr{be1})
			h.c.setVIPs([]netip.Addr{vip, vip2})
			h.c.vips[vip2].state = VIPProbing
			h.c.vips[vip2].probe.until = t0.Add(time.Hour)
			h.c.tick(h.now, nil)
			h.at(time.Second)
			h.c.tick(h.now, nil)
			if st := h.c.vips[vip].state; st != VIPClaimed {
				t.Fatalf("vip state %v", st)
			}
			h.c.tpClaimed.put(claimedTP, struct{}{})
			out, _ := h.in(tc.pkt)
			if !tc.answer.IsValid() {
				for _, f := range out {
					if d := decode(t, f); d.Op == opReply {
						t.Fatalf("answered: %+v", d)
					}
				}
				return
			}
			p, _ := ParseFrame(tc.pkt)
			wantReplyFrame(t, out, p.SHA, p.SPA, tc.answer)
		})
	}
}

func TestVIPClaimAndAnnounce(t *testing.T) {
	h := newHarness(t)
	h.c.setVIPs([]netip.Addr{vip})
	out := h.tick()
	if len(out) != 1 {
		t.Fatalf("first tick sent %d frames, want a probe", len(out))
	}
	if d := decode(t, out[0]); d.Op != opRequest || d.dst != broadcast || d.SPA != netip.IPv4Unspecified() || d.TPA != vip || d.SHA != lbMAC {
		t.Fatalf("probe = %+v", d)
	}
	h.at(500 * time.Millisecond)
	if out := h.tick(); len(out) != 0 {
		t.Fatalf("sent %d frames in the probe window", len(out))
	}
	if out, _ := h.in(request(client, clientIP, vip)); len(out) != 0 {
		t.Fatal("answered a VIP during its probe window")
	}
	var announces []time.Duration
	for ms := 1000; ms <= 5000; ms += 100 {
		h.at(time.Duration(ms) * time.Millisecond)
		for _, f := range h.tick() {
			d := decode(t, f)
			if d.Op != opRequest || d.dst != broadcast || d.SPA != vip || d.TPA != vip || d.SHA != lbMAC || d.THA != ([6]byte{}) {
				t.Fatalf("announcement = %+v", d)
			}
			announces = append(announces, h.now.Sub(t0))
		}
	}
	if fmt.Sprint(announces) != "[1s 2s 3s]" {
		t.Fatalf("announcements at %v, want [1s 2s 3s]", announces)
	}
	out, v := h.in(request(client, clientIP, vip))
	if v&vReply == 0 {
		t.Fatalf("claimed VIP not answered (verdict %b)", v)
	}
	wantReplyFrame(t, out, client, clientIP, vip)
	c := h.ctr.snapshot()
	if c.ProbesSent != 1 || c.Announcements != 3 || c.RepliesVIP != 1 || c.RequestsSeen != 2 {
		t.Fatalf("counters %+v", c)
	}

	// Removed: no longer answered.
	h.c.setVIPs(nil)
	if out, _ := h.in(request(client, clientIP, vip)); len(out) != 0 {
		t.Fatal("removed VIP answered")
	}
}

// A backend without arp_ignore answers our probe: the VIP is never
// claimed, the refusal is counted and logged with its MAC; once the host
// has been silent for InUseTTL the VIP is probed again.
func TestVIPInUseNeverClaimed(t *testing.T) {
	h := newHarness(t)
	h.c.setVIPs([]netip.Addr{vip})
	h.tick() // probe
	h.at(300 * time.Millisecond)
	_, v := h.in(reply(be1MAC, vip, lbMAC, netip.IPv4Unspecified()))
	if v&vInUse == 0 {
		t.Fatalf("verdict %b, want in use", v)
	}
	for ms := 400; ms <= 10000; ms += 100 {
		h.at(time.Duration(ms) * time.Millisecond)
		for _, f := range h.tick() {
			t.Fatalf("sent %+v for a VIP in use", decode(t, f))
		}
		if out, _ := h.in(request(client, clientIP, vip)); len(out) != 0 {
			t.Fatal("answered for a VIP another host uses")
		}
	}
	st := h.c.vipStatus()
	if len(st) != 1 || st[0].State != VIPInUse || st[0].OtherMAC != be1MAC {
		t.Fatalf("status %+v", st)
	}
	if h.ctr.inUseRefused.Load() != 1 || len(h.log) != 1 {
		t.Fatalf("inUseRefused=%d log=%q", h.ctr.inUseRefused.Load(), h.log)
	}
	if want := macString(be1MAC); !strings.Contains(h.log[0], want) || !strings.Contains(h.log[0], "arp_ignore") {
		t.Fatalf("log %q does not name %s and arp_ignore", h.log[0], want)
	}
	// Silent for InUseTTL: probe again, and claim.
	h.at(300*time.Millisecond + testOpt.InUseTTL)
	out := h.tick()
	if len(out) != 1 || decode(t, out[0]).SPA != netip.IPv4Unspecified() {
		t.Fatalf("no new probe after the in-use entry expired: %d frames", len(out))
	}
	h.now = h.now.Add(testOpt.ProbeWindow)
	h.tick()
	if out, _ := h.in(request(client, clientIP, vip)); len(out) != 1 {
		t.Fatal("VIP not claimed after the other host went away")
	}
}

// An address seen in use before the VIP is configured is not even probed.
func TestVIPSeenInUseBeforeProbe(t *testing.T) {
	h := newHarness(t)
	h.c.setVIPs([]netip.Addr{vip})
	h.in(request(be1MAC, vip, lbIP)) // the VIP's owner asks for us
	if out := h.tick(); len(out) != 0 {
		t.Fatalf("probed an address in use: %d frames", len(out))
	}
	if st := h.c.vipStatus(); st[0].State != VIPInUse {
		t.Fatalf("state %v", st[0].State)
	}
}

func TestVIPConflictAfterClaim(t *testing.T) {
	h := newHarness(t)
	h.claimVIPs(vip)
	h.at(4 * time.Second)
	h.tick() // announcements done
	h.at(5 * time.Second)
	_, v := h.in(request(be1MAC, vip, vip)) // someone announces our VIP
	if v&vConflict == 0 || h.ctr.conflicts.Load() != 1 {
		t.Fatalf("verdict %b conflicts %d", v, h.ctr.conflicts.Load())
	}
	out := h.tick()
	if len(out) != 1 || decode(t, out[0]).SPA != vip {
		t.Fatalf("no defending announcement: %d frames", len(out))
	}
	h.at(6 * time.Second)
	h.in(request(be1MAC, vip, vip))
	if out := h.tick(); len(out) != 0 {
		t.Fatal("defended twice within DefendInterval")
	}
	// VIPs stay answered (the operator configured them); the conflict shows.
	if out, _ := h.in(request(client, clientIP, vip)); len(out) != 1 {
		t.Fatal("VIP not answered after a conflict")
	}
	st := h.c.vipStatus()[0]
	if st.State != VIPClaimed || st.OtherMAC != be1MAC || st.ConflictAt.IsZero() {
		t.Fatalf("status %+v", st)
	}
}

func TestTarpitLazyClaim(t *testing.T) {
	h := newHarness(t)
	h.c.setTarpit(tarpitNet)
	x := netip.MustParseAddr("192.0.2.201")
	out, v := h.in(request(client, clientIP, x))
	if v&vProbe == 0 || len(out) != 1 {
		t.Fatalf("first request: verdict %b, %d frames; want a probe and no answer", v, len(out))
	}
	if d := decode(t, out[0]); d.Op != opRequest || d.SPA != netip.IPv4Unspecified() || d.TPA != x {
		t.Fatalf("probe %+v", d)
	}
	h.at(500 * time.Millisecond)
	if out, _ := h.in(request(client, clientIP, x)); len(out) != 0 {
		t.Fatal("answered in the probe window, or probed twice")
	}
	// Claimed lazily by the next request after the window (no tick).
	h.at(time.Second)
	out, _ = h.in(request(client, clientIP, x))
	wantReplyFrame(t, out, client, clientIP, x)
	// And by a tick.
	y := netip.MustParseAddr("192.0.2.202")
	h.in(request(client, clientIP, y))
	h.at(2 * time.Second)
	h.tick()
	if out, _ := h.in(request(client, clientIP, y)); len(out) != 1 {
		t.Fatal("not claimed by the tick after the window")
	}
	if c := h.ctr.snapshot(); c.ProbesSent != 2 || c.RepliesTarpit != 2 || c.RepliesVIP != 0 {
		t.Fatalf("counters %+v", c)
	}
	// Outside the tarpit set: never probed, never answered.
	z := netip.MustParseAddr("192.0.2.199")
	for i := range 3 {
		h.at(time.Duration(3+i) * time.Second)
		h.tick()
		if out, v := h.in(request(client, clientIP, z)); len(out) != 0 || v != 0 {
			t.Fatalf("address outside the tarpit: verdict %b, %d frames", v, len(out))
		}
	}
}

func TestTarpitNeverClaimsAddressInUse(t *testing.T) {
	h := newHarness(t)
	h.c.setTarpit(tarpitNet)
	live := netip.MustParseAddr("192.0.2.203")
	liveMAC := [6]byte{0x02, 0, 0, 0, 0, 0x33}

	// Answers our probe.
	h.in(request(client, clientIP, live))
	h.at(200 * time.Millisecond)
	if _, v := h.in(reply(liveMAC, live, lbMAC, netip.IPv4Unspecified())); v&vInUse == 0 {
		t.Fatalf("probe answer not noted: %b", v)
	}
	for ms := 1000; ms < 4000; ms += 500 {
		h.at(time.Duration(ms) * time.Millisecond)
		h.tick()
		if out, _ := h.in(request(client, clientIP, live)); len(out) != 0 {
			t.Fatalf("claimed an address that answered the probe (%d frames)", len(out))
		}
	}
	if h.ctr.inUseRefused.Load() != 1 || h.ctr.probesSent.Load() != 1 {
		t.Fatalf("inUseRefused=%d probes=%d", h.ctr.inUseRefused.Load(), h.ctr.probesSent.Load())
	}

	// Seen talking before anyone asked: not even probed.
	quiet := netip.MustParseAddr("192.0.2.204")
	h.in(request(liveMAC, quiet, clientIP))
	if out, _ := h.in(request(client, clientIP, quiet)); len(out) != 0 {
		t.Fatal("probed or answered an address seen in use")
	}

	// A DHCP client probing for an address (RFC 5227): we must not take it.
	dad := netip.MustParseAddr("192.0.2.205")
	h.in(request(liveMAC, netip.IPv4Unspecified(), dad))
	if out, _ := h.in(request(client, clientIP, dad)); len(out) != 0 {
		t.Fatal("probed an address another host is probing for")
	}
}

func TestTarpitConflictStopsAnswers(t *testing.T) {
	h := newHarness(t)
	h.c.setTarpit(tarpitNet)
	x := netip.MustParseAddr("192.0.2.206")
	h.in(request(client, clientIP, x))
	h.at(time.Second)
	if out, _ := h.in(request(client, clientIP, x)); len(out) != 1 {
		t.Fatal("not claimed")
	}
	newHost := [6]byte{0x02, 0, 0, 0, 0, 0x44}
	h.at(2 * time.Second)
	if _, v := h.in(request(newHost, x, x)); v&vConflict == 0 { // its gratuitous ARP
		t.Fatalf("verdict %b, want conflict", v)
	}
	for s := 3; s < 10; s++ {
		h.at(time.Duration(s) * time.Second)
		h.tick()
		if out, _ := h.in(request(client, clientIP, x)); len(out) != 0 {
			t.Fatal("still answering for an address another host announced")
		}
	}
	if h.ctr.conflicts.Load() != 1 {
		t.Fatalf("conflicts %d", h.ctr.conflicts.Load())
	}
}

func TestTarpitBounds(t *testing.T) {
	h := newHarness(t) // TarpitMax 4, TarpitProbes 4
	h.c.setTarpit(tarpitNet)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(224 + i)}) }
	for i := range 6 {
		h.in(request(client, clientIP, addr(i)))
	}
	if len(h.c.tpProbing) != 4 || h.ctr.tarpitBusy.Load() != 2 {
		t.Fatalf("probing %d busy %d", len(h.c.tpProbing), h.ctr.tarpitBusy.Load())
	}
	h.at(time.Second)
	h.tick()
	for i := 4; i < 6; i++ {
		h.in(request(client, clientIP, addr(i)))
	}
	h.at(2 * time.Second)
	h.tick()
	if h.c.tpClaimed.len() != 4 {
		t.Fatalf("claimed %d, want the bound 4", h.c.tpClaimed.len())
	}
	// LRU: the newest claims (4 and 5) evicted two of the older ones.
	for i := 4; i < 6; i++ {
		if !h.c.tpClaimed.touch(addr(i)) {
			t.Errorf("newest claim %s evicted", addr(i))
		}
	}
	n := 0
	for i := range 4 {
		if _, ok := h.c.tpClaimed.get(addr(i)); ok {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d of the first 4 claims kept, want 2", n)
	}
}

func TestTarpitMatcherChange(t *testing.T) {
	h := newHarness(t)
	h.c.setTarpit(tarpitNet)
	x := netip.MustParseAddr("192.0.2.207")
	h.in(request(client, clientIP, x))
	h.at(time.Second)
	h.tick()
	h.c.setTarpit(func(netip.Addr) bool { return false })
	if out, _ := h.in(request(client, clientIP, x)); len(out) != 0 {
		t.Fatal("answered for an address the new matcher excludes")
	}
	h.c.setTarpit(nil)
	if out, _ := h.in(request(client, clientIP, x)); len(out) != 0 {
		t.Fatal("answered with no tarpit")
	}
}

// resolved returns a harness where be1 was requested and answered.
func resolved(t *testing.T) *harness {
	h := newHarness(t)
	h.c.setBackends([]netip.Addr{be1})
	out := h.tick()
	if len(out) != 1 {
		t.Fatalf("backend not requested at once (%d frames)", len(out))
	}
	if d := decode(t, out[0]); d.Op != opRequest || d.dst != broadcast || d.SPA != lbIP || d.SHA != lbMAC || d.TPA != be1 {
		t.Fatalf("request %+v", d)
	}
	h.at(100 * time.Millisecond)
	if _, v := h.in(reply(be1MAC, be1, lbMAC, lbIP)); v&vLearned == 0 {
		t.Fatalf("solicited reply not learned: verdict %b", v)
	}
	if b := h.c.backends[be1]; !b.has || b.mac != be1MAC {
		t.Fatalf("backend %+v", b)
	}
	return h
}

func TestBackendSolicitedReplyLearned(t *testing.T) {
	h := resolved(t)
	if !h.c.dirty || h.ctr.backendLearned.Load() != 1 {
		t.Fatal("learned MAC not published or counted")
	}
	m := h.c.snapshot()
	if n := m[be1]; !n.has || n.mac != be1MAC || n.down {
		t.Fatalf("snapshot %+v", n)
	}
}

func TestBackendUnsolicitedIgnored(t *testing.T) {
	cases := []struct {
		name string
		pkt  []byte
		at   time.Duration
	}{
		{"unsolicited reply to us", reply(fakeMAC, be1, lbMAC, lbIP), 10 * time.Second},
		{"reply to someone else", reply(fakeMAC, be1, client, clientIP), 10 * time.Second},
		{"gratuitous request", request(fakeMAC, be1, be1), 10 * time.Second},
		{"gratuitous reply", arpFrame(opReply, fakeMAC, be1, broadcast, be1), 10 * time.Second},
		{"reply inside the window but not to us", reply(fakeMAC, be1, client, clientIP), 50 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.c.setBackends([]netip.Addr{be1})
			h.tick()
			h.at(tc.at)
			_, v := h.in(tc.pkt)
			if v&vLearned != 0 || v&vUnsolicited == 0 || h.ctr.unsolicited.Load() != 1 {
				t.Fatalf("verdict %b unsolicited=%d", v, h.ctr.unsolicited.Load())
			}
			if b := h.c.backends[be1]; b.has {
				t.Fatalf("learned %s from %s", macString(b.mac), tc.name)
			}
		})
	}
	// Also after the backend is resolved: the MAC does not change.
	h := resolved(t)
	h.at(5 * time.Second)
	h.in(reply(fakeMAC, be1, lbMAC, lbIP))
	h.in(request(fakeMAC, be1, be1))
	if b := h.c.backends[be1]; b.mac != be1MAC {
		t.Fatalf("spoofed: now %s", macString(b.mac))
	}
	// A reply after the window closed is not solicited any more.
	h = newHarness(t)
	h.c.setBackends([]netip.Addr{be1})
	h.tick()
	h.at(testOpt.ReplyWindow)
	if _, v := h.in(reply(be1MAC, be1, lbMAC, lbIP)); v&vLearned != 0 {
		t.Fatal("learned from a reply after the reply window")
	}
}

// A replaced backend: its gratuitous ARP is not believed, but makes us ask
// (no sooner than RetryMin after our last request); the answer to our
// request is learned. The periodic refresh learns it too.
func TestBackendMACChangeLearnedViaRefresh(t *testing.T) {
	h := resolved(t)
	// Gratuitous ARP from the new machine: not learned, refresh moved up.
	h.at(5 * time.Second)
	if _, v := h.in(request(be1MAC2, be1, be1)); v&vLearned != 0 {
		t.Fatal("learned from gratuitous ARP")
	}
	out := h.tick()
	if len(out) != 1 || decode(t, out[0]).TPA != be1 {
		t.Fatalf("no early refresh after a MAC change was seen (%d frames)", len(out))
	}
	h.at(5*time.Second + 10*time.Millisecond)
	h.in(reply(be1MAC2, be1, lbMAC, lbIP))
	// Taken when the window closes without an answer from the old MAC.
	h.at(5*time.Second + testOpt.ReplyWindow)
	h.tick()
	if b := h.c.backends[be1]; b.mac != be1MAC2 || b.down || b.missed != 0 {
		t.Fatalf("MAC %s, want %s (%+v)", macString(b.mac), macString(be1MAC2), b)
	}

	// Silent replacement: only the periodic refresh finds it.
	h = resolved(t)
	for s := 1; s < 30; s++ {
		h.at(time.Duration(s) * time.Second)
		if out := h.tick(); len(out) != 0 {
			t.Fatalf("requested at %ds, refresh is 30s", s)
		}
	}
	h.at(30*time.Second + 100*time.Millisecond)
	out = h.tick()
	if len(out) != 1 {
		t.Fatalf("no refresh after 30s (%d frames)", len(out))
	}
	h.at(30*time.Second + 200*time.Millisecond)
	h.in(reply(be1MAC2, be1, lbMAC, lbIP))
	h.at(30*time.Second + 100*time.Millisecond + testOpt.ReplyWindow)
	h.tick()
	if b := h.c.backends[be1]; b.mac != be1MAC2 || !h.c.dirty {
		t.Fatal("refresh reply with a new MAC not learned/published")
	}
}

// TestBackendReplyFromAskedAddress: only a reply whose sender address is
// the backend we asked about, to our address and MAC, inside the window,
// answers our request; nothing else is learned for that backend.
func TestBackendReplyFromAskedAddress(t *testing.T) {
	be2 := netip.MustParseAddr("192.0.2.22")
	cases := []struct {
		name  string
		pkt   []byte
		learn bool
	}{
		{"the backend asked about", reply(be1MAC, be1, lbMAC, lbIP), true},
		{"another host's address", reply(be1MAC, clientIP, lbMAC, lbIP), false},
		{"a VIP's address", reply(be1MAC, vip, lbMAC, lbIP), false},
		{"unspecified sender", reply(be1MAC, netip.IPv4Unspecified(), lbMAC, lbIP), false},
		{"another backend, not asked about now", reply(be1MAC, be2, lbMAC, lbIP), false},
		{"to another address", reply(be1MAC, be1, lbMAC, clientIP), false},
		{"to another MAC", reply(be1MAC, be1, client, lbIP), false},
		{"a request, not a reply", arpFrame(opRequest, be1MAC, be1, lbMAC, lbIP), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.c.setBackends([]netip.Addr{be1, be2})
			h.tick() // asks for both
			h.at(100 * time.Millisecond)
			h.in(reply(be1MAC2, be2, lbMAC, lbIP)) // be2 answered: its window has no question open
			h.c.backends[be2].answered, h.c.backends[be2].waitUntil = false, time.Time{}
			h.at(200 * time.Millisecond)
			_, v := h.in(tc.pkt)
			b := h.c.backends[be1]
			if got := b.has && b.mac == be1MAC; got != tc.learn || (v&vLearned != 0) != tc.learn {
				t.Fatalf("learned %v (verdict %b, %+v), want %v", got, v, b, tc.learn)
			}
			if b2 := h.c.backends[be2]; b2.mac != be1MAC2 {
				t.Fatalf("be2 changed: %+v", b2)
			}
			if !tc.learn && (b.hasCand || h.ctr.backendConflicts.Load() != 0) {
				t.Fatalf("taken as a candidate answer: %+v", b)
			}
		})
	}
}

// TestBackendAnswerConsistent: when two MACs answer for one backend, the
// one we have is kept while it answers; another MAC is taken only after a
// request that the kept one left unanswered (a replaced backend). The
// published MAC never flips in between; every other answer is counted as a
// conflict.
func TestBackendAnswerConsistent(t *testing.T) {
	type answer struct {
		mac [6]byte
		at  time.Duration // after the refresh request (30.1 s)
	}
	cases := []struct {
		name      string
		answers   []answer
		after     [6]byte // the MAC once the window has closed
		conflicts uint64
		missed    int
	}{
		{"the known MAC", []answer{{be1MAC, 10 * time.Millisecond}}, be1MAC, 0, 0},
		{"the known MAC, then another", []answer{{be1MAC, 10 * time.Millisecond}, {fakeMAC, 20 * time.Millisecond}}, be1MAC, 1, 0},
		{"another, then the known MAC", []answer{{fakeMAC, 10 * time.Millisecond}, {be1MAC, 20 * time.Millisecond}}, be1MAC, 1, 0},
		{"another, late in the window, then the known MAC", []answer{{fakeMAC, 10 * time.Millisecond}, {be1MAC, 2900 * time.Millisecond}}, be1MAC, 1, 0},
		{"two others and the known MAC", []answer{{fakeMAC, 10 * time.Millisecond}, {be1MAC2, 20 * time.Millisecond}, {be1MAC, 30 * time.Millisecond}, {fakeMAC, 40 * time.Millisecond}}, be1MAC, 3, 0},
		{"only another MAC: replaced", []answer{{be1MAC2, 10 * time.Millisecond}}, be1MAC2, 1, 0},
		{"two others: the first is taken", []answer{{be1MAC2, 10 * time.Millisecond}, {fakeMAC, 20 * time.Millisecond}}, be1MAC2, 2, 0},
		{"no answer", nil, be1MAC, 0, 1},
		{"the other answers after the window", []answer{{fakeMAC, 3 * time.Second}}, be1MAC, 0, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := resolved(t)
			refresh := 30*time.Second + 100*time.Millisecond
			h.at(refresh)
			if out := h.tick(); len(out) != 1 {
				t.Fatalf("no refresh request (%d frames)", len(out))
			}
			for _, a := range tc.answers {
				h.at(refresh + a.at)
				h.in(reply(a.mac, be1, lbMAC, lbIP))
				if n := h.c.snapshot()[be1]; n.mac != be1MAC {
					t.Fatalf("after an answer from %s at +%v the published MAC is %s", macString(a.mac), a.at, macString(n.mac))
				}
			}
			h.at(refresh + testOpt.ReplyWindow)
			h.tick()
			b := h.c.backends[be1]
			if n := h.c.snapshot()[be1]; b.mac != tc.after || n.mac != tc.after || n.down {
				t.Fatalf("after the window: %s (published %+v), want %s", macString(b.mac), n, macString(tc.after))
			}
			if got := h.ctr.backendConflicts.Load(); got != tc.conflicts || b.missed != tc.missed {
				t.Fatalf("conflicts %d missed %d, want %d and %d", got, b.missed, tc.conflicts, tc.missed)
			}
			if tc.conflicts > 0 {
				var lines int
				for _, l := range h.log {
					if strings.Contains(l, "CONFLICT: backend "+be1.String()) {
						lines++
					}
				}
				if lines != 1 {
					t.Fatalf("%d conflict log lines, want 1: %q", lines, h.log)
				}
			}
		})
	}
}

// Before the first answer nothing is known: the first MAC that answers is
// taken at once, and kept while it answers even when the other one is
// faster at the next request.
func TestBackendFirstAnswerKept(t *testing.T) {
	h := newHarness(t)
	h.c.setBackends([]netip.Addr{be1})
	h.tick()
	h.at(10 * time.Millisecond)
	if _, v := h.in(reply(fakeMAC, be1, lbMAC, lbIP)); v&vLearned == 0 {
		t.Fatalf("first answer not taken: verdict %b", v)
	}
	h.at(20 * time.Millisecond)
	if _, v := h.in(reply(be1MAC, be1, lbMAC, lbIP)); v&vLearned != 0 || v&vBackendConflict == 0 {
		t.Fatalf("second MAC in the same window: verdict %b", v)
	}
	for i := 1; i <= 5; i++ {
		req := h.c.backends[be1].nextReq.Sub(t0)
		h.at(req)
		if out := h.tick(); len(out) != 1 {
			t.Fatalf("refresh %d: %d frames", i, len(out))
		}
		h.at(req + 10*time.Millisecond)
		h.in(reply(be1MAC, be1, lbMAC, lbIP))
		h.at(req + 20*time.Millisecond)
		h.in(reply(fakeMAC, be1, lbMAC, lbIP))
		if m := h.c.snapshot()[be1].mac; m != fakeMAC {
			t.Fatalf("refresh %d: flipped to %s", i, macString(m))
		}
		h.at(req + testOpt.ReplyWindow)
		h.tick()
	}
	if n := h.ctr.backendConflicts.Load(); n != 6 {
		t.Fatalf("conflicts %d, want 6", n)
	}
	var lines int
	for _, l := range h.log {
		if strings.Contains(l, "CONFLICT") {
			lines++
		}
	}
	if lines != 1 {
		t.Fatalf("%d conflict log lines for 6 conflicts in well under 10 s of real time, want 1 (rate-limited): %q", lines, h.log)
	}
}

func TestBackendDownAndBack(t *testing.T) {
	h := resolved(t)
	h.c.dirty = false
	var reqs []time.Duration
	for ms := 200; ms <= 60000; ms += 100 {
		h.at(time.Duration(ms) * time.Millisecond)
		if n := len(h.tick()); n > 0 {
			reqs = append(reqs, h.now.Sub(t0))
		}
		if h.c.backends[be1].down {
			break
		}
	}
	// Refresh at 30.1s, unanswered by 33.1s, retry 1s later (34.1s),
	// unanswered by 37.1s, retry 2s later (39.1s), unanswered by 42.1s: down.
	if fmt.Sprint(reqs) != "[30.1s 34.1s 39.1s]" || !h.c.backends[be1].down {
		t.Fatalf("requests at %v, down=%v", reqs, h.c.backends[be1].down)
	}
	if h.now.Sub(t0) != 42100*time.Millisecond {
		t.Fatalf("down at %v", h.now.Sub(t0))
	}
	n := h.c.snapshot()[be1]
	if !n.down || !n.has || n.mac != be1MAC || !h.c.dirty {
		t.Fatalf("down backend must keep its MAC and be published: %+v", n)
	}
	// Comes back: answers the next retry (4s later).
	h.at(46100 * time.Millisecond)
	if out := h.tick(); len(out) != 1 {
		t.Fatal("down backend not retried")
	}
	h.in(reply(be1MAC, be1, lbMAC, lbIP))
	if b := h.c.backends[be1]; b.down || b.missed != 0 {
		t.Fatalf("backend %+v after answering", b)
	}
}

func TestBackendUnresolvedBackoff(t *testing.T) {
	h := newHarness(t)
	h.c.setBackends([]netip.Addr{be1})
	var reqs []time.Duration
	for ms := 0; ms <= 200000; ms += 100 {
		h.at(time.Duration(ms) * time.Millisecond)
		if n := len(h.tick()); n > 0 {
			reqs = append(reqs, h.now.Sub(t0))
		}
	}
	// Each request waits ReplyWindow (3s), then 1, 2, 4, 8, 16, 30, 30 s.
	want := "[0s 4s 9s 16s 27s 46s 1m19s 1m52s 2m25s 2m58s]"
	if fmt.Sprint(reqs) != want {
		t.Fatalf("requests at %v, want %v", reqs, want)
	}
	if _, ok := h.c.snapshot()[be1]; !ok || h.c.snapshot()[be1].has {
		t.Fatal("unresolved backend must be in the snapshot without a MAC")
	}
	h.c.setBackends(nil)
	if len(h.c.snapshot()) != 0 {
		t.Fatal("removed backend still published")
	}
}

func TestInUseTableBounded(t *testing.T) {
	h := newHarness(t) // InUseMax 16
	h.c.setTarpit(func(netip.Addr) bool { return true })
	for i := range 100 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		h.in(request(client, a, lbIP))
	}
	if h.c.inUse.len() != 16 {
		t.Fatalf("in-use table has %d entries, bound 16", h.c.inUse.len())
	}
	h.at(testOpt.InUseTTL)
	h.tick()
	if h.c.inUse.len() != 0 {
		t.Fatalf("%d entries left after TTL", h.c.inUse.len())
	}
}

// With Probes = 3, probes go out at 0, 1/3 and 2/3 of the window, for
// VIPs and tarpit addresses; an answer to any of them stops the claim.
func TestProbesSpread(t *testing.T) {
	h := newHarness(t)
	h.c.opt.Probes = 3
	h.c.opt.ProbeWindow = 900 * time.Millisecond
	h.c.setTarpit(tarpitNet)
	h.c.setVIPs([]netip.Addr{vip})
	x := netip.MustParseAddr("192.0.2.201")
	probes := map[netip.Addr][]time.Duration{}
	note := func(out []frame) {
		for _, f := range out {
			if d := decode(t, f); d.SPA == netip.IPv4Unspecified() {
				probes[d.TPA] = append(probes[d.TPA], h.now.Sub(t0))
			}
		}
	}
	note(h.tick())
	out, _ := h.in(request(client, clientIP, x))
	note(out)
	for ms := 100; ms <= 2000; ms += 100 {
		h.at(time.Duration(ms) * time.Millisecond)
		note(h.tick())
	}
	for _, a := range []netip.Addr{vip, x} {
		if got := fmt.Sprint(probes[a]); got != "[0s 300ms 600ms]" {
			t.Errorf("probes for %s at %s", a, got)
		}
	}
	if h.c.vips[vip].state != VIPClaimed || !h.c.tpClaimed.touch(x) {
		t.Fatal("not claimed after the window")
	}

	// The third probe is answered: not claimed.
	h = newHarness(t)
	h.c.opt.Probes = 3
	h.c.opt.ProbeWindow = 900 * time.Millisecond
	h.c.setVIPs([]netip.Addr{vip})
	for ms := 0; ms <= 2000; ms += 100 {
		h.at(time.Duration(ms) * time.Millisecond)
		h.tick()
		if ms == 700 {
			h.in(reply(be1MAC, vip, lbMAC, netip.IPv4Unspecified()))
		}
	}
	if st := h.c.vips[vip].state; st != VIPInUse {
		t.Fatalf("state %v after the last probe was answered", st)
	}
}
