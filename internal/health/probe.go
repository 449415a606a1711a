package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
)

// Result is the outcome of one check.
type Result struct {
	OK bool
	// Reason says why the check failed: "timeout", "connection refused",
	// "http 503", "body lacks \"ok\"", "dns SERVFAIL", ... It is "" (or a
	// short note) when OK.
	Reason  string
	Latency time.Duration
}

// A Probe runs one check. ctx carries the timeout (and is cancelled when
// the checker stops or drops the target): a Probe must return promptly
// once ctx is done. A Probe that sets no Latency gets the time the checker
// measured around it.
type Probe func(ctx context.Context) Result

// All is a Probe that runs ps in turn, under one context, and passes when
// every one passes (e.g. a TCP connect and lbd's DSR VIP probe). It stops
// at the first failure and reports its reason; Latency is the total.
func All(ps ...Probe) Probe {
	return func(ctx context.Context) Result {
		start := time.Now()
		r := Result{OK: true}
		for _, p := range ps {
			r = p(ctx)
			if !r.OK {
				break
			}
		}
		r.Latency = time.Since(start)
		return r
	}
}

// TCP is a Probe that connects to addr, then closes the connection.
func TCP(addr netip.AddrPort) Probe {
	return func(ctx context.Context) Result {
		start := time.Now()
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr.String())
		lat := time.Since(start)
		if err != nil {
			return Result{Reason: reasonOf(ctx, err), Latency: lat}
		}
		conn.Close()
		return Result{OK: true, Latency: lat}
	}
}

// fail is a failed Result measured from start.
func fail(ctx context.Context, start time.Time, err error) Result {
	return Result{Reason: reasonOf(ctx, err), Latency: time.Since(start)}
}

// reasonOf turns a probe's error into a short reason.
func reasonOf(ctx context.Context, err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "host unreachable"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	if ctx.Err() != nil {
		// Deadlines set on connections from ctx show up as other errors.
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return "timeout"
		}
		return "cancelled"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection closed"
	}
	s := err.Error()
	// Drop the "dial tcp 127.0.0.1:80: " style prefixes of *net.OpError:
	// the target is known to whoever reads the reason.
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		s = oe.Err.Error()
	}
	return strings.TrimSpace(s)
}

// bindDeadline makes ctx's deadline and cancellation apply to conn's
// reads and writes. Call the returned stop when done with conn.
func bindDeadline(ctx context.Context, conn net.Conn) (stop func() bool) {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	return context.AfterFunc(ctx, func() {
		conn.SetDeadline(time.Unix(1, 0))
	})
}
