package dsrcheck

import (
	"context"
	"net"
	"os"
	"testing"
	"time"
)

// fakeConn hands out frames from a queue, then waits for the deadline.
type fakeConn struct {
	frames   [][]byte
	endless  bool // hand out frames[0] forever
	deadline time.Time
}

func (c *fakeConn) SetReadDeadline(t time.Time) error { c.deadline = t; return nil }
func (c *fakeConn) LocalAddr() net.Addr               { return nil }
func (c *fakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if c.endless && time.Now().Before(c.deadline) {
		return copy(b, c.frames[0]), nil, nil
	}
	if !c.endless && len(c.frames) > 0 {
		n := copy(b, c.frames[0])
		c.frames = c.frames[1:]
		return n, nil, nil
	}
	time.Sleep(time.Until(c.deadline))
	return 0, nil, os.ErrDeadlineExceeded
}

// reader.run resends once at half the timeout, lasts the timeout unless
// handle says done, and stops at the read budget.
func TestReaderRun(t *testing.T) {
	const timeout = 200 * time.Millisecond
	newR := func(c *fakeConn) *reader { return &reader{ctx: context.Background(), c: c, buf: make([]byte, snapLen)} }

	t.Run("silence", func(t *testing.T) {
		start := time.Now()
		var resends []time.Duration
		err := newR(&fakeConn{}).run(timeout, func() error {
			resends = append(resends, time.Since(start))
			return nil
		}, func([]byte) (bool, error) { t.Fatal("handle without a frame"); return false, nil })
		took := time.Since(start)
		if err != nil || len(resends) != 1 || resends[0] < timeout/2 || resends[0] >= timeout || took < timeout {
			t.Fatalf("run = %v after %v, resends at %v; want one resend at half of %v, the end after it", err, took, resends, timeout)
		}
	})
	t.Run("done early", func(t *testing.T) {
		start := time.Now()
		var seen int
		err := newR(&fakeConn{frames: [][]byte{{1}, {2}, {3}}}).run(timeout, func() error {
			t.Error("resent")
			return nil
		}, func(b []byte) (bool, error) {
			seen++
			return b[0] == 2, nil
		})
		if err != nil || seen != 2 || time.Since(start) > timeout/2 {
			t.Fatalf("run = %v after %v with %d frames handled; want done at the second at once", err, time.Since(start), seen)
		}
	})
	t.Run("read budget", func(t *testing.T) {
		r := newR(&fakeConn{frames: [][]byte{{1}}, endless: true})
		var seen int
		err := r.run(time.Second, func() error { t.Error("resent"); return nil }, func([]byte) (bool, error) { seen++; return false, nil })
		if err != nil || seen != maxReads {
			t.Fatalf("run = %v with %d frames handled, want %d", err, seen, maxReads)
		}
	})
}
