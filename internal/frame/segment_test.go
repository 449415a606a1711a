package frame

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// segCheck is what TestSegmentTCP compares for each super-frame.
type segCheck struct {
	Segments    int
	Payload     []byte // concatenated
	MaxPayload  int
	AllValid    bool // every segment parses with valid IP and L4 checksums
	Contiguous  bool // seq (TCP) advances by the payload before it; headers otherwise copied
	FirstFlags  uint8
	MiddleFlags uint8
	LastFlags   uint8
	IPv4IDs     []uint16
}

func checkSegments(t *testing.T, orig []byte, segs [][]byte) segCheck {
	t.Helper()
	of := mustParse(t, orig)
	c := segCheck{Segments: len(segs), AllValid: true, Contiguous: true}
	seqNo := of.TCPSeq()
	for i, s := range segs {
		var f Frame
		if err := f.Parse(s); err != nil {
			t.Errorf("segment %d: %v", i, err)
			c.AllValid = false
			continue
		}
		if ipOK, l4OK := f.VerifyChecksums(); !ipOK || !l4OK {
			c.AllValid = false
		}
		// Independent check of the L4 checksum.
		if refL4Checksum(f.Src(), f.Dst(), f.Proto(), s[f.L4Offset():f.L3End()]) != 0 {
			c.AllValid = false
		}
		p := s[f.PayloadOffset():f.L3End()]
		c.Payload = append(c.Payload, p...)
		c.MaxPayload = max(c.MaxPayload, len(p))
		if f.Proto() == ProtoTCP {
			if f.TCPSeq() != seqNo {
				c.Contiguous = false
			}
			seqNo += uint32(len(p))
			switch {
			case i == 0:
				c.FirstFlags = f.TCPFlags()
			case i == len(segs)-1:
				c.LastFlags = f.TCPFlags()
			default:
				c.MiddleFlags = f.TCPFlags()
			}
			// Everything but lengths, IDs, checksums, seq and flags is copied.
			if !bytes.Equal(s[:f.L3Offset()], orig[:of.L3Offset()]) || f.Flow() != of.Flow() ||
				!bytes.Equal(s[f.L4Offset()+20:f.PayloadOffset()], orig[of.L4Offset()+20:of.PayloadOffset()]) ||
				f.TCPAck() != of.TCPAck() {
				c.Contiguous = false
			}
		}
		if f.IPVersion() == 4 {
			c.IPv4IDs = append(c.IPv4IDs, f.IPv4Header().ID)
		}
	}
	return c
}

func superTCP(v6 bool, vlans []uint16, flags uint8, n int) []byte {
	return pkt{v6: v6, vlans: vlans, proto: ProtoTCP, l4: tcpSeg(TCPHeader{SrcPort: 40000, DstPort: 80, Seq: 0xffff0000, Ack: 99,
		Flags: flags, Window: 1000, Options: cat(optNOP, optNOP, optTS)}, seq(n))}.bytes()
}

func ids(first uint16, n int) []uint16 {
	var out []uint16
	for i := range n {
		out = append(out, first+uint16(i))
	}
	return out
}

func TestSegmentTCP(t *testing.T) {
	const all = FlagACK | FlagPSH | FlagFIN | FlagCWR | FlagECE
	tests := []struct {
		name string
		in   []byte
		mss  int
		want segCheck
	}{
		{name: "ipv4 64k mss 1448", in: superTCP(false, nil, all, 65000), mss: 1448, want: segCheck{Segments: 45, Payload: seq(65000), MaxPayload: 1448,
			AllValid: true, Contiguous: true, FirstFlags: FlagACK | FlagCWR | FlagECE, MiddleFlags: FlagACK | FlagECE, LastFlags: FlagACK | FlagECE | FlagPSH | FlagFIN, IPv4IDs: ids(7, 45)}},
		{name: "ipv6 vlan 64k mss 1428", in: superTCP(true, []uint16{42}, all, 65000), mss: 1428, want: segCheck{Segments: 46, Payload: seq(65000), MaxPayload: 1428,
			AllValid: true, Contiguous: true, FirstFlags: FlagACK | FlagCWR | FlagECE, MiddleFlags: FlagACK | FlagECE, LastFlags: FlagACK | FlagECE | FlagPSH | FlagFIN}},
		{name: "ipv4 qinq exact multiple", in: superTCP(false, []uint16{1, 2}, FlagACK|FlagPSH, 3*1000), mss: 1000, want: segCheck{Segments: 3, Payload: seq(3000), MaxPayload: 1000,
			AllValid: true, Contiguous: true, FirstFlags: FlagACK, MiddleFlags: FlagACK, LastFlags: FlagACK | FlagPSH, IPv4IDs: ids(7, 3)}},
		{name: "fits in one", in: superTCP(false, nil, FlagACK|FlagPSH|FlagCWR, 500), mss: 1448, want: segCheck{Segments: 1, Payload: seq(500), MaxPayload: 500,
			AllValid: true, Contiguous: true, FirstFlags: FlagACK | FlagPSH | FlagCWR, IPv4IDs: ids(7, 1)}},
		{name: "no payload", in: superTCP(true, nil, FlagACK|FlagFIN, 0), mss: 1448, want: segCheck{Segments: 1, MaxPayload: 0,
			AllValid: true, Contiguous: true, FirstFlags: FlagACK | FlagFIN}},
		{name: "mss 1", in: superTCP(false, nil, FlagACK, 5), mss: 1, want: segCheck{Segments: 5, Payload: seq(5), MaxPayload: 1,
			AllValid: true, Contiguous: true, FirstFlags: FlagACK, MiddleFlags: FlagACK, LastFlags: FlagACK, IPv4IDs: ids(7, 5)}},
		{name: "ipv4 ID wraps", in: mut(superTCP(false, nil, FlagACK, 3000), func(b []byte) { b[18], b[19] = 0xff, 0xff }), mss: 1448,
			want: segCheck{Segments: 3, Payload: seq(3000), MaxPayload: 1448, AllValid: true, Contiguous: true,
				FirstFlags: FlagACK, MiddleFlags: FlagACK, LastFlags: FlagACK, IPv4IDs: []uint16{0xffff, 0, 1}}},
		{name: "padded frame", in: append(superTCP(false, nil, FlagACK, 10), 0, 0, 0, 0), mss: 4, want: segCheck{Segments: 3, Payload: seq(10), MaxPayload: 4,
			AllValid: true, Contiguous: true, FirstFlags: FlagACK, MiddleFlags: FlagACK, LastFlags: FlagACK, IPv4IDs: ids(7, 3)}},
		{name: "partial checksum ignored", in: mut(superTCP(false, nil, FlagACK, 4000), func(b []byte) { b[50], b[51] = 0x12, 0x34 }), mss: 1448,
			want: segCheck{Segments: 3, Payload: seq(4000), MaxPayload: 1448, AllValid: true, Contiguous: true,
				FirstFlags: FlagACK, MiddleFlags: FlagACK, LastFlags: FlagACK, IPv4IDs: ids(7, 3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			segs, err := SegmentTCP(nil, tt.in, tt.mss)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, checkSegments(t, tt.in, segs)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestSegmentErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		mss  int
		udp  bool
		want error
	}{
		{name: "mss 0", in: tcp4Data, mss: 0, want: ErrSegmentSize},
		{name: "truncated", in: tcp4Data[:60], mss: 10, want: ErrTruncated},
		{name: "udp to SegmentTCP", in: udp4, mss: 10, want: ErrUnsupported},
		{name: "tcp to SegmentUDP", in: tcp4Data, mss: 10, udp: true, want: ErrUnsupported},
		{name: "fragment", in: pkt{frag: IPv4MoreFragments, proto: ProtoTCP, l4: tcpSeg(synHdr, seq(100))}.bytes(), mss: 10, want: ErrUnsupported},
		{name: "arp", in: AppendARP(AppendEthernet(nil, macLB, macClient, nil, EtherTypeARP), 1, macClient, client4, [6]byte{}, vip4), mss: 10, want: ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seg := SegmentTCP
			if tt.udp {
				seg = SegmentUDP
			}
			out, err := seg(make([][]byte, 3), tt.in, tt.mss)
			if err != tt.want || len(out) != 0 {
				t.Errorf("got %d segments, %v; want 0, %v", len(out), err, tt.want)
			}
		})
	}
}

func TestSegmentUDP(t *testing.T) {
	tests := []struct {
		name      string
		in        []byte
		size      int
		wantSizes []int
	}{
		{name: "ipv4", in: pkt{proto: ProtoUDP, l4: udpDgram(5000, 53, seq(3000))}.bytes(), size: 1200, wantSizes: []int{1200, 1200, 600}},
		{name: "ipv6 vlan", in: pkt{v6: true, vlans: []uint16{9}, proto: ProtoUDP, l4: udpDgram(5000, 53, seq(2000))}.bytes(), size: 1000, wantSizes: []int{1000, 1000}},
		{name: "one", in: udp4, size: 1000, wantSizes: []int{30}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			segs, err := SegmentUDP(nil, tt.in, tt.size)
			if err != nil {
				t.Fatal(err)
			}
			of := mustParse(t, tt.in)
			var sizes []int
			var payload []byte
			for i, s := range segs {
				f := mustParse(t, s)
				if ipOK, l4OK := f.VerifyChecksums(); !ipOK || !l4OK || f.Flow() != of.Flow() {
					t.Errorf("segment %d: checksums %v %v, flow %v", i, ipOK, l4OK, f.Flow())
				}
				sizes = append(sizes, f.L3End()-f.PayloadOffset())
				payload = append(payload, s[f.PayloadOffset():f.L3End()]...)
			}
			if diff := cmp.Diff(tt.wantSizes, sizes); diff != "" {
				t.Errorf("sizes (-want +got):\n%s", diff)
			}
			if !bytes.Equal(payload, tt.in[of.PayloadOffset():of.L3End()]) {
				t.Error("payload differs")
			}
		})
	}
}

// TestSegmentReuse checks that SegmentTCP writes into the capacity it is
// given, also past len(dst), without allocating.
func TestSegmentReuse(t *testing.T) {
	in := superTCP(false, nil, FlagACK, 65000)
	bufs := make([][]byte, 0, 64)
	for range 64 {
		bufs = append(bufs, make([]byte, 0, 2048))
	}
	first := &bufs[:1][0][:1][0]
	out, err := SegmentTCP(bufs[:0], in, 1448)
	if err != nil {
		t.Fatal(err)
	}
	if &out[0][0] != first {
		t.Error("first segment not written into dst[0]")
	}
	n := testing.AllocsPerRun(20, func() {
		out, _ = SegmentTCP(out[:0], in, 1448)
	})
	if n != 0 {
		t.Errorf("allocs = %v, want 0", n)
	}
	if got := binary.BigEndian.Uint32(out[44][38:]); got != 0xffff0000+44*1448 {
		t.Errorf("last seq %#x", got)
	}
}
