package pen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nib-lb/nib/config"
)

// ServiceName is the name of the one service a Pen command line describes.
const ServiceName = "pen"

// Invocation is a parsed Pen command line.
type Invocation struct {
	// Config holds one service named "pen", every flag, -o/-O command and
	// -F line applied. It has passed config.Validate.
	Config *config.Config
	// Foreground is -f: stay in the foreground and log to stderr.
	Foreground bool
	// PidFile is -p.
	PidFile string
	// User is -u: the user to switch to after binding.
	User string
	// Chroot is -j: the directory to chroot into after binding.
	Chroot string
	// ConfigFile is -F: the Pen-format file read at startup and on SIGHUP,
	// and the default target of the write verb.
	ConfigFile string
	// ASCII is -a: dump traffic as ASCII rather than hex at debug level 3.
	ASCII bool
	// Notices are messages for the operator: obsolete or ignored flags and
	// the output of -o/-O/-F commands. lbd prints them at startup.
	Notices []string
}

// flagsWithArg are Pen's getopt options that take a value.
const flagsWithArg = "BCFOSTbceijlmopqtuwxEKGAL"

// flagsNoArg are Pen's getopt options without a value.
const flagsNoArg = "DHNPQWXUadfhnrsZR"

// resolveTimeout bounds a host-name lookup.
const resolveTimeout = 30 * time.Second

// lookupHost resolves a host name once, taking the first result like Pen.
// Tests may replace it.
var lookupHost = func(host string) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("no address for %q", host)
	}
	return addrs[0].Unmap(), nil
}

// options collects the raw flags before the config is built.
type options struct {
	debug                       int
	roundrobin, hash, weight    bool
	stubborn, http, udp, exit   bool
	requireClientCert           bool
	trackingExpiry, trackingMax string
	blacklist, timeout, maxConn string
	backlog                     string
	emergency, abuse            string
	control                     string
	cert, key, clientCA         string
	log, webStats               string
	commands                    []string // -o/-O in order
	positionals                 []string
	// dsrIf is the interface of -O "dsr_if IF", found before the config
	// is built so that the listener is read as the VIP (see dsrInterface).
	dsrIf string
}

// ParseArgs parses Pen's command line (without the program name):
// getopt-style flags, then "[host:]port h1[:p1[:maxc[:hard[:weight[:prio]]]]] ...".
// Flags and positionals are applied first, then the -o/-O commands in order,
// then the -F file. The result has passed config.Validate.
//
// Pen runs -o/-O commands while it parses the options, so "dsr_if IF"
// (startup only) is in force before the listener is read. nib builds the
// config before it runs the commands, so it looks for dsr_if among them
// first: with it, the service is a DSR service on IF, the listener is
// VIP[:port] (no port, or port 0: every port), the servers' ports are
// ignored, -U makes it UDP and -r hashes each flow with the client port
// (Tracking off). The dsr_if command itself then does nothing. dsr_if in
// the -F file cannot change the mode (it must also be on the command line).
// A DSR service passes config.Validate; lbd decides whether it can run it.
func ParseArgs(args []string) (*Invocation, error) {
	inv := &Invocation{}
	var o options
	if err := o.scan(args, inv); err != nil {
		return nil, err
	}
	iface, err := dsrInterface(o.commands)
	if err != nil {
		return nil, err
	}
	o.dsrIf = iface
	if len(o.positionals) == 0 && inv.ConfigFile == "" {
		if iface != "" {
			return nil, errors.New("missing VIP: usage is lbd -O \"dsr_if IF\" [flags] VIP[:port] server ... (lbd -help for help)")
		}
		return nil, errors.New("missing listen port: usage is lbd [flags] [host:]port server ... (lbd -help for help)")
	}
	c, err := o.build(inv)
	if err != nil {
		return nil, err
	}
	inv.Config = c

	var notes strings.Builder
	in := &Interp{
		Cfg:         c,
		ControlAddr: c.Control.PenListen,
		ConfigFile:  inv.ConfigFile,
		Startup:     true,
		Root:        inv.Chroot,
	}
	for _, cmd := range o.commands {
		if _, err := in.Exec(cmd, &notes); err != nil {
			return nil, fmt.Errorf("-o %q: %w", cmd, err)
		}
		// Some replies (tarpit_acl) have no newline; keep notices apart.
		if b := notes.String(); b != "" && !strings.HasSuffix(b, "\n") {
			notes.WriteByte('\n')
		}
	}
	if inv.ConfigFile != "" {
		if _, err := in.ExecFile(inv.ConfigFile, &notes); err != nil {
			return nil, err
		}
	}
	for _, l := range strings.Split(notes.String(), "\n") {
		if strings.TrimSpace(l) != "" {
			inv.Notices = append(inv.Notices, l)
		}
	}
	if len(c.Services[0].Backends) == 0 {
		return nil, errors.New("no servers: give them after the listen port or with \"server N address A port P\" in the -F file")
	}
	if !c.Services[0].Listen.IsValid() {
		if c.Services[0].Mode == config.ModeDSR {
			return nil, errors.New("missing VIP: give VIP[:port] on the command line or \"listen\" in the -F file")
		}
		return nil, errors.New("missing listen port: give [host:]port on the command line or \"listen\" in the -F file")
	}
	if err := config.Validate(c); err != nil {
		return nil, err
	}
	return inv, nil
}

// scan walks args getopt-style. Like GNU getopt it permutes: flags may
// follow positionals; "--" ends the flags.
func (o *options) scan(args []string, inv *Invocation) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			o.positionals = append(o.positionals, args[i+1:]...)
			return nil
		}
		if len(a) < 2 || a[0] != '-' {
			o.positionals = append(o.positionals, a)
			continue
		}
		for j := 1; j < len(a); j++ {
			f := a[j]
			switch {
			case strings.IndexByte(flagsNoArg, f) >= 0:
				if err := o.flag(f, inv); err != nil {
					return err
				}
			case strings.IndexByte(flagsWithArg, f) >= 0:
				var v string
				if j+1 < len(a) {
					v = a[j+1:]
				} else if i+1 < len(args) {
					i++
					v = args[i]
				} else {
					return fmt.Errorf("option -%c requires an argument", f)
				}
				if err := o.flagArg(f, v, inv); err != nil {
					return err
				}
				j = len(a)
			default:
				return fmt.Errorf("unknown option -%c (lbd -help for help)", f)
			}
		}
	}
	return nil
}

// flag applies a flag without a value.
func (o *options) flag(f byte, inv *Invocation) error {
	switch f {
	case 'd':
		o.debug++
	case 'f':
		inv.Foreground = true
	case 'a':
		inv.ASCII = true
	case 'h':
		o.hash = true
	case 'H':
		o.http = true
	case 'r':
		o.roundrobin = true
	case 's':
		o.stubborn = true
	case 'U':
		o.udp = true
	case 'W':
		o.weight = true
	case 'X':
		o.exit = true
	case 'R':
		o.requireClientCert = true
	case 'P':
		inv.Notices = append(inv.Notices, "-P (poll) ignored: Go's runtime picks the event mechanism")
	case 'Z':
		inv.Notices = append(inv.Notices, "-Z (OpenSSL bug workarounds) ignored: Go's TLS needs none")
	case 'D', 'n', 'Q':
		inv.Notices = append(inv.Notices, fmt.Sprintf("-%c is obsolete and ignored", f))
	case 'N':
		return errors.New("-N is not implemented (Pen only prints its usage for it); use -h -r to hash on client address and port")
	}
	return nil
}

// flagArg applies a flag with a value.
func (o *options) flagArg(f byte, v string, inv *Invocation) error {
	switch f {
	case 'b':
		o.blacklist = v
	case 'B':
		o.abuse = v
	case 'c':
		o.trackingMax = v
	case 'C':
		o.control = v
	case 'e':
		o.emergency = v
	case 'F':
		inv.ConfigFile = v
	case 'j':
		inv.Chroot = v
	case 'l':
		o.log = v
	case 'm':
		if _, err := atoiMin("-m", v, 1); err != nil {
			return err
		}
		inv.Notices = append(inv.Notices, "-m (multi_accept) ignored: lbd accepts connections as they arrive")
	case 'o', 'O':
		o.commands = append(o.commands, v)
	case 'p':
		inv.PidFile = v
	case 'q':
		o.backlog = v
	case 't':
		o.timeout = v
	case 'T':
		o.trackingExpiry = v
	case 'u':
		inv.User = v
	case 'w':
		o.webStats = v
	case 'x':
		o.maxConn = v
	case 'E':
		o.cert = v
	case 'K':
		o.key = v
	case 'G':
		o.clientCA = v
	case 'A':
		return errors.New("-A (CA directory) is not supported; put the CA certificates in one PEM file and use -G")
	case 'L':
		switch v {
		case "ssl23", "ssl2", "ssl3", "tls1":
			inv.Notices = append(inv.Notices, fmt.Sprintf("-L %s ignored: lbd speaks TLS 1.2 and later only", v))
		default:
			return fmt.Errorf("-L %q: expected ssl23, ssl2, ssl3 or tls1", v)
		}
	case 'S':
		inv.Notices = append(inv.Notices, "-S is obsolete and ignored")
	case 'i':
		return errors.New("-i (install as a Windows service) is Windows only")
	}
	return nil
}

// build makes the config from the scanned flags and positionals.
func (o *options) build(inv *Invocation) (*config.Config, error) {
	proto := config.TCP
	network := "tcp"
	if o.udp {
		proto = config.UDP
		network = "udp"
	}
	dsr := o.dsrIf != ""
	var listen netip.AddrPort
	var servers []string
	if len(o.positionals) > 0 {
		var err error
		if dsr {
			listen, err = parseVIP(o.positionals[0], network)
		} else {
			listen, err = parseListen(o.positionals[0], network)
		}
		if err != nil {
			return nil, err
		}
		servers = o.positionals[1:]
	}
	var s config.Service
	if dsr {
		if err := o.dsrFlags(inv); err != nil {
			return nil, err
		}
		s = config.NewDSRService(ServiceName, o.dsrIf, listen, proto)
		// Pen's DSR hashes the client address, and with -r its port too.
		s.Tracking = !o.roundrobin
	} else {
		s = config.NewService(ServiceName, listen, proto)
		s.Tracking = !o.roundrobin
		switch {
		case o.weight:
			s.Algorithm = config.Weight
		case o.hash:
			s.Algorithm = config.Hash
		default:
			s.Algorithm = config.RoundRobin
		}
		s.HashPort = o.roundrobin && isHash(s.Algorithm)
		s.Stubborn = o.stubborn
		s.HTTP = o.http
		s.Log = o.log
	}
	s.WebStats = o.webStats
	if o.log != "" && strings.Contains(o.log, ":") && !strings.HasPrefix(o.log, "/") {
		return nil, fmt.Errorf("-l %s: logging to penlogd over the network is not supported; give a file", o.log)
	}

	secs := []struct {
		flag, v string
		min     int
		dst     *time.Duration
	}{
		{"-T", o.trackingExpiry, 0, &s.TrackingExpiry},
		{"-b", o.blacklist, 0, &s.Blacklist},
		{"-t", o.timeout, 1, &s.ConnectTimeout},
	}
	for _, x := range secs {
		if x.v == "" {
			continue
		}
		n, err := atoiMin(x.flag, x.v, x.min)
		if err != nil {
			return nil, err
		}
		*x.dst = time.Duration(n) * time.Second
	}
	ints := []struct {
		flag, v string
		min     int
		dst     *int
	}{
		{"-c", o.trackingMax, 1, &s.TrackingSize},
		{"-x", o.maxConn, 1, &s.MaxConnections},
		{"-q", o.backlog, 1, &s.Backlog},
	}
	for _, x := range ints {
		if x.v == "" {
			continue
		}
		n, err := atoiMin(x.flag, x.v, x.min)
		if err != nil {
			return nil, err
		}
		*x.dst = n
	}
	if o.backlog != "" && s.Backlog < 50 {
		s.Backlog = 50 // Pen's minimum
	}

	for i, arg := range servers {
		var b config.Backend
		var err error
		if dsr {
			b, err = parseDSRServer(arg)
		} else {
			b, err = parseServer(arg, listen.Port(), network)
		}
		if err != nil {
			return nil, fmt.Errorf("server %d (%q): %w", i, arg, err)
		}
		s.Backends = append(s.Backends, b)
	}
	if o.emergency != "" {
		ap, err := parseTarget(o.emergency, listen.Port(), network)
		if err != nil {
			return nil, fmt.Errorf("-e %s: %w", o.emergency, err)
		}
		s.Emergency = ap
	}
	if o.abuse != "" {
		ap, err := parseTarget(o.abuse, listen.Port(), network)
		if err != nil {
			return nil, fmt.Errorf("-B %s: %w", o.abuse, err)
		}
		s.Abuse = ap
	}

	if o.cert != "" {
		t := config.NewTLS(o.cert, o.key)
		// Pen only verifies clients with -R. Without it, Pen's -G file
		// serves (through OpenSSL's automatic chain building) as the
		// intermediates sent to clients, which is how Pen's users use it.
		switch {
		case o.requireClientCert && o.clientCA == "":
			return nil, errors.New("-R needs -G (the CA bundle that signs client certificates)")
		case o.requireClientCert:
			t.ClientCA, t.ClientAuth = o.clientCA, config.ClientAuthRequire
		default:
			t.Chain = o.clientCA
		}
		for _, f := range []struct{ flag, path string }{{"-E", t.Cert}, {"-K", t.Key}, {"-G", o.clientCA}} {
			if f.path == "" {
				continue
			}
			if _, err := os.Stat(f.path); err != nil {
				return nil, fmt.Errorf("%s: %w", f.flag, err)
			}
		}
		if o.udp {
			return nil, errors.New("-E (TLS) cannot be combined with -U (UDP)")
		}
		s.TLS = t
	} else {
		switch {
		case o.key != "":
			return nil, errors.New("-K needs -E (the certificate)")
		case o.clientCA != "":
			return nil, errors.New("-G needs -E (the certificate)")
		case o.requireClientCert:
			return nil, errors.New("-R needs -E (the certificate)")
		}
	}

	c := &config.Config{Debug: min(o.debug, maxDebug), Services: []config.Service{s}}
	if o.control != "" {
		ctl, err := parseControl(o.control)
		if err != nil {
			return nil, fmt.Errorf("-C %s: %w", o.control, err)
		}
		c.Control.PenListen = ctl
		// Pen checks control clients against list 0 unless told otherwise.
		c.Control.PenACL = "0"
		c.ACLs = map[string]config.ACL{"0": {}}
	}
	c.Control.AllowExit = o.exit
	return c, nil
}

// maxDebug is the highest debug level (Pen's -ddd).
const maxDebug = 3

// atoiMin parses a decimal number of at least lo.
func atoiMin(what, v string, lo int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > 1<<30 {
		return 0, fmt.Errorf("%s: bad number %q (want %d or more)", what, v, lo)
	}
	return n, nil
}

// parseListen parses Pen's listener "[host:]port", split at the last colon,
// so ":::53" and "::1:2222" work; "[::1]:2222" is accepted too. A bare port
// listens on 0.0.0.0.
func parseListen(s, network string) (netip.AddrPort, error) {
	if strings.Contains(s, "/") {
		return netip.AddrPort{}, fmt.Errorf("listen %s: Unix socket listeners are not supported", s)
	}
	host, port := "", s
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
	}
	p, err := parsePort(port, network)
	if err != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("listen %s: bad port %q", s, port)
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), p), nil
	}
	a, err := resolve(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("listen %s: %w", s, err)
	}
	return netip.AddrPortFrom(a, p), nil
}

// parsePort parses a port number or a service name.
func parsePort(s, network string) (uint16, error) {
	if s == "" {
		return 0, errors.New("empty port")
	}
	if n, err := strconv.ParseUint(s, 10, 16); err == nil {
		return uint16(n), nil
	}
	if s[0] >= '0' && s[0] <= '9' {
		return 0, fmt.Errorf("bad port %q", s)
	}
	n, err := net.LookupPort(network, s)
	if err != nil {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(n), nil
}

// resolve turns an address or host name into an address; "" is 127.0.0.1.
func resolve(host string) (netip.Addr, error) { return resolveWith(host, lookupHost) }

// resolveWith is resolve with lookup for host names.
func resolveWith(host string, lookup func(string) (netip.Addr, error)) (netip.Addr, error) {
	if host == "" {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1}), nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("address %s: zones are not supported", host)
		}
		return a.Unmap(), nil
	}
	a, err := lookup(host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("cannot resolve %q: %w", host, err)
	}
	return a, nil
}

// splitServer splits "h[:f1[:f2...]]" or "[v6][:f1...]" into the host and
// the remaining fields. A bare IPv6 address is a host without fields.
func splitServer(s string) (host string, fields []string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", nil, errors.New("missing ]")
		}
		host, rest := s[1:end], s[end+1:]
		if rest == "" {
			return host, nil, nil
		}
		if rest[0] != ':' {
			return "", nil, fmt.Errorf("unexpected %q after ]", rest)
		}
		return host, strings.Split(rest[1:], ":"), nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
		return s, nil, nil
	}
	f := strings.Split(s, ":")
	return f[0], f[1:], nil
}

// parseServer parses "h[:p[:maxc[:hard[:weight[:prio]]]]]". The port
// defaults to the listen port; an unspecified weight is 0, as in Pen (the
// balancer treats a table of all-zero weights as equal weights).
func parseServer(s string, defPort uint16, network string) (config.Backend, error) {
	return parseBackend(s, defPort, network, false)
}

// parseBackend parses a server argument. For DSR (dsr true) the port is
// ignored and stored as 0 and an unspecified weight is 1.
func parseBackend(s string, defPort uint16, network string, dsr bool) (config.Backend, error) {
	if strings.Contains(s, "/") {
		return config.Backend{}, errors.New("servers on Unix sockets are not supported")
	}
	host, f, err := splitServer(s)
	if err != nil {
		return config.Backend{}, err
	}
	if len(f) > 5 {
		return config.Backend{}, errors.New("too many fields: want host:port:max:hard:weight:prio")
	}
	a, err := resolve(host)
	if err != nil {
		return config.Backend{}, err
	}
	port := defPort
	if dsr {
		port = 0
	} else {
		if len(f) > 0 && f[0] != "" {
			if port, err = parsePort(f[0], network); err != nil {
				return config.Backend{}, err
			}
		}
		if port == 0 {
			return config.Backend{}, errors.New("port 0")
		}
	}
	b := config.NewBackend(netip.AddrPortFrom(a, port))
	if !dsr {
		b.Weight = 0
	}
	dst := []*int{&b.Max, &b.Hard, &b.Weight, &b.Prio}
	names := []string{"max", "hard", "weight", "prio"}
	for i, v := range f[min(len(f), 1):] {
		if v == "" {
			continue
		}
		n, err := atoiMin(names[i], v, 0)
		if err != nil {
			return config.Backend{}, err
		}
		*dst[i] = n
	}
	return b, nil
}

// parseTarget parses the emergency or abuse server "host[:port]".
func parseTarget(s string, defPort uint16, network string) (netip.AddrPort, error) {
	host, f, err := splitServer(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(f) > 1 {
		return netip.AddrPort{}, errors.New("want host[:port]")
	}
	a, err := resolve(host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port := defPort
	if len(f) == 1 && f[0] != "" {
		if port, err = parsePort(f[0], network); err != nil {
			return netip.AddrPort{}, err
		}
	}
	if port == 0 {
		return netip.AddrPort{}, errors.New("port 0")
	}
	return netip.AddrPortFrom(a, port), nil
}

// parseControl parses -C: a bare port (127.0.0.1, unlike Pen's 0.0.0.0),
// host:port split at the last colon, or a Unix socket path (anything with a
// slash), made absolute.
func parseControl(s string) (string, error) {
	if strings.Contains(s, "/") {
		p, err := filepath.Abs(s)
		if err != nil {
			return "", err
		}
		return p, nil
	}
	host, port := "127.0.0.1", s
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
	}
	p, err := parsePort(port, "tcp")
	if err != nil || p == 0 {
		return "", fmt.Errorf("bad port %q", port)
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return "", errors.New("give the address to listen on (e.g. 127.0.0.1:PORT); nib does not open the control port on all addresses by default")
	}
	a, err := resolve(host)
	if err != nil {
		return "", err
	}
	return netip.AddrPortFrom(a, p).String(), nil
}

// dsrInterface finds "dsr_if IF" among the -o/-O commands and checks IF.
// It returns "" when there is none; naming two interfaces is an error.
func dsrInterface(commands []string) (string, error) {
	iface := ""
	for _, cmd := range commands {
		t := tokens(cmd)
		if len(t) == 0 || t[0] != "dsr_if" {
			continue
		}
		if len(t) < 2 {
			return "", errors.New("dsr_if: missing interface name")
		}
		if err := config.CheckInterface(t[1]); err != nil {
			return "", fmt.Errorf("dsr_if: %v", err)
		}
		if iface != "" && iface != t[1] {
			return "", fmt.Errorf("dsr_if: two interfaces (%s and %s); one lbd service forwards on one", iface, t[1])
		}
		iface = t[1]
	}
	return iface, nil
}

// dsrFlags checks the flags against DSR mode: those Pen's DSR ignores are
// noted, those whose purpose DSR cannot serve are refused.
func (o *options) dsrFlags(inv *Invocation) error {
	for _, f := range []struct {
		set       bool
		flag, why string
	}{
		{o.emergency != "", "-e", "DSR has no emergency server; flows of dead or drained servers move to the others"},
		{o.abuse != "", "-B", "DSR has no abuse server; clients denied by client_acl are dropped"},
		{o.http, "-H", "DSR forwards frames and never sees HTTP requests"},
		{o.cert != "", "-E", "DSR forwards frames and cannot terminate TLS"},
	} {
		if f.set {
			return fmt.Errorf("%s cannot be used with dsr_if: %s", f.flag, f.why)
		}
	}
	for _, f := range []struct {
		set       bool
		flag, why string
	}{
		{o.hash, "-h", "DSR always hashes (weighted Maglev)"},
		{o.weight, "-W", "DSR always uses the server weights (weighted Maglev)"},
		{o.stubborn, "-s", "DSR never connects to servers, so there is no failover to turn off"},
		{o.log != "", "-l", "DSR logs no connections"},
	} {
		if f.set {
			inv.Notices = append(inv.Notices, fmt.Sprintf("%s ignored in DSR mode: %s", f.flag, f.why))
		}
	}
	return nil
}

// parseVIP parses the listener of a DSR service, Pen's VIP[:port]: no port
// or port 0 means every port. A bare port gives no VIP and is refused.
func parseVIP(s, network string) (netip.AddrPort, error) {
	if strings.Contains(s, "/") {
		return netip.AddrPort{}, fmt.Errorf("VIP %s: Unix sockets make no sense for DSR", s)
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		if a.Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("VIP %s: zones are not supported", s)
		}
		return netip.AddrPortFrom(a.Unmap(), 0), nil
	}
	host, port := s, ""
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" || strings.Trim(host, "0123456789") == "" && port == "" {
		return netip.AddrPort{}, fmt.Errorf("listen %s: with dsr_if the listener is the VIP[:port] (e.g. 192.0.2.100:80, or 192.0.2.100 for every port), not a bare port", s)
	}
	var p uint16
	if port != "" {
		var err error
		if p, err = parsePort(port, network); err != nil {
			return netip.AddrPort{}, fmt.Errorf("VIP %s: %w", s, err)
		}
	}
	a, err := resolve(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("VIP %s: %w", s, err)
	}
	return netip.AddrPortFrom(a, p), nil
}

// parseDSRServer parses a DSR server, "h[:p[:maxc[:hard[:weight[:prio]]]]]"
// like any other, but the port is ignored as in Pen (DSR never changes the
// destination port) and stored as 0, and an unspecified weight is 1 (Pen's
// DSR counts weight 0 as 1; in nib weight 0 drains the server).
func parseDSRServer(s string) (config.Backend, error) {
	return parseBackend(s, 0, "tcp", true)
}

// Usage prints lbd's help for Pen-style invocation.
func Usage(w io.Writer) {
	fmt.Fprint(w, `Usage: lbd [flags] [host:]port server1[:port[:max[:hard[:weight[:prio]]]]] ...
       lbd -print-toml [flags] [host:]port server ...   print the equivalent TOML

Pen-compatible flags (values may follow the letter or the next argument;
flags without values combine, as in -dfr):
  -b SEC      blacklist a server whose connect failed for SEC seconds [30]
  -B HOST[:PORT]  abuse server for clients denied by client_acl
  -c N        client tracking table size [2048]
  -C ADDR     plain-text control listener: PORT (127.0.0.1 only), HOST:PORT,
              or a Unix socket path
  -d          more debug output (repeat: -dd, -ddd)
  -e HOST[:PORT]  emergency server, used when no other server can be chosen
  -f          stay in the foreground
  -F FILE     read Pen config commands from FILE (also on SIGHUP)
  -h          choose the initial server by hashing the client address
  -H          HTTP: add X-Forwarded-For and X-Forwarded-Proto
  -j DIR      chroot into DIR after binding; as in Pen, the paths of -F,
              include, -l, -p and -w are then inside DIR (-E/-K/-G are not)
  -l FILE     request log
  -o CMD, -O CMD  run a config command (repeatable, in order)
  -p FILE     write the process id to FILE (after -j and -u; failing is an
              error)
  -q N        listen backlog [500]
  -r          round-robin: no client tracking (with -h, hash address and port)
  -s          stubborn: close the client rather than fail over
  -t SEC      backend connect timeout [3]
  -T SEC      forget tracked clients after SEC seconds (0 never) [0]
  -u USER     run as USER after binding and -j (supplementary groups dropped)
  -U          UDP instead of TCP
  -w FILE     HTML status file (written on SIGUSR1 and by "status")
  -W          weighted least connections (all weights 0: all equal)
  -x N        maximum simultaneous connections [500]
  -X          enable the "exit" control command
DSR (Direct Server Return; the service forwards frames, backends reply directly):
  -O "dsr_if IF"  forward on interface IF; the listener is then VIP[:port]
              (no port: every port), servers are addresses (ports ignored),
              -U forwards UDP, -r hashes each flow with the client port
  -O "tarpit_acl N"  tarpit the destination addresses ACL N permits (TCP)
TLS:
  -E FILE     terminate TLS with this PEM certificate chain
  -K FILE     PEM private key (default: in the -E file)
  -G FILE     PEM CA bundle to verify client certificates
  -R          require a valid client certificate
Accepted and ignored: -a -m N -P -Z -L PROTO, obsolete -D -n -Q -S N.
Refused: -N (never implemented in Pen), -A (use -G), -i (Windows only).
`)
}
