package dsr

import (
	"fmt"
	"net/netip"

	"golang.org/x/net/bpf"
)

// maxFilterMatches keeps the packet filter far below the kernel's limit of
// 4096 instructions (an address costs three, a prefix four).
const maxFilterMatches = 800

// Filter builds the classic BPF program that lets only the frames lbd
// forwards or answers reach userspace: IPv4, untagged or with one 802.1Q or
// 802.1ad tag, whose destination is one of vips or inside one of the tarpit
// prefixes. Everything else on the shared interface (the LB's own traffic)
// stays in the kernel and costs lbd nothing. Ports, and that the frame is
// addressed to the interface's MAC (not another host's, seen through a
// promiscuous NIC or flooding), are checked in userspace, where such frames
// are counted.
func Filter(vips []netip.Addr, tarpit []netip.Prefix) ([]bpf.RawInstruction, error) {
	if len(vips)+len(tarpit) > maxFilterMatches {
		return nil, fmt.Errorf("too many addresses for the packet filter: %d (at most %d)", len(vips)+len(tarpit), maxFilterMatches)
	}
	const (
		typeIPv4 = 0x0800
		typeVLAN = 0x8100
		typeQinQ = 0x88a8
	)
	// The header part loads the IPv4 destination into M[0]:
	p := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},                                        // 0
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: typeIPv4, SkipTrue: 7},               // 1: untagged -> 9
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: typeVLAN, SkipTrue: 1},               // 2: tagged -> 4
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: typeQinQ, SkipTrue: 0, SkipFalse: 4}, // 3: -> 4, or reject at 8
		bpf.LoadAbsolute{Off: 16, Size: 2},                                        // 4
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: typeIPv4, SkipTrue: 0, SkipFalse: 2}, // 5: -> 6, or reject at 8
		bpf.LoadAbsolute{Off: 18 + 16, Size: 4},                                   // 6: tagged destination
		bpf.Jump{Skip: 2},                                                         // 7: -> 10
		bpf.RetConstant{Val: 0},                                                   // 8: not IPv4
		bpf.LoadAbsolute{Off: 14 + 16, Size: 4},                                   // 9: untagged destination
		bpf.StoreScratch{Src: bpf.RegA, N: 0},                                     // 10
	}
	// Then one test per address or prefix; a match jumps to the accept at
	// the end (through an unconditional jump: conditional ones reach only
	// 255 instructions).
	var toAccept []int
	for _, a := range vips {
		if !a.Is4() {
			continue
		}
		p = append(p,
			bpf.LoadScratch{Dst: bpf.RegA, N: 0},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: be32(a.As4()), SkipFalse: 1},
			nil)
		toAccept = append(toAccept, len(p)-1)
	}
	for _, pr := range tarpit {
		if !pr.Addr().Is4() {
			continue
		}
		pr = pr.Masked()
		var mask uint32
		if pr.Bits() > 0 {
			mask = ^uint32(0) << (32 - pr.Bits())
		}
		p = append(p,
			bpf.LoadScratch{Dst: bpf.RegA, N: 0},
			bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: be32(pr.Addr().As4()), SkipFalse: 1},
			nil)
		toAccept = append(toAccept, len(p)-1)
	}
	p = append(p, bpf.RetConstant{Val: 0})
	accept := len(p)
	p = append(p, bpf.RetConstant{Val: 0xffffffff})
	for _, at := range toAccept {
		p[at] = bpf.Jump{Skip: uint32(accept - at - 1)}
	}
	return bpf.Assemble(p)
}

func be32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
