package dsrcheck

import (
	"fmt"
	"net"
	"net/netip"
)

// interfacePrefixes returns the IPv4 addresses of ifi with their prefix
// lengths, in the kernel's order (primary addresses first: on Linux the
// standard library reads them with netlink, as a dump lists them).
func interfacePrefixes(ifi *net.Interface) ([]netip.Prefix, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("dsrcheck: addresses of %s: %w", ifi.Name, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		ones, _ := n.Mask.Size()
		if ok && ip.Unmap().Is4() {
			out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
		}
	}
	return out, nil
}
