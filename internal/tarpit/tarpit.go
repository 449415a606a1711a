package tarpit

import (
	"encoding/binary"
	"net/netip"

	"github.com/nib-lb/nib/internal/frame"
)

// Window is the receive window of every SYN+ACK. Zero: the client's
// handshake completes, but it may not send a byte; its stack sits in
// zero-window probing (unanswered, like everything after the SYN) until it
// gives up, minutes later. Nothing is ever in flight towards us.
const Window = 0

// MSS is the value of the MSS option carried by every SYN+ACK (the minimum,
// RFC 9293 default), making the TCP header 24 bytes.
const MSS = 536

// TTL is the IPv4 TTL and IPv6 hop limit of every reply.
const TTL = 64

var mssOption = []byte{2, 4, MSS >> 8, MSS & 0xff}

// Reply appends to dst the SYN+ACK answering syn, a frame parsed by
// frame.Frame.Parse that the caller has decided to tarpit (its destination
// matched the tarpit ACL). ok is false, and dst is returned unchanged, for
// anything but a TCP SYN (SYN set; ACK, RST and FIN clear) over IPv4 or IPv6
// that is not a fragment, and for SYNs from multicast, broadcast or
// unspecified source MACs or addresses (no reflected floods).
//
// The reply keeps the SYN's VLAN tags; goes to the SYN's source MAC from
// ourMAC; swaps addresses and ports; has a fresh IP header without options
// (IPv4: ID 0, DF, TTL 64; IPv6: no extension headers, hop limit 64); and a
// 24-byte TCP header: seq = ISN(4-tuple, secret), ack = SYN seq + 1, SYN|ACK,
// window Window, an MSS option, urgent 0. Both checksums are computed in
// full, so they are right whatever the SYN's header length. The SYN's own
// checksums are not checked: a SYN from a local sender with checksum
// offload (CHECKSUM_PARTIAL) must be answered too. Frames shorter than 60
// bytes are not padded: the NIC driver pads them. Reply does not allocate
// when dst has room (at most 86 bytes: 22 L2, 40 IPv6, 24 TCP).
func Reply(dst []byte, syn *frame.Frame, ourMAC [6]byte, secret uint64) ([]byte, bool) {
	if syn.IPVersion() == 0 || syn.Proto() != frame.ProtoTCP || !syn.HasPorts() || syn.Fragmented() {
		return dst, false
	}
	if syn.TCPFlags()&(frame.FlagSYN|frame.FlagACK|frame.FlagRST|frame.FlagFIN) != frame.FlagSYN {
		return dst, false
	}
	fl := syn.Flow()
	srcMAC := syn.SrcMAC()
	if srcMAC[0]&1 != 0 || !unicast(fl.Src) {
		return dst, false
	}
	b := syn.Bytes()
	start := len(dst)
	dst = append(dst, b[:syn.L3Offset()]...)
	frame.SetDstMAC(dst[start:], srcMAC)
	frame.SetSrcMAC(dst[start:], ourMAC)
	ipStart := len(dst)
	var src, to []byte
	if fl.Src.Is4() {
		dst = frame.AppendIPv4(dst, frame.IPv4Header{FlagsFragment: frame.IPv4DontFragment, TTL: TTL,
			Proto: frame.ProtoTCP, Src: fl.Dst, Dst: fl.Src}, 24)
		src, to = dst[ipStart+12:ipStart+16], dst[ipStart+16:ipStart+20]
	} else {
		dst = frame.AppendIPv6(dst, frame.IPv6Header{NextHeader: frame.ProtoTCP, HopLimit: TTL, Src: fl.Dst, Dst: fl.Src}, 24)
		src, to = dst[ipStart+8:ipStart+24], dst[ipStart+24:ipStart+40]
	}
	tcp := len(dst)
	dst = frame.AppendTCP(dst, frame.TCPHeader{
		SrcPort: fl.DstPort,
		DstPort: fl.SrcPort,
		Seq:     ISN(fl, secret),
		Ack:     syn.TCPSeq() + 1,
		Flags:   frame.FlagSYN | frame.FlagACK,
		Window:  Window,
		Options: mssOption,
	})
	c := frame.Checksum(dst[tcp:], frame.PseudoHeaderSum(src, to, frame.ProtoTCP, len(dst)-tcp))
	binary.BigEndian.PutUint16(dst[tcp+16:], c)
	return dst, true
}

// unicast reports whether a may be the source of a SYN we answer.
func unicast(a netip.Addr) bool {
	return !a.IsUnspecified() && !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// ISN returns the sequence number of the SYN+ACK for a SYN with flow fl
// (client→tarpit): a keyed mix of the addresses, ports and secret, so a
// retransmitted SYN gets the same reply and no state is kept. It is a fast
// non-cryptographic mix (splitmix64 finaliser), not a MAC: it only has to be
// stable and not a constant (Pen's is 42).
func ISN(fl frame.Flow, secret uint64) uint32 {
	s, d := fl.Src.As16(), fl.Dst.As16()
	h := mix(secret ^ 0x9e3779b97f4a7c15)
	h = mix(h ^ binary.BigEndian.Uint64(s[0:8]))
	h = mix(h ^ binary.BigEndian.Uint64(s[8:16]))
	h = mix(h ^ binary.BigEndian.Uint64(d[0:8]))
	h = mix(h ^ binary.BigEndian.Uint64(d[8:16]))
	h = mix(h ^ uint64(fl.SrcPort)<<16 ^ uint64(fl.DstPort))
	return uint32(h >> 32)
}

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
