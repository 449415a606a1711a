package dsrcheck

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// interfacePrefixes returns the IPv4 addresses of ifi, with their prefix
// lengths, in the kernel's order (primary addresses first), from netlink.
func interfacePrefixes(ifi *net.Interface) ([]netip.Prefix, error) {
	nl, err := netlink.LinkByIndex(ifi.Index)
	if err != nil {
		return nil, fmt.Errorf("dsrcheck: interface %s: %w", ifi.Name, err)
	}
	addrs, err := netlink.AddrList(nl, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("dsrcheck: addresses of %s: %w", ifi.Name, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IPNet.IP)
		ones, _ := a.IPNet.Mask.Size()
		if ok && ip.Unmap().Is4() {
			out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
		}
	}
	return out, nil
}
