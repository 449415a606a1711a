package proxy

import (
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/nib-lb/nib/internal/balance"
)

// maxUDPPayload is the largest UDP payload over IPv4.
const maxUDPPayload = 65507

// queryOn sends an A query on an open client socket and waits for the
// answer, retrying twice as a resolver would.
func queryOn(c net.Conn, id uint16) error {
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	b, _ := q.Pack()
	buf := make([]byte, 1500)
	var err error
	for range 3 {
		if _, err = c.Write(b); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		var n int
		for {
			n, err = c.Read(buf)
			if err != nil {
				break
			}
			var m dnsmessage.Message
			if m.Unpack(buf[:n]) == nil && m.Header.ID == id && len(m.Answers) == 1 {
				return nil
			}
		}
	}
	return err
}

// udpFrom opens a client socket bound to src (any 127.0.0.0/8 address is
// local on Linux) and connected to the service.
func udpFrom(t *testing.T, src netip.Addr, to net.Addr) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice()}, to.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// flood sends one maximum-size datagram from each socket, twice over,
// paced so that the listener's receive buffer (a few such datagrams)
// mostly keeps up.
func flood(socks []*net.UDPConn) {
	junk := make([]byte, maxUDPPayload)
	for range 2 {
		for i, c := range socks {
			c.Write(junk)
			if i%2 == 1 {
				time.Sleep(500 * time.Microsecond)
			}
		}
	}
}

// waitFlowsSettle waits until the flow count stops changing.
func waitFlowsSettle(u *UDPServer) int {
	n := u.Flows()
	for range 50 {
		time.Sleep(50 * time.Millisecond)
		m := u.Flows()
		if m == n {
			return n
		}
		n = m
	}
	return n
}

// Spoofable sources must not make the server hold unbounded memory: one
// address gets at most its share of flows, all sources together at most
// the service's limit, and a flow waiting for its backend does not keep a
// 64 KiB datagram. Real clients keep being served.
func TestUDPAbuseBounded(t *testing.T) {
	be := dnsServer(t, [4]byte{1, 2, 3, 4}) // ignores what is not DNS
	const total = 512
	const perSource = total / 8 // the default
	u, _ := startUDP(t, Options{IdleTimeout: time.Minute, MaxConnections: total}, balance.Options{}, be)
	real := udpFrom(t, netip.MustParseAddr("127.0.0.1"), u.Addr())
	if err := queryOn(real, 1); err != nil {
		t.Fatalf("real client before the flood: %v", err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)

	// One source address, many ports.
	var socks []*net.UDPConn
	for range 3 * perSource {
		socks = append(socks, udpFrom(t, netip.MustParseAddr("127.1.0.1"), u.Addr()))
	}
	flood(socks)
	if n := waitFlowsSettle(u) - 1; n > perSource {
		t.Errorf("one source address opened %d flows, want at most %d", n, perSource)
	} else if n < perSource/2 {
		t.Fatalf("one source address opened only %d flows (datagrams lost?)", n)
	}
	newcomer := udpFrom(t, netip.MustParseAddr("127.0.0.1"), u.Addr())
	if err := queryOn(newcomer, 2); err != nil {
		t.Errorf("new client while one address floods: %v", err)
	}
	if err := queryOn(real, 3); err != nil {
		t.Errorf("real client while one address floods: %v", err)
	}

	// Many source addresses, a few ports each: more flows than allowed.
	socks = socks[:0]
	for i := range 250 {
		src := netip.AddrFrom4([4]byte{127, 2, byte(i / 200), byte(1 + i%200)})
		for range 4 {
			socks = append(socks, udpFrom(t, src, u.Addr()))
		}
	}
	flood(socks)
	flows := waitFlowsSettle(u)
	if flows > total {
		t.Errorf("%d flows, want at most MaxConnections %d", flows, total)
	} else if flows < total*3/4 {
		t.Fatalf("only %d flows after %d sources sent (datagrams lost?)", flows, len(socks))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapInuse+after.StackInuse) - int64(before.HeapInuse+before.StackInuse)) / int64(flows)
	t.Logf("%d flows from maximum-size datagrams, %d bytes each", flows, per)
	if per > 24<<10 {
		t.Errorf("%d bytes per flow opened by a %d-byte datagram; want no datagram kept", per, maxUDPPayload)
	}
	if err := queryOn(real, 4); err != nil {
		t.Errorf("real client after the flood: %v", err)
	}
	c := u.svc.Counters()
	t.Logf("counters %+v", c)
	if c.FlowLimited == 0 || c.Refused < c.FlowLimited {
		t.Errorf("counters %+v: want datagrams over the flow limits counted (FlowLimited, and in Refused)", c)
	}
}

// A flow keeps a datagram for failover only while it is small; a large one
// replaces nothing stale either.
func TestUDPSavedDatagramBounded(t *testing.T) {
	be := newUDPSink(t)
	u, _ := startUDP(t, Options{IdleTimeout: time.Minute}, balance.Options{}, be)
	c := udpFrom(t, netip.MustParseAddr("127.0.0.1"), u.Addr())
	c.Write([]byte("small"))
	deadline := time.Now().Add(5 * time.Second)
	var f *flow
	for f == nil {
		if time.Now().After(deadline) {
			t.Fatal("no flow")
		}
		time.Sleep(10 * time.Millisecond)
		u.mu.Lock()
		f = u.flows[c.LocalAddr().(*net.UDPAddr).AddrPort()]
		u.mu.Unlock()
	}
	saved := func() []byte {
		f.mu.Lock()
		defer f.mu.Unlock()
		return append([]byte(nil), f.lastPkt...)
	}
	if got := string(saved()); got != "small" {
		t.Fatalf("saved %q, want the small datagram", got)
	}
	c.Write(make([]byte, maxUDPPayload))
	for len(saved()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("saved %d bytes after a %d-byte datagram; want nothing (and not the older one)", len(saved()), maxUDPPayload)
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.mu.Lock()
	capacity := cap(f.lastPkt)
	f.mu.Unlock()
	if capacity > maxSaved {
		t.Errorf("flow holds a %d-byte buffer, want at most %d", capacity, maxSaved)
	}
}

// newUDPSink is a loopback UDP backend that never answers.
func newUDPSink(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, maxDatagram)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestUDPFlowLimits(t *testing.T) {
	for _, tc := range []struct {
		max, perSource    int
		total, wantSource int
	}{
		{0, 0, DefaultMaxFlows, DefaultMaxFlows / 8},
		{4096, 0, 4096, 512},
		{5, 0, 5, 1},
		{100, 30, 100, 30},
	} {
		total, per := flowLimits(&Options{MaxConnections: tc.max, MaxFlowsPerSource: tc.perSource})
		if total != tc.total || per != tc.wantSource {
			t.Errorf("MaxConnections %d, MaxFlowsPerSource %d: limits %d, %d; want %d, %d", tc.max, tc.perSource, total, per, tc.total, tc.wantSource)
		}
	}
}
