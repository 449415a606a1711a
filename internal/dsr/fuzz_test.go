package dsr

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"

	"github.com/nib-lb/nib/internal/frame"
)

// FuzzProcess feeds arbitrary frames to the worker's per-frame decision,
// against a table with a per-flow TCP service, a sticky UDP service, a
// service whose backend has no MAC, a drained one and a tarpit range. For
// every frame:
//   - process never panics and gives a known action and drop reason;
//   - a frame not addressed to our MAC is dropped as not-for-us;
//   - a frame that is not forwarded is left exactly as it was;
//   - a forwarded frame was addressed to us, and only its MAC addresses
//     changed: the destination is a backend's, the source ours; every byte
//     from the EtherType (or VLAN tags) on is the input's;
//   - a tarpit reply goes from our MAC to the frame's sender and fits in the
//     worker's reply buffer;
//   - the same frame processed again (its flow now known) gets the same
//     action and the same bytes.
func FuzzProcess(f *testing.F) {
	cl := netip.MustParseAddr("198.51.100.9")
	trap := netip.MustParseAddr("203.0.113.77")
	vipUnresolved := netip.MustParseAddr("192.0.2.101")
	vipDrained := netip.MustParseAddr("192.0.2.102")
	noMAC := netip.MustParseAddr("192.0.2.99")
	services := []ServiceConfig{
		svcCfg(80, true, BackendConfig{be1, 1}, BackendConfig{be2, 1}),
		{Name: "dns", VIP: vip, Port: 53, Proto: ProtoUDP, Backends: []BackendConfig{{be1, 1}, {be2, 1}}},
		{Name: "unresolved", VIP: vipUnresolved, Proto: ProtoTCP, Backends: []BackendConfig{{noMAC, 1}}},
		{Name: "drained", VIP: vipDrained, Port: 80, Proto: ProtoTCP, Backends: []BackendConfig{{be1, 0}}},
	}
	tarpitRange := netip.MustParsePrefix("203.0.113.76/31")
	backendMACs := [][6]byte{macOf[be1], macOf[be2]}

	udp := func(dst netip.Addr, dport uint16, ff uint16, payload string) []byte {
		b := frame.AppendEthernet(nil, lbMAC, clientMAC, nil, 0x0800)
		b = frame.AppendIPv4(b, frame.IPv4Header{TTL: 64, Proto: ProtoUDP, Src: cl, Dst: dst, FlagsFragment: ff}, 8+len(payload))
		b = frame.AppendUDP(b, frame.UDPHeader{SrcPort: 5353, DstPort: dport}, len(payload))
		return append(b, payload...)
	}
	icmpAbout := func(dport uint16) []byte {
		quote := frame.AppendIPv4(nil, frame.IPv4Header{TTL: 64, Proto: ProtoTCP, Src: vip, Dst: cl}, 20)
		quote = frame.AppendTCP(quote, frame.TCPHeader{SrcPort: dport, DstPort: 40000, Seq: 9, Flags: 0x10})
		b := frame.AppendEthernet(nil, lbMAC, clientMAC, nil, 0x0800)
		b = frame.AppendIPv4(b, frame.IPv4Header{TTL: 64, Proto: ProtoICMP, Src: netip.MustParseAddr("203.0.113.1"), Dst: vip}, 8+len(quote))
		b = frame.AppendICMP(b, 3, 4, 1400)
		return append(b, quote...)
	}
	syn := tcpFrame(cl, vip, 40000, 80, 0x02, "")
	qinq := frame.AppendEthernet(nil, lbMAC, clientMAC, []uint16{100, 7}, 0x0800)
	qinq = append(qinq, syn[14:]...)
	v6 := frame.AppendEthernet(nil, lbMAC, clientMAC, nil, 0x86dd)
	v6 = frame.AppendIPv6(v6, frame.IPv6Header{NextHeader: ProtoTCP, HopLimit: 64, Src: netip.MustParseAddr("2001:db8::9"), Dst: netip.MustParseAddr("2001:db8::100")}, 20)
	v6 = frame.AppendTCP(v6, frame.TCPHeader{SrcPort: 40000, DstPort: 80, Seq: 1, Flags: 0x02})
	for _, b := range [][]byte{
		syn,
		tcpFrame(cl, vip, 40001, 80, 0x10, "GET / HTTP/1.0\r\n\r\n"),
		tcpFrame(cl, vip, 40000, 81, 0x02, ""),                    // no service on the port
		tcpFrame(cl, vipUnresolved, 40000, 443, 0x02, ""),         // backend MAC unknown
		tcpFrame(cl, vipDrained, 40000, 80, 0x02, ""),             // no backend takes flows
		tcpFrame(cl, trap, 40000, 22, 0x02, ""),                   // tarpit SYN: a reply
		tcpFrame(cl, trap, 40000, 22, 0x10, ""),                   // tarpit, not a SYN
		withDst(syn, clientMAC),                                   // another host's frame
		withDst(syn, [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), // broadcast
		udp(vip, 53, 0, "query"),
		udp(vip, 53, frame.IPv4MoreFragments, "first fragment"),
		udp(vip, 0, 185, "later fragment"), // offset 185*8: no ports
		icmpAbout(80),
		icmpAbout(81),
		qinq,
		v6,
		syn[:30],
		syn[:14],
		nil,
	} {
		f.Add(b, uint32(1))
	}

	// One worker and table for every input (Maglev tables take a while to
	// build); each input starts with an empty flow table.
	var (
		w  *worker
		tb *table
	)
	const replyRoom = vnetHdrLen + 128 // as the forwarder allocates it
	f.Fuzz(func(t *testing.T, in []byte, now uint32) {
		if w == nil {
			w, tb = newTestWorker(t, services...)
			tb.tarpit = Tarpit{Match: tarpitRange.Contains}
			w.f.secret = 0x5eed
			w.reply = make([]byte, replyRoom)
		}
		w.flows = newFlowTable(64, 300)
		w.reply = w.reply[:replyRoom]

		b := bytes.Clone(in)
		act, why := w.process(tb, b, now)
		out := bytes.Clone(b)
		var reply []byte
		if act == actReply {
			reply = bytes.Clone(w.reply)
		}
		if why < 0 || why >= numDropReasons {
			t.Fatalf("drop reason %d out of range", why)
		}
		if act == actDrop {
			_ = why.String()
		}
		forUs := len(in) >= 6 && [6]byte(in[:6]) == lbMAC
		if len(in) >= 14 && !forUs && (act != actDrop || why != DropNotForUs) {
			t.Fatalf("frame to %x (not ours): %v %v, want drop %v", in[:6], act, why, DropNotForUs)
		}
		switch act {
		case actDrop:
			if !bytes.Equal(b, in) {
				t.Fatalf("dropped frame (%v) changed:\n in %x\nout %x", why, in, b)
			}
		case actForward:
			if !forUs {
				t.Fatalf("forwarded a frame to %x, not to us", in[:6])
			}
			if !slices.Contains(backendMACs, [6]byte(b[0:6])) {
				t.Fatalf("forwarded to %x, not a backend's MAC", b[0:6])
			}
			if [6]byte(b[6:12]) != lbMAC {
				t.Fatalf("forwarded from %x, not from our MAC %x", b[6:12], lbMAC)
			}
			if !bytes.Equal(b[12:], in[12:]) {
				t.Fatalf("forwarding changed bytes past the MACs:\n in %x\nout %x", in, b)
			}
		case actReply:
			if !bytes.Equal(b, in) {
				t.Fatalf("frame answered by the tarpit changed:\n in %x\nout %x", in, b)
			}
			if len(reply) <= vnetHdrLen+14 || len(reply) > replyRoom {
				t.Fatalf("tarpit reply of %d bytes (with the %d-byte vnet header), want it in (%d, %d]", len(reply), vnetHdrLen, vnetHdrLen+14, replyRoom)
			}
			r := reply[vnetHdrLen:]
			if [6]byte(r[0:6]) != [6]byte(in[6:12]) || [6]byte(r[6:12]) != lbMAC {
				t.Fatalf("tarpit reply from %x to %x; want from us (%x) to the sender (%x)", r[6:12], r[0:6], lbMAC, in[6:12])
			}
			var fr frame.Frame
			if err := fr.Parse(in); err != nil || !tarpitRange.Contains(fr.Dst()) {
				t.Fatalf("tarpit answered a frame to %v (parse: %v)", fr.Dst(), err)
			}
		default:
			t.Fatalf("unknown action %d", act)
		}

		// Again, as a retransmission would come: the same decision and
		// bytes (the flow table now knows the flow).
		b2 := bytes.Clone(in)
		w.reply = w.reply[:replyRoom]
		act2, why2 := w.process(tb, b2, now)
		if act2 != act || (act == actDrop && why2 != why) {
			t.Fatalf("second time: %v %v, first %v %v", act2, why2, act, why)
		}
		if !bytes.Equal(b2, out) {
			t.Fatalf("second time the frame became\n%x\nfirst\n%x", b2, out)
		}
		if act == actReply && !bytes.Equal(w.reply, reply) {
			t.Fatalf("second tarpit reply\n%x\nfirst\n%x", w.reply, reply)
		}
	})
}
