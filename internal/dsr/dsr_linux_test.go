package dsr_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/dnstest"
	"github.com/nib-lb/nib/internal/dsr"
	"github.com/nib-lb/nib/internal/frame"
	"github.com/nib-lb/nib/internal/needs"
	"github.com/nib-lb/nib/internal/netnstest"
	"github.com/nib-lb/nib/internal/xdp"
)

// staticNeighbors are the topology's backend MACs (the ARP side is tested
// with arpd).
type staticNeighbors map[netip.Addr][6]byte

func (n staticNeighbors) Lookup(a netip.Addr) ([6]byte, bool) { m, ok := n[a]; return m, ok }
func (n staticNeighbors) Version() uint64                     { return 1 }

// labFwd is what the tests use of a forwarder.
type labFwd interface {
	Run(context.Context) error
	Update([]dsr.ServiceConfig, dsr.Tarpit) error
	Stats() dsr.Stats
	Close()
}

// dataPath is one of lbd's DSR data paths: every test runs on both.
type dataPath struct {
	name string
	new  func(cfg dsr.Config, svcs []dsr.ServiceConfig, tp dsr.Tarpit, nb dsr.Neighbors, logf func(string, ...any)) (labFwd, error)
	// userspace: frames reach the forwarder as AF_PACKET sees them, so it
	// counts partial checksums, super-frames and receive errors (the XDP
	// program leaves those to the kernel and counts none).
	userspace bool
}

var dataPaths = []dataPath{
	{"packet", func(cfg dsr.Config, svcs []dsr.ServiceConfig, tp dsr.Tarpit, nb dsr.Neighbors, logf func(string, ...any)) (labFwd, error) {
		return dsr.New(cfg, svcs, tp, nb, nil, logf)
	}, true},
	{"xdp", func(cfg dsr.Config, svcs []dsr.ServiceConfig, tp dsr.Tarpit, nb dsr.Neighbors, logf func(string, ...any)) (labFwd, error) {
		return xdp.New(cfg, svcs, tp, nb, nil, logf)
	}, false},
}

type dsrLab struct {
	tp   *netnstest.Topology
	fwd  labFwd
	path dataPath
	svc  dsr.ServiceConfig // the service the lab started with
}

// web is a copy of the lab's first service, to change and Update with.
func (lab *dsrLab) web() dsr.ServiceConfig {
	s := lab.svc
	s.Backends = append([]dsr.BackendConfig(nil), s.Backends...)
	return s
}

// startLab builds the topology, runs HTTP servers on every backend's VIP:80
// that name themselves and serve /big (1 MiB), and starts a forwarder in
// the lb namespace for svc.
func startLab(t *testing.T, path dataPath, opts netnstest.Options, perFlow bool) *dsrLab {
	t.Helper()
	tp := netnstest.New(t, opts)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	nb := staticNeighbors{}
	var backends []dsr.BackendConfig
	for _, be := range tp.Backends() {
		name := be.Name()
		mux := http.NewServeMux()
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
		mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) { w.Write(big) })
		netnstest.ServeHTTP(t, be, tp.VIP().String()+":80", mux)
		nb[be.Addr()] = [6]byte(be.MAC())
		backends = append(backends, dsr.BackendConfig{Addr: be.Addr(), Weight: 1})
	}
	lab := &dsrLab{tp: tp, path: path}
	lb := tp.LB()
	svc := dsr.ServiceConfig{Name: "web", VIP: tp.VIP(), Port: 80, Proto: dsr.ProtoTCP, PerFlow: perFlow, Backends: backends}
	err := lb.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		lab.fwd, err = path.new(dsr.Config{Interface: ifi, Workers: 2}, []dsr.ServiceConfig{svc}, tarpitFor(opts), nb, t.Logf)
		return err
	})
	lab.svc = svc
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lab.fwd.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("forwarder: %v", err)
		}
	})
	// Until arpd answers for the VIP, tell the client where it is.
	tp.Client().Run(t, "ip", "neigh", "replace", tp.VIP().String(), "lladdr", lb.MAC().String(), "dev", "eth0", "nud", "permanent")
	return lab
}

// tarpitFor is the lab's tarpit: 198.51.100.77 and .78 (TEST-NET-2 inside
// the namespaces), when the options ask for it.
var labTarpit = netip.MustParsePrefix("198.51.100.76/31")

func tarpitFor(netnstest.Options) dsr.Tarpit {
	return dsr.Tarpit{Match: labTarpit.Contains, Prefixes: []netip.Prefix{labTarpit}, Exact: true}
}

func rxBytes(t *testing.T, h *netnstest.Host) uint64 {
	t.Helper()
	s := strings.TrimSpace(h.Run(t, "cat", "/sys/class/net/eth0/statistics/rx_bytes"))
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("rx_bytes %q: %v", s, err)
	}
	return n
}

// offloadCases are the two settings every DSR case runs with: offloads off,
// and the client leaving TCP checksums to "the NIC" (CHECKSUM_PARTIAL on
// veth) while the LB coalesces with GRO, where Pen forwards broken frames.
var offloadCases = []struct {
	name string
	off  map[string]netnstest.Offloads
}{
	{"offloads off", map[string]netnstest.Offloads{"*": {}}},
	{"client csum offload, lb GRO", map[string]netnstest.Offloads{
		"client": {TxChecksum: true, TSO: true, GSO: true},
		"lb":     {TxChecksum: true, GRO: true},
		"*":      {TxChecksum: true, TSO: true, GSO: true},
	}},
}

// eachPath runs f as a subtest per data path.
func eachPath(t *testing.T, f func(t *testing.T, p dataPath)) {
	netnstest.SkipUnprivileged(t)
	for _, p := range dataPaths {
		t.Run(p.name, func(t *testing.T) { f(t, p) })
	}
}

// eachOffload runs f as a subtest per data path and offload setting.
func eachOffload(t *testing.T, f func(t *testing.T, p dataPath, opts netnstest.Options)) {
	eachPath(t, func(t *testing.T, p dataPath) {
		for _, tc := range offloadCases {
			t.Run(tc.name, func(t *testing.T) { f(t, p, netnstest.Options{Offloads: tc.off}) })
		}
	})
}

func TestLinuxDSRHTTP(t *testing.T) {
	eachOffload(t, func(t *testing.T, p dataPath, opts netnstest.Options) {
		{
			lab := startLab(t, p, opts, true)
			client := lab.tp.Client()
			url := "http://" + lab.tp.VIP().String() + "/"
			seen := map[string]int{}
			for i := range 40 {
				c := client.HTTPClient(t)
				c.Timeout = 5 * time.Second
				c.Transport.(*http.Transport).DisableKeepAlives = true
				resp, err := c.Get(url)
				if err != nil {
					t.Fatalf("request %d: %v (forwarder %+v)", i, err, lab.fwd.Stats())
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				seen[string(b)]++
			}
			if len(seen) != 2 || seen["be1"] == 0 || seen["be2"] == 0 {
				t.Fatalf("answers by backend: %v", seen)
			}
			// A 1 MiB download: the answer goes straight from the backend
			// to the client; the LB sees only the client's ACKs.
			before := rxBytes(t, lab.tp.LB())
			resp, err := client.HTTPClient(t).Get(url + "big")
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != 1<<20 {
				t.Fatalf("download: %d bytes, %v", n, err)
			}
			if got := rxBytes(t, lab.tp.LB()) - before; got > 200<<10 {
				t.Errorf("the LB received %d bytes during a 1 MiB download: replies are not bypassing it", got)
			}
			st := lab.fwd.Stats()
			if st.Forwarded == 0 || st.Drops["send-failed"] != 0 {
				t.Errorf("stats %+v", st)
			}
			t.Logf("stats: %+v", st)
		}
	})
}

// An upload through the VIP with the client's offloads on: super-frames and
// partial checksums must arrive intact (the backend hashes what it got).
func TestLinuxDSRUploadWithOffloads(t *testing.T) { eachPath(t, testUpload) }

func testUpload(t *testing.T, p dataPath) {
	lab := startLab(t, p, netnstest.Options{Offloads: map[string]netnstest.Offloads{
		"*":  {TxChecksum: true, TSO: true, GSO: true},
		"lb": {TxChecksum: true, GRO: true, TSO: true, GSO: true},
	}}, true)
	// Replace be1's handler? Simpler: POST to / and let the server discard;
	// the Go server reads the body to the end before answering only if we
	// ask, so use a raw connection and count what an echo server returns.
	payload := bytes.Repeat([]byte("upload!"), 1<<19) // 3.5 MiB
	for _, be := range lab.tp.Backends() {
		netnstest.ServeTCP(t, be, lab.tp.VIP().String()+":81", netnstest.CountBytes)
	}
	if err := lab.fwd.Update([]dsr.ServiceConfig{
		lab.web(),
		{Name: "up", VIP: lab.tp.VIP(), Port: 81, Proto: dsr.ProtoTCP, PerFlow: true, Backends: lab.web().Backends},
	}, dsr.Tarpit{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := lab.tp.Client().Dial(ctx, "tcp", lab.tp.VIP().String()+":81")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(payload); err != nil {
		t.Fatalf("upload: %v (stats %+v)", err, lab.fwd.Stats())
	}
	c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(c)
	if string(got) != strconv.Itoa(len(payload)) {
		t.Fatalf("backend received %q bytes, want %d (stats %+v)", got, len(payload), lab.fwd.Stats())
	}
	// The test is only worth something if the offloaded forms arrived
	// (which only the AF_PACKET path counts).
	if st := lab.fwd.Stats(); !p.userspace {
		t.Logf("forwarded %d frames", st.Forwarded)
	} else if st.PartialChecksums == 0 || st.SuperFrames == 0 {
		t.Errorf("no partial checksums or super-frames seen: %+v", st)
	} else {
		t.Logf("forwarded %d frames, %d with partial checksums, %d super-frames", st.Forwarded, st.PartialChecksums, st.SuperFrames)
	}
}

// startService runs handler-per-connection TCP servers (or, with udp, a
// datagram handler) on every backend's VIP:port and returns the backends'
// configs for a service.
func echoNamed(t *testing.T, lab *dsrLab, port int) []dsr.BackendConfig {
	t.Helper()
	var out []dsr.BackendConfig
	for _, be := range lab.tp.Backends() {
		name := be.Name()
		netnstest.ServeTCP(t, be, fmt.Sprintf("%s:%d", lab.tp.VIP(), port), func(c net.Conn) {
			buf := make([]byte, 512)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := fmt.Fprintf(c, "%s:%s", name, buf[:n]); err != nil {
					return
				}
			}
		})
		out = append(out, dsr.BackendConfig{Addr: be.Addr(), Weight: 1})
	}
	return out
}

func ask(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(buf[:n])
}

// A long-lived TCP flow keeps its backend while a backend is added, the
// flow's own backend is drained and another is removed.
func TestLinuxDSRFlowSurvivesChanges(t *testing.T) {
	eachOffload(t, testFlowSurvivesChanges)
}

func testFlowSurvivesChanges(t *testing.T, p dataPath, opts netnstest.Options) {
	opts.Backends = 3
	lab := startLab(t, p, opts, true)
	all := echoNamed(t, lab, 82)
	svc := func(bs ...dsr.BackendConfig) []dsr.ServiceConfig {
		return []dsr.ServiceConfig{{Name: "echo", VIP: lab.tp.VIP(), Port: 82, Proto: dsr.ProtoTCP, PerFlow: true, Backends: bs}}
	}
	if err := lab.fwd.Update(svc(all[0], all[1]), dsr.Tarpit{}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := lab.tp.Client().Dial(ctx, "tcp", lab.tp.VIP().String()+":82")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := ask(t, c, "1")
	owner := strings.SplitN(first, ":", 2)[0]
	var mine, other dsr.BackendConfig
	for i, b := range all[:2] {
		if lab.tp.Backends()[i].Name() == owner {
			mine = b
		} else {
			other = b
		}
	}
	steps := []struct {
		name string
		cfg  []dsr.ServiceConfig
	}{
		{"add be3", svc(all[0], all[1], all[2])},
		{"drain the flow's backend", svc(dsr.BackendConfig{mine.Addr, 0}, other, all[2])},
		{"remove another backend", svc(dsr.BackendConfig{mine.Addr, 0}, all[2])},
	}
	for i, st := range steps {
		if err := lab.fwd.Update(st.cfg, dsr.Tarpit{}); err != nil {
			t.Fatal(err)
		}
		if got := ask(t, c, strconv.Itoa(i+2)); got != owner+":"+strconv.Itoa(i+2) {
			t.Fatalf("after %s the flow got %q, want it still on %s", st.name, got, owner)
		}
	}
	// New flows avoid the drained backend.
	for i := range 20 {
		c2, err := lab.tp.Client().Dial(ctx, "tcp", lab.tp.VIP().String()+":82")
		if err != nil {
			t.Fatal(err)
		}
		if got := ask(t, c2, "x"); strings.HasPrefix(got, owner+":") {
			t.Fatalf("new flow %d went to the drained backend", i)
		}
		c2.Close()
	}
}

func TestLinuxDSRUDP(t *testing.T) { eachOffload(t, testUDP) }

func testUDP(t *testing.T, p dataPath, opts netnstest.Options) {
	dig := needs.Tool(t, "dig")
	lab := startLab(t, p, opts, true)
	var backends []dsr.BackendConfig
	for _, be := range lab.tp.Backends() {
		// A small DNS server on the VIP that answers every A query with
		// the backend's own address, so answers say who answered.
		pc, err := be.ListenPacket("udp4", lab.tp.VIP().String()+":53")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		go dnstest.Serve(pc, be.Addr().As4())
		backends = append(backends, dsr.BackendConfig{Addr: be.Addr(), Weight: 1})
	}
	cfgs := []dsr.ServiceConfig{lab.web(), {Name: "dns", VIP: lab.tp.VIP(), Port: 53, Proto: dsr.ProtoUDP, PerFlow: true, Backends: backends}}
	if err := lab.fwd.Update(cfgs, dsr.Tarpit{}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for range 20 {
		// dig picks a new source port per run: a new flow each time.
		ans := strings.TrimSpace(lab.tp.Client().Run(t, dig, "+short", "+time=2", "+tries=1", "@"+lab.tp.VIP().String(), "example.com", "A"))
		seen[ans]++
	}
	if len(seen) != 2 || seen[lab.tp.Backends()[0].Addr().String()] == 0 || seen[lab.tp.Backends()[1].Addr().String()] == 0 {
		t.Fatalf("DNS answers through the VIP: %v", seen)
	}
}

// Weights are respected over many flows: weight 3 of 4 gets about 75 %.
func TestLinuxDSRWeights(t *testing.T) {
	eachOffload(t, func(t *testing.T, p dataPath, opts netnstest.Options) {
		lab := startLab(t, p, opts, true)
		svc := lab.web()
		svc.Backends[1].Weight = 3
		if err := lab.fwd.Update([]dsr.ServiceConfig{svc}, dsr.Tarpit{}); err != nil {
			t.Fatal(err)
		}
		hc := lab.tp.Client().HTTPClient(t)
		hc.Timeout = 5 * time.Second
		hc.Transport.(*http.Transport).DisableKeepAlives = true
		seen := map[string]int{}
		const n = 400
		for i := range n {
			resp, err := hc.Get("http://" + lab.tp.VIP().String() + "/")
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			seen[string(b)]++
		}
		if share := float64(seen["be2"]) / n; share < 0.65 || share > 0.85 {
			t.Fatalf("weight 3 of 4 got %.2f of %d connections: %v", share, n, seen)
		}
	})
}

// sendRaw sends whole Ethernet frames from h's eth0, as they are.
func sendRaw(h *netnstest.Host, frames ...[]byte) error {
	return h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		pc, err := packetConn(ifi)
		if err != nil {
			return err
		}
		defer pc.Close()
		for i, f := range frames {
			if err := pc.send(f); err != nil {
				return fmt.Errorf("frame %d: %w", i, err)
			}
		}
		return nil
	})
}

func TestLinuxDSRMalformedFramesDropped(t *testing.T) { eachOffload(t, testMalformed) }

func testMalformed(t *testing.T, p dataPath, opts netnstest.Options) {
	lab := startLab(t, p, opts, true)
	client := lab.tp.Client()
	vipB := lab.tp.VIP().As4()
	src := client.Addr().As4()
	ipHdr := func(ihlWords byte, totalLen int, proto byte) []byte {
		h := make([]byte, 20)
		h[0] = 0x40 | ihlWords
		h[2], h[3] = byte(totalLen>>8), byte(totalLen)
		h[8], h[9] = 64, proto
		copy(h[12:], src[:])
		copy(h[16:], vipB[:])
		return h
	}
	eth := append(append(append([]byte(nil), lab.tp.LB().MAC()...), client.MAC()...), 0x08, 0x00)
	frames := map[string][]byte{
		"ihl too small":           append(append([]byte(nil), eth...), ipHdr(4, 40, 6)...),
		"ihl past the end":        append(append([]byte(nil), eth...), ipHdr(15, 60, 6)...),
		"total length past end":   append(append(append([]byte(nil), eth...), ipHdr(5, 1500, 6)...), make([]byte, 20)...),
		"tcp header cut":          append(append(append([]byte(nil), eth...), ipHdr(5, 24, 6)...), 0, 80, 0, 80),
		"tcp data offset too low": append(append(append([]byte(nil), eth...), ipHdr(5, 40, 6)...), append([]byte{0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x20, 2}, make([]byte, 6)...)...),
	}
	before := lab.fwd.Stats()
	for name, f := range frames {
		if err := sendRaw(client, f); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	want := before.Drops["malformed"] + uint64(len(frames))
	deadline := time.Now().Add(3 * time.Second)
	for lab.fwd.Stats().Drops["malformed"] < want {
		if time.Now().After(deadline) {
			t.Fatalf("malformed drops %d, want %d (stats %+v)", lab.fwd.Stats().Drops["malformed"], want, lab.fwd.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Still forwarding.
	resp, err := client.HTTPClient(t).Get("http://" + lab.tp.VIP().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestLinuxTarpit(t *testing.T) { eachOffload(t, testTarpit) }

func testTarpit(t *testing.T, p dataPath, opts netnstest.Options) {
	lab := startLab(t, p, opts, true)
	client, lb := lab.tp.Client(), lab.tp.LB()
	trap := netip.MustParseAddr("198.51.100.77")
	lbMAC, clMAC := [6]byte(lb.MAC()), [6]byte(client.MAC())
	syn := func(sport uint16, hdrLen int) []byte {
		b := frame.AppendEthernet(nil, lbMAC, clMAC, nil, 0x0800)
		b = frame.AppendIPv4(b, frame.IPv4Header{TTL: 64, Proto: dsr.ProtoTCP, Src: client.Addr(), Dst: trap}, hdrLen)
		opts := make([]byte, hdrLen-20)
		for i := range opts {
			opts[i] = 1 // NOP
		}
		if len(opts) >= 4 {
			copy(opts, []byte{2, 4, 0x05, 0xb4}) // MSS 1460
		}
		b = frame.AppendTCP(b, frame.TCPHeader{SrcPort: sport, DstPort: 80, Seq: 1000 * uint32(sport), Flags: 0x02, Window: 64240, Options: opts})
		var fr frame.Frame
		if err := fr.Parse(b); err != nil {
			t.Fatal(err)
		}
		fr.SetL4Checksum()
		return b
	}
	lens := []int{20, 24, 28, 32, 40}
	var got [][]byte
	err := client.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		pc, err := packetConn(ifi)
		if err != nil {
			return err
		}
		defer pc.Close()
		rx, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_IP, nil)
		if err != nil {
			return err
		}
		defer rx.Close()
		for i, n := range lens {
			if err := pc.send(syn(uint16(40000+i), n)); err != nil {
				return err
			}
		}
		rx.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 2048)
		for len(got) < len(lens) {
			n, _, err := rx.ReadFrom(buf)
			if err != nil {
				return nil
			}
			var fr frame.Frame
			if fr.Parse(buf[:n]) == nil && fr.Src() == trap && fr.Proto() == dsr.ProtoTCP {
				got = append(got, append([]byte(nil), buf[:n]...))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(lens) {
		t.Fatalf("%d SYN+ACKs for %d SYNs (stats %+v)", len(got), len(lens), lab.fwd.Stats())
	}
	for _, b := range got {
		var fr frame.Frame
		if err := fr.Parse(b); err != nil {
			t.Fatal(err)
		}
		i := int(fr.DstPort()) - 40000
		ipOK, l4OK := fr.VerifyChecksums()
		if !ipOK || !l4OK || fr.TCPFlags() != 0x12 || fr.TCPAck() != 1000*uint32(fr.DstPort())+1 || fr.Dst() != client.Addr() {
			t.Errorf("reply to the %d-byte SYN: checksums ip=%v tcp=%v flags %#x ack %d", lens[i], ipOK, l4OK, fr.TCPFlags(), fr.TCPAck())
		}
	}
	// A whole request to the tarpit never completes: the client's kernel
	// connects (SYN+ACK) but the zero window holds the request.
	client.Run(t, "ip", "neigh", "replace", trap.String(), "lladdr", lb.MAC().String(), "dev", "eth0", "nud", "permanent")
	c := client.HTTPClient(t)
	c.Timeout = 2 * time.Second
	if resp, err := c.Get("http://" + trap.String() + "/"); err == nil {
		resp.Body.Close()
		t.Fatal("a request to the tarpit completed")
	}
	if st := lab.fwd.Stats(); st.TarpitReplies < uint64(len(lens)+1) {
		t.Errorf("tarpit replies %d", st.TarpitReplies)
	}
}

// A frame to the VIP or to a tarpit address that is addressed to another
// MAC reaches the LB when the switch floods unknown unicast (or the NIC is
// promiscuous). It is not the LB's: it is neither forwarded nor answered,
// only counted. Frames to the LB's MAC still are.
func TestLinuxDSRFramesForOtherHostsIgnored(t *testing.T) { eachOffload(t, testFramesForOtherHosts) }

func testFramesForOtherHosts(t *testing.T, p dataPath, opts netnstest.Options) {
	lab := startLab(t, p, opts, true)
	client, lb := lab.tp.Client(), lab.tp.LB()
	trap := netip.MustParseAddr("198.51.100.77")
	lbMAC, clMAC := [6]byte(lb.MAC()), [6]byte(client.MAC())
	// No host has this MAC, so the bridge floods frames to it to every port.
	elsewhere := [6]byte{0x02, 0x00, 0xde, 0xad, 0xbe, 0xef}
	syn := func(dstMAC [6]byte, dst netip.Addr, sport uint16) []byte {
		b := frame.AppendEthernet(nil, dstMAC, clMAC, nil, 0x0800)
		b = frame.AppendIPv4(b, frame.IPv4Header{TTL: 64, Proto: dsr.ProtoTCP, Src: client.Addr(), Dst: dst}, 20)
		b = frame.AppendTCP(b, frame.TCPHeader{SrcPort: sport, DstPort: 80, Seq: 1, Flags: 0x02, Window: 64240})
		var fr frame.Frame
		if err := fr.Parse(b); err != nil {
			t.Fatal(err)
		}
		fr.SetL4Checksum()
		return b
	}
	const (
		foreignVIP  = 8 // source ports 45000.. to the VIP
		foreignTrap = 4 // source ports 45100.. to the tarpit
		ctlVIP      = 45999
		ctlTrap     = 46999
	)

	// What the LB sends: frames from its MAC seen by the backends (forwarded)
	// and by the client (tarpit answers), by TCP source/destination port.
	type seen struct {
		mu  sync.Mutex
		fwd map[uint16]string // client source port -> backend that got it
		tp  map[uint16]bool   // client port the tarpit answered
	}
	got := &seen{fwd: map[uint16]string{}, tp: map[uint16]bool{}}
	var readers sync.WaitGroup
	stop := make(chan struct{})
	watch := func(h *netnstest.Host, note func(fr *frame.Frame)) {
		var pc *packet.Conn
		err := h.Do(func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			pc, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_IP, nil)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer pc.Close()
			buf := make([]byte, 65536)
			for {
				select {
				case <-stop:
					return
				default:
				}
				pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					continue
				}
				var fr frame.Frame
				if fr.Parse(buf[:n]) != nil || fr.SrcMAC() != lbMAC || fr.Proto() != dsr.ProtoTCP {
					continue
				}
				got.mu.Lock()
				note(&fr)
				got.mu.Unlock()
			}
		}()
	}
	for _, be := range lab.tp.Backends() {
		name := be.Name()
		watch(be, func(fr *frame.Frame) {
			if fr.Dst() == lab.tp.VIP() && fr.DstPort() == 80 {
				got.fwd[fr.SrcPort()] = name
			}
		})
	}
	watch(client, func(fr *frame.Frame) {
		if fr.Src() == trap && fr.TCPFlags() == 0x12 {
			got.tp[fr.DstPort()] = true
		}
	})
	stopReaders := sync.OnceFunc(func() { close(stop); readers.Wait() })
	defer stopReaders()

	before := lab.fwd.Stats()
	var frames [][]byte
	for i := range foreignVIP {
		frames = append(frames, syn(elsewhere, lab.tp.VIP(), uint16(45000+i)))
	}
	for i := range foreignTrap {
		frames = append(frames, syn(elsewhere, trap, uint16(45100+i)))
	}
	// Broadcast is not for us either.
	frames = append(frames, syn([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, lab.tp.VIP(), 45200))
	foreign := uint64(len(frames))
	// The controls, addressed to the LB: forwarded and answered.
	frames = append(frames, syn(lbMAC, lab.tp.VIP(), ctlVIP), syn(lbMAC, trap, ctlTrap))
	if err := sendRaw(client, frames...); err != nil {
		t.Fatal(err)
	}
	dropped := func() uint64 { return lab.fwd.Stats().Drops["not-for-us"] - before.Drops["not-for-us"] }
	deadline := time.Now().Add(3 * time.Second)
	for {
		got.mu.Lock()
		controls := got.fwd[ctlVIP] != "" && got.tp[ctlTrap]
		got.mu.Unlock()
		if controls && dropped() >= foreign || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // anything still in flight
	stopReaders()

	st := lab.fwd.Stats()
	for port, be := range got.fwd {
		if port != ctlVIP {
			t.Errorf("a frame to the VIP addressed to another MAC (source port %d) was forwarded to %s", port, be)
		}
	}
	for port := range got.tp {
		if port != ctlTrap {
			t.Errorf("a SYN to the tarpit addressed to another MAC (source port %d) was answered", port)
		}
	}
	if got.fwd[ctlVIP] == "" || !got.tp[ctlTrap] {
		t.Fatalf("the control frames to the LB's MAC were not forwarded (%q) / answered (%v): stats %+v", got.fwd[ctlVIP], got.tp[ctlTrap], st)
	}
	if n := dropped(); n != foreign {
		t.Errorf("not-for-us drops %d, want %d (stats %+v)", n, foreign, st)
	}
	if n := st.TarpitReplies - before.TarpitReplies; n != 1 {
		t.Errorf("tarpit replies %d, want 1 (the control)", n)
	}
}

// TestLinuxDSRLinkFlap: the forwarder's sockets stay bound to the
// interface through a link flap; the ENETDOWN each one reports when the
// link goes down is counted, not the end of its worker, so traffic flows
// again once the link is back (and an open connection survives it).
func TestLinuxDSRLinkFlap(t *testing.T) { eachPath(t, testLinkFlap) }

func testLinkFlap(t *testing.T, p dataPath) {
	lab := startLab(t, p, netnstest.Options{}, true)
	all := echoNamed(t, lab, 82)
	if err := lab.fwd.Update([]dsr.ServiceConfig{{Name: "echo", VIP: lab.tp.VIP(), Port: 82, Proto: dsr.ProtoTCP, PerFlow: true, Backends: all}}, dsr.Tarpit{}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := lab.tp.Client().Dial(ctx, "tcp", lab.tp.VIP().String()+":82")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	owner := strings.SplitN(ask(t, c, "1"), ":", 2)[0]

	lb := lab.tp.LB()
	lb.Run(t, "ip", "link", "set", "eth0", "down")
	time.Sleep(200 * time.Millisecond)
	lb.Run(t, "ip", "link", "set", "eth0", "up")

	// The open connection goes on with its backend (the client
	// retransmits what was lost while the link was down).
	if got := ask(t, c, "2"); got != owner+":2" {
		t.Fatalf("after the flap the connection got %q, want %s:2", got, owner)
	}
	for i := range 10 {
		c2, err := lab.tp.Client().Dial(ctx, "tcp", lab.tp.VIP().String()+":82")
		if err != nil {
			t.Fatalf("new connection %d after the flap: %v (stats %+v)", i, err, lab.fwd.Stats())
		}
		ask(t, c2, "x")
		c2.Close()
	}
	if st := lab.fwd.Stats(); p.userspace && st.ReadErrors == 0 {
		t.Errorf("the link went down and no receive error was counted (stats %+v)", st)
	}
}
