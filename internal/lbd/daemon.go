package lbd

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/acl"
	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/control"
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
	// retired are services a reload removed (or whose socket another took
	// over) that may still have connections: Shutdown waits for them and
	// Close closes them. UDP services close their flows when retired.
	retired  []*running
	dummies  map[netip.AddrPort]*dummy.Server
	penctl   *penControl
	logs     map[string]*proxy.ConnLog // request logs by path
	dsr      map[string]*dsrPort       // DSR machinery by interface
	exit     chan struct{}
	exitOnce sync.Once
	debug    atomic.Int32 // cfg.Debug, for lock-free reads
	root     string       // Pen's -j jail until lbd has chrooted; see SetRoot
	// failAt makes a reload step fail (reload.go, step): a hook for tests,
	// which set it under mu.
	failAt string

	// Control goroutines take mu for their commands, so nothing holding mu
	// may wait for them: they are counted here and waited for by Close
	// after it lets go of mu.
	ctlWG     sync.WaitGroup
	ctlMu     sync.Mutex // guards ctlConns and ctlClosed; held only briefly, never while waiting
	ctlConns  map[net.Conn]struct{}
	ctlClosed bool
	penACL    atomic.Pointer[ctlACL] // control ACL of the running config
	api       apiState               // the HTTPS control API (api.go)
	reloads   reloadCounts           // config file re-reads by outcome
	hc        healthRun              // active health checks (health.go)
	// DebugBoost is lbd's -d count, added to the debug level of every
	// config loaded from a file and taken off again when one is saved.
	DebugBoost int
	// saved passes the data of a config saved by write to the main loop
	// in appliance mode (it becomes the last good one); nil otherwise.
	saved chan []byte

	// PenFile is the Pen -F file re-read on SIGHUP in Pen mode.
	PenFile string
	// TOMLFile is the -config file; the write verb saves the running
	// config there.
	TOMLFile string
	// StateDir is lbd's state directory (-state): the HTTPS control API
	// keeps its secrets there and needs it.
	StateDir string
	// Loops is the number of TCP engine loops; 0 means GOMAXPROCS.
	Loops int
	// DSRPath chooses the DSR data path: dsrpath.Auto ("" too), dsrpath.XDP,
	// dsrpath.XDPGeneric or dsrpath.Packet.
	DSRPath string
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

// Apply makes cfg the running configuration, all or nothing: it returns nil
// once all of cfg runs, or an error and the running state exactly as it
// was: the same configuration (Config), listeners, pools and weights, DSR
// ports, dummies and bodies, request logs and control listener, all still
// serving. Control commands that change the configuration, SIGHUP and the
// appliance's config handling apply through it. It works in two phases
// (reload.go): prepare opens and checks everything that can fail without
// touching what runs, then commit swaps it in and cannot fail.
//
// What a reload keeps:
//   - A service that keeps its name, address, protocol and kind (TCP
//     engine; stream, for TLS or HTTP; UDP) keeps its listener, its pool
//     (blacklists, statistics, tracked clients) and its connections, and
//     takes its new options and backends.
//   - A service on the address of a running one of another kind or name
//     takes over that one's socket: the port is never closed, connections
//     queued in the kernel are not lost, and the old service's
//     established connections finish under the old configuration (UDP
//     flows close). A changed backlog is set on the running socket.
//   - DSR ports that stay keep their sockets and flows and follow the new
//     services; dummies that keep their address keep their socket and take
//     their new body; open request logs and the control listener stay.
//
// What it cannot do: bind a listener to an address that overlaps a running
// listener it replaces without being the same address (0.0.0.0:80 and
// 192.0.2.1:80), or move an address between a service, a dummy and the
// control listener: the old one stays bound until the reload is done, so
// the new one cannot be opened and Apply fails, changing nothing (its error
// says so). Such a move takes two reloads.
func (d *Daemon) Apply(cfg *config.Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.applyLocked(cfg)
}

// errClosed is what a closed daemon answers to Apply and control commands.
var errClosed = errors.New("lbd is shutting down")

// applyLocked is Apply with d.mu held.
func (d *Daemon) applyLocked(cfg *config.Config) error {
	if d.closed {
		return errClosed
	}
	t, err := d.prepare(cfg)
	if err != nil {
		return err
	}
	t.commit()
	return nil
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
	var api *control.Server
	d.mu.Lock()
	if !d.closed {
		d.closed = true
		if d.penctl != nil {
			d.penctl.ln.Close()
			d.penctl = nil
		}
		d.hangUpControl()
		api = d.closeAPI()
		d.closeHealth()
		for _, r := range d.services {
			d.stop(r, true)
		}
		for _, r := range d.retired {
			d.stop(r, true)
		}
		d.retired = nil
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
	d.waitHealth()
	if api != nil {
		api.Wait()
	}
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
	for _, r := range d.retired {
		n += r.svc.Counters().Active
	}
	return n
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
		bs[i] = balance.Server{Addr: b.Address, Max: b.Max, Hard: b.Hard, Weight: b.Weight, Prio: b.Prio, Drain: b.Drain}
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
