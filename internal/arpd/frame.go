package arpd

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/mdlayher/arp"
)

// The ARP packets themselves are marshalled and parsed by
// github.com/mdlayher/arp (the codec the Go networking community shares and
// fuzzes); arpd adds the Ethernet header, which it writes and checks itself
// (three fields, no VLAN tags on the LB's interface), and its own rules on
// what a usable packet is (ParseFrame).

const (
	ethHdrLen = 14
	arpLen    = 28
	// minFrame is the shortest Ethernet frame without FCS; what we send is
	// padded to it.
	minFrame = 60

	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
	htypeEthernet = 1

	opRequest = arp.OperationRequest
	opReply   = arp.OperationReply
)

var broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Packet is a parsed Ethernet/IPv4 ARP packet, in the fixed-size form
// arpd's rules compare (and setup check's, internal/dsrcheck).
type Packet struct {
	EthSrc [6]byte // the Ethernet source
	Op     arp.Operation
	SHA    [6]byte // sender hardware address
	SPA    netip.Addr
	THA    [6]byte
	TPA    netip.Addr
}

// ParseFrame parses an Ethernet frame carrying an Ethernet/IPv4 ARP packet
// (trailing padding allowed). ok is false for anything else: short frames,
// another EtherType (a VLAN tag included), hardware or protocol type,
// lengths other than 6 and 4, an operation other than request or reply, or
// a sender MAC that is zero, multicast or broadcast.
func ParseFrame(b []byte) (p Packet, ok bool) {
	if len(b) < ethHdrLen+arpLen || binary.BigEndian.Uint16(b[12:14]) != etherTypeARP {
		return p, false
	}
	var a arp.Packet
	if err := a.UnmarshalBinary(b[ethHdrLen:]); err != nil {
		return p, false
	}
	if a.HardwareType != htypeEthernet || a.ProtocolType != etherTypeIPv4 ||
		a.HardwareAddrLength != 6 || a.IPLength != 4 ||
		len(a.SenderHardwareAddr) != 6 || len(a.TargetHardwareAddr) != 6 ||
		!a.SenderIP.Is4() || !a.TargetIP.Is4() {
		return p, false
	}
	if a.Operation != opRequest && a.Operation != opReply {
		return p, false
	}
	p.Op = a.Operation
	copy(p.EthSrc[:], b[6:12])
	copy(p.SHA[:], a.SenderHardwareAddr)
	p.SPA = a.SenderIP
	copy(p.THA[:], a.TargetHardwareAddr)
	p.TPA = a.TargetIP
	if p.SHA == ([6]byte{}) || p.SHA[0]&1 != 0 {
		return p, false
	}
	return p, true
}

// frame is one Ethernet frame to send; its destination MAC is b[0:6].
type frame [minFrame]byte

func (f *frame) dst() []byte { return f[0:6] }

// buildARP returns an Ethernet frame from src to dst carrying an ARP packet.
// It fails only for addresses that are not IPv4.
func buildARP(dst, src [6]byte, op arp.Operation, sha [6]byte, spa netip.Addr, tha [6]byte, tpa netip.Addr) (frame, error) {
	var f frame
	p, err := arp.NewPacket(op, sha[:], spa.Unmap(), tha[:], tpa.Unmap())
	if err != nil {
		return f, fmt.Errorf("arpd: ARP packet %v from %s for %s: %w", op, spa, tpa, err)
	}
	b, err := p.MarshalBinary()
	if err != nil {
		return f, fmt.Errorf("arpd: ARP packet %v from %s for %s: %w", op, spa, tpa, err)
	}
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:14], etherTypeARP)
	copy(f[ethHdrLen:], b)
	return f, nil
}

// AppendRequest appends a broadcast "who-has target, tell ip" frame from
// mac, padded to the minimum Ethernet size. ip and target must be IPv4.
func AppendRequest(b []byte, mac [6]byte, ip, target netip.Addr) ([]byte, error) {
	f, err := buildARP(broadcast, mac, opRequest, mac, ip, [6]byte{}, target)
	if err != nil {
		return b, err
	}
	return append(b, f[:]...), nil
}

// macString formats a MAC the usual way without a net.HardwareAddr.
func macString(m [6]byte) string {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 17)
	for i, c := range m {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hex[c>>4], hex[c&15])
	}
	return string(b)
}
