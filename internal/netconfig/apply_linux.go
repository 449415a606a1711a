package netconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/atomicfile"
)

// Applier applies static configurations with netlink.
type Applier struct {
	// Handle is the netlink handle to use. nil opens one for each Apply
	// in the calling thread's network namespace. (A handle opened in
	// another namespace, e.g. by a test, works from any thread.)
	Handle *netlink.Handle
	// ResolvConf is the resolver file's path; "" means ResolvConf.
	ResolvConf string
}

// maxRounds bounds Apply's rounds of reading, comparing and changing.
const maxRounds = 3

func (ap *Applier) resolvPath() string {
	if ap.ResolvConf == "" {
		return ResolvConf
	}
	return ap.ResolvConf
}

// Apply makes n's interface (and the resolver file) match n, a valid
// static configuration, and returns the changes it made, one line each for
// the log: none when everything was in place already. It reads the state,
// carries out Diff's plan and reads again until nothing differs (the kernel
// itself removes a default route whose gateway was reachable only through
// an address that went), at most maxRounds times. On error it returns the
// changes made so far with the error.
func (ap *Applier) Apply(n *config.Network) ([]string, error) {
	if !n.IsStatic() {
		return nil, errors.New("netconfig: Apply needs a static [network]")
	}
	h := ap.Handle
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return nil, fmt.Errorf("netlink: %w", err)
		}
		defer h.Close()
	}
	path := ap.resolvPath()
	var changes []string
	for range maxRounds {
		link, st, err := readState(h, n.Interface, path)
		if err != nil {
			return changes, err
		}
		p := Diff(n, st)
		if p.Empty() {
			return changes, nil
		}
		for _, o := range p.ops(path) {
			if err := carryOut(h, link, o, p.Resolv, path); err != nil {
				return changes, fmt.Errorf("%s: %w", o.desc, err)
			}
			changes = append(changes, o.desc)
		}
	}
	return changes, fmt.Errorf("%s still differs from [network] after %d rounds of changes", n.Interface, maxRounds)
}

// State reads what n's interface and the resolver file hold now.
func (ap *Applier) State(iface string) (State, error) {
	h := ap.Handle
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return State{}, fmt.Errorf("netlink: %w", err)
		}
		defer h.Close()
	}
	_, st, err := readState(h, iface, ap.resolvPath())
	return st, err
}

// readState reads the interface's flags, addresses and default routes, and
// the resolver file. A dump that a concurrent change interrupted is read
// again.
func readState(h *netlink.Handle, iface, resolvPath string) (netlink.Link, State, error) {
	var st State
	link, err := h.LinkByName(iface)
	if err != nil {
		return nil, st, fmt.Errorf("interface %s: %w", iface, err)
	}
	st.Up = link.Attrs().Flags&net.FlagUp != 0
	for try := 0; ; try++ {
		st.Addrs, st.Defaults, err = readAddrsRoutes(h, link)
		if err == nil || !errors.Is(err, netlink.ErrDumpInterrupted) || try == maxRounds {
			break
		}
	}
	if err != nil {
		return nil, st, fmt.Errorf("interface %s: %w", iface, err)
	}
	st.Resolv, err = os.ReadFile(resolvPath)
	if errors.Is(err, fs.ErrNotExist) {
		st.Resolv, err = nil, nil
	}
	return link, st, err
}

func readAddrsRoutes(h *netlink.Handle, link netlink.Link) ([]Addr, []Route, error) {
	var addrs []Addr
	nas, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range nas {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.IPNet == nil {
			continue
		}
		ones, _ := a.Mask.Size()
		addrs = append(addrs, Addr{
			Prefix:    netip.PrefixFrom(ip.Unmap(), ones),
			Permanent: a.Flags&unix.IFA_F_PERMANENT != 0,
		})
	}
	var routes []Route
	filter := &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		nrs, err := h.RouteListFiltered(fam, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, nil, fmt.Errorf("listing routes: %w", err)
		}
		for _, r := range nrs {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			gw, _ := netip.AddrFromSlice(r.Gw)
			routes = append(routes, Route{
				Gateway:  gw.Unmap(),
				Metric:   r.Priority,
				Protocol: int(r.Protocol),
				Six:      fam == netlink.FAMILY_V6,
			})
		}
	}
	return addrs, routes, nil
}

// carryOut makes one change.
func carryOut(h *netlink.Handle, link netlink.Link, o op, resolv []byte, resolvPath string) error {
	switch o.kind {
	case opLinkUp:
		return h.LinkSetUp(link)
	case opDelAddr:
		return h.AddrDel(link, &netlink.Addr{IPNet: ipNet(o.prefix)})
	case opAddAddr:
		return h.AddrReplace(link, &netlink.Addr{IPNet: ipNet(o.prefix)})
	case opSetRoute:
		return h.RouteReplace(nlRoute(link, o.route))
	case opDelRoute:
		return h.RouteDel(nlRoute(link, o.route))
	case opResolv:
		// A symlink there (gokrazy's /tmp/resolv.conf starts as one, to
		// /proc/net/pnp) is replaced, not followed.
		return atomicfile.Write(resolvPath, resolv, 0o644)
	}
	return fmt.Errorf("unknown change %d", o.kind)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// nlRoute is r, a default route out of link, for netlink.
func nlRoute(link netlink.Link, r Route) *netlink.Route {
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if r.Six {
		dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	nr := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       ipNet(dst),
		Priority:  r.Metric,
		Protocol:  netlink.RouteProtocol(r.Protocol),
		Table:     unix.RT_TABLE_MAIN,
	}
	if r.Gateway.IsValid() {
		nr.Gw = r.Gateway.AsSlice()
	}
	return nr
}
