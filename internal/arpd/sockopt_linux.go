package arpd

import (
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// ignoreOutgoing sets PACKET_IGNORE_OUTGOING (Linux 4.20+) so the socket
// does not see the frames we, or the kernel, send on the interface.
func ignoreOutgoing(pc *packet.Conn) error {
	rc, err := pc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	}); err != nil {
		return err
	}
	return serr
}
