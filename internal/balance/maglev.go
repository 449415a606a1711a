package balance

import (
	"fmt"
	"math/bits"
)

// MaglevSize is the default Maglev lookup-table size, a prime (the Maglev
// paper's M = 65537). With fewer than 650 backends the shares are within 1 %
// of the weights.
const MaglevSize = 65537

// MaglevTable is a weighted Maglev consistent-hashing lookup table (Eisenbud et
// al., NSDI 2016), weighted Katran-V2 style: backends take turns, each
// backend of weight w taking w turns per round, and a turn claims the next
// free entry of that backend's permutation. A backend of weight 0 gets no
// entries. The table
// depends only on the keys, weights and size, so it is the same on every run
// and machine. A MaglevTable is immutable and safe for concurrent Lookups.
type MaglevTable struct {
	table []int32
	size  uint64
	empty bool
}

// NewMaglev builds a table of the given prime size (0 means MaglevSize) for
// backends identified by keys (a stable identity such as the address string,
// so that a backend's permutation does not depend on its position) with the
// given weights. Lookup returns indexes into keys. It panics if the lengths
// differ, a weight is negative, the weights overflow a uint64, or size is not
// a prime below 2^31: those are programming errors.
func NewMaglev(keys []string, weights []int, size uint64) *MaglevTable {
	if size == 0 {
		size = MaglevSize
	}
	if len(keys) != len(weights) {
		panic(fmt.Sprintf("balance: NewMaglev with %d keys and %d weights", len(keys), len(weights)))
	}
	if !isPrime(size) || size > 1<<31 {
		panic(fmt.Sprintf("balance: NewMaglev size %d is not a prime below 2^31", size))
	}
	m := &MaglevTable{table: make([]int32, size), size: size}
	for i := range m.table {
		m.table[i] = -1
	}
	type backend struct {
		idx       int32
		weight    int
		pos, skip uint64
	}
	var bs []backend
	g := 0 // the gcd of the weights: only their ratios matter
	for i, w := range weights {
		if w < 0 {
			panic(fmt.Sprintf("balance: NewMaglev weight %d of %q is negative", w, keys[i]))
		}
		if w == 0 {
			continue
		}
		h := fnv1a64([]byte(keys[i]))
		bs = append(bs, backend{
			idx:    int32(i),
			weight: w,
			pos:    mix64(h^0x9e3779b97f4a7c15) % size,
			skip:   mix64(h^0xc2b2ae3d27d4eb4f)%(size-1) + 1,
		})
		g = gcd(g, w)
	}
	if len(bs) == 0 {
		m.empty = true
		return m
	}
	// Each backend's quota is its exact share of the table, by largest
	// remainder (ties to the lower index), so that shares are right even
	// when the total weight does not divide the size. Then backends take
	// turns in rounds, each backend w turns per round, until every quota is
	// met. With all weights 1 this is the original Maglev fill.
	total := uint64(0)
	for i := range bs {
		bs[i].weight /= g
		if total+uint64(bs[i].weight) < total {
			panic("balance: NewMaglev weights sum to 2^64 or more")
		}
		total += uint64(bs[i].weight)
	}
	quota := make([]uint64, len(bs))
	rem := make([]uint64, len(bs))
	left := size
	for i := range bs {
		// size*weight/total without overflow: the quotient is at most size.
		hi, lo := bits.Mul64(size, uint64(bs[i].weight))
		quota[i], rem[i] = bits.Div64(hi, lo, total)
		left -= quota[i]
	}
	for ; left > 0; left-- {
		best := 0
		for i := range bs {
			if rem[i] > rem[best] {
				best = i
			}
		}
		quota[best]++
		rem[best] = 0
	}
	for filled := uint64(0); filled < size; {
		for i := range bs {
			b := &bs[i]
			for t := 0; t < b.weight && quota[i] > 0; t++ {
				// Walk b's permutation (pos, pos+skip, ...) to a free entry.
				// skip is coprime with the prime size, so every entry is
				// visited and a free one exists while filled < size.
				for m.table[b.pos] >= 0 {
					b.pos += b.skip
					if b.pos >= size {
						b.pos -= size
					}
				}
				m.table[b.pos] = b.idx
				quota[i]--
				filled++
			}
		}
	}
	return m
}

// Lookup returns the backend index for hash h, or -1 if no backend has a
// positive weight.
func (m *MaglevTable) Lookup(h uint64) int {
	if m == nil || m.empty {
		return -1
	}
	return int(m.table[h%m.size])
}

// Size returns the table size.
func (m *MaglevTable) Size() uint64 { return m.size }

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// fnv1a64 is the 64-bit FNV-1a hash.
func fnv1a64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// mix64 is the splitmix64 finaliser: it spreads every input bit over the
// output, so that two related FNV values give independent offsets and skips.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// KeyHash is the deterministic 64-bit hash for Maglev lookups of arbitrary
// keys (the DSR forwarder's flows): FNV-1a, then the splitmix64 finaliser.
// It is the same on every machine and across restarts.
func KeyHash(b []byte) uint64 { return mix64(fnv1a64(b)) }
