package dsrcheck

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/mdlayher/arp"
	"github.com/nib-lb/nib/internal/arpd"
)

// The rules, pure: what the ARP frames seen say about the backends and the
// VIP (arpState), and the verdict on a backend from everything seen
// (decide). The socket loops in check.go feed them.

// Bounds of what is remembered from a round of ARP.
const (
	maxClaims    = 64 // MACs claiming the VIP
	maxConflicts = 4  // further MACs answering for one backend's address
)

// backendARP is what ARP showed of one backend.
type backendARP struct {
	mac       [6]byte
	resolved  bool
	conflicts [][6]byte // other MACs that answered for the backend's address
}

// vipClaim is a MAC that claimed the VIP.
type vipClaim struct {
	mac       [6]byte
	answered  bool // replied to who-has VIP
	announced bool // sent ARP (a request or a gratuitous packet) with the VIP as sender address
}

// arpState collects a round of ARP: the backends' MACs and who claims the
// VIP. Frames from our own MAC are ignored: lbd's ARP responder, when it
// runs on this host, answers for the VIP with it, and that is no leak.
type arpState struct {
	mac      [6]byte    // ours
	ip, vip  netip.Addr // ours, the VIP
	index    map[netip.Addr]int
	backends []backendARP
	claims   []vipClaim
}

func newARPState(mac [6]byte, ip, vip netip.Addr, backends []netip.Addr) *arpState {
	s := &arpState{mac: mac, ip: ip, vip: vip, index: make(map[netip.Addr]int, len(backends)), backends: make([]backendARP, len(backends))}
	for i, b := range backends {
		s.index[b] = i
	}
	return s
}

// observe applies one ARP packet:
//   - a packet whose sender address is the VIP marks its sender MAC as a
//     claimer of the VIP (a reply: it answered who-has VIP; else it
//     announced the VIP);
//   - a reply to us (target address ours) from a backend's address gives
//     that backend's MAC; the first MAC is kept, others are noted as
//     conflicts (two hosts with one address).
func (s *arpState) observe(p arpd.Packet) {
	if p.SHA == s.mac || p.EthSrc == s.mac {
		return
	}
	if p.SPA == s.vip {
		c := s.claim(p.SHA)
		if c == nil {
			return
		}
		if p.Op == arp.OperationReply {
			c.answered = true
		} else {
			c.announced = true
		}
		return
	}
	i, ok := s.index[p.SPA]
	if !ok || p.Op != arp.OperationReply || p.TPA != s.ip {
		return
	}
	b := &s.backends[i]
	switch {
	case !b.resolved:
		b.mac, b.resolved = p.SHA, true
	case b.mac != p.SHA && !containsMAC(b.conflicts, p.SHA) && len(b.conflicts) < maxConflicts:
		b.conflicts = append(b.conflicts, p.SHA)
	}
}

// claim returns the claim of mac, adding it; nil when the table is full.
func (s *arpState) claim(mac [6]byte) *vipClaim {
	for i := range s.claims {
		if s.claims[i].mac == mac {
			return &s.claims[i]
		}
	}
	if len(s.claims) == maxClaims {
		return nil
	}
	s.claims = append(s.claims, vipClaim{mac: mac})
	return &s.claims[len(s.claims)-1]
}

// unresolved returns the indexes of the backends without a MAC yet.
func (s *arpState) unresolved() []int {
	var out []int
	for i, b := range s.backends {
		if !b.resolved {
			out = append(out, i)
		}
	}
	return out
}

// claimOf returns the VIP claim of mac, if any.
func (s *arpState) claimOf(mac [6]byte) (vipClaim, bool) {
	for _, c := range s.claims {
		if c.mac == mac {
			return c, true
		}
	}
	return vipClaim{}, false
}

// others returns the claimers of the VIP that are not a resolved backend.
func (s *arpState) others() []string {
	var out []string
	for _, c := range s.claims {
		isBackend := false
		for _, b := range s.backends {
			if b.resolved && b.mac == c.mac {
				isBackend = true
				break
			}
		}
		if !isBackend {
			out = append(out, net.HardwareAddr(c.mac[:]).String())
		}
	}
	return out
}

func containsMAC(list [][6]byte, m [6]byte) bool {
	for _, x := range list {
		if x == m {
			return true
		}
	}
	return false
}

// synOutcome is what became of the SYN probe sent to one backend.
type synOutcome struct {
	kind synKind
	// other is a MAC, not the backend's, that answered the probe instead
	// (a host the backend forwards the VIP's traffic to, or a router its
	// replies go through); zero if none.
	other [6]byte
}

// params are the check's settings the lines mention.
type params struct {
	iface   string
	ip      netip.Addr // ours
	vip     netip.Addr
	port    uint16
	timeout time.Duration
}

// decide gives the verdict on backend from what was seen: no MAC is
// Unreachable; a MAC that claimed the VIP is an ARPLeak, whatever the SYN
// probe said; then the SYN probe's outcome decides (none sent: OK, the
// probe is skipped).
func decide(pr params, backend netip.Addr, b backendARP, claim vipClaim, claimed bool, syn synOutcome) Result {
	r := Result{Backend: backend}
	if !b.resolved {
		r.Verdict = Unreachable
		r.Detail = fmt.Sprintf("no ARP reply for its own address to %s on %s within %v", pr.ip, pr.iface, pr.timeout)
		return r
	}
	r.MAC = net.HardwareAddr(append([]byte(nil), b.mac[:]...))
	var notes []string
	if len(b.conflicts) > 0 {
		macs := make([]string, len(b.conflicts))
		for i, m := range b.conflicts {
			macs[i] = net.HardwareAddr(m[:]).String()
		}
		notes = append(notes, fmt.Sprintf("address conflict: %s also answered ARP for %s", strings.Join(macs, ", "), backend))
	}
	switch {
	case claimed:
		r.Verdict = ARPLeak
		var how []string
		if claim.answered {
			how = append(how, fmt.Sprintf("answers ARP who-has %s with its own MAC", pr.vip))
		}
		if claim.announced {
			how = append(how, fmt.Sprintf("sends ARP with %s as its sender address", pr.vip))
		}
		r.Detail = strings.Join(how, " and ") + ": it draws the VIP's traffic away from the load balancer"
	case syn.kind == synNotSent:
		r.Verdict = OK
		r.Detail = fmt.Sprintf("answers ARP for its address, not for %s; SYN probe skipped (no port given)", pr.vip)
	default:
		r.Verdict, r.Detail = synVerdict(pr.vip, pr.port, pr.timeout, syn)
	}
	if len(notes) > 0 {
		r.Detail += " (" + strings.Join(notes, "; ") + ")"
	}
	return r
}

// synVerdict is the verdict of one SYN probe that was sent.
func synVerdict(vip netip.Addr, port uint16, timeout time.Duration, syn synOutcome) (Verdict, string) {
	to := netip.AddrPortFrom(vip, port)
	switch syn.kind {
	case synAccepted:
		return OK, fmt.Sprintf("SYN+ACK from %s", to)
	case synReset:
		return NotListening, fmt.Sprintf("RST from %s: the VIP is bound but nothing listens on port %d", to, port)
	}
	d := fmt.Sprintf("no answer to a SYN for %s sent to its MAC within %v", to, timeout)
	if syn.other != ([6]byte{}) {
		d += fmt.Sprintf("; %s answered it instead (the backend forwards the VIP's traffic, or its replies go through a router)", net.HardwareAddr(syn.other[:]))
	}
	return VIPNotBound, d
}

// assemble makes the report from a round of ARP and the SYN outcomes (one
// per backend, synNotSent where none was sent).
func assemble(pr params, backends []netip.Addr, s *arpState, syn []synOutcome) Report {
	rep := Report{VIP: pr.vip, Results: make([]Result, len(backends)), Others: s.others()}
	for i, be := range backends {
		b := s.backends[i]
		var c vipClaim
		var claimed bool
		if b.resolved {
			c, claimed = s.claimOf(b.mac)
		}
		rep.Results[i] = decide(pr, be, b, c, claimed, syn[i])
	}
	return rep
}
