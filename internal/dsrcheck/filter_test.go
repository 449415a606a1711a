package dsrcheck

import (
	"encoding/binary"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/nib-lb/nib/internal/frame"
	"golang.org/x/net/bpf"
)

// runFilter runs prog on b in x/net/bpf's VM and reports whether it keeps
// the frame. The program must also assemble for the kernel.
func runFilter(t *testing.T, prog []bpf.Instruction, b []byte) bool {
	t.Helper()
	if _, err := bpf.Assemble(prog); err != nil {
		t.Fatalf("assemble: %v", err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatalf("NewVM: %v", err)
	}
	n, err := vm.Run(b)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return n > 0
}

func TestARPFilter(t *testing.T) {
	prog := arpFilter(vipAddr, ourIP)
	for _, tc := range []struct {
		name string
		b    []byte
		keep bool
	}{
		{"reply to us", arpFrame(t, beMAC, arp.OperationReply, beMAC, be1Addr, ourMAC, ourIP), true},
		{"reply for the VIP", arpFrame(t, beMAC, arp.OperationReply, beMAC, vipAddr, ourMAC, ourIP), true},
		{"announcement of the VIP", arpFrame(t, beMAC, arp.OperationRequest, beMAC, vipAddr, [6]byte{}, ourIP), true},
		{"request for us", arpFrame(t, beMAC, arp.OperationRequest, beMAC, be1Addr, [6]byte{}, ourIP), false},
		{"reply to another host", arpFrame(t, beMAC, arp.OperationReply, beMAC, be1Addr, otherMAC, be2Addr), false},
		{"request among others", arpFrame(t, beMAC, arp.OperationRequest, beMAC, be1Addr, [6]byte{}, be2Addr), false},
		{"ipv4 frame", answerFrame(testProbe(), beMAC, frame.FlagSYN|frame.FlagACK, 0), false},
		{"runt", []byte{1, 2, 3}, false},
	} {
		if got := runFilter(t, prog, tc.b); got != tc.keep {
			t.Errorf("%s: kept = %v, want %v", tc.name, got, tc.keep)
		}
	}
}

func TestTCPFilter(t *testing.T) {
	const base, n = 50000, 3
	prog := tcpFilter(vipAddr, ourIP, 80, base, n)
	answer := func(dport uint16, f func(b []byte)) []byte {
		p := testProbe()
		p.sport = dport
		b := answerFrame(p, beMAC, frame.FlagSYN|frame.FlagACK, p.seq+1)
		if f != nil {
			f(b)
		}
		return b
	}
	withOptions := func(dport uint16) []byte {
		// IHL 6: one word of IPv4 options (NOPs) before the TCP header.
		b := answer(dport, nil)
		out := append(append([]byte(nil), b[:34]...), 1, 1, 1, 1)
		out = append(out, b[34:]...)
		out[14] = 0x46
		binary.BigEndian.PutUint16(out[16:], binary.BigEndian.Uint16(out[16:])+4)
		return out
	}
	for _, tc := range []struct {
		name string
		b    []byte
		keep bool
	}{
		{"first probe's answer", answer(base, nil), true},
		{"last probe's answer", answer(base+n-1, nil), true},
		{"don't fragment", answer(base, func(b []byte) { b[14+6] |= 0x40 }), true},
		{"with IPv4 options", withOptions(base + 1), true},
		{"with IPv4 options, other port", withOptions(base + n), false},
		{"port after the range", answer(base+n, nil), false},
		{"port before the range", answer(base-1, nil), false},
		{"other source port", answer(base, func(b []byte) { b[34+1] = 81 }), false},
		{"other source address", answer(base, func(b []byte) { b[14+15]++ }), false},
		{"other destination", answer(base, func(b []byte) { b[14+19]++ }), false},
		{"udp", answer(base, func(b []byte) { b[14+9] = 17 }), false},
		{"fragment", answer(base, func(b []byte) { b[14+7] = 1 }), false},
		{"more fragments", answer(base, func(b []byte) { b[14+6] |= 0x20 }), false},
		{"arp", arpFrame(t, beMAC, arp.OperationReply, beMAC, vipAddr, ourMAC, ourIP), false},
	} {
		if got := runFilter(t, prog, tc.b); got != tc.keep {
			t.Errorf("%s: kept = %v, want %v", tc.name, got, tc.keep)
		}
	}
}
