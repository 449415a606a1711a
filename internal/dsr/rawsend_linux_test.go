package dsr_test

import (
	"net"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// rawSender sends whole Ethernet frames on an interface (tests only).
type rawSender struct{ pc *packet.Conn }

func packetConn(ifi *net.Interface) (*rawSender, error) {
	pc, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_IP, &packet.Config{Filter: []bpf.RawInstruction{{Op: 0x06, K: 0}}})
	if err != nil {
		return nil, err
	}
	return &rawSender{pc: pc}, nil
}

func (r *rawSender) send(frame []byte) error {
	_, err := r.pc.WriteTo(frame, &packet.Addr{HardwareAddr: net.HardwareAddr(frame[0:6])})
	return err
}

func (r *rawSender) Close() error { return r.pc.Close() }
