package arpd

import (
	"encoding/binary"
	"net/netip"
)

const (
	ethHdrLen = 14
	arpLen    = 28
	// minFrame is the shortest Ethernet frame without FCS; what we send is
	// padded to it.
	minFrame = 60

	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
	htypeEthernet = 1

	opRequest = 1
	opReply   = 2
)

var broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// arpPacket is a parsed Ethernet/IPv4 ARP packet.
type arpPacket struct {
	ethSrc [6]byte
	op     uint16
	sha    [6]byte
	spa    netip.Addr
	tha    [6]byte
	tpa    netip.Addr
}

// parseARP parses an Ethernet frame carrying an Ethernet/IPv4 ARP packet
// (trailing padding allowed). ok is false for anything else: short frames,
// another EtherType, hardware or protocol type, lengths other than 6 and 4,
// an operation other than request or reply, or a sender MAC that is zero,
// multicast or broadcast. It does not allocate.
func parseARP(b []byte) (p arpPacket, ok bool) {
	if len(b) < ethHdrLen+arpLen {
		return p, false
	}
	if binary.BigEndian.Uint16(b[12:14]) != etherTypeARP {
		return p, false
	}
	a := b[ethHdrLen:]
	if binary.BigEndian.Uint16(a[0:2]) != htypeEthernet ||
		binary.BigEndian.Uint16(a[2:4]) != etherTypeIPv4 ||
		a[4] != 6 || a[5] != 4 {
		return p, false
	}
	p.op = binary.BigEndian.Uint16(a[6:8])
	if p.op != opRequest && p.op != opReply {
		return p, false
	}
	copy(p.ethSrc[:], b[6:12])
	copy(p.sha[:], a[8:14])
	p.spa = netip.AddrFrom4([4]byte(a[14:18]))
	copy(p.tha[:], a[18:24])
	p.tpa = netip.AddrFrom4([4]byte(a[24:28]))
	if p.sha == ([6]byte{}) || p.sha[0]&1 != 0 {
		return p, false
	}
	return p, true
}

// frame is one Ethernet frame to send; its destination MAC is b[0:6].
type frame [minFrame]byte

func (f *frame) dst() []byte { return f[0:6] }

// buildARP returns an Ethernet frame from src to dst carrying an ARP packet.
func buildARP(dst, src [6]byte, op uint16, sha [6]byte, spa netip.Addr, tha [6]byte, tpa netip.Addr) frame {
	var f frame
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:14], etherTypeARP)
	a := f[ethHdrLen:]
	binary.BigEndian.PutUint16(a[0:2], htypeEthernet)
	binary.BigEndian.PutUint16(a[2:4], etherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], sha[:])
	s, t := spa.As4(), tpa.As4()
	copy(a[14:18], s[:])
	copy(a[18:24], tha[:])
	copy(a[24:28], t[:])
	return f
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
