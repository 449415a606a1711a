package dsr

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Config configures a forwarder on one interface.
type Config struct {
	// Interface is the NIC the VIP traffic arrives on and leaves by.
	Interface *net.Interface
	// Workers is the number of sockets (one per core, in a fanout group);
	// 0 means 1.
	Workers int
	// FlowTableSize bounds each worker's flow table; 0 means 65536.
	FlowTableSize int
	// FlowIdle forgets flows idle this long; 0 means 5 minutes.
	FlowIdle time.Duration
	// Batch is the number of frames per recvmmsg/sendmmsg; 0 means 64.
	Batch int
}

// Forwarder runs the DSR data path on one interface.
type Forwarder struct {
	cfg     Config
	mac     atomic.Uint64 // the interface's MAC in the low 48 bits (SetMAC)
	nb      Neighbors
	down    func(service string, backend netip.Addr) bool
	logf    func(string, ...any)
	table   atomic.Pointer[table]
	mu      sync.Mutex // serialises Update
	conns   []*conn
	workers []*worker
	clock   atomic.Uint32 // coarse seconds for flow ages
	secret  uint64        // keys the tarpit's stateless sequence numbers
	closed  atomic.Bool
}

// New opens the forwarder's sockets on cfg.Interface for services. nb
// resolves backend MACs; down (may be nil) reports backends that must not
// get flows.
func New(cfg Config, services []ServiceConfig, tp Tarpit, nb Neighbors, down func(service string, backend netip.Addr) bool, logf func(string, ...any)) (*Forwarder, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.FlowTableSize <= 0 {
		cfg.FlowTableSize = 65536
	}
	if cfg.FlowIdle <= 0 {
		cfg.FlowIdle = 5 * time.Minute
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 64
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if len(cfg.Interface.HardwareAddr) != 6 {
		return nil, fmt.Errorf("dsr: interface %s has no Ethernet address", cfg.Interface.Name)
	}
	f := &Forwarder{cfg: cfg, nb: nb, down: down, logf: logf, secret: rand.Uint64()}
	f.SetMAC([6]byte(cfg.Interface.HardwareAddr))
	t := buildTable(services, nil, down)
	t.tarpit = tp
	f.table.Store(t)
	filter, err := Filter(vips(services), tp.Prefixes)
	if err != nil {
		return nil, err
	}
	group := uint16(rand.Uint32()) | 1
	for range cfg.Workers {
		c, err := listen(cfg.Interface, filter, group)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("dsr: %w", err)
		}
		f.conns = append(f.conns, c)
		f.workers = append(f.workers, &worker{f: f, slot: len(f.workers) % statSlots, flows: newFlowTable(cfg.FlowTableSize, uint32(cfg.FlowIdle/time.Second))})
	}
	return f, nil
}

// MAC is the interface's MAC as the forwarder knows it: frames to it are
// ours, and forwarded frames leave from it.
func (f *Forwarder) MAC() [6]byte {
	v := f.mac.Load()
	return [6]byte{byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// SetMAC follows a change of the interface's MAC (the forwarder reads it
// once, in New): without it every frame to the new MAC is "not for us".
// Workers see the new MAC from their next frame on.
func (f *Forwarder) SetMAC(mac [6]byte) {
	f.mac.Store(uint64(mac[0])<<40 | uint64(mac[1])<<32 | uint64(mac[2])<<24 | uint64(mac[3])<<16 | uint64(mac[4])<<8 | uint64(mac[5]))
}

func vips(services []ServiceConfig) []netip.Addr {
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for _, s := range services {
		if !seen[s.VIP] {
			seen[s.VIP] = true
			out = append(out, s.VIP)
		}
	}
	return out
}

// Update replaces the services (reload): established flows keep their
// backends unless those were removed; the packet filter follows the VIPs.
func (f *Forwarder) Update(services []ServiceConfig, tp Tarpit) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	filter, err := Filter(vips(services), tp.Prefixes)
	if err != nil {
		return err
	}
	for _, c := range f.conns {
		if err := c.pc.SetBPF(filter); err != nil {
			return fmt.Errorf("dsr: filter: %w", err)
		}
	}
	t := buildTable(services, f.table.Load(), f.down)
	t.tarpit = tp
	f.table.Store(t)
	return nil
}

// Refresh rebuilds the Maglev tables when backends went down or came back.
func (f *Forwarder) Refresh() {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.table.Load()
	cfgs := make([]ServiceConfig, len(t.list))
	for i, s := range t.list {
		cfgs[i] = s.cfg
	}
	nt := buildTable(cfgs, t, f.down)
	nt.tarpit = t.tarpit
	f.table.Store(nt)
}

// Run forwards until ctx is done or the sockets are closed.
func (f *Forwarder) Run(ctx context.Context) error {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				f.clock.Store(uint32(now.Sub(start) / time.Second))
			}
		}
	}()
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	var wg sync.WaitGroup
	errs := make([]error, len(f.workers))
	for i, w := range f.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.run(f.conns[i])
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return errors.Join(errs...)
}

// Close closes the sockets; Run returns.
func (f *Forwarder) Close() {
	f.closed.Store(true)
	for _, c := range f.conns {
		c.Close()
	}
}

func (w *worker) run(c *conn) error {
	b := newBatch(w.f.cfg.Batch)
	// Tarpit answers are built here, one per received frame at most;
	// the vnet header in front stays zero (checksums are complete).
	replies := make([][]byte, len(b.bufs))
	for i := range replies {
		replies[i] = make([]byte, vnetHdrLen+128)
	}
	lastExpire, lastRefusedLog, lastErrLog := uint32(0), uint32(0), ^uint32(0)
	for {
		// Parking on the netpoller between batches measured better than
		// blocking in ppoll with a spare P (the TCP engine's trick): the
		// softirq work on this CPU needs the time more. Blocking in
		// recvmmsg itself on a locked OS thread (MSG_WAITFORONE, a
		// receive timeout to notice Close) measured no better either:
		// the same CPU per frame at full rate and at 0.21 Mpps, and at
		// 20 kpps a third more context switches (the runtime hands the
		// P off around every sleeping system call).
		n, err := c.recv(b)
		if err != nil {
			if w.f.closed.Load() || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			// The socket stays bound to the interface through a link
			// flap: the kernel reports ENETDOWN once when the link goes
			// down and delivers frames again when it comes back. So an
			// error ends nothing: counted, logged at most once a second,
			// and a short pause so that an error that repeats does not
			// spin.
			w.stats.readErrors.Add(1)
			if now := w.f.clock.Load(); now != lastErrLog {
				lastErrLog = now
				w.f.logf("dsr: receive: %v (continuing)", err)
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := w.f.clock.Load()
		t := w.f.table.Load()
		for i := range n {
			m := &b.msgs[i]
			w.stats.received.Add(1)
			if m.Hdr.Flags&unix.MSG_TRUNC != 0 || m.Len < vnetHdrLen {
				w.stats.drops[DropTruncated].Add(1)
				continue
			}
			w.handle(t, b.bufs[i][:m.Len], now, b, replies[i])
		}
		w.flush(c, b, now, &lastRefusedLog)
		if now != lastExpire {
			lastExpire = now
			w.flows.expire(now, 256)
		}
	}
}

// handle decides about one received message (vnet header and frame) and
// queues the frame to forward, or the tarpit answer built in reply, on b.
func (w *worker) handle(t *table, msg []byte, now uint32, b *batch, reply []byte) {
	w.reply = reply[:cap(reply)]
	act, why := w.process(t, msg[vnetHdrLen:], now)
	switch act {
	case actReply:
		w.stats.tarpitReplies.Add(1)
		b.queueBuf(w.reply)
	case actForward:
		// Forwarded frames keep their vnet header: the kernel completes a
		// partial checksum and segments a super-frame on the way out.
		// Receive-only flags go.
		msg[0] &^= unix.VIRTIO_NET_HDR_F_DATA_VALID | unix.VIRTIO_NET_HDR_F_RSC_INFO
		if msg[0]&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
			w.stats.partial.Add(1)
		}
		if msg[1] != unix.VIRTIO_NET_HDR_GSO_NONE {
			w.stats.super.Add(1)
		}
		b.queueBuf(msg)
	default:
		w.stats.drops[why].Add(1)
	}
}

// flush sends what the batch has queued and counts the outcome; refusals
// are logged at most once a second (lastLog).
func (w *worker) flush(c *conn, b *batch, now uint32, lastLog *uint32) {
	if len(b.outMsgs) == 0 {
		return
	}
	sent, refused, lastErr := c.send(b)
	w.stats.forwarded.Add(uint64(sent))
	if refused > 0 {
		w.stats.drops[DropSendFailed].Add(uint64(refused))
		if now != *lastLog {
			*lastLog = now
			w.f.logf("dsr: frames refused by the kernel (%d in this batch): %v", refused, lastErr)
		}
	}
}

// Stats is a snapshot of the forwarder's counters.
type Stats struct {
	Received, Forwarded uint64
	// PartialChecksums and SuperFrames count forwarded frames whose
	// checksum or segmentation the kernel finished on the way out.
	PartialChecksums, SuperFrames uint64
	// TarpitReplies counts SYN+ACKs sent for tarpit addresses.
	TarpitReplies uint64
	// ReadErrors counts receive errors (ENETDOWN while the link is down).
	ReadErrors uint64
	Drops      map[string]uint64
	Services   []ServiceStatsSnapshot
}

// ServiceStatsSnapshot is one service's counters.
type ServiceStatsSnapshot struct {
	Name                     string
	Packets, Bytes, NewFlows uint64
	NoBackend                uint64
	Backends                 []BackendStats
}

// BackendStats is one backend's counters.
type BackendStats struct {
	Addr           netip.Addr
	Packets, Bytes uint64
	Down           bool
}

// Stats returns the counters (flows is approximate while workers run).
func (f *Forwarder) Stats() Stats {
	st := Stats{Drops: map[string]uint64{}}
	for _, w := range f.workers {
		st.Received += w.stats.received.Load()
		st.Forwarded += w.stats.forwarded.Load()
		st.PartialChecksums += w.stats.partial.Load()
		st.SuperFrames += w.stats.super.Load()
		st.TarpitReplies += w.stats.tarpitReplies.Load()
		st.ReadErrors += w.stats.readErrors.Load()
		for r := range numDropReasons {
			if v := w.stats.drops[r].Load(); v > 0 {
				st.Drops[r.String()] += v
			}
		}
	}
	for _, s := range f.table.Load().list {
		ss := ServiceStatsSnapshot{Name: s.cfg.Name}
		ss.Packets, ss.Bytes, ss.NewFlows, ss.NoBackend = s.stats.sum()
		for _, b := range s.backends {
			p, n, _, _ := b.stats.sum()
			ss.Backends = append(ss.Backends, BackendStats{Addr: b.addr, Packets: p, Bytes: n, Down: b.gone.Load()})
		}
		st.Services = append(st.Services, ss)
	}
	return st
}
