package frame

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// summary is what TestParse compares.
type summary struct {
	EtherType              uint16
	VLANs                  []uint16
	IPVersion              int
	Flow                   Flow
	Fragment               bool
	Fragmented             bool
	HasPorts               bool
	TCPFlags               uint8
	L3, L4, Payload, L3End int
	IPChecksum, L4Checksum bool
}

func summarize(f *Frame) summary {
	s := summary{
		EtherType:  f.EtherType(),
		IPVersion:  f.IPVersion(),
		Flow:       f.Flow(),
		Fragment:   f.Fragment(),
		Fragmented: f.Fragmented(),
		HasPorts:   f.HasPorts(),
		TCPFlags:   f.TCPFlags(),
		L3:         f.L3Offset(),
		L4:         f.L4Offset(),
		Payload:    f.PayloadOffset(),
		L3End:      f.L3End(),
	}
	s.IPChecksum, s.L4Checksum = f.VerifyChecksums()
	for i := range f.VLANs() {
		_, tci := f.VLAN(i)
		s.VLANs = append(s.VLANs, tci)
	}
	return s
}

// mut returns a copy of b changed by fn.
func mut(b []byte, fn func(b []byte)) []byte {
	c := append([]byte(nil), b...)
	fn(c)
	return c
}

var (
	synHdr  = TCPHeader{SrcPort: 40000, DstPort: 80, Seq: 1000, Flags: FlagSYN, Window: 64240}
	tcp4    = pkt{proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes()
	tcp4Opt = pkt{proto: ProtoTCP, l4: tcpSeg(TCPHeader{SrcPort: 40000, DstPort: 80, Flags: FlagSYN,
		Options: cat(optMSS, optSACKPerm, optTS, optNOP, optWScale)}, nil)}.bytes()
	tcp4Data = pkt{proto: ProtoTCP, l4: tcpSeg(TCPHeader{SrcPort: 40000, DstPort: 80, Flags: FlagACK | FlagPSH}, seq(100))}.bytes()
	udp4     = pkt{proto: ProtoUDP, l4: udpDgram(5353, 53, seq(30))}.bytes()
	tcp6     = pkt{v6: true, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes()
	udp6VLAN = pkt{v6: true, vlans: []uint16{100}, proto: ProtoUDP, l4: udpDgram(5353, 53, seq(11))}.bytes()

	flow4 = Flow{Src: client4, Dst: vip4, Proto: ProtoTCP, SrcPort: 40000, DstPort: 80}
	flow6 = Flow{Src: client6, Dst: vip6, Proto: ProtoTCP, SrcPort: 40000, DstPort: 80}

	hbh     = ext6{typ: 0, body: []byte{0, 1, 4, 0, 0, 0, 0}}                               // PadN
	destOpt = ext6{typ: 60, body: []byte{0, 1, 4, 0, 0, 0, 0}}                              // PadN
	routing = ext6{typ: 43, body: append([]byte{2, 4, 0, 0, 0, 0, 0}, make([]byte, 16)...)} // type 4, 0 segments left
	ah      = ext6{typ: 51, body: []byte{4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
)

func frag6(offset uint16, more bool) ext6 {
	w := offset << 3
	if more {
		w |= 1
	}
	return ext6{typ: 44, body: []byte{0, byte(w >> 8), byte(w), 0, 0, 0, 42}}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    summary
		wantErr error
	}{
		{name: "ipv4 tcp syn", in: tcp4, want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, Flow: flow4, HasPorts: true,
			TCPFlags: FlagSYN, L3: 14, L4: 34, Payload: 54, L3End: 54, IPChecksum: true, L4Checksum: true}},
		{name: "ipv4 tcp 40-byte header", in: tcp4Opt, want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, Flow: flow4, HasPorts: true,
			TCPFlags: FlagSYN, L3: 14, L4: 34, Payload: 74, L3End: 74, IPChecksum: true, L4Checksum: true}},
		{name: "ipv4 tcp data", in: tcp4Data, want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, Flow: flow4, HasPorts: true,
			TCPFlags: FlagACK | FlagPSH, L3: 14, L4: 34, Payload: 54, L3End: 154, IPChecksum: true, L4Checksum: true}},
		{name: "ipv4 options", in: pkt{ipOpts: []byte{148, 4, 0, 0, 1, 0, 0, 0}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes(),
			want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, Flow: flow4, HasPorts: true,
				TCPFlags: FlagSYN, L3: 14, L4: 42, Payload: 62, L3End: 62, IPChecksum: true, L4Checksum: true}},
		{name: "802.1Q", in: pkt{vlans: []uint16{100}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes(),
			want: summary{EtherType: EtherTypeIPv4, VLANs: []uint16{100}, IPVersion: 4, Flow: flow4, HasPorts: true,
				TCPFlags: FlagSYN, L3: 18, L4: 38, Payload: 58, L3End: 58, IPChecksum: true, L4Checksum: true}},
		{name: "802.1ad QinQ", in: pkt{vlans: []uint16{0x2000 | 10, 20}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes(),
			want: summary{EtherType: EtherTypeIPv4, VLANs: []uint16{0x2000 | 10, 20}, IPVersion: 4, Flow: flow4, HasPorts: true,
				TCPFlags: FlagSYN, L3: 22, L4: 42, Payload: 62, L3End: 62, IPChecksum: true, L4Checksum: true}},
		{name: "ethernet padding ignored", in: append(append([]byte(nil), tcp4...), 0, 0, 0, 0, 0, 0),
			want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, Flow: flow4, HasPorts: true,
				TCPFlags: FlagSYN, L3: 14, L4: 34, Payload: 54, L3End: 54, IPChecksum: true, L4Checksum: true}},
		{name: "ipv4 udp", in: udp4, want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, HasPorts: true,
			Flow: Flow{Src: client4, Dst: vip4, Proto: ProtoUDP, SrcPort: 5353, DstPort: 53},
			L3:   14, L4: 34, Payload: 42, L3End: 72, IPChecksum: true, L4Checksum: true}},
		{name: "ipv4 udp no checksum", in: mut(udp4, func(b []byte) { b[40], b[41] = 0, 0 }),
			want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, HasPorts: true,
				Flow: Flow{Src: client4, Dst: vip4, Proto: ProtoUDP, SrcPort: 5353, DstPort: 53},
				L3:   14, L4: 34, Payload: 42, L3End: 72, IPChecksum: true, L4Checksum: true}},
		{name: "ipv4 bad tcp checksum", in: mut(tcp4Data, func(b []byte) { b[100] ^= 1 }),
			want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, Flow: flow4, HasPorts: true,
				TCPFlags: FlagACK | FlagPSH, L3: 14, L4: 34, Payload: 54, L3End: 154, IPChecksum: true}},
		{name: "ipv4 bad header checksum", in: mut(tcp4, func(b []byte) { b[24] ^= 1 }),
			want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, Flow: flow4, HasPorts: true,
				TCPFlags: FlagSYN, L3: 14, L4: 34, Payload: 54, L3End: 54, L4Checksum: true}},
		{name: "ipv4 icmp echo", in: pkt{proto: ProtoICMP, l4: AppendICMP(nil, 8, 0, 0x00010001)}.bytes(),
			want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, Flow: Flow{Src: client4, Dst: vip4, Proto: ProtoICMP},
				L3: 14, L4: 34, Payload: 42, L3End: 42, IPChecksum: true, L4Checksum: true}},
		{name: "ipv4 gre no l4 parse", in: pkt{proto: 47, l4: seq(12)}.bytes(),
			want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, Flow: Flow{Src: client4, Dst: vip4, Proto: 47},
				L3: 14, L4: 34, Payload: 34, L3End: 46, IPChecksum: true}},
		{name: "ipv4 first fragment has ports", in: pkt{frag: IPv4MoreFragments, proto: ProtoUDP, l4: udpDgram(5353, 53, seq(1000))[:208]}.bytes(),
			want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, Fragmented: true, HasPorts: true,
				Flow: Flow{Src: client4, Dst: vip4, Proto: ProtoUDP, SrcPort: 5353, DstPort: 53},
				L3:   14, L4: 34, Payload: 42, L3End: 242, IPChecksum: true}},
		{name: "ipv4 later fragment has no ports", in: pkt{frag: 26, proto: ProtoUDP, l4: seq(100)}.bytes(),
			want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, Fragment: true, Fragmented: true,
				Flow: Flow{Src: client4, Dst: vip4, Proto: ProtoUDP},
				L3:   14, L4: 34, Payload: 34, L3End: 134, IPChecksum: true}},
		{name: "ipv4 later fragment too short for a header", in: pkt{frag: IPv4MoreFragments | 1, proto: ProtoTCP, l4: seq(8)}.bytes(),
			want: summary{EtherType: EtherTypeIPv4, IPVersion: 4, Fragment: true, Fragmented: true,
				Flow: Flow{Src: client4, Dst: vip4, Proto: ProtoTCP},
				L3:   14, L4: 34, Payload: 34, L3End: 42, IPChecksum: true}},
		{name: "ipv6 tcp syn", in: tcp6, want: summary{EtherType: EtherTypeIPv6, IPVersion: 6, Flow: flow6, HasPorts: true,
			TCPFlags: FlagSYN, L3: 14, L4: 54, Payload: 74, L3End: 74, IPChecksum: true, L4Checksum: true}},
		{name: "ipv6 udp 802.1Q", in: udp6VLAN, want: summary{EtherType: EtherTypeIPv6, VLANs: []uint16{100}, IPVersion: 6, HasPorts: true,
			Flow: Flow{Src: client6, Dst: vip6, Proto: ProtoUDP, SrcPort: 5353, DstPort: 53},
			L3:   18, L4: 58, Payload: 66, L3End: 77, IPChecksum: true, L4Checksum: true}},
		{name: "ipv6 udp zero checksum invalid", in: mut(udp6VLAN, func(b []byte) { b[64], b[65] = 0, 0 }),
			want: summary{EtherType: EtherTypeIPv6, VLANs: []uint16{100}, IPVersion: 6, HasPorts: true,
				Flow: Flow{Src: client6, Dst: vip6, Proto: ProtoUDP, SrcPort: 5353, DstPort: 53},
				L3:   18, L4: 58, Payload: 66, L3End: 77, IPChecksum: true}},
		{name: "ipv6 hop-by-hop, routing, destination options", in: pkt{v6: true, ext: []ext6{hbh, routing, destOpt}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes(),
			want: summary{EtherType: EtherTypeIPv6, IPVersion: 6, Flow: flow6, HasPorts: true,
				TCPFlags: FlagSYN, L3: 14, L4: 94, Payload: 114, L3End: 114, IPChecksum: true, L4Checksum: true}},
		{name: "ipv6 authentication header", in: pkt{v6: true, ext: []ext6{ah}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes(),
			want: summary{EtherType: EtherTypeIPv6, IPVersion: 6, Flow: flow6, HasPorts: true,
				TCPFlags: FlagSYN, L3: 14, L4: 78, Payload: 98, L3End: 98, IPChecksum: true, L4Checksum: true}},
		{name: "ipv6 eight extension headers", in: pkt{v6: true, ext: []ext6{hbh, destOpt, destOpt, destOpt, destOpt, destOpt, destOpt, destOpt}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes(),
			want: summary{EtherType: EtherTypeIPv6, IPVersion: 6, Flow: flow6, HasPorts: true,
				TCPFlags: FlagSYN, L3: 14, L4: 118, Payload: 138, L3End: 138, IPChecksum: true, L4Checksum: true}},
		{name: "ipv6 first fragment has ports", in: pkt{v6: true, ext: []ext6{frag6(0, true)}, proto: ProtoTCP, l4: tcpSeg(synHdr, seq(16))}.bytes(),
			want: summary{EtherType: EtherTypeIPv6, IPVersion: 6, Flow: flow6, HasPorts: true, Fragmented: true,
				TCPFlags: FlagSYN, L3: 14, L4: 62, Payload: 82, L3End: 98, IPChecksum: true}},
		{name: "ipv6 later fragment has no ports", in: pkt{v6: true, ext: []ext6{hbh, frag6(3, false)}, proto: ProtoTCP, l4: seq(24)}.bytes(),
			want: summary{EtherType: EtherTypeIPv6, IPVersion: 6, Flow: Flow{Src: client6, Dst: vip6, Proto: ProtoTCP}, Fragment: true, Fragmented: true,
				L3: 14, L4: 70, Payload: 70, L3End: 94, IPChecksum: true}},
		{name: "ipv6 atomic fragment is whole", in: pkt{v6: true, ext: []ext6{frag6(0, false)}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes(),
			want: summary{EtherType: EtherTypeIPv6, IPVersion: 6, Flow: flow6, HasPorts: true,
				TCPFlags: FlagSYN, L3: 14, L4: 62, Payload: 82, L3End: 82, IPChecksum: true, L4Checksum: true}},
		{name: "ipv6 icmpv6 echo", in: pkt{v6: true, proto: ProtoICMPv6, l4: AppendICMP(nil, 128, 0, 1)}.bytes(),
			want: summary{EtherType: EtherTypeIPv6, IPVersion: 6, Flow: Flow{Src: client6, Dst: vip6, Proto: ProtoICMPv6},
				L3: 14, L4: 54, Payload: 62, L3End: 62, IPChecksum: true, L4Checksum: true}},
		{name: "ipv6 no next header", in: pkt{v6: true, proto: 59}.bytes(),
			want: summary{EtherType: EtherTypeIPv6, IPVersion: 6, Flow: Flow{Src: client6, Dst: vip6, Proto: 59},
				L3: 14, L4: 54, Payload: 54, L3End: 54, IPChecksum: true}},

		{name: "empty", in: nil, wantErr: ErrTruncated},
		{name: "short ethernet", in: tcp4[:13], wantErr: ErrTruncated},
		{name: "lldp unsupported", in: mut(tcp4, func(b []byte) { b[12], b[13] = 0x88, 0xcc }), wantErr: ErrUnsupported},
		{name: "802.3 length unsupported", in: mut(tcp4, func(b []byte) { b[12], b[13] = 0, 46 }), wantErr: ErrUnsupported},
		{name: "three tags unsupported", in: pkt{vlans: []uint16{1, 2, 3}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes(), wantErr: ErrUnsupported},
		{name: "ipv4 version 6", in: mut(tcp4, func(b []byte) { b[14] = 0x65 }), wantErr: ErrMalformed},
		{name: "ipv4 IHL 4", in: mut(tcp4, func(b []byte) { b[14] = 0x44 }), wantErr: ErrMalformed},
		{name: "ipv4 IHL past total length", in: mut(tcp4, func(b []byte) { b[14] = 0x4f; b[16], b[17] = 0, 40 }), wantErr: ErrMalformed},
		{name: "ipv4 total length below header", in: mut(tcp4, func(b []byte) { b[16], b[17] = 0, 19 }), wantErr: ErrMalformed},
		{name: "ipv4 total length past frame", in: mut(tcp4, func(b []byte) { b[16], b[17] = 0, 41 }), wantErr: ErrTruncated},
		{name: "ipv4 total length short of tcp header", in: mut(tcp4, func(b []byte) { b[16], b[17] = 0, 39 }), wantErr: ErrMalformed},
		{name: "tcp data offset 4", in: mut(tcp4, func(b []byte) { b[46] = 0x40 }), wantErr: ErrMalformed},
		{name: "tcp data offset past segment", in: mut(tcp4, func(b []byte) { b[46] = 0x60 }), wantErr: ErrMalformed},
		{name: "udp length too long", in: mut(udp4, func(b []byte) { b[39]++ }), wantErr: ErrMalformed},
		{name: "udp length too short", in: mut(udp4, func(b []byte) { b[38], b[39] = 0, 7 }), wantErr: ErrMalformed},
		{name: "icmp shorter than 8", in: pkt{proto: ProtoICMP, l4: []byte{8, 0, 0, 0}}.bytes(), wantErr: ErrMalformed},
		{name: "ipv6 version 4", in: mut(tcp6, func(b []byte) { b[14] = 0x40 }), wantErr: ErrMalformed},
		{name: "ipv6 payload length past frame", in: mut(tcp6, func(b []byte) { b[19]++ }), wantErr: ErrTruncated},
		{name: "ipv6 hop-by-hop not first", in: pkt{v6: true, ext: []ext6{destOpt, hbh}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes(), wantErr: ErrMalformed},
		{name: "ipv6 extension header past payload", in: pkt{v6: true, ext: []ext6{{typ: 60, body: []byte{3, 0, 0, 0, 0, 0, 0}}}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes(), wantErr: ErrMalformed},
		{name: "ipv6 extension header shorter than 8", in: pkt{v6: true, ext: []ext6{{typ: 60, body: []byte{0, 0, 0}}}, proto: 59}.bytes(), wantErr: ErrMalformed},
		{name: "ipv6 nine extension headers", in: pkt{v6: true, ext: []ext6{hbh, destOpt, destOpt, destOpt, destOpt, destOpt, destOpt, destOpt, destOpt}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes(), wantErr: ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Frame
			err := f.Parse(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Parse error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if diff := cmp.Diff(summary{}, summarize(&f), addrCmp); diff != "" {
					t.Errorf("failed Parse left state (-want +got):\n%s", diff)
				}
				return
			}
			if diff := cmp.Diff(tt.want, summarize(&f), addrCmp); diff != "" {
				t.Errorf("summary (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseTruncated cuts valid frames at every offset: each prefix is ErrTruncated.
func TestParseTruncated(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{name: "ipv4 tcp options", in: tcp4Opt},
		{name: "ipv4 tcp data", in: tcp4Data},
		{name: "ipv4 options", in: pkt{ipOpts: []byte{148, 4, 0, 0}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes()},
		{name: "ipv4 udp qinq", in: pkt{vlans: []uint16{1, 2}, proto: ProtoUDP, l4: udpDgram(1, 2, seq(3))}.bytes()},
		{name: "ipv6 extension headers", in: pkt{v6: true, ext: []ext6{hbh, routing, destOpt, frag6(0, false)}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes()},
		{name: "ipv6 udp vlan", in: udp6VLAN},
		{name: "arp", in: AppendARP(AppendEthernet(nil, macLB, macClient, nil, EtherTypeARP), 1, macClient, client4, [6]byte{}, vip4)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Frame
			if err := f.Parse(tt.in); err != nil {
				t.Fatalf("whole frame: %v", err)
			}
			for i := range len(tt.in) {
				if err := f.Parse(tt.in[:i]); err != ErrTruncated {
					t.Errorf("Parse(in[:%d]) = %v, want %v", i, err, ErrTruncated)
				}
			}
		})
	}
}

// TestARP: Parse accepts an Ethernet/IPv4 ARP packet (tagged or padded) as
// a frame that is not IP, and refuses other hardware or protocol types.
// (arpd parses ARP itself, with mdlayher/arp.)
func TestARP(t *testing.T) {
	req := AppendARP(AppendEthernet(nil, [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, macClient, []uint16{7}, EtherTypeARP),
		1, macClient, client4, [6]byte{}, vip4)
	tests := []struct {
		name    string
		in      []byte
		wantErr error
	}{
		{name: "request tagged", in: req},
		{name: "reply padded", in: append(AppendARP(AppendEthernet(nil, macClient, macLB, nil, EtherTypeARP), 2, macLB, vip4, macClient, client4), make([]byte, 18)...)},
		{name: "truncated", in: req[:len(req)-1], wantErr: ErrTruncated},
		{name: "not ethernet hardware", in: mut(req, func(b []byte) { b[19] = 6 }), wantErr: ErrUnsupported},
		{name: "not ipv4 protocol", in: mut(req, func(b []byte) { b[20] = 0x86; b[21] = 0xdd }), wantErr: ErrUnsupported},
		{name: "address length", in: mut(req, func(b []byte) { b[23] = 16 }), wantErr: ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Frame
			if err := f.Parse(tt.in); err != tt.wantErr {
				t.Fatalf("Parse = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && (f.EtherType() != EtherTypeARP || f.IPVersion() != 0 || f.L3End() != f.L3Offset()+28) {
				t.Fatalf("EtherType %#x IPVersion %d L3 %d..%d", f.EtherType(), f.IPVersion(), f.L3Offset(), f.L3End())
			}
		})
	}
}

// icmpErr4 builds an ICMPv4 error from router to VIP quoting quoted (an IP packet).
func icmpErr4(typ, code uint8, quoted []byte) []byte {
	return pkt{src: router4, dst: vip4, proto: ProtoICMP, l4: append(AppendICMP(nil, typ, code, 1400), quoted...)}.bytes()
}

func icmpErr6(typ uint8, quoted []byte) []byte {
	return pkt{v6: true, src: router6, dst: vip6, proto: ProtoICMPv6, l4: append(AppendICMP(nil, typ, 0, 1280), quoted...)}.bytes()
}

// reply4 is an IPv4 packet from the VIP (a DSR backend) back to the client.
func reply4(frag uint16, proto uint8, l4 []byte) []byte {
	b := pkt{src: vip4, dst: client4, frag: frag, proto: proto, l4: l4}.bytes()
	return b[14:]
}

func TestICMPInnerFlow(t *testing.T) {
	tcpReply := tcpSeg(TCPHeader{SrcPort: 80, DstPort: 40000, Flags: FlagACK}, seq(1400))
	v6reply := pkt{v6: true, src: vip6, dst: client6, proto: ProtoTCP, l4: tcpReply}.bytes()[14:]
	v6replyExt := pkt{v6: true, src: vip6, dst: client6, ext: []ext6{destOpt}, proto: ProtoUDP, l4: udpDgram(53, 5353, seq(20))}.bytes()[14:]
	tests := []struct {
		name   string
		in     []byte
		want   Flow
		wantOK bool
	}{
		{name: "frag needed, 28 quoted bytes", in: icmpErr4(3, 4, reply4(IPv4DontFragment, ProtoTCP, tcpReply)[:28]), want: flow4, wantOK: true},
		{name: "frag needed, whole quote", in: icmpErr4(3, 4, reply4(IPv4DontFragment, ProtoTCP, tcpReply)[:576]), want: flow4, wantOK: true},
		{name: "port unreachable udp", in: icmpErr4(3, 3, reply4(0, ProtoUDP, udpDgram(53, 5353, seq(4)))),
			want: Flow{Src: client4, Dst: vip4, Proto: ProtoUDP, SrcPort: 5353, DstPort: 53}, wantOK: true},
		{name: "time exceeded", in: icmpErr4(11, 0, reply4(0, ProtoTCP, tcpReply)[:28]), want: flow4, wantOK: true},
		{name: "quote with ip options", in: icmpErr4(3, 4, pkt{src: vip4, dst: client4, ipOpts: []byte{1, 1, 1, 1}, proto: ProtoTCP, l4: tcpReply}.bytes()[14:46]), want: flow4, wantOK: true},
		{name: "quote too short for ports", in: icmpErr4(3, 4, reply4(0, ProtoTCP, tcpReply)[:23]), wantOK: false},
		{name: "quote of later fragment", in: icmpErr4(3, 4, reply4(100, ProtoTCP, tcpReply)[:28]), wantOK: false},
		{name: "quote of icmp", in: icmpErr4(3, 4, reply4(0, ProtoICMP, AppendICMP(nil, 0, 0, 0))), wantOK: false},
		{name: "quote of ipv6 in icmpv4", in: icmpErr4(3, 4, v6reply[:48]), wantOK: false},
		{name: "echo request is no error", in: pkt{proto: ProtoICMP, l4: append(AppendICMP(nil, 8, 0, 0), reply4(0, ProtoTCP, tcpReply)[:28]...)}.bytes(), wantOK: false},
		{name: "tcp is no icmp", in: tcp4Data, wantOK: false},
		{name: "packet too big", in: icmpErr6(2, v6reply[:1232]), want: flow6, wantOK: true},
		{name: "packet too big, quote with extension header", in: icmpErr6(2, v6replyExt),
			want: Flow{Src: client6, Dst: vip6, Proto: ProtoUDP, SrcPort: 5353, DstPort: 53}, wantOK: true},
		{name: "icmpv6 destination unreachable", in: icmpErr6(1, v6reply[:44]), want: flow6, wantOK: true},
		{name: "icmpv6 quote too short", in: icmpErr6(2, v6reply[:43]), wantOK: false},
		{name: "icmpv6 echo is no error", in: icmpErr6(128, v6reply[:48]), wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustParse(t, tt.in)
			got, ok := f.ICMPInnerFlow()
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if diff := cmp.Diff(tt.want, got, addrCmp); diff != "" {
				t.Errorf("flow (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFlowMapKey(t *testing.T) {
	m := map[Flow]int{}
	m[mustParse(t, tcp4).Flow()]++
	m[mustParse(t, tcp4Data).Flow()]++
	m[mustParse(t, tcp6).Flow()]++
	want := map[Flow]int{flow4: 2, flow6: 1}
	if diff := cmp.Diff(want, m, addrCmp); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := flow4.Reverse().Reverse(); got != flow4 {
		t.Errorf("Reverse twice = %v", got)
	}
}

func TestSetMAC(t *testing.T) {
	b := mut(tcp4Data, func([]byte) {})
	backend := [6]byte{0x02, 0xbe, 0, 0, 0, 1}
	SetDstMAC(b, backend)
	SetSrcMAC(b, macLB)
	f := mustParse(t, b)
	got := [2][6]byte{f.DstMAC(), f.SrcMAC()}
	if diff := cmp.Diff([2][6]byte{backend, macLB}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(tcp4Data[12:], b[12:]); diff != "" {
		t.Errorf("rest of frame changed:\n%s", diff)
	}
}

func TestHeadersRoundTrip(t *testing.T) {
	f := mustParse(t, tcp4Opt)
	h4, th := f.IPv4Header(), f.TCPHeader()
	b := AppendEthernet(nil, f.DstMAC(), f.SrcMAC(), nil, EtherTypeIPv4)
	b = AppendIPv4(b, h4, f.L3End()-f.L4Offset())
	b = AppendTCP(b, th)
	if diff := cmp.Diff(tcp4Opt, b); diff != "" {
		t.Errorf("rebuilt ipv4 frame (-want +got):\n%s", diff)
	}
	f = mustParse(t, udp6VLAN)
	_, tci := f.VLAN(0)
	b = AppendEthernet(nil, f.DstMAC(), f.SrcMAC(), []uint16{tci}, EtherTypeIPv6)
	b = AppendIPv6(b, f.IPv6Header(), f.L3End()-f.L4Offset())
	b = AppendUDP(b, f.UDPHeader(), f.L3End()-f.PayloadOffset())
	b = append(b, udp6VLAN[f.PayloadOffset():]...)
	if diff := cmp.Diff(udp6VLAN, b); diff != "" {
		t.Errorf("rebuilt ipv6 frame (-want +got):\n%s", diff)
	}
	if got := binary.BigEndian.Uint16(b[16:]); got != EtherTypeIPv6 {
		t.Errorf("ethertype %#x", got)
	}
}

func TestParseAllocs(t *testing.T) {
	var f Frame
	n := testing.AllocsPerRun(100, func() {
		_ = f.Parse(tcp6)
		_ = f.Flow()
		_, _ = f.ICMPInnerFlow()
	})
	if n != 0 {
		t.Errorf("allocs = %v, want 0", n)
	}
}
