package frame

import (
	"encoding/binary"
	"errors"
)

// ErrSegmentSize is returned by SegmentTCP and SegmentUDP for a segment size below 1.
var ErrSegmentSize = errors.New("frame: segment size must be positive")

// SegmentTCP splits an Ethernet+IPv4/IPv6+TCP super-frame (GRO, TSO/GSO) into
// frames carrying at most mss bytes of TCP payload each, as a NIC doing TSO
// would: every segment gets a copy of the L2, L3 (with extension headers) and
// TCP headers (options included); the IPv4 total length, IPv4 ID (incremented
// per segment), IPv4 header checksum, IPv6 payload length, TCP sequence
// number and full TCP checksum are set for each; FIN and PSH stay only on the
// last segment and CWR only on the first. The incoming TCP checksum is
// ignored, so a CHECKSUM_PARTIAL super-frame needs no CompletePartial first.
// For virtio_net_hdr input pass gso_size as mss.
//
// The segments are appended to dst[:0], reusing the capacity of dst's
// elements (dst[i][:0], also beyond len(dst) up to cap(dst)) and allocating
// only when that is short. A frame whose payload fits is returned as one
// (copied) segment. Fragments and non-TCP frames give ErrUnsupported, parse
// errors are returned as they are.
func SegmentTCP(dst [][]byte, b []byte, mss int) ([][]byte, error) {
	return segment(dst, b, mss, ProtoTCP)
}

// SegmentUDP splits an Ethernet+IPv4/IPv6+UDP GSO super-frame into UDP
// datagrams of at most size payload bytes each (UDP GSO semantics: every
// segment is a complete datagram with its own length and checksum; IPv4 ID
// incremented per segment). dst is reused as in SegmentTCP.
func SegmentUDP(dst [][]byte, b []byte, size int) ([][]byte, error) {
	return segment(dst, b, size, ProtoUDP)
}

func segment(dst [][]byte, b []byte, size int, proto uint8) ([][]byte, error) {
	out := dst[:0]
	if size < 1 {
		return out, ErrSegmentSize
	}
	var f Frame
	if err := f.Parse(b); err != nil {
		return out, err
	}
	if f.ipVersion == 0 || f.proto != proto || f.bits&(bitFragmented|bitPorts) != bitPorts {
		return out, ErrUnsupported
	}
	hdr := b[:f.payload]
	payload := b[f.payload:f.end]
	n := (len(payload) + size - 1) / size
	if n == 0 {
		n = 1
	}
	l3, l4 := f.l3, f.l4
	var id uint16
	if f.ipVersion == 4 {
		id = be16(b[l3+4:])
	}
	seq := f.TCPSeq()
	flags := f.TCPFlags()
	for i := 0; i < n; i++ {
		chunk := payload[min(i*size, len(payload)):min((i+1)*size, len(payload))]
		var s []byte
		if len(out) < cap(out) {
			s = out[: len(out)+1 : cap(out)][len(out)][:0]
		}
		s = append(s, hdr...)
		s = append(s, chunk...)
		if f.ipVersion == 4 {
			h := s[l3:f.ipv4HeaderEnd()]
			binary.BigEndian.PutUint16(h[2:], uint16(len(s)-l3))
			binary.BigEndian.PutUint16(h[4:], id+uint16(i))
			h[10], h[11] = 0, 0
			binary.BigEndian.PutUint16(h[10:], Checksum(h, 0))
		} else {
			binary.BigEndian.PutUint16(s[l3+4:], uint16(len(s)-l3-40))
		}
		seg := s[l4:]
		var off int
		if proto == ProtoTCP {
			binary.BigEndian.PutUint32(seg[4:], seq+uint32(i*size))
			fl := flags
			if i != n-1 {
				fl &^= FlagFIN | FlagPSH
			}
			if i != 0 {
				fl &^= FlagCWR
			}
			seg[13] = fl
			off = 16
		} else {
			binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)))
			off = 6
		}
		seg[off], seg[off+1] = 0, 0
		var p uint32
		if f.ipVersion == 4 {
			p = PseudoHeaderSum(s[l3+12:l3+16], s[l3+16:l3+20], proto, len(seg))
		} else {
			p = PseudoHeaderSum(s[l3+8:l3+24], s[l3+24:l3+40], proto, len(seg))
		}
		c := Checksum(seg, p)
		if c == 0 && proto == ProtoUDP {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(seg[off:], c)
		out = append(out, s)
	}
	return out, nil
}
