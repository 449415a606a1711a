package proxy

import (
	"crypto/tls"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/lograte"
)

// logEvery is how often each kind of data-path diagnostic may be logged.
const logEvery = time.Second

// Limits shared by the TCP engine and the stream path.

// clientKeepAlive is the TCP keepalive of accepted client sockets: a client
// that vanished (power loss, a NAT that forgot it) is found after about
// Idle + Interval*Count = 2 minutes of silence.
var clientKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 60 * time.Second, Interval: 10 * time.Second, Count: 6}

// halfCloseTimeout bounds inactivity once one direction of a connection has
// ended (a FIN either way): the other direction is then cut after this long
// without traffic, or after Options.IdleTimeout if that is shorter.
const halfCloseTimeout = 60 * time.Second

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
	// beyond it is refused at once; established ones are not disturbed. A
	// UDP service with 0 allows DefaultMaxFlows flows.
	MaxConnections int
	// MaxFlowsPerSource bounds a UDP service's flows from one client
	// address (any ports), so that one address cannot take every flow;
	// 0 means an eighth of the flow limit (at least 1).
	MaxFlowsPerSource int
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
	opts  atomic.Pointer[Options]
	pool  *balance.Pool
	logf  func(format string, args ...any)
	warnf atomic.Pointer[func(format string, args ...any)]

	active   atomic.Int64 // open connections (TCP) or flows (UDP)
	accepted atomic.Uint64
	// refused counts clients turned away: over MaxConnections (UDP: over
	// the flow limits too), denied by the ACL with no abuse server, or no
	// backend left.
	refused     atomic.Uint64
	localErrs   atomic.Uint64 // see Counters.LocalErrors
	flowLimited atomic.Uint64 // see Counters.FlowLimited

	// One limiter per kind of message, so a flood of one kind does not
	// hide the others.
	acceptLog, localLog, flowLog *lograte.Limiter
}

// NewService returns a service using pool for backend choice. logf receives
// per-service diagnostics (lbd's debug level 1); the data paths rate-limit
// those a client or the network can cause at will.
func NewService(o Options, pool *balance.Pool, logf func(format string, args ...any)) *Service {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	s := &Service{
		pool: pool, logf: logf,
		acceptLog: lograte.New(logEvery), localLog: lograte.New(logEvery), flowLog: lograte.New(logEvery),
	}
	s.opts.Store(&o)
	return s
}

// SetWarnf sets where the service reports problems an operator must see
// even without debugging on (lbd's level 0): this host running out of
// descriptors, buffers, memory or ports, and UDP flow limits reached. Each
// kind is logged at most once a second, with a count of what was left out.
// Until it is set, they go to the logf given to NewService.
func (s *Service) SetWarnf(f func(format string, args ...any)) {
	if f == nil {
		s.warnf.Store(nil)
		return
	}
	s.warnf.Store(&f)
}

func (s *Service) warn(l *lograte.Limiter, format string, args ...any) {
	f := s.logf
	if p := s.warnf.Load(); p != nil {
		f = *p
	}
	l.Logf(f, format, args...)
}

// localError records that this host ran out of something (isLocalError)
// while serving client: the client is closed, no backend is blamed.
func (s *Service) localError(what string, client netip.AddrPort, err error) {
	s.localErrs.Add(1)
	s.warn(s.localLog, "%s for %s: %v (this host is out of resources; the client is closed, no backend is blamed)", what, client, err)
}

// noBackend records a client closed because no backend could take it
// (all unavailable or failed, or the client denied with no abuse server).
func (s *Service) noBackend() { s.refused.Add(1) }

// SetOptions replaces the options (reload). The listen address cannot
// change; a new address needs a new Service.
func (s *Service) SetOptions(o Options) { s.opts.Store(&o) }

// Options returns the current options.
func (s *Service) Options() Options { return *s.opts.Load() }

// Pool returns the backend pool.
func (s *Service) Pool() *balance.Pool { return s.pool }

// Counters is a snapshot of a service's connection counters.
type Counters struct {
	// Active is the number of open connections (TCP) or flows (UDP).
	Active int64
	// Accepted counts clients admitted under MaxConnections.
	Accepted uint64
	// Refused counts clients turned away: over MaxConnections (UDP: over
	// either flow limit, see FlowLimited), denied by the ACL with no abuse
	// server, or with no backend left to take them.
	Refused uint64
	// LocalErrors counts errors of this host's own (out of descriptors,
	// socket buffers, memory or source ports): each closed one client, or
	// paused accepting, without blaming a backend.
	LocalErrors uint64
	// FlowLimited counts UDP datagrams dropped because they would have
	// opened a flow beyond MaxFlowsPerSource or the service's flow limit
	// (also counted in Refused).
	FlowLimited uint64
}

// Counters returns the current counters.
func (s *Service) Counters() Counters {
	return Counters{
		Active: s.active.Load(), Accepted: s.accepted.Load(), Refused: s.refused.Load(),
		LocalErrors: s.localErrs.Load(), FlowLimited: s.flowLimited.Load(),
	}
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
