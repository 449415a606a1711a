package proxy

import (
	"net/netip"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockaddr converts an address to the form the socket calls take.
func sockaddr(ap netip.AddrPort) (unix.Sockaddr, int) {
	a := ap.Addr()
	if a.Is4() || a.Is4In6() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.Unmap().As4()}, unix.AF_INET
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}, unix.AF_INET6
}

// listenTCP opens a non-blocking TCP listening socket.
func listenTCP(ap netip.AddrPort, backlog int) (int, error) {
	sa, family := sockaddr(ap)
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := setClientKeepAlive(fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if backlog <= 0 {
		backlog = 512
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// setClientKeepAlive turns on TCP keepalive with clientKeepAlive's timing.
// Set on a listening socket, it is inherited by every connection accepted
// from it (Linux copies the listener's socket options to the new socket, as
// nginx's so_keepalive relies on), so accepting costs no system call for it.
func setClientKeepAlive(fd int) error {
	for _, o := range [...]struct{ level, opt, v int }{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(clientKeepAlive.Idle / time.Second)},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(clientKeepAlive.Interval / time.Second)},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, clientKeepAlive.Count},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
	}
	return nil
}

// accept4 accepts a connection without x/sys's extra getsockopt per call
// (it asks every IPv4 socket for its protocol, to recognise L2TP).
func accept4(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	fd, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(fd), rawAddrPort(&rsa), nil
}

// getsockname is unix.Getsockname without the extra getsockopt.
func getsockname(fd int) (netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)))
	if e != 0 {
		return netip.AddrPort{}, e
	}
	return rawAddrPort(&rsa), nil
}

func rawAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		p := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		port := (*[2]byte)(unsafe.Pointer(&p.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(p.Addr), uint16(port[0])<<8|uint16(port[1]))
	case unix.AF_INET6:
		p := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		port := (*[2]byte)(unsafe.Pointer(&p.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(p.Addr).Unmap(), uint16(port[0])<<8|uint16(port[1]))
	}
	return netip.AddrPort{}
}
