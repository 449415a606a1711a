package dsrcheck

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/packet"
	"github.com/nib-lb/nib/internal/arpd"
	"golang.org/x/net/bpf"
)

// The loops that own the sockets. Each round opens one AF_PACKET socket on
// the interface (with a classic BPF filter), sends its probes to every
// backend at once and reads the answers until all are in or the timeout
// ends: the backends are probed concurrently, and the work is bounded by
// MaxBackends, the timeout and maxReads. Every socket is opened in the
// calling goroutine, so Check and ProbeVIP may run on a thread switched
// into a network namespace.

// maxReads bounds the frames read in one round, whatever the segment sends
// through the filters.
const maxReads = 4096

// link is the interface the probes leave from.
type link struct {
	ifi *net.Interface
	mac [6]byte
	ip  netip.Addr // our IPv4 address on it: the probes' source
}

// openLink looks up the interface and picks its IPv4 address that is on
// the same subnet as the first of near that has one (else its first one),
// never vip itself.
func openLink(name string, vip netip.Addr, near []netip.Addr) (link, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return link{}, fmt.Errorf("dsrcheck: interface %s: %w", name, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return link{}, fmt.Errorf("dsrcheck: interface %s has no Ethernet address", name)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return link{}, fmt.Errorf("dsrcheck: interface %s is down", name)
	}
	prefixes, err := interfacePrefixes(ifi)
	if err != nil {
		return link{}, err
	}
	ip, ok := pickSource(prefixes, vip, near)
	if !ok {
		return link{}, fmt.Errorf("dsrcheck: interface %s has no IPv4 address (other than the VIP): the probes need one as their source", name)
	}
	return link{ifi: ifi, mac: [6]byte(ifi.HardwareAddr), ip: ip}, nil
}

// pickSource chooses among an interface's IPv4 prefixes the address to
// send from: the first whose subnet holds near[0], else near[1], ...;
// else the first address. The VIP itself is never chosen.
func pickSource(prefixes []netip.Prefix, vip netip.Addr, near []netip.Addr) (netip.Addr, bool) {
	var usable []netip.Prefix
	for _, p := range prefixes {
		if a := p.Addr(); a.Is4() && a != vip && usableUnicast(a) {
			usable = append(usable, p)
		}
	}
	for _, n := range near {
		for _, p := range usable {
			if p.Contains(n) {
				return p.Addr(), true
			}
		}
	}
	if len(usable) == 0 {
		return netip.Addr{}, false
	}
	return usable[0].Addr(), true
}

// listen opens a packet socket on l for the EtherType, with a filter.
func listen(l link, etherType int, filter []bpf.Instruction) (*packet.Conn, error) {
	raw, err := bpf.Assemble(filter)
	if err != nil {
		return nil, fmt.Errorf("dsrcheck: filter: %w", err)
	}
	c, err := packet.Listen(l.ifi, packet.Raw, etherType, &packet.Config{Filter: raw})
	if err != nil {
		return nil, fmt.Errorf("dsrcheck: packet socket on %s: %w", l.ifi.Name, err)
	}
	return c, nil
}

// reader reads frames from c until a deadline, ctx's end or maxReads.
type reader struct {
	ctx   context.Context
	c     frameConn
	buf   []byte
	reads int
}

// frameConn is what reader uses of a *packet.Conn (tests fake it).
type frameConn interface {
	SetReadDeadline(time.Time) error
	ReadFrom([]byte) (int, net.Addr, error)
	LocalAddr() net.Addr
}

// read returns the next frame; done is true (and the frame nil) when
// deadline passed or the read budget is spent. An error is ctx's or the
// socket's.
func (r *reader) read(deadline time.Time) (b []byte, done bool, err error) {
	if r.reads >= maxReads {
		return nil, true, nil
	}
	if err := r.c.SetReadDeadline(deadline); err != nil {
		return nil, false, err
	}
	// After the deadline is set, so that a cancellation that set it in
	// the past just before is not lost.
	if err := r.ctx.Err(); err != nil {
		return nil, false, err
	}
	n, _, err := r.c.ReadFrom(r.buf)
	if err != nil {
		if cerr := r.ctx.Err(); cerr != nil {
			return nil, false, cerr
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, true, nil
		}
		return nil, false, fmt.Errorf("dsrcheck: reading from %s: %w", r.c.LocalAddr(), err)
	}
	r.reads++
	return r.buf[:n], false, nil
}

// run reads frames for timeout from now, handing each to handle, and
// calls resend once, at half the timeout. It ends early when handle says
// done or the read budget is spent; the error is resend's, handle's or
// read's.
func (r *reader) run(timeout time.Duration, resend func() error, handle func(b []byte) (done bool, err error)) error {
	start := time.Now()
	end, retry := start.Add(timeout), start.Add(timeout/2)
	retried := false
	for {
		deadline := end
		if !retried {
			deadline = retry
		}
		b, done, err := r.read(deadline)
		if err != nil {
			return err
		}
		if done {
			if retried || r.reads >= maxReads {
				return nil
			}
			retried = true
			if err := resend(); err != nil {
				return err
			}
			continue
		}
		if done, err := handle(b); done || err != nil {
			return err
		}
	}
}

func newReader(ctx context.Context, c *packet.Conn) (*reader, func() bool) {
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Unix(1, 0)) })
	return &reader{ctx: ctx, c: c, buf: make([]byte, snapLen)}, stop
}

// arpRound asks every backend's address once and the VIP once, asks again
// for the backends still unresolved at half the timeout, and collects what
// ARP shows for the whole timeout (answers to who-has VIP cannot be
// counted: the round always lasts the timeout).
func arpRound(ctx context.Context, l link, vip netip.Addr, backends []netip.Addr, timeout time.Duration) (*arpState, error) {
	c, err := listen(l, etherTypeARP, arpFilter(vip, l.ip))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r, stop := newReader(ctx, c)
	defer stop()

	st := newARPState(l.mac, l.ip, vip, backends)
	out := make([]byte, 0, minFrame)
	ask := func(target netip.Addr) error {
		var err error
		if out, err = arpd.AppendRequest(out[:0], l.mac, l.ip, target); err != nil {
			return err
		}
		if _, err := c.WriteTo(out, &packet.Addr{HardwareAddr: broadcast[:]}); err != nil {
			return fmt.Errorf("dsrcheck: sending ARP on %s: %w", l.ifi.Name, err)
		}
		return nil
	}
	askUnresolved := func() error {
		for _, i := range st.unresolved() {
			if err := ask(backends[i]); err != nil {
				return err
			}
		}
		return nil
	}
	if err := ask(vip); err != nil {
		return nil, err
	}
	if err := askUnresolved(); err != nil {
		return nil, err
	}
	err = r.run(timeout, askUnresolved, func(b []byte) (bool, error) {
		if p, ok := arpd.ParseFrame(b); ok {
			st.observe(p)
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// synRound sends one SYN for vip:port to each MAC, from consecutive source
// ports starting at a random high one, sends it again at half the timeout
// to those that have not answered, and reads the answers until all are in
// or the timeout ends. A SYN+ACK is answered with a RST to the backend.
func synRound(ctx context.Context, l link, vip netip.Addr, port uint16, macs [][6]byte, timeout time.Duration) ([]synOutcome, error) {
	n := len(macs)
	out := make([]synOutcome, n)
	if n == 0 {
		return out, nil
	}
	const low = 49152 // the IANA dynamic range
	base := uint16(low + rand.IntN(65536-low-n+1))
	probes := make([]synProbe, n)
	for i, m := range macs {
		probes[i] = synProbe{
			srcMAC: l.mac, dstMAC: m, src: l.ip, dst: vip,
			sport: base + uint16(i), dport: port,
			seq: rand.Uint32(), id: uint16(rand.Uint32()),
		}
		out[i].kind = synNoAnswer
	}
	c, err := listen(l, etherTypeIPv4, tcpFilter(vip, l.ip, port, base, n))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r, stop := newReader(ctx, c)
	defer stop()

	buf := make([]byte, 0, minFrame)
	send := func(i int, rst bool) error {
		p := probes[i]
		if rst {
			buf = p.appendRST(buf[:0])
		} else {
			buf = p.appendSYN(buf[:0])
		}
		if _, err := c.WriteTo(buf, &packet.Addr{HardwareAddr: p.dstMAC[:]}); err != nil {
			return fmt.Errorf("dsrcheck: sending a SYN on %s: %w", l.ifi.Name, err)
		}
		return nil
	}
	sendUnanswered := func() error {
		for i := range probes {
			if out[i].kind == synNoAnswer {
				if err := send(i, false); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := sendUnanswered(); err != nil {
		return nil, err
	}
	pending := n
	err = r.run(timeout, sendUnanswered, func(b []byte) (bool, error) {
		a, ok := parseTCPAnswer(b)
		if !ok || a.dport < base || int(a.dport-base) >= n {
			return false, nil
		}
		i := int(a.dport - base)
		kind := probes[i].answerKind(a)
		if kind == synNoAnswer || out[i].kind != synNoAnswer {
			return false, nil
		}
		if a.ethSrc != probes[i].dstMAC {
			out[i].other = a.ethSrc
			return false, nil
		}
		out[i].kind = kind
		pending--
		if kind == synAccepted {
			if err := send(i, true); err != nil {
				return false, err
			}
		}
		return pending == 0, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Check checks the backends of o from o.Interface: ARP for each backend's
// address (no MAC: Unreachable) and one who-has VIP (a backend's MAC
// answering: ARPLeak, which dominates), then, when o.Port is set, a SYN
// for VIP:Port sent to each reachable backend that does not leak (no
// answer: VIPNotBound; RST: NotListening; SYN+ACK: OK). It takes about
// twice o.Timeout. The error is for a check that could not run: invalid
// options (see Validate), an interface without an IPv4 address, no
// permission for packet sockets (CAP_NET_RAW), ctx's end.
func Check(ctx context.Context, o Options) (Report, error) {
	if err := o.Validate(); err != nil {
		return Report{}, err
	}
	o = o.normalized()
	l, err := openLink(o.Interface, o.VIP, append(append([]netip.Addr(nil), o.Backends...), o.VIP))
	if err != nil {
		return Report{}, err
	}
	st, err := arpRound(ctx, l, o.VIP, o.Backends, o.Timeout)
	if err != nil {
		return Report{}, err
	}
	syn := make([]synOutcome, len(o.Backends))
	if o.Port != 0 {
		var idx []int
		var macs [][6]byte
		for i, b := range st.backends {
			if _, leaks := st.claimOf(b.mac); b.resolved && !leaks {
				idx = append(idx, i)
				macs = append(macs, b.mac)
			}
		}
		outs, err := synRound(ctx, l, o.VIP, o.Port, macs, o.Timeout)
		if err != nil {
			return Report{}, err
		}
		for j, i := range idx {
			syn[i] = outs[j]
		}
	}
	pr := params{iface: o.Interface, ip: l.ip, vip: o.VIP, port: o.Port, timeout: o.Timeout}
	return assemble(pr, o.Backends, st, syn), nil
}

// ProbeVIP sends one SYN to vip:port with the Ethernet destination mac from
// the interface iface (from its IPv4 address, see Check) and reports OK
// (SYN+ACK; the half-open connection is then reset), NotListening (RST) or
// VIPNotBound (no answer from mac before the timeout, 0 meaning
// DefaultTimeout; the SYN is sent again at half of it), with what was seen.
// The error is for a probe that could not be sent. The active health checks
// use it: "a SYN to VIP:port sent to the backend's MAC must get a SYN+ACK".
func ProbeVIP(ctx context.Context, iface string, vip netip.Addr, port uint16, mac net.HardwareAddr, timeout time.Duration) (Verdict, string, error) {
	if err := checkVIP(vip); err != nil {
		return 0, "", err
	}
	vip = vip.Unmap()
	if port == 0 {
		return 0, "", errors.New("dsrcheck: no port to probe")
	}
	if len(mac) != 6 || mac[0]&1 != 0 || [6]byte(mac) == ([6]byte{}) {
		return 0, "", fmt.Errorf("dsrcheck: %q is not a unicast Ethernet address", mac)
	}
	if err := checkTimeout(timeout); err != nil {
		return 0, "", err
	}
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	l, err := openLink(iface, vip, []netip.Addr{vip})
	if err != nil {
		return 0, "", err
	}
	outs, err := synRound(ctx, l, vip, port, [][6]byte{[6]byte(mac)}, timeout)
	if err != nil {
		return 0, "", err
	}
	v, d := synVerdict(vip, port, timeout, outs[0])
	return v, d, nil
}
