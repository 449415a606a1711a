package dsr

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ringMode is an experiment: a TPACKET_V3 receive ring instead of recvmmsg.
var ringMode = os.Getenv("NIB_DSR_RING") == "1"

// ring is a TPACKET_V3 receive ring: blocks the kernel fills with frames
// and hands over whole (full, or after ringRetire).
type ring struct {
	mem  []byte
	next int // the block to read next
}

const (
	ringBlockSize = 1 << 17 // holds a 64 KiB super-frame and its headers
	ringBlocks    = 32      // 4 MiB, like the socket buffer
	ringFrameSize = 1 << 11 // only for the kernel's frame_nr check
	ringRetireMs  = 1
)

func setupRing(fd int) (*ring, error) {
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return nil, fmt.Errorf("PACKET_VERSION: %w", err)
	}
	req := unix.TpacketReq3{
		Block_size: ringBlockSize, Block_nr: ringBlocks,
		Frame_size: ringFrameSize, Frame_nr: ringBlockSize / ringFrameSize * ringBlocks,
		Retire_blk_tov: ringRetireMs,
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, fmt.Errorf("PACKET_RX_RING: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, ringBlockSize*ringBlocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return &ring{mem: mem}, nil
}

func (r *ring) block(i int) []byte { return r.mem[i*ringBlockSize : (i+1)*ringBlockSize] }

func blockStatus(blk []byte) *uint32 { return (*uint32)(unsafe.Pointer(&blk[8])) }

// runRing is run's loop on a ring.
func (w *worker) runRing(c *conn) error {
	b := newBatch(w.f.cfg.Batch)
	replies := make([][]byte, len(b.bufs))
	for i := range replies {
		replies[i] = make([]byte, vnetHdrLen+128)
	}
	lastExpire, lastRefusedLog := uint32(0), uint32(0)
	r := c.ring
	for {
		blk := r.block(r.next)
		st := blockStatus(blk)
		if atomic.LoadUint32(st)&unix.TP_STATUS_USER == 0 {
			err := c.rc.Read(func(uintptr) bool { return atomic.LoadUint32(st)&unix.TP_STATUS_USER != 0 })
			if err != nil {
				if w.f.closed.Load() || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
					return nil
				}
				w.stats.readErrors.Add(1)
			}
			continue
		}
		num := binary.NativeEndian.Uint32(blk[12:])
		off := int(binary.NativeEndian.Uint32(blk[16:]))
		now := w.f.clock.Load()
		t := w.f.table.Load()
		for range num {
			h := (*unix.Tpacket3Hdr)(unsafe.Pointer(&blk[off]))
			w.stats.received.Add(1)
			mac := off + int(h.Mac)
			if h.Snaplen < h.Len || int(h.Mac) < vnetHdrLen {
				w.stats.drops[DropTruncated].Add(1)
			} else {
				w.handle(t, blk[mac-vnetHdrLen:mac+int(h.Snaplen)], now, b, replies[len(b.outMsgs)])
				if len(b.outMsgs) == len(replies) {
					w.flush(c, b, now, &lastRefusedLog)
				}
			}
			off += int(h.Next_offset)
		}
		w.flush(c, b, now, &lastRefusedLog)
		atomic.StoreUint32(st, unix.TP_STATUS_KERNEL)
		r.next = (r.next + 1) % ringBlocks
		if now != lastExpire {
			lastExpire = now
			w.flows.expire(now, 256)
		}
	}
}
