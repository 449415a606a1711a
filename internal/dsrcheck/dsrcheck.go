package dsrcheck

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Bounds of Options.
const (
	MaxBackends    = 256              // backends per Check
	DefaultTimeout = time.Second      // Options.Timeout 0
	MaxTimeout     = 30 * time.Second // longest Timeout accepted
)

// Options say what Check checks.
type Options struct {
	Interface string        // the segment's interface, which has an IPv4 address (source of probes)
	VIP       netip.Addr    // IPv4 only; IPv6 is refused with a clear error
	Port      uint16        // TCP port of the SYN probe; 0 skips it (the result says so)
	Backends  []netip.Addr  // IPv4, distinct, at most MaxBackends
	Timeout   time.Duration // how long to wait for ARP and SYN answers; 0 means DefaultTimeout
}

// Validate reports what is wrong with o without touching the network: an
// error here is the caller's (a usage error), one from Check may be the
// host's. IPv4-mapped IPv6 addresses count as IPv4.
func (o Options) Validate() error {
	if o.Interface == "" {
		return errors.New("dsrcheck: no interface given")
	}
	if err := checkVIP(o.VIP); err != nil {
		return err
	}
	switch n := len(o.Backends); {
	case n == 0:
		return errors.New("dsrcheck: no backends given")
	case n > MaxBackends:
		return fmt.Errorf("dsrcheck: %d backends, at most %d per check", n, MaxBackends)
	}
	seen := make(map[netip.Addr]bool, len(o.Backends))
	for _, b := range o.Backends {
		b = b.Unmap()
		switch {
		case !b.IsValid():
			return errors.New("dsrcheck: a backend address is missing")
		case !b.Is4():
			return fmt.Errorf("dsrcheck: backend %s is not IPv4: DSR backends are checked with ARP, IPv4 only", b)
		case !usableUnicast(b):
			return fmt.Errorf("dsrcheck: backend %s is not a unicast address", b)
		case b == o.VIP.Unmap():
			return fmt.Errorf("dsrcheck: backend %s is the VIP", b)
		case seen[b]:
			return fmt.Errorf("dsrcheck: backend %s is listed twice", b)
		}
		seen[b] = true
	}
	return checkTimeout(o.Timeout)
}

func checkVIP(vip netip.Addr) error {
	vip = vip.Unmap()
	switch {
	case !vip.IsValid():
		return errors.New("dsrcheck: no VIP given")
	case !vip.Is4():
		return fmt.Errorf("dsrcheck: VIP %s is IPv6: only IPv4 VIPs can be checked (the ARP leak is an IPv4 fault; IPv6 uses neighbor discovery)", vip)
	case !usableUnicast(vip):
		return fmt.Errorf("dsrcheck: VIP %s is not a unicast address", vip)
	}
	return nil
}

func checkTimeout(d time.Duration) error {
	if d < 0 || d > MaxTimeout {
		return fmt.Errorf("dsrcheck: timeout %v out of range (0 for %v, at most %v)", d, DefaultTimeout, MaxTimeout)
	}
	return nil
}

// usableUnicast reports whether an IPv4 address can be a host's.
func usableUnicast(a netip.Addr) bool {
	return !a.IsUnspecified() && !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// normalized returns o with IPv4-mapped addresses unmapped and the default
// timeout filled in. o must be valid.
func (o Options) normalized() Options {
	o.VIP = o.VIP.Unmap()
	bs := make([]netip.Addr, len(o.Backends))
	for i, b := range o.Backends {
		bs[i] = b.Unmap()
	}
	o.Backends = bs
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	return o
}

// Verdict is what Check found wrong with a backend, if anything.
type Verdict int

// Verdicts, from ready to the most basic fault. ARPLeak is the most
// damaging: the backend draws the VIP's traffic away from the load balancer.
const (
	OK           Verdict = iota // answers ARP for its address only, and the SYN probe (if any) got a SYN+ACK
	ARPLeak                     // answers ARP for the VIP (or sends ARP with the VIP as sender)
	VIPNotBound                 // no answer to a SYN for VIP:port sent to its MAC
	NotListening                // a RST: the VIP is bound but nothing listens on the port
	Unreachable                 // no ARP reply for its own address
)

var verdictWords = [...]string{
	OK:           "ok",
	ARPLeak:      "arp leak",
	VIPNotBound:  "vip not bound",
	NotListening: "not listening",
	Unreachable:  "unreachable",
}

// String is the verdict in lower-case words ("ok", "arp leak", "vip not
// bound", "not listening", "unreachable").
func (v Verdict) String() string {
	if v < 0 || int(v) >= len(verdictWords) {
		return fmt.Sprintf("verdict(%d)", int(v))
	}
	return verdictWords[v]
}

// MarshalText is String, for JSON.
func (v Verdict) MarshalText() ([]byte, error) {
	if v < 0 || int(v) >= len(verdictWords) {
		return nil, fmt.Errorf("dsrcheck: unknown verdict %d", int(v))
	}
	return []byte(verdictWords[v]), nil
}

// advice is what to do about v, for the report line.
func (v Verdict) advice() string {
	switch v {
	case ARPLeak:
		return "fix: on the backend set net.ipv4.conf.all.arp_ignore=1 and arp_announce=2 (setup script prints the commands)"
	case VIPNotBound:
		return "fix: add the VIP as a /32 to the backend's loopback (setup script prints the commands)"
	case NotListening:
		return "fix: start the service on the backend, listening on the VIP or on all addresses"
	case Unreachable:
		return "fix: check that the backend is up, that its address is right and that it is on this interface's segment"
	}
	return ""
}

// Result is the verdict on one backend.
type Result struct {
	Backend netip.Addr
	MAC     net.HardwareAddr // nil when unreachable
	Verdict Verdict
	Detail  string // what was seen, for the line
}

// String is the report line: the backend, its MAC ("-" when unreachable),
// the verdict, what was seen and, unless OK, what to do, e.g.
//
//	198.51.100.22 02:00:c6:33:64:16 arp leak: answers ARP who-has 198.51.100.100 with its own MAC; fix: ...
func (r Result) String() string {
	mac := "-"
	if len(r.MAC) > 0 {
		mac = r.MAC.String()
	}
	s := fmt.Sprintf("%s %s %s: %s", r.Backend, mac, r.Verdict, r.Detail)
	if a := r.Verdict.advice(); a != "" {
		s += "; " + a
	}
	return s
}

// Report is the outcome of Check.
type Report struct {
	VIP     netip.Addr
	Results []Result // one per backend, in the order of Options.Backends
	// Others are the MACs (as text) of other hosts, not this one and not a
	// checked backend, that answered ARP for the VIP or sent ARP with the
	// VIP as sender address. The load balancer itself is one when the check
	// runs elsewhere; any other draws traffic for the VIP. A warning only.
	Others []string
}

// OK reports whether every backend is ready.
func (r Report) OK() bool {
	for _, res := range r.Results {
		if res.Verdict != OK {
			return false
		}
	}
	return true
}

// Lines is the report: one line per backend, then one warning line per
// other host answering ARP for the VIP (never nil).
func (r Report) Lines() []string {
	lines := make([]string, 0, len(r.Results)+len(r.Others))
	for _, res := range r.Results {
		lines = append(lines, res.String())
	}
	for _, mac := range r.Others {
		lines = append(lines, fmt.Sprintf("warning: %s answers ARP for the VIP %s and is neither this host nor a checked backend: fine if it is the load balancer, otherwise it draws the VIP's traffic", mac, r.VIP))
	}
	return lines
}

// WriteTo writes Lines, each ended by a newline.
func (r Report) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	for _, l := range r.Lines() {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}
