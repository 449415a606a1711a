package frame

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fuzzSeeds are valid frames of every kind the tests build.
func fuzzSeeds() [][]byte {
	return [][]byte{
		tcp4, tcp4Opt, tcp4Data, udp4, tcp6, udp6VLAN,
		pkt{vlans: []uint16{1, 2}, ipOpts: []byte{148, 4, 0, 0}, proto: ProtoTCP, l4: tcpSeg(synHdr, seq(10))}.bytes(),
		pkt{v6: true, ext: []ext6{hbh, routing, destOpt, frag6(0, true), ah}, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes(),
		pkt{frag: 100, proto: ProtoUDP, l4: seq(40)}.bytes(),
		icmpErr4(3, 4, reply4(IPv4DontFragment, ProtoTCP, tcpSeg(synHdr, nil))),
		icmpErr6(2, pkt{v6: true, src: vip6, dst: client6, proto: ProtoTCP, l4: tcpSeg(synHdr, nil)}.bytes()[14:]),
		AppendARP(AppendEthernet(nil, macLB, macClient, nil, EtherTypeARP), 1, macClient, client4, [6]byte{}, vip4),
	}
}

// FuzzParse: Parse never panics, offsets stay within the buffer, every
// accessor works, setting the checksums makes them verify, and an IPv4 or
// IPv6 TCP or UDP frame rebuilt from its parsed fields parses the same.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr Frame
		if err := fr.Parse(b); err != nil {
			if err != ErrTruncated && err != ErrMalformed && err != ErrUnsupported {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		l3, l4, p, end := fr.L3Offset(), fr.L4Offset(), fr.PayloadOffset(), fr.L3End()
		if !(14 <= l3 && l3 <= l4 && l4 <= p && p <= end && end <= len(b)) {
			t.Fatalf("offsets %d %d %d %d, len %d", l3, l4, p, end, len(b))
		}
		_, _ = fr.ICMPInnerFlow()
		_, _ = fr.ICMPType()
		_ = fr.TCPHeader()
		_ = fr.UDPHeader()
		_ = fr.IPv6Header()
		_ = fr.TTL()

		c := append([]byte(nil), b...)
		var cf Frame
		if err := cf.Parse(c); err != nil {
			t.Fatal(err)
		}
		cf.SetIPv4Checksum()
		if cf.SetL4Checksum() {
			if ipOK, l4OK := cf.VerifyChecksums(); !ipOK || !l4OK {
				t.Fatalf("checksums set but not verified: %v %v", ipOK, l4OK)
			}
			if fr.Proto() != ProtoICMP && refL4Checksum(cf.Src(), cf.Dst(), cf.Proto(), c[l4:end]) != 0 {
				t.Fatal("reference disagrees with SetL4Checksum")
			}
		}

		if fr.Fragmented() || !fr.HasPorts() || fr.IPVersion() == 6 && l4 != l3+40 {
			return
		}
		var vlans []uint16
		for i := range fr.VLANs() {
			_, tci := fr.VLAN(i)
			vlans = append(vlans, tci)
		}
		r := AppendEthernet(nil, fr.DstMAC(), fr.SrcMAC(), vlans, fr.EtherType())
		if fr.IPVersion() == 4 {
			r = AppendIPv4(r, fr.IPv4Header(), end-l4)
		} else {
			r = AppendIPv6(r, fr.IPv6Header(), end-l4)
		}
		if fr.Proto() == ProtoTCP {
			r = AppendTCP(r, fr.TCPHeader())
		} else {
			r = AppendUDP(r, fr.UDPHeader(), end-p)
		}
		r = append(r, b[p:end]...)
		var rf Frame
		if err := rf.Parse(r); err != nil {
			t.Fatalf("rebuilt frame: %v", err)
		}
		type fields struct {
			DstMAC, SrcMAC [6]byte
			VLANs          int
			IPv4           IPv4Header
			IPv6           IPv6Header
			TCP            TCPHeader
			UDP            UDPHeader
			Flow           Flow
			Payload        []byte
		}
		get := func(f *Frame, b []byte) fields {
			return fields{f.DstMAC(), f.SrcMAC(), f.VLANs(), f.IPv4Header(), f.IPv6Header(), f.TCPHeader(), f.UDPHeader(), f.Flow(), b[f.PayloadOffset():f.L3End()]}
		}
		if diff := cmp.Diff(get(&fr, b), get(&rf, r), addrCmp); diff != "" {
			t.Fatalf("round trip (-parsed +rebuilt):\n%s", diff)
		}
	})
}
