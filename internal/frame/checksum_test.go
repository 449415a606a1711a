package frame

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestChecksumVectors(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		initial uint32
		want    uint16
	}{
		// RFC 1071 section 3: the sum of these words is ddf2.
		{name: "rfc1071 example", in: []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, want: ^uint16(0xddf2)},
		// The IPv4 header used as an example on Wikipedia ("IPv4 header checksum"), field zeroed.
		{name: "ipv4 header", in: []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00,
			0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}, want: 0xb861},
		{name: "ipv4 header verifies", in: []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61,
			0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}, want: 0},
		{name: "empty", in: nil, want: 0xffff},
		{name: "empty with initial", in: nil, initial: 0x1234, want: ^uint16(0x1234)},
		{name: "initial carries", in: nil, initial: 0xffffffff, want: 0},
		{name: "odd length pads low byte", in: []byte{0x12, 0x34, 0x56}, want: ^uint16(0x1234 + 0x5600)},
		{name: "all ones", in: []byte{0xff, 0xff, 0xff, 0xff}, want: 0},
		{name: "carry across 8-byte words", in: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 1}, want: 0xfffe},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Checksum(tt.in, tt.initial); got != tt.want {
				t.Errorf("Checksum = %#04x, want %#04x", got, tt.want)
			}
		})
	}
}

// TestChecksumReference compares the 8-bytes-at-a-time sum with a
// word-at-a-time one on random data of every length up to 300.
func TestChecksumReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 300; n++ {
		for range 20 {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(r.Uint32())
				if r.IntN(4) == 0 {
					b[i] = 0xff
				}
			}
			initial := r.Uint32()
			if r.IntN(3) == 0 {
				initial = 0
			}
			if got, want := Checksum(b, initial), ^refSum(b, uint64(initial)); got != want {
				t.Fatalf("len %d initial %#x: Checksum = %#04x, reference %#04x", n, initial, got, want)
			}
		}
	}
}

// TestL4ChecksumReference checks frames built with the builders against a
// checksum over an explicitly built pseudo-header.
func TestL4ChecksumReference(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{name: "tcp/ipv4 syn 40-byte header", in: tcp4Opt},
		{name: "tcp/ipv4 odd payload", in: pkt{proto: ProtoTCP, l4: tcpSeg(TCPHeader{SrcPort: 1, DstPort: 2, Flags: FlagACK}, seq(1001))}.bytes()},
		{name: "udp/ipv4", in: udp4},
		{name: "tcp/ipv6", in: pkt{v6: true, proto: ProtoTCP, l4: tcpSeg(TCPHeader{SrcPort: 443, DstPort: 50000, Seq: 0xfffffff0, Ack: 77, Flags: FlagACK | FlagPSH, Window: 501}, seq(777))}.bytes()},
		{name: "udp/ipv6 vlan", in: udp6VLAN},
		{name: "icmpv6", in: pkt{v6: true, proto: ProtoICMPv6, l4: append(AppendICMP(nil, 128, 0, 1), seq(56)...)}.bytes()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustParse(t, tt.in)
			seg := tt.in[f.L4Offset():f.L3End()]
			got := struct{ Ref, Field uint16 }{refL4Checksum(f.Src(), f.Dst(), f.Proto(), seg), binary.BigEndian.Uint16(seg[map[uint8]int{6: 16, 17: 6, 58: 2}[f.Proto()]:])}
			if got.Ref != 0 || got.Field == 0 {
				t.Errorf("reference verification %#04x (want 0), field %#04x", got.Ref, got.Field)
			}
			ipOK, l4OK := f.VerifyChecksums()
			if diff := cmp.Diff([2]bool{true, true}, [2]bool{ipOK, l4OK}); diff != "" {
				t.Errorf("VerifyChecksums (-want +got):\n%s", diff)
			}
		})
	}
}

// TestUpdateChecksum rewrites random words of random packets and compares
// the incremental update with a full recomputation.
func TestUpdateChecksum(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	special := []uint16{0, 0xffff, 1, 0xfffe, 0x8000}
	word := func() uint16 {
		if r.IntN(3) == 0 {
			return special[r.IntN(len(special))]
		}
		return uint16(r.Uint32())
	}
	for i := range 100000 {
		n := 2 * (3 + r.IntN(30))
		b := make([]byte, n)
		for j := 0; j < n; j += 2 {
			binary.BigEndian.PutUint16(b[j:], word())
		}
		// Word 0 is the checksum field; word 1 stays non-zero like an IPv4
		// version or a pseudo-header protocol: with all covered data zero,
		// RFC 1624 eqn. 3 gives 0x0000 where a full computation gives 0xffff.
		b[2], b[3] = 0x45, 0
		b[0], b[1] = 0, 0
		binary.BigEndian.PutUint16(b, Checksum(b, 0))
		old := binary.BigEndian.Uint16(b)
		if r.IntN(2) == 0 {
			at := 4 + 2*r.IntN(n/2-2)
			ow, nw := binary.BigEndian.Uint16(b[at:]), word()
			binary.BigEndian.PutUint16(b[at:], nw)
			got := UpdateChecksum(old, ow, nw)
			b[0], b[1] = 0, 0
			if want := Checksum(b, 0); got != want {
				t.Fatalf("case %d: 16-bit %#04x->%#04x: incremental %#04x, full %#04x", i, ow, nw, got, want)
			}
			continue
		}
		if n < 8 {
			continue
		}
		at := 4 + 2*r.IntN(n/2-3)
		ow, nw := binary.BigEndian.Uint32(b[at:]), uint32(word())<<16|uint32(word())
		binary.BigEndian.PutUint32(b[at:], nw)
		got := UpdateChecksum32(old, ow, nw)
		b[0], b[1] = 0, 0
		if want := Checksum(b, 0); got != want {
			t.Fatalf("case %d: 32-bit %#08x->%#08x: incremental %#04x, full %#04x", i, ow, nw, got, want)
		}
	}
}

func TestUpdateChecksumVectors(t *testing.T) {
	tests := []struct {
		name                string
		old, oldWord, newWd uint16
		want                uint16
	}{
		// RFC 1624 section 4: the -0 pitfall of eqn. 2; eqn. 3 gives 0x0000.
		{name: "rfc1624 example", old: 0xdd2f, oldWord: 0x5555, newWd: 0x3285, want: 0x0000},
		{name: "no change", old: 0x1234, oldWord: 0xabcd, newWd: 0xabcd, want: 0x1234},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := UpdateChecksum(tt.old, tt.oldWord, tt.newWd); got != tt.want {
				t.Errorf("UpdateChecksum = %#04x, want %#04x", got, tt.want)
			}
		})
	}
}

// zeroSumUDP returns a UDP/IPv4 frame whose checksum computes to 0, which
// must go on the wire as 0xffff.
func zeroSumUDP(t *testing.T) []byte {
	b := pkt{proto: ProtoUDP, l4: udpDgram(1000, 53, make([]byte, 10))}.bytes()
	f := mustParse(t, b)
	b[40], b[41] = 0, 0
	c := Checksum(b[34:], f.pseudo(f.L3End()-f.L4Offset()))
	binary.BigEndian.PutUint16(b[42:], c) // payload word that makes the sum 0xffff
	f.SetL4Checksum()
	return b
}

func TestSetL4ChecksumUDPZero(t *testing.T) {
	b := zeroSumUDP(t)
	b[40], b[41] = 0x12, 0x34
	f := mustParse(t, b)
	if !f.SetL4Checksum() {
		t.Fatal("SetL4Checksum refused")
	}
	if got := binary.BigEndian.Uint16(b[40:]); got != 0xffff {
		t.Errorf("field = %#04x, want 0xffff", got)
	}
	if _, ok := f.VerifyChecksums(); !ok {
		t.Error("0xffff does not verify")
	}
}
