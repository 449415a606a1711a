package pen

import (
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

// TestLookupHostsBeforeExec: with Interp.Hosts from LookupHosts, the DNS
// lookups of "server N address HOST" happen in LookupHosts, which lbd calls
// before it takes its lock, and Exec itself never looks a name up.
func TestLookupHostsBeforeExec(t *testing.T) {
	var looked []string
	old := lookupHost
	t.Cleanup(func() { lookupHost = old })
	lookupHost = func(host string) (netip.Addr, error) {
		looked = append(looked, host)
		if host == "backend.example" {
			return netip.MustParseAddr("192.0.2.50"), nil
		}
		return netip.Addr{}, errors.New("no such host")
	}
	lines := map[string]string{
		"service pen server 1 address backend.example port 81":              "192.0.2.50:81",
		"server 1 address backend.example address backend.example weight 2": "192.0.2.50:18101",
		"server 1 address [::1]":             "[::1]:18101",
		"server 1 address 192.0.2.7 port 82": "192.0.2.7:82",
	}
	for line, want := range lines {
		looked = nil
		h := LookupHosts(line)
		if want := min(1, strings.Count(line, "backend.example")); len(looked) != want {
			t.Errorf("LookupHosts(%q) looked up %q", line, looked)
		}
		looked = nil
		in := newInterp(t)
		in.Hosts = h
		run(t, in, line)
		if len(looked) != 0 {
			t.Errorf("Exec(%q) looked up %q itself", line, looked)
		}
		if got := in.Cfg.Services[0].Backends[1].Address; got != netip.MustParseAddrPort(want) {
			t.Errorf("Exec(%q): server 1 is %v, want %s", line, got, want)
		}
	}

	// A failed lookup is reported by Exec, as without Hosts, and changes
	// nothing.
	in := newInterp(t)
	before := in.Cfg.Clone()
	in.Hosts = LookupHosts("server 1 address no.such.invalid")
	looked = nil
	if _, err := in.Exec("server 1 address no.such.invalid", io.Discard); err == nil || err.Error() != `server: cannot resolve "no.such.invalid": no such host` {
		t.Errorf("failed lookup: %v", err)
	}
	// A name LookupHosts was not given is refused, not looked up.
	in.Hosts = LookupHosts("servers")
	if _, err := in.Exec("server 1 address backend.example", io.Discard); err == nil || !strings.Contains(err.Error(), "not looked up") {
		t.Errorf("name not looked up before: %v", err)
	}
	if len(looked) != 0 {
		t.Errorf("Exec looked up %q", looked)
	}
	if in.Cfg.Services[0].Backends[1] != before.Services[0].Backends[1] {
		t.Error("failed commands changed server 1")
	}
	// Lines that resolve nothing look nothing up.
	for _, line := range []string{"servers", "server 1 weight 3", "acl 1 permit backend.example", "server 1 port backend.example", "service", ""} {
		if LookupHosts(line); len(looked) != 0 {
			t.Errorf("LookupHosts(%q) looked up %q", line, looked)
		}
	}
}
