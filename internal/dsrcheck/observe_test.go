package dsrcheck

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/nib-lb/nib/internal/arpd"
)

func reply(sha [6]byte, spa netip.Addr, tpa netip.Addr) arpd.Packet {
	return arpd.Packet{EthSrc: sha, Op: arp.OperationReply, SHA: sha, SPA: spa, THA: ourMAC, TPA: tpa}
}

func request(sha [6]byte, spa, tpa netip.Addr) arpd.Packet {
	return arpd.Packet{EthSrc: sha, Op: arp.OperationRequest, SHA: sha, SPA: spa, TPA: tpa}
}

var testParams = params{iface: "eth0", ip: ourIP, vip: vipAddr, port: 80, timeout: time.Second}

// TestAssemble feeds ARP packets and SYN outcomes to the rules and checks
// the verdict and the detail of each backend, and the other claimers of
// the VIP.
func TestAssemble(t *testing.T) {
	be3Addr := netip.MustParseAddr("198.51.100.23")
	be3MAC := [6]byte{0x02, 0, 0xc6, 0x33, 0x64, 0x17}
	accepted, reset, none := synOutcome{kind: synAccepted}, synOutcome{kind: synReset}, synOutcome{kind: synNoAnswer}
	for _, tc := range []struct {
		name     string
		params   params
		backends []netip.Addr
		seen     []arpd.Packet
		syn      []synOutcome
		want     []Verdict
		detail   []string // substring of each detail
		others   []string
	}{{
		name:     "ready",
		backends: []netip.Addr{be1Addr},
		seen:     []arpd.Packet{reply(beMAC, be1Addr, ourIP)},
		syn:      []synOutcome{accepted},
		want:     []Verdict{OK},
		detail:   []string{"SYN+ACK from 198.51.100.100:80"},
	}, {
		name:     "leak dominates a SYN+ACK",
		backends: []netip.Addr{be1Addr, be2Addr},
		seen:     []arpd.Packet{reply(beMAC, be1Addr, ourIP), reply(be2MAC, be2Addr, ourIP), reply(be2MAC, vipAddr, ourIP)},
		syn:      []synOutcome{accepted, accepted},
		want:     []Verdict{OK, ARPLeak},
		detail:   []string{"SYN+ACK", "answers ARP who-has 198.51.100.100 with its own MAC"},
	}, {
		name:     "leak seen before the backend's own reply",
		backends: []netip.Addr{be2Addr},
		seen:     []arpd.Packet{reply(be2MAC, vipAddr, ourIP), reply(be2MAC, be2Addr, ourIP)},
		syn:      []synOutcome{{}},
		want:     []Verdict{ARPLeak},
		detail:   []string{"who-has"},
	}, {
		name:     "announcing the VIP is a leak too",
		backends: []netip.Addr{be2Addr},
		seen:     []arpd.Packet{reply(be2MAC, be2Addr, ourIP), request(be2MAC, vipAddr, ourIP), reply(be2MAC, vipAddr, ourIP)},
		syn:      []synOutcome{{}},
		want:     []Verdict{ARPLeak},
		detail:   []string{"answers ARP who-has 198.51.100.100 with its own MAC and sends ARP with 198.51.100.100 as its sender address"},
	}, {
		name:     "every fault",
		backends: []netip.Addr{be1Addr, be2Addr, be3Addr, netip.MustParseAddr("198.51.100.25")},
		seen:     []arpd.Packet{reply(beMAC, be1Addr, ourIP), reply(be2MAC, be2Addr, ourIP), reply(be3MAC, be3Addr, ourIP)},
		syn:      []synOutcome{none, reset, {kind: synNoAnswer, other: otherMAC}, {}},
		want:     []Verdict{VIPNotBound, NotListening, VIPNotBound, Unreachable},
		detail: []string{
			"no answer to a SYN for 198.51.100.100:80 sent to its MAC within 1s",
			"RST from 198.51.100.100:80: the VIP is bound but nothing listens on port 80",
			"02:00:c6:33:64:0a answered it instead",
			"no ARP reply for its own address to 198.51.100.2 on eth0 within 1s",
		},
	}, {
		name:     "no port: SYN skipped",
		params:   params{iface: "eth0", ip: ourIP, vip: vipAddr, timeout: time.Second},
		backends: []netip.Addr{be1Addr},
		seen:     []arpd.Packet{reply(beMAC, be1Addr, ourIP)},
		syn:      []synOutcome{{}},
		want:     []Verdict{OK},
		detail:   []string{"SYN probe skipped"},
	}, {
		name:     "our own MAC is not a leak nor another host",
		backends: []netip.Addr{be1Addr},
		seen:     []arpd.Packet{reply(ourMAC, vipAddr, ourIP), request(ourMAC, vipAddr, vipAddr), reply(beMAC, be1Addr, ourIP)},
		syn:      []synOutcome{accepted},
		want:     []Verdict{OK},
		detail:   []string{"SYN+ACK"},
	}, {
		name:     "another host answers for the VIP",
		backends: []netip.Addr{be1Addr},
		seen:     []arpd.Packet{reply(otherMAC, vipAddr, ourIP), reply(beMAC, be1Addr, ourIP), reply(otherMAC, vipAddr, ourIP)},
		syn:      []synOutcome{accepted},
		want:     []Verdict{OK},
		detail:   []string{"SYN+ACK"},
		others:   []string{"02:00:c6:33:64:0a"},
	}, {
		name:     "unreachable backend's MAC answering for the VIP is another host",
		backends: []netip.Addr{be1Addr},
		seen:     []arpd.Packet{reply(beMAC, vipAddr, ourIP)},
		syn:      []synOutcome{{}},
		want:     []Verdict{Unreachable},
		detail:   []string{"no ARP reply"},
		others:   []string{"02:00:c6:33:64:15"},
	}, {
		name:     "replies not to us and requests do not resolve",
		backends: []netip.Addr{be1Addr},
		seen:     []arpd.Packet{reply(beMAC, be1Addr, be2Addr), request(beMAC, be1Addr, ourIP)},
		syn:      []synOutcome{{}},
		want:     []Verdict{Unreachable},
		detail:   []string{"no ARP reply"},
	}, {
		name:     "address conflict: first MAC kept, others noted",
		backends: []netip.Addr{be1Addr},
		seen:     []arpd.Packet{reply(beMAC, be1Addr, ourIP), reply(otherMAC, be1Addr, ourIP), reply(otherMAC, be1Addr, ourIP)},
		syn:      []synOutcome{accepted},
		want:     []Verdict{OK},
		detail:   []string{"SYN+ACK from 198.51.100.100:80 (address conflict: 02:00:c6:33:64:0a also answered ARP for 198.51.100.21)"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			pr := tc.params
			if pr.iface == "" {
				pr = testParams
			}
			st := newARPState(ourMAC, ourIP, vipAddr, tc.backends)
			for _, p := range tc.seen {
				st.observe(p)
			}
			rep := assemble(pr, tc.backends, st, tc.syn)
			if len(rep.Results) != len(tc.backends) {
				t.Fatalf("%d results for %d backends", len(rep.Results), len(tc.backends))
			}
			for i, r := range rep.Results {
				if r.Backend != tc.backends[i] || r.Verdict != tc.want[i] || !strings.Contains(r.Detail, tc.detail[i]) {
					t.Errorf("result %d: %s\nwant %s %v, detail with %q", i, r, tc.backends[i], tc.want[i], tc.detail[i])
				}
				if (r.Verdict == Unreachable) != (r.MAC == nil) {
					t.Errorf("result %d: %s: MAC set iff reachable", i, r)
				}
			}
			if strings.Join(rep.Others, ",") != strings.Join(tc.others, ",") {
				t.Errorf("others %q, want %q", rep.Others, tc.others)
			}
			if rep.VIP != vipAddr {
				t.Errorf("report VIP %v", rep.VIP)
			}
		})
	}
}

// TestARPStateBounds: a flood of VIP claims and conflicting replies is
// remembered up to the bounds.
func TestARPStateBounds(t *testing.T) {
	st := newARPState(ourMAC, ourIP, vipAddr, []netip.Addr{be1Addr})
	st.observe(reply(beMAC, be1Addr, ourIP))
	for i := range 1000 {
		m := [6]byte{0x02, 0, 0, 0, byte(i >> 8), byte(i)}
		st.observe(reply(m, vipAddr, ourIP))
		st.observe(reply(m, be1Addr, ourIP))
	}
	if len(st.claims) != maxClaims || len(st.backends[0].conflicts) != maxConflicts {
		t.Errorf("%d claims, %d conflicts; want %d, %d", len(st.claims), len(st.backends[0].conflicts), maxClaims, maxConflicts)
	}
	if st.backends[0].mac != beMAC {
		t.Errorf("backend's MAC replaced by %x", st.backends[0].mac)
	}
}
