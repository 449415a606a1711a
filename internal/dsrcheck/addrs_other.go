//go:build !linux

package dsrcheck

import (
	"fmt"
	"net"
	"net/netip"
)

// interfacePrefixes returns the IPv4 addresses of ifi with their prefix
// lengths (netlink is Linux's; elsewhere the standard library's view).
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
