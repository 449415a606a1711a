package lbd

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/lograte"
)

// watchLink follows the DSR interface ifindex until ctx is done: address
// and link changes arrive from netlink; on each that concerns the
// interface it is read again and linkChange decides, starting from view
// (what arpd and the forwarder were made with). A subscription that fails
// or ends (the kernel drops a netlink socket that overflows) is made again
// after a pause, and the interface read again, since changes may have been
// missed meanwhile.
func (p *dsrPort) watchLink(ctx context.Context, ifindex int, view linkView, logf func(string, ...any)) {
	errLog := lograte.New(10 * time.Second)
	for ctx.Err() == nil {
		view = p.watchLinkOnce(ctx, ifindex, view, logf, errLog)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// watchLinkOnce runs one pair of subscriptions until ctx is done or one of
// them ends, and returns the view it left.
func (p *dsrPort) watchLinkOnce(ctx context.Context, ifindex int, view linkView, logf func(string, ...any), errLog *lograte.Limiter) linkView {
	done := make(chan struct{})
	var stopped atomic.Bool
	defer func() { stopped.Store(true); close(done) }()
	onErr := func(err error) {
		if !stopped.Load() && ctx.Err() == nil {
			errLog.Logf(logf, "netlink: %v", err)
		}
	}
	// Buffered so that a burst (a DHCP client replacing addresses) does
	// not make the kernel drop the socket; the netlink goroutines block on
	// a full channel and own it: each is drained until closed below.
	addrs := make(chan netlink.AddrUpdate, 64)
	links := make(chan netlink.LinkUpdate, 64)
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr}); err != nil {
		errLog.Logf(logf, "netlink: watching addresses: %v (retrying)", err)
		return view
	}
	defer drain(addrs)
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
		errLog.Logf(logf, "netlink: watching the link: %v (retrying)", err)
		return view
	}
	defer drain(links)
	// Subscribed first, read second: no change falls in between.
	view = p.followLink(ifindex, view, logf, errLog)
	for {
		select {
		case <-ctx.Done():
			return view
		case u, ok := <-addrs:
			if !ok {
				return view
			}
			if u.LinkIndex == ifindex && u.LinkAddress.IP.To4() != nil {
				view = p.followLink(ifindex, view, logf, errLog)
			}
		case u, ok := <-links:
			if !ok {
				return view
			}
			if int(u.Index) == ifindex {
				view = p.followLink(ifindex, view, logf, errLog)
			}
		}
	}
}

// drain empties ch until its netlink goroutine closes it (which it does
// once done is closed and its socket with it).
func drain[T any](ch <-chan T) {
	go func() {
		for range ch {
		}
	}()
}

// followLink reads the interface, asks linkChange and applies its actions.
// A reading that fails changes nothing (the next event reads again).
func (p *dsrPort) followLink(ifindex int, view linkView, logf func(string, ...any), errLog *lograte.Limiter) linkView {
	obs, err := readLink(ifindex)
	if err != nil {
		errLog.Logf(logf, "netlink: reading the interface: %v", err)
		return view
	}
	next, act := linkChange(view, obs)
	for _, l := range act.logs {
		logf("%s", l)
	}
	if act.setMAC {
		p.fwd.SetMAC(act.mac)
		if err := p.arp.SetMAC(act.mac); err != nil {
			logf("%v", err)
		}
	}
	if act.ip.IsValid() {
		if err := p.arp.SetIP(act.ip); err != nil {
			logf("%v", err)
		}
	}
	if act.linkUp {
		p.arp.LinkUp()
	}
	return next
}

// readLink reads the interface's state and IPv4 addresses from netlink. An
// interface that no longer exists is a reading (exists false), not an
// error. A dump the kernel reports as interrupted (the addresses changed
// while it was read) is read again.
func readLink(ifindex int) (linkObs, error) {
	var err error
	for range 3 {
		var l netlink.Link
		l, err = netlink.LinkByIndex(ifindex)
		if gone := (netlink.LinkNotFoundError{}); errors.As(err, &gone) {
			return linkObs{}, nil
		}
		if err != nil {
			return linkObs{}, err
		}
		a := l.Attrs()
		obs := linkObs{exists: true, up: a.RawFlags&unix.IFF_UP != 0 && a.RawFlags&unix.IFF_RUNNING != 0}
		if len(a.HardwareAddr) == 6 {
			obs.mac = [6]byte(a.HardwareAddr)
		}
		var list []netlink.Addr
		list, err = netlink.AddrList(l, netlink.FAMILY_V4)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			return linkObs{}, err
		}
		for _, ad := range list {
			if ip, ok := netip.AddrFromSlice(ad.IP); ok {
				obs.addrs = append(obs.addrs, ip.Unmap())
			}
		}
		return obs, nil
	}
	return linkObs{}, err
}
