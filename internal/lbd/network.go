package lbd

import (
	"io/fs"
	"log"
	"os"
	"sync"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/netconfig"
)

// resolvConf is where a static [network]'s name servers go (on gokrazy,
// /etc/resolv.conf links there). Tests replace it.
var resolvConf = netconfig.ResolvConf

// procFS is /proc, where lbd looks for gokrazy's DHCP client. Tests replace
// it.
var procFS fs.FS = os.DirFS("/proc")

// netState is [network] in appliance mode (and only there: without -state
// lbd never changes the host's network, so a config tried on a laptop
// cannot take the laptop's address).
//
// The [network] in force is that of FILE whenever FILE parses, even when its
// services cannot start and last-good or the built-in default serves; when
// FILE does not parse, that of last-good when it parses; else the built-in
// default's (none). Only parsing counts: that is the rule nib's gokrazy init
// uses at boot to keep gokrazy's DHCP client off a static interface
// (netconfig.Choose), so the two agree. lbd applies it before the config's
// services, so they may listen on the static address.
//
// A static [network] is applied at start, on every reload and every retry
// of FILE; it is idempotent, and every change is logged at level 0. When
// applying fails the error is logged and the services start all the same;
// lbd tries again every applyRetry until it works or the config changes.
// mode "dhcp" (or no [network]) changes nothing: an address set earlier
// stays until the next boot, when gokrazy's DHCP client runs again.
type netState struct {
	log *log.Logger
	// fileParsed: FILE parsed when it was last loaded, so its [network]
	// stays in force while a fallback is loaded; lastGoodParsed: the same
	// for last-good and the built-in default.
	fileParsed, lastGoodParsed bool

	mu      sync.Mutex
	want    *config.Network // static [network] in force; nil for none
	gen     int             // counts wants; a stale retry does nothing
	timer   *time.Timer     // retry while applying fails
	lastErr string          // logged once, not at every retry
	apply   func(*config.Network) ([]string, error)
}

// network takes the [network] of a config being loaded: name is its file
// (FILE, last-good or the built-in default), cfg and err what parsing it
// gave.
func (a *appliance) network(name string, cfg *config.Config, err error) {
	if a.net == nil {
		ap := &netconfig.Applier{ResolvConf: resolvConf}
		a.net = &netState{log: a.log, apply: ap.Apply}
	}
	n := a.net
	switch name {
	case a.file:
		n.fileParsed = err == nil
	case a.lastGood():
		if n.fileParsed {
			return
		}
		n.lastGoodParsed = err == nil
	default: // the built-in default
		if n.fileParsed || n.lastGoodParsed {
			return
		}
	}
	if err != nil {
		return
	}
	n.set(cfg.Network, name)
}

// set makes nw, from the file named from, the [network] in force.
func (n *netState) set(nw *config.Network, from string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gen++
	if n.timer != nil {
		n.timer.Stop()
		n.timer = nil
	}
	old := n.want
	if !nw.IsStatic() {
		if old != nil {
			n.log.Printf("network: [network] of %s is %v: %s keeps its static address until the next boot, when gokrazy's DHCP client configures it", from, nw, old.Interface)
		}
		n.want = nil
		return
	}
	if old != nil && old.Interface != nw.Interface {
		n.log.Printf("network: %s is no longer in [network]; it keeps its static address until the next boot", old.Interface)
	}
	if !old.Equal(nw) {
		n.log.Printf("network: applying [network] of %s: %v", from, nw)
		n.lastErr = ""
	}
	if old == nil || old.Interface != nw.Interface {
		n.warnDHCP(nw.Interface)
	}
	n.want = nw.Clone()
	n.applyLocked()
}

// warnDHCP says when gokrazy's DHCP client runs on iface, which nib's init
// keeps off a static interface only at boot.
func (n *netState) warnDHCP(iface string) {
	for _, c := range netconfig.DHCPClients(procFS) {
		if c.Interface == iface {
			n.log.Printf("network: gokrazy's DHCP client runs on %s (pid %d), as the appliance booted with [network] mode \"dhcp\": "+
				"reboot so that it stays off; until then a lease renewal may put its address back", iface, c.PID)
		}
	}
}

// applyLocked applies n.want, scheduling a retry when that fails.
func (n *netState) applyLocked() {
	changes, err := n.apply(n.want)
	for _, c := range changes {
		n.log.Printf("network: %s", c)
	}
	if err == nil {
		if n.lastErr != "" {
			n.log.Printf("network: [network] applied (%v)", n.want)
			n.lastErr = ""
		}
		return
	}
	if msg := err.Error(); msg != n.lastErr {
		n.log.Printf("network: applying [network] (%v) failed; services are not affected; trying again every %v: %v", n.want, applyRetry, err)
		n.lastErr = msg
	}
	gen := n.gen
	n.timer = time.AfterFunc(applyRetry, func() { n.retry(gen) })
}

// retry applies the [network] of generation gen again, unless another has
// replaced it.
func (n *netState) retry(gen int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if gen != n.gen || n.want == nil {
		return
	}
	n.timer = nil
	n.applyLocked()
}
