package pen

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nib-lb/nib/config"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func backend(addr string, max, hard, weight, prio int) config.Backend {
	b := config.NewBackend(ap(addr))
	b.Max, b.Hard, b.Weight, b.Prio = max, hard, weight, prio
	return b
}

// tempFile writes content to a new file in a test temp dir.
func tempFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseArgs(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "your.domain.key")
	crt := filepath.Join(dir, "your.domain.crt")
	ca := filepath.Join(dir, "intermediate.crt")
	for _, f := range []string{key, crt, ca} {
		if err := os.WriteFile(f, []byte("pem"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	httpsCfg := tempFile(t, "https.cfg", "# seed TLS config\nssl_option cipher_server_preference\n\nacl 1 permit 10.0.0.0 255.0.0.0\nclient_acl 1\n")
	// The seed's jail: /etc/pen.cfg is read inside it, as in Pen.
	jail := t.TempDir()
	os.MkdirAll(filepath.Join(jail, "etc"), 0o755)
	os.WriteFile(filepath.Join(jail, "etc", "pen.cfg"), []byte("acl 0 deny\ncontrol_acl 0\nacl 1 deny 192.0.2.1\nclient_acl 1\nserver 0 address 127.0.0.1 port 88\n"), 0o644)
	orderCfg := tempFile(t, "order.cfg", "tracking 7\nserver 1 port 82\n")

	tcp := func(listen string, bs ...config.Backend) config.Service {
		s := config.NewService("pen", ap(listen), config.TCP)
		s.Backends = bs
		return s
	}
	udp := func(listen string, bs ...config.Backend) config.Service {
		s := config.NewService("pen", ap(listen), config.UDP)
		s.Backends = bs
		return s
	}
	dsr := func(iface, vip string, p config.Protocol, bs ...string) config.Service {
		s := config.NewDSRService("pen", iface, ap(vip), p)
		for _, b := range bs {
			s.Backends = append(s.Backends, config.NewBackend(netip.AddrPortFrom(netip.MustParseAddr(b), 0)))
		}
		return s
	}
	tests := []struct {
		name string
		args []string
		svc  config.Service
		edit func(c *config.Config)
		inv  Invocation
		note string
	}{
		{
			name: "seed dns -dfU",
			args: []string{"-dfU", "53", "10.0.0.1"},
			svc:  udp("0.0.0.0:53", backend("10.0.0.1:53", 0, 0, 0, 0)),
			edit: func(c *config.Config) { c.Debug = 1 },
			inv:  Invocation{Foreground: true},
		},
		{
			name: "seed http -df",
			args: []string{"-df", "80", "10.0.0.1", "10.0.0.2"},
			svc:  tcp("0.0.0.0:80", backend("10.0.0.1:80", 0, 0, 0, 0), backend("10.0.0.2:80", 0, 0, 0, 0)),
			edit: func(c *config.Config) { c.Debug = 1 },
			inv:  Invocation{Foreground: true},
		},
		{
			name: "seed https systemd",
			args: []string{"-u", "pen", "-C", "/var/run/pen/https.ctl", "-F", httpsCfg, "-p", "/var/run/pen/https.pid",
				"-K", key, "-E", crt, "-G", ca, "-S", "2", "443", "10.0.0.1"},
			svc: func() config.Service {
				s := tcp("0.0.0.0:443", backend("10.0.0.1:443", 0, 0, 0, 0))
				s.TLS = config.NewTLS(crt, key)
				s.TLS.Chain = ca // Pen's -G without -R: intermediates, no client certificates
				s.ClientACL = "1"
				return s
			}(),
			edit: func(c *config.Config) {
				c.Control = config.Control{PenListen: "/var/run/pen/https.ctl", PenACL: "0"}
				c.ACLs = map[string]config.ACL{"0": {}, "1": {Rules: []config.Rule{{Action: config.Permit, Prefix: netip.MustParsePrefix("10.0.0.0/8")}}}}
			},
			inv:  Invocation{User: "pen", ConfigFile: httpsCfg, PidFile: "/var/run/pen/https.pid"},
			note: "-S is obsolete",
		},
		{
			name: "seed dns v6 wildcard",
			args: []string{"-S", "2", "-U", ":::53", "10.0.0.1:53"},
			svc:  udp("[::]:53", backend("10.0.0.1:53", 0, 0, 0, 0)),
			note: "-S is obsolete",
		},
		{
			name: "seed chroot",
			args: []string{"-j", jail, "-C", "10080", "-F", "/etc/pen.cfg", "-p", "/tmp/pen.pid", "8080", "10.0.0.1"},
			svc: func() config.Service {
				s := tcp("0.0.0.0:8080", backend("127.0.0.1:88", 0, 0, 0, 0))
				s.ClientACL = "1"
				return s
			}(),
			edit: func(c *config.Config) {
				c.Control = config.Control{PenListen: "127.0.0.1:10080", PenACL: "0"}
				c.ACLs = map[string]config.ACL{
					"0": {Rules: []config.Rule{{Action: config.Deny}}},
					"1": {Rules: []config.Rule{{Action: config.Deny, Prefix: netip.MustParsePrefix("192.0.2.1/32")}}},
				}
			},
			inv: Invocation{Chroot: jail, ConfigFile: "/etc/pen.cfg", PidFile: "/tmp/pen.pid"},
		},
		{
			name: "v6 servers",
			args: []string{"-r", "127.0.0.1:8080", "::1", "[::1]:80:10:20:2:1"},
			svc: func() config.Service {
				s := tcp("127.0.0.1:8080", backend("[::1]:8080", 0, 0, 0, 0), backend("[::1]:80", 10, 20, 2, 1))
				s.Tracking = false
				return s
			}(),
		},
		{
			name: "testsuite 6 emergency",
			args: []string{"-r", "-e", ":102", "10000", ":100", ":101:0:0:101"},
			svc: func() config.Service {
				s := tcp("0.0.0.0:10000", backend("127.0.0.1:100", 0, 0, 0, 0), backend("127.0.0.1:101", 0, 0, 101, 0))
				s.Tracking = false
				s.Emergency = ap("127.0.0.1:102")
				return s
			}(),
		},
		{
			name: "testsuite 7 abuse",
			args: []string{"-B", ":103", "8080", ":100", ":101"},
			svc: func() config.Service {
				s := tcp("0.0.0.0:8080", backend("127.0.0.1:100", 0, 0, 0, 0), backend("127.0.0.1:101", 0, 0, 0, 0))
				s.Abuse = ap("127.0.0.1:103")
				return s
			}(),
		},
		{
			name: "testsuite 4 udp round robin",
			args: []string{"-Ur", "5353", "127.0.0.1:10001", "127.0.0.1:10002"},
			svc: func() config.Service {
				s := udp("0.0.0.0:5353", backend("127.0.0.1:10001", 0, 0, 0, 0), backend("127.0.0.1:10002", 0, 0, 0, 0))
				s.Tracking = false
				return s
			}(),
		},
		{
			name: "testsuite 8 tls",
			args: []string{"-E", crt, "1443", ":100"},
			svc: func() config.Service {
				s := tcp("0.0.0.0:1443", backend("127.0.0.1:100", 0, 0, 0, 0))
				s.TLS = config.NewTLS(crt, "")
				return s
			}(),
		},
		{
			name: "testsuite 9 v6 to v4",
			args: []string{":::10000", "127.0.0.1:100"},
			svc:  tcp("[::]:10000", backend("127.0.0.1:100", 0, 0, 0, 0)),
		},
		{
			name: "v6 loopback listener",
			args: []string{"::1:2222", "127.0.0.1:22"},
			svc:  tcp("[::1]:2222", backend("127.0.0.1:22", 0, 0, 0, 0)),
		},
		{
			name: "testsuite 10 v4 to v6",
			args: []string{"127.0.0.1:10000", "[::1]:100"},
			svc:  tcp("127.0.0.1:10000", backend("[::1]:100", 0, 0, 0, 0)),
		},
		{
			name: "hash with roundrobin hashes the port",
			args: []string{"-hr", "80", "10.0.0.1", "10.0.0.2"},
			svc: func() config.Service {
				s := tcp("0.0.0.0:80", backend("10.0.0.1:80", 0, 0, 0, 0), backend("10.0.0.2:80", 0, 0, 0, 0))
				s.Algorithm, s.Tracking, s.HashPort = config.Hash, false, true
				return s
			}(),
		},
		{
			name: "every value flag, attached and separate",
			args: []string{"-x500", "-c", "100", "-b5", "-t", "7", "-T60", "-q", "10", "-w", "/tmp/w.html", "-l/tmp/pen.log",
				"-WsHX", "-ddddd", "-m", "10", "-P", "-a", "80", "10.0.0.1:8080:5:6:0:2"},
			svc: func() config.Service {
				s := tcp("0.0.0.0:80", backend("10.0.0.1:8080", 5, 6, 0, 2))
				s.MaxConnections, s.TrackingSize = 500, 100
				s.Blacklist, s.ConnectTimeout, s.TrackingExpiry = 5*time.Second, 7*time.Second, time.Minute
				s.Backlog = 50
				s.WebStats, s.Log = "/tmp/w.html", "/tmp/pen.log"
				s.Algorithm, s.Stubborn, s.HTTP = config.Weight, true, true
				return s
			}(),
			edit: func(c *config.Config) { c.Debug = 3; c.Control.AllowExit = true },
			inv:  Invocation{ASCII: true},
			note: "-m (multi_accept) ignored",
		},
		{
			name: "flags after positionals and -o before -F",
			args: []string{"80", "10.0.0.1", "10.0.0.2", "-o", "tracking 5", "-O", "server 1 port 81", "-F", orderCfg},
			svc: func() config.Service {
				s := tcp("0.0.0.0:80", backend("10.0.0.1:80", 0, 0, 0, 0), backend("10.0.0.2:82", 0, 0, 0, 0))
				s.TrackingExpiry = 7 * time.Second
				return s
			}(),
			inv:  Invocation{ConfigFile: orderCfg},
			note: "7",
		},
		{
			name: "-o adds a server",
			args: []string{"-o", "server 2 address 10.0.0.3 port 99 weight 0", "80", "10.0.0.1"},
			svc: func() config.Service {
				s := tcp("0.0.0.0:80", backend("10.0.0.1:80", 0, 0, 0, 0))
				s.Backends = append(s.Backends, backend("0.0.0.0:0", 0, 0, 0, 0), backend("10.0.0.3:99", 0, 0, 0, 0))
				return s
			}(),
		},
		{
			name: "seed dsr tcp",
			args: []string{"-df", "-O", "dsr_if eth0", "-r", "192.0.2.100:80", "192.0.2.21", "192.0.2.22"},
			svc: func() config.Service {
				s := dsr("eth0", "192.0.2.100:80", config.TCP, "192.0.2.21", "192.0.2.22")
				s.Tracking = false
				return s
			}(),
			edit: func(c *config.Config) { c.Debug = 1 },
			inv:  Invocation{Foreground: true},
		},
		{
			name: "seed dsr udp",
			args: []string{"-df", "-U", "-O", "dsr_if eth1", "-r", "192.0.2.100:53", "192.0.2.21", "192.0.2.22"},
			svc: func() config.Service {
				s := dsr("eth1", "192.0.2.100:53", config.UDP, "192.0.2.21", "192.0.2.22")
				s.Tracking = false
				return s
			}(),
			edit: func(c *config.Config) { c.Debug = 1 },
			inv:  Invocation{Foreground: true},
		},
		{
			name: "seed dsr all ports",
			args: []string{"-df", "-O", "poll", "-O", "dsr_if eth1", "-S", "2", "-r", "192.0.2.100", "192.0.2.21", "192.0.2.22"},
			svc: func() config.Service {
				s := dsr("eth1", "192.0.2.100:0", config.TCP, "192.0.2.21", "192.0.2.22")
				s.Tracking = false
				return s
			}(),
			edit: func(c *config.Config) { c.Debug = 1 },
			inv:  Invocation{Foreground: true},
			note: "-S is obsolete",
		},
		{
			name: "seed dsr tarpit (testsuite 14)",
			args: []string{"-df", "-r", "-O", "acl 1 permit 192.0.2.77", "-O", "tarpit_acl 1", "-O", "dsr_if eth1", "192.0.2.100:80", "192.0.2.21", "192.0.2.22"},
			svc: func() config.Service {
				s := dsr("eth1", "192.0.2.100:80", config.TCP, "192.0.2.21", "192.0.2.22")
				s.Tracking = false
				s.TarpitACL = "1"
				return s
			}(),
			edit: func(c *config.Config) {
				c.Debug = 1
				c.ACLs = map[string]config.ACL{"1": {Rules: []config.Rule{{Action: config.Permit, Prefix: netip.MustParsePrefix("192.0.2.77/32")}}}}
			},
			inv:  Invocation{Foreground: true},
			note: "tarpit_acl = 1",
		},
		{
			name: "dsr with tracking, port 0, server fields, ignored flags",
			args: []string{"-hWs", "-x", "1000", "-o", "dsr_if eth0", "-o", "weight", "-o", "hash", "-o", "server 2 address 192.0.2.23 port 99",
				"192.0.2.100:0", "192.0.2.21:80:0:0:3", "[192.0.2.22]::0:0:0:1"},
			svc: func() config.Service {
				s := dsr("eth0", "192.0.2.100:0", config.TCP)
				s.MaxConnections = 1000
				s.Backends = []config.Backend{
					{Address: ap("192.0.2.21:0"), Weight: 3},
					{Address: ap("192.0.2.22:0"), Weight: 0, Prio: 1},
					{Address: ap("192.0.2.23:0"), Weight: 1},
				}
				return s
			}(),
			note: "-h ignored in DSR mode",
		},
		{
			name: "service names for ports",
			args: []string{"127.0.0.1:http", "10.0.0.1:https"},
			svc:  tcp("127.0.0.1:80", backend("10.0.0.1:443", 0, 0, 0, 0)),
		},
		{
			name: "host names are resolved",
			args: []string{"localhost:8080", "localhost:80"},
			svc:  tcp("127.0.0.1:8080", backend("127.0.0.1:80", 0, 0, 0, 0)),
		},
	}
	old := lookupHost
	lookupHost = func(host string) (netip.Addr, error) {
		if host == "localhost" {
			return netip.MustParseAddr("127.0.0.1"), nil
		}
		return old(host)
	}
	t.Cleanup(func() { lookupHost = old })
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inv, err := ParseArgs(tc.args)
			if err != nil {
				t.Fatalf("ParseArgs(%q): %v", tc.args, err)
			}
			want := &config.Config{Services: []config.Service{tc.svc}}
			if tc.edit != nil {
				tc.edit(want)
			}
			if diff := cmp.Diff(want, inv.Config, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
			got := *inv
			got.Config, got.Notices = nil, nil
			if diff := cmp.Diff(tc.inv, got); diff != "" {
				t.Errorf("invocation (-want +got):\n%s", diff)
			}
			if tc.note != "" && !strings.Contains(strings.Join(inv.Notices, "\n"), tc.note) {
				t.Errorf("notices %q lack %q", inv.Notices, tc.note)
			}
			if err := config.Validate(inv.Config); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestParseArgsControl(t *testing.T) {
	for arg, want := range map[string]string{
		"10080":          "127.0.0.1:10080",
		"127.0.0.1:8888": "127.0.0.1:8888",
		"::1:8888":       "[::1]:8888",
		"0.0.0.0:8888":   "0.0.0.0:8888",
		"/run/pen.ctl":   "/run/pen.ctl",
	} {
		inv, err := ParseArgs([]string{"-C", arg, "80", "10.0.0.1"})
		if err != nil {
			t.Errorf("-C %s: %v", arg, err)
			continue
		}
		if got := inv.Config.Control.PenListen; got != want {
			t.Errorf("-C %s: PenListen %q, want %q", arg, got, want)
		}
	}
	wd, _ := os.Getwd()
	inv, err := ParseArgs([]string{"-C", "./x.ctl", "80", "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := inv.Config.Control.PenListen, filepath.Join(wd, "x.ctl"); got != want {
		t.Errorf("-C ./x.ctl: %q, want %q", got, want)
	}
}

func TestParseArgsErrors(t *testing.T) {
	noServers := tempFile(t, "empty.cfg", "# nothing\n")
	badCfg := tempFile(t, "bad.cfg", "tracking 5\nserver x\n")
	dsrCfg := tempFile(t, "dsr.cfg", "dsr_if eth0\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing listen port"},
		{[]string{"-N", "80", "10.0.0.1"}, "-N is not implemented"},
		{[]string{"-i", "pen", "80", "10.0.0.1"}, "Windows only"},
		{[]string{"-A", "/etc/ssl/certs", "80", "10.0.0.1"}, "-A"},
		{[]string{"-O", "dsr_if eth0", "-r", "192.0.2.1"}, "no servers"},
		{[]string{"-O", "dsr_if eth0", "-r"}, "missing VIP"},
		{[]string{"-r", "-O", "acl 1 permit", "-O", "tarpit_acl 1", "-O", "dsr_if eth1", "192.0.2.100:80", "192.0.2.21"},
			`acl.1[0]: "permit any" in tarpit ACL "1" matches every address: lbd would answer ARP for the whole LAN; permit /16 or narrower`},
		{[]string{"-O", "acl 1 deny 192.0.2.78", "-O", "tarpit_acl 1", "-O", "dsr_if eth1", "192.0.2.100:80", "192.0.2.21"}, "must end with a permit rule"},
		{[]string{"-O", "acl 1 permit 10.0.0.0 255.0.0.0", "-O", "tarpit_acl 1", "-O", "dsr_if eth1", "192.0.2.100:80", "192.0.2.21"}, "too broad"},
		{[]string{"-O", "tarpit_acl 1", "-O", "dsr_if eth1", "192.0.2.100:80", "192.0.2.21"}, "an empty tarpit ACL matches every address"},
		{[]string{"-O", "acl 2 permit 192.0.2.0 255.255.255.0", "-O", "tarpit_acl 2", "-O", "dsr_if eth1", "192.0.2.100:80", "192.0.2.21"}, "the VIP of service[0]"},
		{[]string{"-U", "-O", "acl 1 permit 192.0.2.77", "-O", "tarpit_acl 1", "-O", "dsr_if eth1", "192.0.2.100:53", "192.0.2.21"}, "cannot be used with -U"},
		{[]string{"-O", "acl 1 permit 192.0.2.77", "-O", "tarpit_acl 1", "80", "10.0.0.1"}, "the tarpit needs DSR mode"},
		{[]string{"-O", "dsr_if eth0", "80", "192.0.2.21"}, "not a bare port"},
		{[]string{"-O", "dsr_if eth0", ":80", "192.0.2.21"}, "not a bare port"},
		{[]string{"-O", "dsr_if eth0", "/tmp/sock", "192.0.2.21"}, "Unix sockets"},
		{[]string{"-O", "dsr_if eth0", "192.0.2.100:99999", "192.0.2.21"}, "bad port"},
		{[]string{"-O", "dsr_if eth0", "-O", "dsr_if eth1", "192.0.2.100:80", "192.0.2.21"}, "two interfaces"},
		{[]string{"-O", "dsr_if", "192.0.2.100:80", "192.0.2.21"}, "dsr_if: missing interface name"},
		{[]string{"-O", "dsr_if eth0/1", "192.0.2.100:80", "192.0.2.21"}, "not a Linux interface name"},
		{[]string{"-O", "dsr_if eth0", "::1:80", "192.0.2.21"}, "IPv6 VIPs are not supported yet"},
		{[]string{"-O", "dsr_if eth0", "192.0.2.100:80", "[2001:db8::21]"}, "IPv6 backends are not supported yet"},
		{[]string{"-O", "dsr_if eth0", "192.0.2.100:80", "192.0.2.21", "192.0.2.21:81"}, "already backend[0]"},
		{[]string{"-O", "dsr_if eth0", "192.0.2.100:80", "192.0.2.21:80:5"}, "DSR keeps no connection counts"},
		{[]string{"-O", "dsr_if eth0", "192.0.2.100:80", "192.0.2.21:80:0:0:0:0:0"}, "too many fields"},
		{[]string{"-O", "dsr_if eth0", "-e", "192.0.2.9", "192.0.2.100:80", "192.0.2.21"}, "-e cannot be used with dsr_if"},
		{[]string{"-O", "dsr_if eth0", "-B", "192.0.2.9", "192.0.2.100:80", "192.0.2.21"}, "-B cannot be used with dsr_if"},
		{[]string{"-O", "dsr_if eth0", "-H", "192.0.2.100:80", "192.0.2.21"}, "-H cannot be used with dsr_if"},
		{[]string{"-O", "dsr_if eth0", "-E", "/nonexistent/crt", "192.0.2.100:80", "192.0.2.21"}, "-E cannot be used with dsr_if"},
		{[]string{"-O", "dsr_if eth0", "-O", "source 192.0.2.1", "192.0.2.100:80", "192.0.2.21"}, `service[0].source: not allowed with mode "dsr"`},
		{[]string{"-F", dsrCfg, "192.0.2.100:80", "192.0.2.21"}, "give it with -o/-O on the command line"},
		{[]string{"-y", "80", "10.0.0.1"}, "unknown option -y"},
		{[]string{"80", "10.0.0.1", "-x"}, "option -x requires an argument"},
		{[]string{"-x", "many", "80", "10.0.0.1"}, "-x: bad number"},
		{[]string{"-K", "/k", "80", "10.0.0.1"}, "-K needs -E"},
		{[]string{"-E", "/nonexistent/crt", "80", "10.0.0.1"}, "-E"},
		{[]string{"80"}, "no servers"},
		{[]string{"-F", noServers, "80"}, "no servers"},
		{[]string{"-F", badCfg, "80", "10.0.0.1"}, badCfg + ":2: server"},
		{[]string{"-F", "/nonexistent/pen.cfg", "80", "10.0.0.1"}, "/nonexistent/pen.cfg"},
		{[]string{"/tmp/pen.sock", "10.0.0.1"}, "Unix socket"},
		{[]string{"80", "/tmp/backend.sock"}, "Unix sockets"},
		{[]string{"-l", "10.0.0.5:5000", "80", "10.0.0.1"}, "penlogd"},
		{[]string{"80", "10.0.0.1:99999"}, "bad port"},
		{[]string{"0", "10.0.0.1"}, "bad port"},
		{[]string{"80", "10.0.0.1:80:1:2:3:4:5"}, "too many fields"},
		{[]string{"80", "10.0.0.1:80:x"}, "max: bad number"},
		{[]string{"80", "[::1"}, "missing ]"},
		{[]string{"80", "10.0.0.1", "10.0.0.1"}, "already"},
		{[]string{"-C", ":10080", "80", "10.0.0.1"}, "-C"},
		{[]string{"-o", "bogus", "-o", "server 0 port x", "80", "10.0.0.1"}, "server 0 port x"},
		{[]string{"-U", "-o", "http", "53", "10.0.0.1"}, "HTTP"},
	} {
		_, err := ParseArgs(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseArgs(%q) = %v, want error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestUsage(t *testing.T) {
	var b bytes.Buffer
	Usage(&b)
	for _, f := range strings.Split("-b -B -c -C -d -e -f -F -h -H -j -l -o -p -q -r -s -t -T -u -U -w -W -x -X -E -K -G -R", " ") {
		if !strings.Contains(b.String(), "  "+f+" ") {
			t.Errorf("usage lacks %s", f)
		}
	}
}

func TestPrintTOML(t *testing.T) {
	var b bytes.Buffer
	if err := PrintTOML([]string{"-df", "-r", "80", "10.0.0.1", "10.0.0.2:81:0:0:3"}, &b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.HasPrefix(out, "# Generated from a Pen command line; not in this file: -f\n") {
		t.Errorf("no leading comment:\n%s", out)
	}
	c, err := config.Parse("print.toml", b.Bytes())
	if err != nil {
		t.Fatalf("output does not parse back: %v\n%s", err, out)
	}
	inv, _ := ParseArgs([]string{"-df", "-r", "80", "10.0.0.1", "10.0.0.2:81:0:0:3"})
	if diff := cmp.Diff(inv.Config, c, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("TOML round trip (-want +got):\n%s", diff)
	}
	if err := PrintTOML([]string{"-N"}, &b); err == nil {
		t.Error("PrintTOML -N: no error")
	}
}

// TestPrintTOMLDSR checks that the DSR seed command lines print TOML that
// parses back to the same config.
func TestPrintTOMLDSR(t *testing.T) {
	for _, line := range []string{
		`-df -O dsr_if\x20eth0 -r 192.0.2.100:80 192.0.2.21 192.0.2.22`,
		`-df -U -O dsr_if\x20eth1 -r 192.0.2.100:53 192.0.2.21 192.0.2.22`,
		`-df -O poll -O dsr_if\x20eth1 -S 2 -r 192.0.2.100 192.0.2.21 192.0.2.22`,
		`-df -r -O acl\x201\x20permit\x20192.0.2.77 -O tarpit_acl\x201 -O dsr_if\x20eth1 192.0.2.100:80 192.0.2.21 192.0.2.22`,
	} {
		args := strings.Fields(line)
		for i := range args {
			args[i] = strings.ReplaceAll(args[i], `\x20`, " ")
		}
		var b bytes.Buffer
		if err := PrintTOML(args, &b); err != nil {
			t.Errorf("PrintTOML(%q): %v", args, err)
			continue
		}
		c, err := config.Parse("print.toml", b.Bytes())
		if err != nil {
			t.Errorf("%q: output does not parse back: %v\n%s", args, err, b.String())
			continue
		}
		inv, _ := ParseArgs(args)
		if diff := cmp.Diff(inv.Config, c, cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})); diff != "" {
			t.Errorf("%q: TOML round trip (-want +got):\n%s", args, diff)
		}
		if !strings.Contains(b.String(), "mode = 'dsr'\n") {
			t.Errorf("%q: no DSR service:\n%s", args, b.String())
		}
		t.Logf("%s:\n%s", line, b.String())
	}
}

// FuzzParseArgs feeds arbitrary Pen command lines to ParseArgs: it must
// never panic, and whatever it accepts must be a valid config that survives
// a TOML round trip.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"-df -r 80 10.0.0.1 10.0.0.2",
		"-dfU 53 10.0.0.1",
		"-S 2 -U :::53 10.0.0.1:53",
		"-r -e :102 10000 :100 :101:0:0:101",
		"-x500 -t 5 -b 10 -T 60 -c 100 -W 127.0.0.1:8080 [::1]:80:10:20:2:1",
		"-h -r -s -H -X -C 10080 8080 127.0.0.1",
		"-o server\x000\x00address\x00127.0.0.2 -O roundrobin 80 127.0.0.1",
		"-B 127.0.0.1:9 -e 127.0.0.1:8 ::1:2222 ::1",
		"-df -O dsr_if\x00eth0 -r 192.0.2.100:80 192.0.2.21 192.0.2.22",
		"-df -U -O dsr_if\x00eth1 -r 192.0.2.100:53 192.0.2.21 192.0.2.22",
		"-df -O poll -O dsr_if\x00eth1 -S 2 -r 192.0.2.100 192.0.2.21 192.0.2.22",
		"-df -r -O acl\x001\x00permit\x00192.0.2.77 -O tarpit_acl\x001 -O dsr_if\x00eth1 192.0.2.100:80 192.0.2.21 192.0.2.22",
		"-O acl\x001\x00permit -O tarpit_acl\x001 -O dsr_if\x00eth1 192.0.2.100:80 192.0.2.21:80:0:0:3",
	} {
		f.Add(s)
	}
	saved := lookupHost
	lookupHost = func(host string) (netip.Addr, error) { return netip.Addr{}, errors.New("no DNS in fuzzing") }
	defer func() { lookupHost = saved }()
	f.Fuzz(func(t *testing.T, s string) {
		if strings.Contains(s, "/") || len(s) > 512 {
			t.Skip() // no file access from fuzzed arguments
		}
		args := strings.Fields(s)
		for i, a := range args {
			args[i] = strings.ReplaceAll(a, "\x00", " ") // NUL joins words of one argument
		}
		inv, err := ParseArgs(args)
		if err != nil {
			return
		}
		if err := config.Validate(inv.Config); err != nil {
			t.Fatalf("ParseArgs(%q) accepted an invalid config: %v", args, err)
		}
		b, err := config.Marshal(inv.Config)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		back, err := config.Parse("fuzz", b)
		if err != nil {
			t.Fatalf("round trip of %q: %v\n%s", args, err, b)
		}
		if !cmp.Equal(back, inv.Config, cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})) {
			t.Fatalf("round trip of %q changed the config:\n%s", args, cmp.Diff(inv.Config, back, cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})))
		}
	})
}
