package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// holdServer is the backend of the idle-connection test, run as a child of the
// benchmark (the same binary with -hold-server ADDR) so that its descriptors do
// not count against the benchmark's own limit. It echoes whatever it reads and
// otherwise holds each connection open until the peer closes it.
func holdServer(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and the like: back off instead of spinning.
			fmt.Fprintln(os.Stderr, "hold-server:", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go echo(c)
	}
}

// echo writes back what it reads. It does not use io.Copy: TCP-to-TCP copies
// splice through a pipe, which would cost two more descriptors per held
// connection.
func echo(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// echoOnce dials addr through the proxy, sends one byte and waits for it to come
// back from the hold server: the connection is then established end to end.
func echoOnce(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{'x'}); err != nil {
		c.Close()
		return nil, err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("echo: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// openIdle opens n connections to addr, each verified end to end with a one-byte
// echo, using a bounded number of concurrent dialers so no listen queue
// overflows. On error the connections opened so far are returned with it.
func openIdle(addr string, n, parallel int, timeout time.Duration) ([]net.Conn, error) {
	var (
		mu       sync.Mutex
		conns    = make([]net.Conn, 0, n)
		firstErr error
		nerr     int
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				c, err := echoOnce(addr, timeout)
				mu.Lock()
				if err != nil {
					nerr++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					conns = append(conns, c)
				}
				stop := nerr > 0
				mu.Unlock()
				if stop {
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return conns, fmt.Errorf("%d of %d idle connections failed (%d open): %w", nerr, n, len(conns), firstErr)
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}
