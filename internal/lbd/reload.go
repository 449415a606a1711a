package lbd

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/acl"
	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/dsr"
	"github.com/nib-lb/nib/internal/dummy"
	"github.com/nib-lb/nib/internal/proxy"
)

// A reload is one transaction (Apply, and every control command that
// changes the configuration, under Daemon.mu):
//
// prepare builds everything the new configuration needs and that can fail,
// and touches nothing that runs: it validates the configuration, opens the
// new request logs, reads TLS files, creates the TCP engine, opens each
// service's listening socket (or another descriptor of the running socket
// it takes over), opens the new DSR ports (ARP and packet sockets) and
// checks the packet filters of the ones that stay, opens the dummies'
// sockets, the control listener and the HTTPS control API's listener
// (api.go; its secrets are loaded or created once). A socket opened here is listening, so
// connections queue in the kernel, but nothing accepts them yet. Its last
// step, the only one that changes a running object, updates the DSR
// forwarders that stay (their packet filters and tables); should one fail,
// those already updated get their previous services back (their previous
// filters, which the kernel took before; should it refuse them now, out of
// memory, that is logged).
//
// commit, once prepare succeeded, swaps the new state in: services that are
// gone or hand their socket over stop accepting (their connections finish
// under the old configuration), new ones start serving, kept ones get their
// new backends and options, DSR ports start, follow or stop, dummies start or
// take their new body, old logs and listeners close, and the configuration,
// debug level and control ACL are replaced. None of it can fail: it
// assigns, starts goroutines and closes. The one kernel call that could —
// adding a new engine listener to a loop's epoll set (out of memory, or at
// fs.epoll.max_user_watches) — is retried every 100 ms by the engine, as
// after an accept that failed for lack of resources, while connections wait
// in the backlog; it is logged. (So is a failure to set a kept engine
// service's new backlog, listen(2) on its listening socket, which does not
// fail.)
//
// abort, when a prepare step failed, closes what prepare opened (a new log
// file it created is removed again) and gives the DSR forwarders updated by
// the last step their services back: the running state is as it was.
//
// A test makes a step fail with Daemon.failAt (see step).

// errInjected is the failure a test injects at a reload step.
var errInjected = errors.New("injected failure")

// step is called after each prepare step has built what it names, in this
// order: "log PATH" (a new request log), "tls SERVICE" (its certificates
// read), "engine" (the TCP engine created), "listen SERVICE" (its socket
// opened or shared), "dsr IFACE" (a new port opened, or the filter of one
// that stays checked), "dummy ADDR" (its socket opened), "control" (the
// control listener prepared), "control-api" (the HTTPS control API's
// listener opened), "dsr-update IFACE" (a forwarder that stays
// updated). It fails when Daemon.failAt, a hook only tests set, is the
// step's name or its first word: the reload must then abort and release
// what was built so far, that step's resource included.
func (d *Daemon) step(name string) error {
	if d.failAt != "" && (d.failAt == name || strings.HasPrefix(name, d.failAt+" ")) {
		return fmt.Errorf("%s: %w", name, errInjected)
	}
	return nil
}

// kindOf is who serves a proxy service.
func kindOf(sc config.Service) proxy.Kind {
	switch {
	case sc.Protocol == config.UDP:
		return proxy.UDPKind
	case sc.TLS != nil || sc.HTTP:
		return proxy.StreamKind
	}
	return proxy.EngineKind
}

// kind is who serves r.
func (r *running) kind() proxy.Kind {
	switch {
	case r.udp != nil:
		return proxy.UDPKind
	case r.stream != nil:
		return proxy.StreamKind
	}
	return proxy.EngineKind
}

// sockKey identifies a listening socket.
type sockKey struct {
	addr netip.AddrPort
	udp  bool
}

func keyOf(sc config.Service) sockKey {
	return sockKey{sc.Listen, sc.Protocol == config.UDP}
}

// svcPlan is a proxy service of the new configuration.
type svcPlan struct {
	sc   config.Service
	opts proxy.Options
	bo   balance.Options
	bs   []balance.Server
	// keep is the running service that stays as it is (same name,
	// address, protocol and kind): its listener, pool and connections.
	keep *running
	// Otherwise sock is the socket to serve: opened by this reload, or
	// another descriptor of the running socket of from, whose address
	// this service takes over.
	sock *proxy.Socket
	from *running
}

// dsrPlan is a DSR port of the new configuration.
type dsrPlan struct {
	iface string
	spec  *dsrSpec
	port  *dsrPort
	isNew bool // opened by this reload; else the running port
	// touched: fwd.Update was called (undone on abort, also when it
	// failed: it may have changed some sockets' filters).
	touched bool
}

// dummyPlan is a dummy of the new configuration: a running one that keeps
// its address, or a socket opened for it.
type dummyPlan struct {
	dc   config.Dummy
	keep *dummy.Server
	ln   *dummy.Listener
}

// newLog is a request log this reload opened.
type newLog struct {
	l       *proxy.ConnLog
	file    string // as opened (inside the jail)
	created bool   // the file did not exist before
}

// txn is a reload between prepare and commit (or abort).
type txn struct {
	d       *Daemon
	cfg     *config.Config
	engine  *proxy.Engine // created by this reload
	logs    map[string]*proxy.ConnLog
	newLogs []newLog
	svcs    []*svcPlan
	dsr     []*dsrPlan
	dummies []*dummyPlan
	// commitControl puts the control listener and ACL in place;
	// abortControl closes a listener prepare opened.
	commitControl, abortControl func()
	// commitAPI and abortAPI do the same for the HTTPS control API.
	commitAPI, abortAPI func()
}

// prepare builds what cfg needs (see the top of this file). On error it
// has released all it built and nothing has changed.
func (d *Daemon) prepare(cfg *config.Config) (_ *txn, err error) {
	if err := config.Validate(cfg); err != nil {
		return nil, err
	}
	t := &txn{d: d, cfg: cfg.Clone(), logs: map[string]*proxy.ConnLog{}}
	cfg = t.cfg
	defer func() {
		if err != nil {
			t.abort()
		}
	}()
	acls := make(map[string]*acl.List, len(cfg.ACLs))
	for name, a := range cfg.ACLs {
		acls[name] = &a // config.ACL is acl.List; the applied config is never changed in place
	}

	// Request logs: keep the open ones, open new ones.
	for _, sc := range cfg.Services {
		if sc.Log == "" || t.logs[sc.Log] != nil {
			continue
		}
		if l := d.logs[sc.Log]; l != nil {
			t.logs[sc.Log] = l
			continue
		}
		if err := t.openLog(sc.Log); err != nil {
			return nil, fmt.Errorf("service %q: log: %w", sc.Name, err)
		}
	}

	// Services: options (TLS files), and what happens to their listener.
	running := make(map[sockKey]*running, len(d.services))
	for _, r := range d.services {
		running[keyOf(r.cfg)] = r
	}
	needEngine := false
	for _, sc := range cfg.Services {
		if sc.Mode == config.ModeDSR {
			continue // see below
		}
		opts, err := proxyOptions(sc)
		if err != nil {
			return nil, fmt.Errorf("service %q: %w", sc.Name, err)
		}
		if sc.TLS != nil {
			if err := d.step("tls " + sc.Name); err != nil {
				return nil, err
			}
		}
		opts.Log = t.logs[sc.Log]
		bo, bs := balanceSpec(sc, acls)
		p := &svcPlan{sc: sc, opts: opts, bo: bo, bs: bs}
		if old := running[keyOf(sc)]; old != nil {
			if old.cfg.Name == sc.Name && old.kind() == kindOf(sc) {
				p.keep = old
			} else {
				p.from = old
			}
		}
		if p.keep == nil && kindOf(sc) == proxy.EngineKind {
			needEngine = true
		}
		t.svcs = append(t.svcs, p)
	}
	if needEngine && d.engine == nil {
		n := d.Loops
		if n <= 0 {
			n = runtime.GOMAXPROCS(0)
		}
		e, err := proxy.NewEngine(n)
		if err != nil {
			return nil, err
		}
		e.SetLogf(d.log.Printf)
		t.engine = e
		if err := d.step("engine"); err != nil {
			return nil, err
		}
	}
	for _, p := range t.svcs {
		if p.keep != nil {
			continue
		}
		kind := kindOf(p.sc)
		var err error
		switch {
		case p.from == nil:
			p.sock, err = proxy.Open(kind, p.sc.Listen, p.sc.Backlog)
			err = d.overlapHint(p.sc, err)
		case p.from.udp != nil:
			p.sock, err = p.from.udp.Share()
		case p.from.stream != nil:
			p.sock, err = p.from.stream.Share(kind)
		default:
			p.sock, err = d.engine.Share(p.from.svc, kind)
		}
		if err != nil {
			return nil, fmt.Errorf("service %q: %w", p.sc.Name, err)
		}
		if err := d.step("listen " + p.sc.Name); err != nil {
			return nil, err
		}
	}

	// DSR ports: open new ones, check the filters of those that stay.
	specs := dsrSpecs(cfg, acls)
	for _, iface := range slices.Sorted(maps.Keys(specs)) {
		sp := specs[iface]
		p := &dsrPlan{iface: iface, spec: sp, port: d.dsr[iface]}
		if p.port == nil {
			port, err := d.openDSR(iface, sp)
			if err != nil {
				return nil, err
			}
			p.port, p.isNew = port, true
			t.dsr = append(t.dsr, p)
		} else {
			t.dsr = append(t.dsr, p)
			if _, err := dsr.Filter(sp.uniqueVIPs(), sp.tarpit.Prefixes); err != nil {
				return nil, fmt.Errorf("dsr %s: %w", iface, err)
			}
		}
		if err := d.step("dsr " + iface); err != nil {
			return nil, err
		}
	}

	// Dummies: keep those whose address stays, open the others.
	for _, dc := range cfg.Dummies {
		p := &dummyPlan{dc: dc, keep: d.dummies[dc.Listen]}
		t.dummies = append(t.dummies, p)
		if p.keep != nil {
			continue
		}
		ln, err := dummy.Open(dc.Listen)
		if err != nil {
			return nil, fmt.Errorf("dummy %s: %w", dc.Listen, d.overlapHint(config.Service{Listen: dc.Listen}, err))
		}
		p.ln = ln
		if err := d.step("dummy " + dc.Listen.String()); err != nil {
			return nil, err
		}
	}

	t.commitControl, t.abortControl, err = d.prepareControl(cfg)
	if err != nil {
		return nil, err
	}
	if err := d.step("control"); err != nil {
		return nil, err
	}
	t.commitAPI, t.abortAPI, err = d.prepareAPI(cfg)
	if err != nil {
		return nil, err
	}
	if err := d.step("control-api"); err != nil {
		return nil, err
	}

	// Last, the one step that changes running objects: the DSR forwarders
	// that stay take their new services (packet filter and tables). A
	// failure gives those already updated their previous services back.
	for _, p := range t.dsr {
		if p.isNew {
			continue
		}
		p.touched = true
		if err := p.port.fwd.Update(p.spec.services, p.spec.tarpit); err != nil {
			return nil, fmt.Errorf("dsr %s: %w", p.iface, err)
		}
		if err := d.step("dsr-update " + p.iface); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// openLog opens a request log for t.
func (t *txn) openLog(path string) error {
	file := path
	if t.d.root != "" {
		file = filepath.Join(t.d.root, filepath.Join("/", path))
	}
	_, statErr := os.Lstat(file)
	l, err := proxy.OpenConnLogIn(t.d.root, path)
	if err != nil {
		return err
	}
	t.logs[path] = l
	t.newLogs = append(t.newLogs, newLog{l: l, file: file, created: errors.Is(statErr, fs.ErrNotExist)})
	return t.d.step("log " + path)
}

// overlapHint explains a socket that cannot be bound because a running
// listener of another service, a dummy or the control listener overlaps
// it: that one stays bound until the reload is done.
func (d *Daemon) overlapHint(sc config.Service, err error) error {
	if !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	k := keyOf(sc)
	overlaps := func(a netip.AddrPort, udp bool) bool {
		return udp == k.udp && a.Port() == k.addr.Port() &&
			(a.Addr() == k.addr.Addr() || a.Addr().IsUnspecified() || k.addr.Addr().IsUnspecified())
	}
	var holder string
	var at netip.AddrPort
	for _, name := range slices.Sorted(maps.Keys(d.services)) {
		if r := d.services[name]; overlaps(r.cfg.Listen, r.cfg.Protocol == config.UDP) {
			holder, at = fmt.Sprintf("the running service %q", name), r.cfg.Listen
			break
		}
	}
	if holder == "" {
		for a := range d.dummies {
			if overlaps(a, false) {
				holder, at = "a running dummy", a
				break
			}
		}
	}
	if holder == "" && d.penctl != nil {
		if a, perr := netip.ParseAddrPort(d.penctl.addr); perr == nil && overlaps(a, false) {
			holder, at = "the running control listener", a
		}
	}
	if holder == "" {
		return err
	}
	return fmt.Errorf("%w: %s on %s overlaps it and stays bound until the reload is done; "+
		"only a listener on the very same address is taken over: move it in two reloads (remove the old one, then add the new one)", err, holder, at)
}

// commit swaps the prepared state in. It cannot fail.
func (t *txn) commit() {
	d, cfg := t.d, t.cfg
	if t.engine != nil {
		d.engine = t.engine
	}
	// Services that are gone, or whose socket another takes over, stop
	// accepting first: a socket is never served twice. Their connections
	// finish under the old configuration.
	kept := map[*running]bool{}
	for _, p := range t.svcs {
		if p.keep != nil {
			kept[p.keep] = true
		}
	}
	for _, r := range d.services {
		if !kept[r] {
			d.retire(r)
		}
	}
	next := make(map[string]*running, len(t.svcs))
	for _, p := range t.svcs {
		if k := p.keep; k != nil {
			k.pool.Update(p.bo, p.bs)
			k.svc.SetOptions(p.opts)
			if k.tcp && k.cfg.Backlog != p.sc.Backlog {
				if err := d.engine.SetBacklog(k.svc, p.sc.Backlog); err != nil {
					d.log.Printf("service %s: backlog: %v", p.sc.Name, err)
				}
			}
			k.cfg = p.sc
			next[p.sc.Name] = k
			continue
		}
		r := d.serve(p)
		next[p.sc.Name] = r
		if p.from != nil {
			d.log.Printf("service %s: took over %s/%s from service %s (%v, %d backends)", r.cfg.Name, r.cfg.Listen, protoName(r.cfg.Protocol), p.from.cfg.Name, r.kind(), usedBackends(r.cfg))
		} else {
			d.log.Printf("service %s: listening on %s/%s (%d backends)", r.cfg.Name, r.cfg.Listen, protoName(r.cfg.Protocol), usedBackends(r.cfg))
		}
	}
	t.commitDSR()
	next2 := make(map[netip.AddrPort]*dummy.Server, len(t.dummies))
	for _, p := range t.dummies {
		if p.keep != nil {
			p.keep.SetBody(p.dc.Body)
			next2[p.dc.Listen] = p.keep
		} else {
			next2[p.dc.Listen] = p.ln.Serve(p.dc.Body, d.Facts)
		}
	}
	for a, s := range d.dummies {
		if next2[a] != s {
			s.Close()
		}
	}
	for path, l := range d.logs {
		if t.logs[path] != l {
			l.Close() // connections still finishing log nothing more
		}
	}
	d.services, d.dummies, d.logs, d.cfg = next, next2, t.logs, cfg
	d.debug.Store(int32(cfg.Debug))
	t.commitControl()
	t.commitAPI()
	d.syncHealth(cfg)
}

// serve starts a new service on its prepared socket.
func (d *Daemon) serve(p *svcPlan) *running {
	pool := balance.New(p.bo, p.bs)
	name := p.sc.Name
	svc := proxy.NewService(p.opts, pool, func(format string, args ...any) {
		d.debugf(1, "service "+name+": "+format, args...)
	})
	// Warnings (this host out of descriptors, flow limits) are level 0;
	// the data path rate-limits them.
	svc.SetWarnf(func(format string, args ...any) {
		d.log.Printf("service "+name+": "+format, args...)
	})
	r := &running{cfg: p.sc, svc: svc, pool: pool}
	switch p.sock.Kind() {
	case proxy.UDPKind:
		r.udp = proxy.ServeUDPSocket(svc, p.sock)
	case proxy.StreamKind:
		r.stream = proxy.ServeStreamSocket(svc, p.sock)
	default:
		r.tcp = true
		d.engine.Serve(svc, p.sock)
	}
	return r
}

// retire stops a service accepting; its connections finish on their own
// (UDP flows close), and Shutdown and Close still see them.
func (d *Daemon) retire(r *running) {
	d.stop(r, false)
	if r.udp == nil {
		d.retired = append(d.retired, r)
	}
	// Forget those that are done.
	d.retired = slices.DeleteFunc(d.retired, func(r *running) bool { return r.svc.Counters().Active == 0 })
}

// commitDSR starts the new DSR ports, gives those that stay their new
// services for ARP and the control verbs (their forwarders were updated in
// prepare), and stops the ports that are gone.
func (t *txn) commitDSR() {
	d := t.d
	want := map[string]bool{}
	for _, p := range t.dsr {
		want[p.iface] = true
		p.port.arp.SetVIPs(p.spec.vips)
		p.port.arp.SetBackends(p.spec.backends)
		p.port.arp.SetTarpit(p.spec.tarpit.Match)
		p.port.mu.Lock()
		p.port.services = p.spec.cfg
		p.port.spec = p.spec
		p.port.mu.Unlock()
		if p.isNew {
			p.port.start(d)
			d.dsr[p.iface] = p.port
		}
	}
	for iface, p := range d.dsr {
		if !want[iface] {
			p.close()
			delete(d.dsr, iface)
		}
	}
}

// abort releases what prepare built; the running state was not touched
// except by DSR updates, which are undone.
func (t *txn) abort() {
	d := t.d
	for _, p := range t.dsr {
		if p.touched {
			old := p.port.spec
			if err := p.port.fwd.Update(old.services, old.tarpit); err != nil {
				d.log.Printf("dsr %s: restoring the running services after a failed reload: %v", p.iface, err)
			}
		}
	}
	if t.abortAPI != nil {
		t.abortAPI()
	}
	if t.abortControl != nil {
		t.abortControl()
	}
	for _, p := range t.dummies {
		if p.ln != nil {
			p.ln.Close()
		}
	}
	for _, p := range t.dsr {
		if p.isNew {
			p.port.close()
		}
	}
	for _, p := range t.svcs {
		if p.sock != nil {
			p.sock.Close() // a shared socket lives on with its server
		}
	}
	if t.engine != nil {
		t.engine.Close()
	}
	for _, nl := range t.newLogs {
		nl.l.Close()
		if nl.created {
			if st, err := os.Lstat(nl.file); err == nil && st.Mode().IsRegular() && st.Size() == 0 {
				os.Remove(nl.file)
			}
		}
	}
}
