package config

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// A dummy makes each case a valid config apart from [network].
const networkDummy = `
[[dummy]]
listen = "127.0.0.1:8081"
`

func dummyConfig(n *Network) *Config {
	return &Config{Network: n, Dummies: []Dummy{{Listen: ap("127.0.0.1:8081")}}}
}

var networkGoodTests = []struct {
	name string
	in   string
	want *Config
}{
	{
		name: "no table: nil, DHCP",
		in:   networkDummy,
		want: dummyConfig(nil),
	},
	{
		name: "empty table: defaults",
		in:   "[network]\n" + networkDummy,
		want: dummyConfig(&Network{Interface: "eth0", Mode: NetworkDHCP}),
	},
	{
		name: "dhcp on another interface",
		in:   "[network]\ninterface = \"wlan0\"\nmode = \"dhcp\"\n" + networkDummy,
		want: dummyConfig(&Network{Interface: "wlan0", Mode: NetworkDHCP}),
	},
	{
		name: "static IPv4",
		in: `[network]
mode = "static"
address = "10.0.0.5/24"
gateway = "10.0.0.1"
dns = ["10.0.0.1", "9.9.9.9"]
` + networkDummy,
		want: dummyConfig(&Network{
			Interface: "eth0", Mode: NetworkStatic,
			Address: pfx("10.0.0.5/24"), Gateway: addr("10.0.0.1"),
			DNS: []netip.Addr{addr("10.0.0.1"), addr("9.9.9.9")},
		}),
	},
	{
		name: "static without gateway or dns",
		in:   "[network]\nmode = \"static\"\naddress = \"203.0.113.7/32\"\n" + networkDummy,
		want: dummyConfig(&Network{Interface: "eth0", Mode: NetworkStatic, Address: pfx("203.0.113.7/32")}),
	},
	{
		name: "/31 point to point: both addresses are hosts",
		in:   "[network]\nmode = \"static\"\naddress = \"10.0.0.0/31\"\ngateway = \"10.0.0.1\"\n" + networkDummy,
		want: dummyConfig(&Network{Interface: "eth0", Mode: NetworkStatic, Address: pfx("10.0.0.0/31"), Gateway: addr("10.0.0.1")}),
	},
	{
		name: "dual stack, link-local IPv6 gateway",
		in: `[network]
interface = "end0"
mode = "static"
address = "10.0.0.5/24"
gateway = "10.0.0.1"
address6 = "2001:db8::5/64"
gateway6 = "fe80::1"
dns = ["2001:db8::53"]
` + networkDummy,
		want: dummyConfig(&Network{
			Interface: "end0", Mode: NetworkStatic,
			Address: pfx("10.0.0.5/24"), Gateway: addr("10.0.0.1"),
			Address6: pfx("2001:db8::5/64"), Gateway6: addr("fe80::1"),
			DNS: []netip.Addr{addr("2001:db8::53")},
		}),
	},
	{
		name: "IPv6 only, global gateway inside address6",
		in:   "[network]\nmode = \"static\"\naddress6 = \"2001:db8:1::5/48\"\ngateway6 = \"2001:db8:1::1\"\n" + networkDummy,
		want: dummyConfig(&Network{Interface: "eth0", Mode: NetworkStatic, Address6: pfx("2001:db8:1::5/48"), Gateway6: addr("2001:db8:1::1")}),
	},
	{
		name: "IPv6 gateway without address6: link-local",
		in:   "[network]\nmode = \"static\"\naddress = \"10.0.0.5/8\"\ngateway6 = \"fe80::1\"\n" + networkDummy,
		want: dummyConfig(&Network{Interface: "eth0", Mode: NetworkStatic, Address: pfx("10.0.0.5/8"), Gateway6: addr("fe80::1")}),
	},
}

func TestParseNetwork(t *testing.T) {
	for _, tt := range networkGoodTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("lbd.toml", []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpOpts...); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
			roundTrip(t, got)
		})
	}
}

func TestParseNetworkBad(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   string
		want []string
	}{
		{
			name: "dhcp keys need static",
			in: `[network]
address = "10.0.0.5/24"
gateway = "10.0.0.1"
address6 = "2001:db8::5/64"
gateway6 = "fe80::1"
dns = ["10.0.0.1"]
`,
			want: []string{
				`lbd.toml:2:11: network.address: is only used with mode "static" (mode is "dhcp", the default)`,
				`lbd.toml:3:11: network.gateway: is only used with mode "static" (mode is "dhcp", the default)`,
				`lbd.toml:4:12: network.address6: is only used with mode "static" (mode is "dhcp", the default)`,
				`lbd.toml:5:12: network.gateway6: is only used with mode "static" (mode is "dhcp", the default)`,
				`lbd.toml:6:1: network.dns: is only used with mode "static" (mode is "dhcp", the default)`,
			},
		},
		{
			name: "unknown key, mode and interface",
			in:   "[network]\ninterface = \"eth0:1\"\nmode = \"manual\"\nnetmask = \"255.255.255.0\"\n",
			want: []string{`lbd.toml:4:1: network.netmask: unknown key`},
		},
		{
			name: "bad mode and interface",
			in:   "[network]\ninterface = \"\"\nmode = \"manual\"\n",
			want: []string{
				`lbd.toml:2:13: network.interface: "" is not a Linux interface name (1 to 15 characters, no '/', ':' or white space)`,
				`lbd.toml:3:8: network.mode: "manual" must be one of "dhcp", "static"`,
			},
		},
		{
			name: "static needs an address",
			in:   "[network]\nmode = \"static\"\ngateway = \"10.0.0.1\"\n",
			want: []string{
				`lbd.toml:1:2: network.address: mode "static" needs an address, e.g. "10.0.0.5/24" (or address6)`,
				`lbd.toml:3:11: network.gateway: needs address: a gateway must be inside the address's network`,
			},
		},
		{
			name: "addresses that do not parse",
			in: `[network]
mode = "static"
address = "10.0.0.5"
gateway = "10.0.0.256"
address6 = "2001:db8::5"
gateway6 = "router"
dns = ["10.0.0.1", "ns1.example.com", "10.0.0.1"]
`,
			want: []string{
				`lbd.toml:3:11: network.address: "10.0.0.5" needs its prefix length, e.g. "10.0.0.5/24"`,
				`lbd.toml:4:11: network.gateway: "10.0.0.256" is not an ip address`,
				`lbd.toml:5:12: network.address6: "2001:db8::5" needs its prefix length, e.g. "2001:db8::5/64"`,
				`lbd.toml:6:12: network.gateway6: "router" is not an ip address`,
				`lbd.toml:7:20: network.dns[1]: "ns1.example.com" is not an ip address`,
				`lbd.toml:7:39: network.dns[2]: 10.0.0.1 is already dns[0]`,
			},
		},
		{
			name: "the network's address instead of the host's",
			in:   "[network]\nmode = \"static\"\naddress = \"10.0.0.0/24\"\ngateway = \"10.0.0.1\"\n",
			want: []string{`lbd.toml:3:11: network.address: 10.0.0.0/24 is the network's own address, not a host's: write this host's address, e.g. 10.0.0.1/24`},
		},
		{
			name: "gateways off the link",
			in: `[network]
mode = "static"
address = "10.0.0.5/24"
gateway = "10.0.1.1"
address6 = "2001:db8::5/64"
gateway6 = "2001:db8:1::1"
`,
			want: []string{
				`lbd.toml:4:11: network.gateway: 10.0.1.1 is not inside address's network 10.0.0.0/24: a gateway must be on the link`,
				`lbd.toml:6:12: network.gateway6: 2001:db8:1::1 is not inside address6's network 2001:db8::/64: a gateway must be on the link`,
			},
		},
		{
			name: "gateway is the address, the broadcast",
			in:   "[network]\nmode = \"static\"\naddress = \"10.0.0.5/24\"\ngateway = \"10.0.0.5\"\n",
			want: []string{`lbd.toml:4:11: network.gateway: 10.0.0.5 is the address itself, not a gateway`},
		},
		{
			name: "gateway is the broadcast address",
			in:   "[network]\nmode = \"static\"\naddress = \"10.0.0.5/24\"\ngateway = \"10.0.0.255\"\n",
			want: []string{`lbd.toml:4:11: network.gateway: 10.0.0.255 is not a host on 10.0.0.0/24`},
		},
		{
			name: "wrong families",
			in: `[network]
mode = "static"
address = "2001:db8::5/64"
address6 = "10.0.0.5/24"
gateway6 = "10.0.0.1"
`,
			want: []string{
				`lbd.toml:3:11: network.address: 2001:db8::5/64 is not an IPv4 address (use address6 for the other family)`,
				`lbd.toml:4:12: network.address6: 10.0.0.5/24 is not an IPv6 address (use address for the other family)`,
			},
		},
		{
			name: "IPv6 global gateway without address6",
			in:   "[network]\nmode = \"static\"\naddress = \"10.0.0.5/24\"\ngateway6 = \"2001:db8::1\"\n",
			want: []string{`lbd.toml:4:12: network.gateway6: 2001:db8::1 must be link-local (fe80::/10) or inside address6's network, and address6 is not set`},
		},
		{
			name: "not host addresses",
			in: `[network]
mode = "static"
address = "127.0.0.5/8"
address6 = "fe80::5/64"
gateway6 = "ff02::1"
`,
			want: []string{
				`lbd.toml:3:11: network.address: 127.0.0.5 is not a host's address`,
				`lbd.toml:4:12: network.address6: fe80::5 is link-local: the kernel sets the interface's link-local address itself`,
			},
		},
		{
			name: "zones and too many name servers",
			in: `[network]
mode = "static"
address6 = "2001:db8::5/64"
gateway6 = "fe80::1%eth0"
dns = ["fe80::53%eth0", "0.0.0.0", "10.0.0.1", "10.0.0.2"]
`,
			want: []string{
				`lbd.toml:4:12: network.gateway6: fe80::1%eth0: a gateway cannot have a zone; the interface is set by interface`,
				`lbd.toml:5:1: network.dns: 4 name servers; the resolver file takes at most 3`,
				`lbd.toml:5:8: network.dns[0]: fe80::53%eth0: a name server cannot have a zone`,
				`lbd.toml:5:25: network.dns[1]: 0.0.0.0 is not a name server's address`,
			},
		},
		{
			name: "dns must be an array",
			in:   "[network]\nmode = \"static\"\naddress = \"10.0.0.5/24\"\ndns = \"10.0.0.1\"\n",
			want: []string{`lbd.toml:4:7: network.dns: expected an array of strings, not a TOML string`},
		},
		{
			name: "a DSR VIP that is the static address",
			in: `[network]
mode = "static"
address = "10.0.0.5/24"

[[service]]
name = "vip"
listen = "10.0.0.5:80"
mode = "dsr"
interface = "eth0"
[[service.backend]]
address = "10.0.0.21"
`,
			want: []string{`lbd.toml:7:10: service[0].listen: VIP 10.0.0.5 is also network.address: a DSR VIP must not be a local address of lbd`},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			if !strings.Contains(in, "[[service]]") {
				in += networkDummy
			}
			c, err := Parse("lbd.toml", []byte(in))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c.Network)
			}
			if diff := cmp.Diff(tt.want, errorLines(t, err)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateNetworkProgrammatic(t *testing.T) {
	c := dummyConfig(&Network{Interface: "eth0", Mode: 7})
	if err := Validate(c); err == nil || err.Error() != "network.mode: unknown mode 7" {
		t.Errorf("Validate(mode 7) = %v", err)
	}
	if _, err := Marshal(c); err == nil {
		t.Error("Marshal(mode 7) succeeded")
	}
	c.Network = &Network{Interface: "eth0", Mode: NetworkStatic, Address: pfx("10.0.0.5/24"), DNS: []netip.Addr{{}}}
	if err := Validate(c); err == nil || err.Error() != "network.dns[0]: an ip address is required" {
		t.Errorf("Validate(zero dns) = %v", err)
	}
}

func TestMarshalNetwork(t *testing.T) {
	c := dummyConfig(&Network{
		Interface: "eth0", Mode: NetworkStatic,
		Address: pfx("10.0.0.5/24"), Gateway: addr("10.0.0.1"),
		DNS: []netip.Addr{addr("10.0.0.1")},
	})
	out := roundTrip(t, c)
	want := `# lbd configuration, written by lbd. Every key is documented in nib's config/reference.toml.

[network]
interface = 'eth0'
mode = 'static'
address = '10.0.0.5/24'
gateway = '10.0.0.1'
dns = ['10.0.0.1']

[[dummy]]
listen = '127.0.0.1:8081'
body = ''
`
	if diff := cmp.Diff(want, string(out)); diff != "" {
		t.Errorf("Marshal (-want +got):\n%s", diff)
	}
	// DHCP writes its table too: a file that has one keeps it.
	out = roundTrip(t, dummyConfig(NewNetwork()))
	if !strings.Contains(string(out), "[network]\ninterface = 'eth0'\nmode = 'dhcp'\n") {
		t.Errorf("Marshal of the default [network]:\n%s", out)
	}
}

func TestNetworkCloneEqual(t *testing.T) {
	n := &Network{Interface: "eth0", Mode: NetworkStatic, Address: pfx("10.0.0.5/24"), DNS: []netip.Addr{addr("10.0.0.1")}}
	c := dummyConfig(n).Clone()
	if !c.Network.Equal(n) || c.Network == n {
		t.Fatalf("Clone: %+v", c.Network)
	}
	c.Network.DNS[0] = addr("10.0.0.2")
	if n.DNS[0] != addr("10.0.0.1") || c.Network.Equal(n) {
		t.Error("the clone shares DNS with the original")
	}
	var none *Network
	if !none.Equal(nil) || none.Equal(n) || n.Equal(nil) || none.Clone() != nil || none.IsStatic() || !n.IsStatic() {
		t.Error("nil Network")
	}
	for _, tt := range []struct {
		n    *Network
		want string
	}{
		{nil, "no [network] (DHCP)"},
		{NewNetwork(), "eth0 dhcp"},
		{n, "eth0 static 10.0.0.5/24 dns [10.0.0.1]"},
		{&Network{Interface: "eth0", Mode: NetworkStatic, Address: pfx("10.0.0.5/24"), Gateway: addr("10.0.0.1"), Address6: pfx("2001:db8::5/64"), Gateway6: addr("fe80::1")},
			"eth0 static 10.0.0.5/24 via 10.0.0.1 2001:db8::5/64 via fe80::1"},
	} {
		if got := tt.n.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
	if NetworkStatic.String() != "static" || NetworkMode(5).String() != "NetworkMode(5)" {
		t.Error("NetworkMode.String")
	}
}

// The reference documents [network] with every key set (TestParseReference
// checks that each key has a comment).
func TestReferenceNetwork(t *testing.T) {
	data, err := os.ReadFile("reference.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("reference.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	n := c.Network
	if !n.IsStatic() || !n.Address.IsValid() || !n.Gateway.IsValid() || !n.Address6.IsValid() || !n.Gateway6.IsValid() || len(n.DNS) == 0 {
		t.Errorf("reference.toml's [network] does not show every key: %v", n)
	}
}

func TestBroadcast(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.5/24": "10.0.0.255", "10.1.2.3/8": "10.255.255.255", "192.0.2.77/30": "192.0.2.79", "192.0.2.77/32": "192.0.2.77",
	} {
		if got := broadcast(pfx(in)); got != addr(want) {
			t.Errorf("broadcast(%s) = %s, want %s", in, got, want)
		}
	}
}
