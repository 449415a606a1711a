package dsr

import (
	"fmt"
	"math"
	"net/netip"
	"testing"

	"github.com/nib-lb/nib/internal/frame"
)

var (
	vip = netip.MustParseAddr("192.0.2.100")
	be1 = netip.MustParseAddr("192.0.2.21")
	be2 = netip.MustParseAddr("192.0.2.22")
	be3 = netip.MustParseAddr("192.0.2.23")
)

func svcCfg(port uint16, perFlow bool, bs ...BackendConfig) ServiceConfig {
	return ServiceConfig{Name: fmt.Sprintf("s%d", port), VIP: vip, Port: port, Proto: ProtoTCP, PerFlow: perFlow, Backends: bs}
}

func client(i int) frame.Flow {
	return frame.Flow{Src: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Dst: vip, SrcPort: uint16(1024 + i%50000), DstPort: 80, Proto: ProtoTCP}
}

func TestLookupPortThenAllPorts(t *testing.T) {
	tb := buildTable([]ServiceConfig{
		svcCfg(80, true, BackendConfig{be1, 1}),
		{Name: "all", VIP: vip, Port: 0, Proto: ProtoTCP, Backends: []BackendConfig{{be2, 1}}},
	}, nil, nil)
	if s := tb.lookup(vip, ProtoTCP, 80); s == nil || s.cfg.Name != "s80" {
		t.Errorf("port 80 went to %v", s)
	}
	if s := tb.lookup(vip, ProtoTCP, 443); s == nil || s.cfg.Name != "all" {
		t.Errorf("port 443 went to %v", s)
	}
	if s := tb.lookup(vip, ProtoUDP, 80); s != nil {
		t.Errorf("UDP matched a TCP service: %v", s.cfg.Name)
	}
	if s := tb.lookup(be1, ProtoTCP, 80); s != nil {
		t.Errorf("non-VIP matched: %v", s.cfg.Name)
	}
}

func TestWeightsRespected(t *testing.T) {
	tb := buildTable([]ServiceConfig{svcCfg(80, true, BackendConfig{be1, 1}, BackendConfig{be2, 3})}, nil, nil)
	s := tb.lookup(vip, ProtoTCP, 80)
	count := map[netip.Addr]int{}
	const n = 100000
	for i := range n {
		count[s.choose(HashFlow(client(i))).addr]++
	}
	if got := float64(count[be2]) / n; math.Abs(got-0.75) > 0.02 {
		t.Errorf("weight 3 of 4 got %.3f of flows (%v)", got, count)
	}
}

func TestHashIsDeterministic(t *testing.T) {
	k := frame.Flow{Src: netip.MustParseAddr("198.51.100.1"), Dst: vip, SrcPort: 40000, DstPort: 80, Proto: ProtoTCP}
	// A fixed value: a change here moves flows between LBs and restarts.
	if got, want := HashFlow(k), uint64(0x6ee202702757b496); got != want {
		t.Fatalf("hash = %#x, want %#x", got, want)
	}
}

// Established flows keep their backend when a backend is added, another
// drained and a third removed; new flows avoid the drained and removed ones.
func TestFlowsSurviveChanges(t *testing.T) {
	cfg := []ServiceConfig{svcCfg(80, true, BackendConfig{be1, 1}, BackendConfig{be2, 1}, BackendConfig{be3, 1})}
	tb := buildTable(cfg, nil, nil)
	ft := newFlowTable(1<<20, 300)
	owner := map[frame.Flow]*backend{}
	s := tb.lookup(vip, ProtoTCP, 80)
	for i := range 3000 {
		k := client(i)
		b := s.choose(HashFlow(k))
		ft.put(k, b, 1)
		owner[k] = b
	}
	// Add be4, drain be2, remove be3.
	be4 := netip.MustParseAddr("192.0.2.24")
	next := buildTable([]ServiceConfig{svcCfg(80, true, BackendConfig{be1, 1}, BackendConfig{be2, 0}, BackendConfig{be4, 1})}, tb, nil)
	s = next.lookup(vip, ProtoTCP, 80)
	moved, kept := 0, 0
	for k, was := range owner {
		got := ft.get(k, 2)
		switch {
		case was.addr == be3:
			if got != nil {
				t.Fatalf("flow %v still on removed backend", k)
			}
			moved++
		case got != was:
			t.Fatalf("flow %v moved from %v to %v", k, was.addr, got)
		default:
			kept++
		}
	}
	if moved == 0 || kept == 0 {
		t.Fatalf("moved %d kept %d", moved, kept)
	}
	for i := 5000; i < 8000; i++ {
		if b := s.choose(HashFlow(client(i))); b.addr == be2 || b.addr == be3 {
			t.Fatalf("new flow went to %v", b.addr)
		}
	}
}

func TestDownBackendGetsNoFlows(t *testing.T) {
	cfg := []ServiceConfig{svcCfg(80, true, BackendConfig{be1, 1}, BackendConfig{be2, 1})}
	tb := buildTable(cfg, nil, nil)
	ft := newFlowTable(100, 300)
	s := tb.lookup(vip, ProtoTCP, 80)
	var onBe2 frame.Flow
	for i := 0; ; i++ {
		if b := s.choose(HashFlow(client(i))); b.addr == be2 {
			onBe2 = client(i)
			ft.put(onBe2, b, 1)
			break
		}
	}
	tb2 := buildTable(cfg, tb, func(_ string, a netip.Addr) bool { return a == be2 })
	if ft.get(onBe2, 2) != nil {
		t.Fatal("flow kept a dead backend")
	}
	s = tb2.lookup(vip, ProtoTCP, 80)
	for i := range 1000 {
		if s.choose(HashFlow(client(i))).addr != be1 {
			t.Fatal("a dead backend got a new flow")
		}
	}
	// All down: no backend.
	tb3 := buildTable(cfg, tb2, func(string, netip.Addr) bool { return true })
	if b := tb3.lookup(vip, ProtoTCP, 80).choose(1); b != nil {
		t.Fatalf("chose %v with every backend down", b.addr)
	}
}

func TestFlowTableBoundedAndIdle(t *testing.T) {
	b := &backend{addr: be1}
	ft := newFlowTable(1000, 10)
	for i := range 5000 {
		ft.put(client(i), b, 1)
		if ft.len() > 1000 {
			t.Fatalf("table grew to %d", ft.len())
		}
	}
	if ft.evicted != 4000 {
		t.Errorf("evicted %d, want 4000", ft.evicted)
	}
	k := client(77777)
	ft.put(k, b, 1)
	if ft.get(k, 11) != b {
		t.Fatal("entry gone before its idle time")
	}
	if ft.get(k, 22) != nil {
		t.Fatal("entry outlived its idle time")
	}
	ft.expire(100, 0)
	if ft.len() != 0 {
		t.Fatalf("%d entries after expiring everything", ft.len())
	}
}

// down is per service: a backend held down for one service (its health
// check) still gets the flows of another service on the same VIP.
func TestDownPerService(t *testing.T) {
	tb := buildTable([]ServiceConfig{
		svcCfg(80, true, BackendConfig{be1, 1}, BackendConfig{be2, 1}),
		svcCfg(443, true, BackendConfig{be1, 1}, BackendConfig{be2, 1}),
	}, nil, func(service string, a netip.Addr) bool { return service == "s80" && a == be1 })
	count := map[string]map[netip.Addr]int{"s80": {}, "s443": {}}
	for _, port := range []uint16{80, 443} {
		s := tb.lookup(vip, ProtoTCP, port)
		for i := range 1000 {
			count[s.cfg.Name][s.choose(HashFlow(client(i))).addr]++
		}
	}
	if count["s80"][be1] != 0 || count["s80"][be2] != 1000 {
		t.Errorf("port 80 (be1 down): %v", count["s80"])
	}
	if count["s443"][be1] == 0 || count["s443"][be2] == 0 {
		t.Errorf("port 443 (both up): %v", count["s443"])
	}
}
