package xdp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/dsr"
	"github.com/nib-lb/nib/internal/frame"
	"github.com/nib-lb/nib/internal/netnstest"
	"github.com/nib-lb/nib/internal/tarpit"
)

// XDP verdicts.
const (
	xdpDrop = 1
	xdpPass = 2
	xdpTX   = 3
)

var verdicts = map[uint32]string{0: "aborted", xdpDrop: "drop", xdpPass: "pass", xdpTX: "tx", 4: "redirect"}

var (
	lbMAC     = [6]byte{0x02, 0, 0, 0, 0, 0x02}
	clientMAC = [6]byte{0x02, 0, 0, 0, 0, 0x10}
	otherMAC  = [6]byte{0x02, 0, 0, 0, 0, 0x99}
	client    = netip.MustParseAddr("198.51.100.10")
)

// neighbors are backend MACs (02:00 + the address); version counts changes.
type neighbors struct {
	macs    atomic.Pointer[map[netip.Addr][6]byte]
	version atomic.Uint64
}

func newNeighbors(addrs ...netip.Addr) *neighbors {
	n := &neighbors{}
	m := map[netip.Addr][6]byte{}
	for _, a := range addrs {
		m[a] = macOf(a)
	}
	n.macs.Store(&m)
	return n
}

func macOf(a netip.Addr) [6]byte {
	b := a.As4()
	return [6]byte{0x02, 0, b[0], b[1], b[2], b[3]}
}

func (n *neighbors) Lookup(a netip.Addr) ([6]byte, bool) { m, ok := (*n.macs.Load())[a]; return m, ok }
func (n *neighbors) Version() uint64                     { return n.version.Load() }

func (n *neighbors) add(a netip.Addr) {
	m := map[netip.Addr][6]byte{}
	for k, v := range *n.macs.Load() {
		m[k] = v
	}
	m[a] = macOf(a)
	n.macs.Store(&m)
	n.version.Add(1)
}

// loaded loads the program for services without attaching it; it skips
// (fails under CI) without the privileges.
func loaded(t testing.TB, nb dsr.Neighbors, down func(string, netip.Addr) bool, tp dsr.Tarpit, services ...dsr.ServiceConfig) *Forwarder {
	t.Helper()
	return loadedCfg(t, dsr.Config{FlowTableSize: 1 << 14}, nb, down, tp, services...)
}

func loadedCfg(t testing.TB, cfg dsr.Config, nb dsr.Neighbors, down func(string, netip.Addr) bool, tp dsr.Tarpit, services ...dsr.ServiceConfig) *Forwarder {
	t.Helper()
	netnstest.SkipUnprivileged(t)
	cfg.Interface = &net.Interface{Name: "test0", HardwareAddr: lbMAC[:]}
	f, err := load(cfg, services, tp, nb, down, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	if ret, _ := run(t, f, tcp(1, 80)); ret != xdpPass {
		t.Fatalf("before Run: %s, want pass", verdicts[ret])
	}
	if err := f.activate(); err != nil {
		t.Fatal(err)
	}
	return f
}

// run runs the program on a copy of in and returns the verdict and frame.
func run(t testing.TB, f *Forwarder, in []byte) (uint32, []byte) {
	t.Helper()
	ret, out, err := f.objs.XdpDsr.Test(append([]byte(nil), in...))
	if err != nil {
		t.Fatal(err)
	}
	return ret, out
}

type pkt struct {
	dstMAC       [6]byte
	vlans        []uint16
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16
	flags        uint8 // TCP
	frag         uint16
	payload      string
}

func (p pkt) build() []byte {
	if p.dstMAC == ([6]byte{}) {
		p.dstMAC = lbMAC
	}
	if !p.src.IsValid() {
		p.src = client
	}
	if !p.dst.IsValid() {
		p.dst = vip
	}
	if p.proto == 0 {
		p.proto = dsr.ProtoTCP
	}
	b := frame.AppendEthernet(nil, p.dstMAC, clientMAC, p.vlans, frame.EtherTypeIPv4)
	var l4 []byte
	switch p.proto {
	case dsr.ProtoTCP:
		l4 = frame.AppendTCP(nil, frame.TCPHeader{SrcPort: p.sport, DstPort: p.dport, Seq: 1000, Flags: p.flags, Window: 65535})
	case dsr.ProtoUDP:
		l4 = frame.AppendUDP(nil, frame.UDPHeader{SrcPort: p.sport, DstPort: p.dport}, len(p.payload))
	}
	if p.frag&0x1fff != 0 {
		l4 = nil
	}
	l4 = append(l4, p.payload...)
	b = frame.AppendIPv4(b, frame.IPv4Header{TTL: 64, Proto: p.proto, Src: p.src, Dst: p.dst, FlagsFragment: p.frag, ID: 7}, len(l4))
	b = append(b, l4...)
	var fr frame.Frame
	if err := fr.Parse(b); err == nil {
		fr.SetL4Checksum()
	}
	return b
}

func tcp(sport, dport uint16) []byte {
	return pkt{sport: sport, dport: dport, flags: frame.FlagSYN}.build()
}

// forwarded checks that out is in forwarded to some backend (MACs
// rewritten, nothing else) and returns the backend's MAC.
func forwarded(t *testing.T, f *Forwarder, in []byte) [6]byte {
	t.Helper()
	ret, out := run(t, f, in)
	if ret != xdpTX {
		t.Fatalf("verdict %s, want tx (stats %+v)", verdicts[ret], f.Stats())
	}
	if [6]byte(out[6:12]) != lbMAC {
		t.Fatalf("source MAC %x", out[6:12])
	}
	if !bytes.Equal(out[12:], in[12:]) {
		t.Fatalf("bytes past the MACs changed:\n%x\n%x", in, out)
	}
	return [6]byte(out[0:6])
}

func web(perFlow bool, bs ...dsr.BackendConfig) dsr.ServiceConfig {
	return svc("web", 80, perFlow, bs...)
}

func w(a netip.Addr, weight int) dsr.BackendConfig { return dsr.BackendConfig{Addr: a, Weight: weight} }

func TestProgForwards(t *testing.T) {
	nb := newNeighbors(be1, be2)
	udp := dsr.ServiceConfig{Name: "dns", VIP: vip, Port: 53, Proto: dsr.ProtoUDP, PerFlow: true, Backends: []dsr.BackendConfig{w(be1, 1), w(be2, 1)}}
	f := loaded(t, nb, nil, dsr.Tarpit{}, web(true, w(be1, 1), w(be2, 1)), udp)
	seen := map[[6]byte]int{}
	for i := range 64 {
		in := tcp(uint16(40000+i), 80)
		mac := forwarded(t, f, in)
		seen[mac]++
		// The same flow, later: the same backend.
		if again := forwarded(t, f, pkt{sport: uint16(40000 + i), dport: 80, flags: frame.FlagACK, payload: "GET /"}.build()); again != mac {
			t.Fatalf("flow %d moved from %x to %x", i, mac, again)
		}
		forwarded(t, f, pkt{proto: dsr.ProtoUDP, sport: uint16(40000 + i), dport: 53, payload: "query"}.build())
	}
	if len(seen) != 2 || seen[macOf(be1)] == 0 || seen[macOf(be2)] == 0 {
		t.Fatalf("backends chosen: %v", seen)
	}
	// One 802.1Q tag: forwarded with its tag.
	forwarded(t, f, pkt{vlans: []uint16{42}, sport: 1, dport: 80, flags: frame.FlagSYN}.build())

	st := f.Stats()
	if st.Received != 64*3+1 || st.Forwarded != st.Received || len(st.Drops) != 0 {
		t.Errorf("stats %+v", st)
	}
	var sum uint64
	for _, s := range st.Services {
		if s.NewFlows == 0 || s.Packets == 0 || s.Bytes == 0 || len(s.Backends) != 2 {
			t.Errorf("service %+v", s)
		}
		for _, b := range s.Backends {
			sum += b.Packets
		}
	}
	if web := st.Services[0]; web.NewFlows != 65 || web.Packets != 129 || sum != st.Forwarded {
		t.Errorf("web %+v; backend packets %d", web, sum)
	}

	// A Refresh that changes nothing reuses the Maglev tables; a change
	// makes a new one.
	table := func(i int) ebpf.MapID {
		var id ebpf.MapID
		if err := f.objs.Maglev.Lookup(tableIndex(f.gen, i), &id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	before := table(0)
	f.Refresh()
	if after := table(0); after != before {
		t.Errorf("Refresh made a new table (%d, was %d)", after, before)
	}
	if err := f.Update([]dsr.ServiceConfig{web(true, w(be1, 1), w(be2, 2)), udp}, dsr.Tarpit{}); err != nil {
		t.Fatal(err)
	}
	if after := table(0); after == before {
		t.Error("new weights, same table")
	}
}

// The program chooses what dsr's Maglev chooses for dsr's flow hash.
func TestProgSameChoiceAsDSR(t *testing.T) {
	nb := newNeighbors(be1, be2, be3)
	bs := []dsr.BackendConfig{w(be1, 1), w(be2, 2), w(be3, 3)}
	f := loaded(t, nb, nil, dsr.Tarpit{}, web(true, bs...), svc("sticky", 443, false, bs...))
	m := balance.NewMaglev([]string{be1.String(), be2.String(), be3.String()}, []int{1, 2, 3}, balance.MaglevSize)
	addrs := []netip.Addr{be1, be2, be3}
	for i := range 300 {
		src := netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		sport := uint16(1024 + 7*i)
		fl := frame.Flow{Src: src, Dst: vip, Proto: dsr.ProtoTCP, SrcPort: sport, DstPort: 80}
		want := macOf(addrs[m.Lookup(dsr.HashFlow(fl))])
		if got := forwarded(t, f, pkt{src: src, sport: sport, dport: 80, flags: frame.FlagSYN}.build()); got != want {
			t.Fatalf("flow %v: backend %x, dsr's choice %x", fl, got, want)
		}
		// Client-sticky: the flow key is the client, VIP and service port.
		fl = frame.Flow{Src: src, Dst: vip, Proto: dsr.ProtoTCP, DstPort: 443}
		want = macOf(addrs[m.Lookup(dsr.HashFlow(fl))])
		if got := forwarded(t, f, pkt{src: src, sport: sport, dport: 443, flags: frame.FlagSYN}.build()); got != want {
			t.Fatalf("sticky %v: backend %x, dsr's choice %x", fl, got, want)
		}
	}
}

func TestProgWeights(t *testing.T) {
	nb := newNeighbors(be1, be2)
	f := loaded(t, nb, nil, dsr.Tarpit{}, web(true, w(be1, 1), w(be2, 3)))
	n := map[[6]byte]int{}
	const flows = 4000
	for i := range flows {
		src := netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
		n[forwarded(t, f, pkt{src: src, sport: uint16(i), dport: 80, flags: frame.FlagSYN}.build())]++
	}
	if share := float64(n[macOf(be2)]) / flows; share < 0.7 || share > 0.8 {
		t.Errorf("weight 3 of 4 got %.2f of the flows (%v)", share, n)
	}
}

// Established flows keep their backend through reloads unless it is
// removed or goes down; drained backends keep theirs but get no new ones.
func TestProgUpdate(t *testing.T) {
	nb := newNeighbors(be1, be2, be3)
	var downBe atomic.Pointer[netip.Addr]
	down := func(_ string, a netip.Addr) bool { d := downBe.Load(); return d != nil && *d == a }
	f := loaded(t, nb, down, dsr.Tarpit{}, web(true, w(be1, 1), w(be2, 1)))
	flows := map[uint16][6]byte{}
	for i := range 200 {
		flows[uint16(i+1)] = forwarded(t, f, tcp(uint16(i+1), 80))
	}
	check := func(what string, moved func(old [6]byte) bool, forbidden [6]byte) {
		t.Helper()
		for sport, old := range flows {
			now := forwarded(t, f, tcp(sport, 80))
			if now == forbidden {
				t.Fatalf("%s: flow %d still on %x", what, sport, now)
			}
			if !moved(old) && now != old {
				t.Fatalf("%s: flow %d moved from %x to %x", what, sport, old, now)
			}
			flows[sport] = now
		}
	}
	// be3 joins: nothing moves.
	v6 := dsr.ServiceConfig{Name: "v6", VIP: netip.MustParseAddr("2001:db8::100"), Port: 80, Proto: dsr.ProtoTCP, Backends: []dsr.BackendConfig{w(be1, 1)}}
	if err := f.Update([]dsr.ServiceConfig{web(true, w(be1, 1), w(be2, 1), w(be3, 1)), v6}, dsr.Tarpit{}); err != nil {
		t.Fatal(err)
	}
	check("be3 added", func([6]byte) bool { return false }, [6]byte{})
	f.Refresh()
	if st := f.Stats(); len(st.Services) != 2 || st.Services[1].Name != "v6" || len(st.Services[1].Backends) != 1 {
		t.Errorf("an IPv6 service is listed (with zero counters): %+v", st.Services)
	}
	// be1 drained: its flows stay, new flows avoid it.
	if err := f.Update([]dsr.ServiceConfig{web(true, w(be1, 0), w(be2, 1), w(be3, 1))}, dsr.Tarpit{}); err != nil {
		t.Fatal(err)
	}
	check("be1 drained", func([6]byte) bool { return false }, [6]byte{})
	for i := range 100 {
		if mac := forwarded(t, f, tcp(uint16(5000+i), 80)); mac == macOf(be1) {
			t.Fatal("a new flow went to the drained backend")
		}
	}
	// be1 removed: its flows move, the others stay.
	if err := f.Update([]dsr.ServiceConfig{web(true, w(be2, 1), w(be3, 1))}, dsr.Tarpit{}); err != nil {
		t.Fatal(err)
	}
	check("be1 removed", func(old [6]byte) bool { return old == macOf(be1) }, macOf(be1))
	// be2 goes down (Refresh): its flows move.
	downBe.Store(&be2)
	f.Refresh()
	check("be2 down", func(old [6]byte) bool { return old == macOf(be2) }, macOf(be2))
	if st := f.Stats(); !st.Services[0].Backends[0].Down || st.Services[0].Backends[1].Down {
		t.Errorf("down flags %+v", st.Services[0].Backends)
	}
	// be2 back, be1 back as a new backend (a new generation):
	// be3's flows stay.
	downBe.Store(nil)
	if err := f.Update([]dsr.ServiceConfig{web(true, w(be2, 1), w(be3, 1), w(be1, 1))}, dsr.Tarpit{}); err != nil {
		t.Fatal(err)
	}
	check("be1 and be2 back", func([6]byte) bool { return false }, [6]byte{})
	// Every backend down: no backend.
	if err := f.Update([]dsr.ServiceConfig{web(true)}, dsr.Tarpit{}); err != nil {
		t.Fatal(err)
	}
	if ret, _ := run(t, f, tcp(1, 80)); ret != xdpDrop {
		t.Fatalf("no backends: %s", verdicts[ret])
	}
	if st := f.Stats(); st.Drops["no-backend"] != 1 || st.Services[0].NoBackend != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestProgPasses(t *testing.T) {
	nb := newNeighbors(be1)
	f := loaded(t, nb, nil, dsr.Tarpit{}, web(true, w(be1, 1)))
	arp := frame.AppendEthernet(nil, [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, clientMAC, nil, frame.EtherTypeARP)
	arp = frame.AppendARP(arp, 1, clientMAC, client, [6]byte{}, vip)
	v6 := frame.AppendEthernet(nil, lbMAC, clientMAC, nil, frame.EtherTypeIPv6)
	v6 = frame.AppendIPv6(v6, frame.IPv6Header{NextHeader: dsr.ProtoUDP, HopLimit: 64, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2")}, 8)
	v6 = frame.AppendUDP(v6, frame.UDPHeader{SrcPort: 1, DstPort: 80}, 0)
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"arp", arp},
		{"ipv6", v6},
		{"another address", pkt{dst: be1, sport: 1, dport: 80}.build()},
		{"the lb's own traffic", pkt{dst: netip.MustParseAddr("198.51.100.2"), sport: 1, dport: 22}.build()},
		{"another MAC", pkt{dstMAC: otherMAC, sport: 1, dport: 80}.build()},
		{"broadcast", pkt{dstMAC: [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, sport: 1, dport: 80}.build()},
		{"two tags", pkt{vlans: []uint16{1, 2}, sport: 1, dport: 80}.build()},
		{"short", pkt{sport: 1, dport: 80}.build()[:30]},
	} {
		ret, out := run(t, f, tc.in)
		if ret != xdpPass || !bytes.Equal(out, tc.in) {
			t.Errorf("%s: %s, frame changed %v", tc.name, verdicts[ret], !bytes.Equal(out, tc.in))
		}
	}
	if st := f.Stats(); st.Received != 2 || st.Drops["not-for-us"] != 2 || st.Forwarded != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestProgDrops(t *testing.T) {
	nb := newNeighbors(be1)
	noMAC := netip.MustParseAddr("198.51.100.99")
	f := loaded(t, nb, nil, dsr.Tarpit{}, web(true, w(be1, 1)), svc("nomac", 8080, true, w(noMAC, 1)))
	good := tcp(1, 80)
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"IHL 4", mod(func(b []byte) []byte { b[14] = 0x44; return b }), "malformed"},
		{"version 6", mod(func(b []byte) []byte { b[14] = 0x65; return b }), "malformed"},
		{"total length below IHL", mod(func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 19); return b }), "malformed"},
		{"truncated", good[:len(good)-1], "malformed"},
		{"total length past the frame", mod(func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 100); return b }), "malformed"},
		{"TCP data offset 4", mod(func(b []byte) []byte { b[34+12] = 0x40; return b }), "malformed"},
		{"TCP data offset past the segment", mod(func(b []byte) []byte { b[34+12] = 0xf0; return b }), "malformed"},
		{"short TCP header", mod(func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[16:], 20+10)
			return b[:14+30]
		}), "malformed"},
		{"UDP length", mod(func([]byte) []byte {
			b := pkt{proto: dsr.ProtoUDP, sport: 1, dport: 80, payload: "xx"}.build()
			binary.BigEndian.PutUint16(b[34+4:], 9)
			return b
		}), "malformed"},
		{"no service", tcp(1, 81), "no-service"},
		{"udp, tcp service", pkt{proto: dsr.ProtoUDP, sport: 1, dport: 80}.build(), "no-service"},
		{"unresolved", tcp(1, 8080), "unresolved"},
		{"echo request", func() []byte {
			b := frame.AppendEthernet(nil, lbMAC, clientMAC, nil, frame.EtherTypeIPv4)
			b = frame.AppendIPv4(b, frame.IPv4Header{TTL: 64, Proto: dsr.ProtoICMP, Src: client, Dst: vip}, 8)
			return frame.AppendICMP(b, 8, 0, 0)
		}(), "icmp"},
		{"gre", pkt{proto: 47, payload: "12345678"}.build(), "unsupported"},
	} {
		before := f.Stats().Drops[tc.want]
		ret, _ := run(t, f, tc.in)
		if ret != xdpDrop {
			t.Errorf("%s: %s, want drop", tc.name, verdicts[ret])
			continue
		}
		if got := f.Stats().Drops[tc.want]; got != before+1 {
			t.Errorf("%s: %s drops %d -> %d (%v)", tc.name, tc.want, before, got, f.Stats().Drops)
		}
	}
	if st := f.Stats(); st.Drops["malformed"] != 9 {
		t.Errorf("drops %v", st.Drops)
	}
	// The backend's MAC resolves: Run's refresh writes it.
	nb.add(noMAC)
	f.mu.Lock()
	f.refreshMACs(false)
	f.mu.Unlock()
	if mac := forwarded(t, f, tcp(1, 8080)); mac != macOf(noMAC) {
		t.Errorf("forwarded to %x", mac)
	}
}

// Fragments of a datagram go where the datagram's client-keyed flow goes;
// an ICMP error about a flow goes to the flow's backend.
func TestProgFragmentsAndICMP(t *testing.T) {
	nb := newNeighbors(be1, be2, be3)
	f := loaded(t, nb, nil, dsr.Tarpit{}, web(true, w(be1, 1), w(be2, 1), w(be3, 1)))
	for i := range 50 {
		src := netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		first := forwarded(t, f, pkt{src: src, proto: dsr.ProtoTCP, sport: 1000, dport: 80, frag: frame.IPv4MoreFragments, payload: "01234567"}.build())
		later := forwarded(t, f, pkt{src: src, proto: dsr.ProtoTCP, frag: 3, payload: "89abcdef"}.build())
		if first != later {
			t.Fatalf("client %s: first fragment to %x, later one to %x", src, first, later)
		}
		want := macOf([]netip.Addr{be1, be2, be3}[balance.NewMaglev([]string{be1.String(), be2.String(), be3.String()}, []int{1, 1, 1}, 0).Lookup(dsr.HashFlow(frame.Flow{Src: src, Dst: vip, Proto: dsr.ProtoTCP, DstPort: 80}))])
		if first != want {
			t.Fatalf("fragments to %x, want %x", first, want)
		}
	}
	// Fragmentation needed, from a router, about the backend's reply.
	for i := range 50 {
		sport := uint16(2000 + i)
		be := forwarded(t, f, tcp(sport, 80))
		quote := frame.AppendIPv4(nil, frame.IPv4Header{TTL: 64, Proto: dsr.ProtoTCP, Src: vip, Dst: client, FlagsFragment: frame.IPv4DontFragment}, 20)
		quote = frame.AppendTCP(quote, frame.TCPHeader{SrcPort: 80, DstPort: sport, Seq: 5, Flags: frame.FlagACK})
		b := frame.AppendEthernet(nil, lbMAC, clientMAC, nil, frame.EtherTypeIPv4)
		b = frame.AppendIPv4(b, frame.IPv4Header{TTL: 64, Proto: dsr.ProtoICMP, Src: netip.MustParseAddr("203.0.113.1"), Dst: vip}, 8+len(quote))
		b = frame.AppendICMP(b, 3, 4, 1400)
		b = append(b, quote...)
		if got := forwarded(t, f, b); got != be {
			t.Fatalf("ICMP about flow %d went to %x, the flow is on %x", sport, got, be)
		}
	}
}

func TestProgTarpit(t *testing.T) {
	nb := newNeighbors(be1)
	tp := dsr.Tarpit{Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.76/31"), netip.MustParsePrefix("198.51.100.100/32")}}
	f := loaded(t, nb, nil, tp, web(true, w(be1, 1)))
	trap := netip.MustParseAddr("198.51.100.77")
	for _, tc := range []struct {
		name string
		in   pkt
	}{
		{"syn", pkt{dst: trap, sport: 40000, dport: 22, flags: frame.FlagSYN}},
		{"syn with options and data", pkt{dst: trap, sport: 40001, dport: 80, flags: frame.FlagSYN, payload: "0123456789012345678901234567890123456789"}},
		{"tagged syn", pkt{vlans: []uint16{7}, dst: trap, sport: 40002, dport: 80, flags: frame.FlagSYN}},
	} {
		in := tc.in.build()
		ret, out := run(t, f, in)
		var fr frame.Frame
		if err := fr.Parse(in); err != nil {
			t.Fatal(err)
		}
		want, ok := tarpit.Reply(nil, &fr, lbMAC, f.secret)
		if !ok {
			t.Fatalf("%s: tarpit.Reply refuses", tc.name)
		}
		if ret != xdpTX || !bytes.Equal(out, want) {
			t.Errorf("%s: %s\n got %x\nwant %x", tc.name, verdicts[ret], out, want)
		}
		var rf frame.Frame
		if err := rf.Parse(out); err != nil {
			t.Fatalf("%s: reply: %v", tc.name, err)
		}
		if ipOK, l4OK := rf.VerifyChecksums(); !ipOK || !l4OK {
			t.Errorf("%s: checksums %v %v", tc.name, ipOK, l4OK)
		}
	}
	// Not SYNs; and the VIP's TCP service takes precedence over the tarpit.
	for _, in := range [][]byte{
		pkt{dst: trap, sport: 1, dport: 22, flags: frame.FlagACK}.build(),
		pkt{dst: trap, sport: 1, dport: 22, flags: frame.FlagSYN | frame.FlagACK}.build(),
		pkt{dst: trap, proto: dsr.ProtoUDP, sport: 1, dport: 53}.build(),
		pkt{src: netip.MustParseAddr("224.0.0.1"), dst: trap, sport: 1, dport: 22, flags: frame.FlagSYN}.build(),
	} {
		if ret, _ := run(t, f, in); ret != xdpDrop {
			t.Errorf("%x: %s, want drop", in, verdicts[ret])
		}
	}
	forwarded(t, f, tcp(1, 80))
	if ret, _ := run(t, f, tcp(1, 81)); ret != xdpDrop {
		t.Errorf("VIP port without a service: %s", verdicts[ret])
	}
	st := f.Stats()
	if st.TarpitReplies != 3 || st.Drops["tarpitted"] != 4 || st.Drops["no-service"] != 1 || st.Forwarded != 1 {
		t.Errorf("stats %+v", st)
	}
	// A reload without the tarpit: its frames pass.
	if err := f.Update([]dsr.ServiceConfig{web(true, w(be1, 1))}, dsr.Tarpit{}); err != nil {
		t.Fatal(err)
	}
	if ret, _ := run(t, f, pkt{dst: trap, sport: 1, dport: 22, flags: frame.FlagSYN}.build()); ret != xdpPass {
		t.Errorf("after the tarpit's removal: %s", verdicts[ret])
	}
}

func TestProgSetMAC(t *testing.T) {
	nb := newNeighbors(be1)
	f := loaded(t, nb, nil, dsr.Tarpit{}, web(true, w(be1, 1)))
	f.SetMAC(otherMAC)
	if f.MAC() != otherMAC {
		t.Fatalf("MAC %x", f.MAC())
	}
	if ret, _ := run(t, f, tcp(1, 80)); ret != xdpPass {
		t.Errorf("frame to the old MAC: %s", verdicts[ret])
	}
	ret, out := run(t, f, pkt{dstMAC: otherMAC, sport: 1, dport: 80, flags: frame.FlagSYN}.build())
	if ret != xdpTX || [6]byte(out[6:12]) != otherMAC {
		t.Errorf("frame to the new MAC: %s from %x", verdicts[ret], out[6:12])
	}
}

// Flows idle for longer than FlowIdle are forgotten (and chosen anew).
func TestProgFlowIdle(t *testing.T) {
	nb := newNeighbors(be1)
	f := loadedCfg(t, dsr.Config{FlowIdle: 200 * time.Millisecond}, nb, nil, dsr.Tarpit{}, web(true, w(be1, 1)))
	newFlows := func() uint64 { return f.Stats().Services[0].NewFlows }
	forwarded(t, f, tcp(1, 80))
	forwarded(t, f, tcp(1, 80))
	if n := newFlows(); n != 1 {
		t.Fatalf("%d new flows, want 1", n)
	}
	time.Sleep(300 * time.Millisecond)
	forwarded(t, f, tcp(1, 80))
	if n := newFlows(); n != 2 {
		t.Fatalf("%d new flows after the idle time, want 2", n)
	}
}

// The cost of the program per frame (BPF_PROG_RUN: no driver, no copy to
// the wire) for a frame of an established flow, and for the LB's own
// traffic. The run repeats on the frame it rewrote, so the backend has the
// LB's MAC here: every run forwards.
func BenchmarkProg(b *testing.B) {
	nb := newNeighbors()
	m := map[netip.Addr][6]byte{be1: lbMAC}
	nb.macs.Store(&m)
	f := loaded(b, nb, nil, dsr.Tarpit{}, web(true, w(be1, 1)))
	b.Run("established", func(b *testing.B) {
		in := pkt{sport: 1, dport: 80, flags: frame.FlagACK, payload: string(make([]byte, 1400))}.build()
		ret, d, err := f.objs.XdpDsr.Benchmark(in, b.N, b.ResetTimer)
		if err != nil || ret != xdpTX {
			b.Fatalf("%v %s", err, verdicts[ret])
		}
		b.ReportMetric(float64(d.Nanoseconds()), "ns/frame")
	})
	b.Run("pass", func(b *testing.B) {
		in := pkt{dst: be1, sport: 1, dport: 22, flags: frame.FlagACK}.build()
		ret, d, err := f.objs.XdpDsr.Benchmark(in, b.N, b.ResetTimer)
		if err != nil || ret != xdpPass {
			b.Fatalf("%v %s", err, verdicts[ret])
		}
		b.ReportMetric(float64(d.Nanoseconds()), "ns/frame")
	})
}
