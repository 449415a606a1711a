package dsr

import (
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

// ethFrame builds a minimal Ethernet frame with the given tags carrying an
// IPv4 header to dst (or another ethertype).
func ethFrame(tags []uint16, etherType uint16, dst netip.Addr) []byte {
	b := make([]byte, 12)
	for _, tpid := range tags {
		b = append(b, byte(tpid>>8), byte(tpid), 0, 100)
	}
	b = append(b, byte(etherType>>8), byte(etherType))
	ip := make([]byte, 20)
	ip[0] = 0x45
	ip[9] = 6
	if dst.Is4() {
		d := dst.As4()
		copy(ip[16:], d[:])
	}
	return append(b, ip...)
}

func TestFilter(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.100")
	vip2 := netip.MustParseAddr("198.51.100.7")
	trap := netip.MustParsePrefix("192.0.2.64/28")
	raw, err := Filter([]netip.Addr{vip, vip2}, []netip.Prefix{trap})
	if err != nil {
		t.Fatal(err)
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("program does not disassemble")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"vip untagged", ethFrame(nil, 0x0800, vip), true},
		{"second vip", ethFrame(nil, 0x0800, vip2), true},
		{"vip 802.1Q", ethFrame([]uint16{0x8100}, 0x0800, vip), true},
		{"vip 802.1ad", ethFrame([]uint16{0x88a8}, 0x0800, vip), true},
		{"tarpit first", ethFrame(nil, 0x0800, a("192.0.2.64")), true},
		{"tarpit last", ethFrame(nil, 0x0800, a("192.0.2.79")), true},
		{"just outside tarpit", ethFrame(nil, 0x0800, a("192.0.2.80")), false},
		{"lb's own address", ethFrame(nil, 0x0800, a("192.0.2.2")), false},
		{"arp", ethFrame(nil, 0x0806, vip), false},
		{"ipv6", ethFrame(nil, 0x86dd, vip), false},
		{"tag with other inner type", ethFrame([]uint16{0x8100}, 0x0806, vip), false},
		{"truncated", ethFrame(nil, 0x0800, vip)[:20], false},
	} {
		n, err := vm.Run(tc.frame)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := n > 0; got != tc.want {
			t.Errorf("%s: accepted=%v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestFilterLimits(t *testing.T) {
	var vips []netip.Addr
	for i := range maxFilterMatches {
		vips = append(vips, netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
	}
	raw, err := Filter(vips, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > 4096 {
		t.Fatalf("%d instructions, over the kernel limit", len(raw))
	}
	insns, _ := bpf.Disassemble(raw)
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	// The last address still matches: the long jump works.
	if n, _ := vm.Run(ethFrame(nil, 0x0800, vips[len(vips)-1])); n == 0 {
		t.Fatal("last of many addresses rejected")
	}
	if _, err := Filter(append(vips, netip.MustParseAddr("10.9.9.9")), nil); err == nil {
		t.Fatal("no error past the limit")
	}
}
