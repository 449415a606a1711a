package dsr

import (
	"errors"
	"net/netip"
	"sync/atomic"

	"github.com/nib-lb/nib/internal/frame"
	"github.com/nib-lb/nib/internal/tarpit"
)

// Neighbors resolves backend MAC addresses (arpd's cache implements it).
// Version changes whenever any answer may have changed, so a resolved MAC
// can be cached until then.
type Neighbors interface {
	Lookup(netip.Addr) (mac [6]byte, ok bool)
	Version() uint64
}

// DropReason says why a frame was not forwarded.
type DropReason int

// Drop reasons, counted per worker.
const (
	DropTruncated   DropReason = iota // longer than the receive buffer
	DropMalformed                     // bad lengths or header fields
	DropUnsupported                   // not IPv4 TCP/UDP/ICMP (e.g. IPv6, for now)
	DropNoService                     // VIP, but no service for that port/protocol
	DropNoBackend                     // no backend takes new flows
	DropUnresolved                    // backend MAC not known (yet)
	DropICMP                          // ICMP to a VIP that is not an error about a flow
	DropSendFailed                    // the kernel refused the frame
	DropTarpitted                     // to a tarpit address, not a SYN: ignored
	DropNotForUs                      // addressed to another MAC (or a group): not ours to forward
	numDropReasons
)

var dropNames = [numDropReasons]string{"truncated", "malformed", "unsupported", "no-service", "no-backend", "unresolved", "icmp", "send-failed", "tarpitted", "not-for-us"}

// String returns the reason's name, as used in counters.
func (r DropReason) String() string { return dropNames[r] }

// action is what to do with one received frame.
type action uint8

const (
	actDrop action = iota
	actForward
	actReply // a reply frame was built (tarpit)
)

func (a action) String() string {
	switch a {
	case actDrop:
		return "drop"
	case actForward:
		return "forward"
	case actReply:
		return "reply"
	}
	return "?"
}

// workerStats are one worker's counters; the forwarder sums them.
type workerStats struct {
	received  atomic.Uint64
	forwarded atomic.Uint64
	// Frames that still needed their checksum (CHECKSUM_PARTIAL) and
	// GRO/TSO super-frames, forwarded with their vnet header for the
	// kernel to finish.
	partial, super atomic.Uint64
	tarpitReplies  atomic.Uint64
	readErrors     atomic.Uint64
	drops          [numDropReasons]atomic.Uint64
}

// worker owns one socket, its batch buffers and its flow table.
type worker struct {
	f     *Forwarder
	slot  int // counter slot (worker number mod statSlots)
	flows *flowTable
	fr    frame.Frame
	stats workerStats
	// reply is where process builds a tarpit answer (after room for the
	// vnet header); the caller sends reply[:vnetHdrLen+n].
	reply []byte
}

// forUs reports whether frame b (Ethernet header first) is addressed to
// mac, the interface's own address: what the kernel calls PACKET_HOST.
// The packet socket also sees frames for other hosts (a promiscuous NIC,
// unknown unicast flooded by a switch) and broadcast or multicast frames;
// none of them is ours to forward or answer, whatever their IP destination
// (another LB on the segment may own the VIP's MAC, and the kernel's IP
// stack drops other hosts' frames too). The check is on the frame's own
// bytes, so it holds for every message of a recvmmsg batch without the
// per-message link-layer address.
func forUs(b []byte, mac [6]byte) bool {
	return len(b) >= 6 && [6]byte(b[:6]) == mac
}

// process decides what to do with frame b (Ethernet header first) and, to
// forward it, rewrites its MAC addresses in place. It never allocates.
func (w *worker) process(t *table, b []byte, now uint32) (action, DropReason) {
	if len(b) < 14 {
		return actDrop, DropMalformed
	}
	own := w.f.MAC()
	if !forUs(b, own) {
		return actDrop, DropNotForUs
	}
	fr := &w.fr
	if err := fr.Parse(b); err != nil {
		if errors.Is(err, frame.ErrUnsupported) {
			return actDrop, DropUnsupported
		}
		return actDrop, DropMalformed
	}
	if fr.IPVersion() != 4 {
		return actDrop, DropUnsupported
	}
	if t.tarpit.Match != nil && t.tarpit.Match(fr.Dst()) && t.lookupAny(fr.Dst(), fr.Proto()) == nil {
		out, ok := tarpit.Reply(w.reply[vnetHdrLen:vnetHdrLen], fr, own, w.f.secret)
		if !ok {
			return actDrop, DropTarpitted
		}
		w.reply = w.reply[:vnetHdrLen+len(out)]
		return actReply, 0
	}
	var key frame.Flow
	var s *service
	switch fr.Proto() {
	case ProtoTCP, ProtoUDP:
		fl := fr.Flow()
		s = t.lookup(fl.Dst, fl.Proto, fl.DstPort)
		if s == nil {
			// A non-first fragment has no ports: any service of the VIP
			// and protocol will do, keyed by addresses only below.
			if fr.Fragment() {
				s = t.lookupAny(fl.Dst, fl.Proto)
			}
			if s == nil {
				return actDrop, DropNoService
			}
		}
		key = s.key(fl, fr.Fragmented())
	case ProtoICMP:
		// An error about a flow (fragmentation needed above all) goes to
		// the backend that owns the flow.
		inner, ok := fr.ICMPInnerFlow()
		if !ok {
			return actDrop, DropICMP
		}
		if s = t.lookup(inner.Dst, inner.Proto, inner.DstPort); s == nil {
			return actDrop, DropNoService
		}
		key = s.key(inner, false)
	default:
		return actDrop, DropUnsupported
	}
	be := w.flows.get(key, now)
	if be == nil {
		if be = s.choose(HashFlow(key)); be == nil {
			s.stats[w.slot].noBackend.Add(1)
			return actDrop, DropNoBackend
		}
		w.flows.put(key, be, now)
		s.stats[w.slot].newFlows.Add(1)
	}
	mac, ok := be.resolve(w.f.nb)
	if !ok {
		return actDrop, DropUnresolved
	}
	copy(b[0:6], mac[:])
	copy(b[6:12], own[:])
	n := uint64(len(b))
	ss, bs := &s.stats[w.slot], &be.stats[w.slot]
	ss.packets.Add(1)
	ss.bytes.Add(n)
	bs.packets.Add(1)
	bs.bytes.Add(n)
	return actForward, 0
}

// key is the flow-table and hash key for a flow to service s: the whole
// flow for per-flow services, the client address alone for sticky ones and
// for fragmented datagrams (whose later fragments carry no ports).
func (s *service) key(fl frame.Flow, fragmented bool) frame.Flow {
	if s.cfg.PerFlow && !fragmented {
		return fl
	}
	return frame.Flow{Src: fl.Src, Dst: s.cfg.VIP, Proto: fl.Proto, DstPort: s.cfg.Port}
}

// lookupAny finds some service on addr for proto (for port-less fragments).
func (t *table) lookupAny(addr netip.Addr, proto uint8) *service {
	for _, s := range t.list {
		if s.cfg.VIP == addr && s.cfg.Proto == proto {
			return s
		}
	}
	return nil
}
