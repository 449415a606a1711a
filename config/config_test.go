package config

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// cmpOpts compares netip values by ==.
var cmpOpts = []cmp.Option{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// minimal is the smallest useful service, which the good cases extend.
const minimal = `
[[service]]
name = "web"
listen = "127.0.0.1:80"

[[service.backend]]
address = "10.0.0.1:80"
`

// minimalConfig is what minimal parses to.
func minimalConfig() *Config {
	s := NewService("web", ap("127.0.0.1:80"), TCP)
	s.Backends = []Backend{NewBackend(ap("10.0.0.1:80"))}
	return &Config{Services: []Service{s}}
}

// goodTests are valid configurations and what they parse to. The round-trip
// and fuzz tests reuse them.
var goodTests = []struct {
	name string
	in   string
	want func() *Config
}{
	{
		name: "minimal, defaults filled",
		in:   minimal,
		want: minimalConfig,
	},
	{
		name: "defaults written out equal defaults left out",
		in: `
[[service]]
name = "web"
listen = "127.0.0.1:80"
protocol = "tcp"
algorithm = "roundrobin"
tracking = true
tracking_expiry = "0s"
tracking_size = 2048
hash_port = false
stubborn = false
blacklist = "30s"
connect_timeout = "3s"
idle_timeout = "0s"
max_connections = 4096
emergency = ""
abuse = ""
client_acl = ""
http = false
proxy_protocol = ""
source = ""
nodelay = false
keepalive = false
backlog = 500
log = ""
web_stats = ""

[[service.backend]]
address = "10.0.0.1:80"
max = 0
hard = 0
weight = 1
prio = 0
acl = ""
`,
		want: minimalConfig,
	},
	{
		name: "udp idle timeout defaults to 60s",
		in: `
[[service]]
name = "dns"
listen = "[::1]:53"
protocol = "udp"
[[service.backend]]
address = "[2001:db8::53]:53"
`,
		want: func() *Config {
			s := NewService("dns", ap("[::1]:53"), UDP)
			s.Backends = []Backend{NewBackend(ap("[2001:db8::53]:53"))}
			if s.IdleTimeout != 60*time.Second {
				panic("NewService: UDP idle timeout is not 60s")
			}
			return &Config{Services: []Service{s}}
		},
	},
	{
		name: "durations",
		in: `
[[service]]
name = "web"
listen = "127.0.0.1:80"
tracking_expiry = "1h30m"
blacklist = "0s"
connect_timeout = "250ms"
idle_timeout = "90s"
[[service.backend]]
address = "10.0.0.1:80"
`,
		want: func() *Config {
			c := minimalConfig()
			s := &c.Services[0]
			s.TrackingExpiry = 90 * time.Minute
			s.Blacklist = 0
			s.ConnectTimeout = 250 * time.Millisecond
			s.IdleTimeout = 90 * time.Second
			return c
		},
	},
	{
		name: "dummies only",
		in: `
[[dummy]]
listen = "127.0.0.1:8081"
body = "hello\n"
[[dummy]]
listen = "[::1]:8081"
`,
		want: func() *Config {
			return &Config{Dummies: []Dummy{
				{Listen: ap("127.0.0.1:8081"), Body: "hello\n"},
				{Listen: ap("[::1]:8081")},
			}}
		},
	},
	{
		name: "everything set",
		in: `
debug = 3

[control]
pen_listen = "/run/lbd/pen.sock"
pen_acl = "0"
allow_exit = true

[acl]
0 = ["permit 127.0.0.1", "deny any"]
clients = ["deny 192.0.2.77/24", "permit 2001:db8::/32"]
empty = []

[[service]]
name = "web-1.a_b"
listen = "0.0.0.0:443"
algorithm = "maglev"
tracking = false
tracking_expiry = "10s"
tracking_size = 1
hash_port = true
stubborn = true
blacklist = "1m"
connect_timeout = "1s"
idle_timeout = "5m"
max_connections = 10
emergency = "192.0.2.9:80"
abuse = "[2001:db8::9]:80"
client_acl = "clients"
http = true
proxy_protocol = "v1"
source = "192.0.2.1"
nodelay = true
keepalive = true
backlog = 64
log = "/tmp/log"
web_stats = "/tmp/stats.html"

[service.tls]
cert = "c.pem"
key = "k.pem"
min_version = "1.3"
ciphers = ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]
sni_dir = "/sni"
ocsp_staple = "o.der"
client_ca = "ca.pem"
client_auth = "request"

[[service.backend]]
address = "10.0.0.1:80"
max = 5
hard = 7
weight = 0
prio = 2
acl = "0"

[[service.backend]]
address = "0.0.0.0:0"

[[service.backend]]
address = "0.0.0.0:0"
`,
		want: func() *Config {
			s := NewService("web-1.a_b", ap("0.0.0.0:443"), TCP)
			s.Algorithm = Maglev
			s.Tracking = false
			s.TrackingExpiry = 10 * time.Second
			s.TrackingSize = 1
			s.HashPort = true
			s.Stubborn = true
			s.Blacklist = time.Minute
			s.ConnectTimeout = time.Second
			s.IdleTimeout = 5 * time.Minute
			s.MaxConnections = 10
			s.Emergency = ap("192.0.2.9:80")
			s.Abuse = ap("[2001:db8::9]:80")
			s.ClientACL = "clients"
			s.HTTP = true
			s.ProxyProtocol = ProxyV1
			s.Source = netip.MustParseAddr("192.0.2.1")
			s.NoDelay = true
			s.KeepAlive = true
			s.Backlog = 64
			s.Log = "/tmp/log"
			s.WebStats = "/tmp/stats.html"
			s.TLS = &TLS{
				Cert:       "c.pem",
				Key:        "k.pem",
				MinVersion: tls.VersionTLS13,
				Ciphers:    []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384},
				SNIDir:     "/sni",
				OCSPStaple: "o.der",
				ClientCA:   "ca.pem",
				ClientAuth: ClientAuthRequest,
			}
			s.Backends = []Backend{
				{Address: ap("10.0.0.1:80"), Max: 5, Hard: 7, Weight: 0, Prio: 2, ACL: "0"},
				NewBackend(ap("0.0.0.0:0")),
				NewBackend(ap("0.0.0.0:0")),
			}
			return &Config{
				Debug:   3,
				Control: Control{PenListen: "/run/lbd/pen.sock", PenACL: "0", AllowExit: true},
				ACLs: map[string]ACL{
					"0": {Rules: []Rule{
						{Action: Permit, Prefix: netip.MustParsePrefix("127.0.0.1/32")},
						{Action: Deny},
					}},
					"clients": {Rules: []Rule{
						{Action: Deny, Prefix: netip.MustParsePrefix("192.0.2.0/24")},
						{Action: Permit, Prefix: netip.MustParsePrefix("2001:db8::/32")},
					}},
					"empty": {},
				},
				Services: []Service{s},
			}
		},
	},
	{
		name: "same listen for tcp and udp",
		in: `
[[service]]
name = "dns-tcp"
listen = "127.0.0.1:53"
[[service.backend]]
address = "10.0.0.1:53"
[[service]]
name = "dns-udp"
listen = "127.0.0.1:53"
protocol = "udp"
idle_timeout = "5s"
[[service.backend]]
address = "10.0.0.1:53"
`,
		want: func() *Config {
			t := NewService("dns-tcp", ap("127.0.0.1:53"), TCP)
			t.Backends = []Backend{NewBackend(ap("10.0.0.1:53"))}
			u := NewService("dns-udp", ap("127.0.0.1:53"), UDP)
			u.IdleTimeout = 5 * time.Second
			u.Backends = []Backend{NewBackend(ap("10.0.0.1:53"))}
			return &Config{Services: []Service{t, u}}
		},
	},
	{
		name: "dsr minimal, backend port 0 accepted",
		in: `
[[service]]
name = "vip"
listen = "192.0.2.100:80"
mode = "dsr"
interface = "eth0"
[[service.backend]]
address = "192.0.2.21"
[[service.backend]]
address = "192.0.2.22:0"
[[service.backend]]
address = "0.0.0.0"
`,
		want: func() *Config {
			s := NewDSRService("vip", "eth0", ap("192.0.2.100:80"), TCP)
			s.Backends = []Backend{NewBackend(ap("192.0.2.21:0")), NewBackend(ap("192.0.2.22:0")), NewBackend(ap("0.0.0.0:0"))}
			return &Config{Services: []Service{s}}
		},
	},
	{
		name: "dsr all ports, udp, shared interface, tarpit, next to proxy",
		in: `
[acl]
tarpit = ["deny 198.51.100.1", "permit 198.51.100.0/24", "permit 203.0.113.0/16"]
clients = ["deny 192.0.2.0/24"]
[[service]]
name = "proxy"
listen = "192.0.2.1:80"
mode = "proxy"
[[service.backend]]
address = "10.0.0.1:80"
[[service]]
name = "dsr-all"
listen = "192.0.2.100"
protocol = "tcp"
mode = "dsr"
interface = "eth1"
tarpit_acl = "tarpit"
tracking = false
idle_timeout = "1m"
max_connections = 1000
client_acl = "clients"
web_stats = "/tmp/dsr.html"
[[service.backend]]
address = "192.0.2.21"
weight = 3
prio = 1
[[service.backend]]
address = "192.0.2.22"
weight = 0
[[service]]
name = "dsr-dns"
listen = "192.0.2.100:53"
protocol = "udp"
mode = "dsr"
interface = "eth1"
[[service.backend]]
address = "192.0.2.21"
[[service]]
name = "dsr-dns2"
listen = "192.0.2.101:0"
protocol = "udp"
mode = "dsr"
interface = "eth1"
algorithm = "maglev"
backend = [{address = "192.0.2.21"}]
`,
		want: func() *Config {
			p := NewService("proxy", ap("192.0.2.1:80"), TCP)
			p.Backends = []Backend{NewBackend(ap("10.0.0.1:80"))}
			all := NewDSRService("dsr-all", "eth1", ap("192.0.2.100:0"), TCP)
			all.TarpitACL = "tarpit"
			all.Tracking = false
			all.IdleTimeout = time.Minute
			all.MaxConnections = 1000
			all.ClientACL = "clients"
			all.WebStats = "/tmp/dsr.html"
			all.Backends = []Backend{{Address: ap("192.0.2.21:0"), Weight: 3, Prio: 1}, {Address: ap("192.0.2.22:0")}}
			dns := NewDSRService("dsr-dns", "eth1", ap("192.0.2.100:53"), UDP)
			dns.Backends = []Backend{NewBackend(ap("192.0.2.21:0"))}
			dns2 := NewDSRService("dsr-dns2", "eth1", ap("192.0.2.101:0"), UDP)
			dns2.Backends = []Backend{NewBackend(ap("192.0.2.21:0"))}
			return &Config{
				ACLs: map[string]ACL{
					"tarpit": {Rules: []Rule{
						{Action: Deny, Prefix: netip.MustParsePrefix("198.51.100.1/32")},
						{Action: Permit, Prefix: netip.MustParsePrefix("198.51.100.0/24")},
						{Action: Permit, Prefix: netip.MustParsePrefix("203.0.0.0/16")},
					}},
					"clients": {Rules: []Rule{{Action: Deny, Prefix: netip.MustParsePrefix("192.0.2.0/24")}}},
				},
				Services: []Service{p, all, dns, dns2},
			}
		},
	},
	{
		name: "inline tables and odd strings",
		in: `
[[dummy]]
listen = "127.0.0.1:1"
body = """
multi "line" \u00e9 ' \\ 
"""
[[service]]
name = "web"
listen = "[fe80::1%eth0]:80"
backend = [{address = "10.0.0.1:80", weight = 2}, {address = "[::ffff:10.0.0.2]:80"}]
`,
		want: func() *Config {
			s := NewService("web", ap("[fe80::1%eth0]:80"), TCP)
			b := NewBackend(ap("10.0.0.1:80"))
			b.Weight = 2
			s.Backends = []Backend{b, NewBackend(ap("[::ffff:10.0.0.2]:80"))}
			return &Config{
				Dummies:  []Dummy{{Listen: ap("127.0.0.1:1"), Body: "multi \"line\" \u00e9 ' \\ \n"}},
				Services: []Service{s},
			}
		},
	},
}

func TestParseGood(t *testing.T) {
	for _, tt := range goodTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("lbd.toml", []byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want(), got, cmpOpts...); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

// badTests are invalid configurations and every error each must produce,
// in order, exactly as printed.
var badTests = []struct {
	name string
	in   string
	want []string
}{
	{
		name: "empty file",
		in:   "",
		want: []string{`lbd.toml:1:1: service: no [[service]] or [[dummy]] defined; at least one is required`},
	},
	{
		name: "syntax error",
		in:   "debug = \n",
		want: []string{`lbd.toml:1:9: syntax error: unexpected character U+000A at start of value`},
	},
	{
		name: "unknown keys at top level and nested",
		in: `bogus = 1
[[service]]
name = "web"
listen = "127.0.0.1:80"
colour = "red"
[[service.backend]]
address = "10.0.0.1:80"
[[service.backend]]
address = "10.0.0.2:80"
wieght = 3
[service.tls]
crt = "x"
[servce]
`,
		want: []string{
			`lbd.toml:1:1: bogus: unknown key`,
			`lbd.toml:5:1: service[0].colour: unknown key`,
			`lbd.toml:10:1: service[0].backend[1].wieght: unknown key`,
			`lbd.toml:12:1: service[0].tls.crt: unknown key`,
			`lbd.toml:13:2: servce: unknown key`,
		},
	},
	{
		name: "wrong type",
		in: `[[service]]
name = "web"
listen = "127.0.0.1:80"
tracking_size = "big"
`,
		want: []string{`lbd.toml:4:17: service[0].tracking_size: expected an integer, not a TOML string`},
	},
	{
		name: "bad addresses",
		in: `[[service]]
name = "web"
listen = "127.0.0.1"
emergency = "example.com:80"
source = "10.0.0.256"
[[service.backend]]
address = "10.0.0.1:80"
[[service.backend]]
address = "10.0.0.300:80"
[[service.backend]]
address = "::1:80"
[[service.backend]]
address = "10.0.0.3:0"
[[service.backend]]
max = 1
`,
		want: []string{
			`lbd.toml:3:10: service[0].listen: "127.0.0.1" is not an ip:port`,
			`lbd.toml:4:13: service[0].emergency: "example.com:80" is not an ip:port`,
			`lbd.toml:5:10: service[0].source: "10.0.0.256" is not an ip address`,
			`lbd.toml:9:11: service[0].backend[1].address: "10.0.0.300:80" is not an ip:port`,
			`lbd.toml:11:11: service[0].backend[2].address: "::1:80" is not an ip:port`,
			`lbd.toml:13:11: service[0].backend[3].address: port 0 in 10.0.0.3:0`,
			`lbd.toml:14:11: service[0].backend[4].address: an ip:port is required ("0.0.0.0:0" marks an unused slot)`,
		},
	},
	{
		name: "duplicate backend, unused slots may repeat",
		in: `[[service]]
name = "web"
listen = "127.0.0.1:80"
backend = [
  {address = "10.0.0.1:80"},
  {address = "0.0.0.0:0"},
  {address = "0.0.0.0:0"},
  {address = "10.0.0.1:80"},
]
`,
		want: []string{`lbd.toml:8:14: service[0].backend[3].address: 10.0.0.1:80 is already backend[0]`},
	},
	{
		name: "duplicate and bad service names, shared listen",
		in: `[[service]]
name = "web"
listen = "127.0.0.1:80"
[[service]]
name = "web"
listen = "0.0.0.0:80"
[[service]]
name = "Web Site"
listen = "127.0.0.1:81"
[[service]]
listen = "127.0.0.1:82"
[[dummy]]
listen = "127.0.0.1:82"
`,
		want: []string{
			`lbd.toml:5:8: service[1].name: "web" is already the name of service[0]`,
			`lbd.toml:6:10: service[1].listen: tcp 0.0.0.0:80 overlaps 127.0.0.1:80 of service[0].listen`,
			`lbd.toml:8:8: service[2].name: "Web Site" may only contain a-z, 0-9, '_', '.' and '-'`,
			`lbd.toml:10:3: service[3].name: a service name is required`,
			`lbd.toml:11:10: service[3].listen: tcp 127.0.0.1:82 overlaps 127.0.0.1:82 of dummy[0].listen`,
		},
	},
	{
		name: "undefined ACLs and bad rules",
		in: `[control]
pen_listen = "127.0.0.1:10000"
pen_acl = "ctl"
[acl]
ok = ["permit 10.0.0.0/8", "deny", "allow any", "permit 10.0.0.0/40", "deny fe80::1%eth0"]
[[service]]
name = "web"
listen = "127.0.0.1:80"
client_acl = "clients"
[[service.backend]]
address = "10.0.0.1:80"
acl = "7"
`,
		want: []string{
			`lbd.toml:3:11: control.pen_acl: ACL "ctl" is not defined in [acl]`,
			`lbd.toml:5:28: acl.ok[1]: rule "deny" is not "permit|deny PREFIX|ADDRESS|any"`,
			`lbd.toml:5:36: acl.ok[2]: rule "allow any" must start with "permit" or "deny"`,
			`lbd.toml:5:49: acl.ok[3]: rule "permit 10.0.0.0/40": "10.0.0.0/40" is not a prefix`,
			`lbd.toml:5:71: acl.ok[4]: rule "deny fe80::1%eth0": "fe80::1%eth0" is not an address, prefix or "any"`,
			`lbd.toml:9:14: service[0].client_acl: ACL "clients" is not defined in [acl]`,
			`lbd.toml:12:7: service[0].backend[0].acl: ACL "7" is not defined in [acl]`,
		},
	},
	{
		name: "bad durations",
		in: `[[service]]
name = "web"
listen = "127.0.0.1:80"
blacklist = "30"
connect_timeout = "0s"
tracking_expiry = "-1s"
idle_timeout = "1 minute"
`,
		want: []string{
			`lbd.toml:4:13: service[0].blacklist: "30" is not a duration such as "30s" or "1m30s"`,
			`lbd.toml:5:19: service[0].connect_timeout: 0s must be positive`,
			`lbd.toml:6:19: service[0].tracking_expiry: -1s must not be negative (0s never expires)`,
			`lbd.toml:7:16: service[0].idle_timeout: "1 minute" is not a duration such as "30s" or "1m30s"`,
		},
	},
	{
		name: "udp must expire, no http, no tls, no proxy v1",
		in: `[[service]]
name = "dns"
listen = "127.0.0.1:53"
protocol = "udp"
idle_timeout = "0s"
http = true
proxy_protocol = "v1"
[service.tls]
cert = "c.pem"
`,
		want: []string{
			`lbd.toml:5:16: service[0].idle_timeout: UDP flows must expire: 0s is not allowed for protocol "udp"`,
			`lbd.toml:6:8: service[0].http: HTTP mode needs protocol "tcp"`,
			`lbd.toml:7:18: service[0].proxy_protocol: PROXY protocol v1 cannot carry UDP; use "v2"`,
			`lbd.toml:8:10: service[0].tls: TLS needs protocol "tcp"`,
		},
	},
	{
		name: "bad names of values",
		in: `[[service]]
name = "web"
listen = "127.0.0.1:80"
protocol = "sctp"
algorithm = "leastconn"
proxy_protocol = "v3"
[service.tls]
min_version = "1.1"
ciphers = ["TLS_RSA_WITH_RC4_128_SHA", "TLS_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
client_auth = "optional"
`,
		want: []string{
			`lbd.toml:4:12: service[0].protocol: "sctp" must be one of "tcp", "udp"`,
			`lbd.toml:5:13: service[0].algorithm: "leastconn" must be one of "roundrobin", "hash", "weight", "prio", "maglev"`,
			`lbd.toml:6:18: service[0].proxy_protocol: "v3" must be one of "", "v1", "v2"`,
			`lbd.toml:7:10: service[0].tls.cert: a certificate file is required`,
			`lbd.toml:8:15: service[0].tls.min_version: "1.1" must be "1.2" or "1.3"`,
			`lbd.toml:9:12: service[0].tls.ciphers[0]: "TLS_RSA_WITH_RC4_128_SHA" is not a TLS 1.2 cipher suite of crypto/tls`,
			`lbd.toml:9:40: service[0].tls.ciphers[1]: "TLS_AES_128_GCM_SHA256" is not a TLS 1.2 cipher suite of crypto/tls`,
			`lbd.toml:9:107: service[0].tls.ciphers[3]: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" is listed twice`,
			`lbd.toml:10:15: service[0].tls.client_auth: "optional" must be one of "none", "request", "require"`,
		},
	},
	{
		name: "client certificates need a CA, and a CA needs client_auth",
		in: `[[service]]
name = "a"
listen = "127.0.0.1:80"
[service.tls]
cert = "c.pem"
client_auth = "require"
[[service]]
name = "b"
listen = "127.0.0.1:81"
[service.tls]
cert = "c.pem"
client_ca = "ca.pem"
`,
		want: []string{
			`lbd.toml:4:10: service[0].tls.client_ca: client_auth "require" needs client_ca to verify client certificates`,
			`lbd.toml:10:10: service[1].tls.client_auth: client_ca is set but client_auth is "none"; use "request" or "require"`,
		},
	},
	{
		name: "ranges",
		in: `debug = 4
[[service]]
name = "web"
listen = "127.0.0.1:80"
tracking_size = 0
max_connections = 0
backlog = 70000
source = "10.0.0.1"
[[service.backend]]
address = "10.0.0.1:80"
max = -1
hard = 1000001
weight = -2
prio = 1000001
[[service.backend]]
address = "10.0.0.2:80"
max = 10
hard = 9
[[service.backend]]
address = "[2001:db8::1]:80"
`,
		want: []string{
			`lbd.toml:1:9: debug: 4 must be between 0 and 3`,
			`lbd.toml:5:17: service[0].tracking_size: 0 must be between 1 and 16777216`,
			`lbd.toml:6:19: service[0].max_connections: 0 must be between 1 and 16777216`,
			`lbd.toml:7:11: service[0].backlog: 70000 must be between 1 and 65535`,
			`lbd.toml:11:7: service[0].backend[0].max: -1 must be between 0 and 1000000`,
			`lbd.toml:12:8: service[0].backend[0].hard: 1000001 must be between 0 and 1000000`,
			`lbd.toml:13:10: service[0].backend[0].weight: -2 must be between 0 and 1000000`,
			`lbd.toml:14:8: service[0].backend[0].prio: 1000001 must be between 0 and 1000000`,
			`lbd.toml:18:8: service[0].backend[1].hard: 9 must not be below max (10)`,
			`lbd.toml:20:11: service[0].backend[2].address: [2001:db8::1]:80 cannot be reached from source 10.0.0.1 (different IP version)`,
		},
	},
	{
		name: "control listener",
		in: `[control]
pen_listen = "10000"
[[dummy]]
listen = "127.0.0.1:0"
[[dummy]]
`,
		want: []string{
			`lbd.toml:2:14: control.pen_listen: "10000" is neither an ip:port nor an absolute path to a Unix socket`,
			`lbd.toml:4:10: dummy[0].listen: port 0 in 127.0.0.1:0`,
			`lbd.toml:5:3: dummy[1].listen: an ip:port is required`,
		},
	},
	{
		name: "control API listener",
		in: `[control]
listen = "9443"
acl = "nope"
[[service]]
name = "web"
listen = "127.0.0.1:9444"
[[service.backend]]
address = "127.0.0.1:80"
`,
		want: []string{
			`lbd.toml:2:10: control.listen: "9443" is not an ip:port`,
			`lbd.toml:3:7: control.acl: ACL "nope" is not defined in [acl]`,
		},
	},
	{
		name: "emergency and abuse must be usable",
		in: `[[service]]
name = "web"
listen = "127.0.0.1:80"
emergency = "0.0.0.0:80"
abuse = "10.0.0.1:0"
source = "::"
`,
		want: []string{
			`lbd.toml:4:13: service[0].emergency: 0.0.0.0:80 is not a usable address`,
			`lbd.toml:5:9: service[0].abuse: port 0 in 10.0.0.1:0`,
			`lbd.toml:6:10: service[0].source: :: is not a usable source address`,
		},
	},
	{
		name: "dsr needs an interface and an IPv4 VIP",
		in: `[[service]]
name = "a"
listen = "[2001:db8::1]:80"
mode = "dsr"
[[service]]
name = "b"
listen = "192.0.2.100:http"
mode = "nat"
interface = "eth0/1"
[[service]]
name = "c"
listen = "0.0.0.0:80"
mode = "dsr"
interface = "a-very-long-name0"
[[service]]
name = "d"
mode = "dsr"
interface = "eth 0"
`,
		want: []string{
			`lbd.toml:1:3: service[0].interface: mode "dsr" needs the network interface to forward on, e.g. "eth0" (Pen: dsr_if)`,
			`lbd.toml:3:10: service[0].listen: 2001:db8::1: IPv6 VIPs are not supported yet`,
			`lbd.toml:7:10: service[1].listen: "192.0.2.100:http" is not an ip:port`,
			`lbd.toml:8:8: service[1].mode: "nat" must be one of "proxy", "dsr"`,
			`lbd.toml:9:13: service[1].interface: is only used with mode "dsr"`,
			`lbd.toml:12:10: service[2].listen: 0.0.0.0 cannot be a VIP: it must be a unicast address on the interface's LAN`,
			`lbd.toml:14:13: service[2].interface: "a-very-long-name0" is not a Linux interface name (1 to 15 characters, no '/', ':' or white space)`,
			`lbd.toml:15:3: service[3].listen: a VIP is required: "ip" (every port) or "ip:port"`,
			`lbd.toml:18:13: service[3].interface: "eth 0" is not a Linux interface name (1 to 15 characters, no '/', ':' or white space)`,
		},
	},
	{
		name: "proxy-only keys on a dsr service",
		in: `[[service]]
name = "vip"
listen = "192.0.2.100:443"
mode = "dsr"
interface = "eth0"
algorithm = "weight"
hash_port = true
stubborn = true
idle_timeout = "0s"
emergency = "192.0.2.9:80"
abuse = "192.0.2.8:80"
http = true
proxy_protocol = "v2"
source = "192.0.2.1"
nodelay = true
keepalive = true
log = "/tmp/log"
[service.tls]
cert = "c.pem"
`,
		want: []string{
			`lbd.toml:6:13: service[0].algorithm: "weight" is not available with mode "dsr", which always uses weighted "maglev"`,
			`lbd.toml:7:13: service[0].hash_port: not allowed with mode "dsr": with mode "dsr", tracking = false hashes each flow with the client port (Pen -r)`,
			`lbd.toml:8:12: service[0].stubborn: not allowed with mode "dsr": DSR never connects to backends, so there is nothing to fail over`,
			`lbd.toml:9:16: service[0].idle_timeout: DSR flows must expire: 0s is not allowed for mode "dsr"`,
			`lbd.toml:10:13: service[0].emergency: not allowed with mode "dsr": DSR has no emergency server; flows of dead or drained backends move to the others`,
			`lbd.toml:11:9: service[0].abuse: not allowed with mode "dsr": DSR drops clients that client_acl denies`,
			`lbd.toml:12:8: service[0].http: not allowed with mode "dsr": DSR forwards frames and never sees HTTP requests`,
			`lbd.toml:13:18: service[0].proxy_protocol: not allowed with mode "dsr": DSR forwards frames unchanged and cannot add a PROXY header`,
			`lbd.toml:14:10: service[0].source: not allowed with mode "dsr": with DSR, backends see the client's own address`,
			`lbd.toml:15:11: service[0].nodelay: not allowed with mode "dsr": DSR keeps no sockets`,
			`lbd.toml:16:13: service[0].keepalive: not allowed with mode "dsr": DSR keeps no sockets`,
			`lbd.toml:17:7: service[0].log: not allowed with mode "dsr": DSR logs no connections; see the DSR counters`,
			`lbd.toml:18:10: service[0].tls: not allowed with mode "dsr": DSR forwards frames and cannot terminate TLS`,
		},
	},
	{
		name: "dsr backends are IPv4 addresses without a port",
		in: `[acl]
x = ["permit 10.0.0.0/8"]
[[service]]
name = "vip"
listen = "192.0.2.100:80"
mode = "dsr"
interface = "eth0"
backend = [
  {address = "192.0.2.21:80"},
  {address = "2001:db8::21"},
  {address = "127.0.0.1"},
  {address = "192.0.2.100"},
  {address = "192.0.2.22", max = 5, hard = 6, acl = "x"},
  {address = "192.0.2.22"},
  {address = "192.0.2.300"},
  {weight = 1},
]
`,
		want: []string{
			`lbd.toml:9:14: service[0].backend[0].address: DSR never changes the destination port: give the backend without a port, "192.0.2.21"`,
			`lbd.toml:10:14: service[0].backend[1].address: 2001:db8::21: IPv6 backends are not supported yet`,
			`lbd.toml:11:14: service[0].backend[2].address: 127.0.0.1 cannot be a DSR backend: it must be a unicast address on the interface's LAN`,
			`lbd.toml:12:14: service[0].backend[3].address: 192.0.2.100 is the VIP`,
			`lbd.toml:13:34: service[0].backend[4].max: not allowed with mode "dsr": DSR keeps no connection counts per backend`,
			`lbd.toml:13:44: service[0].backend[4].hard: not allowed with mode "dsr": DSR keeps no connection counts per backend`,
			`lbd.toml:13:53: service[0].backend[4].acl: not allowed with mode "dsr": use the service's client_acl`,
			`lbd.toml:14:14: service[0].backend[5].address: 192.0.2.22 is already backend[4]`,
			`lbd.toml:15:14: service[0].backend[6].address: "192.0.2.300" is not an ip or ip:port`,
			`lbd.toml:16:3: service[0].backend[7].address: an ip is required ("0.0.0.0" marks an unused slot)`,
		},
	},
	{
		name: "interface and tarpit_acl on a proxy service, tarpit on udp",
		in: `[acl]
t = ["permit 192.0.2.77"]
[[service]]
name = "web"
listen = "127.0.0.1:80"
interface = "eth0"
tarpit_acl = "t"
[[service]]
name = "dns"
listen = "192.0.2.100:53"
protocol = "udp"
mode = "dsr"
interface = "eth0"
tarpit_acl = "t"
[[service]]
name = "vip"
listen = "192.0.2.100:80"
mode = "dsr"
interface = "eth0"
tarpit_acl = "nosuch"
`,
		want: []string{
			`lbd.toml:6:13: service[0].interface: is only used with mode "dsr"`,
			`lbd.toml:7:14: service[0].tarpit_acl: the tarpit needs mode "dsr" and protocol "tcp"`,
			`lbd.toml:14:14: service[1].tarpit_acl: the tarpit answers TCP SYNs: it needs protocol "tcp"`,
			`lbd.toml:20:14: service[2].tarpit_acl: ACL "nosuch" is not defined in [acl]`,
		},
	},
	{
		name: "unsafe tarpit ACLs",
		in: `[acl]
empty = []
lastdeny = ["permit 192.0.2.77", "deny 192.0.2.78"]
any = ["deny 192.0.2.100", "permit any"]
wide = ["permit 10.0.0.0/8", "permit 2001:db8::/64", "permit 172.16.0.0/16", "permit 2001:db8::/112"]
[[service]]
name = "a"
listen = "192.0.2.100:1"
mode = "dsr"
interface = "eth0"
tarpit_acl = "empty"
[[service]]
name = "b"
listen = "192.0.2.100:2"
mode = "dsr"
interface = "eth0"
tarpit_acl = "lastdeny"
[[service]]
name = "c"
listen = "192.0.2.100:3"
mode = "dsr"
interface = "eth0"
tarpit_acl = "any"
[[service]]
name = "d"
listen = "192.0.2.100:4"
mode = "dsr"
interface = "eth0"
tarpit_acl = "wide"
[[service]]
name = "e"
listen = "192.0.2.100:5"
mode = "dsr"
interface = "eth0"
tarpit_acl = "empty"
`,
		want: []string{
			`lbd.toml:3:34: acl.lastdeny[1]: tarpit ACL "lastdeny" must end with a permit rule: after a final deny every address not listed matches, and lbd would answer ARP for the whole LAN`,
			`lbd.toml:4:28: acl.any[1]: "permit any" in tarpit ACL "any" matches every address: lbd would answer ARP for the whole LAN; permit /16 or narrower`,
			`lbd.toml:5:9: acl.wide[0]: "permit 10.0.0.0/8" in tarpit ACL "wide" is too broad: lbd would answer ARP for all of it; permit /16 or narrower`,
			`lbd.toml:5:30: acl.wide[1]: "permit 2001:db8::/64" in tarpit ACL "wide" is too broad: lbd would answer for all of it; permit /112 or narrower`,
			`lbd.toml:11:14: service[0].tarpit_acl: tarpit ACL "empty" is empty: an empty tarpit ACL matches every address and would answer ARP for the whole LAN`,
		},
	},
	{
		name: "tarpit ACL must not claim a VIP or backend",
		in: `[acl]
t = ["permit 192.0.2.0/24"]
u = ["deny 192.0.2.100", "permit 192.0.2.0/24"]
[[service]]
name = "a"
listen = "192.0.2.100:80"
mode = "dsr"
interface = "eth0"
tarpit_acl = "t"
[[service]]
name = "b"
listen = "198.51.100.100:80"
mode = "dsr"
interface = "eth0"
tarpit_acl = "u"
backend = [{address = "198.51.100.1"}, {address = "192.0.2.21"}]
[[service]]
name = "c"
listen = "192.0.2.200:80"
mode = "dsr"
interface = "eth1"
`,
		want: []string{
			`lbd.toml:9:14: service[0].tarpit_acl: tarpit ACL "t" matches 192.0.2.100, the VIP of service[0]`,
			`lbd.toml:9:14: service[0].tarpit_acl: tarpit ACL "t" matches 192.0.2.21, backend[1] of service[1]`,
			`lbd.toml:15:14: service[1].tarpit_acl: tarpit ACL "u" matches 192.0.2.21, backend[1] of service[1]`,
		},
	},
	{
		// The check uses lbd's matcher, which matches an IPv4-mapped
		// prefix against IPv4 addresses as lbd's tarpit does.
		name: "tarpit ACL written IPv4-mapped must not claim a VIP",
		in: `[acl]
t = ["permit ::ffff:192.0.2.100"]
[[service]]
name = "a"
listen = "192.0.2.100:80"
mode = "dsr"
interface = "eth0"
tarpit_acl = "t"
`,
		want: []string{
			`lbd.toml:8:14: service[0].tarpit_acl: tarpit ACL "t" matches 192.0.2.100, the VIP of service[0]`,
		},
	},
	{
		name: "dsr VIPs overlap, and a VIP must not be local",
		in: `[control]
pen_listen = "192.0.2.102:10000"
[[dummy]]
listen = "192.0.2.101:8080"
[[service]]
name = "proxy"
listen = "192.0.2.100:8080"
[[service]]
name = "all"
listen = "192.0.2.100"
mode = "dsr"
interface = "eth0"
[[service]]
name = "web"
listen = "192.0.2.100:80"
mode = "dsr"
interface = "eth1"
[[service]]
name = "b"
listen = "192.0.2.101:80"
mode = "dsr"
interface = "eth0"
[[service]]
name = "c"
listen = "192.0.2.103:80"
mode = "dsr"
interface = "eth0"
[[service]]
name = "d"
listen = "192.0.2.103:80"
mode = "dsr"
interface = "eth0"
[[service]]
name = "e"
listen = "192.0.2.102:53"
protocol = "udp"
mode = "dsr"
interface = "eth0"
`,
		want: []string{
			`lbd.toml:10:10: service[1].listen: VIP 192.0.2.100 is also the address of service[0].listen: a DSR VIP must not be a local address of lbd`,
			`lbd.toml:15:10: service[2].listen: tcp VIP 192.0.2.100:80 overlaps 192.0.2.100 (every port) of service[1].listen`,
			`lbd.toml:20:10: service[3].listen: VIP 192.0.2.101 is also the address of dummy[0].listen: a DSR VIP must not be a local address of lbd`,
			`lbd.toml:30:10: service[5].listen: tcp VIP 192.0.2.103:80 overlaps 192.0.2.103:80 of service[4].listen`,
			`lbd.toml:35:10: service[6].listen: VIP 192.0.2.102 is also the address of control.pen_listen: a DSR VIP must not be a local address of lbd`,
		},
	},
}

// errorLines flattens a joined error into its *Error lines.
func errorLines(t *testing.T, err error) []string {
	t.Helper()
	var lines []string
	for _, e := range splitErrors(err) {
		if e.File == "" || e.Line == 0 || e.Col == 0 {
			t.Errorf("error without a position: %#v", e)
		}
		lines = append(lines, e.Error())
	}
	return lines
}

func TestParseBad(t *testing.T) {
	for _, tt := range slices.Concat(badTests, healthBadTests) {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("lbd.toml", []byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c)
			}
			if c != nil {
				t.Errorf("Parse returned a Config with an error")
			}
			t.Logf("err:\n%v", err)
			if diff := cmp.Diff(tt.want, errorLines(t, err)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("Error() = %q, want %q", got, want)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("errors.As(%T, *Error) failed", err)
			}
		})
	}
}

func TestValidateProgrammatic(t *testing.T) {
	if err := Validate(minimalConfig()); err != nil {
		t.Fatalf("Validate(minimal): %v", err)
	}
	c := minimalConfig()
	s := &c.Services[0]
	s.Backends = append(s.Backends, Backend{Address: ap("10.0.0.1:80"), Weight: 1}, Backend{})
	s.TLS = &TLS{Cert: "c.pem"} // MinVersion left zero
	s.ClientACL = "3"
	c.ACLs = map[string]ACL{"bad": {Rules: []Rule{{Action: 7, Prefix: netip.MustParsePrefix("10.0.0.1/8")}}}}
	want := []string{
		`acl.bad[0]: action 7 is neither permit nor deny`,
		`acl.bad[0]: prefix 10.0.0.1/8 has host bits set; use 10.0.0.0/8`,
		`service[0].client_acl: ACL "3" is not defined in [acl]`,
		`service[0].tls.min_version: version 0x0000 must be TLS 1.2 or 1.3`,
		`service[0].backend[1].address: 10.0.0.1:80 is already backend[0]`,
		`service[0].backend[2].address: an ip:port is required ("0.0.0.0:0" marks an unused slot)`,
	}
	err := Validate(c)
	var got []string
	for _, e := range splitErrors(err) {
		if e.File != "" || e.Line != 0 || e.Col != 0 {
			t.Errorf("programmatic error has a position: %#v", e)
		}
		got = append(got, e.Error())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Validate errors (-want +got):\n%s", diff)
	}
	if err := Validate(nil); err == nil {
		t.Error("Validate(nil) succeeded")
	}
	if err := Validate(&Config{}); err == nil {
		t.Error("Validate(empty) succeeded")
	}
}

func TestNewDefaults(t *testing.T) {
	want := Service{
		Name: "x", Listen: ap("127.0.0.1:1"), Protocol: TCP,
		Algorithm: RoundRobin, Tracking: true, TrackingSize: 2048,
		Blacklist: 30 * time.Second, ConnectTimeout: 3 * time.Second,
		MaxConnections: 4096, Backlog: 500, Health: NewHealth(),
	}
	if diff := cmp.Diff(want, NewService("x", ap("127.0.0.1:1"), TCP), cmpOpts...); diff != "" {
		t.Errorf("NewService tcp (-want +got):\n%s", diff)
	}
	want.Protocol, want.IdleTimeout = UDP, time.Minute
	if diff := cmp.Diff(want, NewService("x", ap("127.0.0.1:1"), UDP), cmpOpts...); diff != "" {
		t.Errorf("NewService udp (-want +got):\n%s", diff)
	}
	if got := NewBackend(ap("10.0.0.1:1")); got != (Backend{Address: ap("10.0.0.1:1"), Weight: 1}) {
		t.Errorf("NewBackend = %+v", got)
	}
	if diff := cmp.Diff(&TLS{Cert: "c", Key: "k", MinVersion: tls.VersionTLS12}, NewTLS("c", "k")); diff != "" {
		t.Errorf("NewTLS (-want +got):\n%s", diff)
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	if err := Validate(c); err != nil {
		t.Fatalf("Default() is invalid: %v", err)
	}
	s := NewService("web", ap("127.0.0.1:8080"), TCP)
	s.Tracking = false
	s.Backends = []Backend{NewBackend(ap("127.0.0.1:8081")), NewBackend(ap("127.0.0.1:8082"))}
	want := &Config{
		Dummies: []Dummy{
			{Listen: ap("127.0.0.1:8081"), Body: "dummy backend 1\n"},
			{Listen: ap("127.0.0.1:8082"), Body: "dummy backend 2\n"},
		},
		Services: []Service{s},
	}
	if diff := cmp.Diff(want, c, cmpOpts...); diff != "" {
		t.Errorf("Default() (-want +got):\n%s", diff)
	}
	// Each call is a fresh copy.
	c.Services[0].Backends[0].Weight = 9
	if Default().Services[0].Backends[0].Weight != 1 {
		t.Error("Default() shares state between calls")
	}
	if _, err := Parse("default.toml", DefaultTOML()); err != nil {
		t.Errorf("DefaultTOML does not parse: %v", err)
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lbd.toml")
	if err := os.WriteFile(path, []byte("oops = 1\n"+minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if want := path + ":1:1: oops: unknown key"; err == nil || err.Error() != want {
		t.Errorf("Load error = %v, want %s", err, want)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

func TestParseReference(t *testing.T) {
	data, err := os.ReadFile("reference.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("reference.toml", data)
	if err != nil {
		t.Fatalf("reference.toml: %v", err)
	}
	// Every section is present in the example.
	if c.Control.PenListen == "" || len(c.ACLs) == 0 || len(c.Dummies) == 0 ||
		len(c.Services) == 0 || c.Services[0].TLS == nil || len(c.Services[0].Backends) == 0 {
		t.Errorf("reference.toml lacks a section: %+v", c)
	}

	// Every key of the schema is set in the example, and a comment sits
	// right above its first use.
	ps := scanPositions(data)
	lines := strings.Split(string(data), "\n")
	first := make(map[string]pos) // key path without indices -> first position
	for path, at := range ps.at {
		k := stripIndices(path)
		if p, ok := first[k]; !ok || at.line < p.line {
			first[k] = at
		}
	}
	keys := schemaKeys(reflect.TypeFor[rawFile](), "")
	if len(keys) < 50 {
		t.Fatalf("schemaKeys found only %d keys: %v", len(keys), keys)
	}
	for _, k := range keys {
		at, ok := first[k]
		if !ok {
			t.Errorf("reference.toml does not document key %q", k)
			continue
		}
		if at.line < 2 || !strings.HasPrefix(lines[at.line-2], "#") {
			t.Errorf("reference.toml:%d: key %q has no comment above it", at.line, k)
		}
	}
}

// schemaKeys lists the toml key paths of a raw struct type, e.g.
// "service.backend.address".
func schemaKeys(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		key := joinKey(prefix, name)
		keys = append(keys, key)
		keys = append(keys, schemaKeys(f.Type, key)...)
	}
	return keys
}

func stripIndices(path string) string {
	var b strings.Builder
	depth := 0
	for _, r := range path {
		switch {
		case r == '[':
			depth++
		case r == ']':
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// roundTrip checks that Marshal's output parses back to c.
func roundTrip(t *testing.T, c *Config) []byte {
	t.Helper()
	out, err := Marshal(c)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	back, err := Parse("marshaled.toml", out)
	if err != nil {
		t.Fatalf("Parse(Marshal(c)): %v\n%s", err, out)
	}
	if diff := cmp.Diff(c, back, cmpOpts...); diff != "" {
		t.Fatalf("Parse(Marshal(c)) differs (-c +back):\n%s\n%s", diff, out)
	}
	return out
}

func TestMarshalRoundTrip(t *testing.T) {
	ref, err := os.ReadFile("reference.toml")
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string]string{"reference.toml": string(ref), "default.toml": string(DefaultTOML())}
	for _, tt := range goodTests {
		inputs[tt.name] = tt.in
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			c, err := Parse("in.toml", []byte(in))
			if err != nil {
				t.Fatal(err)
			}
			out := roundTrip(t, c)
			// Marshal is canonical: a second pass writes the same bytes.
			c2, _ := Parse("out.toml", out)
			if out2, _ := Marshal(c2); string(out2) != string(out) {
				t.Errorf("Marshal is not stable:\n%s\n---\n%s", out, out2)
			}
		})
	}
}

func TestMarshalOmitsDefaults(t *testing.T) {
	out, err := Marshal(minimalConfig())
	if err != nil {
		t.Fatal(err)
	}
	want := `# lbd configuration, written by lbd. Every key is documented in nib's config/reference.toml.

[[service]]
name = 'web'
listen = '127.0.0.1:80'
protocol = 'tcp'

[[service.backend]]
address = '10.0.0.1:80'
`
	if diff := cmp.Diff(want, string(out)); diff != "" {
		t.Errorf("Marshal (-want +got):\n%s", diff)
	}

	// Non-defaults are written, in the documented order.
	c := minimalConfig()
	c.Services[0].Protocol = UDP
	c.Services[0].IdleTimeout = 0 // invalid for UDP, but Marshal does not validate
	c.Services[0].Tracking = false
	c.Services[0].Backends[0].Weight = 0
	out, err = Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"protocol = 'udp'\ntracking = false\nidle_timeout = '0s'\n", "weight = 0\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("Marshal output lacks %q:\n%s", want, out)
		}
	}
}

func TestMarshalUnwritable(t *testing.T) {
	for name, mod := range map[string]func(c *Config){
		"algorithm":   func(c *Config) { c.Services[0].Algorithm = 42 },
		"protocol":    func(c *Config) { c.Services[0].Protocol = -1 },
		"acl action":  func(c *Config) { c.ACLs = map[string]ACL{"x": {Rules: []Rule{{Action: 3}}}} },
		"tls version": func(c *Config) { c.Services[0].TLS = &TLS{Cert: "c", MinVersion: tls.VersionTLS10} },
		"cipher": func(c *Config) {
			c.Services[0].TLS = &TLS{Cert: "c", MinVersion: tls.VersionTLS12, Ciphers: []uint16{0xffff}}
		},
	} {
		c := minimalConfig()
		mod(c)
		if out, err := Marshal(c); err == nil {
			t.Errorf("%s: Marshal succeeded:\n%s", name, out)
		}
	}
}

func TestClone(t *testing.T) {
	c, err := Parse("in.toml", []byte(goodTests[5].in)) // everything set
	if err != nil {
		t.Fatal(err)
	}
	n := c.Clone()
	if diff := cmp.Diff(c, n, cmpOpts...); diff != "" {
		t.Fatalf("Clone differs (-c +clone):\n%s", diff)
	}
	n.ACLs["0"].Rules[0].Action = Deny
	n.ACLs["new"] = ACL{}
	n.Dummies = append(n.Dummies, Dummy{})
	n.Services[0].Name = "changed"
	n.Services[0].Backends[0].Weight = 99
	n.Services[0].TLS.Cert = "other"
	n.Services[0].TLS.Ciphers[0] = 0
	again, _ := Parse("in.toml", []byte(goodTests[5].in))
	if diff := cmp.Diff(again, c, cmpOpts...); diff != "" {
		t.Errorf("changing the clone changed the original (-want +got):\n%s", diff)
	}
	if (*Config)(nil).Clone() != nil {
		t.Error("nil.Clone() != nil")
	}
}

func TestSave(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lbd.toml")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := Default()
	data, err := Save(path, c)
	if err != nil {
		t.Fatalf("Save: %v", err)
	}
	if onDisk, _ := os.ReadFile(path); !bytes.Equal(data, onDisk) {
		t.Errorf("Save returned %q, wrote %q", data, onDisk)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	got, err := Load(path)
	if err != nil {
		t.Fatalf("Load after Save: %v", err)
	}
	if diff := cmp.Diff(c, got, cmpOpts...); diff != "" {
		t.Errorf("Load(Save(c)) (-want +got):\n%s", diff)
	}
	assertOnly(t, dir, "lbd.toml")

	// An invalid config is refused and the file is kept.
	before, _ := os.ReadFile(path)
	bad := c.Clone()
	bad.Services[0].ConnectTimeout = 0
	if _, err := Save(path, bad); err == nil {
		t.Error("Save(invalid) succeeded")
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("Save(invalid) changed the file")
	}

	// The rename fails when the target is a directory: the directory and
	// its content are kept and no temporary file is left.
	target := filepath.Join(dir, "isdir")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "keep"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Save(target, c); err == nil {
		t.Error("Save over a directory succeeded")
	}
	if b, err := os.ReadFile(filepath.Join(target, "keep")); err != nil || string(b) != "keep" {
		t.Errorf("content under the target changed: %q, %v", b, err)
	}
	assertOnly(t, dir, "isdir", "lbd.toml")

	// Creating the temporary file fails in a missing directory.
	if _, err := Save(filepath.Join(dir, "missing", "lbd.toml"), c); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Save into a missing directory = %v, want ErrNotExist", err)
	}
	assertOnly(t, dir, "isdir", "lbd.toml")
}

func TestSaveReadOnlyDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "lbd.toml")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	if _, err := Save(path, Default()); err == nil {
		t.Error("Save into a read-only directory succeeded")
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("old file changed to %q", b)
	}
	assertOnly(t, dir, "lbd.toml")
}

// assertOnly checks that dir holds exactly the named entries.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if diff := cmp.Diff(names, got); diff != "" {
		t.Errorf("files in %s (-want +got):\n%s", dir, diff)
	}
}

func TestStrings(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{TCP.String(), "tcp"},
		{UDP.String(), "udp"},
		{Maglev.String(), "maglev"},
		{Algorithm(9).String(), "Algorithm(9)"},
		{ProxyV2.String(), "v2"},
		{ClientAuthRequire.String(), "require"},
		{Deny.String(), "deny"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, tt := range goodTests {
		f.Add([]byte(tt.in))
	}
	for _, tt := range badTests {
		f.Add([]byte(tt.in))
	}
	for _, tt := range healthGoodTests {
		f.Add([]byte(tt.in))
	}
	for _, tt := range healthBadTests {
		f.Add([]byte(tt.in))
	}
	if ref, err := os.ReadFile("reference.toml"); err == nil {
		f.Add(ref)
	}
	f.Add(DefaultTOML())
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if err != nil {
			for _, e := range splitErrors(err) {
				if e.File != "fuzz.toml" || e.Line < 1 || e.Col < 1 {
					t.Fatalf("error without a position: %#v", e)
				}
			}
			return
		}
		if err := Validate(c); err != nil {
			t.Fatalf("Parse accepted a config Validate rejects: %v", err)
		}
		roundTrip(t, c)
	})
}

func TestNewDSRService(t *testing.T) {
	want := Service{
		Name: "vip", Listen: ap("192.0.2.100:0"), Protocol: UDP,
		Mode: ModeDSR, Interface: "eth0",
		Algorithm: Maglev, Tracking: true, TrackingSize: 2048,
		Blacklist: 30 * time.Second, ConnectTimeout: 3 * time.Second,
		IdleTimeout: 300 * time.Second, MaxConnections: 65536, Backlog: 500,
		Health: NewHealth(),
	}
	if diff := cmp.Diff(want, NewDSRService("vip", "eth0", ap("192.0.2.100:0"), UDP), cmpOpts...); diff != "" {
		t.Errorf("NewDSRService (-want +got):\n%s", diff)
	}
	if NewService("x", ap("127.0.0.1:1"), TCP).Mode != ModeProxy {
		t.Error("NewService is not a proxy service")
	}
	if ModeDSR.String() != "dsr" || ModeProxy.String() != "proxy" || Mode(7).String() != "Mode(7)" {
		t.Error("Mode.String")
	}
}

func TestCheckInterface(t *testing.T) {
	for _, name := range []string{"eth0", "enp0s31f6", "br-lan.10", "wlan0_ap", "a", "abcdefghijklmno"} {
		if err := CheckInterface(name); err != nil {
			t.Errorf("CheckInterface(%q): %v", name, err)
		}
	}
	for _, name := range []string{"", ".", "..", "abcdefghijklmnop", "eth0/1", "eth0:1", "eth 0", "eth\t0", "eth\x000", "ethé"} {
		if err := CheckInterface(name); err == nil {
			t.Errorf("CheckInterface(%q) succeeded", name)
		}
	}
}

func TestMarshalDSR(t *testing.T) {
	s := NewDSRService("vip", "eth0", ap("192.0.2.100:0"), TCP)
	s.Tracking = false
	s.TarpitACL = "t"
	s.Backends = []Backend{NewBackend(ap("192.0.2.21:0")), NewBackend(ap("0.0.0.0:0"))}
	c := &Config{
		ACLs:     map[string]ACL{"t": {Rules: []Rule{{Action: Permit, Prefix: netip.MustParsePrefix("192.0.2.77/32")}}}},
		Services: []Service{s},
	}
	out := roundTrip(t, c)
	want := `# lbd configuration, written by lbd. Every key is documented in nib's config/reference.toml.

[acl]
t = ['permit 192.0.2.77']

[[service]]
name = 'vip'
listen = '192.0.2.100'
protocol = 'tcp'
mode = 'dsr'
interface = 'eth0'
tarpit_acl = 't'
tracking = false

[[service.backend]]
address = '192.0.2.21'

[[service.backend]]
address = '0.0.0.0'
`
	if diff := cmp.Diff(want, string(out)); diff != "" {
		t.Errorf("Marshal (-want +got):\n%s", diff)
	}
	c.Services[0].Listen = ap("192.0.2.100:53")
	c.Services[0].Mode = 9
	if out, err := Marshal(c); err == nil {
		t.Errorf("Marshal of mode 9 succeeded:\n%s", out)
	}
}

func TestValidateDSRProgrammatic(t *testing.T) {
	s := NewDSRService("vip", "eth0", ap("192.0.2.100:80"), TCP)
	s.Backends = []Backend{NewBackend(ap("192.0.2.21:80")), NewBackend(ap("[::ffff:192.0.2.22]:0"))}
	s.TarpitACL = "t"
	s.TLS = NewTLS("c", "")
	c := &Config{
		ACLs:     map[string]ACL{"t": {Rules: []Rule{{Action: Permit, Prefix: netip.MustParsePrefix("192.0.2.0/24")}}}},
		Services: []Service{s, NewService("p", ap("0.0.0.0:80"), TCP)},
	}
	c.Services[1].Backends = []Backend{NewBackend(ap("10.0.0.1:80"))}
	want := []string{
		`service[0].tls: not allowed with mode "dsr": DSR forwards frames and cannot terminate TLS`,
		`service[0].backend[0].address: DSR never changes the destination port: give the backend without a port, "192.0.2.21"`,
		`service[0].backend[1].address: ::ffff:192.0.2.22: IPv6 backends are not supported yet`,
		`service[0].tarpit_acl: tarpit ACL "t" matches 192.0.2.100, the VIP of service[0]`,
	}
	var got []string
	for _, e := range splitErrors(Validate(c)) {
		got = append(got, e.Error())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Validate errors (-want +got):\n%s", diff)
	}
}
