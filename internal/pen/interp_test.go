package pen

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/config"
)

// fakeRT is a Runtime with fixed statistics that records calls.
type fakeRT struct {
	servers     []ServerStat
	clients     []ClientStat
	blacklisted []string
	within      time.Duration
	exited      bool
	failBL      bool
}

func (f *fakeRT) ServerStats(string) []ServerStat { return f.servers }
func (f *fakeRT) Recent(_ string, within time.Duration) []ClientStat {
	f.within = within
	return f.clients
}
func (f *fakeRT) Blacklist(svc string, server int, d time.Duration) error {
	if f.failBL {
		return errors.New("no such server")
	}
	f.blacklisted = append(f.blacklisted, svc+" "+strconv.Itoa(server)+" "+d.String())
	return nil
}
func (f *fakeRT) StatusHTML(_ string, w io.Writer) error {
	_, err := io.WriteString(w, "<html>\n<head>\n<title>Pen status page</title>\n")
	return err
}
func (f *fakeRT) Pid() int    { return 4242 }
func (f *fakeRT) Exit() error { f.exited = true; return nil }

// newInterp returns an interpreter for Pen's observed test instance:
// 127.0.0.1:18080 :18100 :18101:10:20:2:1, with weight 0 on server 0 as Pen
// has it.
func newInterp(t testing.TB, args ...string) *Interp {
	t.Helper()
	if len(args) == 0 {
		args = []string{"-C", "127.0.0.1:18888", "127.0.0.1:18080", ":18100:0:0:0", ":18101:10:20:2:1"}
	}
	inv, err := ParseArgs(args)
	if err != nil {
		t.Fatal(err)
	}
	return &Interp{Cfg: inv.Config, ControlAddr: inv.Config.Control.PenListen}
}

func run(t *testing.T, in *Interp, line string) string {
	t.Helper()
	var b bytes.Buffer
	if _, err := in.Exec(line, &b); err != nil {
		t.Fatalf("Exec(%q): %v", line, err)
	}
	return b.String()
}

func TestQueryVerbs(t *testing.T) {
	in := newInterp(t)
	rt := &fakeRT{
		servers: []ServerStat{{Conns: 0}, {Conns: 3, Sent: 237, Recv: 564}},
		clients: []ClientStat{{Addr: netip.MustParseAddr("127.0.0.1"), Connects: 3, Sent: 564, Recv: 237}},
	}
	for _, tc := range []struct{ line, want string }{
		{"mode", "no hash no roundrobin no stubborn no weight no prio\n"},
		{"servers", "0 addr 127.0.0.1 port 18100 conn 0 max 0 hard 0 weight 0 prio 0 sx 0 rx 0\n" +
			"1 addr 127.0.0.1 port 18101 conn 0 max 10 hard 20 weight 2 prio 1 sx 0 rx 0\n"},
		{"blacklist", "30\n"},
		{"timeout", "3\n"},
		{"tracking", "0\n"},
		{"clients_max", "2048\n"},
		{"conn_max", "4096\n"},
		{"debug", "0\n"},
		{"control", "127.0.0.1:18888\n"},
		{"listen", "127.0.0.1:18080\n"},
		{"client_acl", "0\n"},
		{"control_acl", "0\n"},
		{"idle_timeout", "Idle timeout: 0 seconds\n"},
		{"tarpit_acl", "tarpit_acl = -1"},
		{"log", ""},
		{"web_stats", ""},
		{"status", "Unable to create webstats\n"},
		{"recent", ""},
		{"exit", "Exit is not enabled; restart with -X flag\n"},
		{"idlers", "Idlers: 0/0\n"},
		{"tcp_fastclose", "do_cmd: ignoring tcp_fastclose without argument\n"},
		{"bogus", "do_cmd: ignoring command starting with 'bogus'\n"},
		{"bogus with args", "do_cmd: ignoring command starting with 'bogus'\n"},
		{"block", "do_cmd: ignoring command starting with 'block'\n"},
		{"no bogus", ""},
		{"", ""},
		{"   \t ", ""},
		{"# servers", ""},
		{"mode\nservers", "no hash no roundrobin no stubborn no weight no prio\n"},
		{"mode\r\n", "no hash no roundrobin no stubborn no weight no prio\n"},
		{"\tmode  ", "no hash no roundrobin no stubborn no weight no prio\n"},
		{"service pen mode", "no hash no roundrobin no stubborn no weight no prio\n"},
		{"service", "pen\n"},
	} {
		if got := run(t, in, tc.line); got != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.line, got, tc.want)
		}
	}
	if got, want := run(t, in, "pid"), strconv.Itoa(os.Getpid())+"\n"; got != want {
		t.Errorf("pid without runtime = %q, want %q", got, want)
	}

	in.RT = rt
	for _, tc := range []struct{ line, want string }{
		{"servers", "0 addr 127.0.0.1 port 18100 conn 0 max 0 hard 0 weight 0 prio 0 sx 0 rx 0\n" +
			"1 addr 127.0.0.1 port 18101 conn 3 max 10 hard 20 weight 2 prio 1 sx 237 rx 564\n"},
		{"recent", "127.0.0.1 connects 3 sx 564 rx 237\n"},
		{"pid", "4242\n"},
	} {
		if got := run(t, in, tc.line); got != tc.want {
			t.Errorf("%q with runtime:\n got %q\nwant %q", tc.line, got, tc.want)
		}
	}
	if rt.within != 300*time.Second {
		t.Errorf("recent asked for %v, want 5m", rt.within)
	}
	run(t, in, "recent 10")
	if rt.within != 10*time.Second {
		t.Errorf("recent 10 asked for %v", rt.within)
	}
}

func TestModeAndAlgorithms(t *testing.T) {
	in := newInterp(t)
	for _, tc := range []struct {
		line, mode string
		alg        config.Algorithm
	}{
		{"hash", "hash no roundrobin no stubborn no weight no prio\n", config.Hash},
		{"weight", "no hash no roundrobin no stubborn weight no prio\n", config.Weight},
		{"hash", "no hash no roundrobin no stubborn weight no prio\n", config.Weight}, // weight wins over hash
		{"prio", "no hash no roundrobin no stubborn no weight prio\n", config.Prio},
		{"weight", "no hash no roundrobin no stubborn no weight prio\n", config.Prio}, // prio wins
		{"no weight", "no hash no roundrobin no stubborn no weight prio\n", config.Prio},
		{"no prio", "no hash no roundrobin no stubborn no weight no prio\n", config.RoundRobin},
		{"roundrobin", "no hash roundrobin no stubborn no weight no prio\n", config.RoundRobin},
		{"stubborn", "no hash roundrobin stubborn no weight no prio\n", config.RoundRobin},
		{"hash", "hash roundrobin stubborn no weight no prio\n", config.Hash},
		{"no stubborn", "hash roundrobin no stubborn no weight no prio\n", config.Hash},
		{"no roundrobin", "hash no roundrobin no stubborn no weight no prio\n", config.Hash},
		{"no hash", "no hash no roundrobin no stubborn no weight no prio\n", config.RoundRobin},
	} {
		run(t, in, tc.line)
		s := in.Cfg.Services[0]
		if got := run(t, in, "mode"); got != tc.mode || s.Algorithm != tc.alg {
			t.Errorf("after %q: mode %q algorithm %v, want %q %v", tc.line, got, s.Algorithm, tc.mode, tc.alg)
		}
		if want := s.Algorithm == config.Hash && !s.Tracking; s.HashPort != want {
			t.Errorf("after %q: HashPort %v, want %v", tc.line, s.HashPort, want)
		}
	}
}

func TestConfigVerbs(t *testing.T) {
	in := newInterp(t)
	in.Startup = true
	for _, tc := range []struct {
		line, out string
		check     func(c *config.Config) bool
	}{
		{"tracking 60", "60\n", func(c *config.Config) bool { return c.Services[0].TrackingExpiry == time.Minute }},
		{"clients_max 100", "100\n", func(c *config.Config) bool { return c.Services[0].TrackingSize == 100 }},
		{"conn_max 500", "500\n", func(c *config.Config) bool { return c.Services[0].MaxConnections == 500 }},
		{"blacklist 12", "12\n", func(c *config.Config) bool { return c.Services[0].Blacklist == 12*time.Second }},
		{"timeout 7", "7\n", func(c *config.Config) bool { return c.Services[0].ConnectTimeout == 7*time.Second }},
		{"idle_timeout 9", "Idle timeout: 9 seconds\n", func(c *config.Config) bool { return c.Services[0].IdleTimeout == 9*time.Second }},
		{"debug 2", "2\n", func(c *config.Config) bool { return c.Debug == 2 }},
		{"http", "", func(c *config.Config) bool { return c.Services[0].HTTP }},
		{"no http", "", func(c *config.Config) bool { return !c.Services[0].HTTP }},
		{"tcp_nodelay", "", func(c *config.Config) bool { return c.Services[0].NoDelay }},
		{"keepalive", "", func(c *config.Config) bool { return c.Services[0].KeepAlive }},
		{"no keepalive", "", func(c *config.Config) bool { return !c.Services[0].KeepAlive }},
		{"source 127.0.0.2", "", func(c *config.Config) bool { return c.Services[0].Source == netip.MustParseAddr("127.0.0.2") }},
		{"source", "127.0.0.2\n", nil},
		{"log /tmp/pen.log", "/tmp/pen.log\n", func(c *config.Config) bool { return c.Services[0].Log == "/tmp/pen.log" }},
		{"no log", "", func(c *config.Config) bool { return c.Services[0].Log == "" }},
		{"web_stats /tmp/w.html", "/tmp/w.html\n", func(c *config.Config) bool { return c.Services[0].WebStats == "/tmp/w.html" }},
		{"acl 1 permit 127.0.0.1", "", func(c *config.Config) bool {
			return reflect.DeepEqual(c.ACLs["1"].Rules, []config.Rule{{Action: config.Permit, Prefix: netip.MustParsePrefix("127.0.0.1/32")}})
		}},
		{"acl 1 deny 10.0.0.0 255.0.0.0", "", func(c *config.Config) bool {
			return len(c.ACLs["1"].Rules) == 2 && c.ACLs["1"].Rules[1].Prefix == netip.MustParsePrefix("10.0.0.0/8")
		}},
		{"acl 2 permit ::1", "", func(c *config.Config) bool { return c.ACLs["2"].Rules[0].Prefix == netip.MustParsePrefix("::1/128") }},
		{"acl 2 deny", "", func(c *config.Config) bool { return !c.ACLs["2"].Rules[1].Prefix.IsValid() }},
		{"client_acl 1", "1\n", func(c *config.Config) bool { return c.Services[0].ClientACL == "1" }},
		{"control_acl 2", "2\n", func(c *config.Config) bool { return c.Control.PenACL == "2" }},
		{"no acl 2", "", func(c *config.Config) bool { _, ok := c.ACLs["2"]; return ok && len(c.ACLs["2"].Rules) == 0 }},
		{"no acl 3", "", func(c *config.Config) bool { _, ok := c.ACLs["3"]; return !ok }},
		{"client_acl 0", "0\n", func(c *config.Config) bool { return c.Services[0].ClientACL == "" }},
		{"server 0 acl 1", "", func(c *config.Config) bool { return c.Services[0].Backends[0].ACL == "1" }},
		{"server 0 acl 0 weight 5 prio 2 max 7 hard 9", "", func(c *config.Config) bool {
			b := c.Services[0].Backends[0]
			return b.ACL == "" && b.Weight == 5 && b.Prio == 2 && b.Max == 7 && b.Hard == 9
		}},
		{"server 1 address 127.0.0.2 port 81", "", func(c *config.Config) bool {
			return c.Services[0].Backends[1].Address == netip.MustParseAddrPort("127.0.0.2:81")
		}},
		{"server 3 address 10.0.0.3", "", func(c *config.Config) bool {
			bs := c.Services[0].Backends
			return len(bs) == 4 && !bs[2].Used() && bs[3].Address == netip.MustParseAddrPort("10.0.0.3:18080")
		}},
		{"server 4 port 80 address ::1", "", func(c *config.Config) bool {
			return c.Services[0].Backends[4].Address == netip.MustParseAddrPort("[::1]:80")
		}},
		{"server 3 address 0.0.0.0", "", func(c *config.Config) bool {
			return !c.Services[0].Backends[3].Used() && c.Services[0].Backends[3].Address == netip.MustParseAddrPort("0.0.0.0:0")
		}},
		{"tcp_fastclose off", "", nil},
		{"poll", "", nil},
		{"no ascii", "", nil},
		{"idlers 5", "Idlers: 0/0\n", nil},
		{"listen", "127.0.0.1:18080\n", nil},
		{"no source", "", func(c *config.Config) bool { return !c.Services[0].Source.IsValid() }},
	} {
		got := run(t, in, tc.line)
		if got != tc.out {
			t.Errorf("%q printed %q, want %q", tc.line, got, tc.out)
		}
		if tc.check != nil && !tc.check(in.Cfg) {
			t.Errorf("%q: config not as expected: %+v", tc.line, in.Cfg.Services[0])
		}
	}
	if got := run(t, in, "servers"); !strings.Contains(got, "2 addr 0.0.0.0 port 0 conn 0 max 0 hard 0 weight 0 prio 0 sx 0 rx 0\n") ||
		!strings.Contains(got, "4 addr ::1 port 80 ") {
		t.Errorf("servers:\n%s", got)
	}
	if err := config.Validate(in.Cfg); err != nil {
		t.Errorf("config after verbs is invalid: %v", err)
	}
}

func TestChanged(t *testing.T) {
	in := newInterp(t)
	for _, tc := range []struct {
		line    string
		changed bool
	}{
		{"servers", false}, {"mode", false}, {"tracking", false}, {"tracking 0", false},
		{"tracking 5", true}, {"hash", true}, {"hash", false}, {"server 0 weight 0", false},
		{"server 0 weight 3", true}, {"bogus", false}, {"acl 1 permit", true},
	} {
		changed, err := in.Exec(tc.line, io.Discard)
		if err != nil || changed != tc.changed {
			t.Errorf("Exec(%q) = %v, %v; want changed %v", tc.line, changed, err, tc.changed)
		}
	}
}

func TestExecErrorsLeaveConfig(t *testing.T) {
	in := newInterp(t)
	for _, line := range []string{
		"server", "server x", "server -1 port 3", "server 99999", "server 1 port", "server 1 port abc",
		"server 1 weight 3 port", "server 1 max -1", "server 5 weight 2 frob 1", "server 1 address no.such.host.invalid",
		"server 1 blacklist 30", // no runtime
		"tracking abc", "tracking -1", "timeout 0", "clients_max 0", "debug 9", "blacklist x",
		"acl", "acl 1", "acl 1 foo", "acl 12 permit", "acl 1 permit 10.0.0.0 255.0.255.0",
		"acl 1 permit 300.1.1.1", "acl 1 deny country SE", "acl 1 permit ::1/129",
		"client_acl 10", "control_acl x", "server 0 acl 10", "no acl", "no acl 11",
		"tarpit_acl 1", "source bad", "listen 127.0.0.1:9999", "include /etc/passwd",
		"write", "write /tmp/x.cfg", "log /tmp/evil", "web_stats /etc/passwd", "log 10.0.0.1:514",
		"exit", "peek", "dummy", "transparent", "dsr_if eth0", "ssl_ciphers HIGH", "ssl_option no_sslv3",
		"tcp_fastclose both", "tcp_fastclose sideways", "connection 0", "close 1", "socket 5",
		"service nosuch mode", "idlers x",
	} {
		before := in.Cfg.Clone()
		if line == "exit" {
			in.Cfg.Control.AllowExit = true
			before = in.Cfg.Clone()
		}
		var out bytes.Buffer
		changed, err := in.Exec(line, &out)
		if err == nil {
			t.Errorf("Exec(%q): no error (out %q)", line, out.String())
		}
		if changed || out.Len() != 0 {
			t.Errorf("Exec(%q): changed %v, wrote %q", line, changed, out.String())
		}
		if !reflect.DeepEqual(before, in.Cfg) {
			t.Errorf("Exec(%q) changed the config", line)
		}
		in.Cfg.Control.AllowExit = false
	}
}

func TestValidateRefuses(t *testing.T) {
	in := newInterp(t)
	in.Validate = true
	before := in.Cfg.Clone()
	for _, line := range []string{
		"server 1 address 127.0.0.1 port 18100", // duplicate backend
		"server 0 max 10 hard 5",
	} {
		if _, err := in.Exec(line, io.Discard); err == nil || !strings.Contains(err.Error(), "invalid") {
			t.Errorf("Exec(%q) = %v, want refusal", line, err)
		}
	}
	if !reflect.DeepEqual(before, in.Cfg) {
		t.Error("refused commands changed the config")
	}
	if _, err := in.Exec("server 2", io.Discard); err != nil {
		t.Errorf("creating an unused slot: %v", err)
	}
}

func TestRuntimeVerbs(t *testing.T) {
	in := newInterp(t)
	rt := &fakeRT{}
	in.RT = rt
	run(t, in, "server 1 blacklist 30 weight 4")
	run(t, in, "server 0 blacklist 0")
	if want := []string{"pen 1 30s", "pen 0 0s"}; !reflect.DeepEqual(rt.blacklisted, want) {
		t.Errorf("blacklisted %q, want %q", rt.blacklisted, want)
	}
	if in.Cfg.Services[0].Backends[1].Weight != 4 {
		t.Error("weight not set with blacklist")
	}
	rt.failBL = true
	before := in.Cfg.Clone()
	if _, err := in.Exec("server 1 weight 9 blacklist 5", io.Discard); err == nil {
		t.Error("failed blacklist: no error")
	}
	if !reflect.DeepEqual(before, in.Cfg) {
		t.Error("failed blacklist changed the config")
	}

	if got := run(t, in, "exit"); got != exitDisabled || rt.exited {
		t.Errorf("exit without -X: %q exited %v", got, rt.exited)
	}
	in.Cfg.Control.AllowExit = true
	if got := run(t, in, "exit"); got != "" || !rt.exited {
		t.Errorf("exit with -X: %q exited %v", got, rt.exited)
	}

	ws := filepath.Join(t.TempDir(), "web.html")
	in.Cfg.Services[0].WebStats = ws
	got := run(t, in, "status")
	if !strings.HasPrefix(got, "<html>\n<head>\n<title>Pen status page</title>") {
		t.Errorf("status = %q", got)
	}
	if b, err := os.ReadFile(ws); err != nil || string(b) != got {
		t.Errorf("status file: %q, %v", b, err)
	}
}

func TestServicePrefix(t *testing.T) {
	in := newInterp(t)
	s2 := config.NewService("web", netip.MustParseAddrPort("127.0.0.1:9090"), config.TCP)
	s2.Backends = []config.Backend{config.NewBackend(netip.MustParseAddrPort("127.0.0.1:9091"))}
	in.Cfg.Services = append(in.Cfg.Services, s2)
	run(t, in, "service web server 0 weight 7")
	run(t, in, "service web roundrobin")
	if got := in.Cfg.Services[1]; got.Backends[0].Weight != 7 || got.Tracking {
		t.Errorf("service web: %+v", got)
	}
	if in.Cfg.Services[0].Backends[0].Weight != 0 || !in.Cfg.Services[0].Tracking {
		t.Error("service pen was changed")
	}
	if got := run(t, in, "service web listen"); got != "127.0.0.1:9090\n" {
		t.Errorf("service web listen = %q", got)
	}
	in.Service = 1
	if got := run(t, in, "service"); got != "web\n" {
		t.Errorf("service = %q", got)
	}
}

func TestStartupOnlyVerbs(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "inc.cfg")
	if err := os.WriteFile(inc, []byte("tracking 9\n# comment\n\nhash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := newInterp(t)
	in.Startup = true
	run(t, in, "include "+inc)
	if s := in.Cfg.Services[0]; s.TrackingExpiry != 9*time.Second || s.Algorithm != config.Hash {
		t.Errorf("include not applied: %+v", s)
	}
	if got := run(t, in, "listen ::1:9999"); got != "::1:9999\n" {
		t.Errorf("listen = %q", got)
	}
	loop := filepath.Join(dir, "loop.cfg")
	os.WriteFile(loop, []byte("include "+loop+"\n"), 0o600)
	if _, err := in.Exec("include "+loop, io.Discard); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
		t.Errorf("include loop: %v", err)
	}
}

// TestControlRefusesPaths checks the one permission gate: from the control
// socket (Startup false) every verb that names a file or directory, or sets
// the listener, is refused before its handler runs, with Pen-style text and
// nothing read, written or changed; from the startup configuration the same
// lines work.
func TestControlRefusesPaths(t *testing.T) {
	dir := t.TempDir()
	inc := filepath.Join(dir, "inc.cfg")
	if err := os.WriteFile(inc, []byte("tracking 9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "pen.cfg")
	args := []string{"-C", "127.0.0.1:18888", "-E", filepath.Join(dir, "cert.pem"), "127.0.0.1:18080", ":18100"}
	lines := []string{
		"include " + inc,
		"log " + filepath.Join(dir, "log"),
		"web_stats " + filepath.Join(dir, "status.html"),
		"write " + filepath.Join(dir, "out.cfg"),
		"write " + cfgFile,
		"ssl_ocsp_response /etc/passwd",
		"ssl_sni_path /etc",
		"listen 127.0.0.1:9999",
		"service pen ssl_ocsp_response /etc/shadow",
	}
	covered := map[string]bool{"dsr_if": true} // TestDSRVerbs
	ctl := newInterp(t, args...)
	ctl.ConfigFile = cfgFile
	for _, line := range append(lines, "write .", "include /dev/zero") {
		before := ctl.Cfg.Clone()
		var out bytes.Buffer
		changed, err := ctl.Exec(line, &out)
		if err == nil || !strings.Contains(err.Error(), "refused over the control socket") {
			t.Errorf("control %q: %v, want a refusal", line, err)
		}
		if changed || out.Len() != 0 || !reflect.DeepEqual(before, ctl.Cfg) {
			t.Errorf("control %q: changed %v, wrote %q", line, changed, out.String())
		}
		covered[tokens(line)[0]] = true
	}
	for _, v := range verbTable {
		if (v.namesPath || v.startupOnly) && !covered[v.name] {
			t.Errorf("startup-only verb %s is not tested", v.name)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("control commands created files: %v", ents)
	}
	// Without an argument they only show the value, also over control.
	for _, line := range []string{"log", "web_stats", "listen"} {
		if _, err := ctl.Exec(line, io.Discard); err != nil {
			t.Errorf("control %q: %v", line, err)
		}
	}

	in := newInterp(t, args...)
	in.Startup = true
	in.ConfigFile = cfgFile
	for _, line := range lines {
		if _, err := in.Exec(line, io.Discard); err != nil {
			t.Errorf("startup %q: %v", line, err)
		}
	}
	s := in.Cfg.Services[0]
	if s.TrackingExpiry != 9*time.Second || s.Log != filepath.Join(dir, "log") || s.WebStats != filepath.Join(dir, "status.html") ||
		s.TLS.OCSPStaple != "/etc/shadow" || s.TLS.SNIDir != "/etc" || s.Listen != ap("127.0.0.1:9999") {
		t.Errorf("startup commands not applied: %+v %+v", s, *s.TLS)
	}
	for _, f := range []string{"out.cfg", "pen.cfg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("startup write: %v", err)
		}
	}

	// -o/-O on lbd's command line are startup configuration.
	staple := filepath.Join(dir, "ocsp.der")
	inv, err := ParseArgs([]string{"-E", filepath.Join(dir, "cert.pem"), "-o", "ssl_ocsp_response " + staple, "-O", "ssl_sni_path " + dir, "443", ":100"})
	if err != nil {
		t.Fatal(err)
	}
	if tc := inv.Config.Services[0].TLS; tc.OCSPStaple != staple || tc.SNIDir != dir {
		t.Errorf("-o/-O: %+v", *tc)
	}
}

func TestWriteVerb(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "pen.cfg")
	in := newInterp(t)
	in.ConfigFile = cfgFile
	run(t, in, "acl 1 deny 127.0.0.2")
	run(t, in, "server 1 weight 9")
	run(t, in, "write")
	b, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "# Generated by lbd ") || !strings.Contains(string(b), "acl 1 deny 127.0.0.2 255.255.255.255\n") ||
		!strings.Contains(string(b), "server 1 acl 0 address 127.0.0.1 port 18101 max 10 hard 20 weight 9 prio 1\n") {
		t.Errorf("written file:\n%s", b)
	}
	// Over the control socket write takes no file name, not even the -F
	// file's (TestControlRefusesPaths).
	for _, name := range []string{cfgFile, filepath.Join(dir, "other.cfg"), ".", dir} {
		if _, err := in.Exec("write "+name, io.Discard); err == nil || !strings.Contains(err.Error(), "only the -F file") {
			t.Errorf("write %s over the control socket: %v", name, err)
		}
	}
	in.Startup = true
	run(t, in, "write "+cfgFile)
	run(t, in, "write "+filepath.Join(dir, "other.cfg"))
	if _, err := os.Stat(filepath.Join(dir, "other.cfg")); err != nil {
		t.Error(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("temp files left behind: %v", ents)
	}
}

func TestExecFile(t *testing.T) {
	in := newInterp(t)
	good := tempFile(t, "good.cfg", "tracking 5\r\nserver 0 weight 3\n# x\n\nmode\n")
	var out bytes.Buffer
	changed, err := in.ExecFile(good, &out)
	if err != nil || !changed {
		t.Fatalf("ExecFile: %v %v", changed, err)
	}
	if out.String() != "5\nno hash no roundrobin no stubborn no weight no prio\n" {
		t.Errorf("output %q", out.String())
	}
	before := in.Cfg.Clone()
	bad := tempFile(t, "bad.cfg", "tracking 50\nserver 0 weight 4\nserver 0 port x\n")
	if _, err := in.ExecFile(bad, io.Discard); err == nil || !strings.Contains(err.Error(), bad+":3:") {
		t.Errorf("bad file: %v", err)
	}
	if !reflect.DeepEqual(before, in.Cfg) {
		t.Error("failed ExecFile changed the config")
	}
}

func TestWriteConfigRoundTrip(t *testing.T) {
	args := []string{"-C", "127.0.0.1:18888", "127.0.0.1:18080", ":18100", ":18101:10:20:2:1"}
	for _, script := range [][]string{
		nil,
		{"hash", "roundrobin", "stubborn", "http", "tcp_nodelay", "keepalive", "source 127.0.0.9",
			"tracking 30", "timeout 9", "blacklist 3", "idle_timeout 40", "clients_max 99", "conn_max 77", "debug 2",
			"acl 1 permit 127.0.0.0 255.0.0.0", "acl 1 deny", "acl 2 permit ::1", "acl 2 deny fe80::/10", "acl 0 deny 192.0.2.0 255.255.255.0",
			"client_acl 1", "control_acl 2", "server 1 acl 2 prio 4", "server 3 address ::1 port 99 weight 0", "log /tmp/l", "web_stats /tmp/w"},
		{"weight", "server 0 weight 5"},
		{"prio", "hash"},
		{"hash"},
		{"roundrobin"},
	} {
		in := newInterp(t, args...)
		in.Startup = true
		for _, l := range script {
			run(t, in, l)
		}
		var b bytes.Buffer
		WriteConfig(in.Cfg, 0, &b)

		// Read it back onto a config from a different command line.
		back := newInterp(t, "-W", "-C", "127.0.0.1:18888", "127.0.0.1:18080", ":18200")
		back.Startup = true
		for _, l := range strings.Split(b.String(), "\n") {
			run(t, back, l)
		}
		if !reflect.DeepEqual(in.Cfg, back.Cfg) {
			t.Errorf("script %q: round trip differs\nwritten:\n%s\nwant %+v\n got %+v", script, b.String(), in.Cfg.Services[0], back.Cfg.Services[0])
		}
	}
}

func TestWriteConfigFormat(t *testing.T) {
	in := newInterp(t)
	in.Startup = true
	run(t, in, "acl 1 deny 127.0.0.1")
	run(t, in, "acl 2 permit ::1")
	run(t, in, "log /srv/pentest/pen.log")
	var b bytes.Buffer
	WriteConfig(in.Cfg, 0, &b)
	want := `no acl 0
no acl 1
acl 1 deny 127.0.0.1 255.255.255.255
no acl 2
acl 2 permit ::1/128
no acl 3
no acl 4
no acl 5
no acl 6
no acl 7
no acl 8
no acl 9
blacklist 30
client_acl 0
control_acl 0
debug 0
no prio
no weight
no hash
no http
log /srv/pentest/pen.log
no roundrobin
server 0 acl 0 address 127.0.0.1 port 18100 max 0 hard 0 weight 0 prio 0
server 1 acl 0 address 127.0.0.1 port 18101 max 10 hard 20 weight 2 prio 1
no stubborn
no tcp_nodelay
timeout 3
tracking 0
no web_stats
no weight
no prio
clients_max 2048
conn_max 4096
idle_timeout 0
no keepalive
no source
`
	if b.String() != want {
		t.Errorf("WriteConfig:\n%s\nwant:\n%s", b.String(), want)
	}
}

func FuzzExec(f *testing.F) {
	for _, s := range []string{
		"servers", "mode", "server 1 address 127.0.0.2 port 81 max 3 hard 4 weight 5 prio 6", "server 7",
		"acl 1 permit 10.0.0.0 255.0.0.0", "acl 2 deny ::1/64", "no acl 1", "client_acl 1", "hash", "no weight",
		"tracking 5", "idle_timeout 3", "service pen server 0 acl 3", "recent 10", "tarpit_acl", "bogus", "no bogus",
		"server 1 address 0.0.0.0", "source ::1", "debug 3", "write", "include x", "listen 1:2", "\r\n", "# x",
		"server 0 blacklist 5", "exit", "status", "conn_max 1", "ssl_option no_tlsv1.2",
		"tarpit_acl 1", "no tarpit_acl", "tarpit_acl -1", "dsr_if eth0",
	} {
		f.Add(s)
	}
	old := lookupHost
	lookupHost = func(host string) (netip.Addr, error) { return netip.Addr{}, errors.New("no DNS while fuzzing") }
	f.Cleanup(func() { lookupHost = old })
	f.Fuzz(func(t *testing.T, line string) {
		// A proxy service, and a DSR service with a tarpit.
		for _, in := range []*Interp{newInterp(t), newInterp(t, dsrArgs...)} {
			in.RT = &fakeRT{servers: []ServerStat{{Conns: 1}}}
			before := in.Cfg.Clone()
			var out bytes.Buffer
			changed, err := in.Exec(line, &out)
			if err != nil && (changed || !reflect.DeepEqual(before, in.Cfg) || out.Len() > 0) {
				t.Fatalf("failed Exec(%q) changed %v or wrote %q", line, changed, out.String())
			}
			if !changed && !reflect.DeepEqual(before, in.Cfg) {
				t.Fatalf("Exec(%q) reported no change but changed the config", line)
			}
			if out.Len() > 64<<10 {
				t.Fatalf("Exec(%q) wrote %d bytes", line, out.Len())
			}
		}
	})
}

// dsrArgs is the tarpit seed command line (Pen's testsuite test 14).
var dsrArgs = []string{"-df", "-r", "-O", "acl 1 permit 192.0.2.77", "-O", "tarpit_acl 1", "-O", "dsr_if eth1", "192.0.2.100:80", "192.0.2.21", "192.0.2.22"}

func TestTarpitACLVerb(t *testing.T) {
	in := newInterp(t, "-O", "dsr_if eth0", "192.0.2.100:80", "192.0.2.21")
	in.Validate = true
	for _, tc := range []struct{ line, want string }{
		{"tarpit_acl", "tarpit_acl = -1"},
		{"acl 3 permit 192.0.2.77", ""},
		{"tarpit_acl 3", "tarpit_acl = 3"},
		{"tarpit_acl", "tarpit_acl = 3"},
		{"no tarpit_acl", ""},
		{"tarpit_acl", "tarpit_acl = -1"},
		{"tarpit_acl 3", "tarpit_acl = 3"},
		{"tarpit_acl -1", "tarpit_acl = -1"},
		{"tarpit_acl 3", "tarpit_acl = 3"},
	} {
		if got := run(t, in, tc.line); got != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.line, got, tc.want)
		}
	}
	if got := in.Cfg.Services[0].TarpitACL; got != "3" {
		t.Errorf("TarpitACL = %q, want 3", got)
	}
	// With Validate (the control socket), unsafe tarpits are refused and
	// the running tarpit is kept.
	before := in.Cfg.Clone()
	for line, want := range map[string]string{
		"no acl 3":     "an empty tarpit ACL matches every address",
		"acl 3 deny":   "must end with a permit rule",
		"tarpit_acl 4": "an empty tarpit ACL matches every address",
		"tarpit_acl x": "ACL numbers are 0 to 9",
		"acl 3 permit": "matches every address",
	} {
		var out bytes.Buffer
		if _, err := in.Exec(line, &out); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Exec(%q) = %v, want error containing %q", line, err, want)
		}
		if out.Len() != 0 {
			t.Errorf("Exec(%q) wrote %q", line, out.String())
		}
	}
	if !reflect.DeepEqual(before, in.Cfg) {
		t.Error("refused commands changed the config")
	}

	// A named (TOML) tarpit ACL prints its name.
	in.Cfg.ACLs["dark"] = in.Cfg.ACLs["3"]
	in.Cfg.Services[0].TarpitACL = "dark"
	if got := run(t, in, "tarpit_acl"); got != "tarpit_acl = dark" {
		t.Errorf("tarpit_acl with a named ACL = %q", got)
	}

	// Proxy and UDP services have no tarpit.
	for args, want := range map[string]string{
		"80 10.0.0.1": "needs DSR mode",
		"-U -O dsr_if\x00eth0 192.0.2.1:53 192.0.2.2": "cannot be used with -U",
	} {
		a := strings.Fields(args)
		for i := range a {
			a[i] = strings.ReplaceAll(a[i], "\x00", " ")
		}
		in := newInterp(t, a...)
		if _, err := in.Exec("tarpit_acl 1", io.Discard); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: tarpit_acl 1 = %v, want %q", args, err, want)
		}
		if got := run(t, in, "no tarpit_acl"); got != "" {
			t.Errorf("no tarpit_acl wrote %q", got)
		}
	}
}

func TestDSRVerbs(t *testing.T) {
	in := newInterp(t, dsrArgs...)
	for _, tc := range []struct{ line, want string }{
		{"mode", "hash roundrobin no stubborn no weight no prio\n"},
		{"listen", "192.0.2.100:80\n"},
		{"servers", "0 addr 192.0.2.21 port 0 conn 0 max 0 hard 0 weight 1 prio 0 sx 0 rx 0\n" +
			"1 addr 192.0.2.22 port 0 conn 0 max 0 hard 0 weight 1 prio 0 sx 0 rx 0\n"},
		{"weight", ""}, {"prio", ""}, {"no hash", ""}, {"hash", ""},
		{"no roundrobin", ""},
		{"mode", "hash no roundrobin no stubborn no weight no prio\n"},
		{"server 1 port 8080 weight 4", ""},
		{"server 2 address 192.0.2.23", ""},
		{"servers", "0 addr 192.0.2.21 port 0 conn 0 max 0 hard 0 weight 1 prio 0 sx 0 rx 0\n" +
			"1 addr 192.0.2.22 port 0 conn 0 max 0 hard 0 weight 4 prio 0 sx 0 rx 0\n" +
			"2 addr 192.0.2.23 port 0 conn 0 max 0 hard 0 weight 1 prio 0 sx 0 rx 0\n"},
	} {
		if got := run(t, in, tc.line); got != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.line, got, tc.want)
		}
	}
	s := in.Cfg.Services[0]
	if s.Algorithm != config.Maglev || !s.Tracking || s.HashPort {
		t.Errorf("algorithm verbs changed a DSR service: %v tracking %v hash_port %v", s.Algorithm, s.Tracking, s.HashPort)
	}
	if err := config.Validate(in.Cfg); err != nil {
		t.Errorf("Validate: %v", err)
	}
	for line, want := range map[string]string{
		"dsr_if eth1": "refused over the control socket",
		"dsr_if eth0": "refused over the control socket",
		"dsr_if":      "missing interface name",
	} {
		if _, err := in.Exec(line, io.Discard); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Exec(%q) = %v, want %q", line, err, want)
		}
	}
	in.Startup = true
	if got := run(t, in, "dsr_if eth1"); got != "" {
		t.Errorf("dsr_if eth1 at startup wrote %q", got)
	}
	if _, err := in.Exec("dsr_if eth0", io.Discard); err == nil || !strings.Contains(err.Error(), "changing the interface needs a restart") {
		t.Errorf("dsr_if eth0 at startup on eth1: %v", err)
	}
	run(t, in, "listen 192.0.2.101")
	if got := in.Cfg.Services[0].Listen; got != ap("192.0.2.101:0") {
		t.Errorf("listen 192.0.2.101 set %v", got)
	}
	proxy := newInterp(t)
	if _, err := proxy.Exec("dsr_if eth0", io.Discard); err == nil || !strings.Contains(err.Error(), "refused over the control socket") {
		t.Errorf("dsr_if over control on a proxy service: %v", err)
	}
	proxy.Startup = true
	if _, err := proxy.Exec("dsr_if eth0", io.Discard); err == nil || !strings.Contains(err.Error(), "-o/-O") {
		t.Errorf("dsr_if at startup on a built proxy service: %v", err)
	}
}

func TestWriteConfigDSR(t *testing.T) {
	in := newInterp(t, dsrArgs...)
	run(t, in, "server 1 weight 3")
	var b bytes.Buffer
	WriteConfig(in.Cfg, 0, &b)
	out := b.String()
	for _, want := range []string{
		"acl 1 permit 192.0.2.77 255.255.255.255\n",
		"roundrobin\n",
		"server 0 acl 0 address 192.0.2.21 port 0 max 0 hard 0 weight 1 prio 0\n",
		"server 1 acl 0 address 192.0.2.22 port 0 max 0 hard 0 weight 3 prio 0\n",
		"no stubborn\ntarpit_acl 1\nno tcp_nodelay\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("WriteConfig lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "dsr_if") {
		t.Errorf("WriteConfig wrote dsr_if (Pen does not):\n%s", out)
	}

	// Read back onto the same command line without the tarpit, also with a
	// repeated dsr_if as a hand-edited -F file might have.
	back := newInterp(t, "-O", "dsr_if eth1", "192.0.2.100:80", "192.0.2.99")
	back.Startup = true
	for _, l := range append(strings.Split(out, "\n"), "dsr_if eth1") {
		run(t, back, l)
	}
	if !reflect.DeepEqual(in.Cfg, back.Cfg) {
		t.Errorf("round trip differs\nwritten:\n%s\nwant %+v\n got %+v", out, in.Cfg.Services[0], back.Cfg.Services[0])
	}

	// No tarpit, and a tarpit ACL with a name Pen cannot express.
	run(t, in, "no tarpit_acl")
	b.Reset()
	WriteConfig(in.Cfg, 0, &b)
	if !strings.Contains(b.String(), "no stubborn\nno tarpit_acl\n") {
		t.Errorf("no tarpit_acl missing:\n%s", b.String())
	}
	in.Cfg.ACLs["dark"] = in.Cfg.ACLs["1"]
	in.Cfg.Services[0].TarpitACL = "dark"
	b.Reset()
	WriteConfig(in.Cfg, 0, &b)
	if !strings.Contains(b.String(), "# tarpit_acl \"dark\" cannot be written in Pen's format\nno tarpit_acl\n") {
		t.Errorf("named tarpit ACL:\n%s", b.String())
	}
	// A proxy service writes no tarpit line (as Pen).
	b.Reset()
	WriteConfig(newInterp(t).Cfg, 0, &b)
	if strings.Contains(b.String(), "tarpit") {
		t.Errorf("proxy service wrote a tarpit line:\n%s", b.String())
	}
}
