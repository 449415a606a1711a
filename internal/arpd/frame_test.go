package arpd

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/arp"
)

// TestFrameCodec: what arpd sends is what the shared codec reads, and a
// request marshalled by that codec (as another Go ARP speaker would send
// it) is understood and answered.
func TestFrameCodec(t *testing.T) {
	req, err := arp.NewPacket(arp.OperationRequest, net.HardwareAddr(client[:]), clientIP, net.HardwareAddr(make([]byte, 6)), vip)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := req.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	in := append(append(append([]byte{}, broadcast[:]...), client[:]...), 0x08, 0x06)
	in = append(in, pb...) // 42 bytes, unpadded
	h := newHarness(t)
	h.claimVIPs(vip)
	out, v := h.in(in)
	if v&vReply == 0 || len(out) != 1 {
		t.Fatalf("verdict %b, %d frames", v, len(out))
	}
	f := out[0]
	if !bytes.Equal(f[0:6], client[:]) || !bytes.Equal(f[6:12], lbMAC[:]) || f[12] != 0x08 || f[13] != 0x06 {
		t.Fatalf("Ethernet header % x", f[:14])
	}
	var got arp.Packet
	if err := got.UnmarshalBinary(f[ethHdrLen:]); err != nil {
		t.Fatal(err)
	}
	want := arp.Packet{HardwareType: 1, ProtocolType: 0x0800, HardwareAddrLength: 6, IPLength: 4, Operation: arp.OperationReply,
		SenderHardwareAddr: lbMAC[:], SenderIP: vip, TargetHardwareAddr: client[:], TargetIP: clientIP}
	if got.HardwareType != want.HardwareType || got.ProtocolType != want.ProtocolType || got.HardwareAddrLength != 6 || got.IPLength != 4 ||
		got.Operation != want.Operation || !bytes.Equal(got.SenderHardwareAddr, want.SenderHardwareAddr) || got.SenderIP != want.SenderIP ||
		!bytes.Equal(got.TargetHardwareAddr, want.TargetHardwareAddr) || got.TargetIP != want.TargetIP {
		t.Fatalf("reply %+v, want %+v", got, want)
	}
	if len(f) != minFrame || !bytes.Equal(f[ethHdrLen+arpLen:], make([]byte, minFrame-ethHdrLen-arpLen)) {
		t.Fatal("reply not zero-padded to 60 bytes")
	}
}

// AppendRequest (what setup check asks with): a broadcast who-has, padded.
func TestAppendRequest(t *testing.T) {
	mac := [6]byte{0x02, 0, 0xc6, 0x33, 0x64, 0x02}
	b, err := AppendRequest([]byte("x"), mac, netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.100"))
	if err != nil {
		t.Fatal(err)
	}
	b = b[1:]
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0xc6, 0x33, 0x64, 0x02, 0x08, 0x06, // Ethernet
		0, 1, 0x08, 0, 6, 4, 0, 1, // Ethernet/IPv4, request
		0x02, 0, 0xc6, 0x33, 0x64, 0x02, 198, 51, 100, 2, // sender
		0, 0, 0, 0, 0, 0, 198, 51, 100, 100, // target
	}
	if len(b) != minFrame || !bytes.Equal(b[:len(want)], want) || !bytes.Equal(b[len(want):], make([]byte, minFrame-len(want))) {
		t.Errorf("frame\n% x\nwant\n% x (then zeros to %d bytes)", b, want, minFrame)
	}
	if _, err := AppendRequest(nil, mac, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("198.51.100.100")); err == nil {
		t.Error("an IPv6 sender was accepted")
	}
}
