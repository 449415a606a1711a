package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"unicode"
)

// Bounds for the tarpit ACL. A permit rule of a tarpit ACL makes lbd
// answer ARP (later NDP) for every address it covers, so a broad one
// poisons the LAN. /16 (65536 addresses) is the broadest IPv4 permit
// accepted: wide enough for a dark /16, narrow enough that a typo such as
// /8 or "any" is caught. IPv6 gets the same number of addresses (/112).
const (
	MinTarpitPrefix4 = 16
	MinTarpitPrefix6 = 112
)

// maxInterfaceName is IFNAMSIZ-1, the longest Linux interface name.
const maxInterfaceName = 15

// CheckInterface reports whether name is a valid Linux network interface
// name: 1 to 15 bytes, not "." or "..", no '/', ':', white space or
// control characters (the kernel's dev_valid_name, plus ':' which only
// legacy address aliases use).
func CheckInterface(name string) error {
	bad := name == "" || len(name) > maxInterfaceName || name == "." || name == ".."
	for _, r := range name {
		if r == '/' || r == ':' || unicode.IsSpace(r) || !unicode.IsPrint(r) || r > unicode.MaxASCII {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("%q is not a Linux interface name (1 to 15 characters, no '/', ':' or white space)", name)
	}
	return nil
}

// dsrProxyOnly are the keys a DSR service must leave unset, with why.
func dsrProxyOnly(s *Service) []struct{ key, why string } {
	var l []struct{ key, why string }
	add := func(set bool, key, why string) {
		if set {
			l = append(l, struct{ key, why string }{key, why})
		}
	}
	add(s.HashPort, "hash_port", "with mode \"dsr\", tracking = false hashes each flow with the client port (Pen -r)")
	add(s.Stubborn, "stubborn", "DSR never connects to backends, so there is nothing to fail over")
	add(s.Emergency.IsValid(), "emergency", "DSR has no emergency server; flows of dead or drained backends move to the others")
	add(s.Abuse.IsValid(), "abuse", "DSR drops clients that client_acl denies")
	add(s.HTTP, "http", "DSR forwards frames and never sees HTTP requests")
	add(s.ProxyProtocol != ProxyNone, "proxy_protocol", "DSR forwards frames unchanged and cannot add a PROXY header")
	add(s.Source.IsValid(), "source", "with DSR, backends see the client's own address")
	add(s.NoDelay, "nodelay", "DSR keeps no sockets")
	add(s.KeepAlive, "keepalive", "DSR keeps no sockets")
	add(s.Log != "", "log", "DSR logs no connections; see the DSR counters")
	add(s.TLS != nil, "tls", "DSR forwards frames and cannot terminate TLS")
	return l
}

// dsr checks what is particular to a DSR service (everything but its
// backends).
func (v *validator) dsr(key string, s *Service) {
	if s.Interface == "" {
		v.add(key+".interface", "mode \"dsr\" needs the network interface to forward on, e.g. \"eth0\" (Pen: dsr_if)")
	} else if err := CheckInterface(s.Interface); err != nil {
		v.add(key+".interface", "%v", err)
	}
	if v.vip(key+".listen", s.Listen) {
		v.dsrListen(key+".listen", s.Listen, s.Protocol)
	}
	for _, p := range dsrProxyOnly(s) {
		v.add(key+"."+p.key, "not allowed with mode \"dsr\": %s", p.why)
	}
	if s.Algorithm != Maglev {
		if name, ok := enumName(algorithmNames, int(s.Algorithm)); ok {
			v.add(key+".algorithm", "%q is not available with mode \"dsr\", which always uses weighted \"maglev\"", name)
		}
	}
	if s.TarpitACL != "" {
		v.tarpit(key+".tarpit_acl", s)
	}
}

// vip checks a DSR service's listen address: a unicast IPv4 address, any
// port (0: every port).
func (v *validator) vip(key string, ap netip.AddrPort) bool {
	a := ap.Addr()
	switch {
	case !ap.IsValid():
		v.add(key, "a VIP is required: \"ip\" (every port) or \"ip:port\"")
	case a.Is6():
		v.add(key, "%s: IPv6 VIPs are not supported yet", a)
	case !a.IsGlobalUnicast():
		v.add(key, "%s cannot be a VIP: it must be a unicast address on the interface's LAN", a)
	default:
		return true
	}
	return false
}

// dsrListen reports a VIP that another DSR service already forwards: the
// same address and protocol, and the same port or either one all ports.
func (v *validator) dsrListen(key string, ap netip.AddrPort, p Protocol) {
	for _, l := range v.vips {
		if l.proto != p || l.addr.Addr() != ap.Addr() {
			continue
		}
		if l.addr.Port() == ap.Port() || l.addr.Port() == 0 || ap.Port() == 0 {
			v.add(key, "%s VIP %s overlaps %s of %s", p, vipString(ap), vipString(l.addr), l.key)
			return
		}
	}
	v.vips = append(v.vips, listener{ap, p, key})
}

// vipString formats a VIP for messages.
func vipString(ap netip.AddrPort) string {
	if ap.Port() == 0 {
		return ap.Addr().String() + " (every port)"
	}
	return ap.String()
}

// vipsNotLocal reports a DSR VIP that a socket of lbd would also listen on:
// the VIP must not be a local address, lbd answers ARP for it.
func (v *validator) vipsNotLocal() {
	for _, d := range v.vips {
		for _, l := range v.listeners {
			if l.addr.Addr() == d.addr.Addr() {
				v.add(d.key, "VIP %s is also the address of %s: a DSR VIP must not be a local address of lbd", d.addr.Addr(), l.key)
				break
			}
		}
	}
	v.tarpitsSpareVIPs()
}

func (v *validator) dsrBackends(key string, s *Service) {
	seen := make(map[netip.Addr]int)
	for i, b := range s.Backends {
		bkey := fmt.Sprintf("%s.backend[%d]", key, i)
		a := b.Address.Addr()
		switch {
		case !b.Address.IsValid():
			v.add(bkey+".address", "an ip is required (\"0.0.0.0\" marks an unused slot)")
		case b.Address.Port() != 0:
			v.add(bkey+".address", "DSR never changes the destination port: give the backend without a port, %q", a.String())
		case a.IsUnspecified():
			// An unused slot.
		case a.Is6():
			v.add(bkey+".address", "%s: IPv6 backends are not supported yet", a)
		case !a.IsGlobalUnicast():
			v.add(bkey+".address", "%s cannot be a DSR backend: it must be a unicast address on the interface's LAN", a)
		case a == s.Listen.Addr():
			v.add(bkey+".address", "%s is the VIP", a)
		default:
			if j, dup := seen[a]; dup {
				v.add(bkey+".address", "%s is already backend[%d]", a, j)
			} else {
				seen[a] = i
			}
		}
		if b.Max != 0 {
			v.add(bkey+".max", "not allowed with mode \"dsr\": DSR keeps no connection counts per backend")
		}
		if b.Hard != 0 {
			v.add(bkey+".hard", "not allowed with mode \"dsr\": DSR keeps no connection counts per backend")
		}
		v.intRange(bkey+".weight", b.Weight, 0, maxBackendSlot)
		v.intRange(bkey+".prio", b.Prio, 0, maxBackendSlot)
		if b.ACL != "" {
			v.add(bkey+".acl", "not allowed with mode \"dsr\": use the service's client_acl")
		}
	}
}

// tarpit checks a DSR service's tarpit ACL. Pen answers ARP for every
// address the list matches, and with Pen's rules an empty list, or one
// that ends in deny, matches everything not listed.
func (v *validator) tarpit(key string, s *Service) {
	if s.Protocol != TCP {
		v.add(key, "the tarpit answers TCP SYNs: it needs protocol \"tcp\"")
		return
	}
	name := s.TarpitACL
	a, ok := v.c.ACLs[name]
	if !ok {
		v.add(key, "ACL %q is not defined in [acl]", name)
		return
	}
	if _, done := v.tarpits[name]; done {
		return
	}
	if v.tarpits == nil {
		v.tarpits = make(map[string]bool)
	}
	n := len(*v.errs)
	defer func() { v.tarpits[name] = len(*v.errs) == n }()
	if len(a.Rules) == 0 {
		v.add(key, "tarpit ACL %q is empty: an empty tarpit ACL matches every address and would answer ARP for the whole LAN", name)
		return
	}
	last := len(a.Rules) - 1
	if a.Rules[last].Action != Permit {
		v.add(aclKey(name)+"["+strconv.Itoa(last)+"]", "tarpit ACL %q must end with a permit rule: after a final deny every address not listed matches, and lbd would answer ARP for the whole LAN", name)
	}
	for i, r := range a.Rules {
		if r.Action != Permit {
			continue
		}
		rkey := aclKey(name) + "[" + strconv.Itoa(i) + "]"
		switch {
		case !r.Prefix.IsValid():
			v.add(rkey, "%q in tarpit ACL %q matches every address: lbd would answer ARP for the whole LAN; permit /%d or narrower", r.String(), name, MinTarpitPrefix4)
		case r.Prefix.Addr().Is4() && r.Prefix.Bits() < MinTarpitPrefix4:
			v.add(rkey, "%q in tarpit ACL %q is too broad: lbd would answer ARP for all of it; permit /%d or narrower", r.String(), name, MinTarpitPrefix4)
		case r.Prefix.Addr().Is6() && r.Prefix.Bits() < MinTarpitPrefix6:
			v.add(rkey, "%q in tarpit ACL %q is too broad: lbd would answer for all of it; permit /%d or narrower", r.String(), name, MinTarpitPrefix6)
		}
	}
}

// tarpitsSpareVIPs reports a tarpit ACL that would claim a VIP or a
// backend of a DSR service on the same interface: the tarpit is checked
// first, so the VIP's traffic would be tarpitted, and answering ARP for a
// backend's address steals its traffic.
func (v *validator) tarpitsSpareVIPs() {
	for i := range v.c.Services {
		s := &v.c.Services[i]
		if s.Mode != ModeDSR || s.TarpitACL == "" || !v.tarpits[s.TarpitACL] {
			continue // not a tarpit, or already reported
		}
		a := v.c.ACLs[s.TarpitACL]
		key := fmt.Sprintf("service[%d].tarpit_acl", i)
	others:
		for j := range v.c.Services {
			t := &v.c.Services[j]
			if t.Mode != ModeDSR || t.Interface != s.Interface {
				continue
			}
			if t.Listen.IsValid() && a.Allows(t.Listen.Addr()) {
				v.add(key, "tarpit ACL %q matches %s, the VIP of service[%d]", s.TarpitACL, t.Listen.Addr(), j)
				continue
			}
			for k, b := range t.Backends {
				if b.Used() && a.Allows(b.Address.Addr()) {
					v.add(key, "tarpit ACL %q matches %s, backend[%d] of service[%d]", s.TarpitACL, b.Address.Addr(), k, j)
					continue others
				}
			}
		}
	}
}
