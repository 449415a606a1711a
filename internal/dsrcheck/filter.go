package dsrcheck

import (
	"net/netip"

	"golang.org/x/net/bpf"
)

// Classic BPF filters for the packet sockets, so that the kernel hands us
// only the frames the rules look at (and a busy segment costs no reads).
// The rules still check everything: the filters only save work.

// filterBuilder assembles a filter whose conditional jumps go to one of two
// final instructions: accept (keep the frame) or drop.
type filterBuilder struct {
	ins []bpf.Instruction
	fix []jumpFix
}

type jumpFix struct {
	at       int
	toAccept bool // else to drop
	onTrue   bool // patch SkipTrue, else SkipFalse
}

const snapLen = 1600 // bytes kept of an accepted frame: more than any header we read

// load loads size bytes at off of the frame into A.
func (f *filterBuilder) load(off uint32, size int) {
	f.ins = append(f.ins, bpf.LoadAbsolute{Off: off, Size: size})
}

// require drops the frame unless A cond val.
func (f *filterBuilder) require(cond bpf.JumpTest, val uint32) {
	f.fix = append(f.fix, jumpFix{at: len(f.ins)})
	f.ins = append(f.ins, bpf.JumpIf{Cond: cond, Val: val})
}

// acceptIf accepts the frame if A cond val.
func (f *filterBuilder) acceptIf(cond bpf.JumpTest, val uint32) {
	f.fix = append(f.fix, jumpFix{at: len(f.ins), toAccept: true, onTrue: true})
	f.ins = append(f.ins, bpf.JumpIf{Cond: cond, Val: val})
}

// program appends accept and drop and patches the jumps.
func (f *filterBuilder) program() []bpf.Instruction {
	accept := len(f.ins)
	drop := accept + 1
	f.ins = append(f.ins, bpf.RetConstant{Val: snapLen}, bpf.RetConstant{Val: 0})
	for _, x := range f.fix {
		j := f.ins[x.at].(bpf.JumpIf)
		target := drop
		if x.toAccept {
			target = accept
		}
		skip := uint8(target - x.at - 1) // programs are far shorter than 256 instructions
		if x.onTrue {
			j.SkipTrue = skip
		} else {
			j.SkipFalse = skip
		}
		f.ins[x.at] = j
	}
	return f.ins
}

func be32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// arpFilter keeps the ARP frames the rules look at: any whose sender
// address is the VIP (answers to who-has VIP, announcements), and replies
// to us (target address ours).
func arpFilter(vip, ours netip.Addr) []bpf.Instruction {
	var f filterBuilder
	f.load(12, 2) // EtherType
	f.require(bpf.JumpEqual, etherTypeARP)
	f.load(ethHdrLen+14, 4) // sender protocol address
	f.acceptIf(bpf.JumpEqual, be32(vip))
	f.load(ethHdrLen+6, 2) // operation
	f.require(bpf.JumpEqual, 2)
	f.load(ethHdrLen+24, 4) // target protocol address
	f.require(bpf.JumpEqual, be32(ours))
	return f.program()
}

// tcpFilter keeps unfragmented IPv4 TCP segments from vip:port to
// ours:[base, base+n): the answers to n probes from consecutive source
// ports.
func tcpFilter(vip, ours netip.Addr, port, base uint16, n int) []bpf.Instruction {
	var f filterBuilder
	f.load(12, 2) // EtherType
	f.require(bpf.JumpEqual, etherTypeIPv4)
	f.load(ethHdrLen+9, 1) // protocol
	f.require(bpf.JumpEqual, 6)
	f.load(ethHdrLen+6, 2) // flags and fragment offset
	f.require(bpf.JumpBitsNotSet, 0x3fff)
	f.load(ethHdrLen+12, 4) // source address
	f.require(bpf.JumpEqual, be32(vip))
	f.load(ethHdrLen+16, 4) // destination address
	f.require(bpf.JumpEqual, be32(ours))
	f.ins = append(f.ins, bpf.LoadMemShift{Off: ethHdrLen}) // X = IPv4 header length
	f.ins = append(f.ins, bpf.LoadIndirect{Off: ethHdrLen, Size: 2})
	f.require(bpf.JumpEqual, uint32(port)) // source port
	f.ins = append(f.ins, bpf.LoadIndirect{Off: ethHdrLen + 2, Size: 2})
	f.require(bpf.JumpGreaterOrEqual, uint32(base)) // destination port
	f.require(bpf.JumpLessThan, uint32(base)+uint32(n))
	return f.program()
}
