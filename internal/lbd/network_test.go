package lbd

import (
	"errors"
	"log"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/netconfig"
)

// netFake records what netState applies, failing while fail is set.
type netFake struct {
	mu      sync.Mutex
	applied []string // Network.String of each call
	fail    error
	changes []string
}

func (f *netFake) apply(n *config.Network) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, n.String())
	if f.fail != nil {
		return nil, f.fail
	}
	c := f.changes
	f.changes = nil
	return c, nil
}

func (f *netFake) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.applied...)
}

func netCfg(addr string) *config.Config {
	c := &config.Config{}
	if addr != "" {
		c.Network = &config.Network{Interface: "eth0", Mode: config.NetworkStatic, Address: netip.MustParsePrefix(addr)}
	}
	return c
}

func newNetAppliance(t *testing.T) (*appliance, *netFake, *syncBuffer) {
	t.Helper()
	var out syncBuffer
	f := &netFake{}
	a := &appliance{file: "/perm/lbd/config.toml", dir: "/perm/lbd", log: log.New(&out, "", 0)}
	a.net = &netState{log: a.log, apply: f.apply}
	orig := procFS
	procFS = fstest.MapFS{}
	t.Cleanup(func() { procFS = orig })
	return a, f, &out
}

var errParse = errors.New("config.toml:1:1: broken")

// Which file's [network] is in force: FILE's whenever it parses, the
// fallback's only when it does not; dhcp applies nothing.
func TestNetworkFollowsFile(t *testing.T) {
	a, f, out := newNetAppliance(t)
	lg := a.lastGood()

	// FILE parses (its services may still fail): a fallback's [network]
	// does not replace it.
	a.network(a.file, netCfg("10.0.0.5/24"), nil)
	a.network(lg, netCfg("10.0.0.6/24"), nil)
	a.network(builtinName, netCfg(""), nil)
	if got, want := f.calls(), []string{"eth0 static 10.0.0.5/24"}; !slices.Equal(got, want) {
		t.Errorf("applied %q, want %q", got, want)
	}
	// FILE broken: the last good config's [network].
	a.network(a.file, nil, errParse)
	a.network(lg, netCfg("10.0.0.6/24"), nil)
	if got := f.calls(); len(got) != 2 || got[1] != "eth0 static 10.0.0.6/24" {
		t.Errorf("applied %q", got)
	}
	// FILE broken, last-good parses (its services may still fail): the
	// built-in default does not replace it.
	a.network(a.file, nil, errParse)
	a.network(lg, netCfg("10.0.0.8/24"), nil)
	a.network(builtinName, netCfg(""), nil)
	if got := f.calls(); len(got) != 3 || got[2] != "eth0 static 10.0.0.8/24" || a.net.want == nil {
		t.Errorf("applied %q, in force %v", got, a.net.want)
	}
	// Neither parses: the built-in default's (none).
	a.network(a.file, nil, errParse)
	a.network(lg, nil, errParse)
	a.network(builtinName, netCfg(""), nil)
	if a.net.want != nil {
		t.Errorf("in force with only the built-in default: %v", a.net.want)
	}
	a.network(a.file, netCfg("10.0.0.8/24"), nil)

	// FILE fixed, in DHCP mode: nothing is applied, and the log says the
	// address stays until the next boot.
	n := len(f.calls())
	a.network(a.file, netCfg(""), nil)
	if got := f.calls(); len(got) != n {
		t.Errorf("DHCP applied something: %q", got[n:])
	}
	wantContains(t, "log", out.String(),
		"network: applying [network] of /perm/lbd/config.toml: eth0 static 10.0.0.5/24\n",
		"network: applying [network] of /perm/lbd/last-good.toml: eth0 static 10.0.0.6/24\n",
		"network: [network] of /perm/lbd/config.toml is no [network] (DHCP): eth0 keeps its static address until the next boot")
	if a.net.want != nil {
		t.Errorf("want = %v after DHCP", a.net.want)
	}
}

// A failure is logged once, the services are not involved, and it is
// retried until it works; a new config stops the retries of the old one.
func TestNetworkRetry(t *testing.T) {
	old := applyRetry
	applyRetry = 10 * time.Millisecond
	t.Cleanup(func() { applyRetry = old })
	a, f, out := newNetAppliance(t)
	f.mu.Lock()
	f.fail = errors.New("interface eth0: Link not found")
	f.mu.Unlock()
	a.network(a.file, netCfg("10.0.0.5/24"), nil)
	for len(f.calls()) < 4 {
		time.Sleep(5 * time.Millisecond)
	}
	if n := strings.Count(out.String(), "failed"); n != 1 {
		t.Errorf("the failure was logged %d times:\n%s", n, out.String())
	}
	wantContains(t, "log", out.String(), "network: applying [network] (eth0 static 10.0.0.5/24) failed; services are not affected; trying again every 10ms: interface eth0: Link not found")
	f.mu.Lock()
	f.fail = nil
	f.changes = []string{"eth0: added address 10.0.0.5/24"}
	f.mu.Unlock()
	out.waitFor(t, "network: [network] applied (eth0 static 10.0.0.5/24)", 5*time.Second)
	wantContains(t, "log", out.String(), "network: eth0: added address 10.0.0.5/24\n")
	n := len(f.calls())
	time.Sleep(50 * time.Millisecond)
	if got := len(f.calls()); got != n {
		t.Errorf("applied %d more times after success", got-n)
	}

	// Failing again, then a DHCP config: the retries stop.
	f.mu.Lock()
	f.fail = errors.New("nope")
	f.mu.Unlock()
	a.network(a.file, netCfg("10.0.0.7/24"), nil)
	a.network(a.file, netCfg(""), nil)
	n = len(f.calls())
	time.Sleep(50 * time.Millisecond)
	if got := len(f.calls()); got != n {
		t.Errorf("retried %d times after the config changed to DHCP", got-n)
	}
}

// A static [network] while gokrazy's DHCP client runs on the interface
// (the appliance booted in DHCP mode) is applied, with a warning to reboot.
func TestNetworkWarnsOfDHCP(t *testing.T) {
	a, f, out := newNetAppliance(t)
	procFS = fstest.MapFS{"212/cmdline": {Data: []byte("/gokrazy/dhcp\x00")}}
	a.network(a.file, netCfg("10.0.0.5/24"), nil)
	wantContains(t, "log", out.String(), "gokrazy's DHCP client runs on eth0 (pid 212)", "reboot so that it stays off")
	if len(f.calls()) != 1 {
		t.Errorf("applied %q", f.calls())
	}
}

func TestLastGoodName(t *testing.T) {
	if netconfig.LastGood != lastGoodName {
		t.Errorf("netconfig.LastGood = %q, lbd keeps %q: init and lbd would choose different [network]s", netconfig.LastGood, lastGoodName)
	}
}
