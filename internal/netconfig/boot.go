package netconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/initspec"
)

// LastGood is the last good config's file name in lbd's state directory
// (internal/lbd keeps it there; a test checks the two agree).
const LastGood = "last-good.toml"

// DHCPPath is gokrazy's DHCP client on the appliance.
const DHCPPath = "/gokrazy/dhcp"

// Choice is the [network] table in force at boot and where it comes from.
type Choice struct {
	// Network is the table; nil when the config in force has none (DHCP).
	Network *config.Network
	// From names the file it comes from, or the appliance default.
	From string
	// Notes say why files were passed over, for the log.
	Notes []string
}

// Choose finds the [network] that lbd in appliance mode (-config file
// -state dir) applies when it starts, by lbd's own rule: file when it
// parses (when it is missing, the appliance default that lbd writes there);
// else dir/last-good.toml when that parses; else the built-in appliance
// default. Only parsing counts, not whether the config's services can
// start: lbd applies the [network] of a file that parses even while it
// serves a fallback. read is os.ReadFile outside tests.
func Choose(file, dir string, read func(string) ([]byte, error)) Choice {
	var ch Choice
	parse := func(name string, data []byte) bool {
		c, err := config.Parse(name, data)
		if err != nil {
			ch.Notes = append(ch.Notes, firstLine(err.Error()))
			return false
		}
		ch.Network, ch.From = c.Network, name
		return true
	}
	data, err := read(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		parse("the appliance default ("+file+" is missing)", config.ApplianceTOML())
		return ch
	case err != nil:
		ch.Notes = append(ch.Notes, err.Error())
	case parse(file, data):
		return ch
	}
	lg := filepath.Join(dir, LastGood)
	if data, err := read(lg); err != nil {
		ch.Notes = append(ch.Notes, err.Error())
	} else if parse(lg, data) {
		return ch
	}
	parse("the built-in appliance default", config.ApplianceTOML())
	return ch
}

// firstLine keeps the first of a config's errors, with a count of the rest.
func firstLine(s string) string {
	first, rest, ok := strings.Cut(s, "\n")
	if !ok {
		return first
	}
	return fmt.Sprintf("%s (and %d more)", first, strings.Count(rest, "\n")+1)
}

// InitServices is nib's gokrazy init's decision about gokrazy's DHCP
// client, made at boot after /perm is mounted: when the appliance-mode lbd
// among specs (a program named lbd with -config and -state) has a static
// [network] (see Choose) on the interface of a DHCP client among specs
// (DHCPPath, -interface, default eth0), that client starts stopped. It
// returns specs so changed (a copy; specs is not modified) and lines for
// init's log. read is os.ReadFile outside tests.
//
// Init decides once per boot, so a change between "dhcp" and "static"
// needs a reboot to start or stop the client. A client started stopped can
// be started by hand on gokrazy's web UI.
func InitServices(specs []initspec.Service, read func(string) ([]byte, error)) ([]initspec.Service, []string) {
	out := slices.Clone(specs)
	var file, dir string
	found := false
	for _, s := range specs {
		if filepath.Base(s.Path) != "lbd" {
			continue
		}
		f, fok := flagValue(s.Args, "config")
		d, dok := flagValue(s.Args, "state")
		if fok && dok && f != "" && d != "" {
			file, dir, found = f, d, true
			break
		}
	}
	if !found {
		return out, []string{"network: no lbd with -config and -state (appliance mode) to take [network] from; DHCP as configured"}
	}
	ch := Choose(file, dir, read)
	var logs []string
	for _, n := range ch.Notes {
		logs = append(logs, "network: passed over: "+n)
	}
	n := ch.Network
	logs = append(logs, fmt.Sprintf("network: [network] of %s: %v", ch.From, n))
	if !n.IsStatic() {
		return out, logs
	}
	for i, s := range out {
		if s.Path != DHCPPath {
			continue
		}
		iface, ok := flagValue(s.Args, "interface")
		if !ok {
			iface = "eth0" // gokrazy's dhcp's default
		}
		if iface != n.Interface {
			continue
		}
		out[i].DontStart = true
		logs = append(logs, fmt.Sprintf("network: %s on %s starts stopped: lbd sets the static address; "+
			"to use DHCP, set mode = \"dhcp\" in %s and reboot (or start dhcp on gokrazy's web UI)", s.Path, iface, file))
	}
	return out, logs
}

// flagValue finds a flag's value in a Go program's arguments: -name=value,
// --name=value, or -name value. A later setting wins, as with package flag;
// parsing stops at "--" or the first argument that is not a flag.
func flagValue(args []string, name string) (string, bool) {
	var v string
	found := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") || a == "-" {
			break
		}
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		k, val, hasVal := strings.Cut(a, "=")
		if k != name {
			if !hasVal && !IsBoolFlag(k) {
				i++ // the next argument is its value
			}
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				break
			}
			i++
			val = args[i]
		}
		v, found = val, true
	}
	return v, found
}

// IsBoolFlag reports whether a flag of lbd or gokrazy's dhcp takes no
// value, so that the argument after it is not taken for one.
func IsBoolFlag(name string) bool {
	switch name {
	case "d", "f", "help", "h", "version":
		return true
	}
	return false
}

// DHCPClient is a running gokrazy DHCP client.
type DHCPClient struct {
	PID       int
	Interface string
}

// DHCPClients lists the gokrazy DHCP clients (DHCPPath) running, from
// proc, a /proc file system (os.DirFS("/proc")). lbd uses it to warn that a
// static [network] competes with a DHCP client until the next reboot.
func DHCPClients(proc fs.FS) []DHCPClient {
	entries, err := fs.ReadDir(proc, ".")
	if err != nil {
		return nil
	}
	var l []DHCPClient
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		b, err := fs.ReadFile(proc, e.Name()+"/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if args[0] != DHCPPath {
			continue
		}
		iface, ok := flagValue(args[1:], "interface")
		if !ok {
			iface = "eth0"
		}
		l = append(l, DHCPClient{PID: pid, Interface: iface})
	}
	return l
}
