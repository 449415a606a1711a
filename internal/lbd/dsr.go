package lbd

import (
	"context"
	"fmt"
	"html"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/acl"
	"github.com/nib-lb/nib/internal/arpd"
	"github.com/nib-lb/nib/internal/dsr"
	"github.com/nib-lb/nib/internal/dsrpath"
	"github.com/nib-lb/nib/internal/xdp"
)

// forwarder is a DSR data path: internal/dsr's AF_PACKET forwarder or
// internal/xdp's XDP program, which has the same methods.
type forwarder interface {
	SetMAC([6]byte)
	Update([]dsr.ServiceConfig, dsr.Tarpit) error
	Refresh()
	Run(context.Context) error
	Stats() dsr.Stats
	Close()
}

var (
	_ forwarder = (*dsr.Forwarder)(nil)
	_ forwarder = (*xdp.Forwarder)(nil)
)

// dsrPort is the DSR machinery on one interface: the ARP daemon that
// answers for its VIPs and resolves its backends, and the forwarder.
//
// A reload opens a new port (openDSR) before it changes anything and
// starts it (start) when it commits; a port that stays has its forwarder
// updated as the reload's last prepare step (reload.go).
type dsrPort struct {
	iface   string
	ifi     *net.Interface // as read when the port was opened
	workers int
	arp     *arpd.Daemon
	fwd     forwarder
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu        sync.Mutex
	blacklist map[netip.Addr]time.Time // penctl "server N blacklist T"
	// healthDown is, per service, the backends its health check holds
	// down (setHealthDown).
	healthDown map[string]map[netip.Addr]bool
	services   []config.Service
	// spec is what the port runs: what a failed reload gives its
	// forwarder back.
	spec *dsrSpec
}

// down reports backends that must get no new flows of a service: not
// answering ARP, blacklisted by the operator, or held down by the
// service's health check.
func (p *dsrPort) down(service string, a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.downLocked(a) || p.healthDown[service][a]
}

// setHealthDown replaces the backends a service's health check holds down
// (fail open already decided by the caller) and moves their flows.
func (p *dsrPort) setHealthDown(service string, down map[netip.Addr]bool) {
	p.mu.Lock()
	if p.healthDown == nil {
		p.healthDown = map[string]map[netip.Addr]bool{}
	}
	same := sameSet(p.healthDown[service], down)
	p.healthDown[service] = down
	p.mu.Unlock()
	if !same {
		p.fwd.Refresh()
	}
}

// dsrSpec is what one interface's services turn into.
type dsrSpec struct {
	services []dsr.ServiceConfig
	tarpit   dsr.Tarpit
	vips     []netip.Addr
	backends []netip.Addr
	flows    int
	idle     time.Duration
	cfg      []config.Service
}

// dsrSpecs groups the DSR services of cfg by interface.
func dsrSpecs(cfg *config.Config, acls map[string]*acl.List) map[string]*dsrSpec {
	out := map[string]*dsrSpec{}
	for _, sc := range cfg.Services {
		if sc.Mode != config.ModeDSR {
			continue
		}
		sp := out[sc.Interface]
		if sp == nil {
			sp = &dsrSpec{}
			out[sc.Interface] = sp
		}
		proto := uint8(dsr.ProtoTCP)
		if sc.Protocol == config.UDP {
			proto = dsr.ProtoUDP
		}
		ds := dsr.ServiceConfig{Name: sc.Name, VIP: sc.Listen.Addr(), Port: sc.Listen.Port(), Proto: proto, PerFlow: !sc.Tracking}
		for _, b := range sc.Backends {
			if !b.Used() {
				continue
			}
			ds.Backends = append(ds.Backends, dsr.BackendConfig{Addr: b.Address.Addr(), Weight: dsrWeight(b)})
			sp.backends = append(sp.backends, b.Address.Addr())
		}
		sp.services = append(sp.services, ds)
		sp.vips = append(sp.vips, ds.VIP)
		sp.flows = max(sp.flows, sc.MaxConnections)
		sp.idle = max(sp.idle, sc.IdleTimeout)
		sp.cfg = append(sp.cfg, sc)
		if l := acls[sc.TarpitACL]; sc.TarpitACL != "" && l != nil {
			prev := sp.tarpit.Match
			if prev == nil {
				sp.tarpit.Exact = true
			}
			sp.tarpit.Match = func(a netip.Addr) bool { return l.Allows(a) || prev != nil && prev(a) }
			for _, r := range l.Rules {
				switch {
				case r.Action == acl.Permit && r.Prefix.IsValid():
					sp.tarpit.Prefixes = append(sp.tarpit.Prefixes, r.Prefix)
				case r.Action != acl.Permit:
					sp.tarpit.Exact = false // a deny rule carves holes out of the prefixes
				}
			}
		}
	}
	return out
}

// uniqueVIPs are the VIPs once each, as the forwarder's filter takes them.
func (sp *dsrSpec) uniqueVIPs() []netip.Addr {
	var out []netip.Addr
	for _, v := range sp.vips {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// openDSR opens a DSR port on iface for sp (a reload's prepare): its ARP
// and packet sockets. Nothing runs on them until start; close releases it.
func (d *Daemon) openDSR(iface string, sp *dsrSpec) (*dsrPort, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("dsr: interface %q: %w", iface, err)
	}
	logf := d.dsrLogf(iface)
	a, err := arpd.New(ifi, logf)
	if err != nil {
		return nil, fmt.Errorf("dsr %s: %w", iface, err)
	}
	p := &dsrPort{iface: iface, ifi: ifi, arp: a, blacklist: map[netip.Addr]time.Time{}, services: sp.cfg, spec: sp}
	p.workers = d.Loops
	if p.workers <= 0 {
		p.workers = runtime.GOMAXPROCS(0)
	}
	p.fwd, err = d.newForwarder(dsr.Config{Interface: ifi, Workers: p.workers, FlowTableSize: sp.flows, FlowIdle: sp.idle}, sp, a, p.down, logf)
	if err != nil {
		a.Close()
		return nil, err
	}
	return p, nil
}

// newForwarder opens the data path d.DSRPath asks for.
func (d *Daemon) newForwarder(cfg dsr.Config, sp *dsrSpec, a *arpd.Daemon, down func(string, netip.Addr) bool, logf func(string, ...any)) (forwarder, error) {
	if d.DSRPath != dsrpath.Packet {
		newXDP := xdp.New
		if d.DSRPath == dsrpath.XDPGeneric {
			newXDP = xdp.NewGeneric
		}
		f, err := newXDP(cfg, sp.services, sp.tarpit, a, down, logf)
		if err == nil {
			logf("XDP forwarder attached (%s; %s)", f.Mode(), f.Compiled())
			return f, nil
		}
		if d.DSRPath == dsrpath.XDP || d.DSRPath == dsrpath.XDPGeneric {
			return nil, fmt.Errorf("dsr %s: XDP (-dsr-path %s): %w", cfg.Interface.Name, d.DSRPath, err)
		}
		logf("XDP is not available (%v): using the AF_PACKET forwarder", err)
	}
	return dsr.New(cfg, sp.services, sp.tarpit, a, down, logf)
}

func (d *Daemon) dsrLogf(iface string) func(string, ...any) {
	return func(format string, args ...any) { d.log.Printf("dsr "+iface+": "+format, args...) }
}

// start runs an opened port (a reload's commit): ARP, the forwarder, the
// interface watch and the backend health loop.
func (p *dsrPort) start(d *Daemon) {
	iface, ifi, a := p.iface, p.ifi, p.arp
	logf := d.dsrLogf(iface)
	// Frames for the VIPs reach the kernel too (they carry our MAC). With
	// forwarding on it would route them on as well: duplicates.
	if b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + iface + "/forwarding"); err == nil && strings.TrimSpace(string(b)) == "1" {
		logf("WARNING: IPv4 forwarding is on for %s, so the kernel forwards VIP frames as well as lbd; set net.ipv4.conf.%s.forwarding=0", iface, iface)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(4)
	go func() {
		// The interface can change under arpd and the forwarder, which
		// read it once when opened: a new address (DHCP), the link going
		// down and up, a new MAC. Follow it (netwatch.go); the first
		// reading catches what changed since.
		defer p.wg.Done()
		p.watchLink(ctx, ifi.Index, linkView{
			up:  ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagRunning != 0,
			mac: [6]byte(ifi.HardwareAddr),
			ip:  a.IP(),
		}, logf)
	}()
	go func() {
		defer p.wg.Done()
		if err := a.Run(ctx); err != nil {
			logf("arp: %v", err)
		}
	}()
	go func() {
		defer p.wg.Done()
		if err := p.fwd.Run(ctx); err != nil {
			logf("forwarder: %v", err)
		}
	}()
	go func() {
		// Backends that stop answering ARP (or come back, or whose
		// blacklist ends) change the Maglev tables.
		defer p.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last uint64
		var lastDown map[netip.Addr]bool
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			p.mu.Lock()
			down := map[netip.Addr]bool{}
			for _, sc := range p.services {
				for _, b := range sc.Backends {
					if a := b.Address.Addr(); p.downLocked(a) {
						down[a] = true
					}
				}
			}
			p.mu.Unlock()
			if v := a.Version(); v != last || !sameSet(down, lastDown) {
				last, lastDown = v, down
				p.fwd.Refresh()
			}
		}
	}()
	p.mu.Lock()
	n := len(p.services)
	p.mu.Unlock()
	logf("forwarding %d services (%d workers)", n, p.workers)
}

func (p *dsrPort) downLocked(a netip.Addr) bool {
	return p.arp.Down(a) || p.blacklistedLocked(a)
}

// blacklisted reports whether the operator blacklisted a for now.
func (p *dsrPort) blacklisted(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blacklistedLocked(a)
}

func (p *dsrPort) blacklistedLocked(a netip.Addr) bool {
	until, ok := p.blacklist[a]
	return ok && time.Now().Before(until)
}

func sameSet(a, b map[netip.Addr]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func (p *dsrPort) close() {
	if p.cancel != nil {
		p.cancel()
	}
	p.fwd.Close()
	p.arp.Close()
	p.wg.Wait()
}

// dsrByName finds a DSR service by name; "" means the first service if
// that one is DSR (Pen's verbs act on it).
func (d *Daemon) dsrByName(name string) (*dsrPort, config.Service, bool) {
	if name == "" && d.cfg != nil && len(d.cfg.Services) > 0 {
		name = d.cfg.Services[0].Name
	}
	return d.dsrService(name)
}

// backendStats are a DSR service's backend counters by address.
func backendStats(p *dsrPort, service string) map[netip.Addr]dsr.BackendStats {
	out := map[netip.Addr]dsr.BackendStats{}
	for _, s := range p.fwd.Stats().Services {
		if s.Name == service {
			for _, b := range s.Backends {
				out[b.Addr] = b
			}
		}
	}
	return out
}

// dsrStatusHTML is the status page of a DSR service: forwarding and drop
// counters, per backend, and the ARP side.
func dsrStatusHTML(p *dsrPort, sc config.Service, withHealth func(string, config.Backend) string, w io.Writer) error {
	st := p.fwd.Stats()
	bs := backendStats(p, sc.Name)
	fmt.Fprintf(w, "<html>\n<head>\n<title>Pen status page</title>\n</head>\n<body>\n")
	fmt.Fprintf(w, "<h1>lbd status: %s (DSR on %s, VIP %s)</h1>\n", html.EscapeString(sc.Name), html.EscapeString(p.iface), sc.Listen)
	fmt.Fprintf(w, "Time %s, %d servers<p>\n", time.Now().Format("2006-01-02 15:04:05"), len(sc.Backends))
	fmt.Fprintf(w, "<table border=1>\n<tr><th>server</th><th>address</th><th>status</th><th>packets</th><th>bytes</th><th>weight</th></tr>\n")
	for i, b := range sc.Backends {
		a := b.Address.Addr()
		status := p.backendState(a, b)
		if status == "down" {
			status = "down (no ARP reply)"
		}
		status = withHealth(status, b)
		fmt.Fprintf(w, "<tr><td>%d</td><td>%s</td><td>%s</td><td>%d</td><td>%d</td><td>%d</td></tr>\n", i, a, status, bs[a].Packets, bs[a].Bytes, b.Weight)
	}
	fmt.Fprintf(w, "</table>\n<p>Frames received %d, forwarded %d (%d with partial checksums, %d super-frames), tarpit SYN+ACKs %d, receive errors %d</p>\n",
		st.Received, st.Forwarded, st.PartialChecksums, st.SuperFrames, st.TarpitReplies, st.ReadErrors)
	fmt.Fprintf(w, "<p>Dropped:")
	for _, k := range slices.Sorted(maps.Keys(st.Drops)) {
		fmt.Fprintf(w, " %s %d", k, st.Drops[k])
	}
	c := p.arp.Counters()
	fmt.Fprintf(w, "</p>\n<p>ARP: requests seen %d, VIP replies %d, tarpit replies %d, backend replies learned %d, unsolicited ignored %d, conflicts %d</p>\n",
		c.RequestsSeen, c.RepliesVIP, c.RepliesTarpit, c.BackendLearned, c.UnsolicitedIgnored, c.Conflicts)
	for _, v := range p.arp.VIPs() {
		fmt.Fprintf(w, "<p>VIP %s: %s</p>\n", v.Addr, v.State)
	}
	fmt.Fprintf(w, "</body>\n</html>\n")
	return nil
}

// dsrService finds a DSR service by name.
func (d *Daemon) dsrService(name string) (*dsrPort, config.Service, bool) {
	for _, p := range d.dsr {
		p.mu.Lock()
		for _, sc := range p.services {
			if sc.Name == name {
				p.mu.Unlock()
				return p, sc, true
			}
		}
		p.mu.Unlock()
	}
	return nil, config.Service{}, false
}

// dsrWeight is a DSR backend's share of new flows: 0 when drained.
func dsrWeight(b config.Backend) int {
	if b.Drain {
		return 0
	}
	return b.Weight
}

// backendState is a DSR backend's state: ok, down (no ARP reply),
// blacklisted, drained (drain or weight 0) or unresolved (no MAC yet).
func (p *dsrPort) backendState(a netip.Addr, b config.Backend) string {
	weight := dsrWeight(b)
	state := "ok"
	switch {
	case p.arp.Down(a):
		state = "down"
	case p.blacklisted(a):
		state = "blacklisted"
	case weight == 0:
		state = "drained"
	}
	if _, ok := p.arp.Lookup(a); !ok {
		state = "unresolved"
	}
	return state
}
