package dsrcheck

import (
	"net/netip"

	"github.com/nib-lb/nib/internal/frame"
)

// The frames: ARP is arpd's codec (arpd.AppendRequest, arpd.ParseFrame, on
// github.com/mdlayher/arp); the SYN and RST probes are built, and answers
// parsed, with nib's internal/frame. Nothing here touches a socket.

const (
	ethHdrLen = 14
	minFrame  = 60 // shortest Ethernet frame without FCS; what we send is padded to it

	etherTypeARP  = frame.EtherTypeARP
	etherTypeIPv4 = frame.EtherTypeIPv4
)

var broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// pad pads the frame starting at b[start] with zeros to minFrame bytes.
func pad(b []byte, start int) []byte {
	if n := minFrame - (len(b) - start); n > 0 {
		b = append(b, make([]byte, n)...)
	}
	return b
}

// synProbe is one SYN to the VIP, sent to one backend's MAC.
type synProbe struct {
	srcMAC, dstMAC [6]byte
	src, dst       netip.Addr // our address, the VIP
	sport, dport   uint16
	seq            uint32 // our initial sequence number
	id             uint16 // IPv4 identification
}

// mssOption is the SYN's one option: MSS 1460, as a real client would send.
var mssOption = []byte{2, 4, 0x05, 0xb4}

// appendSYN appends the probe's SYN frame, checksums filled in.
func (p synProbe) appendSYN(b []byte) []byte {
	return p.appendTCP(b, p.seq, frame.FlagSYN, 64240, mssOption)
}

// appendRST appends the RST that ends the half-open connection a SYN+ACK
// answered (sequence number seq+1, as the backend expects), so that probes
// do not leave connections in SYN-RECEIVED on the backend.
func (p synProbe) appendRST(b []byte) []byte {
	return p.appendTCP(b, p.seq+1, frame.FlagRST, 0, nil)
}

func (p synProbe) appendTCP(b []byte, seq uint32, flags uint8, window uint16, opts []byte) []byte {
	start := len(b)
	b = frame.AppendEthernet(b, p.dstMAC, p.srcMAC, nil, etherTypeIPv4)
	tcpLen := 20 + len(opts)
	b = frame.AppendIPv4(b, frame.IPv4Header{
		ID: p.id, FlagsFragment: frame.IPv4DontFragment, TTL: 64, Proto: frame.ProtoTCP,
		Src: p.src, Dst: p.dst,
	}, tcpLen)
	b = frame.AppendTCP(b, frame.TCPHeader{
		SrcPort: p.sport, DstPort: p.dport, Seq: seq, Flags: flags, Window: window, Options: opts,
	})
	var f frame.Frame
	if err := f.Parse(b[start:]); err != nil || !f.SetL4Checksum() {
		panic("dsrcheck: building a TCP probe") // our own frame always parses
	}
	return pad(b, start)
}

// tcpAnswer is a parsed IPv4 TCP segment that may answer a probe.
type tcpAnswer struct {
	ethSrc       [6]byte
	src, dst     netip.Addr
	sport, dport uint16
	flags        uint8
	seq, ack     uint32
}

// parseTCPAnswer parses an Ethernet frame carrying an unfragmented IPv4 TCP
// segment with a correct IPv4 header checksum. The TCP checksum is not
// checked: a packet socket may see it not yet computed (checksum offload
// on a veth, for instance); the acknowledgment number is what ties an
// answer to our probe.
func parseTCPAnswer(b []byte) (a tcpAnswer, ok bool) {
	var f frame.Frame
	if f.Parse(b) != nil || f.IPVersion() != 4 || f.Proto() != frame.ProtoTCP || !f.HasPorts() || f.Fragmented() {
		return a, false
	}
	if ipOK, _ := f.VerifyChecksums(); !ipOK {
		return a, false
	}
	a.ethSrc = f.SrcMAC()
	a.src, a.dst = f.Src(), f.Dst()
	a.sport, a.dport = f.SrcPort(), f.DstPort()
	a.flags, a.seq, a.ack = f.TCPFlags(), f.TCPSeq(), f.TCPAck()
	return a, true
}

// synKind is what became of a SYN probe.
type synKind int

const (
	synNotSent  synKind = iota // no probe: no port, or the backend was not probed
	synNoAnswer                // nothing answered before the timeout
	synAccepted                // SYN+ACK: the VIP is bound and the port listens
	synReset                   // RST: the VIP is bound, nothing listens on the port
)

// answerKind classifies a as an answer to p: synAccepted for a SYN+ACK,
// synReset for a RST, both acknowledging our SYN; synNoAnswer when a does
// not answer p (other addresses or ports, wrong acknowledgment, other
// flags). The Ethernet source is the caller's business.
func (p synProbe) answerKind(a tcpAnswer) synKind {
	if a.src != p.dst || a.dst != p.src || a.sport != p.dport || a.dport != p.sport ||
		a.flags&frame.FlagACK == 0 || a.ack != p.seq+1 {
		return synNoAnswer
	}
	switch {
	case a.flags&frame.FlagRST != 0:
		return synReset
	case a.flags&frame.FlagSYN != 0 && a.flags&frame.FlagFIN == 0:
		return synAccepted
	}
	return synNoAnswer
}
