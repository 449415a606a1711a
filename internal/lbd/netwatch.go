package lbd

import (
	"fmt"
	"net"
	"net/netip"
)

// A DSR port reads its interface once, when it starts: arpd takes the LB's
// own IPv4 address (the sender of its requests for backend MACs) and the
// MAC, the forwarder the MAC. The interface can change under it: DHCP gives
// the LB a new address, the link goes down and up, the MAC is changed.
// lbd watches the interface through netlink (netwatch_linux.go) and, on
// every change, reads it again and asks linkChange what to do.

// linkObs is one reading of the DSR interface.
type linkObs struct {
	exists bool         // false: the interface is gone (or unreadable)
	up     bool         // administratively up and with carrier (IFF_UP, IFF_RUNNING)
	mac    [6]byte      // its MAC
	addrs  []netip.Addr // its IPv4 addresses, in the kernel's order
}

// linkView is what the DSR port uses now.
type linkView struct {
	up     bool
	mac    [6]byte
	ip     netip.Addr // arpd's own address
	noAddr bool       // ip is no longer on the interface, and no other IPv4 address is
}

// linkActions is what the port must do to follow the interface.
type linkActions struct {
	ip     netip.Addr // valid: arpd's own address becomes ip
	mac    [6]byte    // with setMAC: arpd's and the forwarder's MAC become mac
	setMAC bool
	linkUp bool // the link came back up: announce the VIPs again, ask the backends
	logs   []string
}

// linkChange decides how the port follows its interface from what it uses
// now (cur) to what the interface is (obs). It returns the new view and the
// actions that get there. Rules:
//   - The own address stays while it is on the interface (a second address
//     added by hand or a lease renewed changes nothing). When it is gone,
//     the first address that is not link-local (169.254/16, what a host
//     falls back to without a DHCP server) takes over, else the first one;
//     a link-local own address also gives way to one that is not.
//     With no IPv4 address left, the old one is kept (and said so, once)
//     until one is configured: arpd needs some sender address.
//   - A new MAC (unicast) is taken by arpd and the forwarder.
//   - A link that comes back up (down before, up now) has its VIPs
//     announced again; going down is only logged (arpd and the forwarder
//     keep their sockets, which the kernel keeps bound).
//   - An interface that disappears is logged; nothing else can be done
//     (the sockets are bound to its index): DSR on it needs a restart.
func linkChange(cur linkView, obs linkObs) (linkView, linkActions) {
	var act linkActions
	logf := func(format string, args ...any) { act.logs = append(act.logs, fmt.Sprintf(format, args...)) }
	next := cur
	if !obs.exists {
		if cur.up {
			logf("interface is gone: DSR on it stops until lbd is restarted")
		}
		next.up = false
		return next, act
	}

	if pick := ownAddr(cur.ip, obs.addrs); pick.IsValid() {
		if pick != cur.ip {
			logf("own address %s is gone, %s takes over: arpd asks for the backends from %s", cur.ip, pick, pick)
			act.ip = pick
			next.ip = pick
		}
		next.noAddr = false
	} else if !cur.noAddr {
		logf("no IPv4 address on the interface: arpd keeps asking for the backends from %s until one is configured", cur.ip)
		next.noAddr = true
	}

	if obs.mac != cur.mac && obs.mac != ([6]byte{}) && obs.mac[0]&1 == 0 {
		logf("MAC %s -> %s: the VIPs are announced at the new MAC", net.HardwareAddr(cur.mac[:]), net.HardwareAddr(obs.mac[:]))
		act.mac, act.setMAC = obs.mac, true
		next.mac = obs.mac
	}

	switch {
	case obs.up && !cur.up:
		logf("link up: the VIPs are announced again")
		act.linkUp = true
	case !obs.up && cur.up:
		logf("link down: DSR resumes when it comes back")
	}
	next.up = obs.up
	return next, act
}

// ownAddr is the address arpd should use among addrs, given that it uses
// cur now: cur while it is there (unless it is link-local and another is
// not), else the first address that is not link-local, else the first;
// invalid if addrs is empty.
func ownAddr(cur netip.Addr, addrs []netip.Addr) netip.Addr {
	var first, global netip.Addr
	curThere := false
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() || a.IsUnspecified() {
			continue
		}
		if a == cur {
			curThere = true
		}
		if !first.IsValid() {
			first = a
		}
		if !global.IsValid() && !a.IsLinkLocalUnicast() {
			global = a
		}
	}
	switch {
	case curThere && (!cur.IsLinkLocalUnicast() || !global.IsValid()):
		return cur
	case global.IsValid():
		return global
	}
	return first
}
