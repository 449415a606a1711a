package dsr

import (
	"encoding/binary"

	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/frame"
)

// HashFlow is the flow hash Maglev picks backends by. It is deterministic
// across restarts and machines (several LBs behind ECMP, or a restarted one,
// pick the same backend for a flow): FNV-1a over addresses and ports, then a
// 64-bit finaliser (balance.KeyHash). The XDP path (internal/xdp) computes
// the same in the kernel; its tests compare with this function.
func HashFlow(fl frame.Flow) uint64 {
	var b [37]byte
	s, d := fl.Src.As16(), fl.Dst.As16()
	copy(b[0:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[32:], fl.SrcPort)
	binary.BigEndian.PutUint16(b[34:], fl.DstPort)
	b[36] = fl.Proto
	return balance.KeyHash(b[:])
}

// flowKey is a flow as a map key without pointers (netip.Addr holds one),
// which hashes and compares faster.
type flowKey struct {
	src, dst     [16]byte
	sport, dport uint16
	proto        uint8
}

func keyOf(fl frame.Flow) flowKey {
	return flowKey{src: fl.Src.As16(), dst: fl.Dst.As16(), sport: fl.SrcPort, dport: fl.DstPort, proto: fl.Proto}
}

// flowEntry is a flow's backend and when the flow was last seen (coarse
// seconds, from the worker's clock).
type flowEntry struct {
	b    *backend
	last uint32
}

// flowTable keeps established flows on their backend when backends are
// added, drained or removed (Maglev alone would move some of them). It is
// owned by one worker (fanout sends a flow's frames to one socket), bounded,
// and forgets flows idle for longer than idle seconds.
type flowTable struct {
	m    map[flowKey]flowEntry
	max  int
	idle uint32
	// evicted counts entries dropped to make room.
	evicted uint64
}

func newFlowTable(max int, idleSeconds uint32) *flowTable {
	return &flowTable{m: make(map[flowKey]flowEntry, min(max, 4096)), max: max, idle: idleSeconds}
}

// get returns the flow's backend if the flow is known, its backend still
// takes traffic, and it has not idled out; it refreshes the entry.
func (t *flowTable) get(fl frame.Flow, now uint32) *backend {
	k := keyOf(fl)
	e, ok := t.m[k]
	if !ok {
		return nil
	}
	if e.b.gone.Load() || now-e.last > t.idle {
		delete(t.m, k)
		return nil
	}
	if e.last != now {
		e.last = now
		t.m[k] = e
	}
	return e.b
}

// put records a new flow, making room if the table is full: first by
// expiring idle entries, then by dropping arbitrary ones (Go's map order is
// random), a few at a time.
func (t *flowTable) put(fl frame.Flow, b *backend, now uint32) {
	k := keyOf(fl)
	if len(t.m) >= t.max {
		t.expire(now, 64)
		for key := range t.m {
			if len(t.m) < t.max {
				break
			}
			delete(t.m, key)
			t.evicted++
		}
	}
	t.m[k] = flowEntry{b: b, last: now}
}

// expire removes idle entries and entries of gone backends, looking at no
// more than budget entries (0: all).
func (t *flowTable) expire(now uint32, budget int) {
	n := 0
	for k, e := range t.m {
		if e.b.gone.Load() || now-e.last > t.idle {
			delete(t.m, k)
		}
		if n++; budget > 0 && n >= budget {
			return
		}
	}
}

func (t *flowTable) len() int { return len(t.m) }
