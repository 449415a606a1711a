package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
)

// Network is the appliance's own address: the [network] table. lbd applies
// it only in appliance mode (-state); elsewhere it is validated and ignored,
// so that a config copied to a developer's machine never changes that
// machine's network.
type Network struct {
	// Interface is the network interface, e.g. "eth0".
	Interface string
	// Mode is NetworkDHCP (the address is left to gokrazy's DHCP client;
	// lbd changes nothing) or NetworkStatic.
	Mode NetworkMode
	// Address is the IPv4 address with its prefix length, e.g.
	// 10.0.0.5/24; the zero Prefix means none. Static mode only.
	Address netip.Prefix
	// Gateway is the IPv4 default gateway, inside Address's network; the
	// zero Addr means no IPv4 default route. Static mode only.
	Gateway netip.Addr
	// Address6 is the IPv6 address with its prefix length, e.g.
	// 2001:db8::5/64; the zero Prefix means none. Static mode only.
	Address6 netip.Prefix
	// Gateway6 is the IPv6 default gateway: link-local (fe80::1) or inside
	// Address6's network; the zero Addr means no IPv6 default route.
	// Static mode only.
	Gateway6 netip.Addr
	// DNS are the name servers written to the resolver file, at most
	// MaxNameServers. Static mode only.
	DNS []netip.Addr
}

// NetworkMode is how the appliance gets its address.
type NetworkMode int

// Network modes.
const (
	// NetworkDHCP leaves the interface to gokrazy's DHCP client.
	NetworkDHCP NetworkMode = iota
	// NetworkStatic makes lbd set the address, default routes and name
	// servers itself, and nib's gokrazy init keep gokrazy's DHCP client off
	// the interface.
	NetworkStatic
)

var networkModeNames = []string{NetworkDHCP: "dhcp", NetworkStatic: "static"}

// String returns the mode as written in the file: "dhcp" or "static".
func (m NetworkMode) String() string { return enumString(networkModeNames, int(m), "NetworkMode") }

// MaxNameServers is the most name servers [network] takes: the resolver
// file's limit (glibc's MAXNS) that other programs reading it keep to.
const MaxNameServers = 3

// IsStatic reports whether n asks for a static address. A nil n (no
// [network] table) is DHCP.
func (n *Network) IsStatic() bool { return n != nil && n.Mode == NetworkStatic }

// Clone returns a deep copy of n.
func (n *Network) Clone() *Network {
	if n == nil {
		return nil
	}
	c := *n
	c.DNS = slices.Clone(n.DNS)
	return &c
}

// Equal reports whether n and o are the same configuration.
func (n *Network) Equal(o *Network) bool {
	if n == nil || o == nil {
		return n == o
	}
	return n.Interface == o.Interface && n.Mode == o.Mode &&
		n.Address == o.Address && n.Gateway == o.Gateway &&
		n.Address6 == o.Address6 && n.Gateway6 == o.Gateway6 &&
		slices.Equal(n.DNS, o.DNS)
}

// rawNetwork is [network].
type rawNetwork struct {
	Interface *string  `toml:"interface,omitempty"`
	Mode      *string  `toml:"mode,omitempty"`
	Address   string   `toml:"address,omitempty"`
	Gateway   string   `toml:"gateway,omitempty"`
	Address6  string   `toml:"address6,omitempty"`
	Gateway6  string   `toml:"gateway6,omitempty"`
	DNS       []string `toml:"dns,omitempty"`
}

// network converts [network], starting from NewNetwork's defaults.
func (rn *rawNetwork) network(errs *errList) *Network {
	n := NewNetwork()
	if rn.Interface != nil {
		n.Interface = *rn.Interface
	}
	if rn.Mode != nil {
		n.Mode = NetworkMode(parseName(errs, "network.mode", *rn.Mode, networkModeNames))
	}
	n.Address = parseHostPrefix(errs, "network.address", rn.Address)
	n.Gateway = parseNetworkAddr(errs, "network.gateway", rn.Gateway)
	n.Address6 = parseHostPrefix(errs, "network.address6", rn.Address6)
	n.Gateway6 = parseNetworkAddr(errs, "network.gateway6", rn.Gateway6)
	for i, s := range rn.DNS {
		// A bad entry stays as the zero Addr, which keeps the indices of
		// later entries those of the file.
		n.DNS = append(n.DNS, parseNetworkAddr(errs, "network.dns["+strconv.Itoa(i)+"]", s))
	}
	return n
}

// parseHostPrefix parses an interface address written with its prefix
// length, host bits kept: "10.0.0.5/24".
func parseHostPrefix(errs *errList, key, s string) netip.Prefix {
	if s == "" {
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if a, aerr := netip.ParseAddr(s); aerr == nil && a.Zone() == "" {
			example := "/24"
			if a.Is6() {
				example = "/64"
			}
			errs.add(key, "%q needs its prefix length, e.g. \"%s%s\"", s, s, example)
		} else {
			errs.add(key, "%q is not an address with a prefix length such as \"10.0.0.5/24\"", s)
		}
	}
	return p
}

// parseNetworkAddr parses a gateway or name server: a literal IP without a
// zone (the zone is the interface).
func parseNetworkAddr(errs *errList, key, s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		errs.add(key, "%q is not an ip address", s)
		return netip.Addr{}
	}
	return a
}

// rawNetworkOf is the [network] table Marshal writes: interface and mode
// always, the rest when set.
func rawNetworkOf(errs *errList, n *Network) *rawNetwork {
	if n == nil {
		return nil
	}
	rn := &rawNetwork{
		Interface: ptr(n.Interface),
		Mode:      ptr(enumValue(errs, "network.mode", networkModeNames, int(n.Mode))),
		Address:   formatPrefixOrNone(n.Address),
		Gateway:   formatAddrOrNone(n.Gateway),
		Address6:  formatPrefixOrNone(n.Address6),
		Gateway6:  formatAddrOrNone(n.Gateway6),
	}
	for _, a := range n.DNS {
		rn.DNS = append(rn.DNS, formatAddrOrNone(a))
	}
	return rn
}

func formatPrefixOrNone(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func formatAddrOrNone(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// network checks [network].
func (v *validator) network() {
	n := v.c.Network
	if n == nil {
		return
	}
	if err := CheckInterface(n.Interface); err != nil {
		v.add("network.interface", "%v", err)
	}
	switch n.Mode {
	case NetworkDHCP:
		for _, k := range []struct {
			key string
			set bool
		}{
			{"address", n.Address.IsValid()},
			{"gateway", n.Gateway.IsValid()},
			{"address6", n.Address6.IsValid()},
			{"gateway6", n.Gateway6.IsValid()},
			{"dns", len(n.DNS) > 0},
		} {
			if k.set {
				v.add("network."+k.key, "is only used with mode \"static\" (mode is \"dhcp\", the default)")
			}
		}
		return
	case NetworkStatic:
	default:
		v.add("network.mode", "unknown mode %d", n.Mode)
		return
	}
	if !n.Address.IsValid() && !n.Address6.IsValid() {
		v.add("network.address", "mode \"static\" needs an address, e.g. \"10.0.0.5/24\" (or address6)")
	}
	switch {
	case n.Address.IsValid():
		if v.hostPrefix("network.address", n.Address, false) {
			v.gateway("network.gateway", n.Gateway, n.Address, "address", false)
		}
	case n.Gateway.IsValid():
		v.add("network.gateway", "needs address: a gateway must be inside the address's network")
	}
	if n.Address6.IsValid() {
		if v.hostPrefix("network.address6", n.Address6, true) {
			v.gateway("network.gateway6", n.Gateway6, n.Address6, "address6", true)
		}
	} else if g := n.Gateway6; g.IsValid() {
		if v.gatewayAddr("network.gateway6", g, true) && !g.IsLinkLocalUnicast() {
			v.add("network.gateway6", "%s must be link-local (fe80::/10) or inside address6's network, and address6 is not set", g)
		}
	}
	if len(n.DNS) > MaxNameServers {
		v.add("network.dns", "%d name servers; the resolver file takes at most %d", len(n.DNS), MaxNameServers)
	}
	seen := make(map[netip.Addr]int)
	for i, a := range n.DNS {
		key := "network.dns[" + strconv.Itoa(i) + "]"
		switch {
		case !a.IsValid():
			v.add(key, "an ip address is required")
		case a.Zone() != "":
			v.add(key, "%s: a name server cannot have a zone", a)
		case a.IsUnspecified() || a.IsMulticast():
			v.add(key, "%s is not a name server's address", a)
		default:
			if j, dup := seen[a]; dup {
				v.add(key, "%s is already dns[%d]", a, j)
			} else {
				seen[a] = i
			}
		}
	}
}

// hostPrefix checks an interface address: of the right family, a unicast
// address that can be a host's, with its prefix length.
func (v *validator) hostPrefix(key string, p netip.Prefix, six bool) bool {
	a := p.Addr()
	want, other := "IPv4", "address6"
	if six {
		want, other = "IPv6", "address"
	}
	switch {
	case a.Zone() != "":
		v.add(key, "%s: an address cannot have a zone; the interface is set by interface", p)
	case six != a.Is6() || a.Is4In6():
		v.add(key, "%s is not an %s address (use %s for the other family)", p, want, other)
	case a.IsUnspecified(), a.IsMulticast(), a.IsLoopback(), !six && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		v.add(key, "%s is not a host's address", a)
	case six && a.IsLinkLocalUnicast():
		v.add(key, "%s is link-local: the kernel sets the interface's link-local address itself", a)
	case p.Bits() == 0:
		v.add(key, "%s: a prefix length of 0 is not a network", p)
	case !six && p.Bits() <= 30 && a == p.Masked().Addr():
		v.add(key, "%s is the network's own address, not a host's: write this host's address, e.g. %s", p, example(p))
	case !six && p.Bits() <= 30 && a == broadcast(p):
		v.add(key, "%s is the network's broadcast address, not a host's", p)
	default:
		return true
	}
	return false
}

// gateway checks a default gateway against the interface address p.
func (v *validator) gateway(key string, g netip.Addr, p netip.Prefix, pkey string, six bool) {
	if !g.IsValid() || !v.gatewayAddr(key, g, six) {
		return
	}
	switch {
	case six && g.IsLinkLocalUnicast():
	case !p.Masked().Contains(g):
		v.add(key, "%s is not inside %s's network %s: a gateway must be on the link", g, pkey, p.Masked())
	case g == p.Addr():
		v.add(key, "%s is the address itself, not a gateway", g)
	case !six && p.Bits() <= 30 && (g == p.Masked().Addr() || g == broadcast(p)):
		v.add(key, "%s is not a host on %s", g, p.Masked())
	}
}

// gatewayAddr checks what every gateway must be: of the family, unicast,
// without a zone.
func (v *validator) gatewayAddr(key string, g netip.Addr, six bool) bool {
	want := "IPv4"
	if six {
		want = "IPv6"
	}
	switch {
	case g.Zone() != "":
		v.add(key, "%s: a gateway cannot have a zone; the interface is set by interface", g)
	case six != g.Is6() || g.Is4In6():
		v.add(key, "%s is not an %s address", g, want)
	case g.IsUnspecified() || g.IsMulticast() || g.IsLoopback():
		v.add(key, "%s is not a gateway's address", g)
	default:
		return true
	}
	return false
}

// broadcast is an IPv4 network's broadcast address.
func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

// example is the first host address of p's network, with p's length.
func example(p netip.Prefix) string {
	return netip.PrefixFrom(p.Masked().Addr().Next(), p.Bits()).String()
}

// networkSparesVIPs reports a DSR VIP that is also [network]'s address:
// lbd answers ARP for a VIP, so it must not be a local address.
func (v *validator) networkSparesVIPs() {
	n := v.c.Network
	if !n.IsStatic() {
		return
	}
	for _, d := range v.vips {
		for _, p := range []struct {
			key string
			p   netip.Prefix
		}{{"network.address", n.Address}, {"network.address6", n.Address6}} {
			if p.p.IsValid() && p.p.Addr() == d.addr.Addr() {
				v.add(d.key, "VIP %s is also %s: a DSR VIP must not be a local address of lbd", d.addr.Addr(), p.key)
			}
		}
	}
}

// String formats n for messages, e.g. "eth0 static 10.0.0.5/24 via 10.0.0.1".
func (n *Network) String() string {
	if n == nil {
		return "no [network] (DHCP)"
	}
	s := n.Interface + " " + n.Mode.String()
	if n.Mode != NetworkStatic {
		return s
	}
	if n.Address.IsValid() {
		s += " " + n.Address.String()
		if n.Gateway.IsValid() {
			s += " via " + n.Gateway.String()
		}
	}
	if n.Address6.IsValid() {
		s += " " + n.Address6.String()
	}
	if n.Gateway6.IsValid() {
		s += " via " + n.Gateway6.String()
	}
	if len(n.DNS) > 0 {
		s += fmt.Sprintf(" dns %v", n.DNS)
	}
	return s
}
