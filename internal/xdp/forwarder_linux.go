package xdp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/dsr"
)

// Forwarder runs the DSR data path on one interface as an XDP program. Its
// methods mean what *dsr.Forwarder's do.
type Forwarder struct {
	cfg    dsr.Config
	nb     dsr.Neighbors
	down   func(service string, backend netip.Addr) bool
	logf   func(string, ...any)
	secret uint64
	objs   dsrObjects
	inner  *ebpf.MapSpec // a Maglev table
	slots  []uint32      // 0 .. maglevSize-1, the keys of a Maglev table
	mac    atomic.Pointer[[6]byte]

	mu     sync.Mutex // serialises the map writes below
	reg    *registry
	snap   *snapshot
	gen    uint8  // the generation the program reads
	tables [2]int // Maglev tables written per generation
	// inForce are the Maglev tables of the generation in force, by
	// service name: a reload reuses those whose contents stay.
	inForce map[string]*maglevTable
	pending []uint32 // backend ids released but not yet marked gone
	nbVer   uint64
	nbKnown bool
	closed  bool
	active  bool // Run started: the program forwards

	link      link.Link
	mode      string
	closeOnce sync.Once
	done      chan struct{}
}

var errClosed = errors.New("xdp: forwarder closed")

// New loads the program and its maps for services on cfg.Interface and
// attaches it there: in native (driver) mode where the driver supports XDP
// (veth aside: see errVethTX), else in generic mode (Mode says which, and
// why). It forwards from Run on. nb resolves backend MACs; down (may be
// nil) reports backends that must not get flows.
// cfg.Workers and cfg.Batch do not apply (the kernel runs the program on
// every CPU that receives); cfg.FlowTableSize bounds the one flow table
// shared by all CPUs. New must run in the interface's network namespace.
// An error means lbd should use dsr.New instead (the error says why).
func New(cfg dsr.Config, services []dsr.ServiceConfig, tp dsr.Tarpit, nb dsr.Neighbors, down func(service string, backend netip.Addr) bool, logf func(string, ...any)) (*Forwarder, error) {
	return newAttached(0, cfg, services, tp, nb, down, logf)
}

// NewGeneric is New in generic mode only, whatever the driver offers: the
// hook the Pis' NICs have, and a way around a driver whose native XDP
// misbehaves.
func NewGeneric(cfg dsr.Config, services []dsr.ServiceConfig, tp dsr.Tarpit, nb dsr.Neighbors, down func(service string, backend netip.Addr) bool, logf func(string, ...any)) (*Forwarder, error) {
	return newAttached(link.XDPGenericMode, cfg, services, tp, nb, down, logf)
}

func newAttached(mode link.XDPAttachFlags, cfg dsr.Config, services []dsr.ServiceConfig, tp dsr.Tarpit, nb dsr.Neighbors, down func(service string, backend netip.Addr) bool, logf func(string, ...any)) (*Forwarder, error) {
	f, err := load(cfg, services, tp, nb, down, logf)
	if err != nil {
		return nil, err
	}
	if err := f.attach(mode); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Supported reports whether New can work on iface: the interface exists
// and is Ethernet, and the kernel has XDP and the map types the program
// uses. It attaches nothing (attaching may reset a NIC's rings), so New can
// still fail, for instance when another XDP program holds the interface.
func Supported(iface string) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("xdp: %w", err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("xdp: interface %s has no Ethernet address", iface)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("xdp: %w", err)
	}
	if err := features.HaveProgramType(ebpf.XDP); err != nil {
		return fmt.Errorf("xdp: %w", err)
	}
	for _, mt := range []ebpf.MapType{ebpf.Hash, ebpf.Array, ebpf.LRUHash, ebpf.ArrayOfMaps, ebpf.LPMTrie, ebpf.PerCPUArray} {
		if err := features.HaveMapType(mt); err != nil {
			return fmt.Errorf("xdp: map type %s: %w", mt, err)
		}
	}
	return nil
}

// load creates the maps and the program and writes the configuration;
// nothing is attached (the tests run the program with BPF_PROG_RUN).
func load(cfg dsr.Config, services []dsr.ServiceConfig, tp dsr.Tarpit, nb dsr.Neighbors, down func(service string, backend netip.Addr) bool, logf func(string, ...any)) (*Forwarder, error) {
	if cfg.FlowTableSize <= 0 {
		cfg.FlowTableSize = 65536
	}
	if cfg.FlowIdle <= 0 {
		cfg.FlowIdle = 5 * time.Minute
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if cfg.Interface == nil || len(cfg.Interface.HardwareAddr) != 6 {
		name := "(none)"
		if cfg.Interface != nil {
			name = cfg.Interface.Name
		}
		return nil, fmt.Errorf("xdp: interface %s has no Ethernet address", name)
	}
	if _, err := check(services, tp); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("xdp: %w", err)
	}
	spec, err := loadDsr()
	if err != nil {
		return nil, fmt.Errorf("xdp: %w", err)
	}
	spec.Maps["flows"].MaxEntries = uint32(cfg.FlowTableSize)
	f := &Forwarder{cfg: cfg, nb: nb, down: down, logf: logf, secret: rand.Uint64(), reg: newRegistry(), done: make(chan struct{})}
	f.inner = spec.Maps["maglev"].InnerMap.Copy()
	f.slots = make([]uint32, maglevSize)
	for i := range f.slots {
		f.slots[i] = uint32(i)
	}
	if err := spec.LoadAndAssign(&f.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("xdp: loading the program: %+v", ve)
		}
		return nil, fmt.Errorf("xdp: loading the program: %w", err)
	}
	mac := [6]byte(cfg.Interface.HardwareAddr)
	f.mac.Store(&mac)
	// The first configuration goes to generation 1; 0 stays empty.
	f.gen = 0
	if err := f.apply(services, tp); err != nil {
		f.objs.Close()
		return nil, err
	}
	return f, nil
}

// attach attaches the program in mode, or with 0 natively if the driver
// can (and is not veth's) and generically if not.
func (f *Forwarder) attach(mode link.XDPAttachFlags) error {
	opts := link.XDPOptions{Program: f.objs.XdpDsr, Interface: f.cfg.Interface.Index, Flags: mode}
	var native error
	if mode == 0 {
		if driver(f.cfg.Interface.Name) == "veth" {
			native = errVethTX
		} else {
			opts.Flags = link.XDPDriverMode
			l, err := link.AttachXDP(opts)
			if err == nil {
				f.link, f.mode = l, "native"
				return nil
			}
			native = err
		}
		opts.Flags = link.XDPGenericMode
	}
	l, err := link.AttachXDP(opts)
	if err != nil {
		if native != nil {
			return fmt.Errorf("xdp: attaching to %s: native mode: %v; generic mode: %w", f.cfg.Interface.Name, native, err)
		}
		return fmt.Errorf("xdp: attaching to %s: %w", f.cfg.Interface.Name, err)
	}
	f.link = l
	switch {
	case native != nil:
		f.mode = fmt.Sprintf("generic (native mode: %v)", native)
	case mode == link.XDPGenericMode:
		f.mode = "generic"
	default:
		f.mode = "native"
	}
	return nil
}

// errVethTX is why New does not attach natively to a veth: the attach
// works, but veth hands XDP_TX frames only to a peer with NAPI (an XDP
// program on the peer; GRO on the peer did not do on 6.18), and drops them
// silently otherwise.
var errVethTX = errors.New("not tried: veth delivers XDP_TX frames only to a peer that runs an XDP program")

// driver names the interface's driver (ethtool's), or "" if unknown; it
// asks in the calling thread's network namespace.
func driver(iface string) string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, iface)
	if err != nil {
		return ""
	}
	return unix.ByteSliceToString(info.Driver[:])
}

// Mode says how the program is attached: "native" (in the driver, before
// any socket buffer exists) or "generic (native mode: <why not>)" (after
// the driver, on socket buffers: slower, but every interface has it).
func (f *Forwarder) Mode() string { return f.mode }

// Compiled says whether the kernel runs the program as machine code (the
// BPF JIT, net.core.bpf_jit_enable) or in its interpreter, which costs
// several times the CPU per frame.
func (f *Forwarder) Compiled() string {
	info, err := f.objs.XdpDsr.Info()
	if err != nil {
		return fmt.Sprintf("JIT unknown: %v", err)
	}
	n, err := info.JitedSize()
	if err != nil {
		return fmt.Sprintf("JIT unknown: %v", err)
	}
	if n == 0 {
		return "interpreted: the BPF JIT is off (net.core.bpf_jit_enable)"
	}
	return fmt.Sprintf("JIT-compiled, %d bytes of machine code", n)
}

// MAC is the interface's MAC as the forwarder knows it: frames to it are
// ours, and forwarded frames leave from it.
func (f *Forwarder) MAC() [6]byte { return *f.mac.Load() }

// SetMAC follows a change of the interface's MAC: the program sees the new
// MAC from its next frame on.
func (f *Forwarder) SetMAC(mac [6]byte) {
	f.mac.Store(&mac)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	if err := f.writeConfig(); err != nil {
		f.logf("xdp: setting the MAC: %v", err)
	}
}

// Update replaces the services (reload): established flows keep their
// backends unless those were removed; the program switches to the new
// configuration at once, never seeing half of it.
func (f *Forwarder) Update(services []dsr.ServiceConfig, tp dsr.Tarpit) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errClosed
	}
	return f.apply(services, tp)
}

// Refresh rebuilds the Maglev tables when backends went down or came back.
func (f *Forwarder) Refresh() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	if err := f.apply(f.snap.cfgs, f.snap.tp); err != nil {
		f.logf("xdp: refresh: %v", err)
	}
}

// Run starts forwarding (until then the attached program passes every
// frame to the stack, as if it were not there: like dsr's sockets, which
// only fill until Run reads them) and keeps the backend MACs up to date as
// the neighbour cache resolves them, until ctx is done (then it detaches,
// like dsr's Run) or the forwarder is closed.
func (f *Forwarder) Run(ctx context.Context) error {
	if err := f.activate(); err != nil {
		return err
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			f.Close()
			return nil
		case <-f.done:
			return nil
		case <-t.C:
			f.mu.Lock()
			if !f.closed {
				f.refreshMACs(false)
			}
			f.mu.Unlock()
		}
	}
}

// activate lets the program forward.
func (f *Forwarder) activate() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.active = true
	f.refreshMACs(false)
	return f.writeConfig()
}

// Close detaches the program and frees its maps; Run returns.
func (f *Forwarder) Close() {
	f.closeOnce.Do(func() {
		close(f.done)
		if f.link != nil {
			f.link.Close()
		}
		f.mu.Lock()
		f.closed = true
		closeTables(f.inForce, nil)
		f.inForce = nil
		f.objs.Close()
		f.mu.Unlock()
	})
}

// apply writes the snapshot for cfgs into the generation the program does
// not read, then switches the program over with one write of the config.
func (f *Forwarder) apply(cfgs []dsr.ServiceConfig, tp dsr.Tarpit) error {
	skipped, err := check(cfgs, tp)
	if err != nil {
		return err
	}
	if skipped > 0 {
		f.logf("xdp: %d services without an IPv4 VIP are not forwarded", skipped)
	}
	snap := f.reg.build(cfgs, tp, f.down)
	f.snap = snap
	for _, b := range snap.released {
		f.pending = append(f.pending, b.id)
	}
	f.refreshMACs(true)
	m := &f.objs
	// Counters of new ids start at zero.
	for _, id := range snap.freshServices {
		if err := m.SvcStats.Put(id, make([]dsrSvcStats, ebpf.MustPossibleCPU())); err != nil {
			return fmt.Errorf("xdp: service counters: %w", err)
		}
	}
	for _, id := range snap.freshBackends {
		if err := m.BeStats.Put(id, make([]dsrBeStats, ebpf.MustPossibleCPU())); err != nil {
			return fmt.Errorf("xdp: backend counters: %w", err)
		}
	}
	// Every backend, before a table names it.
	if err := f.writeBackends(); err != nil {
		return err
	}
	gen := f.gen ^ 1
	if err := f.clear(gen); err != nil {
		return err
	}
	next := map[string]*maglevTable{}
	for i, s := range snap.services {
		if s.table == nil {
			continue
		}
		key := s.cfg.Name
		if next[key] != nil { // a name twice: by position
			key = fmt.Sprintf("%s\x00%d", key, i)
		}
		t := f.inForce[key]
		if t == nil || !slices.Equal(t.slots, s.table) {
			var err error
			if t, err = f.newTable(s.table); err != nil {
				closeTables(next, f.inForce)
				return fmt.Errorf("xdp: service %s: Maglev table: %w", s.cfg.Name, err)
			}
		}
		next[key] = t
		if err := m.Maglev.Put(tableIndex(gen, i), t.m); err != nil {
			closeTables(next, f.inForce)
			return fmt.Errorf("xdp: service %s: Maglev table: %w", s.cfg.Name, err)
		}
		f.tables[gen] = i + 1
	}
	for k, v := range snap.serviceEntries(gen) {
		if err := m.Services.Put(k, v); err != nil {
			return fmt.Errorf("xdp: services: %w", err)
		}
	}
	for _, p := range snap.tarpit {
		if err := m.Tarpit.Put(tarpitKey(gen, p), uint32(1)); err != nil {
			return fmt.Errorf("xdp: tarpit: %w", err)
		}
	}
	f.gen = gen
	if err := f.writeConfig(); err != nil {
		closeTables(next, f.inForce)
		return err
	}
	// The maglev map keeps the old generation's tables alive until the
	// next apply clears that half.
	closeTables(f.inForce, next)
	f.inForce = next
	// Now that no table names them, removed backends lose their flows.
	for len(f.pending) > 0 {
		id := f.pending[len(f.pending)-1]
		if !f.inUse(id) {
			if err := m.Backends.Put(id, dsrBackend{Flags: beGone}); err != nil {
				return fmt.Errorf("xdp: backends: %w", err)
			}
		}
		f.pending = f.pending[:len(f.pending)-1]
	}
	return nil
}

// inUse reports whether a current backend has id (released ids are given
// out again).
func (f *Forwarder) inUse(id uint32) bool {
	for _, s := range f.snap.services {
		for _, b := range s.backends {
			if b.id == id {
				return true
			}
		}
	}
	return false
}

// clear empties generation gen's half of services, maglev and tarpit. The
// program stopped reading it one apply ago.
func (f *Forwarder) clear(gen uint8) error {
	m := &f.objs
	var sk dsrSvcKey
	var sv dsrSvcVal
	var del []dsrSvcKey
	it := m.Services.Iterate()
	for it.Next(&sk, &sv) {
		if sk.Kind&kindGen == gen {
			del = append(del, sk)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("xdp: services: %w", err)
	}
	for _, k := range del {
		if err := m.Services.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("xdp: services: %w", err)
		}
	}
	for i := range f.tables[gen] {
		if err := m.Maglev.Delete(tableIndex(gen, i)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("xdp: maglev: %w", err)
		}
	}
	f.tables[gen] = 0
	var tk dsrTarpitKey
	var tv uint32
	var tdel []dsrTarpitKey
	ti := m.Tarpit.Iterate()
	for ti.Next(&tk, &tv) {
		if tk.Data[0] == gen {
			tdel = append(tdel, tk)
		}
	}
	if err := ti.Err(); err != nil {
		return fmt.Errorf("xdp: tarpit: %w", err)
	}
	for _, k := range tdel {
		if err := m.Tarpit.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("xdp: tarpit: %w", err)
		}
	}
	return nil
}

// maglevTable is one Maglev table map and its contents.
type maglevTable struct {
	slots []uint32
	m     *ebpf.Map
}

// newTable creates a Maglev table map holding t.
func (f *Forwarder) newTable(t []uint32) (*maglevTable, error) {
	tm, err := ebpf.NewMap(f.inner)
	if err != nil {
		return nil, err
	}
	if _, err := tm.BatchUpdate(f.slots, t, nil); err != nil {
		if !errors.Is(err, ebpf.ErrNotSupported) {
			tm.Close()
			return nil, err
		}
		for k, v := range t {
			if err := tm.Put(uint32(k), v); err != nil {
				tm.Close()
				return nil, err
			}
		}
	}
	return &maglevTable{slots: t, m: tm}, nil
}

// closeTables closes the maps of tables that keep does not hold.
func closeTables(tables, keep map[string]*maglevTable) {
	for name, t := range tables {
		if k := keep[name]; k == nil || k.m != t.m {
			t.m.Close()
		}
	}
}

func (f *Forwarder) writeConfig() error {
	c := dsrConfig{IdleNs: uint64(f.cfg.FlowIdle), Secret: f.secret, Mac: f.MAC(), Gen: f.gen}
	if f.snap != nil && len(f.snap.tarpit) > 0 {
		c.Flags |= cfgTarpit
	}
	if f.active {
		c.Flags |= cfgActive
	}
	if err := f.objs.Config.Put(uint32(0), c); err != nil {
		return fmt.Errorf("xdp: config: %w", err)
	}
	return nil
}

func (f *Forwarder) writeBackends() error {
	for _, s := range f.snap.services {
		for _, b := range s.backends {
			if err := f.objs.Backends.Put(b.id, backendValue(b, false)); err != nil {
				return fmt.Errorf("xdp: backends: %w", err)
			}
		}
	}
	return nil
}

// refreshMACs looks the backends' MACs up again when the neighbour cache
// changed (or always, with force, when the caller writes every backend
// afterwards) and writes the backends whose MAC changed.
func (f *Forwarder) refreshMACs(force bool) {
	if f.nb == nil || f.snap == nil {
		return
	}
	v := f.nb.Version()
	if !force && f.nbKnown && v == f.nbVer {
		return
	}
	f.nbVer, f.nbKnown = v, true
	for _, s := range f.snap.services {
		for _, b := range s.backends {
			mac, ok := f.nb.Lookup(b.addr)
			if ok == b.resolved && mac == b.mac {
				continue
			}
			b.mac, b.resolved = mac, ok
			if force {
				continue
			}
			if err := f.objs.Backends.Put(b.id, backendValue(b, false)); err != nil {
				f.logf("xdp: backend %s: %v", b.addr, err)
			}
		}
	}
}

// Stats returns the counters, summed over the CPUs, in dsr's shape (the
// fields that only concern AF_PACKET stay zero).
func (f *Forwarder) Stats() dsr.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := dsr.Stats{Drops: map[string]uint64{}}
	var c [numCounters]uint64
	for i := range c {
		var vals []uint64
		if err := f.objs.Counters.Lookup(uint32(i), &vals); err == nil {
			for _, v := range vals {
				c[i] += v
			}
		}
	}
	st.Received, st.Forwarded, st.TarpitReplies = c[cntReceived], c[cntForwarded], c[cntTarpitReplies]
	for r := range numDropReasons {
		if v := c[cntDrops+r]; v > 0 {
			st.Drops[dsr.DropReason(r).String()] = v
		}
	}
	if f.snap == nil {
		return st
	}
	for i, s := range f.snap.all {
		ss := dsr.ServiceStatsSnapshot{Name: f.snap.cfgs[i].Name}
		if s == nil {
			// Not forwarded here (not IPv4): listed, with zero counters.
			for _, b := range f.snap.cfgs[i].Backends {
				ss.Backends = append(ss.Backends, dsr.BackendStats{Addr: b.Addr})
			}
			st.Services = append(st.Services, ss)
			continue
		}
		var sv []dsrSvcStats
		if err := f.objs.SvcStats.Lookup(s.id, &sv); err == nil {
			for _, v := range sv {
				ss.Packets += v.Packets
				ss.Bytes += v.Bytes
				ss.NewFlows += v.NewFlows
				ss.NoBackend += v.NoBackend
			}
		}
		for _, b := range s.backends {
			bs := dsr.BackendStats{Addr: b.addr, Down: b.down}
			var bv []dsrBeStats
			if err := f.objs.BeStats.Lookup(b.id, &bv); err == nil {
				for _, v := range bv {
					bs.Packets += v.Packets
					bs.Bytes += v.Bytes
				}
			}
			ss.Backends = append(ss.Backends, bs)
		}
		st.Services = append(st.Services, ss)
	}
	return st
}
