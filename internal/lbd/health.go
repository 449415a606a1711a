package lbd

import (
	"context"
	"net/netip"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/dsrcheck"
	"github.com/nib-lb/nib/internal/health"
)

// Active health checks ([service.health]; internal/health). Each service
// with a check has a health.Checker over its backends, keyed by address
// (ip:port for proxy services, ip for DSR). The checkers run on their own
// goroutines, never on the data path. A transition is logged at once and
// signalled to one goroutine that applies every service's verdicts under
// d.mu: proxy pools hold down backends out (balance.Pool.SetDown), DSR
// ports take them out of the Maglev tables (their flows move, as for a
// removed backend). When every backend of a service is down it uses all of
// them (fail open) unless fail_closed is set; then it uses none, and the
// emergency server if it has one.

// healthRun is the daemon's health checking.
type healthRun struct {
	services map[string]*serviceHealth // by service name
	kick     chan struct{}             // a transition to apply
	stop     chan struct{}             // closed by Close
	done     chan struct{}             // closed when the applier is gone
}

// serviceHealth is one service's checker.
type serviceHealth struct {
	checker *health.Checker
	allDown bool   // every backend is down
	mode    string // while allDown: "open" (all used) or "closed" (none)
	// applied is each backend's health as last applied to the data path:
	// what the status reports, so that "down" there means no new
	// connection or flow goes to it.
	applied map[string]bool
}

// healthKey is a backend's key in its service's checker.
func healthKey(sc config.Service, b config.Backend) string {
	if sc.Mode == config.ModeDSR {
		return b.Address.Addr().String()
	}
	return b.Address.String()
}

// healthAddr is where a backend's check connects.
func healthAddr(sc config.Service, b config.Backend) netip.AddrPort {
	a := b.Address
	if sc.Mode == config.ModeDSR {
		a = netip.AddrPortFrom(a.Addr(), sc.Listen.Port())
	}
	if sc.Health.Port != 0 {
		a = netip.AddrPortFrom(a.Addr(), sc.Health.Port)
	}
	return a
}

// probeFor is the check of one backend of sc; p is sc's DSR port (for the
// VIP probe), nil for proxy services.
func probeFor(sc config.Service, b config.Backend, p *dsrPort) health.Probe {
	h := sc.Health
	addr := healthAddr(sc, b)
	var probe health.Probe
	switch h.Check {
	case config.CheckTCP:
		probe = health.TCP(addr)
	case config.CheckHTTP, config.CheckHTTPS:
		probe = health.HTTP(addr, health.HTTPOptions{
			Path: h.Path, Host: h.Host, StatusLo: h.ExpectStatus.Lo, StatusHi: h.ExpectStatus.Hi,
			Body: h.ExpectBody, TLS: h.Check == config.CheckHTTPS,
		})
	case config.CheckDNS:
		network := "udp"
		if sc.Protocol == config.TCP {
			network = "tcp"
		}
		probe = health.DNS(addr, network, h.Query)
	default:
		return nil
	}
	if h.VIP && sc.Mode == config.ModeDSR && p != nil {
		probe = health.All(probe, vipProbe(p, sc.Listen.Addr(), addr.Port(), b.Address.Addr()))
	}
	return probe
}

// vipProbe is the DSR check that IPVS cannot do: a SYN to VIP:port sent to
// the backend's MAC must get a SYN+ACK (internal/dsrcheck, as setup check).
func vipProbe(p *dsrPort, vip netip.Addr, port uint16, be netip.Addr) health.Probe {
	iface := p.iface
	return func(ctx context.Context) health.Result {
		mac, ok := p.arp.Lookup(be)
		if !ok {
			return health.Result{Reason: "no MAC for the backend (no ARP reply)"}
		}
		// No answer means "vip not bound": conclude that before the
		// check's own deadline, which would only say "timeout".
		timeout := time.Second
		if dl, ok := ctx.Deadline(); ok {
			timeout = time.Until(dl) * 3 / 4
		}
		v, _, err := dsrcheck.ProbeVIP(ctx, iface, vip, port, mac[:], timeout)
		switch {
		case err != nil:
			return health.Result{Reason: "VIP probe: " + err.Error()}
		case v != dsrcheck.OK:
			return health.Result{Reason: v.String()}
		}
		return health.Result{OK: true}
	}
}

// healthOptions are a checker's options for sc.
func (d *Daemon) healthOptions(sc config.Service) health.Options {
	h := sc.Health
	name := sc.Name
	return health.Options{
		Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall, StartDown: h.StartDown,
		OnChange: func(key string, up bool, r health.Result) {
			if up {
				d.log.Printf("health: service %s backend %s is up (%s)", name, key, r.Reason)
			} else {
				d.log.Printf("health: service %s backend %s is down: %s", name, key, r.Reason)
			}
			select {
			case d.hc.kick <- struct{}{}:
			default:
			}
		},
	}
}

// syncHealth starts, updates and stops the checkers for cfg (the commit of
// a reload, d.mu held): backends that stay keep their state.
func (d *Daemon) syncHealth(cfg *config.Config) {
	if d.hc.services == nil {
		d.hc.services = map[string]*serviceHealth{}
	}
	want := map[string]bool{}
	for _, sc := range cfg.Services {
		if sc.Health.Check == config.CheckNone {
			continue
		}
		want[sc.Name] = true
		var port *dsrPort
		if sc.Mode == config.ModeDSR {
			port = d.dsr[sc.Interface]
		}
		var targets []health.Target
		for _, b := range sc.Backends {
			if b.Used() {
				targets = append(targets, health.Target{Key: healthKey(sc, b), Probe: probeFor(sc, b, port)})
			}
		}
		d.startHealthApplier()
		if sh := d.hc.services[sc.Name]; sh != nil {
			sh.checker.Update(d.healthOptions(sc), targets)
		} else {
			d.hc.services[sc.Name] = &serviceHealth{checker: health.New(d.healthOptions(sc), targets)}
		}
	}
	for name, sh := range d.hc.services {
		if !want[name] {
			sh.checker.Close()
			delete(d.hc.services, name)
		}
	}
	d.applyHealthLocked()
}

// startHealthApplier starts the goroutine that applies transitions.
func (d *Daemon) startHealthApplier() {
	if d.hc.kick != nil {
		return
	}
	d.hc.kick = make(chan struct{}, 1)
	d.hc.stop = make(chan struct{})
	d.hc.done = make(chan struct{})
	go func() {
		defer close(d.hc.done)
		for {
			select {
			case <-d.hc.stop:
				return
			case <-d.hc.kick:
			}
			d.mu.Lock()
			if !d.closed {
				d.applyHealthLocked()
			}
			d.mu.Unlock()
		}
	}()
}

// closeHealth stops the checkers (Close, d.mu held); waitHealth waits for
// the applier after d.mu is released.
func (d *Daemon) closeHealth() {
	for name, sh := range d.hc.services {
		sh.checker.Close()
		delete(d.hc.services, name)
	}
	if d.hc.stop != nil {
		close(d.hc.stop)
	}
}

func (d *Daemon) waitHealth() {
	if d.hc.done != nil {
		<-d.hc.done
	}
}

// heldDown decides which backends a service holds down from their health:
// the down ones, or none when all are down and failClosed is false (fail
// open). It reports whether every backend is down.
func heldDown(keys []string, up func(string) bool, failClosed bool) (down map[string]bool, allDown bool) {
	down = map[string]bool{}
	for _, k := range keys {
		if !up(k) {
			down[k] = true
		}
	}
	allDown = len(keys) > 0 && len(down) == len(keys)
	if allDown && !failClosed {
		return map[string]bool{}, true
	}
	return down, allDown
}

// applyHealthLocked gives every running service the verdicts of its
// checker (none for services without one).
func (d *Daemon) applyHealthLocked() {
	if d.cfg == nil {
		return
	}
	for _, sc := range d.cfg.Services {
		sh := d.hc.services[sc.Name]
		var keys []string
		for _, b := range sc.Backends {
			if b.Used() {
				keys = append(keys, healthKey(sc, b))
			}
		}
		down := map[string]bool{}
		if sh != nil {
			var allDown bool
			applied := make(map[string]bool, len(keys))
			for _, k := range keys {
				applied[k] = sh.checker.Up(k)
			}
			down, allDown = heldDown(keys, func(k string) bool { return applied[k] }, sc.Health.FailClosed)
			// Readers hold d.mu too: they see it with the data path below.
			sh.applied = applied
			mode := ""
			if allDown {
				mode = "open"
				if sc.Health.FailClosed {
					mode = "closed"
				}
			}
			if mode != sh.mode {
				switch mode {
				case "closed":
					d.log.Printf("health: every backend of service %s is down: using none (fail_closed)", sc.Name)
				case "open":
					d.log.Printf("health: every backend of service %s is down: using them all (fail open; fail_closed = true uses none)", sc.Name)
				default:
					d.log.Printf("health: service %s has backends up again", sc.Name)
				}
			}
			sh.allDown, sh.mode = allDown, mode
		}
		if sc.Mode == config.ModeDSR {
			if p := d.dsr[sc.Interface]; p != nil {
				set := map[netip.Addr]bool{}
				for _, b := range sc.Backends {
					if b.Used() && down[healthKey(sc, b)] {
						set[b.Address.Addr()] = true
					}
				}
				p.setHealthDown(sc.Name, set)
			}
			continue
		}
		if r := d.services[sc.Name]; r != nil {
			for _, b := range sc.Backends {
				if b.Used() {
					r.pool.SetDown(b.Address, down[healthKey(sc, b)])
				}
			}
		}
	}
}

// backendHealth is a backend's health for the status: nil without checks.
// Up is the health last applied to the data path (see serviceHealth).
func (d *Daemon) backendHealth(sc config.Service, b config.Backend) (health.Status, bool) {
	sh := d.hc.services[sc.Name]
	if sh == nil {
		return health.Status{}, false
	}
	key := healthKey(sc, b)
	hs, ok := sh.checker.Status(key)
	if up, applied := sh.applied[key]; ok && applied {
		hs.Up = up
	}
	return hs, ok
}

// healthWord is "up" or "down" for a checked backend, "" otherwise (Pen's
// servers line gets it appended).
func (d *Daemon) healthWord(sc config.Service, b config.Backend) string {
	hs, ok := d.backendHealth(sc, b)
	switch {
	case !ok || !b.Used():
		return ""
	case hs.Up:
		return "up"
	}
	return "down"
}

// healthState is a backend's state (proxyBackendState, dsrPort.backendState)
// with its health check's verdict: a failing check makes an ok or drained
// backend "down" (blacklisted, unresolved and no ARP reply say more).
func healthState(state string, hs health.Status, checked bool) string {
	if checked && !hs.Up && (state == "ok" || state == "drained") {
		return "down"
	}
	return state
}

// healthStateHTML is healthState for Pen's status page, which gives the
// check's reason: "down (health: http 503)".
func (d *Daemon) healthStateHTML(state string, sc config.Service, b config.Backend) string {
	hs, ok := d.backendHealth(sc, b)
	if s := healthState(state, hs, ok); s != state {
		return s + " (health: " + hs.Reason + ")"
	}
	return state
}
