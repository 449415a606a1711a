package balance

import (
	"net/netip"
	"time"
)

// clientTable is Pen's client table: keyed by address only, bounded, least
// recently seen evicted first. Entries live in a slice linked by index so
// that a full table recycles them without allocating.
type clientTable struct {
	size       int
	idx        map[netip.Addr]int32
	e          []clientEntry
	head, tail int32 // most and least recently seen; -1 when empty
}

type clientEntry struct {
	addr       netip.Addr
	last       time.Time
	server     int // slot of the last successful connect, or NoServer
	connects   uint64
	sent, recv uint64
	prev, next int32
}

func (t *clientTable) init() {
	t.idx = make(map[netip.Addr]int32)
	t.head, t.tail = -1, -1
}

// expired reports whether the entry is older than expiry (0 never expires).
func (ce *clientEntry) expired(now time.Time, expiry time.Duration) bool {
	return expiry > 0 && ce.last.Add(expiry).Before(now)
}

func (ce *clientEntry) reset(a netip.Addr) {
	*ce = clientEntry{addr: a, server: NoServer, prev: -1, next: -1}
}

// get returns a's entry, or nil if a is unknown or its entry expired.
func (t *clientTable) get(a netip.Addr, now time.Time, expiry time.Duration) *clientEntry {
	i, ok := t.idx[a]
	if !ok || t.e[i].expired(now, expiry) {
		return nil
	}
	return &t.e[i]
}

// touch returns a's entry, marked as seen now. An expired entry starts
// afresh; a new client takes a free entry or the least recently seen one.
func (t *clientTable) touch(a netip.Addr, now time.Time, expiry time.Duration) *clientEntry {
	i, ok := t.idx[a]
	if ok {
		t.unlink(i)
		if t.e[i].expired(now, expiry) {
			t.e[i].reset(a)
		}
	} else {
		if len(t.e) < t.size {
			i = int32(len(t.e))
			t.e = append(t.e, clientEntry{})
		} else {
			i = t.tail
			t.unlink(i)
			delete(t.idx, t.e[i].addr)
		}
		t.e[i].reset(a)
		t.idx[a] = i
	}
	t.pushFront(i)
	t.e[i].last = now
	return &t.e[i]
}

func (t *clientTable) unlink(i int32) {
	ce := &t.e[i]
	if ce.prev >= 0 {
		t.e[ce.prev].next = ce.next
	} else {
		t.head = ce.next
	}
	if ce.next >= 0 {
		t.e[ce.next].prev = ce.prev
	} else {
		t.tail = ce.prev
	}
	ce.prev, ce.next = -1, -1
}

func (t *clientTable) pushFront(i int32) {
	t.e[i].prev, t.e[i].next = -1, t.head
	if t.head >= 0 {
		t.e[t.head].prev = i
	} else {
		t.tail = i
	}
	t.head = i
}

// resize sets the capacity, keeping the most recently seen entries.
func (t *clientTable) resize(size int) {
	if size >= len(t.e) {
		t.size = size
		return
	}
	var keep []clientEntry
	for i := t.head; i >= 0 && len(keep) < size; i = t.e[i].next {
		keep = append(keep, t.e[i])
	}
	t.init()
	t.size = size
	t.e = make([]clientEntry, 0, size)
	for k := len(keep) - 1; k >= 0; k-- {
		i := int32(len(t.e))
		t.e = append(t.e, keep[k])
		t.idx[keep[k].addr] = i
		t.pushFront(i)
	}
}

// remap rewrites every entry's server slot through f (after an Update
// moved or removed servers).
func (t *clientTable) remap(f func(int) int) {
	for i := range t.e {
		if t.e[i].server >= 0 {
			t.e[i].server = f(t.e[i].server)
		}
	}
}
