//go:build linux

package xdp

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/dsr"
)

var (
	vip  = netip.MustParseAddr("198.51.100.100")
	vip2 = netip.MustParseAddr("198.51.100.101")
	be1  = netip.MustParseAddr("198.51.100.21")
	be2  = netip.MustParseAddr("198.51.100.22")
	be3  = netip.MustParseAddr("198.51.100.23")
)

// The Go constants and types must match dsr.h (the compiled object's BTF).
func TestMapLayout(t *testing.T) {
	spec, err := loadDsr()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		key, value any
		maxEntries uint32
	}{
		{"config", uint32(0), dsrConfig{}, 1},
		{"services", dsrSvcKey{}, dsrSvcVal{}, serviceKeys},
		{"maglev", uint32(0), uint32(0), 2 * MaxServices},
		{"backends", uint32(0), dsrBackend{}, MaxBackends},
		{"flows", dsrFlowKey{}, dsrFlowVal{}, 65536},
		{"tarpit", dsrTarpitKey{}, uint32(0), 2 * MaxTarpitPrefixes},
		{"counters", uint32(0), uint64(0), uint32(numCounters)},
		{"svc_stats", uint32(0), dsrSvcStats{}, MaxServices},
		{"be_stats", uint32(0), dsrBeStats{}, MaxBackends},
	} {
		m := spec.Maps[tc.name]
		if m == nil {
			t.Errorf("no map %s", tc.name)
			continue
		}
		if got, want := m.KeySize, uint32(binary.Size(tc.key)); got != want {
			t.Errorf("%s: key size %d, Go's %d", tc.name, got, want)
		}
		if got, want := m.ValueSize, uint32(binary.Size(tc.value)); got != want {
			t.Errorf("%s: value size %d, Go's %d", tc.name, got, want)
		}
		if m.MaxEntries != tc.maxEntries {
			t.Errorf("%s: %d entries, Go says %d", tc.name, m.MaxEntries, tc.maxEntries)
		}
	}
	if in := spec.Maps["maglev"].InnerMap; in == nil || in.MaxEntries != balance.MaglevSize || in.Type != ebpf.Array {
		t.Errorf("maglev's tables: %+v", in)
	}
}

// The target kernels have no BTF of their own: the program must need none
// (no CO-RE relocations, no kfuncs, no kernel symbols).
func TestNoKernelBTFNeeded(t *testing.T) {
	spec, err := loadDsr()
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range spec.Programs {
		for i := range p.Instructions {
			ins := &p.Instructions[i]
			if btf.CORERelocationMetadata(ins) != nil || ins.IsKfuncCall() || ins.IsLoadFromMap() && ins.Reference() != "" && spec.Maps[ins.Reference()] == nil {
				t.Errorf("%s: instruction %d (%v) needs the kernel's BTF", name, i, ins)
			}
		}
	}
}

func svc(name string, port uint16, perFlow bool, bs ...dsr.BackendConfig) dsr.ServiceConfig {
	return dsr.ServiceConfig{Name: name, VIP: vip, Port: port, Proto: dsr.ProtoTCP, PerFlow: perFlow, Backends: bs}
}

func TestBuild(t *testing.T) {
	r := newRegistry()
	s := r.build([]dsr.ServiceConfig{
		svc("web", 80, true, dsr.BackendConfig{Addr: be1, Weight: 1}, dsr.BackendConfig{Addr: be2, Weight: 2}),
		svc("all", 0, false, dsr.BackendConfig{Addr: be1, Weight: 0}),
		{Name: "v6", VIP: netip.MustParseAddr("2001:db8::1"), Port: 80, Proto: dsr.ProtoTCP},
	}, dsr.Tarpit{Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.77/31"), netip.MustParsePrefix("2001:db8::/64")}}, nil)
	if len(s.services) != 2 {
		t.Fatalf("%d services, want 2 (IPv6 left out)", len(s.services))
	}
	web, all := s.services[0], s.services[1]
	if web.id == all.id || web.backends[0].id == all.backends[0].id {
		t.Fatal("ids shared between services")
	}
	if all.table != nil {
		t.Error("a service whose only backend is drained has a table")
	}
	// The table is balance's Maglev over the backends, in ids.
	m := balance.NewMaglev([]string{be1.String(), be2.String()}, []int{1, 2}, balance.MaglevSize)
	ids := []uint32{web.backends[0].id, web.backends[1].id}
	n := [2]int{}
	for i, id := range web.table {
		if want := ids[m.Lookup(uint64(i))]; id != want {
			t.Fatalf("slot %d: backend id %d, want %d", i, id, want)
		}
		if id == ids[0] {
			n[0]++
		} else {
			n[1]++
		}
	}
	if n[1] < 2*n[0]-2 || n[1] > 2*n[0]+2 {
		t.Errorf("weights 1:2 gave %v slots", n)
	}
	if len(s.tarpit) != 1 || len(s.freshServices) != 2 || len(s.freshBackends) != 3 || len(s.released) != 0 {
		t.Errorf("tarpit %v fresh %v %v released %v", s.tarpit, s.freshServices, s.freshBackends, s.released)
	}

	// A reload: be2 leaves web, be3 comes, be1 goes down; ids stay by
	// service name and address, the new backend gets a new generation.
	down := func(name string, a netip.Addr) bool { return name == "web" && a == be1 }
	old1, old2 := web.backends[0], web.backends[1]
	s2 := r.build([]dsr.ServiceConfig{
		svc("all", 0, false, dsr.BackendConfig{Addr: be1, Weight: 1}),
		svc("web", 80, true, dsr.BackendConfig{Addr: be1, Weight: 1}, dsr.BackendConfig{Addr: be3, Weight: 1}),
	}, dsr.Tarpit{}, down)
	web2, all2 := s2.services[1], s2.services[0]
	if web2.id != web.id || all2.id != all.id {
		t.Errorf("service ids moved: %d %d -> %d %d", web.id, all.id, web2.id, all2.id)
	}
	if web2.backends[0] != old1 || !old1.down {
		t.Errorf("be1 in web: %+v", web2.backends[0])
	}
	if len(s2.released) != 1 || s2.released[0] != old2 {
		t.Errorf("released %v", s2.released)
	}
	if b3 := web2.backends[1]; b3.id == old2.id || b3.gen == old2.gen {
		t.Errorf("be3 %+v reuses be2's id %d at once (or its generation %d)", b3, old2.id, old2.gen)
	}
	for _, id := range web2.table {
		if id != web2.backends[1].id {
			t.Fatal("the down backend is in the table")
		}
	}
	if len(s2.freshServices) != 0 || len(s2.freshBackends) != 1 {
		t.Errorf("fresh %v %v", s2.freshServices, s2.freshBackends)
	}
	// One build later be2's id is free again, with a new generation.
	s3 := r.build([]dsr.ServiceConfig{svc("web", 80, true, dsr.BackendConfig{Addr: be2, Weight: 1})}, dsr.Tarpit{}, nil)
	if b := s3.services[0].backends[0]; b.id != old2.id || b.gen <= web2.backends[1].gen {
		t.Errorf("be2 back: %+v, want id %d and a new generation", b, old2.id)
	}
}

// With every backend slot taken, a reload that replaces them all still
// gets ids.
func TestBuildFullRegistry(t *testing.T) {
	r := newRegistry()
	mk := func(base byte) []dsr.ServiceConfig {
		bs := make([]dsr.BackendConfig, MaxBackends)
		for i := range bs {
			bs[i] = dsr.BackendConfig{Addr: netip.AddrFrom4([4]byte{10, base, byte(i >> 8), byte(i)}), Weight: 0}
		}
		return []dsr.ServiceConfig{svc("big", 80, true, bs...)}
	}
	for i := range 3 {
		s := r.build(mk(byte(i)), dsr.Tarpit{}, nil)
		seen := map[uint32]bool{}
		for _, b := range s.services[0].backends {
			if b.id >= MaxBackends || seen[b.id] {
				t.Fatalf("build %d: id %d", i, b.id)
			}
			seen[b.id] = true
		}
	}
}

func TestServiceEntries(t *testing.T) {
	r := newRegistry()
	other := svc("other", 443, false, dsr.BackendConfig{Addr: be1, Weight: 1})
	other.VIP = vip2
	s := r.build([]dsr.ServiceConfig{
		svc("a", 80, true, dsr.BackendConfig{Addr: be1, Weight: 1}),
		svc("b", 81, false), // no backends: no table
		svc("c", 80, false, dsr.BackendConfig{Addr: be2, Weight: 1}), // same key as a: c wins
		other,
	}, dsr.Tarpit{}, nil)
	got := s.serviceEntries(1)
	a, b, c, o := s.services[0], s.services[1], s.services[2], s.services[3]
	want := map[dsrSvcKey]dsrSvcVal{
		{Vip: addr32(vip), Port: 80, Proto: 6, Kind: 1}:   {Id: c.id, Table: tableIndex(1, 2), Port: 80},
		{Vip: addr32(vip), Port: 81, Proto: 6, Kind: 1}:   {Id: b.id, Table: noTable, Port: 81},
		{Vip: addr32(vip), Kind: 1}:                       {Table: noTable},
		{Vip: addr32(vip), Proto: 6, Kind: 1 | kindAny}:   {Id: a.id, Table: tableIndex(1, 0), Port: 80, PerFlow: 1},
		{Vip: addr32(vip2), Port: 443, Proto: 6, Kind: 1}: {Id: o.id, Table: tableIndex(1, 3), Port: 443},
		{Vip: addr32(vip2), Kind: 1}:                      {Table: noTable},
		{Vip: addr32(vip2), Proto: 6, Kind: 1 | kindAny}:  {Id: o.id, Table: tableIndex(1, 3), Port: 443},
	}
	if len(got) != len(want) {
		t.Errorf("%d entries, want %d: %v", len(got), len(want), got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%+v: %+v, want %+v", k, got[k], v)
		}
	}
	if k := tarpitKey(1, netip.MustParsePrefix("198.51.100.76/31")); k.Prefixlen != 39 || k.Data != [8]byte{1, 198, 51, 100, 76} {
		t.Errorf("tarpit key %+v", k)
	}
}

func TestCheck(t *testing.T) {
	many := make([]dsr.ServiceConfig, MaxServices+1)
	for i := range many {
		many[i] = svc("s", uint16(i+1), true)
	}
	bigBackends := make([]dsr.BackendConfig, MaxBackends+1)
	for i := range bigBackends {
		bigBackends[i] = dsr.BackendConfig{Addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Weight: 1}
	}
	prefixes := make([]netip.Prefix, MaxTarpitPrefixes+1)
	for i := range prefixes {
		prefixes[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32)
	}
	for _, tc := range []struct {
		name string
		svcs []dsr.ServiceConfig
		tp   dsr.Tarpit
		ok   bool
	}{
		{"fine", []dsr.ServiceConfig{svc("a", 80, true, dsr.BackendConfig{Addr: be1, Weight: 1})}, dsr.Tarpit{}, true},
		{"too many services", many, dsr.Tarpit{}, false},
		{"too many backends", []dsr.ServiceConfig{svc("a", 80, true, bigBackends...)}, dsr.Tarpit{}, false},
		{"too many prefixes", nil, dsr.Tarpit{Prefixes: prefixes}, false},
		{"negative weight", []dsr.ServiceConfig{svc("a", 80, true, dsr.BackendConfig{Addr: be1, Weight: -1})}, dsr.Tarpit{}, false},
		{"tarpit of whole prefixes", nil, dsr.Tarpit{Match: func(netip.Addr) bool { return true }, Prefixes: prefixes[:2], Exact: true}, true},
		{"tarpit with deny rules", nil, dsr.Tarpit{Match: func(netip.Addr) bool { return true }, Prefixes: prefixes[:2]}, false},
	} {
		if err := Check(tc.svcs, tc.tp); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
