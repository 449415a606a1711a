package lbd

import (
	"net/netip"
	"testing"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/acl"
)

// A tarpit ACL with permit rules only is exact (the XDP program, which sees
// only the prefixes, tarpits the same addresses); a deny rule makes it not.
func TestDSRSpecTarpitExact(t *testing.T) {
	rule := func(a acl.Action, p string) acl.Rule { return acl.Rule{Action: a, Prefix: netip.MustParsePrefix(p)} }
	for _, tc := range []struct {
		name  string
		rules []acl.Rule
		exact bool
	}{
		{"permit only", []acl.Rule{rule(acl.Permit, "198.51.100.64/28"), rule(acl.Permit, "198.51.100.80/32")}, true},
		{"with a deny", []acl.Rule{rule(acl.Deny, "198.51.100.65/32"), rule(acl.Permit, "198.51.100.64/28")}, false},
	} {
		s := config.NewDSRService("web", "eth0", netip.MustParseAddrPort("198.51.100.100:80"), config.TCP)
		s.TarpitACL = "trap"
		s.Backends = []config.Backend{config.NewBackend(netip.MustParseAddrPort("198.51.100.21:0"))}
		specs := dsrSpecs(&config.Config{Services: []config.Service{s}}, map[string]*acl.List{"trap": {Rules: tc.rules}})
		tp := specs["eth0"].tarpit
		if tp.Exact != tc.exact || tp.Match == nil || len(tp.Prefixes) == 0 {
			t.Errorf("%s: exact %v (want %v), %d prefixes", tc.name, tp.Exact, tc.exact, len(tp.Prefixes))
		}
	}
}
