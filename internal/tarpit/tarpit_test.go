package tarpit

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nib-lb/nib/internal/frame"
)

var (
	ourMAC    = [6]byte{0x02, 0, 0, 0, 0, 0x0b}
	clientMAC = [6]byte{0x02, 0, 0, 0, 0, 0x0c}
	client4   = netip.MustParseAddr("192.0.2.10")
	tarpit4   = netip.MustParseAddr("198.51.100.66")
	client6   = netip.MustParseAddr("2001:db8::c")
	tarpit6   = netip.MustParseAddr("2001:db8:1::66")

	addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
)

const secret = 0x0123456789abcdef

// TCP options of typical SYNs, by resulting header length.
var synOptions = map[int][]byte{
	20: nil,
	24: {2, 4, 0x05, 0xb4},                                                  // nmap -sS: MSS
	28: {2, 4, 0x05, 0xb4, 1, 3, 3, 8},                                      // MSS, NOP, window scale
	32: {2, 4, 0x05, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2},                          // Windows: MSS, NOP, WS, NOP, NOP, SACK-permitted
	40: {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0, 1, 3, 3, 7}, // Linux: MSS, SACK-permitted, timestamps, NOP, WS
	60: append([]byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0, 1, 3, 3, 7}, bytes.Repeat([]byte{1}, 20)...),
}

type synSpec struct {
	v6      bool
	vlans   []uint16
	hdrLen  int
	flags   uint8
	sport   uint16
	frag    uint16 // IPv4 FlagsFragment
	payload []byte
	srcMAC  [6]byte
	src     netip.Addr
}

// build returns the frame of a SYN (or other segment) from the client to the tarpit address.
func (s synSpec) build(t testing.TB) []byte {
	if s.flags == 0 {
		s.flags = frame.FlagSYN
	}
	if s.sport == 0 {
		s.sport = 40000
	}
	if s.hdrLen == 0 {
		s.hdrLen = 40
	}
	if s.srcMAC == ([6]byte{}) {
		s.srcMAC = clientMAC
	}
	src, dst, et := client4, tarpit4, uint16(frame.EtherTypeIPv4)
	if s.v6 {
		src, dst, et = client6, tarpit6, frame.EtherTypeIPv6
	}
	if s.src.IsValid() {
		src = s.src
	}
	tcp := frame.AppendTCP(nil, frame.TCPHeader{SrcPort: s.sport, DstPort: 80, Seq: 0xfffffff0, Flags: s.flags,
		Window: 64240, Options: synOptions[s.hdrLen]})
	tcp = append(tcp, s.payload...)
	b := frame.AppendEthernet(nil, ourMAC, s.srcMAC, s.vlans, et)
	if s.v6 {
		b = frame.AppendIPv6(b, frame.IPv6Header{NextHeader: frame.ProtoTCP, HopLimit: 55, Src: src, Dst: dst}, len(tcp))
	} else {
		b = frame.AppendIPv4(b, frame.IPv4Header{ID: 999, FlagsFragment: s.frag, TTL: 55, Proto: frame.ProtoTCP, Src: src, Dst: dst}, len(tcp))
	}
	b = append(b, tcp...)
	var f frame.Frame
	if err := f.Parse(b); err != nil {
		t.Fatalf("test SYN: %v", err)
	}
	f.SetL4Checksum()
	return b
}

// replyView is what the tests compare.
type replyView struct {
	DstMAC, SrcMAC   [6]byte
	VLANs            []uint16
	Src, Dst         netip.Addr
	TTL              uint8
	IPv4Flags        uint16
	SrcPort, DstPort uint16
	Ack              uint32
	Flags            uint8
	Window           uint16
	Options          []byte
	Payload          int
	ChecksumsOK      bool // frame.VerifyChecksums (itself checked against a reference in package frame)
}

func view(t *testing.T, b []byte) replyView {
	t.Helper()
	var f frame.Frame
	if err := f.Parse(b); err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	h := f.TCPHeader()
	v := replyView{DstMAC: f.DstMAC(), SrcMAC: f.SrcMAC(), Src: f.Src(), Dst: f.Dst(), TTL: f.TTL(),
		IPv4Flags: f.IPv4Header().FlagsFragment, SrcPort: h.SrcPort, DstPort: h.DstPort, Ack: h.Ack, Flags: h.Flags,
		Window: h.Window, Options: h.Options, Payload: f.L3End() - f.PayloadOffset()}
	ipOK, l4OK := f.VerifyChecksums()
	v.ChecksumsOK = ipOK && l4OK
	for i := range f.VLANs() {
		_, tci := f.VLAN(i)
		v.VLANs = append(v.VLANs, tci)
	}
	return v
}

func want4(vlans ...uint16) replyView {
	return replyView{DstMAC: clientMAC, SrcMAC: ourMAC, VLANs: vlans, Src: tarpit4, Dst: client4, TTL: 64, IPv4Flags: frame.IPv4DontFragment,
		SrcPort: 80, DstPort: 40000, Ack: 0xfffffff1, Flags: frame.FlagSYN | frame.FlagACK, Window: Window,
		Options: []byte{2, 4, 2, 0x18}, ChecksumsOK: true}
}

func want6(vlans ...uint16) replyView {
	w := want4(vlans...)
	w.Src, w.Dst, w.IPv4Flags = tarpit6, client6, 0
	return w
}

func TestReply(t *testing.T) {
	tests := []struct {
		name string
		in   synSpec
		want replyView
	}{
		{name: "ipv4 20-byte header", in: synSpec{hdrLen: 20}, want: want4()},
		{name: "ipv4 24-byte header (nmap)", in: synSpec{hdrLen: 24}, want: want4()},
		{name: "ipv4 28-byte header", in: synSpec{hdrLen: 28}, want: want4()},
		{name: "ipv4 32-byte header (windows)", in: synSpec{hdrLen: 32}, want: want4()},
		{name: "ipv4 40-byte header (linux)", in: synSpec{hdrLen: 40}, want: want4()},
		{name: "ipv4 60-byte header", in: synSpec{hdrLen: 60}, want: want4()},
		{name: "802.1Q 20-byte", in: synSpec{hdrLen: 20, vlans: []uint16{100}}, want: want4(100)},
		{name: "802.1Q 32-byte", in: synSpec{hdrLen: 32, vlans: []uint16{100}}, want: want4(100)},
		{name: "802.1Q 60-byte", in: synSpec{hdrLen: 60, vlans: []uint16{0xe000 | 100}}, want: want4(0xe000 | 100)},
		{name: "QinQ 40-byte", in: synSpec{vlans: []uint16{10, 20}}, want: want4(10, 20)},
		{name: "ipv6 20-byte", in: synSpec{v6: true, hdrLen: 20}, want: want6()},
		{name: "ipv6 24-byte", in: synSpec{v6: true, hdrLen: 24}, want: want6()},
		{name: "ipv6 28-byte", in: synSpec{v6: true, hdrLen: 28}, want: want6()},
		{name: "ipv6 32-byte", in: synSpec{v6: true, hdrLen: 32}, want: want6()},
		{name: "ipv6 40-byte", in: synSpec{v6: true, hdrLen: 40}, want: want6()},
		{name: "ipv6 60-byte 802.1Q", in: synSpec{v6: true, hdrLen: 60, vlans: []uint16{7}}, want: want6(7)},
		{name: "ECN setup SYN gets a plain SYN+ACK", in: synSpec{flags: frame.FlagSYN | frame.FlagECE | frame.FlagCWR}, want: want4()},
		{name: "SYN with data (fast open): data not acknowledged", in: synSpec{payload: []byte("GET / HTTP/1.0\r\n\r\n")}, want: want4()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in.build(t)
			var f frame.Frame
			if err := f.Parse(in); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 3, 128)
			out, ok := Reply(buf, &f, ourMAC, secret)
			if !ok {
				t.Fatal("no reply")
			}
			if !bytes.Equal(out[:3], []byte{0, 0, 0}) || &out[0] != &buf[0] {
				t.Error("Reply did not append to dst")
			}
			if diff := cmp.Diff(tt.want, view(t, out[3:]), addrCmp); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
			again, _ := Reply(nil, &f, ourMAC, secret)
			if !bytes.Equal(again, out[3:]) {
				t.Error("second reply to the same SYN differs")
			}
			other := tt.in
			other.sport++
			var of frame.Frame
			if err := of.Parse(other.build(t)); err != nil {
				t.Fatal(err)
			}
			o, _ := Reply(nil, &of, ourMAC, secret)
			if s1, s2 := binary.BigEndian.Uint32(out[3+f.L4Offset()+4:]), binary.BigEndian.Uint32(o[of.L4Offset()+4:]); s1 == s2 {
				t.Errorf("same seq %#x for another source port", s1)
			}
		})
	}
}

// TestReplyBadSYNChecksum: a SYN whose checksum a local sender left to the
// NIC is still answered, with correct checksums of our own.
func TestReplyBadSYNChecksum(t *testing.T) {
	in := synSpec{hdrLen: 32}.build(t)
	in[14+20+16] ^= 0x55
	var f frame.Frame
	if err := f.Parse(in); err != nil {
		t.Fatal(err)
	}
	out, ok := Reply(nil, &f, ourMAC, secret)
	if !ok {
		t.Fatal("no reply")
	}
	if diff := cmp.Diff(want4(), view(t, out), addrCmp); diff != "" {
		t.Errorf("reply (-want +got):\n%s", diff)
	}
}

func TestNoReply(t *testing.T) {
	arp := frame.AppendARP(frame.AppendEthernet(nil, [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, clientMAC, nil, frame.EtherTypeARP),
		1, clientMAC, client4, [6]byte{}, tarpit4)
	udp := frame.AppendEthernet(nil, ourMAC, clientMAC, nil, frame.EtherTypeIPv4)
	udp = frame.AppendIPv4(udp, frame.IPv4Header{TTL: 64, Proto: frame.ProtoUDP, Src: client4, Dst: tarpit4}, 8)
	udp = frame.AppendUDP(udp, frame.UDPHeader{SrcPort: 1, DstPort: 2}, 0)
	tests := []struct {
		name string
		in   []byte // nil: an unparsed Frame
	}{
		{name: "ack", in: synSpec{flags: frame.FlagACK}.build(t)},
		{name: "data", in: synSpec{flags: frame.FlagACK | frame.FlagPSH, payload: []byte("GET /")}.build(t)},
		{name: "syn+ack", in: synSpec{flags: frame.FlagSYN | frame.FlagACK}.build(t)},
		{name: "rst", in: synSpec{flags: frame.FlagRST}.build(t)},
		{name: "syn+rst", in: synSpec{flags: frame.FlagSYN | frame.FlagRST}.build(t)},
		{name: "syn+fin", in: synSpec{flags: frame.FlagSYN | frame.FlagFIN}.build(t)},
		{name: "fin", in: synSpec{flags: frame.FlagFIN | frame.FlagACK}.build(t)},
		{name: "null scan", in: synSpec{flags: frame.FlagURG}.build(t)},
		{name: "first fragment", in: synSpec{frag: frame.IPv4MoreFragments}.build(t)},
		{name: "later fragment", in: synSpec{frag: 3}.build(t)},
		{name: "multicast source MAC", in: synSpec{srcMAC: [6]byte{0x01, 0, 0x5e, 0, 0, 1}}.build(t)},
		{name: "broadcast source address", in: synSpec{src: netip.MustParseAddr("255.255.255.255")}.build(t)},
		{name: "unspecified source address", in: synSpec{src: netip.MustParseAddr("0.0.0.0")}.build(t)},
		{name: "multicast ipv6 source", in: synSpec{v6: true, src: netip.MustParseAddr("ff02::1")}.build(t)},
		{name: "udp", in: udp},
		{name: "arp", in: arp},
		{name: "unparsed frame", in: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f frame.Frame
			if tt.in != nil {
				if err := f.Parse(tt.in); err != nil {
					t.Fatal(err)
				}
			}
			dst := []byte{1, 2}
			out, ok := Reply(dst, &f, ourMAC, secret)
			if ok || !bytes.Equal(out, dst) {
				t.Errorf("Reply = %x, %v; want dst unchanged, false", out, ok)
			}
		})
	}
}

func TestISN(t *testing.T) {
	fl := frame.Flow{Src: client4, Dst: tarpit4, Proto: frame.ProtoTCP, SrcPort: 40000, DstPort: 80}
	other := fl
	other.DstPort = 81
	got := map[string]uint32{
		"base":         ISN(fl, secret),
		"again":        ISN(fl, secret),
		"other secret": ISN(fl, secret+1),
		"other port":   ISN(other, secret),
		"reversed":     ISN(fl.Reverse(), secret),
	}
	if got["base"] != got["again"] {
		t.Error("ISN not deterministic")
	}
	seen := map[uint32]string{}
	for k, v := range got {
		if k == "again" {
			continue
		}
		if prev, dup := seen[v]; dup {
			t.Errorf("%s and %s share ISN %#x", k, prev, v)
		}
		seen[v] = k
	}
}

func TestReplyAllocs(t *testing.T) {
	var f frame.Frame
	in := synSpec{v6: true, hdrLen: 40, vlans: []uint16{1, 2}}.build(t)
	buf := make([]byte, 0, 128)
	n := testing.AllocsPerRun(100, func() {
		_ = f.Parse(in)
		buf, _ = Reply(buf[:0], &f, ourMAC, secret)
	})
	if n != 0 {
		t.Errorf("allocs = %v, want 0", n)
	}
	if len(buf) != 22+40+24 {
		t.Errorf("len = %d, want 86", len(buf))
	}
}

func FuzzReply(f *testing.F) {
	for _, n := range []int{20, 24, 28, 32, 40, 60} {
		f.Add(synSpec{hdrLen: n}.build(f))
		f.Add(synSpec{hdrLen: n, v6: true, vlans: []uint16{5}}.build(f))
	}
	f.Add(synSpec{flags: frame.FlagACK}.build(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		var in frame.Frame
		if in.Parse(b) != nil {
			return
		}
		out, ok := Reply(nil, &in, ourMAC, secret)
		if !ok {
			if out != nil {
				t.Fatal("output without ok")
			}
			return
		}
		var r frame.Frame
		if err := r.Parse(out); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		ipOK, l4OK := r.VerifyChecksums()
		if !ipOK || !l4OK {
			t.Fatalf("bad checksums %v %v", ipOK, l4OK)
		}
		if r.Flow() != in.Flow().Reverse() || r.TCPFlags() != frame.FlagSYN|frame.FlagACK ||
			r.TCPAck() != in.TCPSeq()+1 || in.TCPFlags()&frame.FlagSYN == 0 || r.VLANs() != in.VLANs() {
			t.Fatalf("reply %v flags %#x to %v flags %#x", r.Flow(), r.TCPFlags(), in.Flow(), in.TCPFlags())
		}
	})
}

func BenchmarkReply(b *testing.B) {
	in := synSpec{hdrLen: 40}.build(b)
	buf := make([]byte, 0, 128)
	var f frame.Frame
	b.ReportAllocs()
	for b.Loop() {
		_ = f.Parse(in)
		buf, _ = Reply(buf[:0], &f, ourMAC, secret)
	}
}
