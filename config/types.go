package config

import (
	"net/netip"
	"time"

	"github.com/nib-lb/nib/internal/acl"
)

// Config is lbd's validated configuration: typed values only, every default
// filled in. It is produced by Parse (TOML) or by internal/pen (Pen's command
// line and verbs) and is the one thing the rest of lbd is built from.
type Config struct {
	// Debug is the log verbosity, 0 (quiet) to 3 (Pen's -ddd); -d raises it.
	Debug int
	// Network is the appliance's own address ([network]); nil when the
	// file has none, which is DHCP. See Network.
	Network *Network
	// Control holds the control listeners.
	Control Control
	// ACLs are the named access lists. Pen's numbered lists 0-9 are the
	// names "0" to "9".
	ACLs map[string]ACL
	// Dummies are built-in HTTP test servers run by lbd itself (like Pen's
	// dummy mode), so a config can balance over them without real backends.
	Dummies []Dummy
	// Services are the load-balanced listeners (Pen needs one process each).
	Services []Service
}

// Control configures the control listeners.
type Control struct {
	// PenListen is Pen's plain-text control listener (-C): "host:port", or
	// an absolute path for a Unix socket; "" means none. A bare port given on
	// Pen's command line becomes 127.0.0.1:port.
	PenListen string
	// PenACL names the ACL checked for Pen control clients (Pen's
	// control_acl); "" permits everyone that can reach the listener.
	PenACL string
	// AllowExit enables the exit verb (Pen's -X).
	AllowExit bool
	// Listen is nib's authenticated HTTPS control API (penctl over the
	// network): "ip:port", or "" for none. The API always requires the
	// token kept in lbd's state directory (see internal/control).
	Listen string
	// ACL names the ACL checked for control API clients; "" permits
	// everyone that can reach the listener (they still need the token).
	ACL string
}

// Action is an ACL rule's verdict: internal/acl's type.
type Action = acl.Action

// ACL actions.
const (
	Permit = acl.Permit
	Deny   = acl.Deny
)

// Rule is one ACL entry: internal/acl's type. Its Prefix is the matched
// range; the zero Prefix matches every address, IPv4 and IPv6 (Pen's "acl
// N deny" with no address). Rule.String writes it as in the file.
type Rule = acl.Rule

// ACL is an ordered rule list with Pen's semantics: the first matching rule
// wins; when none matches the result is the opposite of the last rule's
// action; an empty list permits everything. It is internal/acl's List, so
// the rules written here are the ones lbd matches clients with
// (ACL.Allows).
type ACL = acl.List

// Protocol is a service's transport.
type Protocol int

// Protocols.
const (
	TCP Protocol = iota
	UDP
)

// Mode is how a service moves traffic.
type Mode int

// Modes.
const (
	// ModeProxy terminates each connection (or UDP flow) and opens one to
	// the backend: Pen's default.
	ModeProxy Mode = iota
	// ModeDSR is Direct Server Return (Pen's dsr_if): lbd answers ARP for
	// the VIP on Interface, rewrites the destination MAC of each frame to
	// the chosen backend's and sends it back out; backends reply to the
	// client directly. IP addresses and ports are never changed.
	ModeDSR
)

// Algorithm is the initial server choice, in Pen's order of precedence.
type Algorithm int

// Algorithms.
const (
	// RoundRobin cycles through available servers (Pen's default).
	RoundRobin Algorithm = iota
	// Hash maps the client address (and port, with HashPort) to a server.
	Hash
	// Weight is weighted least-connections: lowest conns*256/weight wins.
	Weight
	// Prio picks the available server with the lowest prio value.
	Prio
	// Maglev is weighted consistent hashing over the client address (and
	// port, with HashPort), table size 65537.
	Maglev
)

// ProxyProtocol selects the PROXY protocol header sent to backends.
type ProxyProtocol int

// PROXY protocol versions.
const (
	ProxyNone ProxyProtocol = iota
	ProxyV1
	ProxyV2
)

// ClientAuth is the TLS client-certificate policy.
type ClientAuth int

// Client-certificate policies.
const (
	ClientAuthNone ClientAuth = iota
	ClientAuthRequest
	ClientAuthRequire
)

// Service is one load-balanced listener.
type Service struct {
	// Name identifies the service in logs, metrics and control verbs.
	Name string
	// Listen is the address clients connect to, e.g. 192.0.2.10:80. In
	// ModeDSR it is the VIP and port; port 0 means every port.
	Listen netip.AddrPort
	// Protocol is TCP or UDP.
	Protocol Protocol
	// Mode is ModeProxy (the default) or ModeDSR.
	Mode Mode
	// Interface is the network interface a ModeDSR service captures and
	// forwards frames on (Pen's dsr_if), e.g. "eth0"; "" in ModeProxy.
	Interface string
	// TarpitACL names an ACL of destination addresses that lbd tarpits
	// (answers ARP for, and answers every TCP SYN to with a SYN+ACK that
	// leads nowhere); ModeDSR with TCP only; "" off (Pen's tarpit_acl).
	TarpitACL string

	// Algorithm is the initial server choice.
	Algorithm Algorithm
	// Tracking remembers each client's server (Pen's default; -r turns it
	// off). In ModeDSR it chooses the flow key: on, every flow of a client
	// address goes to the same backend; off (Pen -r), flows are hashed
	// with the client port too, and spread over the backends.
	Tracking bool
	// TrackingExpiry forgets a client after this long; 0 never (Pen -T).
	TrackingExpiry time.Duration
	// TrackingSize is the client table size (Pen -c).
	TrackingSize int
	// HashPort includes the client port in Hash and Maglev (Pen -r -h).
	HashPort bool
	// Stubborn closes the client instead of failing over (Pen -s).
	Stubborn bool

	// Blacklist is how long a server that failed a connect is skipped.
	Blacklist time.Duration
	// ConnectTimeout bounds a backend connect (Pen -t).
	ConnectTimeout time.Duration
	// IdleTimeout closes connections (UDP and DSR: forgets flows) idle
	// this long; 0 never.
	IdleTimeout time.Duration
	// MaxConnections bounds the service's concurrent connections (Pen -x);
	// in ModeDSR it is the size of the flow table.
	MaxConnections int

	// Backends are Pen's server slots, in slot order. A backend whose
	// address is invalid or unspecified (0.0.0.0) is an unused slot. In
	// ModeDSR backend addresses have port 0: DSR never changes ports.
	Backends []Backend
	// Emergency is used only when no backend can be chosen (Pen -e); the
	// zero value means none.
	Emergency netip.AddrPort
	// Abuse receives clients denied by ClientACL (Pen -B); the zero value
	// means denied clients are closed.
	Abuse netip.AddrPort
	// ClientACL names the ACL clients must pass; "" permits all.
	ClientACL string
	// Health configures active health checks of the backends
	// ([service.health]); NewService and NewDSRService set it to
	// NewHealth(), which checks nothing (CheckNone, as Pen).
	Health Health

	// HTTP appends X-Forwarded-For and sets X-Forwarded-Proto on every
	// request (Pen -H).
	HTTP bool
	// ProxyProtocol sends a PROXY protocol header to backends.
	ProxyProtocol ProxyProtocol
	// Source binds backend connections to this local address (Pen's source
	// verb); the zero value lets the kernel choose.
	Source netip.Addr
	// NoDelay sets TCP_NODELAY on both sides (Pen's tcp_nodelay).
	NoDelay bool
	// KeepAlive sets SO_KEEPALIVE on backend connections (Pen's keepalive).
	KeepAlive bool
	// Backlog is the listen() backlog (Pen -q).
	Backlog int
	// TLS terminates TLS on the listener when non-nil (Pen -E).
	TLS *TLS
	// Log is a request log file (Pen -l), "" for none.
	Log string
	// WebStats is the HTML status file (Pen -w), "" for none.
	WebStats string
}

// Backend is one server slot.
type Backend struct {
	// Address is the backend's IP and port; in ModeDSR the port is 0.
	Address netip.AddrPort
	// Max is the soft connection limit; 0 unlimited.
	Max int
	// Hard lets returning clients exceed Max up to Hard; 0 off.
	Hard int
	// Weight for Weight and Maglev (and DSR); 0 drains the backend under
	// those (never chosen); see Drain for every algorithm.
	Weight int
	// Prio for Prio: lower is preferred.
	Prio int
	// ACL names an ACL the client must pass to use this backend.
	ACL string
	// Drain takes the backend out of the choice under every algorithm:
	// no new clients or flows (not even tracked ones or a failover), while
	// established connections and DSR flows stay. Pen has no such state
	// (its weight 0 drains under -W only).
	Drain bool
}

// Used reports whether the slot holds a backend (Pen marks unused slots
// with address 0.0.0.0). The port is not looked at: DSR backends have port
// 0, and Validate refuses port 0 on a proxy backend.
func (b Backend) Used() bool {
	return b.Address.Addr().IsValid() && !b.Address.Addr().IsUnspecified()
}

// TLS configures TLS termination.
type TLS struct {
	// Cert is a PEM file with the certificate chain, leaf first (Pen -E).
	Cert string
	// Key is the PEM private key (Pen -K); "" means the key is in Cert.
	Key string
	// Chain is a PEM file of intermediate certificates sent after those in
	// Cert; "" for none. (Pen users pass intermediates with -G.)
	Chain string
	// MinVersion is tls.VersionTLS12 unless set.
	MinVersion uint16
	// Ciphers are TLS 1.2 cipher suite IDs (crypto/tls names in the file);
	// empty means Go's defaults.
	Ciphers []uint16
	// SNIDir holds name.crt and name.key pairs chosen by SNI.
	SNIDir string
	// OCSPStaple is a DER OCSP response file stapled to the leaf.
	OCSPStaple string
	// ClientCA is a PEM bundle used to verify client certificates (Pen -G).
	ClientCA string
	// ClientAuth is the client-certificate policy (Pen -R requires).
	ClientAuth ClientAuth
}

// Dummy is a built-in HTTP server that answers every request itself.
type Dummy struct {
	// Listen is where it listens, e.g. 127.0.0.1:8081.
	Listen netip.AddrPort
	// Body is the response body.
	Body string
}
