package arpd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/packet"
)

// Daemon answers ARP on one interface and resolves backends there.
// Set* may be called at any time from any goroutine; Lookup, Down and
// Version are lock-free and allocation-free.
type Daemon struct {
	pc   net.PacketConn
	opt  Options
	logf func(string, ...any)
	ctr  counters

	mu   sync.Mutex // guards core
	core *core

	nb      atomic.Pointer[map[netip.Addr]neighbor]
	version atomic.Uint64

	kicked  atomic.Bool
	closed  atomic.Bool
	running atomic.Bool
}

// New opens an AF_PACKET socket for ARP on ifi with default Options. The
// LB's own IPv4 address is the first IPv4 address on ifi (the sender
// address of our backend requests); it is an error if there is none.
func New(ifi *net.Interface, logf func(string, ...any)) (*Daemon, error) {
	return NewWithOptions(ifi, logf, Options{})
}

// NewWithOptions is New with explicit timers and bounds.
func NewWithOptions(ifi *net.Interface, logf func(string, ...any), opt Options) (*Daemon, error) {
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("arpd: interface %s has no Ethernet address", ifi.Name)
	}
	ip, err := interfaceIPv4(ifi)
	if err != nil {
		return nil, err
	}
	pc, err := packet.Listen(ifi, packet.Raw, etherTypeARP, nil)
	if err != nil {
		return nil, fmt.Errorf("arpd: ARP socket on %s: %w", ifi.Name, err)
	}
	if err := ignoreOutgoing(pc); err != nil && logf != nil {
		// Not fatal: our own frames carry our MAC and are skipped anyway.
		logf("arpd: %s: PACKET_IGNORE_OUTGOING: %v", ifi.Name, err)
	}
	return NewConn(pc, ifi.HardwareAddr, ip, logf, opt)
}

// interfaceIPv4 returns the first IPv4 address on ifi.
func interfaceIPv4(ifi *net.Interface) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("arpd: addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("arpd: interface %s has no IPv4 address: the LB needs its own address on the DSR interface (it is the sender of the ARP requests that resolve backends)", ifi.Name)
}

// NewConn makes a Daemon on an already open packet connection carrying
// whole Ethernet frames (an AF_PACKET SOCK_RAW socket for ETH_P_ARP, or a
// test double). mac and ip are the LB's own addresses on that link.
// Written frames are addressed with a *packet.Addr.
func NewConn(pc net.PacketConn, mac net.HardwareAddr, ip netip.Addr, logf func(string, ...any), opt Options) (*Daemon, error) {
	if len(mac) != 6 {
		return nil, errors.New("arpd: MAC must be 6 bytes")
	}
	if ip = ip.Unmap(); !ip.Is4() {
		return nil, fmt.Errorf("arpd: own address %s is not IPv4", ip)
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	d := &Daemon{pc: pc, opt: opt.withDefaults(), logf: logf}
	d.core = newCore([6]byte(mac), ip, d.opt, logf, &d.ctr)
	d.publish()
	return d, nil
}

// MAC is the LB's MAC on the interface (what we answer with).
func (d *Daemon) MAC() [6]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.core.mac
}

// IP is the LB's own IPv4 address on the interface.
func (d *Daemon) IP() netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.core.ip
}

// SetIP follows a change of the LB's own address on the interface (a new
// DHCP lease): backend requests are sent from ip from now on, and every
// backend is asked again at once.
func (d *Daemon) SetIP(ip netip.Addr) error {
	if ip = ip.Unmap(); !ip.Is4() || ip.IsUnspecified() {
		return fmt.Errorf("arpd: own address %s is not a usable IPv4 address", ip)
	}
	d.mu.Lock()
	d.core.setIP(ip)
	d.publishLocked()
	d.mu.Unlock()
	d.kick()
	return nil
}

// SetMAC follows a change of the interface's MAC: we answer with mac from
// now on, announce the claimed VIPs at it and ask the backends again.
func (d *Daemon) SetMAC(mac [6]byte) error {
	if mac == ([6]byte{}) || mac[0]&1 != 0 {
		return fmt.Errorf("arpd: own MAC %s is not a unicast address", macString(mac))
	}
	d.mu.Lock()
	d.core.setMAC(mac)
	d.mu.Unlock()
	d.kick()
	return nil
}

// LinkUp is called when the interface's link comes back up: the claimed
// VIPs are announced again (gratuitous ARP) and the backends asked again.
func (d *Daemon) LinkUp() {
	d.mu.Lock()
	d.core.linkUp()
	d.mu.Unlock()
	d.kick()
}

// SetVIPs sets the VIPs to answer for. New ones are probed at once and
// answered (and announced) once claimed; removed ones are no longer
// answered.
func (d *Daemon) SetVIPs(vips []netip.Addr) {
	d.mu.Lock()
	d.core.setVIPs(vips)
	d.mu.Unlock()
	d.kick()
}

// SetBackends sets the backends to resolve. New ones are requested at
// once; removed ones disappear from Lookup.
func (d *Daemon) SetBackends(backends []netip.Addr) {
	d.mu.Lock()
	d.core.setBackends(backends)
	d.publishLocked()
	d.mu.Unlock()
	d.kick()
}

// SetTarpit sets the tarpit matcher (nil: no tarpit). It is called with
// the lock held, once per ARP request or announcement: it must be fast and
// must not call back into the Daemon. An address is answered only after a
// lazy claim (see the package documentation). The caller must refuse an
// empty tarpit ACL: a matcher that matches everything would claim every
// silent address on the LAN.
func (d *Daemon) SetTarpit(match func(netip.Addr) bool) {
	d.mu.Lock()
	d.core.setTarpit(match)
	d.mu.Unlock()
}

// Lookup returns backend a's MAC, if it was ever resolved. A backend that
// stopped answering keeps its last MAC (see Down).
func (d *Daemon) Lookup(a netip.Addr) (mac [6]byte, ok bool) {
	n, ok := (*d.nb.Load())[a.Unmap()]
	return n.mac, ok && n.has
}

// Down reports whether backend a left its last DownAfter ARP requests
// unanswered (a forwarder should move its flows). False for addresses that
// are not backends.
func (d *Daemon) Down(a netip.Addr) bool {
	return (*d.nb.Load())[a.Unmap()].down
}

// Version changes whenever what Lookup or Down return may have changed
// (backend set, MAC, down state), so callers can cache per-backend results
// and revalidate with one atomic load.
func (d *Daemon) Version() uint64 { return d.version.Load() }

// Counters returns a snapshot of the counters.
func (d *Daemon) Counters() Counters { return d.ctr.snapshot() }

// VIPs returns the state of each VIP, in no particular order.
func (d *Daemon) VIPs() []VIPStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.core.vipStatus()
}

func (d *Daemon) publish() {
	d.mu.Lock()
	d.core.dirty = true
	d.publishLocked()
	d.mu.Unlock()
}

func (d *Daemon) publishLocked() {
	if !d.core.dirty {
		return
	}
	d.core.dirty = false
	m := d.core.snapshot()
	d.nb.Store(&m)
	d.version.Add(1)
}

// kick makes Run tick now instead of at the end of its read.
func (d *Daemon) kick() {
	d.kicked.Store(true)
	d.pc.SetReadDeadline(time.Unix(1, 0))
}

// Close closes the socket; Run returns.
func (d *Daemon) Close() error {
	d.closed.Store(true)
	return d.pc.Close()
}

// Run reads and answers ARP until ctx is done or the Daemon is closed; a
// timer every Options.Tick drives probes, refreshes and announcements.
// It returns nil when stopped by ctx or Close. Run must not be called twice.
func (d *Daemon) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("arpd: Run called twice")
	}
	stop := context.AfterFunc(ctx, d.kick)
	defer stop()
	buf := make([]byte, 256) // ARP frames are 42-60 bytes
	out := make([]frame, 0, 16)
	var lastTick, lastErrLog time.Time
	for {
		if ctx.Err() != nil || d.closed.Load() {
			return nil
		}
		now := time.Now()
		if d.kicked.Swap(false) || now.Sub(lastTick) >= d.opt.Tick {
			lastTick = now
			d.mu.Lock()
			out = d.core.tick(now, out[:0])
			d.publishLocked()
			d.mu.Unlock()
			d.send(out)
		}
		if err := d.pc.SetReadDeadline(lastTick.Add(d.opt.Tick)); err != nil && d.closed.Load() {
			return nil
		}
		if d.kicked.Load() {
			continue
		}
		n, _, err := d.pc.ReadFrom(buf)
		if n > 0 {
			d.mu.Lock()
			out, _ = d.core.handle(time.Now(), buf[:n], out[:0])
			d.publishLocked()
			d.mu.Unlock()
			d.send(out)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if d.closed.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// E.g. ENETDOWN while the link flaps: keep going, slowly.
			d.ctr.readErrors.Add(1)
			if time.Since(lastErrLog) >= 10*time.Second {
				lastErrLog = time.Now()
				d.logf("arpd: read: %v", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(d.opt.Tick):
			}
		}
	}
}

func (d *Daemon) send(out []frame) {
	for i := range out {
		f := &out[i]
		if _, err := d.pc.WriteTo(f[:], &packet.Addr{HardwareAddr: f.dst()}); err != nil {
			if d.ctr.sendErrors.Add(1)%1000 == 1 {
				d.logf("arpd: send: %v", err)
			}
		}
	}
}
