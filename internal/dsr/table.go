package dsr

import (
	"net/netip"
	"sync/atomic"

	"github.com/nib-lb/nib/internal/balance"
)

// Protocol numbers the forwarder handles.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// ServiceConfig is one DSR service as the forwarder needs it.
type ServiceConfig struct {
	Name string
	// VIP is the virtual address; Port 0 means every port.
	VIP   netip.Addr
	Port  uint16
	Proto uint8 // ProtoTCP or ProtoUDP
	// PerFlow hashes the whole flow (source port included); otherwise a
	// client's flows all go to one backend (Pen's client stickiness).
	PerFlow  bool
	Backends []BackendConfig
}

// BackendConfig is one backend of a DSR service.
type BackendConfig struct {
	Addr netip.Addr
	// Weight 0 drains the backend: no new flows, established ones stay.
	Weight int
}

// backend is a backend's live state, shared by every flow that uses it.
// A flow entry holds a pointer and checks gone with one atomic load, so a
// removed or dead backend's flows move without touching the flow tables.
type backend struct {
	addr netip.Addr
	gone atomic.Bool // removed from the configuration, or down
	// Counters, a slot per worker.
	stats slots
	// mac caches the resolved MAC until the resolver's version changes.
	mac atomic.Pointer[macCache]
}

type macCache struct {
	version uint64
	mac     [6]byte
}

// resolve returns the backend's MAC: from the cache while the resolver's
// version is unchanged (one atomic load), else from the resolver.
func (b *backend) resolve(nb Neighbors) ([6]byte, bool) {
	v := nb.Version()
	if c := b.mac.Load(); c != nil && c.version == v {
		return c.mac, true
	}
	mac, ok := nb.Lookup(b.addr)
	if ok {
		b.mac.Store(&macCache{version: v, mac: mac})
	}
	return mac, ok
}

// service is one DSR service in a table snapshot.
type service struct {
	cfg      ServiceConfig
	backends []*backend
	// maglev covers the backends that take new flows (up, weight > 0);
	// pick maps its slots to them.
	maglev *balance.MaglevTable
	pick   []*backend
	stats  *slots
}

// statSlots is how many workers get a counter slot of their own; more
// workers share slots (still correct: the adds are atomic).
const statSlots = 16

// slot is one worker's share of a service's or backend's counters, alone on
// its cache line, so that workers on different cores never write the same
// line per frame.
type slot struct {
	packets, bytes, newFlows, noBackend atomic.Uint64
	_                                   [32]byte
}

type slots [statSlots]slot

// sum adds the slots up.
func (s *slots) sum() (packets, bytes, newFlows, noBackend uint64) {
	for i := range s {
		packets += s[i].packets.Load()
		bytes += s[i].bytes.Load()
		newFlows += s[i].newFlows.Load()
		noBackend += s[i].noBackend.Load()
	}
	return
}

type vipKey struct {
	addr  netip.Addr
	proto uint8
	port  uint16
}

// table is an immutable snapshot of the services, replaced as a whole.
type table struct {
	services map[vipKey]*service
	list     []*service
	tarpit   Tarpit
}

// Tarpit says which destination addresses are tarpitted (Pen 0.32): every
// TCP SYN to one gets a SYN+ACK with a zero window, and nothing else.
type Tarpit struct {
	// Match reports whether an address is tarpitted; nil means none.
	Match func(netip.Addr) bool
	// Prefixes cover every matched address (for the packet filter).
	Prefixes []netip.Prefix
	// Exact says Match reports exactly the addresses in Prefixes (the ACL
	// has permit rules only), so a data path that sees only Prefixes (the
	// XDP program) tarpits the same addresses.
	Exact bool
}

// lookup finds the service for a frame to addr:port over proto: the exact
// port first, then the VIP's all-ports service.
func (t *table) lookup(addr netip.Addr, proto uint8, port uint16) *service {
	if s := t.services[vipKey{addr, proto, port}]; s != nil {
		return s
	}
	return t.services[vipKey{addr, proto, 0}]
}

// buildTable makes a snapshot from configs. prev supplies the live backend
// state and counters to carry over (by service name and backend address);
// isDown (may be nil) reports backends that must not get flows.
func buildTable(cfgs []ServiceConfig, prev *table, isDown func(service string, backend netip.Addr) bool) *table {
	t := &table{services: make(map[vipKey]*service, len(cfgs))}
	old := map[string]*service{}
	if prev != nil {
		for _, s := range prev.list {
			old[s.cfg.Name] = s
		}
	}
	kept := map[*backend]bool{}
	for _, c := range cfgs {
		s := &service{cfg: c, stats: &slots{}}
		o := old[c.Name]
		if o != nil {
			s.stats = o.stats
		}
		down := make([]bool, len(c.Backends))
		for i, bc := range c.Backends {
			var b *backend
			if o != nil {
				for _, ob := range o.backends {
					if ob.addr == bc.Addr {
						b = ob
					}
				}
			}
			if b == nil {
				b = &backend{addr: bc.Addr}
			}
			down[i] = isDown != nil && isDown(c.Name, bc.Addr)
			b.gone.Store(down[i])
			kept[b] = true
			s.backends = append(s.backends, b)
		}
		var pick []int
		pick, s.maglev = ServiceMaglev(c, down)
		for _, i := range pick {
			s.pick = append(s.pick, s.backends[i])
		}
		t.services[vipKey{c.VIP, c.Proto, c.Port}] = s
		t.list = append(t.list, s)
	}
	// Backends that left the configuration: their flows move.
	if prev != nil {
		for _, s := range prev.list {
			for _, b := range s.backends {
				if !kept[b] {
					b.gone.Store(true)
				}
			}
		}
	}
	return t
}

// ServiceMaglev is service c's Maglev table over the backends that take new
// flows, those with a weight above 0 that are not down (down[i] for
// c.Backends[i]), or nil when none does: Lookup's result indexes pick,
// whose entries index c.Backends. Both data paths build their tables with
// it, so a flow gets the same backend from either.
func ServiceMaglev(c ServiceConfig, down []bool) (pick []int, m *balance.MaglevTable) {
	var keys []string
	var weights []int
	for i, bc := range c.Backends {
		if bc.Weight > 0 && !down[i] {
			pick = append(pick, i)
			keys = append(keys, bc.Addr.String())
			weights = append(weights, bc.Weight)
		}
	}
	if len(pick) == 0 {
		return nil, nil
	}
	return pick, balance.NewMaglev(keys, weights, balance.MaglevSize)
}

// choose picks a backend for a new flow by Maglev over key's hash.
func (s *service) choose(h uint64) *backend {
	if s.maglev == nil {
		return nil
	}
	i := s.maglev.Lookup(h)
	if i < 0 {
		return nil
	}
	return s.pick[i]
}
