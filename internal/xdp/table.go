//go:build linux

package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/dsr"
)

// Limits of the program's maps (dsr.h; the tests check them against the
// compiled object).
const (
	// MaxServices bounds the services of one forwarder (IPv4 VIPs).
	MaxServices = 256
	// MaxBackends bounds the backends of all services together (a backend
	// of two services counts twice).
	MaxBackends = 4096
	// MaxTarpitPrefixes bounds the tarpit's IPv4 prefixes.
	MaxTarpitPrefixes = 1024

	maglevSize  = balance.MaglevSize
	serviceKeys = 2 * 3 * MaxServices
	noTable     = ^uint32(0)
)

// Bits of the program's map values (dsr.h).
const (
	kindGen = 1
	kindAny = 2

	beResolved = 1
	beGone     = 2

	cfgTarpit = 1
	cfgActive = 2
)

// Counter indexes (enum counter): the drop reasons follow cntDrops in
// dsr.DropReason's order.
const (
	cntReceived = iota
	cntForwarded
	cntTarpitReplies
	cntDrops
	numDropReasons = int(dsr.DropNotForUs) + 1
	numCounters    = cntDrops + numDropReasons
)

// backendState is one backend of one service, as the maps know it: id is
// its slot in backends and be_stats, stable across reloads while the
// backend stays in its service; gen changes whenever the slot is given to
// another backend.
type backendState struct {
	addr     netip.Addr
	id, gen  uint32
	down     bool // the forwarder's down func says so: no flows at all
	mac      [6]byte
	resolved bool
}

// serviceState is one service in a snapshot; id is its slot in svc_stats,
// stable across reloads by name.
type serviceState struct {
	cfg      dsr.ServiceConfig
	id       uint32
	backends []*backendState
	// table is the Maglev lookup table (slot → backend id) over the
	// backends that take new flows; nil when none does.
	table []uint32
}

// snapshot is what one Update or Refresh writes into the maps.
type snapshot struct {
	cfgs []dsr.ServiceConfig // as given to build, for Refresh
	tp   dsr.Tarpit
	// all has a state per config, nil where the VIP is not IPv4; services
	// are the others, in order (a service's Maglev table is in slot i of
	// its generation's half for services[i]).
	all      []*serviceState
	services []*serviceState
	tarpit   []netip.Prefix // IPv4 prefixes only
	// fresh are ids given out by this build, whose counters start at zero;
	// released backends left the configuration: their flows move.
	freshServices, freshBackends []uint32
	released                     []*backendState
}

// registry hands out the stable ids across snapshots. A backend id
// released by one build is given out again only from the next build on:
// until the snapshot that released it is in force, the tables the program
// reads may still name it, and must not lead to a stranger.
type registry struct {
	services map[string]uint32
	freeSvc  []uint32
	nextSvc  uint32
	backends map[beKey]*backendState
	freeBe   []uint32
	resting  []uint32 // released by the last build
	nextBe   uint32
	gen      uint32
}

type beKey struct {
	service string
	addr    netip.Addr
}

func newRegistry() *registry {
	return &registry{services: map[string]uint32{}, backends: map[beKey]*backendState{}}
}

// Check says whether services and tp fit the program's maps (MaxServices,
// MaxBackends, MaxTarpitPrefixes, no negative weights): what New and Update
// check first, for a reload to check before it commits.
func Check(services []dsr.ServiceConfig, tp dsr.Tarpit) error {
	_, err := check(services, tp)
	return err
}

// check says whether cfgs and tp fit the maps. Services with a VIP that is
// not IPv4 are left out of the program (their frames pass to the stack;
// dsr counts them as unsupported) and counted in skipped.
func check(cfgs []dsr.ServiceConfig, tp dsr.Tarpit) (skipped int, err error) {
	if tp.Match != nil && !tp.Exact {
		return 0, errors.New("xdp: the tarpit ACL has deny rules, which the XDP program cannot apply (it tarpits whole prefixes): use the AF_PACKET path (-dsr-path packet or auto)")
	}
	n, b, t := 0, 0, 0
	for _, c := range cfgs {
		if !c.VIP.Is4() {
			skipped++
			continue
		}
		n++
		b += len(c.Backends)
		for _, bc := range c.Backends {
			if bc.Weight < 0 {
				return 0, fmt.Errorf("xdp: service %s: backend %s has a negative weight", c.Name, bc.Addr)
			}
		}
	}
	for _, p := range tp.Prefixes {
		if p.Addr().Is4() {
			t++
		}
	}
	switch {
	case n > MaxServices:
		return 0, fmt.Errorf("xdp: %d IPv4 services, at most %d", n, MaxServices)
	case b > MaxBackends:
		return 0, fmt.Errorf("xdp: %d backends over all services, at most %d", b, MaxBackends)
	case t > MaxTarpitPrefixes:
		return 0, fmt.Errorf("xdp: %d tarpit prefixes, at most %d", t, MaxTarpitPrefixes)
	}
	return skipped, nil
}

// build makes the snapshot for cfgs (checked by check), carrying over the
// ids, and the MACs known so far, of the services and backends that stay.
// down (may be nil) reports backends that must not get new flows; their
// established flows move too (dsr's gone flag).
func (r *registry) build(cfgs []dsr.ServiceConfig, tp dsr.Tarpit, down func(string, netip.Addr) bool) *snapshot {
	s := &snapshot{cfgs: cfgs, tp: tp}
	keepSvc := map[string]bool{}
	keepBe := map[beKey]bool{}
	for _, c := range cfgs {
		if !c.VIP.Is4() {
			continue
		}
		keepSvc[c.Name] = true
		for _, bc := range c.Backends {
			keepBe[beKey{c.Name, bc.Addr}] = true
		}
	}
	// Release first, so that the service ids are free for the newcomers;
	// backend ids rest for one build.
	r.freeBe = append(r.freeBe, r.resting...)
	r.resting = r.resting[:0]
	for name, id := range r.services {
		if !keepSvc[name] {
			delete(r.services, name)
			r.freeSvc = append(r.freeSvc, id)
		}
	}
	for k, b := range r.backends {
		if !keepBe[k] {
			delete(r.backends, k)
			r.resting = append(r.resting, b.id)
			s.released = append(s.released, b)
		}
	}
	for _, c := range cfgs {
		if !c.VIP.Is4() {
			s.all = append(s.all, nil)
			continue
		}
		id, ok := r.services[c.Name]
		if !ok {
			id = r.allocSvc()
			r.services[c.Name] = id
			s.freshServices = append(s.freshServices, id)
		}
		ss := &serviceState{cfg: c, id: id}
		isDown := make([]bool, len(c.Backends))
		for i, bc := range c.Backends {
			k := beKey{c.Name, bc.Addr}
			b := r.backends[k]
			if b == nil {
				b = &backendState{addr: bc.Addr, id: r.allocBe()}
				r.gen++
				b.gen = r.gen
				r.backends[k] = b
				s.freshBackends = append(s.freshBackends, b.id)
			}
			b.down = down != nil && down(c.Name, bc.Addr)
			isDown[i] = b.down
			ss.backends = append(ss.backends, b)
		}
		if pick, m := dsr.ServiceMaglev(c, isDown); m != nil {
			ss.table = make([]uint32, maglevSize)
			for i := range ss.table {
				ss.table[i] = ss.backends[pick[m.Lookup(uint64(i))]].id
			}
		}
		s.services = append(s.services, ss)
		s.all = append(s.all, ss)
	}
	for _, p := range tp.Prefixes {
		if p.Addr().Is4() {
			s.tarpit = append(s.tarpit, p.Masked())
		}
	}
	return s
}

func (r *registry) allocSvc() uint32 {
	if n := len(r.freeSvc); n > 0 {
		id := r.freeSvc[n-1]
		r.freeSvc = r.freeSvc[:n-1]
		return id
	}
	r.nextSvc++
	return r.nextSvc - 1
}

func (r *registry) allocBe() uint32 {
	if n := len(r.freeBe); n > 0 {
		id := r.freeBe[n-1]
		r.freeBe = r.freeBe[:n-1]
		return id
	}
	if r.nextBe < MaxBackends {
		r.nextBe++
		return r.nextBe - 1
	}
	// Every slot is taken (check keeps the live backends within
	// MaxBackends): a resting id, at the cost of a moment in which the old
	// tables' flows for it may reach its new owner (a new generation).
	n := len(r.resting)
	id := r.resting[n-1]
	r.resting = r.resting[:n-1]
	return id
}

// addr32 is an IPv4 address as the program holds it: the frame's bytes
// read as a native-endian word.
func addr32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

// serviceEntries are the services map's entries for generation gen: a
// service's own key (later services win a duplicate key, as in dsr's
// table), the VIP's marker (protocol and port 0) and, per VIP and protocol,
// the any-port entry naming the first service (dsr's lookupAny).
func (s *snapshot) serviceEntries(gen uint8) map[dsrSvcKey]dsrSvcVal {
	out := make(map[dsrSvcKey]dsrSvcVal, 3*len(s.services))
	for i, ss := range s.services {
		c := ss.cfg
		v := dsrSvcVal{Id: ss.id, Table: noTable, Port: c.Port}
		if ss.table != nil {
			v.Table = tableIndex(gen, i)
		}
		if c.PerFlow {
			v.PerFlow = 1
		}
		vip := addr32(c.VIP)
		out[dsrSvcKey{Vip: vip, Port: c.Port, Proto: c.Proto, Kind: gen}] = v
		out[dsrSvcKey{Vip: vip, Kind: gen}] = dsrSvcVal{Table: noTable}
		anyKey := dsrSvcKey{Vip: vip, Proto: c.Proto, Kind: gen | kindAny}
		if _, ok := out[anyKey]; !ok {
			out[anyKey] = v
		}
	}
	return out
}

// tableIndex is service i's Maglev table in the maglev map: each generation
// has a half of its own.
func tableIndex(gen uint8, i int) uint32 { return uint32(gen)*MaxServices + uint32(i) }

// tarpitKey is the tarpit map's key for prefix p in generation gen.
func tarpitKey(gen uint8, p netip.Prefix) dsrTarpitKey {
	a := p.Addr().As4()
	return dsrTarpitKey{Prefixlen: 8 + uint32(p.Bits()), Data: [8]uint8{gen, a[0], a[1], a[2], a[3]}}
}

// backendValue is a backend's entry in the backends map.
func backendValue(b *backendState, gone bool) dsrBackend {
	v := dsrBackend{Gen: b.gen}
	if b.resolved {
		v.Mac = b.mac
		v.Flags |= beResolved
	}
	if gone || b.down {
		v.Flags |= beGone
	}
	return v
}
