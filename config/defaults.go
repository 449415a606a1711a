package config

import (
	"crypto/tls"
	"net/netip"
	"time"
)

// The defaults, all in this one file. Pen's own default is named where nib
// differs from it.
const (
	// DefaultTrackingSize is the client table size (Pen -c).
	DefaultTrackingSize = 2048
	// DefaultBlacklist is how long a server that failed a connect is
	// skipped (Pen -b).
	DefaultBlacklist = 30 * time.Second
	// DefaultConnectTimeout bounds a backend connect (Pen -t).
	DefaultConnectTimeout = 3 * time.Second
	// DefaultUDPIdleTimeout expires idle UDP flows. Pen never expires them
	// and runs out of descriptors; TCP connections default to no idle
	// timeout, as in Pen.
	DefaultUDPIdleTimeout = 60 * time.Second
	// DefaultMaxConnections bounds a service's concurrent connections
	// (Pen -x, whose default is 500).
	DefaultMaxConnections = 4096
	// DefaultBacklog is the listen() backlog (Pen -q).
	DefaultBacklog = 500
	// DefaultWeight is a backend's weight. Pen's is 0, which makes its -W
	// skip every server whose weight was not given.
	DefaultWeight = 1
	// DefaultTLSMinVersion is the lowest TLS version accepted.
	DefaultTLSMinVersion = tls.VersionTLS12

	// DefaultDSRIdleTimeout forgets a DSR flow (TCP or UDP) idle this
	// long. Pen's DSR keeps no flows at all.
	DefaultDSRIdleTimeout = 300 * time.Second
	// DefaultNetworkInterface is [network]'s interface: the Raspberry
	// Pi's Ethernet, where gokrazy's DHCP client runs.
	DefaultNetworkInterface = "eth0"

	// DefaultHealthInterval is the time between two health checks of a
	// backend. Pen has no active health checks.
	DefaultHealthInterval = 5 * time.Second
	// DefaultHealthTimeout bounds one health check.
	DefaultHealthTimeout = 2 * time.Second
	// DefaultHealthRise is the number of consecutive successful checks
	// that bring a down backend up.
	DefaultHealthRise = 2
	// DefaultHealthFall is the number of consecutive failed checks that
	// take an up backend down.
	DefaultHealthFall = 3
	// DefaultHealthPath is an http(s) check's request path.
	DefaultHealthPath = "/"

	// DefaultDSRFlows is a DSR service's flow-table size (its
	// max_connections): flows beyond it are still forwarded by Maglev,
	// but lose their backend when the backend set changes.
	DefaultDSRFlows = 65536
)

// NewService returns a service with every default filled in: round-robin
// with client tracking, as Pen does without flags. Parse starts every
// [[service]] from it.
func NewService(name string, listen netip.AddrPort, p Protocol) Service {
	s := Service{
		Name:           name,
		Listen:         listen,
		Protocol:       p,
		Algorithm:      RoundRobin,
		Tracking:       true,
		TrackingSize:   DefaultTrackingSize,
		Blacklist:      DefaultBlacklist,
		ConnectTimeout: DefaultConnectTimeout,
		MaxConnections: DefaultMaxConnections,
		Backlog:        DefaultBacklog,
		Health:         NewHealth(),
	}
	if p == UDP {
		s.IdleTimeout = DefaultUDPIdleTimeout
	}
	return s
}

// NewDSRService returns a DSR service (Pen's dsr_if) on interface iface
// for the VIP vip (port 0: every port) with every default filled in:
// weighted Maglev over the client address (Tracking on, as Pen; turning it
// off, Pen's -r, hashes each flow with the client port), flows forgotten
// after DefaultDSRIdleTimeout, a flow table of DefaultDSRFlows. Parse
// starts every [[service]] with mode = "dsr" from it.
func NewDSRService(name, iface string, vip netip.AddrPort, p Protocol) Service {
	s := NewService(name, vip, p)
	s.Mode = ModeDSR
	s.Interface = iface
	s.Algorithm = Maglev
	s.IdleTimeout = DefaultDSRIdleTimeout
	s.MaxConnections = DefaultDSRFlows
	return s
}

// NewHealth returns the default [service.health]: check "none" (no active
// checks, as Pen), and for when a check is chosen: every 5s with a 2s
// timeout, up after 2 successes and down after 3 failures, http(s) GET of
// "/" accepting status 200-399; the backend's (or DSR service's) port; fail
// open; new backends start up.
func NewHealth() Health {
	return Health{
		Check:        CheckNone,
		Interval:     DefaultHealthInterval,
		Timeout:      DefaultHealthTimeout,
		Rise:         DefaultHealthRise,
		Fall:         DefaultHealthFall,
		Path:         DefaultHealthPath,
		ExpectStatus: StatusRange{Lo: 200, Hi: 399},
	}
}

// NewBackend returns a backend at addr with the default weight (1) and no
// limits.
func NewBackend(addr netip.AddrPort) Backend {
	return Backend{Address: addr, Weight: DefaultWeight}
}

// NewTLS returns TLS settings for a certificate (and key file; "" when the
// key is in cert) with the defaults filled in: TLS 1.2 or later, Go's
// cipher suites, no client certificates.
func NewTLS(cert, key string) *TLS {
	return &TLS{Cert: cert, Key: key, MinVersion: DefaultTLSMinVersion}
}

// NewNetwork returns a [network] table with the defaults filled in:
// interface eth0, mode dhcp (lbd leaves the address to gokrazy's DHCP
// client). Parse starts every [network] from it.
func NewNetwork() *Network {
	return &Network{Interface: DefaultNetworkInterface, Mode: NetworkDHCP}
}
