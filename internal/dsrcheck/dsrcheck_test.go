package dsrcheck

import (
	"encoding/json"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	good := Options{Interface: "eth0", VIP: vipAddr, Port: 80, Backends: []netip.Addr{be1Addr, be2Addr}}
	many := make([]netip.Addr, MaxBackends+1)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	for _, tc := range []struct {
		name string
		edit func(*Options)
		err  string // "" for valid
	}{
		{"good", func(*Options) {}, ""},
		{"no port", func(o *Options) { o.Port = 0 }, ""},
		{"mapped addresses", func(o *Options) {
			o.VIP = netip.AddrFrom16(vipAddr.As16())
			o.Backends = []netip.Addr{netip.AddrFrom16(be1Addr.As16())}
		}, ""},
		{"most backends", func(o *Options) { o.Backends = many[:MaxBackends] }, ""},
		{"longest timeout", func(o *Options) { o.Timeout = MaxTimeout }, ""},
		{"no interface", func(o *Options) { o.Interface = "" }, "no interface"},
		{"no VIP", func(o *Options) { o.VIP = netip.Addr{} }, "no VIP"},
		{"IPv6 VIP", func(o *Options) { o.VIP = netip.MustParseAddr("2001:db8::1") }, "VIP 2001:db8::1 is IPv6: only IPv4"},
		{"multicast VIP", func(o *Options) { o.VIP = netip.MustParseAddr("224.0.0.1") }, "not a unicast"},
		{"no backends", func(o *Options) { o.Backends = nil }, "no backends"},
		{"too many backends", func(o *Options) { o.Backends = many }, "at most 256"},
		{"IPv6 backend", func(o *Options) { o.Backends = []netip.Addr{netip.MustParseAddr("2001:db8::2")} }, "not IPv4"},
		{"zero backend", func(o *Options) { o.Backends = []netip.Addr{{}} }, "missing"},
		{"unspecified backend", func(o *Options) { o.Backends = []netip.Addr{netip.IPv4Unspecified()} }, "not a unicast"},
		{"backend is the VIP", func(o *Options) { o.Backends = []netip.Addr{vipAddr} }, "is the VIP"},
		{"backend twice", func(o *Options) { o.Backends = []netip.Addr{be1Addr, be2Addr, be1Addr} }, "198.51.100.21 is listed twice"},
		{"negative timeout", func(o *Options) { o.Timeout = -time.Second }, "timeout"},
		{"timeout too long", func(o *Options) { o.Timeout = MaxTimeout + 1 }, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			o.Backends = append([]netip.Addr(nil), good.Backends...)
			tc.edit(&o)
			err := o.Validate()
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("Validate() = %v, want %q", err, tc.err)
			}
		})
	}
	n := Options{Interface: "eth0", VIP: netip.AddrFrom16(vipAddr.As16()), Backends: []netip.Addr{netip.AddrFrom16(be1Addr.As16())}}.normalized()
	if n.VIP != vipAddr || n.Backends[0] != be1Addr || n.Timeout != DefaultTimeout {
		t.Errorf("normalized: %+v", n)
	}
}

func TestVerdictWords(t *testing.T) {
	want := map[Verdict]string{OK: "ok", ARPLeak: "arp leak", VIPNotBound: "vip not bound", NotListening: "not listening", Unreachable: "unreachable"}
	for v, w := range want {
		if v.String() != w {
			t.Errorf("%d.String() = %q, want %q", int(v), v.String(), w)
		}
		if b, err := v.MarshalText(); err != nil || string(b) != w {
			t.Errorf("%d.MarshalText() = %q, %v", int(v), b, err)
		}
	}
	if s := Verdict(99).String(); s != "verdict(99)" {
		t.Errorf("unknown verdict: %q", s)
	}
	if _, err := Verdict(-1).MarshalText(); err == nil {
		t.Error("unknown verdict marshalled")
	}
	b, err := json.Marshal(Result{Backend: be1Addr, Verdict: ARPLeak})
	if err != nil || !strings.Contains(string(b), `"Verdict":"arp leak"`) {
		t.Errorf("JSON %s, %v", b, err)
	}
}

func TestReport(t *testing.T) {
	mac := net.HardwareAddr(beMAC[:])
	rep := Report{VIP: vipAddr, Results: []Result{
		{Backend: be1Addr, MAC: mac, Verdict: OK, Detail: "SYN+ACK from 198.51.100.100:80"},
		{Backend: be2Addr, Verdict: Unreachable, Detail: "no ARP reply"},
	}, Others: []string{"02:00:c6:33:64:0a"}}
	var b strings.Builder
	n, err := rep.WriteTo(&b)
	if err != nil || n != int64(b.Len()) {
		t.Fatalf("WriteTo = %d, %v; wrote %d", n, err, b.Len())
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	want := []string{
		"198.51.100.21 02:00:c6:33:64:15 ok: SYN+ACK from 198.51.100.100:80",
		"198.51.100.22 - unreachable: no ARP reply; fix: check that the backend is up",
		"warning: 02:00:c6:33:64:0a answers ARP for the VIP 198.51.100.100 and is neither this host nor a checked backend",
	}
	if len(lines) != len(want) {
		t.Fatalf("lines:\n%s", b.String())
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("line %d: %q\nwant prefix %q", i, lines[i], want[i])
		}
	}
	if lines[0] != want[0] {
		t.Errorf("an ok line carries advice: %q", lines[0])
	}
	if got := rep.Lines(); !slices.Equal(got, lines) {
		t.Errorf("Lines() = %q, want what WriteTo wrote", got)
	}
	if got := (Report{}).Lines(); got == nil || len(got) != 0 {
		t.Errorf("empty report: Lines() = %#v, want an empty, non-nil slice (JSON [])", got)
	}
	if rep.OK() {
		t.Error("OK() with an unreachable backend")
	}
	rep.Results = rep.Results[:1]
	if !rep.OK() {
		t.Error("not OK() with every backend ok (warnings do not count)")
	}
	for v := ARPLeak; v <= Unreachable; v++ {
		if s := (Result{Backend: be1Addr, MAC: mac, Verdict: v, Detail: "d"}).String(); !strings.Contains(s, " "+v.String()+": d; fix: ") {
			t.Errorf("%v line without advice: %q", v, s)
		}
	}
}

func TestPickSource(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name     string
		prefixes []netip.Prefix
		near     []netip.Addr
		want     string // "" for none
	}{
		{"one", []netip.Prefix{p("198.51.100.2/24")}, []netip.Addr{be1Addr}, "198.51.100.2"},
		{"the backends' subnet", []netip.Prefix{p("10.0.0.1/8"), p("198.51.100.2/24")}, []netip.Addr{be1Addr}, "198.51.100.2"},
		{"first near wins", []netip.Prefix{p("10.0.0.1/8"), p("198.51.100.2/24")}, []netip.Addr{netip.MustParseAddr("10.1.1.1"), be1Addr}, "10.0.0.1"},
		{"none near: first", []netip.Prefix{p("10.0.0.1/8"), p("192.168.1.1/24")}, []netip.Addr{be1Addr}, "10.0.0.1"},
		{"never the VIP", []netip.Prefix{p("198.51.100.100/32"), p("198.51.100.2/24")}, []netip.Addr{vipAddr}, "198.51.100.2"},
		{"only the VIP", []netip.Prefix{p("198.51.100.100/24")}, []netip.Addr{be1Addr}, ""},
		{"none", nil, []netip.Addr{be1Addr}, ""},
	} {
		got, ok := pickSource(tc.prefixes, vipAddr, tc.near)
		if tc.want == "" && ok || tc.want != "" && (!ok || got.String() != tc.want) {
			t.Errorf("%s: pickSource = %v, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}

func TestProbeVIPArguments(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		vip  netip.Addr
		port uint16
		mac  net.HardwareAddr
		to   time.Duration
		err  string
	}{
		{"IPv6", netip.MustParseAddr("2001:db8::1"), 80, beMAC[:], 0, "IPv6"},
		{"no port", vipAddr, 0, beMAC[:], 0, "no port"},
		{"short MAC", vipAddr, 80, beMAC[:4], 0, "not a unicast Ethernet address"},
		{"broadcast MAC", vipAddr, 80, broadcast[:], 0, "not a unicast Ethernet address"},
		{"timeout", vipAddr, 80, beMAC[:], time.Hour, "timeout"},
	} {
		_, _, err := ProbeVIP(ctx, "nib-no-such0", tc.vip, tc.port, tc.mac, tc.to)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
		}
	}
	if _, _, err := ProbeVIP(ctx, "nib-no-such0", vipAddr, 80, beMAC[:], 0); err == nil || !strings.Contains(err.Error(), "nib-no-such0") {
		t.Errorf("missing interface: %v", err)
	}
	if _, err := Check(ctx, Options{Interface: "nib-no-such0", VIP: vipAddr, Backends: []netip.Addr{be1Addr}}); err == nil || !strings.Contains(err.Error(), "nib-no-such0") {
		t.Errorf("Check on a missing interface: %v", err)
	}
	if _, err := Check(ctx, Options{Interface: "eth0", VIP: vipAddr}); err == nil || !strings.Contains(err.Error(), "no backends") {
		t.Errorf("Check without backends: %v", err)
	}
}
