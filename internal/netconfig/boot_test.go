package netconfig

import (
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/appliance"
	"github.com/nib-lb/nib/internal/initspec"
)

const (
	file     = "/perm/lbd/config.toml"
	lastGood = "/perm/lbd/last-good.toml"
)

const (
	staticTOML = `[network]
mode = "static"
address = "10.0.0.5/24"
gateway = "10.0.0.1"

[[dummy]]
listen = "127.0.0.1:8081"
`
	staticWlanTOML = `[network]
interface = "wlan0"
mode = "static"
address = "10.0.0.5/24"

[[dummy]]
listen = "127.0.0.1:8081"
`
	dhcpTOML = `[network]
mode = "dhcp"

[[dummy]]
listen = "127.0.0.1:8081"
`
	noNetworkTOML = "[[dummy]]\nlisten = \"127.0.0.1:8081\"\n"
	brokenTOML    = "[network]\nmode = \"static\"\naddress = \"10.0.0.5\"\n[[dummy]]\nlisten = \"127.0.0.1:8081\"\n"
	// Parses, though its port may well be taken: only parsing counts.
	busyTOML = "[network]\nmode = \"static\"\naddress = \"10.0.0.9/24\"\n[[dummy]]\nlisten = \"127.0.0.1:1\"\n"
)

// reader serves files from a map; a value "EIO" is a read error.
func reader(files map[string]string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		s, ok := files[name]
		switch {
		case !ok:
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		case s == "EIO":
			return nil, &fs.PathError{Op: "read", Path: name, Err: errors.New("input/output error")}
		}
		return []byte(s), nil
	}
}

func TestChoose(t *testing.T) {
	for _, tt := range []struct {
		name    string
		files   map[string]string
		from    string
		static  string // the address, "" for DHCP
		iface   string
		nilNet  bool
		noteHas []string
	}{
		{
			name:   "config static",
			files:  map[string]string{file: staticTOML, lastGood: dhcpTOML},
			from:   file,
			static: "10.0.0.5/24",
		},
		{
			name:  "config dhcp beats a static last-good",
			files: map[string]string{file: dhcpTOML, lastGood: staticTOML},
			from:  file,
		},
		{
			name:   "config without [network]",
			files:  map[string]string{file: noNetworkTOML, lastGood: staticTOML},
			from:   file,
			nilNet: true,
		},
		{
			name:   "config that parses but may not apply still counts",
			files:  map[string]string{file: busyTOML, lastGood: staticTOML},
			from:   file,
			static: "10.0.0.9/24",
		},
		{
			name:   "config missing: the appliance default lbd writes, not last-good",
			files:  map[string]string{lastGood: staticTOML},
			from:   "the appliance default (" + file + " is missing)",
			nilNet: true,
		},
		{
			name:    "config broken: last-good",
			files:   map[string]string{file: brokenTOML, lastGood: staticTOML},
			from:    lastGood,
			static:  "10.0.0.5/24",
			noteHas: []string{file + ":3:11: network.address: \"10.0.0.5\" needs its prefix length"},
		},
		{
			name:    "config unreadable: last-good",
			files:   map[string]string{file: "EIO", lastGood: staticWlanTOML},
			from:    lastGood,
			static:  "10.0.0.5/24",
			iface:   "wlan0",
			noteHas: []string{"input/output error"},
		},
		{
			name:    "both broken: the built-in default",
			files:   map[string]string{file: brokenTOML, lastGood: "nonsense"},
			from:    "the built-in appliance default",
			nilNet:  true,
			noteHas: []string{file + ":3:11", lastGood + ":1:"},
		},
		{
			name:    "config broken, no last-good: the built-in default",
			files:   map[string]string{file: brokenTOML},
			from:    "the built-in appliance default",
			nilNet:  true,
			noteHas: []string{"open " + lastGood + ": file does not exist"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ch := Choose(file, "/perm/lbd", reader(tt.files))
			if ch.From != tt.from {
				t.Errorf("From = %q, want %q", ch.From, tt.from)
			}
			n := ch.Network
			if tt.nilNet != (n == nil) {
				t.Errorf("Network = %v", n)
			}
			if got := n.IsStatic(); got != (tt.static != "") {
				t.Errorf("static = %v, want %v (%v)", got, !got, n)
			} else if got && n.Address.String() != tt.static {
				t.Errorf("address %s, want %s", n.Address, tt.static)
			}
			if iface := tt.iface; iface != "" && n.Interface != iface {
				t.Errorf("interface %s, want %s", n.Interface, iface)
			}
			notes := strings.Join(ch.Notes, "\n")
			for _, s := range tt.noteHas {
				if !strings.Contains(notes, s) {
					t.Errorf("notes lack %q:\n%s", s, notes)
				}
			}
			if len(tt.noteHas) == 0 && len(ch.Notes) > 0 {
				t.Errorf("notes: %q", ch.Notes)
			}
		})
	}
	// The appliance default has no [network]: the missing-file and
	// built-in cases above mean DHCP.
	if c, err := config.Parse("appliance.toml", config.ApplianceTOML()); err != nil || c.Network.IsStatic() {
		t.Errorf("the appliance default: %v, %v", c, err)
	}
}

// specs are the programs nib's image builder gives init (gokrazy/nib/config.json).
func specs() []initspec.Service {
	return []initspec.Service{
		{Path: "/gokrazy/dhcp"},
		{Path: "/gokrazy/ntp"},
		{Path: "/gokrazy/randomd"},
		{Path: "/user/lbd", Args: []string{"-config=/perm/lbd/config.toml", "-state=/perm/lbd"}},
	}
}

func TestInitServices(t *testing.T) {
	for _, tt := range []struct {
		name     string
		specs    func() []initspec.Service
		files    map[string]string
		stopped  []string // paths started stopped
		logsHave []string
	}{
		{
			name:     "static on eth0: dhcp starts stopped",
			specs:    specs,
			files:    map[string]string{file: staticTOML},
			stopped:  []string{"/gokrazy/dhcp"},
			logsHave: []string{"network: [network] of " + file + ": eth0 static 10.0.0.5/24 via 10.0.0.1", "/gokrazy/dhcp on eth0 starts stopped"},
		},
		{
			name:     "dhcp",
			specs:    specs,
			files:    map[string]string{file: dhcpTOML},
			logsHave: []string{"[network] of " + file + ": eth0 dhcp"},
		},
		{
			name:     "no [network]",
			specs:    specs,
			files:    map[string]string{file: noNetworkTOML},
			logsHave: []string{"no [network] (DHCP)"},
		},
		{
			name:     "no /perm (nothing to read): DHCP",
			specs:    specs,
			files:    nil,
			logsHave: []string{"the appliance default (" + file + " is missing): no [network] (DHCP)"},
		},
		{
			name:     "broken config, static last-good: dhcp starts stopped",
			specs:    specs,
			files:    map[string]string{file: brokenTOML, lastGood: staticTOML},
			stopped:  []string{"/gokrazy/dhcp"},
			logsHave: []string{"network: passed over: " + file + ":3:11:", "[network] of " + lastGood + ": eth0 static"},
		},
		{
			name:     "static on wlan0: dhcp on eth0 runs",
			specs:    specs,
			files:    map[string]string{file: staticWlanTOML},
			logsHave: []string{"wlan0 static"},
		},
		{
			name: "static on wlan0, dhcp on wlan0 (-interface value)",
			specs: func() []initspec.Service {
				s := specs()
				s[0].Args = []string{"-interface", "wlan0"}
				return s
			},
			files:   map[string]string{file: staticWlanTOML},
			stopped: []string{"/gokrazy/dhcp"},
		},
		{
			name: "static on eth0, dhcp on wlan0 (-interface=)",
			specs: func() []initspec.Service {
				s := specs()
				s[0].Args = []string{"-extra_route_priority=3", "--interface=wlan0"}
				return s
			},
			files: map[string]string{file: staticTOML},
		},
		{
			name: "lbd's flags as separate arguments, elsewhere",
			specs: func() []initspec.Service {
				s := specs()
				s[3].Args = []string{"-d", "-config", "/perm/x/lbd.toml", "--state", "/perm/x"}
				return s
			},
			files:   map[string]string{"/perm/x/lbd.toml": brokenTOML, "/perm/x/last-good.toml": staticTOML},
			stopped: []string{"/gokrazy/dhcp"},
		},
		{
			name: "lbd without -state is not in appliance mode",
			specs: func() []initspec.Service {
				s := specs()
				s[3].Args = []string{"-config=/perm/lbd/config.toml"}
				return s
			},
			files:    map[string]string{file: staticTOML},
			logsHave: []string{"no lbd with -config and -state"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.specs()
			orig := tt.specs()
			out, logs := InitServices(in, reader(tt.files))
			if diff := cmp.Diff(orig, in); diff != "" {
				t.Errorf("InitServices changed its argument:\n%s", diff)
			}
			var stopped []string
			for i, s := range out {
				if s.DontStart {
					stopped = append(stopped, s.Path)
				}
				s.DontStart = orig[i].DontStart
				if diff := cmp.Diff(orig[i], s); diff != "" {
					t.Errorf("service %d changed beyond DontStart:\n%s", i, diff)
				}
			}
			if diff := cmp.Diff(tt.stopped, stopped); diff != "" {
				t.Errorf("started stopped (-want +got):\n%s", diff)
			}
			all := strings.Join(logs, "\n")
			for _, s := range tt.logsHave {
				if !strings.Contains(all, s) {
					t.Errorf("logs lack %q:\n%s", s, all)
				}
			}
		})
	}
}

func TestFlagValue(t *testing.T) {
	for _, tt := range []struct {
		args []string
		name string
		want string
		ok   bool
	}{
		{[]string{"-config=/a", "-state=/b"}, "state", "/b", true},
		{[]string{"--config", "/a"}, "config", "/a", true},
		{[]string{"-d", "-config", "/a"}, "config", "/a", true},
		{[]string{"-other", "-config", "-config=/a"}, "config", "/a", true}, // -other takes "-config" as its value
		{[]string{"-config=/a", "-config=/b"}, "config", "/b", true},
		{[]string{"-config="}, "config", "", true},
		{[]string{"-config"}, "config", "", false},
		{[]string{"x", "-config=/a"}, "config", "", false},
		{[]string{"--", "-config=/a"}, "config", "", false},
		{nil, "config", "", false},
	} {
		got, ok := flagValue(tt.args, tt.name)
		if got != tt.want || ok != tt.ok {
			t.Errorf("flagValue(%q, %s) = %q, %v; want %q, %v", tt.args, tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestDHCPClients(t *testing.T) {
	proc := fstest.MapFS{
		"1/cmdline":    {Data: []byte("/gokrazy/init\x00")},
		"212/cmdline":  {Data: []byte("/gokrazy/dhcp\x00")},
		"213/cmdline":  {Data: []byte("/gokrazy/dhcp\x00-interface=wlan0\x00")},
		"214/cmdline":  {Data: []byte("/user/lbd\x00-config=/perm/lbd/config.toml\x00")},
		"215/cmdline":  {Data: []byte("")}, // a kernel thread
		"self/cmdline": {Data: []byte("/gokrazy/dhcp\x00")},
		"uptime":       {Data: []byte("1.0 1.0\n")},
	}
	want := []DHCPClient{{212, "eth0"}, {213, "wlan0"}}
	if diff := cmp.Diff(want, DHCPClients(proc)); diff != "" {
		t.Errorf("DHCPClients (-want +got):\n%s", diff)
	}
	if got := DHCPClients(fstest.MapFS{}); got != nil {
		t.Errorf("DHCPClients(empty) = %v", got)
	}
}

// The programs the image builder gives init from gokrazy/nib/config.json:
// InitServices finds lbd's config there, and gokrazy's DHCP client.
func TestInitServicesInstance(t *testing.T) {
	in, err := appliance.LoadInstance(filepath.Join("..", "..", "gokrazy", "nib", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	out, logs := InitServices(in.Services(), reader(map[string]string{file: staticTOML}))
	var stopped []string
	for _, s := range out {
		if s.DontStart {
			stopped = append(stopped, s.Path)
		}
	}
	if !slices.Equal(stopped, []string{DHCPPath}) {
		t.Errorf("started stopped: %q, want only %s\n%s", stopped, DHCPPath, strings.Join(logs, "\n"))
	}
}
