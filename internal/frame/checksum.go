package frame

import (
	"encoding/binary"
	"math/bits"
)

// sum returns the ones' complement sum of initial and the big-endian 16-bit
// words of b (an odd last byte is padded with zero), in a 64-bit accumulator
// that still needs folding. Eight bytes are added at a time: 2^64-1 is a
// multiple of 2^16-1, so the 64-bit end-around-carry sum folds to the 16-bit one.
func sum(b []byte, initial uint64) uint64 {
	s := initial
	var c uint64
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[0:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[8:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[16:]), c)
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) >= 4 {
		s, c = bits.Add64(s, uint64(binary.BigEndian.Uint32(b)), c)
		b = b[4:]
	}
	if len(b) >= 2 {
		s, c = bits.Add64(s, uint64(binary.BigEndian.Uint16(b)), c)
		b = b[2:]
	}
	if len(b) == 1 {
		s, c = bits.Add64(s, uint64(b[0])<<8, c)
	}
	s, c = bits.Add64(s, 0, c)
	return s + c
}

// fold folds a 64-bit ones' complement sum to 16 bits.
func fold(s uint64) uint16 {
	s = s>>32 + s&0xffffffff
	s = s>>32 + s&0xffffffff
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	return uint16(s)
}

// Checksum returns the Internet checksum (RFC 1071) of b: the ones'
// complement of the ones' complement sum of initial and the big-endian 16-bit
// words of b, an odd last byte padded with zero. initial is a partial sum,
// typically PseudoHeaderSum, or 0. Data that includes a correct checksum
// field sums to a Checksum of 0.
func Checksum(b []byte, initial uint32) uint16 {
	return ^fold(sum(b, uint64(initial)))
}

// PseudoHeaderSum returns the unfolded ones' complement sum of the TCP, UDP
// or ICMPv6 pseudo-header: src and dst (both 4 or both 16 bytes, as in the
// IP header), the protocol and the L4 length (header and payload).
func PseudoHeaderSum(src, dst []byte, proto uint8, length int) uint32 {
	s := uint32(proto) + uint32(length)>>16 + uint32(length)&0xffff
	for i := 0; i+1 < len(src); i += 2 {
		s += uint32(binary.BigEndian.Uint16(src[i:]))
	}
	for i := 0; i+1 < len(dst); i += 2 {
		s += uint32(binary.BigEndian.Uint16(dst[i:]))
	}
	return s
}

// UpdateChecksum returns checksum old updated for one 16-bit word of the
// covered data changing from oldWord to newWord (RFC 1624 eqn. 3,
// HC' = ~(~HC + ~m + m')). Unlike eqn. 2 it avoids the -0 pitfall and equals
// a full recomputation whenever the covered data is not all zero (an IPv4
// header or a pseudo-header never is). A UDP checksum of 0 ("none", IPv4 only) must be left alone
// by the caller, and a UDP result of 0 sent as 0xffff.
func UpdateChecksum(old, oldWord, newWord uint16) uint16 {
	s := uint32(^old) + uint32(^oldWord) + uint32(newWord)
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	return ^uint16(s)
}

// UpdateChecksum32 is UpdateChecksum for a 32-bit field such as an IPv4
// address or a TCP sequence number.
func UpdateChecksum32(old uint16, oldWord, newWord uint32) uint16 {
	s := uint32(^old) + uint32(^uint16(oldWord>>16)) + uint32(^uint16(oldWord)) +
		newWord>>16 + newWord&0xffff
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	return ^uint16(s)
}

// pseudo returns the pseudo-header sum of the frame for an L4 length n.
// With an IPv6 routing header the pseudo-header should use the final
// destination; this uses the IPv6 header's destination.
func (f *Frame) pseudo(n int) uint32 {
	b, l3 := f.b, f.l3
	if f.ipVersion == 4 {
		return PseudoHeaderSum(b[l3+12:l3+16], b[l3+16:l3+20], f.proto, n)
	}
	return PseudoHeaderSum(b[l3+8:l3+24], b[l3+24:l3+40], f.proto, n)
}

// l4Checksummable reports whether the frame carries a whole TCP, UDP, ICMP
// or ICMPv6 packet.
func (f *Frame) l4Checksummable() bool {
	return f.ipVersion != 0 && f.bits&bitFragmented == 0 &&
		(f.proto == ProtoTCP || f.proto == ProtoUDP || f.isICMP())
}

// VerifyChecksums reports whether the IPv4 header checksum (always true for
// IPv6) and the TCP, UDP, ICMP or ICMPv6 checksum are correct. An IPv4 UDP
// checksum of 0 (none) is correct. l4OK is false when the L4 checksum cannot
// be checked: fragments, other protocols, non-IP frames.
func (f *Frame) VerifyChecksums() (ipOK, l4OK bool) {
	switch f.ipVersion {
	case 4:
		ipOK = Checksum(f.b[f.l3:f.ipv4HeaderEnd()], 0) == 0
	case 6:
		ipOK = true
	default:
		return false, false
	}
	if !f.l4Checksummable() {
		return ipOK, false
	}
	seg := f.b[f.l4:f.end]
	if f.proto == ProtoUDP && f.ipVersion == 4 && be16(seg[6:]) == 0 {
		return ipOK, true
	}
	if f.proto == ProtoUDP && be16(seg[6:]) == 0 {
		return ipOK, false // IPv6 UDP must carry a checksum
	}
	var p uint32
	if f.proto != ProtoICMP {
		p = f.pseudo(len(seg))
	}
	return ipOK, Checksum(seg, p) == 0
}

// ipv4HeaderEnd returns the end of the IPv4 header.
func (f *Frame) ipv4HeaderEnd() int { return f.l3 + int(f.b[f.l3]&0xf)*4 }

// SetIPv4Checksum recomputes the IPv4 header checksum; no-op for other frames.
func (f *Frame) SetIPv4Checksum() {
	if f.ipVersion != 4 {
		return
	}
	h := f.b[f.l3:f.ipv4HeaderEnd()]
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:], Checksum(h, 0))
}

// SetL4Checksum computes and stores the full TCP, UDP, ICMP or ICMPv6
// checksum (a UDP result of 0 is stored as 0xffff), whatever the field held:
// it also completes a CHECKSUM_PARTIAL frame (TP_STATUS_CSUMNOTREADY). It
// returns false, doing nothing, for fragments and other protocols. The IPv6
// pseudo-header uses the IPv6 header's destination, not the final one of a
// routing header with segments left.
func (f *Frame) SetL4Checksum() bool {
	if !f.l4Checksummable() {
		return false
	}
	seg := f.b[f.l4:f.end]
	off := 16 // TCP
	switch f.proto {
	case ProtoUDP:
		off = 6
	case ProtoICMP, ProtoICMPv6:
		off = 2
	}
	seg[off], seg[off+1] = 0, 0
	var p uint32
	if f.proto != ProtoICMP {
		p = f.pseudo(len(seg))
	}
	c := Checksum(seg, p)
	if c == 0 && f.proto == ProtoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[off:], c)
	return true
}
