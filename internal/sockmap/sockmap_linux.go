package sockmap

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Relay is a loaded verdict program attached to its sockmap. Pairs of
// connected TCP sockets added to it relay each other's data in the kernel.
type Relay struct {
	objs relayObjects
}

// ErrUnsupported wraps every reason the kernel cannot run the relay (no
// BPF, no sockmap, no verdict-only attach): the caller relays in userspace.
var ErrUnsupported = errors.New("sockmap relay unsupported")

// New loads the program and attaches it to the map as a verdict-only
// program (BPF_SK_SKB_VERDICT). Any failure wraps ErrUnsupported.
func New() (*Relay, error) {
	r := &Relay{}
	if err := loadRelayObjects(&r.objs, nil); err != nil {
		return nil, fmt.Errorf("%w: load: %w", ErrUnsupported, err)
	}
	// A program attached to a map (not a link: sockmap links need 6.10).
	err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target:  r.objs.Peers.FD(),
		Program: r.objs.Relay,
		Attach:  ebpf.AttachSkSKBVerdict,
	})
	if err != nil {
		r.objs.Close()
		return nil, fmt.Errorf("%w: attach: %w", ErrUnsupported, err)
	}
	return r, nil
}

// Close detaches the program and frees the map; sockets still in it leave
// it (any data the kernel holds for them in flight is dropped).
func (r *Relay) Close() error {
	link.RawDetachProgram(link.RawDetachProgramOptions{
		Target: r.objs.Peers.FD(), Program: r.objs.Relay, Attach: ebpf.AttachSkSKBVerdict,
	})
	return r.objs.Close()
}

// Pair is two sockets relayed by the kernel.
type Pair struct {
	r      *Relay
	fd     [2]int
	cookie [2]uint64
}

// Add puts the connected TCP sockets a and b in the map as a pair: from
// now on what arrives on one is sent on the other by the kernel. Each must
// carry only what the other received (no header of the proxy's own), or
// Moved is wrong.
func (r *Relay) Add(a, b int) (*Pair, error) {
	p := &Pair{r: r, fd: [2]int{a, b}}
	for i, fd := range p.fd {
		var err error
		if p.cookie[i], err = Cookie(fd); err != nil {
			return nil, err
		}
	}
	if err := r.objs.Peers.Update(p.cookie[0], uint64(b), ebpf.UpdateNoExist); err != nil {
		return nil, fmt.Errorf("sockmap: add: %w", err)
	}
	if err := r.objs.Peers.Update(p.cookie[1], uint64(a), ebpf.UpdateNoExist); err != nil {
		r.objs.Peers.Delete(p.cookie[0])
		return nil, fmt.Errorf("sockmap: add: %w", err)
	}
	return p, nil
}

// Remove takes the pair out of the map. (Closing a socket removes it too.)
func (p *Pair) Remove() error {
	var errs []error
	for _, c := range p.cookie {
		if err := p.r.objs.Peers.Delete(c); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Kick makes the kernel relay what each socket received before the pair
// was added, in order and without userspace reading it: the program runs
// when a segment arrives, so such bytes would otherwise wait in the
// receive queue (where SIOCINQ no longer shows them) for the next one.
// Setting SO_RCVLOWAT calls the socket's data-ready callback, which the
// sockmap has replaced with its own.
func (p *Pair) Kick() error {
	for _, fd := range p.fd {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1); err != nil {
			return fmt.Errorf("sockmap: kick: %w", err)
		}
	}
	return nil
}

// PeerClosed reports whether fd's peer has sent its FIN while fd has not
// sent its own (CLOSE_WAIT), or reset the connection (CLOSE).
func PeerClosed(fd int) (fin, reset bool, err error) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return false, false, err
	}
	return ti.State == tcpCloseWait, ti.State == tcpClose, nil
}

// TCP states (include/net/tcp_states.h).
const (
	tcpClose     = 7
	tcpCloseWait = 8
)

// Moved reports the bytes socket i (0: a, 1: b) has received in its life
// and whether its peer's send queue has taken all of them: only then may
// the peer's write side be shut down (shutdown(2) before that loses what
// the kernel still holds). fin tells that socket i has its peer's FIN
// (EPOLLRDHUP), which TCP counts as one byte received.
func (p *Pair) Moved(i int, fin bool) (n uint64, flushed bool, err error) {
	src, err := Count(p.fd[i])
	if err != nil {
		return 0, false, err
	}
	dst, err := Count(p.fd[1-i])
	if err != nil {
		return 0, false, err
	}
	n = src.Received
	if fin && n > 0 {
		n--
	}
	return n, dst.Written == n, nil
}

// Cookie is the socket's cookie (SO_COOKIE), its key in the map.
func Cookie(fd int) (uint64, error) {
	var c uint64
	l := uint32(unsafe.Sizeof(c))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_COOKIE,
		uintptr(unsafe.Pointer(&c)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, fmt.Errorf("getsockopt SO_COOKIE: %w", e)
	}
	return c, nil
}

// Counts are a socket's data byte counters as TCP keeps them (TCP_INFO),
// which the kernel relay does not bypass.
type Counts struct {
	// Received is every byte that arrived in order (tcpi_bytes_received),
	// the peer's FIN included as one byte once it came.
	Received uint64
	// Written is every data byte queued for sending: sent once
	// (tcpi_bytes_sent less tcpi_bytes_retrans) or not yet
	// (tcpi_notsent_bytes). (tcpi_bytes_acked would count the SYN of a
	// connecting socket and any FIN sent.)
	Written uint64
}

// Count reads fd's counters.
func Count(fd int) (Counts, error) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return Counts{}, err
	}
	return Counts{Received: ti.Bytes_received, Written: ti.Bytes_sent - ti.Bytes_retrans + uint64(ti.Notsent_bytes)}, nil
}
