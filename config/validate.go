package config

import (
	"crypto/tls"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
)

// Limits checked by Validate.
const (
	maxDebug       = 3
	maxBackendSlot = 1000000 // max, hard, weight and prio
	maxTableSize   = 1 << 24 // tracking_size and max_connections
	maxBacklog     = 65535
)

// Validate checks a typed Config for mistakes a file can make and that its
// types cannot rule out: names, listeners, backends, ACL references, ranges
// and combinations that cannot work. Parse calls it; so should anything that
// builds a Config in code. All problems are returned, joined, as *Error
// values whose Key is the key path in the file, e.g.
// "service[0].backend[1].weight".
func Validate(c *Config) error {
	var errs errList
	if c == nil {
		errs.add("", "no configuration")
		return errs.err()
	}
	v := validator{c: c, errs: &errs}
	v.validate()
	return errs.err()
}

type validator struct {
	c    *Config
	errs *errList
	// listeners seen so far, to find two that would bind the same socket.
	listeners []listener
	// vips of the DSR services seen so far.
	vips []listener
	// tarpits are the tarpit ACLs already checked.
	tarpits map[string]bool
}

type listener struct {
	addr  netip.AddrPort
	proto Protocol
	key   string
}

func (v *validator) add(key, format string, args ...any) { v.errs.add(key, format, args...) }

func (v *validator) validate() {
	c := v.c
	if c.Debug < 0 || c.Debug > maxDebug {
		v.add("debug", "%d must be between 0 and %d", c.Debug, maxDebug)
	}
	if len(c.Services) == 0 && len(c.Dummies) == 0 {
		v.add("service", "no [[service]] or [[dummy]] defined; at least one is required")
	}
	for _, name := range slices.Sorted(maps.Keys(c.ACLs)) {
		v.acl(name, c.ACLs[name])
	}
	v.network()
	v.control()
	for i, d := range c.Dummies {
		key := fmt.Sprintf("dummy[%d]", i)
		if v.endpoint(key+".listen", d.Listen, true) {
			v.listen(key+".listen", d.Listen, TCP)
		}
	}
	names := make(map[string]int)
	for i := range c.Services {
		key := fmt.Sprintf("service[%d]", i)
		s := &c.Services[i]
		switch {
		case s.Name == "":
			v.add(key+".name", "a service name is required")
		case !validName(s.Name, false):
			v.add(key+".name", "%q may only contain a-z, 0-9, '_', '.' and '-'", s.Name)
		default:
			if j, dup := names[s.Name]; dup {
				v.add(key+".name", "%q is already the name of service[%d]", s.Name, j)
			} else {
				names[s.Name] = i
			}
		}
		v.service(key, s)
	}
	v.vipsNotLocal()
	v.networkSparesVIPs()
}

// validName reports whether s is a service name ([a-z0-9_.-]+) or, with
// upper, an ACL name (also A-Z).
func validName(s string, upper bool) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
		case upper && r >= 'A' && r <= 'Z':
		default:
			return false
		}
	}
	return true
}

// aclKey is the key path of a named ACL.
func aclKey(name string) string { return "acl." + name }

func (v *validator) acl(name string, l ACL) {
	key := aclKey(name)
	if !validName(name, true) {
		v.add(key, "ACL name %q may only contain A-Z, a-z, 0-9, '_', '.' and '-'", name)
	}
	for i, r := range l.Rules {
		rkey := key + "[" + strconv.Itoa(i) + "]"
		if !validAction(r.Action) {
			v.add(rkey, "action %d is neither permit nor deny", r.Action)
		}
		if r.Prefix.IsValid() && r.Prefix != r.Prefix.Masked() {
			v.add(rkey, "prefix %s has host bits set; use %s", r.Prefix, r.Prefix.Masked())
		}
	}
}

// validAction reports whether a is permit or deny.
func validAction(a Action) bool { return a == Permit || a == Deny }

// aclRef checks that name, when set, is a defined ACL.
func (v *validator) aclRef(key, name string) {
	if name == "" {
		return
	}
	if _, ok := v.c.ACLs[name]; !ok {
		v.add(key, "ACL %q is not defined in [acl]", name)
	}
}

func (v *validator) control() {
	ctl := v.c.Control
	v.aclRef("control.pen_acl", ctl.PenACL)
	v.aclRef("control.acl", ctl.ACL)
	if ctl.Listen != "" {
		ap, err := netip.ParseAddrPort(ctl.Listen)
		if err != nil {
			v.add("control.listen", "%q is not an ip:port", ctl.Listen)
		} else if v.endpoint("control.listen", ap, true) {
			v.listen("control.listen", ap, TCP)
		}
	}
	switch {
	case ctl.PenListen == "":
	case filepath.IsAbs(ctl.PenListen):
	default:
		ap, err := netip.ParseAddrPort(ctl.PenListen)
		if err != nil {
			v.add("control.pen_listen", "%q is neither an ip:port nor an absolute path to a Unix socket", ctl.PenListen)
			return
		}
		if v.endpoint("control.pen_listen", ap, true) {
			v.listen("control.pen_listen", ap, TCP)
		}
	}
}

// endpoint checks an address that must be usable: valid, and (unless
// listen) a specific address; port not 0. It reports whether ap is fine.
func (v *validator) endpoint(key string, ap netip.AddrPort, listen bool) bool {
	switch {
	case !ap.IsValid():
		v.add(key, "an ip:port is required")
	case !listen && ap.Addr().IsUnspecified():
		v.add(key, "%s is not a usable address", ap)
	case ap.Port() == 0:
		v.add(key, "port 0 in %s", ap)
	default:
		return true
	}
	return false
}

// listen reports a listener that would bind the same socket as an earlier
// one: same protocol and port, and the same address or a wildcard of the
// same family.
func (v *validator) listen(key string, ap netip.AddrPort, p Protocol) {
	for _, l := range v.listeners {
		if l.proto != p || l.addr.Port() != ap.Port() {
			continue
		}
		a, b := l.addr.Addr(), ap.Addr()
		if a == b || (a.Is4() == b.Is4() && (a.IsUnspecified() || b.IsUnspecified())) {
			v.add(key, "%s %s overlaps %s of %s", p, ap, l.addr, l.key)
			return
		}
	}
	v.listeners = append(v.listeners, listener{ap, p, key})
}

func (v *validator) service(key string, s *Service) {
	switch s.Mode {
	case ModeProxy:
		if v.endpoint(key+".listen", s.Listen, true) {
			v.listen(key+".listen", s.Listen, s.Protocol)
		}
		if s.Interface != "" {
			v.add(key+".interface", "is only used with mode \"dsr\"")
		}
		if s.TarpitACL != "" {
			v.add(key+".tarpit_acl", "the tarpit needs mode \"dsr\" and protocol \"tcp\"")
		}
	case ModeDSR:
		v.dsr(key, s)
	default:
		v.add(key+".mode", "unknown mode %d", s.Mode)
	}
	if _, ok := enumName(protocolNames, int(s.Protocol)); !ok {
		v.add(key+".protocol", "unknown protocol %d", s.Protocol)
	}
	if _, ok := enumName(algorithmNames, int(s.Algorithm)); !ok {
		v.add(key+".algorithm", "unknown algorithm %d", s.Algorithm)
	}
	if s.TrackingExpiry < 0 {
		v.add(key+".tracking_expiry", "%s must not be negative (0s never expires)", s.TrackingExpiry)
	}
	v.intRange(key+".tracking_size", s.TrackingSize, 1, maxTableSize)
	if s.Blacklist < 0 {
		v.add(key+".blacklist", "%s must not be negative", s.Blacklist)
	}
	if s.ConnectTimeout <= 0 {
		v.add(key+".connect_timeout", "%s must be positive", s.ConnectTimeout)
	}
	switch {
	case s.IdleTimeout < 0:
		v.add(key+".idle_timeout", "%s must not be negative", s.IdleTimeout)
	case s.IdleTimeout == 0 && s.Mode == ModeDSR:
		v.add(key+".idle_timeout", "DSR flows must expire: 0s is not allowed for mode \"dsr\"")
	case s.IdleTimeout == 0 && s.Protocol == UDP:
		v.add(key+".idle_timeout", "UDP flows must expire: 0s is not allowed for protocol \"udp\"")
	}
	v.intRange(key+".max_connections", s.MaxConnections, 1, maxTableSize)
	v.aclRef(key+".client_acl", s.ClientACL)
	v.intRange(key+".backlog", s.Backlog, 1, maxBacklog)
	v.health(key+".health", s)
	if s.Mode == ModeDSR {
		v.dsrBackends(key, s)
		return
	}
	if s.Emergency.IsValid() {
		v.endpoint(key+".emergency", s.Emergency, false)
	}
	if s.Abuse.IsValid() {
		v.endpoint(key+".abuse", s.Abuse, false)
	}
	if s.HTTP && s.Protocol == UDP {
		v.add(key+".http", "HTTP mode needs protocol \"tcp\"")
	}
	switch s.ProxyProtocol {
	case ProxyNone, ProxyV2:
	case ProxyV1:
		if s.Protocol == UDP {
			v.add(key+".proxy_protocol", "PROXY protocol v1 cannot carry UDP; use \"v2\"")
		}
	default:
		v.add(key+".proxy_protocol", "unknown PROXY protocol version %d", s.ProxyProtocol)
	}
	if s.Source.IsValid() && s.Source.IsUnspecified() {
		v.add(key+".source", "%s is not a usable source address", s.Source)
	}
	if s.TLS != nil {
		v.tls(key+".tls", s)
	}
	v.backends(key, s)
}

func (v *validator) intRange(key string, n, lo, hi int) {
	if n < lo || n > hi {
		v.add(key, "%d must be between %d and %d", n, lo, hi)
	}
}

func (v *validator) tls(key string, s *Service) {
	t := s.TLS
	if s.Protocol == UDP {
		v.add(key, "TLS needs protocol \"tcp\"")
	}
	if t.Cert == "" {
		v.add(key+".cert", "a certificate file is required")
	}
	if _, ok := tlsVersionNames[t.MinVersion]; !ok {
		v.add(key+".min_version", "version %#04x must be TLS 1.2 or 1.3", t.MinVersion)
	}
	seen := make(map[uint16]bool)
	for i, id := range t.Ciphers {
		ckey := key + ".ciphers[" + strconv.Itoa(i) + "]"
		name, ok := cipherName(id)
		switch {
		case !ok:
			v.add(ckey, "%s is not a TLS 1.2 cipher suite of crypto/tls", tls.CipherSuiteName(id))
		case seen[id]:
			v.add(ckey, "%q is listed twice", name)
		}
		seen[id] = true
	}
	switch t.ClientAuth {
	case ClientAuthNone:
		if t.ClientCA != "" {
			v.add(key+".client_auth", "client_ca is set but client_auth is \"none\"; use \"request\" or \"require\"")
		}
	case ClientAuthRequest, ClientAuthRequire:
		if t.ClientCA == "" {
			v.add(key+".client_ca", "client_auth %q needs client_ca to verify client certificates", t.ClientAuth)
		}
	default:
		v.add(key+".client_auth", "unknown client_auth %d", t.ClientAuth)
	}
}

func (v *validator) backends(key string, s *Service) {
	seen := make(map[netip.AddrPort]int)
	for i, b := range s.Backends {
		bkey := fmt.Sprintf("%s.backend[%d]", key, i)
		a := b.Address
		switch {
		case !a.IsValid():
			v.add(bkey+".address", "an ip:port is required (\"0.0.0.0:0\" marks an unused slot)")
		case !a.Addr().IsUnspecified() && a.Port() == 0:
			v.add(bkey+".address", "port 0 in %s", a)
		case b.Used():
			if j, dup := seen[a]; dup {
				v.add(bkey+".address", "%s is already backend[%d]", a, j)
			} else {
				seen[a] = i
			}
			if src := s.Source; src.IsValid() && src.Unmap().Is4() != a.Addr().Unmap().Is4() {
				v.add(bkey+".address", "%s cannot be reached from source %s (different IP version)", a, src)
			}
		}
		v.intRange(bkey+".max", b.Max, 0, maxBackendSlot)
		v.intRange(bkey+".hard", b.Hard, 0, maxBackendSlot)
		v.intRange(bkey+".weight", b.Weight, 0, maxBackendSlot)
		v.intRange(bkey+".prio", b.Prio, 0, maxBackendSlot)
		if b.Max > 0 && b.Hard > 0 && b.Hard < b.Max {
			v.add(bkey+".hard", "%d must not be below max (%d)", b.Hard, b.Max)
		}
		v.aclRef(bkey+".acl", b.ACL)
	}
}
