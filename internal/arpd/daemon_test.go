package arpd

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"
)

// fakeConn is an in-memory net.PacketConn with read deadlines.
type fakeConn struct {
	in     chan []byte
	out    chan []byte
	closed chan struct{}
	once   sync.Once

	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{}
}

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan []byte, 64), out: make(chan []byte, 256), closed: make(chan struct{}), changed: make(chan struct{})}
}

func (c *fakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl, ch := c.deadline, c.changed
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case p := <-c.in:
			return copy(b, p), &packet.Addr{}, nil
		case <-timeout:
			return 0, nil, os.ErrDeadlineExceeded
		case <-ch:
		case <-c.closed:
			return 0, nil, net.ErrClosed
		}
	}
}

func (c *fakeConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	a, ok := addr.(*packet.Addr)
	if !ok || len(a.HardwareAddr) != 6 || [6]byte(a.HardwareAddr) != [6]byte(b[0:6]) {
		panic("WriteTo address does not match the frame's destination")
	}
	select {
	case c.out <- append([]byte(nil), b...):
	default:
	}
	return len(b), nil
}

func (c *fakeConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *fakeConn) LocalAddr() net.Addr              { return &packet.Addr{} }
func (c *fakeConn) SetDeadline(t time.Time) error    { return c.SetReadDeadline(t) }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }
func (c *fakeConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// expect waits (bounded) for a sent frame matching ok.
func (c *fakeConn) expect(t *testing.T, what string, ok func(decoded) bool) decoded {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case b := <-c.out:
			d := decode(t, frame(b))
			if ok(d) {
				return d
			}
		case <-deadline:
			t.Fatalf("no %s sent", what)
		}
	}
}

func TestRunWithFakeConn(t *testing.T) {
	fc := newFakeConn()
	d, err := NewConn(fc, lbMAC[:], lbIP, t.Logf, Options{ProbeWindow: 100 * time.Millisecond, Tick: 10 * time.Millisecond, AnnounceInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	d.SetVIPs([]netip.Addr{vip})
	fc.expect(t, "probe", func(p decoded) bool { return p.Op == opRequest && p.SPA == netip.IPv4Unspecified() && p.TPA == vip })
	fc.expect(t, "announcement", func(p decoded) bool { return p.Op == opRequest && p.SPA == vip && p.TPA == vip })
	fc.in <- request(client, clientIP, vip)
	fc.expect(t, "reply", func(p decoded) bool { return p.Op == opReply && p.SPA == vip && p.dst == client })

	d.SetBackends([]netip.Addr{be1})
	fc.expect(t, "backend request", func(p decoded) bool { return p.Op == opRequest && p.SPA == lbIP && p.TPA == be1 })
	v := d.Version()
	fc.in <- reply(be1MAC, be1, lbMAC, lbIP)
	for i := 0; i < 300 && d.Version() == v; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if mac, ok := d.Lookup(be1); !ok || mac != be1MAC || d.Down(be1) {
		t.Fatalf("Lookup = %s %v down %v", macString(mac), ok, d.Down(be1))
	}
	if c := d.Counters(); c.RepliesVIP != 1 || c.BackendLearned != 1 || c.ProbesSent != 3 {
		t.Fatalf("counters %+v", c)
	}
	if st := d.VIPs(); len(st) != 1 || st[0].State != VIPClaimed {
		t.Fatalf("VIPs %+v", st)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err := d.Run(context.Background()); err == nil {
		t.Fatal("second Run accepted")
	}
}

func TestRunClose(t *testing.T) {
	fc := newFakeConn()
	d, err := NewConn(fc, lbMAC[:], lbIP, t.Logf, Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	d.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

func TestNewConnErrors(t *testing.T) {
	if _, err := NewConn(newFakeConn(), lbMAC[:4], lbIP, nil, Options{}); err == nil {
		t.Error("short MAC accepted")
	}
	if _, err := NewConn(newFakeConn(), lbMAC[:], netip.MustParseAddr("2001:db8::1"), nil, Options{}); err == nil {
		t.Error("IPv6 own address accepted")
	}
}

func TestLookupAllocFree(t *testing.T) {
	d, err := NewConn(newFakeConn(), lbMAC[:], lbIP, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d.SetBackends([]netip.Addr{be1})
	d.mu.Lock()
	d.core.tick(t0, nil)
	d.core.handle(t0, reply(be1MAC, be1, lbMAC, lbIP), nil)
	d.publishLocked()
	d.mu.Unlock()
	var ok, down bool
	var v uint64
	allocs := testing.AllocsPerRun(1000, func() {
		_, ok = d.Lookup(be1)
		down = d.Down(be1)
		v = d.Version()
	})
	if allocs != 0 {
		t.Fatalf("Lookup+Down+Version allocate %v times", allocs)
	}
	if !ok || down || v == 0 {
		t.Fatal("lookup failed")
	}
	if _, ok := d.Lookup(netip.MustParseAddr("192.0.2.99")); ok {
		t.Fatal("unknown address resolved")
	}
	if _, ok := d.Lookup(netip.MustParseAddr("::ffff:192.0.2.21")); !ok {
		t.Fatal("IPv4-mapped form not resolved")
	}
}

// Lookup from many goroutines while backends are set and learned: run
// with -race. Bounded by count.
func TestLookupConcurrent(t *testing.T) {
	d, err := NewConn(newFakeConn(), lbMAC[:], lbIP, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	addrs := make([]netip.Addr, 32)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{192, 0, 2, byte(20 + i)})
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200000; i++ {
				if i%1024 == 0 {
					select {
					case <-stop:
						return
					default:
					}
				}
				a := addrs[i%len(addrs)]
				if mac, ok := d.Lookup(a); ok && mac[5] != a.As4()[3] {
					t.Errorf("Lookup(%s) = %s", a, macString(mac))
					return
				}
				d.Down(a)
			}
		}()
	}
	now := t0
	for round := range 200 {
		set := addrs[:1+round%len(addrs)]
		d.SetBackends(set)
		d.mu.Lock()
		d.core.tick(now, nil)
		for _, a := range set {
			d.core.handle(now, reply([6]byte{2, 0, 0, 0, 0, a.As4()[3]}, a, lbMAC, lbIP), nil)
		}
		d.publishLocked()
		d.mu.Unlock()
		now = now.Add(time.Minute)
	}
	close(stop)
	wg.Wait()
}

// TestRunFollowsInterface: SetIP, SetMAC and LinkUp take effect in a
// running Daemon at once (the next tick is kicked), not at the next
// refresh.
func TestRunFollowsInterface(t *testing.T) {
	fc := newFakeConn()
	d, err := NewConn(fc, lbMAC[:], lbIP, t.Logf, Options{ProbeWindow: 100 * time.Millisecond, Tick: 10 * time.Millisecond, AnnounceInterval: 50 * time.Millisecond, AnnounceCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	d.SetVIPs([]netip.Addr{vip})
	d.SetBackends([]netip.Addr{be1})
	fc.expect(t, "backend request", func(p decoded) bool { return p.Op == opRequest && p.SPA == lbIP && p.TPA == be1 })
	fc.expect(t, "announcement", func(p decoded) bool { return p.SPA == vip && p.TPA == vip })

	newIP := netip.MustParseAddr("192.0.2.3")
	if err := d.SetIP(newIP); err != nil {
		t.Fatal(err)
	}
	fc.expect(t, "request from the new address", func(p decoded) bool { return p.Op == opRequest && p.SPA == newIP && p.TPA == be1 })
	if d.IP() != newIP {
		t.Fatalf("IP() = %s", d.IP())
	}
	newMAC := [6]byte{0x02, 0, 0, 0, 0, 0x02}
	if err := d.SetMAC(newMAC); err != nil {
		t.Fatal(err)
	}
	fc.expect(t, "announcement at the new MAC", func(p decoded) bool { return p.SPA == vip && p.TPA == vip && p.SHA == newMAC && p.EthSrc == newMAC })
	if d.MAC() != newMAC {
		t.Fatalf("MAC() = %s", macString(d.MAC()))
	}
	d.LinkUp()
	fc.expect(t, "announcement after the link came up", func(p decoded) bool { return p.SPA == vip && p.TPA == vip && p.SHA == newMAC })

	if d.SetIP(netip.MustParseAddr("2001:db8::1")) == nil || d.SetIP(netip.IPv4Unspecified()) == nil {
		t.Fatal("SetIP took an unusable address")
	}
	if d.SetMAC([6]byte{}) == nil || d.SetMAC(broadcast) == nil {
		t.Fatal("SetMAC took an unusable MAC")
	}
}
