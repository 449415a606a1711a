package frame

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// EtherTypes understood by Parse.
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeVLAN = 0x8100 // 802.1Q customer tag
	EtherTypeQinQ = 0x88a8 // 802.1ad service tag
	EtherTypeIPv6 = 0x86dd

	etherTypeQinQOld = 0x9100
)

// IP protocol numbers.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// TCP flags, as returned by TCPFlags.
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagPSH = 0x08
	FlagACK = 0x10
	FlagURG = 0x20
	FlagECE = 0x40
	FlagCWR = 0x80
)

// IPv4 flags in IPv4Header.FlagsFragment.
const (
	IPv4DontFragment  = 0x4000
	IPv4MoreFragments = 0x2000
)

// Parse errors, one per drop reason. Parse returns them unwrapped.
var (
	// ErrTruncated: the frame ends before a header or before the length an IP header claims.
	ErrTruncated = errors.New("frame: truncated")
	// ErrMalformed: a length or version field is impossible (IHL < 5, TCP data offset past the
	// segment, UDP length not matching the IP payload, ...).
	ErrMalformed = errors.New("frame: malformed")
	// ErrUnsupported: an EtherType, ARP type, or stack of tags or extension headers Parse does not handle.
	ErrUnsupported = errors.New("frame: unsupported")
)

// MaxExtensionHeaders bounds the IPv6 extension headers Parse walks.
const MaxExtensionHeaders = 8

const (
	bitFragment   = 1 << iota // not the first fragment: no L4 header
	bitFragmented             // any fragment of a fragmented datagram
	bitPorts                  // TCP or UDP header present
)

// Frame is a parsed view of one Ethernet frame. It keeps the buffer given to
// Parse and offsets into it; accessors read the buffer, so in-place rewrites
// (SetDstMAC, checksums) are seen at once. The zero Frame, and a Frame whose
// Parse failed, report zero values.
type Frame struct {
	b         []byte
	l3        int // start of the ARP or IP header
	l4        int // start of the L4 header (after IPv6 extension headers)
	payload   int // start of the L4 payload
	end       int // end of the IP packet (Ethernet padding excluded)
	etherType uint16
	nVLAN     uint8
	ipVersion uint8
	proto     uint8
	bits      uint8
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

// Parse parses b, which the Frame keeps until the next Parse. It never panics
// and returns ErrTruncated, ErrMalformed or ErrUnsupported. Bytes after the
// IP packet (Ethernet padding) are ignored.
func (f *Frame) Parse(b []byte) error {
	*f = Frame{b: b}
	if err := f.parse(b); err != nil {
		*f = Frame{}
		return err
	}
	return nil
}

func (f *Frame) parse(b []byte) error {
	if len(b) < 14 {
		return ErrTruncated
	}
	off := 12
	et := be16(b[off:])
	for et == EtherTypeVLAN || et == EtherTypeQinQ || et == etherTypeQinQOld {
		if f.nVLAN == 2 {
			return ErrUnsupported
		}
		if len(b) < off+6 {
			return ErrTruncated
		}
		f.nVLAN++
		off += 4
		et = be16(b[off:])
	}
	f.etherType = et
	f.l3 = off + 2
	switch et {
	case EtherTypeARP:
		return f.parseARP(b)
	case EtherTypeIPv4:
		return f.parseIPv4(b)
	case EtherTypeIPv6:
		return f.parseIPv6(b)
	}
	return ErrUnsupported
}

func (f *Frame) parseARP(b []byte) error {
	l3 := f.l3
	if len(b)-l3 < 28 {
		return ErrTruncated
	}
	if be16(b[l3:]) != 1 || be16(b[l3+2:]) != EtherTypeIPv4 || b[l3+4] != 6 || b[l3+5] != 4 {
		return ErrUnsupported
	}
	f.end = l3 + 28
	f.l4, f.payload = f.end, f.end
	return nil
}

func (f *Frame) parseIPv4(b []byte) error {
	l3 := f.l3
	if len(b)-l3 < 20 {
		return ErrTruncated
	}
	if b[l3]>>4 != 4 {
		return ErrMalformed
	}
	ihl := int(b[l3]&0xf) * 4
	if ihl < 20 {
		return ErrMalformed
	}
	tot := int(be16(b[l3+2:]))
	if tot < ihl {
		return ErrMalformed
	}
	if len(b)-l3 < tot {
		return ErrTruncated
	}
	f.ipVersion = 4
	f.end = l3 + tot
	f.l4 = l3 + ihl
	f.proto = b[l3+9]
	ff := be16(b[l3+6:])
	if ff&0x1fff != 0 {
		f.bits |= bitFragment | bitFragmented
		f.payload = f.l4
		return nil
	}
	if ff&IPv4MoreFragments != 0 {
		f.bits |= bitFragmented
	}
	return f.parseL4(b)
}

func (f *Frame) parseIPv6(b []byte) error {
	l3 := f.l3
	if len(b)-l3 < 40 {
		return ErrTruncated
	}
	if b[l3]>>4 != 6 {
		return ErrMalformed
	}
	end := l3 + 40 + int(be16(b[l3+4:]))
	if end > len(b) {
		return ErrTruncated
	}
	f.ipVersion = 6
	f.end = end
	nh := b[l3+6]
	off := l3 + 40
	for i := 0; ; i++ {
		var hl int
		switch nh {
		case 0, 43, 44, 51, 60: // hop-by-hop, routing, fragment, AH, destination options
		default:
			f.proto = nh
			f.l4 = off
			return f.parseL4(b)
		}
		if i == MaxExtensionHeaders {
			return ErrUnsupported
		}
		if nh == 0 && i != 0 {
			return ErrMalformed
		}
		if end-off < 8 {
			return ErrMalformed
		}
		switch nh {
		case 44:
			hl = 8
			fo := be16(b[off+2:])
			if fo&0xfff8 != 0 {
				f.bits |= bitFragment | bitFragmented
			} else if fo&1 != 0 {
				f.bits |= bitFragmented
			}
		case 51:
			hl = (int(b[off+1]) + 2) * 4
		default:
			hl = (int(b[off+1]) + 1) * 8
		}
		if end-off < hl {
			return ErrMalformed
		}
		nh = b[off]
		off += hl
		if f.bits&bitFragment != 0 {
			f.proto = nh
			f.l4, f.payload = off, off
			return nil
		}
	}
}

func (f *Frame) parseL4(b []byte) error {
	l4 := f.l4
	n := f.end - l4
	switch {
	case f.proto == ProtoTCP:
		if n < 20 {
			return ErrMalformed
		}
		doff := int(b[l4+12]>>4) * 4
		if doff < 20 || doff > n {
			return ErrMalformed
		}
		f.payload = l4 + doff
		f.bits |= bitPorts
	case f.proto == ProtoUDP:
		if n < 8 {
			return ErrMalformed
		}
		if f.bits&bitFragmented == 0 && int(be16(b[l4+4:])) != n {
			return ErrMalformed
		}
		f.payload = l4 + 8
		f.bits |= bitPorts
	case f.proto == ProtoICMP && f.ipVersion == 4, f.proto == ProtoICMPv6 && f.ipVersion == 6:
		if n < 8 {
			return ErrMalformed
		}
		f.payload = l4 + 8
	default:
		f.payload = l4
	}
	return nil
}

// Bytes returns the buffer given to Parse.
func (f *Frame) Bytes() []byte { return f.b }

// DstMAC returns the Ethernet destination address.
func (f *Frame) DstMAC() (m [6]byte) {
	if len(f.b) >= 6 {
		copy(m[:], f.b[0:6])
	}
	return m
}

// SrcMAC returns the Ethernet source address.
func (f *Frame) SrcMAC() (m [6]byte) {
	if len(f.b) >= 12 {
		copy(m[:], f.b[6:12])
	}
	return m
}

// VLANs returns the number of 802.1Q/802.1ad tags (0, 1 or 2).
func (f *Frame) VLANs() int { return int(f.nVLAN) }

// VLAN returns the TPID and TCI (priority, DEI, VLAN ID) of tag i, outermost first.
func (f *Frame) VLAN(i int) (tpid, tci uint16) {
	if i < 0 || i >= int(f.nVLAN) {
		return 0, 0
	}
	return be16(f.b[12+4*i:]), be16(f.b[14+4*i:])
}

// EtherType returns the EtherType after any tags.
func (f *Frame) EtherType() uint16 { return f.etherType }

// IPVersion returns 4, 6, or 0 for a non-IP frame.
func (f *Frame) IPVersion() int { return int(f.ipVersion) }

// Src returns the IP source address (invalid for non-IP frames).
func (f *Frame) Src() netip.Addr {
	switch f.ipVersion {
	case 4:
		return netip.AddrFrom4([4]byte(f.b[f.l3+12 : f.l3+16]))
	case 6:
		return netip.AddrFrom16([16]byte(f.b[f.l3+8 : f.l3+24]))
	}
	return netip.Addr{}
}

// Dst returns the IP destination address (invalid for non-IP frames).
func (f *Frame) Dst() netip.Addr {
	switch f.ipVersion {
	case 4:
		return netip.AddrFrom4([4]byte(f.b[f.l3+16 : f.l3+20]))
	case 6:
		return netip.AddrFrom16([16]byte(f.b[f.l3+24 : f.l3+40]))
	}
	return netip.Addr{}
}

// TTL returns the IPv4 TTL or the IPv6 hop limit.
func (f *Frame) TTL() uint8 {
	switch f.ipVersion {
	case 4:
		return f.b[f.l3+8]
	case 6:
		return f.b[f.l3+7]
	}
	return 0
}

// Proto returns the upper-layer protocol: the IPv4 protocol, or the IPv6 next
// header after the extension headers.
func (f *Frame) Proto() uint8 { return f.proto }

// Fragment reports whether the packet is a non-first fragment: it has no L4
// header, so no ports, and L4Offset is the start of the fragment data.
func (f *Frame) Fragment() bool { return f.bits&bitFragment != 0 }

// Fragmented reports whether the packet is any fragment (first or later) of a
// fragmented datagram; its L4 checksum cannot be verified on its own.
func (f *Frame) Fragmented() bool { return f.bits&bitFragmented != 0 }

// HasPorts reports whether the frame carries a TCP or UDP header.
func (f *Frame) HasPorts() bool { return f.bits&bitPorts != 0 }

// SrcPort returns the TCP or UDP source port, or 0.
func (f *Frame) SrcPort() uint16 {
	if f.bits&bitPorts == 0 {
		return 0
	}
	return be16(f.b[f.l4:])
}

// DstPort returns the TCP or UDP destination port, or 0.
func (f *Frame) DstPort() uint16 {
	if f.bits&bitPorts == 0 {
		return 0
	}
	return be16(f.b[f.l4+2:])
}

func (f *Frame) isTCP() bool { return f.proto == ProtoTCP && f.bits&bitPorts != 0 }

// TCPFlags returns the TCP flags (FlagFIN ... FlagCWR), or 0 for non-TCP frames.
func (f *Frame) TCPFlags() uint8 {
	if !f.isTCP() {
		return 0
	}
	return f.b[f.l4+13]
}

// TCPSeq returns the TCP sequence number, or 0.
func (f *Frame) TCPSeq() uint32 {
	if !f.isTCP() {
		return 0
	}
	return be32(f.b[f.l4+4:])
}

// TCPAck returns the TCP acknowledgment number, or 0.
func (f *Frame) TCPAck() uint32 {
	if !f.isTCP() {
		return 0
	}
	return be32(f.b[f.l4+8:])
}

// ICMPType returns the ICMP or ICMPv6 type and code (zero for other protocols).
func (f *Frame) ICMPType() (typ, code uint8) {
	if !f.isICMP() {
		return 0, 0
	}
	return f.b[f.l4], f.b[f.l4+1]
}

func (f *Frame) isICMP() bool {
	return f.bits&bitFragment == 0 && (f.proto == ProtoICMP && f.ipVersion == 4 || f.proto == ProtoICMPv6 && f.ipVersion == 6)
}

// L3Offset returns the offset of the ARP or IP header.
func (f *Frame) L3Offset() int { return f.l3 }

// L4Offset returns the offset of the L4 header (or of the fragment data).
func (f *Frame) L4Offset() int { return f.l4 }

// PayloadOffset returns the offset of the L4 payload (after TCP options, the
// UDP header or the 8-byte ICMP header).
func (f *Frame) PayloadOffset() int { return f.payload }

// L3End returns the offset just past the IP packet (or ARP packet); bytes
// from there to the end of the buffer are Ethernet padding.
func (f *Frame) L3End() int { return f.end }

// SetDstMAC writes the Ethernet destination address; b must hold at least 6 bytes.
func SetDstMAC(b []byte, mac [6]byte) { copy(b[0:6], mac[:]) }

// SetSrcMAC writes the Ethernet source address; b must hold at least 12 bytes.
func SetSrcMAC(b []byte, mac [6]byte) { copy(b[6:12], mac[:]) }
