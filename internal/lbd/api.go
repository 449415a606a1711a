package lbd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/control"
)

// The HTTPS control API ([control] listen; internal/control). It is put in
// place by the reload transaction like the Pen control listener: prepare
// opens a new listener (loading or creating the secrets in StateDir),
// commit swaps it in and closes the old one without waiting for its
// clients, abort closes what prepare opened. Its handlers run on the HTTP
// server's goroutines and take Daemon.mu only for their commands.

// apiReloadTimeout bounds how long an API reload waits for the main loop.
const apiReloadTimeout = time.Minute

// apiState is the running API.
type apiState struct {
	addr    string
	srv     *control.Server
	aclSnap atomic.Pointer[ctlACL] // the ACL of the running config
	secrets *control.Secrets       // loaded once, before any chroot
	// reloads carries API reload requests to the main loop (main.go, serve),
	// which runs them like SIGHUP; nil when no main loop serves them.
	reloads chan chan error
}

func newAPIACL(cfg *config.Config) *ctlACL { return namedCtlACL(cfg, cfg.Control.ACL) }

// errNoState refuses an API without a state directory for its secrets.
var errNoState = errors.New("control.listen: the HTTPS control API needs lbd's state directory for its key, certificate and token (lbd -config FILE -state DIR)")

// prepareAPI is prepareControl for the HTTPS control API.
func (d *Daemon) prepareAPI(cfg *config.Config) (commit, abort func(), err error) {
	want := cfg.Control.Listen
	snap := newAPIACL(cfg)
	if d.api.addr == want {
		return func() { d.api.aclSnap.Store(snap) }, func() {}, nil
	}
	var ln net.Listener
	var sec *control.Secrets
	if want != "" {
		if d.StateDir == "" {
			return nil, nil, errNoState
		}
		if d.api.secrets == nil {
			s, err := control.EnsureSecrets(d.StateDir, certNames(want))
			if err != nil {
				// A broken state directory must not keep the appliance
				// from serving (its built-in default has the API): the
				// API stays off, and the next reload tries again.
				return func() {
					d.closeAPI()
					d.log.Printf("control: HTTPS API on %s is off: its secrets in %s: %v", want, d.StateDir, err)
				}, func() {}, nil
			}
			d.api.secrets = &s
		}
		sec = d.api.secrets
		ln, err = net.Listen("tcp", want)
		if err != nil {
			return nil, nil, fmt.Errorf("control API %s: %w", want, err)
		}
	}
	commit = func() {
		d.api.aclSnap.Store(snap)
		d.closeAPI()
		d.api.addr = want
		if ln != nil {
			d.api.srv = control.New(control.Options{
				Backend: apiBackend{d},
				Secrets: *sec,
				Allowed: d.apiAllowed,
				Logf:    d.log.Printf,
			})
			d.api.srv.Serve(ln)
			d.log.Printf("control: HTTPS API on %s, certificate SHA-256 %s, token in %s", want, sec.Fingerprint, sec.TokenPath)
		}
	}
	abort = func() {
		if ln != nil {
			ln.Close()
		}
	}
	return commit, abort, nil
}

// closeAPI stops the API (d.mu held): its listener and connections close
// now; its goroutines end once d.mu is released (the history sampler may be
// waiting for it). It returns the stopped server (nil if none), for Close
// to Wait for after releasing d.mu.
func (d *Daemon) closeAPI() *control.Server {
	srv := d.api.srv
	if srv != nil {
		srv.Stop()
		d.api.srv = nil
	}
	d.api.addr = ""
	return srv
}

func (d *Daemon) apiAllowed(a netip.Addr) bool {
	return d.api.aclSnap.Load().allows(a)
}

// certNames are the names a new certificate is made for: the listen address
// when it is a specific one, and this host's interface addresses.
func certNames(listen string) []string {
	var out []string
	if ap, err := netip.ParseAddrPort(listen); err == nil && !ap.Addr().IsUnspecified() {
		out = append(out, ap.Addr().String())
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && !p.Addr().IsLinkLocalUnicast() {
			out = append(out, p.Addr().String())
		}
	}
	return out
}

// apiBackend is what the API reads and changes.
type apiBackend struct{ d *Daemon }

func (b apiBackend) Pen(command string) (string, error) {
	var out strings.Builder
	err := b.d.execPen(command, &out, false)
	return out.String(), err
}

func (b apiBackend) ConfigTOML() ([]byte, error) {
	cfg := b.d.Config()
	if cfg == nil {
		return nil, errors.New("no configuration is running")
	}
	return config.Marshal(cfg)
}

func (b apiBackend) Write() error {
	cfg := b.d.Config()
	if cfg == nil {
		return errors.New("no configuration is running")
	}
	return b.d.saveTOML(cfg)
}

func (b apiBackend) Reload() error {
	ch := b.d.api.reloads
	if ch == nil {
		return errors.New("reload is not available")
	}
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), apiReloadTimeout)
	defer cancel()
	select {
	case ch <- done:
	case <-ctx.Done():
		return errors.New("reload: lbd is busy")
	}
	return <-done
}

func (b apiBackend) EditBackend(r control.BackendRequest) (int, error) {
	return b.d.EditBackend(r)
}

// EditBackend changes one backend of the running config, named by service
// and address (the control API's backend operations): the config
// operations go through the reload transaction like any new config, so
// established connections and DSR flows stay; blacklist is runtime state,
// as Pen's "server N blacklist T". Nothing is saved: write does that.
func (d *Daemon) EditBackend(r control.BackendRequest) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.cfg == nil {
		return -1, errClosed
	}
	if r.Op == control.OpBlacklist {
		sc, err := d.cfg.FindService(r.Service)
		if err != nil {
			return -1, err
		}
		i, err := sc.FindBackend(r.Backend)
		if err != nil {
			return -1, err
		}
		secs := 0
		if r.Seconds != nil {
			secs = *r.Seconds
		}
		return i, runtimeView{d}.Blacklist(r.Service, i, time.Duration(secs)*time.Second)
	}
	e := config.Edit{Op: config.BackendOp(r.Op), Service: r.Service, Backend: r.Backend}
	if r.Weight != nil {
		e.Weight = *r.Weight
	}
	cfg := d.cfg.Clone()
	i, err := cfg.EditBackend(e)
	if err != nil {
		return -1, err
	}
	if err := d.applyLocked(cfg); err != nil {
		return -1, err
	}
	d.log.Printf("control: %s backend %s of service %s", r.Op, r.Backend, r.Service)
	return i, nil
}

func (b apiBackend) Status() control.Status {
	d := b.d
	d.mu.Lock()
	defer d.mu.Unlock()
	st := control.Status{Version: Version(), Services: []control.ServiceStatus{}, Reloads: d.reloads.counts()}
	if d.cfg == nil || d.closed {
		return st
	}
	now := time.Now()
	for _, sc := range d.cfg.Services {
		ss := control.ServiceStatus{
			Name:     sc.Name,
			Listen:   sc.Listen.String(),
			Protocol: sc.Protocol.String(),
			Mode:     sc.Mode.String(),
			Backends: []control.BackendStatus{},
		}
		if sc.Health.Check != config.CheckNone {
			ss.HealthCheck, ss.FailClosed = sc.Health.Check.String(), sc.Health.FailClosed
			if sh := d.hc.services[sc.Name]; sh != nil {
				ss.AllDown = sh.allDown
			}
		}
		if p, dsc, ok := d.dsrService(sc.Name); ok {
			ss.DSR, ss.Backends = dsrStatus(p, dsc)
			for i := range ss.Backends {
				if i < len(dsc.Backends) {
					d.addHealth(&ss.Backends[i], sc, dsc.Backends[i])
				}
			}
		} else if r := d.services[sc.Name]; r != nil {
			c := r.svc.Counters()
			ss.Active, ss.Accepted, ss.Refused, ss.LocalErrors, ss.FlowLimited = c.Active, c.Accepted, c.Refused, c.LocalErrors, c.FlowLimited
			stats := r.pool.Stats(now)
			for i, bc := range r.cfg.Backends {
				bs := control.BackendStatus{Index: i, Address: bc.Address.String(), Weight: bc.Weight, Prio: bc.Prio, Max: bc.Max, Hard: bc.Hard, Drain: bc.Drain}
				var s balance.ServerStats
				if i < len(stats) {
					s = stats[i]
				}
				bs.Active, bs.Sent, bs.Received, bs.Connects, bs.Failures = s.Conns, s.Sent, s.Recv, s.Connects, s.Failures
				bs.State = proxyBackendState(s, now)
				if bs.State == "blacklisted" {
					bs.BlacklistedUntil = s.BlacklistedUntil.UTC().Format(time.RFC3339)
				}
				d.addHealth(&bs, sc, bc)
				ss.Backends = append(ss.Backends, bs)
			}
		}
		st.Services = append(st.Services, ss)
	}
	return st
}

// addHealth adds a backend's health check state to its status; a failing
// check makes an ok or drained backend "down".
func (d *Daemon) addHealth(bs *control.BackendStatus, sc config.Service, b config.Backend) {
	hs, ok := d.backendHealth(sc, b)
	if !ok {
		return
	}
	bs.Health = &control.HealthStatus{
		Up: hs.Up, Since: hs.Since.UTC().Format(time.RFC3339), Reason: hs.Reason, LastFailure: hs.LastFailure,
		LatencyMs: float64(hs.LastLatency) / float64(time.Millisecond),
		Checks:    hs.Checks, Failures: hs.Failures, Transitions: hs.Transitions,
	}
	bs.State = healthState(bs.State, hs, ok)
}

// proxyBackendState is a proxied backend's state, for the status page and
// the API: blacklisted, drained (as the pool decides: drain, or weight 0
// where the algorithm uses weights) or ok.
func proxyBackendState(s balance.ServerStats, now time.Time) string {
	switch {
	case s.BlacklistedUntil.After(now):
		return "blacklisted"
	case s.Drained:
		return "drained"
	}
	return "ok"
}

// dsrStatus is a DSR service's part of the status (as dsrStatusHTML).
func dsrStatus(p *dsrPort, sc config.Service) (*control.DSRStatus, []control.BackendStatus) {
	fs := p.fwd.Stats()
	bstats := backendStats(p, sc.Name)
	c := p.arp.Counters()
	ds := &control.DSRStatus{
		Interface: p.iface, Received: fs.Received, Forwarded: fs.Forwarded,
		PartialChecksums: fs.PartialChecksums, SuperFrames: fs.SuperFrames,
		TarpitReplies: fs.TarpitReplies, ReadErrors: fs.ReadErrors,
		Drops: map[string]uint64{},
		ARP: control.ARPStatus{
			RequestsSeen: c.RequestsSeen, RepliesVIP: c.RepliesVIP, RepliesTarpit: c.RepliesTarpit,
			BackendLearned: c.BackendLearned, UnsolicitedIgnored: c.UnsolicitedIgnored, Conflicts: c.Conflicts,
		},
	}
	for _, k := range slices.Sorted(maps.Keys(fs.Drops)) {
		ds.Drops[fmt.Sprint(k)] = uint64(fs.Drops[k])
	}
	var out []control.BackendStatus
	for i, b := range sc.Backends {
		a := b.Address.Addr()
		state := p.backendState(a, b)
		bs := bstats[a]
		out = append(out, control.BackendStatus{Index: i, Address: b.Address.Addr().String(), Weight: b.Weight, Prio: b.Prio, Max: b.Max, Hard: b.Hard,
			Drain: b.Drain, State: state, Sent: bs.Bytes, Packets: bs.Packets})
	}
	return ds, out
}
