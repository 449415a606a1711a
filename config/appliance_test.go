package config

import (
	"net/netip"
	"strings"
	"testing"
)

// The appliance's first config is valid, its welcome page is on port 80
// behind a dummy, and the page shows lbd's live facts.
func TestApplianceTOML(t *testing.T) {
	c, err := Parse("appliance.toml", ApplianceTOML())
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Services) != 1 || len(c.Dummies) != 1 {
		t.Fatalf("want one service and one dummy: %+v", c)
	}
	s, d := c.Services[0], c.Dummies[0]
	if s.Listen != netip.MustParseAddrPort("0.0.0.0:80") || len(s.Backends) != 1 || s.Backends[0].Address != d.Listen {
		t.Errorf("the welcome service does not put port 80 in front of the dummy: %+v", s)
	}
	for _, p := range []string{"{{addresses}}", "{{config}}"} {
		if !strings.Contains(d.Body, p) {
			t.Errorf("the welcome page lacks %s", p)
		}
	}
}
