package lbd

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/acl"
	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/dummy"
	"github.com/nib-lb/nib/internal/proxy"
)

// Daemon is a running lbd: services, dummies and control listeners built
// from one Config, replaced as a whole on reload.
type Daemon struct {
	log *log.Logger

	mu       sync.Mutex // serialises Apply and control commands
	closed   bool       // Close ran: no more Apply or commands
	cfg      *config.Config
	engine   *proxy.Engine
	services map[string]*running
	dummies  map[netip.AddrPort]*dummy.Server
	penctl   *penControl
	logs     map[string]*proxy.ConnLog // request logs by path
	dsr      map[string]*dsrPort       // DSR machinery by interface
	exit     chan struct{}
	exitOnce sync.Once
	debug    atomic.Int32 // cfg.Debug, for lock-free reads
	root     string       // Pen's -j jail until lbd has chrooted; see SetRoot

	// Control goroutines take mu for their commands, so nothing holding mu
	// may wait for them: they are counted here and waited for by Close
	// after it lets go of mu.
	ctlWG     sync.WaitGroup
	ctlMu     sync.Mutex // guards ctlConns and ctlClosed; held only briefly, never while waiting
	ctlConns  map[net.Conn]struct{}
	ctlClosed bool
	penACL    atomic.Pointer[ctlACL] // control ACL of the running config

	// PenFile is the Pen -F file re-read on SIGHUP in Pen mode.
	PenFile string
	// TOMLFile is the -config file; the write verb saves the running
	// config there.
	TOMLFile string
	// Loops is the number of TCP engine loops; 0 means GOMAXPROCS.
	Loops int
	// Facts fills in the placeholders of dummy bodies ({{addresses}}, ...);
	// nil sends bodies as written. Set it before the first Apply.
	Facts dummy.Facts
}

// running is one live service.
type running struct {
	cfg    config.Service
	svc    *proxy.Service
	pool   *balance.Pool
	tcp    bool // served by the splice engine
	stream *proxy.StreamServer
	udp    *proxy.UDPServer
}

// New returns a daemon that logs to logger. Nothing runs until Apply.
func New(logger *log.Logger) *Daemon {
	return &Daemon{
		log:      logger,
		services: make(map[string]*running),
		dummies:  make(map[netip.AddrPort]*dummy.Server),
		logs:     make(map[string]*proxy.ConnLog),
		dsr:      make(map[string]*dsrPort),
		exit:     make(chan struct{}),
	}
}

// Config returns a copy of the running configuration.
func (d *Daemon) Config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.Clone()
}

// Exited is closed when a control client asked lbd to exit.
func (d *Daemon) Exited() <-chan struct{} { return d.exit }

// debugf logs when the configured debug level is at least level. Data-path
// goroutines call it, so the level is read atomically.
func (d *Daemon) debugf(level int, format string, args ...any) {
	if int(d.debug.Load()) >= level {
		d.log.Printf(format, args...)
	}
}

// Apply validates cfg and makes it the running configuration. Services that
// keep their name, address and kind keep their listener and connections;
// on any error nothing changes and the previous configuration keeps running.
func (d *Daemon) Apply(cfg *config.Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.applyLocked(cfg)
}

// errClosed is what a closed daemon answers to Apply and control commands.
var errClosed = errors.New("lbd is shutting down")

func (d *Daemon) applyLocked(cfg *config.Config) error {
	if d.closed {
		return errClosed
	}
	if err := config.Validate(cfg); err != nil {
		return err
	}
	acls := make(map[string]*acl.List, len(cfg.ACLs))
	for name, a := range cfg.ACLs {
		acls[name] = toACL(a)
	}
	// Build everything that can fail before touching what runs.
	type plan struct {
		sc   config.Service
		opts proxy.Options
		bo   balance.Options
		bs   []balance.Server
		old  *running
	}
	// Request logs: keep open ones, open new ones; on failure close only
	// what this call opened.
	logs := make(map[string]*proxy.ConnLog)
	closeNewLogs := func() {
		for path, l := range logs {
			if d.logs[path] != l {
				l.Close()
			}
		}
	}
	for _, sc := range cfg.Services {
		if sc.Log == "" || logs[sc.Log] != nil {
			continue
		}
		if l := d.logs[sc.Log]; l != nil {
			logs[sc.Log] = l
			continue
		}
		l, err := proxy.OpenConnLogIn(d.root, sc.Log)
		if err != nil {
			closeNewLogs()
			return fmt.Errorf("service %q: log: %w", sc.Name, err)
		}
		logs[sc.Log] = l
	}
	plans := make([]plan, 0, len(cfg.Services))
	for _, sc := range cfg.Services {
		if sc.Mode == config.ModeDSR {
			continue // see applyDSR
		}
		opts, err := proxyOptions(sc)
		if err != nil {
			closeNewLogs()
			return fmt.Errorf("service %q: %w", sc.Name, err)
		}
		opts.Log = logs[sc.Log]
		bo, bs := balanceSpec(sc, acls)
		p := plan{sc: sc, opts: opts, bo: bo, bs: bs}
		if old := d.services[sc.Name]; old != nil && sameListener(old.cfg, sc) {
			p.old = old
		}
		plans = append(plans, p)
	}
	if d.engine == nil {
		n := d.Loops
		if n <= 0 {
			n = runtime.GOMAXPROCS(0)
		}
		e, err := proxy.NewEngine(n)
		if err != nil {
			closeNewLogs()
			return err
		}
		e.SetLogf(d.log.Printf)
		d.engine = e
	}
	// Start new listeners; roll back on failure.
	var started []*running
	rollback := func() {
		for _, r := range started {
			d.stop(r, true)
		}
		closeNewLogs()
	}
	next := make(map[string]*running, len(plans))
	for _, p := range plans {
		if p.old != nil {
			p.old.pool.Update(p.bo, p.bs)
			p.old.svc.SetOptions(p.opts)
			p.old.cfg = p.sc
			next[p.sc.Name] = p.old
			continue
		}
		if r := d.services[p.sc.Name]; r != nil && r.cfg.Listen == p.sc.Listen && r.cfg.Protocol == p.sc.Protocol {
			// Same address, different kind: the old listener must go first.
			d.stop(r, false)
			delete(d.services, p.sc.Name)
		}
		r, err := d.start(p.sc, p.opts, p.bo, p.bs)
		if err != nil {
			rollback()
			return fmt.Errorf("service %q: %w", p.sc.Name, err)
		}
		started = append(started, r)
		next[p.sc.Name] = r
	}
	dsrSpecs := dsrSpecs(cfg, acls)
	startedDSR, err := d.applyDSR(dsrSpecs)
	if err != nil {
		rollback()
		return err
	}
	rollbackDSR := func() {
		for _, p := range startedDSR {
			p.close()
		}
	}
	newDummies := make(map[netip.AddrPort]*dummy.Server)
	closeNewDummies := func() {
		for a, s := range newDummies {
			if d.dummies[a] == nil {
				s.Close()
			}
		}
	}
	for _, dc := range cfg.Dummies {
		if s := d.dummies[dc.Listen]; s != nil {
			newDummies[dc.Listen] = s
			continue
		}
		s, err := dummy.Listen(dc.Listen, dc.Body, d.Facts)
		if err != nil {
			closeNewDummies()
			rollbackDSR()
			rollback()
			return fmt.Errorf("dummy %s: %w", dc.Listen, err)
		}
		newDummies[dc.Listen] = s
	}
	commitControl, err := d.prepareControl(cfg)
	if err != nil {
		closeNewDummies()
		rollbackDSR()
		rollback()
		return err
	}
	d.commitDSR(dsrSpecs, startedDSR)
	// Commit: stop what is gone; its connections finish on their own.
	for name, r := range d.services {
		if next[name] != r {
			d.stop(r, false)
		}
	}
	for a, s := range d.dummies {
		if newDummies[a] != s {
			s.Close()
		}
	}
	for _, dc := range cfg.Dummies {
		newDummies[dc.Listen].SetBody(dc.Body) // a kept dummy may have a new body
	}
	for path, l := range d.logs {
		if logs[path] != l {
			l.Close() // connections still finishing log nothing more
		}
	}
	d.services, d.dummies, d.logs, d.cfg = next, newDummies, logs, cfg.Clone()
	d.debug.Store(int32(cfg.Debug))
	commitControl()
	for _, r := range started {
		d.log.Printf("service %s: listening on %s/%s (%d backends)", r.cfg.Name, r.cfg.Listen, protoName(r.cfg.Protocol), usedBackends(r.cfg))
	}
	return nil
}

func (d *Daemon) start(sc config.Service, o proxy.Options, bo balance.Options, bs []balance.Server) (*running, error) {
	pool := balance.New(bo, bs)
	name := sc.Name
	svc := proxy.NewService(o, pool, func(format string, args ...any) {
		d.debugf(1, "service "+name+": "+format, args...)
	})
	// Warnings (this host out of descriptors, flow limits) are level 0;
	// the data path rate-limits them.
	svc.SetWarnf(func(format string, args ...any) {
		d.log.Printf("service "+name+": "+format, args...)
	})
	r := &running{cfg: sc, svc: svc, pool: pool}
	var err error
	switch {
	case sc.Protocol == config.UDP:
		r.udp, err = proxy.ServeUDP(svc)
	case sc.TLS != nil || sc.HTTP:
		r.stream, err = proxy.ServeStream(svc)
	default:
		r.tcp = true
		err = d.engine.Listen(svc)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// stop closes a service's listener. With all, its connections close too.
func (d *Daemon) stop(r *running, all bool) {
	switch {
	case r.tcp:
		d.engine.Unlisten(r.svc)
	case r.stream != nil:
		if all {
			r.stream.Close()
		} else {
			r.stream.Unlisten()
		}
	case r.udp != nil:
		r.udp.Close()
	}
}

// Close stops everything. It hangs up on control clients, idle or
// mid-command, and returns once their goroutines are gone; it waits for
// them only after releasing the daemon lock their commands take.
func (d *Daemon) Close() {
	d.mu.Lock()
	if !d.closed {
		d.closed = true
		if d.penctl != nil {
			d.penctl.ln.Close()
			d.penctl = nil
		}
		d.hangUpControl()
		for _, r := range d.services {
			d.stop(r, true)
		}
		for _, s := range d.dummies {
			s.Close()
		}
		for iface, p := range d.dsr {
			p.close()
			delete(d.dsr, iface)
		}
		if d.engine != nil {
			d.engine.Close()
		}
		for _, l := range d.logs {
			l.Close()
		}
		d.logs = map[string]*proxy.ConnLog{}
		d.services = map[string]*running{}
		d.dummies = map[netip.AddrPort]*dummy.Server{}
	}
	d.mu.Unlock()
	d.ctlWG.Wait()
}

// SetRoot sets the directory that request log paths are relative to: Pen's
// -j jail before the chroot (Pen opens its log after chrooting), "" after.
func (d *Daemon) SetRoot(dir string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.root = dir
}

// ReopenLogs reopens the request logs (after log rotation; SIGHUP).
func (d *Daemon) ReopenLogs() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, l := range d.logs {
		if err := l.Reopen(); err != nil {
			errs = append(errs, fmt.Errorf("log %s: %w", l.Path(), err))
		}
	}
	return errors.Join(errs...)
}

// Shutdown stops accepting, then waits up to grace for open connections to
// finish before closing everything.
func (d *Daemon) Shutdown(grace time.Duration) {
	d.mu.Lock()
	for _, r := range d.services {
		if r.udp == nil {
			d.stop(r, false)
		}
	}
	d.mu.Unlock()
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && d.active() > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	d.Close()
}

func (d *Daemon) active() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var n int64
	for _, r := range d.services {
		if r.udp == nil {
			n += r.svc.Counters().Active
		}
	}
	return n
}

func sameListener(a, b config.Service) bool {
	kind := func(s config.Service) int {
		switch {
		case s.Protocol == config.UDP:
			return 0
		case s.TLS != nil || s.HTTP:
			return 1
		}
		return 2
	}
	return a.Listen == b.Listen && a.Protocol == b.Protocol && kind(a) == kind(b) && a.Backlog == b.Backlog
}

func toACL(a config.ACL) *acl.List {
	l := &acl.List{Rules: make([]acl.Rule, len(a.Rules))}
	for i, r := range a.Rules {
		act := acl.Permit
		if r.Action == config.Deny {
			act = acl.Deny
		}
		l.Rules[i] = acl.Rule{Action: act, Prefix: r.Prefix}
	}
	return l
}

func balanceSpec(sc config.Service, acls map[string]*acl.List) (balance.Options, []balance.Server) {
	bo := balance.Options{
		Algorithm:      balance.Algorithm(sc.Algorithm),
		Tracking:       sc.Tracking,
		TrackingExpiry: sc.TrackingExpiry,
		TrackingSize:   sc.TrackingSize,
		HashPort:       sc.HashPort,
		Stubborn:       sc.Stubborn,
		Blacklist:      sc.Blacklist,
		Emergency:      sc.Emergency,
		Abuse:          sc.Abuse,
	}
	if l := acls[sc.ClientACL]; sc.ClientACL != "" && l != nil {
		bo.ClientAllowed = l.Allows
	}
	bs := make([]balance.Server, len(sc.Backends))
	for i, b := range sc.Backends {
		bs[i] = balance.Server{Addr: b.Address, Max: b.Max, Hard: b.Hard, Weight: b.Weight, Prio: b.Prio}
		if !b.Used() {
			bs[i].Addr = netip.AddrPort{}
		}
		if l := acls[b.ACL]; b.ACL != "" && l != nil {
			bs[i].Allow = l.Allows
		}
	}
	return bo, bs
}

func proxyOptions(sc config.Service) (proxy.Options, error) {
	o := proxy.Options{
		Name:           sc.Name,
		Listen:         sc.Listen,
		ConnectTimeout: sc.ConnectTimeout,
		IdleTimeout:    sc.IdleTimeout,
		MaxConnections: sc.MaxConnections,
		HTTP:           sc.HTTP,
		ProxyProtocol:  int(sc.ProxyProtocol),
		Source:         sc.Source,
		NoDelay:        sc.NoDelay,
		KeepAlive:      sc.KeepAlive,
		Backlog:        sc.Backlog,
	}
	if sc.TLS != nil {
		tc, err := tlsConfig(sc.TLS)
		if err != nil {
			return o, err
		}
		o.TLS = tc
	}
	return o, nil
}

func protoName(p config.Protocol) string {
	if p == config.UDP {
		return "udp"
	}
	return "tcp"
}

func usedBackends(sc config.Service) int {
	n := 0
	for _, b := range sc.Backends {
		if b.Used() {
			n++
		}
	}
	return n
}

// service finds a running service by name; "" means the first.
func (d *Daemon) service(name string) (*running, error) {
	if name == "" && d.cfg != nil && len(d.cfg.Services) > 0 {
		name = d.cfg.Services[0].Name
	}
	if r := d.services[name]; r != nil {
		return r, nil
	}
	return nil, errors.New("no such service: " + name)
}
