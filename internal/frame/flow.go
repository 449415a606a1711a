package frame

import "net/netip"

// Flow identifies a transport flow. It is comparable and usable as a map key.
// Ports are zero for protocols without ports and for non-first fragments.
type Flow struct {
	Src, Dst         netip.Addr
	Proto            uint8
	SrcPort, DstPort uint16
}

// Reverse returns the flow in the other direction.
func (fl Flow) Reverse() Flow {
	return Flow{Src: fl.Dst, Dst: fl.Src, Proto: fl.Proto, SrcPort: fl.DstPort, DstPort: fl.SrcPort}
}

// Flow returns the frame's flow; the zero Flow for non-IP frames.
func (f *Frame) Flow() Flow {
	var src, dst netip.Addr
	switch f.ipVersion {
	case 4:
		h := f.b[f.l3 : f.l3+20]
		src = netip.AddrFrom4([4]byte(h[12:16]))
		dst = netip.AddrFrom4([4]byte(h[16:20]))
	case 6:
		h := f.b[f.l3 : f.l3+40]
		src = netip.AddrFrom16([16]byte(h[8:24]))
		dst = netip.AddrFrom16([16]byte(h[24:40]))
	default:
		return Flow{}
	}
	var sp, dp uint16
	if f.bits&bitPorts != 0 {
		p := f.b[f.l4 : f.l4+4]
		sp, dp = be16(p[0:2]), be16(p[2:4])
	}
	return Flow{Src: src, Dst: dst, Proto: f.proto, SrcPort: sp, DstPort: dp}
}

// IsICMPError reports whether the frame is an ICMP error that quotes the
// packet it is about: ICMPv4 destination unreachable (including
// fragmentation needed, type 3 code 4), time exceeded and parameter
// problem; ICMPv6 destination unreachable, packet too big, time exceeded and
// parameter problem.
func (f *Frame) IsICMPError() bool {
	if !f.isICMP() {
		return false
	}
	t := f.b[f.l4]
	if f.ipVersion == 4 {
		return t == 3 || t == 11 || t == 12
	}
	return t >= 1 && t <= 4
}

// ICMPInnerFlow returns, for an ICMP error about a TCP or UDP packet, the
// flow of the connection in client→VIP direction. The quoted packet was sent
// by the VIP (a DSR backend) to the client, so this is the quoted packet's
// flow reversed: a forwarder looks it up like any client→VIP frame to find the
// backend that owns it. ok is false for other frames, for quotes of another
// IP version or protocol, of a non-first fragment, or too short for ports.
func (f *Frame) ICMPInnerFlow() (fl Flow, ok bool) {
	if !f.IsICMPError() {
		return Flow{}, false
	}
	b := f.b[f.payload:f.end]
	var proto uint8
	var l4 int
	if f.ipVersion == 4 {
		if len(b) < 20 || b[0]>>4 != 4 {
			return Flow{}, false
		}
		ihl := int(b[0]&0xf) * 4
		if ihl < 20 || be16(b[6:])&0x1fff != 0 {
			return Flow{}, false
		}
		proto, l4 = b[9], ihl
		fl.Src = netip.AddrFrom4([4]byte(b[12:16]))
		fl.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	} else {
		if len(b) < 40 || b[0]>>4 != 6 {
			return Flow{}, false
		}
		fl.Src = netip.AddrFrom16([16]byte(b[8:24]))
		fl.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		proto, l4 = b[6], 40
		for i := 0; ; i++ {
			if proto != 0 && proto != 43 && proto != 44 && proto != 51 && proto != 60 {
				break
			}
			if i == MaxExtensionHeaders || len(b)-l4 < 8 {
				return Flow{}, false
			}
			hl := (int(b[l4+1]) + 1) * 8
			switch proto {
			case 44:
				if be16(b[l4+2:])&0xfff8 != 0 {
					return Flow{}, false
				}
				hl = 8
			case 51:
				hl = (int(b[l4+1]) + 2) * 4
			}
			proto = b[l4]
			l4 += hl
		}
	}
	if proto != ProtoTCP && proto != ProtoUDP || len(b)-l4 < 4 {
		return Flow{}, false
	}
	fl.Proto = proto
	fl.SrcPort = be16(b[l4:])
	fl.DstPort = be16(b[l4+2:])
	return fl.Reverse(), true
}
