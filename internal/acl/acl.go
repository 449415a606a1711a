package acl

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Action is a rule's verdict.
type Action int

// Actions.
const (
	Permit Action = iota
	Deny
)

// String returns "permit" or "deny".
func (a Action) String() string {
	switch a {
	case Permit:
		return "permit"
	case Deny:
		return "deny"
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// Rule is one access-list entry.
type Rule struct {
	Action Action
	// Prefix is the matched range. The zero Prefix matches every address of
	// both families (Pen's "acl N permit" with no address). An IPv4 prefix
	// never matches an IPv6 client and vice versa.
	Prefix netip.Prefix
}

// List is an ordered rule list with Pen's semantics (acl.c), except that
// prefixes are always masked (Pen stores "10.0.0.5 255.0.0.0" unmasked and
// so never matches it), IPv4-mapped clients are matched as IPv4, and GeoIP
// country rules do not exist.
type List struct {
	Rules []Rule
}

// Allows reports whether a passes the list: the first matching rule decides;
// if no rule matches, the result is the opposite of the last rule's action;
// an empty (or nil) list permits everything.
//
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, as a dual-stack listener
// reports IPv4 clients) are unmapped first, and zones are ignored. An
// invalid address (a client without an IP address, such as a Unix-socket
// peer) matches every rule, as in Pen.
func (l *List) Allows(a netip.Addr) bool {
	if l == nil || len(l.Rules) == 0 {
		return true
	}
	a = a.Unmap().WithZone("")
	for _, r := range l.Rules {
		if r.matches(a) {
			return r.Action == Permit
		}
	}
	return l.Rules[len(l.Rules)-1].Action != Permit
}

// matches reports whether r covers a, which is already unmapped and zoneless.
func (r Rule) matches(a netip.Addr) bool {
	if !r.Prefix.IsValid() || !a.IsValid() {
		return true
	}
	p := r.Prefix
	if pa := p.Addr(); pa.Is4In6() && p.Bits() >= 96 {
		// An IPv4-mapped prefix (from ParseRule or built by hand;
		// ParsePen converts them) is compared with the unmapped client.
		p = netip.PrefixFrom(pa.Unmap(), p.Bits()-96)
	}
	// Prefix.Contains compares only the first Bits() bits, so a prefix that
	// was built unmasked still behaves as masked (Pen's mask bug is not
	// reproduced), and it never matches across families.
	return p.Contains(a)
}

// anyTarget is the match-all target in the TOML form.
const anyTarget = "any"

// String returns the rule in TOML form, which ParseRule reads back: "permit
// 192.0.2.0/24", "deny 10.0.0.5" (a host), "deny any" (match-all).
func (r Rule) String() string {
	if !r.Prefix.IsValid() {
		return r.Action.String() + " " + anyTarget
	}
	p := r.Prefix.Masked()
	if p.IsSingleIP() {
		return r.Action.String() + " " + p.Addr().String()
	}
	return r.Action.String() + " " + p.String()
}

// PenString returns the rule in Pen's verb form, as written after "acl N":
// "permit 10.0.0.0 255.0.0.0", "deny ::1/128", or "deny" alone for the
// match-all rule. ParsePen reads it back.
func (r Rule) PenString() string {
	if !r.Prefix.IsValid() {
		return r.Action.String()
	}
	p := r.Prefix.Masked()
	if p.Addr().Is4() {
		mask := netip.AddrFrom4(maskBytes(p.Bits()))
		return r.Action.String() + " " + p.Addr().String() + " " + mask.String()
	}
	return r.Action.String() + " " + p.String()
}

// maskBytes returns the dotted IPv4 netmask for a prefix length of 0-32.
func maskBytes(bits int) [4]byte {
	m := ^uint32(0)
	if bits < 32 {
		m = ^(m >> bits)
	}
	return [4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}
}

// ParseRule parses one rule in TOML form, as config reads [acl]: "permit"
// or "deny" (lower case), white space, and a target: an address prefix
// ("192.0.2.0/24", "2001:db8::/32"; host bits are masked off, so
// "10.1.2.3/8" means 10.0.0.0/8), a host address ("10.0.0.5"), or "any"
// for every address of both families. An IPv4-mapped IPv6 target is kept
// as written (String writes it back the same), and matches IPv4 clients
// all the same. The errors are config's validation messages.
func ParseRule(s string) (Rule, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return Rule{}, fmt.Errorf("rule %q is not \"permit|deny PREFIX|ADDRESS|any\"", s)
	}
	var r Rule
	switch f[0] {
	case "permit":
		r.Action = Permit
	case "deny":
		r.Action = Deny
	default:
		return Rule{}, fmt.Errorf("rule %q must start with \"permit\" or \"deny\"", s)
	}
	switch {
	case f[1] == anyTarget:
	case strings.Contains(f[1], "/"):
		p, err := netip.ParsePrefix(f[1])
		if err != nil {
			return Rule{}, fmt.Errorf("rule %q: %q is not a prefix", s, f[1])
		}
		r.Prefix = p.Masked()
	default:
		a, err := netip.ParseAddr(f[1])
		if err != nil || a.Zone() != "" {
			return Rule{}, fmt.Errorf("rule %q: %q is not an address, prefix or \"any\"", s, f[1])
		}
		r.Prefix = netip.PrefixFrom(a, a.BitLen())
	}
	return r, nil
}

// ParsePen parses Pen's arguments after "acl N":
//
//	permit|deny A.B.C.D [MASK]   IPv4; MASK is dotted and contiguous, default 255.255.255.255
//	permit|deny V6ADDR[/LEN]     IPv6 (the address contains ':'); LEN defaults to 128
//	permit|deny                  every address of both families
//
// Pen's GeoIP form "permit|deny country CC" is refused. Unlike Pen, the
// address is masked, so "permit 10.0.0.5 255.0.0.0" covers 10.0.0.0/8.
func ParsePen(args []string) (Rule, error) {
	text := strings.Join(args, " ")
	if len(args) == 0 {
		return Rule{}, fmt.Errorf("acl %q: missing permit or deny", text)
	}
	act, err := parseAction(args[0])
	if err != nil {
		return Rule{}, fmt.Errorf("acl %q: %v", text, err)
	}
	switch {
	case len(args) == 1:
		return Rule{Action: act}, nil
	case args[1] == "country":
		return Rule{}, fmt.Errorf("acl %q: country rules need GeoIP, which is not supported", text)
	case strings.Contains(args[1], ":"):
		if len(args) > 2 {
			return Rule{}, fmt.Errorf("acl %q: unexpected %q after the IPv6 address", text, args[2])
		}
		p, err := parseTarget(args[1])
		if err != nil {
			return Rule{}, fmt.Errorf("acl %q: %v", text, err)
		}
		return Rule{Action: act, Prefix: p}, nil
	}
	if len(args) > 3 {
		return Rule{}, fmt.Errorf("acl %q: unexpected %q after the mask", text, args[3])
	}
	a, err := netip.ParseAddr(args[1])
	if err != nil || !a.Is4() {
		return Rule{}, fmt.Errorf("acl %q: bad IPv4 address %q", text, args[1])
	}
	bits := 32
	if len(args) == 3 {
		bits, err = maskBits(args[2])
		if err != nil {
			return Rule{}, fmt.Errorf("acl %q: %v", text, err)
		}
	}
	return Rule{Action: act, Prefix: netip.PrefixFrom(a, bits).Masked()}, nil
}

func parseAction(s string) (Action, error) {
	switch strings.ToLower(s) {
	case "permit":
		return Permit, nil
	case "deny":
		return Deny, nil
	}
	return 0, fmt.Errorf("unknown action %q, want permit or deny", s)
}

// parseTarget parses ParsePen's IPv6 target, an address or a prefix, and
// normalises it: masked, and IPv4-mapped IPv6 turned into IPv4 (clients are
// unmapped before matching).
func parseTarget(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		p, err = netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad prefix %q", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad address %q", s)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("bad address %q: zones are not allowed", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// maskBits converts a dotted IPv4 netmask to a prefix length.
func maskBits(s string) (int, error) {
	m, err := netip.ParseAddr(s)
	if err != nil || !m.Is4() {
		return 0, fmt.Errorf("bad mask %q: want a dotted IPv4 netmask", s)
	}
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for v&(1<<31) != 0 {
		v <<= 1
		ones++
	}
	if v != 0 {
		return 0, fmt.Errorf("bad mask %q: not contiguous", s)
	}
	return ones, nil
}
