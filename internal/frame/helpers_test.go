package frame

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	macClient = [6]byte{0x02, 0, 0, 0, 0, 0x0c}
	macLB     = [6]byte{0x02, 0, 0, 0, 0, 0x0b}
	client4   = netip.MustParseAddr("192.0.2.10")
	vip4      = netip.MustParseAddr("198.51.100.1")
	router4   = netip.MustParseAddr("203.0.113.254")
	client6   = netip.MustParseAddr("2001:db8::c")
	vip6      = netip.MustParseAddr("2001:db8:1::1")
	router6   = netip.MustParseAddr("2001:db8:ff::1")

	addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
)

// ext6 is one IPv6 extension header: typ is its own type, body follows the
// next-header byte (so len(body) is 7, 15, ...; for a fragment header 7).
type ext6 struct {
	typ  uint8
	body []byte
}

// pkt describes a test frame.
type pkt struct {
	vlans  []uint16
	v6     bool
	src    netip.Addr // default client
	dst    netip.Addr // default VIP
	ipOpts []byte     // IPv4 options
	frag   uint16     // IPv4 FlagsFragment
	ext    []ext6     // IPv6 extension headers, in order
	proto  uint8
	l4     []byte // L4 header and payload
}

// tcpSeg returns a TCP header and payload.
func tcpSeg(h TCPHeader, payload []byte) []byte {
	return append(AppendTCP(nil, h), payload...)
}

// udpDgram returns a UDP header and payload.
func udpDgram(sport, dport uint16, payload []byte) []byte {
	return append(AppendUDP(nil, UDPHeader{SrcPort: sport, DstPort: dport}, len(payload)), payload...)
}

// bytes builds the frame; when it parses and is not a fragment, the L4
// checksum is set.
func (p pkt) bytes() []byte {
	src, dst := p.src, p.dst
	et := uint16(EtherTypeIPv4)
	if p.v6 {
		et = EtherTypeIPv6
		if !src.IsValid() {
			src = client6
		}
		if !dst.IsValid() {
			dst = vip6
		}
	} else {
		if !src.IsValid() {
			src = client4
		}
		if !dst.IsValid() {
			dst = vip4
		}
	}
	b := AppendEthernet(nil, macLB, macClient, p.vlans, et)
	if p.v6 {
		var exts []byte
		nh := p.proto
		for i := len(p.ext) - 1; i >= 0; i-- {
			exts = append(append([]byte{nh}, p.ext[i].body...), exts...)
			nh = p.ext[i].typ
		}
		b = AppendIPv6(b, IPv6Header{NextHeader: nh, HopLimit: 64, Src: src, Dst: dst}, len(exts)+len(p.l4))
		b = append(b, exts...)
	} else {
		b = AppendIPv4(b, IPv4Header{ID: 7, FlagsFragment: p.frag, TTL: 64, Proto: p.proto, Src: src, Dst: dst, Options: p.ipOpts}, len(p.l4))
	}
	b = append(b, p.l4...)
	var f Frame
	if f.Parse(b) == nil {
		f.SetL4Checksum()
	}
	return b
}

// refSum is a straightforward RFC 1071 sum: 16-bit words, carries folded at the end.
func refSum(b []byte, s uint64) uint16 {
	for i := 0; i < len(b); i += 2 {
		w := uint64(b[i]) << 8
		if i+1 < len(b) {
			w |= uint64(b[i+1])
		}
		s += w
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// refL4Checksum computes the L4 checksum of seg (field included) with an
// explicitly built pseudo-header; 0 means valid.
func refL4Checksum(src, dst netip.Addr, proto uint8, seg []byte) uint16 {
	var ph []byte
	ph = append(ph, src.AsSlice()...)
	ph = append(ph, dst.AsSlice()...)
	if src.Is4() {
		ph = append(ph, 0, proto)
		ph = binary.BigEndian.AppendUint16(ph, uint16(len(seg)))
	} else {
		ph = binary.BigEndian.AppendUint32(ph, uint32(len(seg)))
		ph = append(ph, 0, 0, 0, proto)
	}
	return ^refSum(append(ph, seg...), 0)
}

func mustParse(t testing.TB, b []byte) *Frame {
	t.Helper()
	var f Frame
	if err := f.Parse(b); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return &f
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// Common TCP options.
var (
	optMSS      = []byte{2, 4, 0x05, 0xb4}
	optSACKPerm = []byte{4, 2}
	optTS       = []byte{8, 10, 0, 0, 0, 1, 0, 0, 0, 0}
	optWScale   = []byte{3, 3, 7}
	optNOP      = []byte{1}
)

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}
