package frame

import (
	"encoding/binary"
	"net/netip"
)

// The Append functions build headers for tests, the tarpit and ARP. They
// append to dst and do not allocate when dst has the capacity. They panic on
// arguments no frame can carry (options over 40 bytes, wrong address family).

// AppendEthernet appends an Ethernet header with the given tags (TCIs,
// outermost first): one tag is 802.1Q (0x8100); with two, the outer one is
// 802.1ad (0x88a8).
func AppendEthernet(dst []byte, dstMAC, srcMAC [6]byte, vlans []uint16, etherType uint16) []byte {
	dst = append(dst, dstMAC[:]...)
	dst = append(dst, srcMAC[:]...)
	for i, tci := range vlans {
		tpid := uint16(EtherTypeVLAN)
		if len(vlans) == 2 && i == 0 {
			tpid = EtherTypeQinQ
		}
		dst = binary.BigEndian.AppendUint16(dst, tpid)
		dst = binary.BigEndian.AppendUint16(dst, tci)
	}
	return binary.BigEndian.AppendUint16(dst, etherType)
}

// IPv4Header holds the IPv4 header fields that are not derived: AppendIPv4
// computes the version, IHL, total length and checksum.
type IPv4Header struct {
	TOS           uint8
	ID            uint16
	FlagsFragment uint16 // IPv4DontFragment, IPv4MoreFragments | offset in 8-byte units
	TTL           uint8
	Proto         uint8
	Src, Dst      netip.Addr // IPv4
	Options       []byte     // padded with zeros (end of options) to a multiple of 4; at most 40 bytes
}

// AppendIPv4 appends an IPv4 header, with its checksum, for an L4 packet of payloadLen bytes.
func AppendIPv4(dst []byte, h IPv4Header, payloadLen int) []byte {
	opt := (len(h.Options) + 3) &^ 3
	if opt > 40 {
		panic("frame: IPv4 options longer than 40 bytes")
	}
	ihl := 20 + opt
	start := len(dst)
	dst = append(dst, 0x40|byte(ihl/4), h.TOS)
	dst = binary.BigEndian.AppendUint16(dst, uint16(ihl+payloadLen))
	dst = binary.BigEndian.AppendUint16(dst, h.ID)
	dst = binary.BigEndian.AppendUint16(dst, h.FlagsFragment)
	dst = append(dst, h.TTL, h.Proto, 0, 0)
	src, d := h.Src.As4(), h.Dst.As4()
	dst = append(dst, src[:]...)
	dst = append(dst, d[:]...)
	dst = append(dst, h.Options...)
	for i := len(h.Options); i < opt; i++ {
		dst = append(dst, 0)
	}
	binary.BigEndian.PutUint16(dst[start+10:], Checksum(dst[start:], 0))
	return dst
}

// IPv6Header holds the IPv6 header fields; AppendIPv6 computes the payload length.
type IPv6Header struct {
	TrafficClass uint8
	FlowLabel    uint32 // 20 bits
	NextHeader   uint8
	HopLimit     uint8
	Src, Dst     netip.Addr // IPv6
}

// AppendIPv6 appends an IPv6 header for a payload (extension headers
// included) of payloadLen bytes.
func AppendIPv6(dst []byte, h IPv6Header, payloadLen int) []byte {
	dst = binary.BigEndian.AppendUint32(dst, 6<<28|uint32(h.TrafficClass)<<20|h.FlowLabel&0xfffff)
	dst = binary.BigEndian.AppendUint16(dst, uint16(payloadLen))
	dst = append(dst, h.NextHeader, h.HopLimit)
	src, d := h.Src.As16(), h.Dst.As16()
	dst = append(dst, src[:]...)
	return append(dst, d[:]...)
}

// TCPHeader holds the TCP header fields; the data offset follows from Options.
type TCPHeader struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Window           uint16
	Checksum         uint16 // usually 0, then Frame.SetL4Checksum
	Urgent           uint16
	Options          []byte // padded with zeros (end of options) to a multiple of 4; at most 40 bytes
}

// AppendTCP appends a TCP header. Append the payload, Parse, then call
// SetL4Checksum to fill in the checksum.
func AppendTCP(dst []byte, h TCPHeader) []byte {
	opt := (len(h.Options) + 3) &^ 3
	if opt > 40 {
		panic("frame: TCP options longer than 40 bytes")
	}
	dst = binary.BigEndian.AppendUint16(dst, h.SrcPort)
	dst = binary.BigEndian.AppendUint16(dst, h.DstPort)
	dst = binary.BigEndian.AppendUint32(dst, h.Seq)
	dst = binary.BigEndian.AppendUint32(dst, h.Ack)
	dst = append(dst, byte((20+opt)/4)<<4, h.Flags)
	dst = binary.BigEndian.AppendUint16(dst, h.Window)
	dst = binary.BigEndian.AppendUint16(dst, h.Checksum)
	dst = binary.BigEndian.AppendUint16(dst, h.Urgent)
	dst = append(dst, h.Options...)
	for i := len(h.Options); i < opt; i++ {
		dst = append(dst, 0)
	}
	return dst
}

// UDPHeader holds the UDP header fields; AppendUDP computes the length.
type UDPHeader struct {
	SrcPort, DstPort uint16
	Checksum         uint16
}

// AppendUDP appends a UDP header for a payload of payloadLen bytes.
func AppendUDP(dst []byte, h UDPHeader, payloadLen int) []byte {
	dst = binary.BigEndian.AppendUint16(dst, h.SrcPort)
	dst = binary.BigEndian.AppendUint16(dst, h.DstPort)
	dst = binary.BigEndian.AppendUint16(dst, uint16(8+payloadLen))
	return binary.BigEndian.AppendUint16(dst, h.Checksum)
}

// AppendICMP appends an 8-byte ICMP or ICMPv6 header (checksum 0); rest is
// the type-specific word (for "fragmentation needed" and "packet too big":
// the next-hop MTU).
func AppendICMP(dst []byte, typ, code uint8, rest uint32) []byte {
	dst = append(dst, typ, code, 0, 0)
	return binary.BigEndian.AppendUint32(dst, rest)
}

// AppendARP appends an IPv4-over-Ethernet ARP packet (op 1 request, 2 reply).
func AppendARP(dst []byte, op uint16, senderMAC [6]byte, senderIP netip.Addr, targetMAC [6]byte, targetIP netip.Addr) []byte {
	dst = append(dst, 0, 1, 0x08, 0x00, 6, 4)
	dst = binary.BigEndian.AppendUint16(dst, op)
	sip, tip := senderIP.As4(), targetIP.As4()
	dst = append(dst, senderMAC[:]...)
	dst = append(dst, sip[:]...)
	dst = append(dst, targetMAC[:]...)
	return append(dst, tip[:]...)
}

// IPv4Header returns the frame's IPv4 header fields (Options is a view into
// the buffer); the zero value for other frames.
func (f *Frame) IPv4Header() IPv4Header {
	if f.ipVersion != 4 {
		return IPv4Header{}
	}
	b := f.b[f.l3:]
	h := IPv4Header{
		TOS:           b[1],
		ID:            be16(b[4:]),
		FlagsFragment: be16(b[6:]),
		TTL:           b[8],
		Proto:         b[9],
		Src:           f.Src(),
		Dst:           f.Dst(),
	}
	if n := f.ipv4HeaderEnd() - f.l3; n > 20 {
		h.Options = b[20:n:n]
	}
	return h
}

// IPv6Header returns the frame's fixed IPv6 header fields; the zero value for other frames.
func (f *Frame) IPv6Header() IPv6Header {
	if f.ipVersion != 6 {
		return IPv6Header{}
	}
	b := f.b[f.l3:]
	w := be32(b)
	return IPv6Header{
		TrafficClass: uint8(w >> 20),
		FlowLabel:    w & 0xfffff,
		NextHeader:   b[6],
		HopLimit:     b[7],
		Src:          f.Src(),
		Dst:          f.Dst(),
	}
}

// TCPHeader returns the frame's TCP header fields (Options is a view into
// the buffer); the zero value for other frames.
func (f *Frame) TCPHeader() TCPHeader {
	if !f.isTCP() {
		return TCPHeader{}
	}
	b := f.b[f.l4:f.payload:f.payload]
	h := TCPHeader{
		SrcPort:  be16(b),
		DstPort:  be16(b[2:]),
		Seq:      be32(b[4:]),
		Ack:      be32(b[8:]),
		Flags:    b[13],
		Window:   be16(b[14:]),
		Checksum: be16(b[16:]),
		Urgent:   be16(b[18:]),
	}
	if len(b) > 20 {
		h.Options = b[20:]
	}
	return h
}

// UDPHeader returns the frame's UDP header fields; the zero value for other frames.
func (f *Frame) UDPHeader() UDPHeader {
	if f.proto != ProtoUDP || f.bits&bitPorts == 0 {
		return UDPHeader{}
	}
	b := f.b[f.l4:]
	return UDPHeader{SrcPort: be16(b), DstPort: be16(b[2:]), Checksum: be16(b[6:])}
}
