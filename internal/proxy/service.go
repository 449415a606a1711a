package proxy

import (
	"crypto/tls"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/nib-lb/nib/internal/balance"
)

// Options are a service's data-path settings. They may be replaced while the
// service runs (reload); connections pick up the new values as they start.
type Options struct {
	// Name identifies the service in logs.
	Name string
	// Listen is the service address.
	Listen netip.AddrPort
	// ConnectTimeout bounds each backend connect; a timeout fails over.
	ConnectTimeout time.Duration
	// IdleTimeout closes a connection (or UDP flow) with no traffic in
	// either direction for this long; 0 never.
	IdleTimeout time.Duration
	// MaxConnections bounds concurrent connections (or UDP flows). A client
	// beyond it is refused at once; established ones are not disturbed.
	MaxConnections int
	// HTTP rewrites X-Forwarded-For and X-Forwarded-Proto on every request.
	HTTP bool
	// ProxyProtocol is 0 (none), 1 or 2: the PROXY header sent to backends.
	ProxyProtocol int
	// Source is the local address for backend connections, if valid.
	Source netip.Addr
	// NoDelay sets TCP_NODELAY on both sockets.
	NoDelay bool
	// KeepAlive sets SO_KEEPALIVE on backend sockets.
	KeepAlive bool
	// Backlog is the listen backlog.
	Backlog int
	// TLS terminates TLS on the listener when non-nil.
	TLS *tls.Config
	// Log, when set, gets a line per finished connection or flow.
	Log *ConnLog
}

// Service is one load-balanced listener's shared state: its options, its
// backend pool and its counters. The engines that own sockets read it.
type Service struct {
	opts atomic.Pointer[Options]
	pool *balance.Pool
	logf func(format string, args ...any)

	active   atomic.Int64 // open connections (TCP) or flows (UDP)
	accepted atomic.Uint64
	refused  atomic.Uint64 // over MaxConnections, denied, or no backend
}

// NewService returns a service using pool for backend choice. logf receives
// per-service diagnostics (rate-limited by the caller if needed).
func NewService(o Options, pool *balance.Pool, logf func(format string, args ...any)) *Service {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	s := &Service{pool: pool, logf: logf}
	s.opts.Store(&o)
	return s
}

// SetOptions replaces the options (reload). The listen address cannot
// change; a new address needs a new Service.
func (s *Service) SetOptions(o Options) { s.opts.Store(&o) }

// Options returns the current options.
func (s *Service) Options() Options { return *s.opts.Load() }

// Pool returns the backend pool.
func (s *Service) Pool() *balance.Pool { return s.pool }

// Counters is a snapshot of a service's connection counters.
type Counters struct {
	Active   int64
	Accepted uint64
	Refused  uint64
}

// Counters returns the current counters.
func (s *Service) Counters() Counters {
	return Counters{Active: s.active.Load(), Accepted: s.accepted.Load(), Refused: s.refused.Load()}
}

// admit reserves a connection slot, or reports that the service is full.
func (s *Service) admit(o *Options) bool {
	if n := s.active.Add(1); o.MaxConnections > 0 && n > int64(o.MaxConnections) {
		s.active.Add(-1)
		s.refused.Add(1)
		return false
	}
	s.accepted.Add(1)
	return true
}

func (s *Service) release() { s.active.Add(-1) }

// logConn records a finished connection in the request log, if any.
func logConn(o *Options, client, server netip.AddrPort, sent, recv uint64, start time.Time) {
	if o.Log != nil {
		o.Log.record(logRecord{service: o.Name, client: client, server: server, sent: sent, recv: recv, start: start, end: time.Now()})
	}
}
