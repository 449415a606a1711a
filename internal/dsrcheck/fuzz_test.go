package dsrcheck

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/nib-lb/nib/internal/arpd"
	"github.com/nib-lb/nib/internal/frame"
)

// FuzzParseReply feeds arbitrary frames to the reply parsers and the rules:
// they never panic, the rules take whatever ARP arpd's parser accepts, and
// what parseTCPAnswer accepts is an IPv4 TCP segment whose
// untagged fields match.
func FuzzParseReply(f *testing.F) {
	p := testProbe()
	f.Add(arpFrame(f, beMAC, arp.OperationReply, beMAC, be1Addr, ourMAC, ourIP))
	f.Add(arpFrame(f, be2MAC, arp.OperationReply, be2MAC, vipAddr, ourMAC, ourIP))
	f.Add(answerFrame(p, beMAC, frame.FlagSYN|frame.FlagACK, p.seq+1))
	f.Add(answerFrame(p, beMAC, frame.FlagRST|frame.FlagACK, p.seq+1))
	f.Add(p.appendSYN(nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		st := newARPState(ourMAC, ourIP, vipAddr, []netip.Addr{be1Addr, be2Addr})
		if a, ok := arpd.ParseFrame(b); ok { // arpd's own fuzz target checks the parse
			st.observe(a)
			syn := []synOutcome{{kind: synAccepted}, {}}
			if rep := assemble(testParams, []netip.Addr{be1Addr, be2Addr}, st, syn); len(rep.Results) != 2 {
				t.Fatalf("assemble: %d results", len(rep.Results))
			}
		}
		if a, ok := parseTCPAnswer(b); ok {
			if !a.src.Is4() || !a.dst.Is4() {
				t.Fatalf("parseTCPAnswer(% x): addresses %v %v", b, a.src, a.dst)
			}
			if binary.BigEndian.Uint16(b[12:]) == etherTypeIPv4 {
				l4 := ethHdrLen + int(b[ethHdrLen]&0xf)*4
				if a.src.As4() != [4]byte(b[26:30]) || a.dst.As4() != [4]byte(b[30:34]) ||
					a.sport != binary.BigEndian.Uint16(b[l4:]) || a.dport != binary.BigEndian.Uint16(b[l4+2:]) ||
					a.seq != binary.BigEndian.Uint32(b[l4+4:]) || a.ack != binary.BigEndian.Uint32(b[l4+8:]) || a.flags != b[l4+13] {
					t.Fatalf("parseTCPAnswer(% x) = %+v", b, a)
				}
			}
			_ = p.answerKind(a)
		}
		if !bytes.Equal(b, orig) {
			t.Fatal("a parser modified its input")
		}
	})
}
