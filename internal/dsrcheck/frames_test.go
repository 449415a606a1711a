package dsrcheck

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/nib-lb/nib/internal/frame"
)

var (
	ourMAC   = [6]byte{0x02, 0, 0xc6, 0x33, 0x64, 0x02}
	beMAC    = [6]byte{0x02, 0, 0xc6, 0x33, 0x64, 0x15}
	be2MAC   = [6]byte{0x02, 0, 0xc6, 0x33, 0x64, 0x16}
	otherMAC = [6]byte{0x02, 0, 0xc6, 0x33, 0x64, 0x0a}
	ourIP    = netip.MustParseAddr("198.51.100.2")
	vipAddr  = netip.MustParseAddr("198.51.100.100")
	be1Addr  = netip.MustParseAddr("198.51.100.21")
	be2Addr  = netip.MustParseAddr("198.51.100.22")
)

// onesSum is the RFC 1071 checksum, written independently of
// internal/frame: the complement of the ones' complement sum of 16-bit words.
func onesSum(parts ...[]byte) uint16 {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var s uint32
	for i := 0; i < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// arpFrame builds an Ethernet/ARP frame with mdlayher/arp, for the tests.
func arpFrame(t testing.TB, ethSrc [6]byte, op arp.Operation, sha [6]byte, spa netip.Addr, tha [6]byte, tpa netip.Addr) []byte {
	t.Helper()
	p, err := arp.NewPacket(op, sha[:], spa, tha[:], tpa)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := p.MarshalBinary()
	b := frame.AppendEthernet(nil, ourMAC, ethSrc, nil, etherTypeARP)
	return append(b, body...)
}

func testProbe() synProbe {
	return synProbe{srcMAC: ourMAC, dstMAC: beMAC, src: ourIP, dst: vipAddr, sport: 50000, dport: 80, seq: 0xffffffff, id: 7} // seq+1 wraps to 0
}

// answerFrame is the backend's answer to p with the given flags and
// acknowledgment number, from ethSrc.
func answerFrame(p synProbe, ethSrc [6]byte, flags uint8, ack uint32) []byte {
	q := synProbe{srcMAC: ethSrc, dstMAC: p.srcMAC, src: p.dst, dst: p.src, sport: p.dport, dport: p.sport, seq: 1000}
	b := frame.AppendEthernet(nil, q.dstMAC, q.srcMAC, nil, etherTypeIPv4)
	b = frame.AppendIPv4(b, frame.IPv4Header{TTL: 64, Proto: frame.ProtoTCP, Src: q.src, Dst: q.dst}, 20)
	b = frame.AppendTCP(b, frame.TCPHeader{SrcPort: q.sport, DstPort: q.dport, Seq: q.seq, Ack: ack, Flags: flags, Window: 1000})
	var f frame.Frame
	if f.Parse(b) != nil || !f.SetL4Checksum() {
		panic("answerFrame")
	}
	return b
}

func TestAppendSYNAndRST(t *testing.T) {
	p := testProbe()
	for _, tc := range []struct {
		name   string
		b      []byte
		seq    uint32
		flags  uint8
		tcpLen int
	}{
		{"syn", p.appendSYN(nil), p.seq, frame.FlagSYN, 24},
		{"rst", p.appendRST(nil), p.seq + 1, frame.FlagRST, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.b
			if len(b) < minFrame {
				t.Fatalf("%d bytes, want at least %d", len(b), minFrame)
			}
			if !bytes.Equal(b[0:6], beMAC[:]) || !bytes.Equal(b[6:12], ourMAC[:]) || binary.BigEndian.Uint16(b[12:]) != etherTypeIPv4 {
				t.Errorf("Ethernet header % x", b[:14])
			}
			ip := b[14:34]
			if ip[0] != 0x45 || int(binary.BigEndian.Uint16(ip[2:])) != 20+tc.tcpLen || ip[8] != 64 || ip[9] != 6 ||
				binary.BigEndian.Uint16(ip[6:]) != frame.IPv4DontFragment || binary.BigEndian.Uint16(ip[4:]) != 7 {
				t.Errorf("IPv4 header % x", ip)
			}
			if !bytes.Equal(ip[12:16], []byte{198, 51, 100, 2}) || !bytes.Equal(ip[16:20], []byte{198, 51, 100, 100}) {
				t.Errorf("addresses % x", ip[12:20])
			}
			if onesSum(ip) != 0 {
				t.Errorf("IPv4 header checksum wrong: % x", ip)
			}
			tcp := b[34 : 34+tc.tcpLen]
			pseudo := append(append([]byte{}, ip[12:20]...), 0, 6, 0, byte(tc.tcpLen))
			if onesSum(pseudo, tcp) != 0 {
				t.Errorf("TCP checksum wrong: % x", tcp)
			}
			if binary.BigEndian.Uint16(tcp) != 50000 || binary.BigEndian.Uint16(tcp[2:]) != 80 ||
				binary.BigEndian.Uint32(tcp[4:]) != tc.seq || binary.BigEndian.Uint32(tcp[8:]) != 0 ||
				tcp[12] != byte(tc.tcpLen/4)<<4 || tcp[13] != tc.flags {
				t.Errorf("TCP header % x", tcp)
			}
			if tc.flags == frame.FlagSYN && !bytes.Equal(tcp[20:], mssOption) {
				t.Errorf("SYN options % x, want MSS % x", tcp[20:], mssOption)
			}
			if !bytes.Equal(b[34+tc.tcpLen:], make([]byte, len(b)-34-tc.tcpLen)) {
				t.Errorf("padding not zero: % x", b[34+tc.tcpLen:])
			}
		})
	}
}

func TestParseTCPAnswerAndKind(t *testing.T) {
	p := testProbe()
	synAck := answerFrame(p, beMAC, frame.FlagSYN|frame.FlagACK, p.seq+1)
	edit := func(b []byte, f func(b []byte)) []byte { b = append([]byte(nil), b...); f(b); return b }
	other := p
	other.sport = 50001
	for _, tc := range []struct {
		name   string
		b      []byte
		parsed bool
		kind   synKind
	}{
		{"syn+ack", synAck, true, synAccepted},
		{"syn+ack, ack wrapped to 0", answerFrame(p, beMAC, frame.FlagSYN|frame.FlagACK, 0), true, synAccepted},
		{"rst+ack", answerFrame(p, beMAC, frame.FlagRST|frame.FlagACK, p.seq+1), true, synReset},
		{"syn+ack, wrong ack", answerFrame(p, beMAC, frame.FlagSYN|frame.FlagACK, p.seq), true, synNoAnswer},
		{"rst+ack, wrong ack", answerFrame(p, beMAC, frame.FlagRST|frame.FlagACK, 1), true, synNoAnswer},
		{"rst without ack", answerFrame(p, beMAC, frame.FlagRST, p.seq+1), true, synNoAnswer},
		{"syn without ack", answerFrame(p, beMAC, frame.FlagSYN, p.seq+1), true, synNoAnswer},
		{"syn+ack+fin", answerFrame(p, beMAC, frame.FlagSYN|frame.FlagACK|frame.FlagFIN, p.seq+1), true, synNoAnswer},
		{"plain ack", answerFrame(p, beMAC, frame.FlagACK, p.seq+1), true, synNoAnswer},
		{"other probe's port", answerFrame(other, beMAC, frame.FlagSYN|frame.FlagACK, p.seq+1), true, synNoAnswer},
		{"from another address", edit(synAck, func(b []byte) {
			b[14+15]++ // source address; fix the header checksum
			b[24], b[25] = 0, 0
			binary.BigEndian.PutUint16(b[24:], onesSum(b[14:34]))
		}), true, synNoAnswer},
		{"tcp checksum not computed", edit(synAck, func(b []byte) { b[34+16], b[34+17] = 0, 0 }), true, synAccepted},
		{"bad ip checksum", edit(synAck, func(b []byte) { b[24]++ }), false, synNoAnswer},
		{"fragment", edit(synAck, func(b []byte) {
			b[14+6] |= 0x20 // more fragments
			b[24], b[25] = 0, 0
			binary.BigEndian.PutUint16(b[24:], onesSum(b[14:34]))
		}), false, synNoAnswer},
		{"truncated", synAck[:50], false, synNoAnswer},
		{"arp", arpFrame(t, beMAC, arp.OperationReply, beMAC, be1Addr, ourMAC, ourIP), false, synNoAnswer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, ok := parseTCPAnswer(tc.b)
			if ok != tc.parsed {
				t.Fatalf("parsed = %v, want %v", ok, tc.parsed)
			}
			if !ok {
				return
			}
			if a.ethSrc != beMAC {
				t.Errorf("ethSrc %x", a.ethSrc)
			}
			if k := p.answerKind(a); k != tc.kind {
				t.Errorf("answerKind = %v, want %v (%+v)", k, tc.kind, a)
			}
		})
	}
}
