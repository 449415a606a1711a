package dsr

import (
	"net/netip"
	"testing"

	"github.com/nib-lb/nib/internal/frame"
)

var (
	lbMAC     = [6]byte{0x02, 0, 0, 0, 0, 0x02}
	clientMAC = [6]byte{0x02, 0, 0, 0, 0, 0x10}
	macOf     = map[netip.Addr][6]byte{be1: {0x02, 0, 0, 0, 0, 0x21}, be2: {0x02, 0, 0, 0, 0, 0x22}}
)

type fakeNeighbors map[netip.Addr][6]byte

func (n fakeNeighbors) Lookup(a netip.Addr) ([6]byte, bool) { m, ok := n[a]; return m, ok }
func (n fakeNeighbors) Version() uint64                     { return 1 }

func newTestWorker(t *testing.T, services ...ServiceConfig) (*worker, *table) {
	t.Helper()
	f := &Forwarder{nb: fakeNeighbors(macOf)}
	f.SetMAC(lbMAC)
	tb := buildTable(services, nil, nil)
	f.table.Store(tb)
	return &worker{f: f, flows: newFlowTable(1024, 300)}, tb
}

// tcpFrame builds client→dst TCP with the given ports and payload.
func tcpFrame(src, dst netip.Addr, sport, dport uint16, flags uint8, payload string) []byte {
	b := frame.AppendEthernet(nil, lbMAC, clientMAC, nil, 0x0800)
	b = frame.AppendIPv4(b, frame.IPv4Header{TTL: 64, Proto: ProtoTCP, Src: src, Dst: dst}, 20+len(payload))
	b = frame.AppendTCP(b, frame.TCPHeader{SrcPort: sport, DstPort: dport, Seq: 1, Flags: flags, Window: 65535})
	b = append(b, payload...)
	var fr frame.Frame
	if err := fr.Parse(b); err != nil {
		panic(err)
	}
	fr.SetL4Checksum()
	return b
}

func TestProcessForwardsRewritingMACsOnly(t *testing.T) {
	w, tb := newTestWorker(t, svcCfg(80, true, BackendConfig{be1, 1}))
	cl := netip.MustParseAddr("198.51.100.9")
	in := tcpFrame(cl, vip, 40000, 80, 0x02, "")
	b := append([]byte(nil), in...)
	act, _ := w.process(tb, b, 1)
	if act != actForward {
		t.Fatalf("action %v", act)
	}
	if [6]byte(b[0:6]) != macOf[be1] || [6]byte(b[6:12]) != lbMAC {
		t.Fatalf("MACs %x %x", b[0:6], b[6:12])
	}
	if string(b[12:]) != string(in[12:]) {
		t.Fatal("bytes above layer 2 changed")
	}
	st := w.f.Stats().Services[0]
	if st.Packets != 1 || st.NewFlows != 1 || st.Bytes != uint64(len(in)) || st.Backends[0].Packets != 1 || st.Backends[0].Bytes != uint64(len(in)) {
		t.Fatalf("counters %+v", st)
	}
}

func TestProcessDrops(t *testing.T) {
	w, tb := newTestWorker(t, svcCfg(80, true, BackendConfig{be1, 1}))
	cl := netip.MustParseAddr("198.51.100.9")
	noMAC := netip.MustParseAddr("192.0.2.99")
	for _, tc := range []struct {
		name string
		tb   *table
		b    []byte
		want DropReason
	}{
		{"truncated ip", tb, tcpFrame(cl, vip, 1, 80, 2, "")[:20], DropMalformed},
		{"wrong port", tb, tcpFrame(cl, vip, 1, 81, 2, ""), DropNoService},
		{"not a vip", tb, tcpFrame(cl, be2, 1, 80, 2, ""), DropNoService},
		{"unresolved backend", buildTable([]ServiceConfig{svcCfg(80, true, BackendConfig{noMAC, 1})}, nil, nil), tcpFrame(cl, vip, 1, 80, 2, ""), DropUnresolved},
		{"every backend drained", buildTable([]ServiceConfig{svcCfg(80, true, BackendConfig{be1, 0})}, nil, nil), tcpFrame(cl, vip, 1, 80, 2, ""), DropNoBackend},
	} {
		w.flows = newFlowTable(1024, 300) // rows share no flows
		act, why := w.process(tc.tb, tc.b, 1)
		if act != actDrop || why != tc.want {
			t.Errorf("%s: %v %v, want drop %v", tc.name, act, why, tc.want)
		}
	}
}

// withDst returns a copy of frame b addressed to dst.
func withDst(b []byte, dst [6]byte) []byte {
	b = append([]byte(nil), b...)
	copy(b[0:6], dst[:])
	return b
}

// TestProcessOnlyFramesForUs: a frame to a VIP or a tarpit address is acted
// on only when it is addressed to the interface's MAC (PACKET_HOST); a
// promiscuous NIC or a switch flooding unknown unicast also shows the
// forwarder other hosts' frames, and broadcast or multicast ones.
func TestProcessOnlyFramesForUs(t *testing.T) {
	cl := netip.MustParseAddr("198.51.100.9")
	trap := netip.MustParseAddr("203.0.113.77")
	toVIP := tcpFrame(cl, vip, 40000, 80, 0x02, "")
	toTrap := tcpFrame(cl, trap, 40001, 80, 0x02, "")
	tagged := frame.AppendEthernet(nil, lbMAC, clientMAC, []uint16{7}, 0x0800)
	tagged = append(tagged, toVIP[14:]...)
	otherHost := [6]byte{0x02, 0, 0, 0, 0, 0x99}
	for _, tc := range []struct {
		name string
		b    []byte
		act  action
		why  DropReason
	}{
		{"to us, VIP", toVIP, actForward, 0},
		{"to us, tarpit SYN", toTrap, actReply, 0},
		{"to us, VLAN tagged", tagged, actForward, 0},
		{"another host, VIP", withDst(toVIP, otherHost), actDrop, DropNotForUs},
		{"another host, tarpit SYN", withDst(toTrap, otherHost), actDrop, DropNotForUs},
		{"another host, VLAN tagged", withDst(tagged, otherHost), actDrop, DropNotForUs},
		{"our MAC with the group bit", withDst(toVIP, [6]byte{0x03, 0, 0, 0, 0, 0x02}), actDrop, DropNotForUs},
		{"our MAC, last byte differs", withDst(toVIP, [6]byte{0x02, 0, 0, 0, 0, 0x03}), actDrop, DropNotForUs},
		{"broadcast", withDst(toVIP, [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), actDrop, DropNotForUs},
		{"IPv4 multicast MAC", withDst(toVIP, [6]byte{0x01, 0x00, 0x5e, 0, 0, 1}), actDrop, DropNotForUs},
		{"zero MAC", withDst(toVIP, [6]byte{}), actDrop, DropNotForUs},
		{"another host, malformed IP", withDst(toVIP[:20], otherHost), actDrop, DropNotForUs},
		{"shorter than an Ethernet header", toVIP[:13], actDrop, DropMalformed},
		{"empty", nil, actDrop, DropMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, tb := newTestWorker(t, svcCfg(80, true, BackendConfig{be1, 1}))
			tb.tarpit = Tarpit{Match: netip.MustParsePrefix("203.0.113.76/31").Contains}
			w.f.secret = 1
			w.reply = make([]byte, vnetHdrLen+128)
			b := append([]byte(nil), tc.b...)
			act, why := w.process(tb, b, 1)
			if act != tc.act || (act == actDrop && why != tc.why) {
				t.Fatalf("%v %v, want %v %v", act, why, tc.act, tc.why)
			}
			if act != actForward && string(b) != string(tc.b) {
				t.Fatal("a frame that was not forwarded was changed")
			}
			if st := w.f.Stats().Services[0]; act != actForward && (st.Packets != 0 || st.NewFlows != 0) {
				t.Fatalf("a frame that was not forwarded was counted for the service: %+v", st)
			}
		})
	}
	if forUs(lbMAC[:5], lbMAC) || !forUs(lbMAC[:], lbMAC) {
		t.Fatal("forUs on a bare MAC")
	}
}

// TestSetMAC: after the interface's MAC changes (SetMAC), frames to the
// new MAC are forwarded from it and tarpit answers come from it; frames to
// the old one are another host's.
func TestSetMAC(t *testing.T) {
	w, tb := newTestWorker(t, svcCfg(80, true, BackendConfig{be1, 1}))
	tb.tarpit = Tarpit{Match: netip.MustParsePrefix("203.0.113.76/31").Contains}
	w.reply = make([]byte, vnetHdrLen+128)
	newMAC := [6]byte{0x02, 0, 0, 0, 0, 0x99}
	w.f.SetMAC(newMAC)
	if w.f.MAC() != newMAC {
		t.Fatalf("MAC() = %x", w.f.MAC())
	}
	cl := netip.MustParseAddr("198.51.100.9")
	toVIP := tcpFrame(cl, vip, 40000, 80, 0x02, "")
	if act, why := w.process(tb, toVIP, 1); act != actDrop || why != DropNotForUs {
		t.Fatalf("frame to the old MAC: %v %v", act, why)
	}
	b := withDst(toVIP, newMAC)
	if act, why := w.process(tb, b, 1); act != actForward || [6]byte(b[0:6]) != macOf[be1] || [6]byte(b[6:12]) != newMAC {
		t.Fatalf("frame to the new MAC: %v %v, MACs %x %x", act, why, b[0:6], b[6:12])
	}
	trap := withDst(tcpFrame(cl, netip.MustParseAddr("203.0.113.77"), 40001, 80, 0x02, ""), newMAC)
	if act, _ := w.process(tb, trap, 1); act != actReply || [6]byte(w.reply[vnetHdrLen+6:vnetHdrLen+12]) != newMAC {
		t.Fatalf("tarpit: %v from %x", act, w.reply[vnetHdrLen+6:vnetHdrLen+12])
	}
}

func TestProcessStickyVersusPerFlow(t *testing.T) {
	for _, perFlow := range []bool{false, true} {
		w, tb := newTestWorker(t, svcCfg(80, perFlow, BackendConfig{be1, 1}, BackendConfig{be2, 1}))
		seen := map[bool]map[[6]byte]bool{}
		for c := range 50 {
			cl := netip.AddrFrom4([4]byte{198, 51, 100, byte(c)})
			macs := map[[6]byte]bool{}
			for port := range uint16(30) {
				b := tcpFrame(cl, vip, 30000+port, 80, 2, "")
				if act, why := w.process(tb, b, 1); act != actForward {
					t.Fatalf("drop %v", why)
				}
				macs[[6]byte(b[0:6])] = true
			}
			if !perFlow && len(macs) != 1 {
				t.Fatalf("sticky service spread client %v over %d backends", cl, len(macs))
			}
			seen[len(macs) > 1] = macs
		}
		if perFlow && seen[true] == nil {
			t.Fatal("per-flow service kept every client on one backend")
		}
	}
}

// An ICMP "fragmentation needed" about a flow goes to the flow's backend.
func TestProcessICMPErrorFollowsFlow(t *testing.T) {
	w, tb := newTestWorker(t, svcCfg(80, true, BackendConfig{be1, 1}, BackendConfig{be2, 1}))
	cl := netip.MustParseAddr("198.51.100.9")
	syn := tcpFrame(cl, vip, 40000, 80, 2, "")
	w.process(tb, syn, 1)
	owner := [6]byte(syn[0:6])
	// The backend's reply (VIP → client) as quoted by a router.
	quote := frame.AppendIPv4(nil, frame.IPv4Header{TTL: 64, Proto: ProtoTCP, Src: vip, Dst: cl}, 20)
	quote = frame.AppendTCP(quote, frame.TCPHeader{SrcPort: 80, DstPort: 40000, Seq: 9, Flags: 0x10})
	router := netip.MustParseAddr("203.0.113.1")
	b := frame.AppendEthernet(nil, lbMAC, clientMAC, nil, 0x0800)
	b = frame.AppendIPv4(b, frame.IPv4Header{TTL: 64, Proto: ProtoICMP, Src: router, Dst: vip}, 8+len(quote))
	b = frame.AppendICMP(b, 3, 4, 1400)
	b = append(b, quote...)
	if act, why := w.process(tb, b, 2); act != actForward {
		t.Fatalf("ICMP error dropped: %v", why)
	}
	if [6]byte(b[0:6]) != owner {
		t.Fatalf("ICMP error went to %x, flow is on %x", b[0:6], owner)
	}
	// An echo request to the VIP is not forwarded.
	echo := frame.AppendEthernet(nil, lbMAC, clientMAC, nil, 0x0800)
	echo = frame.AppendIPv4(echo, frame.IPv4Header{TTL: 64, Proto: ProtoICMP, Src: cl, Dst: vip}, 8)
	echo = frame.AppendICMP(echo, 8, 0, 0)
	if act, why := w.process(tb, echo, 2); act != actDrop || why != DropICMP {
		t.Fatalf("echo: %v %v", act, why)
	}
}

func BenchmarkProcess(b *testing.B) {
	w, tb := newTestWorker(&testing.T{}, svcCfg(80, true, BackendConfig{be1, 1}, BackendConfig{be2, 1}))
	f := tcpFrame(netip.MustParseAddr("198.51.100.9"), vip, 40000, 80, 0x10, "0123456789")
	b.ReportAllocs()
	for b.Loop() {
		// Forwarding rewrites the destination MAC: address the frame to
		// the LB again, as the next one would be.
		copy(f[0:6], lbMAC[:])
		if act, why := w.process(tb, f, 1); act != actForward {
			b.Fatalf("dropped: %v", why)
		}
	}
}
