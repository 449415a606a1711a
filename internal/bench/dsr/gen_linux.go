package main

import (
	"github.com/nib-lb/nib/internal/frame"

	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The helper modes run inside a namespace (`ip netns exec NS taskset -c CPU
// <this binary> -helper MODE ...`), so every socket they open is the
// namespace's. They print one line "RESULT <json>" on stdout.

// helperOpts are the flags of a helper process.
type helperOpts struct {
	mode     string // "arp", "udp" or "syn"
	iface    string
	src, dst string
	dport    int
	duration time.Duration
	rate     float64 // frames per second; 0: as fast as possible
	payload  int     // udp: bytes of UDP payload (18: 64-byte frames on the wire)
	batch    int
	timeout  time.Duration // arp
}

// genResult is what a helper reports.
type genResult struct {
	MAC      string  `json:"mac,omitempty"` // the destination's MAC (from the neighbour table)
	Sent     uint64  `json:"sent"`          // frames the kernel accepted
	Refused  uint64  `json:"refused"`       // frames sendmmsg refused (ENOBUFS, ...)
	FirstErr string  `json:"first_err,omitempty"`
	Seconds  float64 `json:"seconds"`
	// syn mode: SYN+ACKs from dst seen on the interface (PACKET_STATISTICS,
	// so frames dropped for a full socket queue count too), and a sample of
	// them checked for IP and TCP checksums.
	Replies     uint64 `json:"replies"`
	Sample      int    `json:"sample"`
	SampleValid int    `json:"sample_valid"`

	usage int64 // the helper's CPU time in clock ticks (set by the parent)
}

func runHelper(o helperOpts) error {
	dst, err := netip.ParseAddr(o.dst)
	if err != nil {
		return err
	}
	ifi, err := net.InterfaceByName(o.iface)
	if err != nil {
		return err
	}
	var res genResult
	timeout := o.timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	mac, err := resolve(dst, timeout)
	if err != nil {
		return err
	}
	res.MAC = mac.String()
	if o.mode != "arp" {
		src, err := netip.ParseAddr(o.src)
		if err != nil {
			return err
		}
		if err := generate(o, ifi, src, dst, mac, &res); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", b)
	return nil
}

// resolve returns dst's MAC from the namespace's neighbour table, making the
// kernel ask for it (a UDP datagram to port 9) while it is missing.
func resolve(dst netip.Addr, timeout time.Duration) (net.HardwareAddr, error) {
	deadline := time.Now().Add(timeout)
	var lastSend time.Time
	for {
		if mac, ok := arpTable(dst); ok {
			return mac, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no ARP reply for %s within %v", dst, timeout)
		}
		if time.Since(lastSend) > 500*time.Millisecond {
			if c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9))); err == nil {
				c.Write([]byte("arp"))
				c.Close()
			}
			lastSend = time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// arpTable looks dst up in /proc/net/arp (complete or permanent entries).
func arpTable(dst netip.Addr) (net.HardwareAddr, bool) {
	f, err := os.Open("/proc/net/arp")
	if err != nil {
		return nil, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// IP address  HW type  Flags  HW address  Mask  Device
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || fs[0] != dst.String() {
			continue
		}
		var flags int
		fmt.Sscanf(fs[2], "0x%x", &flags)
		mac, err := net.ParseMAC(fs[3])
		if err != nil || flags&0x2 == 0 || mac.String() == "00:00:00:00:00:00" {
			continue
		}
		return mac, true
	}
	return nil, false
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// l4csum is the TCP/UDP checksum of seg (checksum field zeroed) from src to dst.
func l4csum(src, dst [4]byte, proto byte, seg []byte) uint16 {
	return frame.Checksum(seg, frame.PseudoHeaderSum(src[:], dst[:], proto, len(seg)))
}

// buildFrame writes an Ethernet+IPv4 header for an L4 segment of l4len bytes
// and returns the frame with room for the segment.
func buildFrame(dstMAC, srcMAC net.HardwareAddr, src, dst [4]byte, proto byte, l4len int) []byte {
	f := frame.AppendEthernet(make([]byte, 0, 14+20+l4len), [6]byte(dstMAC), [6]byte(srcMAC), nil, frame.EtherTypeIPv4)
	f = frame.AppendIPv4(f, frame.IPv4Header{FlagsFragment: frame.IPv4DontFragment, TTL: 64, Proto: proto, Src: netip.AddrFrom4(src), Dst: netip.AddrFrom4(dst)}, l4len)
	return append(f, make([]byte, l4len)...)
}

// synOptions are a Linux SYN's options: MSS, SACK permitted, timestamps,
// NOP, window scale (a 40-byte TCP header, the size Pen's tarpit gets right).
var synOptions = []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}

// fill rewrites frame f (the i-th frame sent) with its source port (and for
// SYNs its sequence number) and fixes the L4 checksum.
func fill(mode string, f []byte, i uint64, src, dst [4]byte, dport int) {
	sport := uint16(1024 + i%64000)
	l4 := f[34:]
	switch mode {
	case "udp":
		binary.BigEndian.PutUint16(l4[0:], sport)
		binary.BigEndian.PutUint16(l4[2:], uint16(dport))
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		l4[6], l4[7] = 0, 0
		c := l4csum(src, dst, 17, l4)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	case "syn":
		binary.BigEndian.PutUint16(l4[0:], sport)
		binary.BigEndian.PutUint16(l4[2:], uint16(dport))
		binary.BigEndian.PutUint32(l4[4:], uint32(i*2654435761))
		binary.BigEndian.PutUint32(l4[8:], 0)
		l4[12] = 10 << 4 // 40-byte header
		l4[13] = 0x02    // SYN
		binary.BigEndian.PutUint16(l4[14:], 64240)
		l4[16], l4[17], l4[18], l4[19] = 0, 0, 0, 0
		copy(l4[20:], synOptions)
		binary.BigEndian.PutUint32(l4[20+8:], uint32(i)) // TSval
		binary.BigEndian.PutUint16(l4[16:], l4csum(src, dst, 6, l4))
	}
}

// generate sends frames to dst for o.duration, as fast as sendmmsg goes or
// paced to o.rate, from one AF_PACKET socket on ifi.
func generate(o helperOpts, ifi *net.Interface, src, dst netip.Addr, dstMAC net.HardwareAddr, res *genResult) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("AF_PACKET socket: %w", err)
	}
	defer unix.Close(fd)
	// The socket only sends: a filter that drops everything keeps received
	// frames out of its queue.
	drop := []unix.SockFilter{{Code: 0x06, K: 0}}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &drop[0]}); err != nil {
		return fmt.Errorf("SO_ATTACH_FILTER: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: htons(unix.ETH_P_IP)}); err != nil {
		return fmt.Errorf("bind AF_PACKET to %s: %w", ifi.Name, err)
	}

	var counter int = -1
	if o.mode == "syn" {
		counter, err = synAckCounter(ifi, dst)
		if err != nil {
			return err
		}
		defer unix.Close(counter)
	}

	s4, d4 := src.As4(), dst.As4()
	var proto byte = 17
	l4len := 8 + o.payload // UDP header and payload (18 bytes: 60 bytes + FCS = 64 on the wire)
	if o.mode == "udp" && (o.payload < smallPayload || o.payload > maxPayload) {
		return fmt.Errorf("UDP payload of %d bytes: want %d to %d (a 64-byte frame up to a 1500-byte MTU)", o.payload, smallPayload, maxPayload)
	}
	if o.mode == "syn" {
		proto, l4len = 6, 40
	}
	batch := o.batch
	if batch < 1 {
		batch = 64
	}
	if o.rate > 0 {
		// Smaller bursts when paced: about 20 k bursts per second.
		batch = max(1, min(batch, int(o.rate/20000)))
	}
	frames := make([][]byte, batch)
	iovs := make([]unix.Iovec, batch)
	msgs := make([]unix.Mmsghdr, batch)
	for i := range frames {
		frames[i] = buildFrame(dstMAC, ifi.HardwareAddr, s4, d4, proto, l4len)
		iovs[i].Base = &frames[i][0]
		iovs[i].SetLen(len(frames[i]))
		msgs[i].Hdr.Iov = &iovs[i]
		msgs[i].Hdr.SetIovlen(1)
	}

	if counter >= 0 {
		unix.GetsockoptTpacketStats(counter, unix.SOL_PACKET, unix.PACKET_STATISTICS) // reset
	}
	var seq uint64
	start := time.Now()
	end := start.Add(o.duration)
	for {
		now := time.Now()
		if !now.Before(end) {
			break
		}
		if o.rate > 0 {
			due := start.Add(time.Duration(float64(res.Sent+res.Refused+uint64(batch)) / o.rate * 1e9))
			if d := due.Sub(now); d > 0 {
				if d > 300*time.Microsecond {
					time.Sleep(d - 200*time.Microsecond)
				}
				continue
			}
		}
		for i := range frames {
			fill(o.mode, frames[i], seq+uint64(i), s4, d4, o.dport)
		}
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(batch), 0, 0, 0)
		if errno != 0 {
			res.Refused++
			if res.FirstErr == "" {
				res.FirstErr = errno.Error()
			}
			seq++
			continue
		}
		res.Sent += uint64(n)
		seq += uint64(n)
		if int(n) < batch {
			res.Refused++ // the next frame failed; its error is lost
			seq++
		}
	}
	res.Seconds = time.Since(start).Seconds()
	if counter >= 0 {
		time.Sleep(300 * time.Millisecond) // replies in flight
		st, err := unix.GetsockoptTpacketStats(counter, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err != nil {
			return fmt.Errorf("PACKET_STATISTICS: %w", err)
		}
		res.Replies = uint64(st.Packets)
		res.Sample, res.SampleValid = checkSample(counter, 2000)
	}
	return nil
}

// synAckCounter opens an AF_PACKET socket on ifi that keeps only TCP
// segments from src with SYN and ACK set.
func synAckCounter(ifi *net.Interface, src netip.Addr) (int, error) {
	a := src.As4()
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x0800, SkipTrue: 9},
		bpf.LoadAbsolute{Off: 23, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 6, SkipTrue: 7},
		bpf.LoadAbsolute{Off: 26, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: binary.BigEndian.Uint32(a[:]), SkipTrue: 5},
		bpf.LoadMemShift{Off: 14},
		bpf.LoadIndirect{Off: 14 + 13, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x12},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x12, SkipTrue: 1},
		bpf.RetConstant{Val: 0xffff},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		return -1, err
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("counter filter: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 2<<20)
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: htons(unix.ETH_P_IP)}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// checkSample reads up to n queued frames from fd and counts those whose IPv4
// header and TCP checksums are right.
func checkSample(fd, n int) (seen, valid int) {
	buf := make([]byte, 2048)
	for seen < n {
		m, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			break
		}
		seen++
		if tcpFrameValid(buf[:m]) {
			valid++
		}
	}
	return seen, valid
}

func tcpFrameValid(f []byte) bool {
	if len(f) < 34 {
		return false
	}
	ip := f[14:]
	ihl := int(ip[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	if ihl < 20 || tot < ihl+20 || len(ip) < tot {
		return false
	}
	if frame.Checksum(ip[:ihl], 0) != 0 {
		return false
	}
	seg := ip[ihl:tot]
	return frame.Checksum(seg, frame.PseudoHeaderSum(ip[12:16], ip[16:20], 6, len(seg))) == 0
}
