package config

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Services the health tests put a [service.health] table into.
const (
	proxyTCP = `
[[service]]
name = "web"
listen = "127.0.0.1:80"
[[service.backend]]
address = "10.0.0.1:8080"
`
	proxyUDP = `
[[service]]
name = "dns"
listen = "127.0.0.1:53"
protocol = "udp"
[[service.backend]]
address = "10.0.0.1:53"
`
	dsrTCP = `
[[service]]
name = "vip"
listen = "192.0.2.100:80"
mode = "dsr"
interface = "eth0"
[[service.backend]]
address = "192.0.2.21"
`
	dsrAllPorts = `
[[service]]
name = "vip"
listen = "192.0.2.100"
mode = "dsr"
interface = "eth0"
[[service.backend]]
address = "192.0.2.21"
`
	dsrUDP = `
[[service]]
name = "vip"
listen = "192.0.2.100:53"
protocol = "udp"
mode = "dsr"
interface = "eth0"
[[service.backend]]
address = "192.0.2.21"
`
)

// parseHealth parses in and returns the Health of its first service.
func parseHealth(t *testing.T, in string) Health {
	t.Helper()
	c, err := Parse("lbd.toml", []byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c.Services[0].Health
}

// healthGoodTests are valid [service.health] tables and the Health each
// gives; the fuzz test starts from them too.
var healthGoodTests = []struct {
	name string
	in   string
	want func() Health
}{
	{
		name: "no table is check none with the defaults",
		in:   proxyTCP,
		want: NewHealth,
	},
	{
		name: "empty table",
		in:   proxyTCP + "[service.health]\n",
		want: NewHealth,
	},
	{
		name: "defaults written out",
		in: proxyTCP + `[service.health]
check = "none"
interval = "5s"
timeout = "2s"
rise = 2
fall = 3
path = "/"
host = ""
expect_status = "200-399"
expect_body = ""
query = ""
vip = false
fail_closed = false
start_down = false
`,
		want: NewHealth,
	},
	{
		name: "http, every key",
		in: proxyTCP + `[service.health]
check = "http"
interval = "100ms"
timeout = "100ms"
rise = 1
fall = 100
port = 65535
path = "/health?x=%20y&z=~"
host = "www.example.com:8080"
expect_status = "200-299"
expect_body = "all \"good\" ✓"
fail_closed = true
start_down = true
`,
		want: func() Health {
			h := NewHealth()
			h.Check = CheckHTTP
			h.Interval = 100 * time.Millisecond
			h.Timeout = 100 * time.Millisecond
			h.Rise, h.Fall = 1, 100
			h.Port = 65535
			h.Path = "/health?x=%20y&z=~"
			h.Host = "www.example.com:8080"
			h.ExpectStatus = StatusRange{200, 299}
			h.ExpectBody = "all \"good\" ✓"
			h.FailClosed, h.StartDown = true, true
			return h
		},
	},
	{
		name: "https, one status code as an integer, longest interval",
		in: proxyTCP + `[service.health]
check = "https"
interval = "1h"
timeout = "1h"
expect_status = 204
`,
		want: func() Health {
			h := NewHealth()
			h.Check = CheckHTTPS
			h.Interval, h.Timeout = time.Hour, time.Hour
			h.ExpectStatus = StatusRange{204, 204}
			return h
		},
	},
	{
		name: "one status code as a string, shortest timeout",
		in: proxyTCP + `[service.health]
check = "http"
timeout = "10ms"
expect_status = "599"
`,
		want: func() Health {
			h := NewHealth()
			h.Check = CheckHTTP
			h.Timeout = 10 * time.Millisecond
			h.ExpectStatus = StatusRange{599, 599}
			return h
		},
	},
	{
		name: "tcp with a port",
		in:   proxyTCP + "[service.health]\ncheck = \"tcp\"\nport = 1\n",
		want: func() Health {
			h := NewHealth()
			h.Check, h.Port = CheckTCP, 1
			return h
		},
	},
	{
		name: "dns on udp",
		in:   proxyUDP + "[service.health]\ncheck = \"dns\"\nquery = \"example.com.\"\n",
		want: func() Health {
			h := NewHealth()
			h.Check, h.Query = CheckDNS, "example.com."
			return h
		},
	},
	{
		name: "dns on tcp, root and underscores",
		in:   proxyTCP + "[service.health]\ncheck = \"dns\"\nquery = \".\"\n[[service]]\nname = \"b\"\nlisten = \"127.0.0.1:81\"\nhealth = {check = \"dns\", query = \"_dns.Resolver-1.arpa\"}\n",
		want: func() Health {
			h := NewHealth()
			h.Check, h.Query = CheckDNS, "."
			return h
		},
	},
	{
		name: "dsr tcp with vip",
		in:   dsrTCP + "[service.health]\ncheck = \"tcp\"\nvip = true\n",
		want: func() Health {
			h := NewHealth()
			h.Check, h.VIP = CheckTCP, true
			return h
		},
	},
	{
		name: "dsr http",
		in:   dsrTCP + "[service.health]\ncheck = \"http\"\npath = \"/ping\"\n",
		want: func() Health {
			h := NewHealth()
			h.Check, h.Path = CheckHTTP, "/ping"
			return h
		},
	},
	{
		name: "dsr every port with a port",
		in:   dsrAllPorts + "[service.health]\ncheck = \"tcp\"\nport = 22\nvip = true\n",
		want: func() Health {
			h := NewHealth()
			h.Check, h.Port, h.VIP = CheckTCP, 22, true
			return h
		},
	},
	{
		name: "dsr every port without a check needs no port",
		in:   dsrAllPorts + "[service.health]\nvip = true\nfail_closed = true\n",
		want: func() Health {
			h := NewHealth()
			h.VIP, h.FailClosed = true, true
			return h
		},
	},
	{
		name: "dsr udp dns",
		in:   dsrUDP + "[service.health]\ncheck = \"dns\"\nquery = \"a.b\"\n",
		want: func() Health {
			h := NewHealth()
			h.Check, h.Query = CheckDNS, "a.b"
			return h
		},
	},
	{
		name: "check none keeps keys of any check",
		in: proxyUDP + `[service.health]
check = "none"
path = "/x"
host = "h"
expect_status = "300"
expect_body = "b"
query = "example.com"
start_down = true
`,
		want: func() Health {
			h := NewHealth()
			h.Path, h.Host, h.ExpectStatus, h.ExpectBody = "/x", "h", StatusRange{300, 300}, "b"
			h.Query = "example.com"
			h.StartDown = true
			return h
		},
	},
}

func TestHealthParse(t *testing.T) {
	for _, tt := range healthGoodTests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseHealth(t, tt.in)
			if diff := cmp.Diff(tt.want(), got); diff != "" {
				t.Errorf("Health (-want +got):\n%s", diff)
			}
			c, _ := Parse("lbd.toml", []byte(tt.in))
			out := roundTrip(t, c)
			// The written table holds only what differs from the defaults.
			if got == NewHealth() && strings.Contains(string(out), "health") {
				t.Errorf("Marshal wrote a default [service.health]:\n%s", out)
			}
		})
	}
}

func TestNewHealth(t *testing.T) {
	want := Health{
		Check:        CheckNone,
		Interval:     5 * time.Second,
		Timeout:      2 * time.Second,
		Rise:         2,
		Fall:         3,
		Path:         "/",
		ExpectStatus: StatusRange{200, 399},
	}
	if got := NewHealth(); got != want {
		t.Errorf("NewHealth() = %+v, want %+v", got, want)
	}
	if got := NewService("x", ap("127.0.0.1:1"), UDP).Health; got != want {
		t.Errorf("NewService().Health = %+v", got)
	}
	if got := NewDSRService("x", "eth0", ap("192.0.2.1:0"), TCP).Health; got != want {
		t.Errorf("NewDSRService().Health = %+v", got)
	}
}

// healthBadTests are invalid [service.health] tables and every error each
// must produce; TestParseBad runs them with badTests.
var healthBadTests = []struct {
	name string
	in   string
	want []string
}{
	{
		name: "values that do not convert",
		in: proxyTCP + `[service.health]
check = "icmp"
interval = "5"
timeout = "soon"
port = 0
expect_status = "2xx"
`,
		want: []string{
			`lbd.toml:8:9: service[0].health.check: "icmp" must be one of "none", "tcp", "http", "https", "dns"`,
			`lbd.toml:9:12: service[0].health.interval: "5" is not a duration such as "30s" or "1m30s"`,
			`lbd.toml:10:11: service[0].health.timeout: "soon" is not a duration such as "30s" or "1m30s"`,
			`lbd.toml:11:8: service[0].health.port: 0 must be between 1 and 65535 (leave port out to check the port traffic goes to)`,
			`lbd.toml:12:17: service[0].health.expect_status: "2xx" is not a status code such as 200 or "200", or a range such as "200-299"`,
		},
	},
	{
		name: "more values that do not convert",
		in: proxyTCP + `[service.health]
port = 65536
expect_status = 2000
[[service]]
name = "b"
listen = "127.0.0.1:81"
health = {port = -1, expect_status = "200-"}
[[service]]
name = "c"
listen = "127.0.0.1:82"
health = {expect_status = [200, 204]}
[[service]]
name = "d"
listen = "127.0.0.1:83"
health = {expect_status = "+200"}
[[service]]
name = "e"
listen = "127.0.0.1:84"
health = {expect_status = 2.5}
`,
		want: []string{
			`lbd.toml:8:8: service[0].health.port: 65536 must be between 1 and 65535 (leave port out to check the port traffic goes to)`,
			`lbd.toml:9:17: service[0].health.expect_status: 2000 is not a status code such as 200 or "200", or a range such as "200-299"`,
			`lbd.toml:13:18: service[1].health.port: -1 must be between 1 and 65535 (leave port out to check the port traffic goes to)`,
			`lbd.toml:13:38: service[1].health.expect_status: "200-" is not a status code such as 200 or "200", or a range such as "200-299"`,
			`lbd.toml:17:11: service[2].health.expect_status: a TOML []interface {} is not a status code such as 200 or "200", or a range such as "200-299"`,
			`lbd.toml:21:27: service[3].health.expect_status: "+200" is not a status code such as 200 or "200", or a range such as "200-299"`,
			`lbd.toml:25:27: service[4].health.expect_status: 2.5 is not a status code such as 200 or "200", or a range such as "200-299"`,
		},
	},
	{
		name: "wrong type",
		in: proxyTCP + `[service.health]
rise = "2"
`,
		want: []string{
			`lbd.toml:8:8: service[0].health.rise: expected an integer, not a TOML string`,
		},
	},
	{
		name: "unknown key",
		in:   proxyTCP + "[service.health]\nchecks = \"tcp\"\n",
		want: []string{`lbd.toml:8:1: service[0].health.checks: unknown key`},
	},
	{
		name: "ranges",
		in: proxyTCP + `[service.health]
check = "http"
interval = "99ms"
timeout = "9ms"
rise = 0
fall = 101
expect_status = "99-600"
[[service]]
name = "b"
listen = "127.0.0.1:81"
[service.health]
check = "tcp"
interval = "1h0m1s"
timeout = "1h0m1s"
rise = -1
[[service]]
name = "c"
listen = "127.0.0.1:82"
[service.health]
check = "tcp"
interval = "1s"
timeout = "1.5s"
[[service]]
name = "d"
listen = "127.0.0.1:83"
[service.health]
check = "tcp"
interval = "-1s"
timeout = "30m"
`,
		want: []string{
			`lbd.toml:9:12: service[0].health.interval: 99ms must be between 100ms and 1h0m0s`,
			`lbd.toml:10:11: service[0].health.timeout: 9ms must be between 10ms and 1h0m0s`,
			`lbd.toml:11:8: service[0].health.rise: 0 must be between 1 and 100`,
			`lbd.toml:12:8: service[0].health.fall: 101 must be between 1 and 100`,
			`lbd.toml:13:17: service[0].health.expect_status: "99-600": status codes must be between 100 and 599`,
			`lbd.toml:19:12: service[1].health.interval: 1h0m1s must be between 100ms and 1h0m0s`,
			`lbd.toml:20:11: service[1].health.timeout: 1h0m1s must be between 10ms and 1h0m0s`,
			`lbd.toml:21:8: service[1].health.rise: -1 must be between 1 and 100`,
			`lbd.toml:28:11: service[2].health.timeout: 1.5s must be between 10ms and interval (1s)`,
			`lbd.toml:34:12: service[3].health.interval: -1s must be between 100ms and 1h0m0s`,
		},
	},
	{
		name: "http keys",
		in: proxyTCP + `[service.health]
check = "http"
path = "health"
host = "a b"
expect_status = "299-200"
[[service]]
name = "b"
listen = "127.0.0.1:81"
[service.health]
check = "https"
path = "/a b"
host = "` + strings.Repeat("h", 256) + `"
expect_body = "` + strings.Repeat("b", 1025) + `"
[[service]]
name = "c"
listen = "127.0.0.1:82"
[service.health]
check = "http"
path = "/` + strings.Repeat("p", 1024) + `"
host = "x\r\nEvil: 1"
[[service]]
name = "d"
listen = "127.0.0.1:83"
[service.health]
path = ""
host = "é"
expect_status = "0"
[[service]]
name = "e"
listen = "127.0.0.1:84"
[service.health]
path = "/é"
`,
		want: []string{
			`lbd.toml:9:8: service[0].health.path: "health" must start with "/"`,
			`lbd.toml:10:8: service[0].health.host: "a b" may only contain printable ASCII without spaces`,
			`lbd.toml:11:17: service[0].health.expect_status: "299-200" is an empty range: write the lower code first`,
			`lbd.toml:17:8: service[1].health.path: "/a b" may only contain printable ASCII without spaces (percent-encode the rest, e.g. %20)`,
			`lbd.toml:18:8: service[1].health.host: is 256 bytes long; at most 255 are allowed`,
			`lbd.toml:19:15: service[1].health.expect_body: is 1025 bytes long; at most 1024 are allowed`,
			`lbd.toml:25:8: service[2].health.path: is 1025 bytes long; at most 1024 are allowed`,
			`lbd.toml:26:8: service[2].health.host: "x\r\nEvil: 1" may only contain printable ASCII without spaces`,
			`lbd.toml:31:8: service[3].health.path: "" must start with "/"`,
			`lbd.toml:32:8: service[3].health.host: "é" may only contain printable ASCII without spaces`,
			`lbd.toml:33:17: service[3].health.expect_status: "0": status codes must be between 100 and 599`,
			`lbd.toml:38:8: service[4].health.path: "/é" may only contain printable ASCII without spaces (percent-encode the rest, e.g. %20)`,
		},
	},
	{
		name: "http keys with tcp and dns checks",
		in: proxyTCP + `[service.health]
check = "tcp"
path = "/x"
host = "h"
expect_status = "200"
expect_body = "b"
[[service]]
name = "b"
listen = "127.0.0.1:81"
[service.health]
check = "dns"
query = "example.com"
path = "/"
expect_status = "200-399"
expect_body = "b"
`,
		want: []string{
			`lbd.toml:9:8: service[0].health.path: is only used by check "http" and "https" (check is "tcp")`,
			`lbd.toml:10:8: service[0].health.host: is only used by check "http" and "https" (check is "tcp")`,
			`lbd.toml:11:17: service[0].health.expect_status: is only used by check "http" and "https" (check is "tcp")`,
			`lbd.toml:12:15: service[0].health.expect_body: is only used by check "http" and "https" (check is "tcp")`,
			`lbd.toml:21:15: service[1].health.expect_body: is only used by check "http" and "https" (check is "dns")`,
		},
	},
	{
		name: "query",
		in: proxyTCP + `[service.health]
check = "dns"
[[service]]
name = "b"
listen = "127.0.0.1:81"
health = {check = "http", query = "example.com"}
[[service]]
name = "c"
listen = "127.0.0.1:82"
health = {check = "dns", query = "exa mple.com"}
[[service]]
name = "d"
listen = "127.0.0.1:83"
health = {query = "a..b"}
[[service]]
name = "e"
listen = "127.0.0.1:84"
health = {query = "` + strings.Repeat("a", 64) + `.com"}
[[service]]
name = "f"
listen = "127.0.0.1:85"
health = {query = "` + strings.Repeat("abcdefghi.", 25) + `abcd"}
[[service]]
name = "g"
listen = "127.0.0.1:86"
health = {query = ".com"}
`,
		want: []string{
			`lbd.toml:7:10: service[0].health.query: check "dns" needs the name to query, e.g. "example.com."`,
			`lbd.toml:12:35: service[1].health.query: is only used by check "dns" (check is "http")`,
			`lbd.toml:16:34: service[2].health.query: "exa mple.com" is not a DNS name such as "example.com." (labels of 1 to 63 letters, digits, '-' or '_'; "." is the root)`,
			`lbd.toml:20:19: service[3].health.query: "a..b" is not a DNS name such as "example.com." (labels of 1 to 63 letters, digits, '-' or '_'; "." is the root)`,
			`lbd.toml:24:19: service[4].health.query: "` + strings.Repeat("a", 64) + `.com" is not a DNS name such as "example.com." (labels of 1 to 63 letters, digits, '-' or '_'; "." is the root)`,
			`lbd.toml:28:19: service[5].health.query: "` + strings.Repeat("abcdefghi.", 25) + `abcd" is not a DNS name such as "example.com." (labels of 1 to 63 letters, digits, '-' or '_'; "." is the root)`,
			`lbd.toml:32:19: service[6].health.query: ".com" is not a DNS name such as "example.com." (labels of 1 to 63 letters, digits, '-' or '_'; "." is the root)`,
		},
	},
	{
		name: "udp services only take dns",
		in: proxyUDP + `[service.health]
check = "tcp"
[[service]]
name = "b"
listen = "127.0.0.1:54"
protocol = "udp"
health = {check = "http"}
[[service]]
name = "c"
listen = "192.0.2.100:53"
protocol = "udp"
mode = "dsr"
interface = "eth0"
health = {check = "https"}
`,
		want: []string{
			`lbd.toml:9:9: service[0].health.check: "tcp" needs protocol "tcp"; a udp service can use check "dns" (or "none")`,
			`lbd.toml:14:19: service[1].health.check: "http" needs protocol "tcp"; a udp service can use check "dns" (or "none")`,
			`lbd.toml:21:19: service[2].health.check: "https" needs protocol "tcp"; a udp service can use check "dns" (or "none")`,
		},
	},
	{
		name: "vip needs dsr and tcp",
		in: proxyTCP + `[service.health]
check = "tcp"
vip = true
[[service]]
name = "b"
listen = "192.0.2.100:53"
protocol = "udp"
mode = "dsr"
interface = "eth0"
[service.health]
check = "dns"
query = "example.com"
vip = true
[[service]]
name = "c"
listen = "127.0.0.1:81"
health = {vip = true}
`,
		want: []string{
			`lbd.toml:9:7: service[0].health.vip: the VIP check sends a TCP SYN to the VIP through a backend's MAC address: it needs mode "dsr" and protocol "tcp"`,
			`lbd.toml:19:7: service[1].health.vip: the VIP check sends a TCP SYN to the VIP through a backend's MAC address: it needs mode "dsr" and protocol "tcp"`,
			`lbd.toml:23:17: service[2].health.vip: the VIP check sends a TCP SYN to the VIP through a backend's MAC address: it needs mode "dsr" and protocol "tcp"`,
		},
	},
	{
		name: "dsr for every port needs a port",
		in: dsrAllPorts + `[service.health]
check = "tcp"
vip = true
[[service]]
name = "b"
listen = "192.0.2.101:0"
protocol = "udp"
mode = "dsr"
interface = "eth0"
health = {check = "dns", query = "."}
`,
		want: []string{
			`lbd.toml:9:10: service[0].health.port: the service forwards every port (listen "192.0.2.100"): give the port to check`,
			`lbd.toml:18:10: service[1].health.port: the service forwards every port (listen "192.0.2.101"): give the port to check`,
		},
	},
	{
		name: "a health table on a service with other errors",
		in: `[[service]]
name = "x"
listen = "192.0.2.100"
mode = "dsr"
interface = "eth0"
[service.health]
check = "http"
port = 0
`,
		// The port error at conversion hides the one Validate finds
		// under the same key.
		want: []string{
			`lbd.toml:8:8: service[0].health.port: 0 must be between 1 and 65535 (leave port out to check the port traffic goes to)`,
		},
	},
}

func TestHealthValidateProgrammatic(t *testing.T) {
	c := minimalConfig()
	c.Services[0].Health.Check = 9
	c.Services[0].Health.Query = "example.com"
	s := NewService("zero", ap("127.0.0.1:81"), TCP)
	s.Health = Health{} // not NewHealth(): invalid ranges
	c.Services = append(c.Services, s)
	want := []string{
		`service[0].health.check: unknown check 9`,
		`service[1].health.interval: 0s must be between 100ms and 1h0m0s`,
		`service[1].health.timeout: 0s must be between 10ms and 1h0m0s`,
		`service[1].health.rise: 0 must be between 1 and 100`,
		`service[1].health.fall: 0 must be between 1 and 100`,
		`service[1].health.path: "" must start with "/"`,
		`service[1].health.expect_status: "0": status codes must be between 100 and 599`,
	}
	var got []string
	for _, e := range splitErrors(Validate(c)) {
		got = append(got, e.Error())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Validate errors (-want +got):\n%s", diff)
	}
	if out, err := Marshal(c); err == nil {
		t.Errorf("Marshal of check 9 succeeded:\n%s", out)
	}
}

func TestHealthMarshal(t *testing.T) {
	c := minimalConfig()
	h := &c.Services[0].Health
	h.Check = CheckHTTP
	h.Interval = 2500 * time.Millisecond
	h.Rise = 5
	h.Port = 8081
	h.Path = "/healthz"
	h.ExpectStatus = StatusRange{204, 204}
	h.StartDown = true
	out := roundTrip(t, c)
	want := `# lbd configuration, written by lbd. Every key is documented in nib's config/reference.toml.

[[service]]
name = 'web'
listen = '127.0.0.1:80'
protocol = 'tcp'

[service.health]
check = 'http'
interval = '2.5s'
rise = 5
port = 8081
path = '/healthz'
expect_status = '204'
start_down = true

[[service.backend]]
address = '10.0.0.1:80'
`
	if diff := cmp.Diff(want, string(out)); diff != "" {
		t.Errorf("Marshal (-want +got):\n%s", diff)
	}

	// Check none with other keys set writes them without check.
	*h = NewHealth()
	h.ExpectStatus = StatusRange{200, 299}
	h.FailClosed = true
	out = roundTrip(t, c)
	if !strings.Contains(string(out), "[service.health]\nexpect_status = '200-299'\nfail_closed = true\n\n") {
		t.Errorf("Marshal:\n%s", out)
	}
}

// TestHealthRoundTripRandom generates valid health tables for every kind of
// service and checks that Marshal and Parse keep them.
func TestHealthRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	services := func() []Service {
		p := NewService("p", ap("127.0.0.1:80"), TCP)
		p.Backends = []Backend{NewBackend(ap("10.0.0.1:80"))}
		u := NewService("u", ap("127.0.0.1:53"), UDP)
		u.Backends = []Backend{NewBackend(ap("10.0.0.1:53"))}
		d := NewDSRService("d", "eth0", ap("192.0.2.100:80"), TCP)
		d.Backends = []Backend{NewBackend(ap("192.0.2.21:0"))}
		a := NewDSRService("a", "eth0", ap("192.0.2.101:0"), TCP)
		du := NewDSRService("du", "eth0", ap("192.0.2.102:0"), UDP)
		return []Service{p, u, d, a, du}
	}
	pick := func(l ...string) string { return l[r.IntN(len(l))] }
	for i := range 200 {
		c := &Config{Services: services()}
		for j := range c.Services {
			s := &c.Services[j]
			h := randomHealth(r, pick, s)
			s.Health = h
		}
		if err := Validate(c); err != nil {
			t.Fatalf("%d: generated an invalid config: %v", i, err)
		}
		roundTrip(t, c)
	}
}

// randomHealth returns a valid Health for s.
func randomHealth(r *rand.Rand, pick func(...string) string, s *Service) Health {
	h := NewHealth()
	checks := []HealthCheck{CheckNone, CheckDNS}
	if s.Protocol == TCP {
		checks = append(checks, CheckTCP, CheckHTTP, CheckHTTPS)
	}
	h.Check = checks[r.IntN(len(checks))]
	coin := func() bool { return r.IntN(2) == 0 }
	if coin() {
		h.Interval = minHealthInterval + time.Duration(r.Int64N(int64(maxHealthInterval-minHealthInterval)+1))
		h.Timeout = minHealthTimeout + time.Duration(r.Int64N(int64(h.Interval-minHealthTimeout)+1))
	}
	if coin() {
		h.Rise, h.Fall = 1+r.IntN(maxHealthCount), 1+r.IntN(maxHealthCount)
	}
	if coin() || (s.Mode == ModeDSR && s.Listen.Port() == 0) {
		h.Port = uint16(1 + r.IntN(65535))
	}
	if h.Check == CheckHTTP || h.Check == CheckHTTPS || h.Check == CheckNone {
		if coin() {
			h.Path = pick("/", "/healthz", "/a?b=c&d=%20", "/"+strings.Repeat("x", 1023))
		}
		if coin() {
			h.Host = pick("", "example.com", "[::1]:8080", strings.Repeat("h", 255))
		}
		if coin() {
			lo := 100 + r.IntN(500)
			h.ExpectStatus = StatusRange{lo, lo + r.IntN(600-lo)}
		}
		if coin() {
			h.ExpectBody = pick("", "OK", "multi\nline \"quoted\" 'single' \\ é\t", strings.Repeat("b", 1024))
		}
	}
	if h.Check == CheckDNS || (h.Check == CheckNone && coin()) {
		h.Query = pick(".", "example.com", "example.com.", "_a-b.c_d.E")
	}
	h.VIP = s.Mode == ModeDSR && s.Protocol == TCP && coin()
	h.FailClosed = coin()
	h.StartDown = coin()
	return h
}

func TestHealthStrings(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{CheckNone.String(), "none"},
		{CheckTCP.String(), "tcp"},
		{CheckHTTP.String(), "http"},
		{CheckHTTPS.String(), "https"},
		{CheckDNS.String(), "dns"},
		{HealthCheck(5).String(), "HealthCheck(5)"},
		{StatusRange{200, 200}.String(), "200"},
		{StatusRange{200, 299}.String(), "200-299"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestHealthClone(t *testing.T) {
	c, err := Parse("in.toml", []byte(healthGoodTests[3].in)) // http, every key
	if err != nil {
		t.Fatal(err)
	}
	n := c.Clone()
	n.Services[0].Health.Path = "/changed"
	n.Services[0].Health.ExpectStatus.Hi = 599
	if h := c.Services[0].Health; h.Path != "/health?x=%20y&z=~" || h.ExpectStatus.Hi != 299 {
		t.Errorf("changing the clone changed the original: %+v", h)
	}
}

func TestValidDNSName(t *testing.T) {
	long := strings.Repeat("a", 63)
	name253 := strings.Join([]string{long, long, long, strings.Repeat("b", 61)}, ".")
	for s, want := range map[string]bool{
		".": true, "a": true, "a.": true, "example.com.": true, "_srv._tcp.x": true, "xn--bcher-kva.ch": true,
		long + ".com": true, name253: true, name253 + ".": true,
		"": false, "..": false, "a..b": false, ".a": false, long + "a.com": false, name253 + "b": false,
		"a b": false, "a*": false, "é.com": false, "a/b": false,
	} {
		if got := validDNSName(s); got != want {
			t.Errorf("validDNSName(%q) = %v, want %v", s, got, want)
		}
	}
}
