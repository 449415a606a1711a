package dsr

import (
	"net"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/nib-lb/nib/internal/needs"
)

// A send and a receive on the forwarder's socket allocate nothing (the
// functions RawConn runs are made once per batch).
func TestSocketSendRecvAllocFree(t *testing.T) {
	needs.Root(t)
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	acceptAll := []bpf.RawInstruction{{Op: 0x06, K: 0xffff}} // BPF_RET|BPF_K
	c, err := listen(lo, acceptAll, 0x4e42)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := newBatch(4)
	frame := make([]byte, vnetHdrLen+60)
	copy(frame[vnetHdrLen+12:], []byte{0x88, 0xb5}) // local experimental EtherType
	allocs := testing.AllocsPerRun(200, func() {
		b.queueBuf(frame)
		if sent, refused, err := c.send(b); sent != 1 || refused != 0 {
			t.Fatalf("send: %d sent, %d refused, %v", sent, refused, err)
		}
		if n, err := c.recv(b); n < 1 || err != nil {
			t.Fatalf("recv: %d, %v", n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("a send and a receive allocate %v times", allocs)
	}
}
