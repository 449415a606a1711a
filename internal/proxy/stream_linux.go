package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// flowReader reads one side of a stream connection holding a pooled buffer
// only while data flows: it waits for input with no buffer, takes one when
// bytes are there, and gives it back once a read has drained what was
// queued. An idle connection thus holds no buffer, whatever the number of
// connections.
//
// On a TCP socket it waits with a one-byte MSG_PEEK through the runtime's
// poller, then reads without blocking; while reads fill the buffer it keeps
// it and reads on, so bulk transfers cost no extra system call. On a TLS
// connection, which may have decrypted or raw bytes buffered where the
// socket cannot tell, it blocks reading one byte, then takes what else is
// buffered or already on the socket with a read deadline in the past (a
// timeout leaves crypto/tls usable).
type flowReader struct {
	tls *tls.Conn
	rc  syscall.RawConn // plain TCP
	c   net.Conn        // anything else: a held buffer, as a plain Read
	raw syscall.RawConn // the TCP socket under rc or tls, for watch

	buf  *[]byte
	full bool  // the last read filled buf: more is likely queued
	err  error // to return once the bytes read with it are consumed

	one    [1]byte
	n      int
	errno  error
	peekFn func(fd uintptr) bool
	readFn func(fd uintptr) bool
}

func newFlowReader(c net.Conn) *flowReader {
	r := &flowReader{}
	switch c := c.(type) {
	case *tls.Conn:
		r.tls = c
		if tc, ok := c.NetConn().(*net.TCPConn); ok {
			r.raw, _ = tc.SyscallConn()
		}
	case *net.TCPConn:
		rc, err := c.SyscallConn()
		if err != nil {
			r.c = c
			break
		}
		r.rc, r.raw = rc, rc
		r.peekFn = func(fd uintptr) bool {
			_, e := peek(fd, &r.one)
			return e != unix.EAGAIN // data, EOF or an error: read
		}
		r.readFn = func(fd uintptr) bool {
			for {
				n, err := unix.Read(int(fd), *r.buf)
				if err != unix.EINTR {
					r.n, r.errno = max(n, 0), err
					return true
				}
			}
		}
	default:
		r.c = c
	}
	return r
}

// read returns the next bytes from the connection. They stay valid until the
// next call to read or close. At the end it returns io.EOF or the error.
func (r *flowReader) read() ([]byte, error) {
	if r.err != nil {
		r.release()
		return nil, r.err
	}
	switch {
	case r.rc != nil:
		return r.readTCP()
	case r.tls != nil:
		return r.readTLS()
	}
	if r.buf == nil {
		r.buf = getBuf()
	}
	n, err := r.c.Read(*r.buf)
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		r.release()
		return nil, err
	}
	r.err = err
	return (*r.buf)[:n], nil
}

func (r *flowReader) readTCP() ([]byte, error) {
	if r.buf != nil && !r.full {
		r.release()
	}
	for {
		if r.buf == nil {
			if err := r.rc.Read(r.peekFn); err != nil {
				return nil, err
			}
			r.buf = getBuf()
		}
		if err := r.rc.Read(r.readFn); err != nil {
			r.release()
			return nil, err
		}
		switch {
		case r.errno == unix.EAGAIN:
			// Drained after a full read: wait without the buffer.
			r.release()
			continue
		case r.errno != nil:
			r.release()
			r.err = os.NewSyscallError("read", r.errno)
			return nil, r.err
		case r.n == 0:
			r.release()
			r.err = io.EOF
			return nil, io.EOF
		}
		r.full = r.n == len(*r.buf)
		return (*r.buf)[:r.n], nil
	}
}

// aLongTimeAgo is a read deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

func (r *flowReader) readTLS() ([]byte, error) {
	r.release()
	n, err := r.tls.Read(r.one[:])
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		r.err = err
		return nil, err
	}
	r.buf = getBuf()
	b := *r.buf
	b[0] = r.one[0]
	if err != nil {
		r.err = err
		return b[:1], nil
	}
	r.tls.SetReadDeadline(aLongTimeAgo)
	m, err := r.tls.Read(b[1:])
	r.tls.SetReadDeadline(time.Time{})
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		r.err = err
	}
	return b[:1+m], nil
}

// watch reports on the returned channel the end of the connection (io.EOF
// for the peer's FIN, or the error) while nobody reads it, without reading:
// bytes arriving end the watch with nothing reported, as does the
// connection being closed. A read meanwhile waits for the watch to end.
// It returns nil when it cannot watch.
func (r *flowReader) watch() <-chan error {
	if r.raw == nil || r.err != nil {
		return nil
	}
	ch := make(chan error, 1)
	go func() {
		var one [1]byte
		var n uintptr
		var e syscall.Errno
		err := r.raw.Read(func(fd uintptr) bool {
			n, e = peek(fd, &one)
			return e != unix.EAGAIN
		})
		switch {
		case err != nil:
			// Closed: whoever closed it knows.
		case e != 0:
			ch <- os.NewSyscallError("recvfrom", e)
		case n == 0:
			ch <- io.EOF
		}
	}()
	return ch
}

// peek looks at the next byte queued on the socket fd without taking it or
// blocking: n is 1 with data, 0 at the peer's FIN; e is EAGAIN when nothing
// is queued, or the socket's error.
func peek(fd uintptr, b *[1]byte) (n uintptr, e syscall.Errno) {
	for {
		n, _, e = unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		if e != unix.EINTR {
			return n, e
		}
	}
}

// release gives the buffer back to the pool.
func (r *flowReader) release() {
	if r.buf != nil {
		putBuf(r.buf, *r.buf)
		r.buf, r.full = nil, false
	}
}

// close gives the buffer back; the connection is closed elsewhere.
func (r *flowReader) close() { r.release() }
