package config

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"strings"
)

// The spellings of enumerated values in the file, indexed by value.
var (
	protocolNames      = []string{TCP: "tcp", UDP: "udp"}
	modeNames          = []string{ModeProxy: "proxy", ModeDSR: "dsr"}
	algorithmNames     = []string{RoundRobin: "roundrobin", Hash: "hash", Weight: "weight", Prio: "prio", Maglev: "maglev"}
	proxyProtocolNames = []string{ProxyNone: "", ProxyV1: "v1", ProxyV2: "v2"}
	clientAuthNames    = []string{ClientAuthNone: "none", ClientAuthRequest: "request", ClientAuthRequire: "require"}
	actionNames        = []string{Permit: "permit", Deny: "deny"}
	tlsVersionNames    = map[uint16]string{tls.VersionTLS12: "1.2", tls.VersionTLS13: "1.3"}
)

func enumName(names []string, v int) (string, bool) {
	if v < 0 || v >= len(names) {
		return "", false
	}
	return names[v], true
}

func enumString(names []string, v int, typ string) string {
	if s, ok := enumName(names, v); ok {
		return s
	}
	return fmt.Sprintf("%s(%d)", typ, v)
}

// parseEnum returns the index of s in names.
func parseEnum(names []string, s string) (int, bool) {
	for i, n := range names {
		if n == s {
			return i, true
		}
	}
	return 0, false
}

// quoteList formats names for "must be one of" messages.
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// String returns the protocol as written in the file: "tcp" or "udp".
func (p Protocol) String() string { return enumString(protocolNames, int(p), "Protocol") }

// String returns the mode as written in the file: "proxy" or "dsr".
func (m Mode) String() string { return enumString(modeNames, int(m), "Mode") }

// String returns the algorithm as written in the file, e.g. "roundrobin".
func (a Algorithm) String() string { return enumString(algorithmNames, int(a), "Algorithm") }

// String returns the version as written in the file: "", "v1" or "v2".
func (p ProxyProtocol) String() string {
	return enumString(proxyProtocolNames, int(p), "ProxyProtocol")
}

// String returns the policy as written in the file, e.g. "require".
func (c ClientAuth) String() string { return enumString(clientAuthNames, int(c), "ClientAuth") }

// String returns "permit" or "deny".
func (a Action) String() string { return enumString(actionNames, int(a), "Action") }

// String formats the rule as written in the file: "permit 192.0.2.0/24",
// "deny 192.0.2.7" (a single address) or "deny any".
func (r Rule) String() string {
	return fmt.Sprintf("%s %s", r.Action, formatPrefix(r.Prefix))
}

func formatPrefix(p netip.Prefix) string {
	switch {
	case !p.IsValid():
		return "any"
	case p.IsSingleIP():
		return p.Addr().String()
	}
	return p.String()
}

// ParseRule parses an ACL rule as written in the file: "permit" or "deny",
// then a CIDR prefix (host bits are masked off), a single address, or "any".
func ParseRule(s string) (Rule, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return Rule{}, fmt.Errorf("rule %q is not \"permit|deny PREFIX|ADDRESS|any\"", s)
	}
	a, ok := parseEnum(actionNames, f[0])
	if !ok {
		return Rule{}, fmt.Errorf("rule %q must start with \"permit\" or \"deny\"", s)
	}
	r := Rule{Action: Action(a)}
	switch {
	case f[1] == "any":
	case strings.Contains(f[1], "/"):
		p, err := netip.ParsePrefix(f[1])
		if err != nil {
			return Rule{}, fmt.Errorf("rule %q: %q is not a prefix", s, f[1])
		}
		r.Prefix = p.Masked()
	default:
		ip, err := netip.ParseAddr(f[1])
		if err != nil || ip.Zone() != "" {
			return Rule{}, fmt.Errorf("rule %q: %q is not an address, prefix or \"any\"", s, f[1])
		}
		r.Prefix = netip.PrefixFrom(ip, ip.BitLen())
	}
	return r, nil
}

// cipherSuites maps the configurable (TLS 1.2) suite names of crypto/tls to
// their IDs. TLS 1.3 suites are not configurable in crypto/tls, and the
// insecure ones are refused.
var cipherSuites = func() map[string]uint16 {
	m := make(map[string]uint16)
	for _, cs := range tls.CipherSuites() {
		for _, v := range cs.SupportedVersions {
			if v == tls.VersionTLS12 {
				m[cs.Name] = cs.ID
			}
		}
	}
	return m
}()

func cipherName(id uint16) (string, bool) {
	for n, v := range cipherSuites {
		if v == id {
			return n, true
		}
	}
	return "", false
}
