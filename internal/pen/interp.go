package pen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/acl"
)

// ServerStat is the live state of one server slot.
type ServerStat struct {
	// Conns is the number of open connections.
	Conns int
	// Sent is bytes sent to the server, Recv bytes received from it.
	Sent, Recv uint64
}

// ClientStat is the live state of one recent client.
type ClientStat struct {
	Addr     netip.Addr
	Connects int
	// Sent is bytes sent to the client, Recv bytes received from it.
	Sent, Recv uint64
}

// Runtime is lbd's live state; an Interp's RT is nil before lbd runs.
type Runtime interface {
	// ServerStats returns one entry per server slot of the service.
	ServerStats(service string) []ServerStat
	// Recent returns the clients seen within the given time.
	Recent(service string, within time.Duration) []ClientStat
	// Blacklist skips a server slot for d (0 clears the blacklist).
	Blacklist(service string, server int, d time.Duration) error
	// StatusHTML writes Pen's status page.
	StatusHTML(service string, w io.Writer) error
	// Pid is the process id.
	Pid() int
	// Exit stops lbd cleanly.
	Exit() error
}

// Interp runs Pen's config and control verbs against a config.
// It is not safe for concurrent use.
type Interp struct {
	// Cfg is the config the verbs act on. Exec replaces *Cfg as a whole
	// when a command succeeds and changes it, and leaves it untouched when a
	// command fails.
	Cfg *config.Config
	// Service is the index of the service Pen's verbs act on (default 0);
	// a line may start with "service NAME" to pick another one.
	Service int
	// RT is lbd's live state, nil before lbd runs.
	RT Runtime
	// ControlAddr is what the control verb prints; "" prints
	// Cfg.Control.PenListen.
	ControlAddr string
	// ConfigFile is the -F file: what write without a file name writes,
	// the only file a control client can have written.
	ConfigFile string
	// Startup says the commands come from the startup configuration
	// (-o/-O, the -F file, include), which may name files and directories
	// and set the listener: the verbs in startupOnly with an argument.
	// Leave it false for the control socket: its clients must not choose
	// files lbd reads or writes (see permit).
	Startup bool
	// Root, when set, is the directory the files named by the commands
	// (the -F file, include) are relative to: Pen's -j jail, before lbd
	// has chrooted into it. Pen opens them after its chroot.
	Root string
	// SaveTOML, when set, is what write without a file name does: lbd
	// serving a TOML file saves the running config there (atomically)
	// instead of writing Pen's format.
	SaveTOML func(*config.Config) error
	// Hosts, when set, answers for the host names of "server N address
	// HOST", and Exec does no DNS lookup itself: a name missing from Hosts
	// is an error. Set it from LookupHosts on the same line, called before
	// taking any lock, so a slow resolver never holds one (the control
	// socket). When nil, names are looked up as they are met.
	Hosts *Hosts
	// Validate runs config.Validate on the result of every command that
	// changes the config and refuses the command when it fails. Set it for
	// the control socket so the running config is always valid.
	Validate bool
}

// maxSlots bounds the server table (server N creates slots up to N).
const maxSlots = 1024

// maxIncludeDepth bounds nested include.
const maxIncludeDepth = 8

// maxLine bounds a command line, like Pen's 4095-byte control read.
const maxLine = 4095

// exitDisabled is the exit reply without -X.
const exitDisabled = "Exit is not enabled; restart with -X flag\n"

// Exec runs one command line. It reads up to the first \r or \n; tokens are
// separated by spaces or tabs; empty lines and lines starting with # do
// nothing. Replies are written to out in Pen's formats. changed reports
// whether Cfg was modified. On error Cfg is unchanged, nothing is written,
// and the error text is Pen-like free text fit for a control client.
func (in *Interp) Exec(line string, out io.Writer) (changed bool, err error) {
	if in.Cfg == nil {
		return false, errors.New("no configuration")
	}
	before, c := in.Cfg.Clone(), in.Cfg.Clone()
	var buf bytes.Buffer
	var post []func() error
	st := &state{in: in, c: c, svc: in.Service, out: &buf, post: &post}
	if err := st.line(line); err != nil {
		return false, err
	}
	changed = !reflect.DeepEqual(before, c)
	if changed && in.Validate {
		if err := config.Validate(c); err != nil {
			return false, fmt.Errorf("refused, the result would be invalid: %v", err)
		}
	}
	for _, f := range post {
		if err := f(); err != nil {
			return false, err
		}
	}
	if changed {
		*in.Cfg = *c
	}
	_, err = out.Write(buf.Bytes())
	return changed, err
}

// ExecFile runs every line of a Pen config file (as read at startup with -F
// and on SIGHUP). It is all or nothing: on an error, reported as
// FILE:LINE: text, Cfg is unchanged.
func (in *Interp) ExecFile(path string, out io.Writer) (changed bool, err error) {
	if in.Cfg == nil {
		return false, errors.New("no configuration")
	}
	before := in.Cfg.Clone()
	tmp := *in
	tmp.Cfg = in.Cfg.Clone()
	tmp.Validate = false
	var buf bytes.Buffer
	if err := tmp.execFile(path, &buf, 0); err != nil {
		return false, err
	}
	changed = !reflect.DeepEqual(before, tmp.Cfg)
	if changed && in.Validate {
		if err := config.Validate(tmp.Cfg); err != nil {
			return false, fmt.Errorf("%s: refused, the result would be invalid: %v", path, err)
		}
	}
	if changed {
		*in.Cfg = *tmp.Cfg
	}
	_, err = out.Write(buf.Bytes())
	return changed, err
}

func (in *Interp) execFile(path string, out io.Writer, depth int) error {
	if depth >= maxIncludeDepth {
		return fmt.Errorf("include %s: nested too deeply", path)
	}
	open := path
	if in.Root != "" {
		open = filepath.Join(in.Root, filepath.Join("/", path))
	}
	f, err := os.Open(open)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		st := &state{in: in, c: in.Cfg, svc: in.Service, out: out, depth: depth}
		var post []func() error
		st.post = &post
		if err := st.line(sc.Text()); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
		for _, f := range post {
			if err := f(); err != nil {
				return fmt.Errorf("%s:%d: %w", path, n, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// state is one command's working copy.
type state struct {
	in    *Interp
	c     *config.Config // the copy being changed
	svc   int
	out   io.Writer
	post  *[]func() error // side effects run after the change is accepted
	depth int
}

func (st *state) s() *config.Service { return &st.c.Services[st.svc] }

func (st *state) printf(format string, a ...any) { fmt.Fprintf(st.out, format, a...) }

// tokens truncates a line at the first \r or \n and splits it.
func tokens(line string) []string {
	if i := strings.IndexAny(line, "\r\n"); i >= 0 {
		line = line[:i]
	}
	if len(line) > maxLine {
		line = line[:maxLine]
	}
	return strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' })
}

func (st *state) line(line string) error {
	t := tokens(line)
	if len(t) == 0 || strings.HasPrefix(t[0], "#") {
		return nil
	}
	if t[0] == "service" {
		if len(t) == 1 {
			if err := st.checkService(); err != nil {
				return err
			}
			st.printf("%s\n", st.s().Name)
			return nil
		}
		i := st.findService(t[1])
		if i < 0 {
			return fmt.Errorf("service: no service named '%s'", t[1])
		}
		st.svc = i
		t = t[2:]
		if len(t) == 0 {
			return nil
		}
	}
	if err := st.checkService(); err != nil {
		return err
	}
	if err := st.permit(t[0], t[1:]); err != nil {
		return err
	}
	if t[0] == "no" {
		if len(t) < 2 {
			return nil // Pen ignores unknown "no" forms silently
		}
		return st.no(t[1], t[2:])
	}
	return st.verb(t[0], t[1:])
}

// startupOnly lists the verbs whose argument only the startup configuration
// (TOML, -F, -o, -O) may give, never a control client: the argument names a
// file or directory lbd reads, writes or serves from, or it changes what lbd
// listens on. Without an argument these verbs only show the value (write
// alone saves the -F file) and are allowed everywhere. The value is the
// reason given to a control client.
var startupOnly = map[string]string{
	"include":           "file names are accepted only in the startup configuration (TOML, -F, -o, -O)",
	"log":               "file names are accepted only in the startup configuration (TOML, -F, -o, -O)",
	"web_stats":         "file names are accepted only in the startup configuration (TOML, -F, -o, -O)",
	"write":             "file names are accepted only in the startup configuration (TOML, -F, -o, -O); write alone saves only the -F file",
	"ssl_ocsp_response": "file names are accepted only in the startup configuration (TOML, -F, -o, -O)",
	"ssl_sni_path":      "directories are accepted only in the startup configuration (TOML, -F, -o, -O)",
	"listen":            "the listener is set only in the startup configuration (TOML, -F, -o, -O); edit it and reload",
	"dsr_if":            "DSR is set up only in the startup configuration (-o/-O); it needs a restart",
}

// permit is the one permission check of the interpreter, run before any
// verb: a control client may not give a startupOnly verb its argument.
func (st *state) permit(verb string, args []string) error {
	why, ok := startupOnly[verb]
	if !ok || st.in.Startup || len(args) == 0 {
		return nil
	}
	return fmt.Errorf("%s: refused over the control socket: %s", verb, why)
}

func (st *state) findService(name string) int {
	for i, s := range st.c.Services {
		if s.Name == name {
			return i
		}
	}
	return -1
}

func (st *state) checkService() error {
	if st.svc < 0 || st.svc >= len(st.c.Services) {
		return fmt.Errorf("no service %d", st.svc)
	}
	return nil
}

// num parses a non-negative decimal number.
func num(verb, v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 1<<30 {
		return 0, fmt.Errorf("%s: bad number '%s'", verb, v)
	}
	return n, nil
}

// optNum handles "verb [N]": sets *dst when N is given.
func optNum(verb string, args []string, lo int, dst *int) error {
	if len(args) == 0 {
		return nil
	}
	n, err := num(verb, args[0])
	if err != nil {
		return err
	}
	if n < lo {
		return fmt.Errorf("%s: %d is below the minimum %d", verb, n, lo)
	}
	*dst = n
	return nil
}

// optSecs handles "verb [SECONDS]" for a duration.
func optSecs(verb string, args []string, lo int, dst *time.Duration) error {
	n := int(*dst / time.Second)
	if err := optNum(verb, args, lo, &n); err != nil {
		return err
	}
	if len(args) > 0 {
		*dst = time.Duration(n) * time.Second
	}
	return nil
}

func secs(d time.Duration) int { return int(d / time.Second) }

// verb runs a positive verb.
func (st *state) verb(v string, args []string) error {
	s := st.s()
	switch v {
	// Algorithm, in Pen's precedence prio > weight > hash > roundrobin.
	// A DSR service always uses weighted Maglev, and Tracking alone
	// chooses its flow key: the algorithm verbs leave it alone, as Pen's
	// DSR ignores them.
	case "roundrobin":
		s.Tracking = false
		s.HashPort = isHash(s.Algorithm) && s.Mode == config.ModeProxy
	case "hash":
		if s.Mode == config.ModeDSR {
			break
		}
		if s.Algorithm == config.RoundRobin {
			s.Algorithm = config.Hash
		}
		s.HashPort = isHash(s.Algorithm) && !s.Tracking
	case "weight":
		if s.Algorithm != config.Prio && s.Mode != config.ModeDSR {
			s.Algorithm = config.Weight
		}
	case "prio":
		if s.Mode != config.ModeDSR {
			s.Algorithm = config.Prio
		}
	case "stubborn":
		s.Stubborn = true
	case "mode":
		st.printf("%shash %sroundrobin %sstubborn %sweight %sprio\n",
			no(isHash(s.Algorithm)), no(!s.Tracking), no(s.Stubborn),
			no(s.Algorithm == config.Weight), no(s.Algorithm == config.Prio))

	case "tracking":
		if err := optSecs(v, args, 0, &s.TrackingExpiry); err != nil {
			return err
		}
		st.printf("%d\n", secs(s.TrackingExpiry))
	case "clients_max":
		if err := optNum(v, args, 1, &s.TrackingSize); err != nil {
			return err
		}
		st.printf("%d\n", s.TrackingSize)
	case "conn_max":
		if err := optNum(v, args, 1, &s.MaxConnections); err != nil {
			return err
		}
		st.printf("%d\n", s.MaxConnections)
	case "blacklist":
		if err := optSecs(v, args, 0, &s.Blacklist); err != nil {
			return err
		}
		st.printf("%d\n", secs(s.Blacklist))
	case "timeout":
		if err := optSecs(v, args, 1, &s.ConnectTimeout); err != nil {
			return err
		}
		st.printf("%d\n", secs(s.ConnectTimeout))
	case "idle_timeout":
		if err := optSecs(v, args, 0, &s.IdleTimeout); err != nil {
			return err
		}
		st.printf("Idle timeout: %d seconds\n", secs(s.IdleTimeout))
	case "debug":
		if err := optNum(v, args, 0, &st.c.Debug); err != nil {
			return err
		}
		if st.c.Debug > maxDebug {
			return fmt.Errorf("debug: levels are 0 to %d", maxDebug)
		}
		st.printf("%d\n", st.c.Debug)

	case "server":
		return st.server(args)
	case "servers":
		st.servers()
	case "acl":
		return st.acl(args)
	case "client_acl":
		if len(args) > 0 {
			n, err := aclNum(v, args[0])
			if err != nil {
				return err
			}
			// List 0 is not a client ACL in nib (see doc.go).
			s.ClientACL = ""
			if n != 0 {
				s.ClientACL = strconv.Itoa(n)
				st.ensureACL(s.ClientACL)
			}
		}
		st.printf("%s\n", aclName(s.ClientACL))
	case "control_acl":
		if len(args) > 0 {
			n, err := aclNum(v, args[0])
			if err != nil {
				return err
			}
			st.c.Control.PenACL = strconv.Itoa(n)
			st.ensureACL(st.c.Control.PenACL)
		}
		st.printf("%s\n", aclName(st.c.Control.PenACL))
	case "tarpit_acl":
		if len(args) > 0 && args[0] == "-1" {
			s.TarpitACL = "" // Pen's "off"
		} else if len(args) > 0 {
			n, err := aclNum(v, args[0])
			if err != nil {
				return err
			}
			if s.Mode != config.ModeDSR {
				return errors.New("tarpit_acl: the tarpit needs DSR mode (-O \"dsr_if IF\")")
			}
			if s.Protocol != config.TCP {
				return errors.New("tarpit_acl: the tarpit answers TCP SYNs; it cannot be used with -U")
			}
			s.TarpitACL = strconv.Itoa(n)
			st.ensureACL(s.TarpitACL)
		}
		// Pen's reply has no newline.
		if s.TarpitACL == "" {
			st.printf("tarpit_acl = -1")
		} else {
			st.printf("tarpit_acl = %s", s.TarpitACL)
		}

	case "http":
		s.HTTP = true
	case "tcp_nodelay":
		s.NoDelay = true
	case "keepalive":
		s.KeepAlive = true
	case "source":
		if len(args) == 0 {
			if s.Source.IsValid() {
				st.printf("%s\n", s.Source)
			}
			return nil
		}
		a, err := netip.ParseAddr(args[0])
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("unable to set source address to '%s'", args[0])
		}
		s.Source = a.Unmap()
	case "log":
		if len(args) > 0 {
			if strings.Contains(args[0], ":") && !strings.HasPrefix(args[0], "/") {
				return fmt.Errorf("log: logging to penlogd over the network (%s) is not supported; give a file", args[0])
			}
			s.Log = args[0]
		}
		if s.Log != "" {
			st.printf("%s\n", s.Log)
		}
	case "web_stats":
		if len(args) > 0 {
			s.WebStats = args[0]
		}
		if s.WebStats != "" {
			st.printf("%s\n", s.WebStats)
		}
	case "status":
		return st.status()
	case "recent":
		return st.recent(args)
	case "pid":
		if st.in.RT != nil {
			st.printf("%d\n", st.in.RT.Pid())
		} else {
			st.printf("%d\n", os.Getpid())
		}
	case "control":
		a := st.in.ControlAddr
		if a == "" {
			a = st.c.Control.PenListen
		}
		st.printf("%s\n", a)
	case "listen":
		if len(args) > 0 {
			network := "tcp"
			if s.Protocol == config.UDP {
				network = "udp"
			}
			parse := parseListen
			if s.Mode == config.ModeDSR {
				parse = parseVIP
			}
			ap, err := parse(args[0], network)
			if err != nil {
				return err
			}
			s.Listen = ap
		}
		st.printf("%s\n", penAddrPort(s.Listen))
	case "write":
		return st.write(args)
	case "include":
		if len(args) == 0 {
			return errors.New("include: missing file name")
		}
		sub := *st.in
		sub.Cfg = st.c
		sub.Service = st.svc
		return sub.execFile(args[0], st.out, st.depth+1)
	case "exit":
		if !st.c.Control.AllowExit {
			st.printf(exitDisabled)
			return nil
		}
		if st.in.RT == nil {
			return errors.New("exit: lbd is not running")
		}
		*st.post = append(*st.post, st.in.RT.Exit)

	// Accepted for compatibility; see VERBS.md.
	case "idlers":
		if len(args) > 0 {
			if _, err := num(v, args[0]); err != nil {
				return err
			}
		}
		st.printf("Idlers: 0/0\n")
	case "epoll", "kqueue", "poll", "select", "ascii", "abort_on_error", "dsr_ip",
		"ssl_client_renegotiation_interval":
	case "multi_accept", "pending_max":
		if len(args) > 0 {
			if _, err := num(v, args[0]); err != nil {
				return err
			}
		}
	case "tcp_fastclose":
		if len(args) == 0 {
			st.printf("do_cmd: ignoring tcp_fastclose without argument\n")
			return nil
		}
		switch args[0] {
		case "off":
		case "up", "down", "both":
			return fmt.Errorf("tcp_fastclose %s: not supported; lbd passes half-closes on and closes when both sides are done", args[0])
		default:
			return fmt.Errorf("tcp_fastclose: expected up, down, both or off, not '%s'", args[0])
		}
	case "peek":
		return errors.New("peek: not supported (unfinished in Pen)")
	case "dummy":
		return errors.New("dummy: not supported on a service; use a [[dummy]] server in the TOML configuration")
	case "transparent":
		return errors.New("transparent: transparent mode is not supported")
	case "dsr_if":
		return st.dsrIf(args)
	case "ssl_ciphers":
		if err := st.needTLS(v); err != nil {
			return err
		}
		st.printf("ssl_ciphers ignored: lbd uses Go's TLS 1.2+ cipher suites (set tls ciphers in the TOML configuration)\n")
	case "ssl_option":
		return st.sslOption(args)
	case "ssl_ocsp_response":
		if err := st.needTLS(v); err != nil {
			return err
		}
		if len(args) == 0 {
			return errors.New("ssl_ocsp_response: missing file name")
		}
		s.TLS.OCSPStaple = args[0]
	case "ssl_sni_path":
		if err := st.needTLS(v); err != nil {
			return err
		}
		if len(args) == 0 {
			return errors.New("ssl_sni_path: missing directory")
		}
		s.TLS.SNIDir = args[0]
	case "connection", "close", "socket":
		return fmt.Errorf("%s: not supported; see status for connections", v)
	default:
		st.printf("do_cmd: ignoring command starting with '%s'\n", v)
	}
	return nil
}

// no runs "no VERB".
func (st *state) no(v string, args []string) error {
	s := st.s()
	switch v {
	case "roundrobin":
		s.Tracking = true
		s.HashPort = false
	case "hash":
		if isHash(s.Algorithm) && s.Mode != config.ModeDSR {
			s.Algorithm = config.RoundRobin
			s.HashPort = false
		}
	case "weight":
		if s.Algorithm == config.Weight {
			s.Algorithm = config.RoundRobin
		}
	case "prio":
		if s.Algorithm == config.Prio {
			s.Algorithm = config.RoundRobin
		}
	case "stubborn":
		s.Stubborn = false
	case "http":
		s.HTTP = false
	case "tcp_nodelay":
		s.NoDelay = false
	case "keepalive":
		s.KeepAlive = false
	case "source":
		s.Source = netip.Addr{}
	case "tarpit_acl":
		s.TarpitACL = ""
	case "log":
		s.Log = ""
	case "web_stats":
		s.WebStats = ""
	case "acl":
		if len(args) == 0 {
			return errors.New("no acl: missing list number")
		}
		n, err := aclNum("no acl", args[0])
		if err != nil {
			return err
		}
		name := strconv.Itoa(n)
		if st.aclReferenced(name) {
			st.ensureACL(name)
			st.c.ACLs[name] = config.ACL{}
		} else {
			delete(st.c.ACLs, name)
		}
	}
	// Other "no" forms (ascii, peek, dummy, transparent, ...) are accepted
	// and do nothing, as unknown "no" forms do in Pen.
	return nil
}

func no(on bool) string {
	if on {
		return ""
	}
	return "no "
}

func isHash(a config.Algorithm) bool { return a == config.Hash || a == config.Maglev }

func (st *state) needTLS(verb string) error {
	if st.s().TLS == nil {
		return fmt.Errorf("%s: TLS is not enabled; start with -E CERT", verb)
	}
	return nil
}

// sslOption maps Pen's OpenSSL protocol options onto the TLS minimum
// version; lbd never speaks SSLv2, SSLv3, TLS 1.0 or 1.1.
func (st *state) sslOption(args []string) error {
	if err := st.needTLS("ssl_option"); err != nil {
		return err
	}
	if len(args) == 0 {
		return errors.New("ssl_option: missing option")
	}
	t := st.s().TLS
	switch args[0] {
	case "no_sslv2", "no_sslv3", "no_tlsv1", "no_tlsv1.1", "cipher_server_preference":
	case "no_tlsv1.2":
		t.MinVersion = 0x0304 // tls.VersionTLS13
	default:
		return fmt.Errorf("ssl_option: unknown option '%s'", args[0])
	}
	return nil
}

// aclNum parses Pen's ACL list number 0-9.
func aclNum(verb, v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 9 {
		return 0, fmt.Errorf("%s: ACL numbers are 0 to 9, not '%s'", verb, v)
	}
	return n, nil
}

// aclName prints an ACL reference the Pen way: "" is list 0.
func aclName(name string) string {
	if name == "" {
		return "0"
	}
	return name
}

func (st *state) ensureACL(name string) {
	if st.c.ACLs == nil {
		st.c.ACLs = map[string]config.ACL{}
	}
	if _, ok := st.c.ACLs[name]; !ok {
		st.c.ACLs[name] = config.ACL{}
	}
}

func (st *state) aclReferenced(name string) bool {
	if st.c.Control.PenACL == name {
		return true
	}
	for _, s := range st.c.Services {
		if s.ClientACL == name || s.TarpitACL == name {
			return true
		}
		for _, b := range s.Backends {
			if b.ACL == name {
				return true
			}
		}
	}
	return false
}

// acl runs "acl N permit|deny [ADDR [MASK]|V6[/LEN]]".
func (st *state) acl(args []string) error {
	if len(args) < 2 {
		return errors.New("acl: usage is acl N permit|deny [address [mask]]")
	}
	n, err := aclNum("acl", args[0])
	if err != nil {
		return err
	}
	r, err := parseRule(args[1:])
	if err != nil {
		return err
	}
	name := strconv.Itoa(n)
	st.ensureACL(name)
	a := st.c.ACLs[name]
	if len(a.Rules) >= maxRules {
		return fmt.Errorf("acl: list %d is full (%d entries)", n, maxRules)
	}
	a.Rules = append(a.Rules, r)
	st.c.ACLs[name] = a
	return nil
}

// maxRules bounds an ACL list.
const maxRules = 4096

// parseRule parses "permit|deny [A.B.C.D [MASK] | V6[/LEN]]" with
// internal/acl; without an address the rule matches every client.
func parseRule(args []string) (config.Rule, error) {
	r, err := acl.ParsePen(args)
	if err != nil {
		return config.Rule{}, err
	}
	return config.Rule{Action: configAction(r.Action), Prefix: r.Prefix}, nil
}

func configAction(a acl.Action) config.Action {
	if a == acl.Deny {
		return config.Deny
	}
	return config.Permit
}

// server runs "server N [acl A] [address A] [port P] [max M] [hard H]
// [blacklist T] [weight W] [prio P]".
func (st *state) server(args []string) error {
	if len(args) == 0 {
		return errors.New("server: missing slot number")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 0 || n >= maxSlots {
		return fmt.Errorf("server: slot numbers are 0 to %d, not '%s'", maxSlots-1, args[0])
	}
	args = args[1:]
	if len(args)%2 != 0 {
		return fmt.Errorf("server: '%s' needs a value", args[len(args)-1])
	}
	s := st.s()
	for len(s.Backends) <= n {
		s.Backends = append(s.Backends, unusedBackend(s.Mode))
	}
	b := &s.Backends[n]
	network := "tcp"
	if s.Protocol == config.UDP {
		network = "udp"
	}
	blacklist := -1
	for i := 0; i < len(args); i += 2 {
		k, v := args[i], args[i+1]
		switch k {
		case "acl":
			a, err := aclNum("server acl", v)
			if err != nil {
				return err
			}
			b.ACL = ""
			if a != 0 {
				b.ACL = strconv.Itoa(a)
				st.ensureACL(b.ACL)
			}
		case "address":
			a, err := st.in.Hosts.resolve(serverHost(v))
			if err != nil {
				return fmt.Errorf("server: %v", err)
			}
			if a.IsUnspecified() {
				b.Address = unusedBackend(s.Mode).Address
				continue
			}
			port := b.Address.Port()
			if port == 0 {
				port = s.Listen.Port()
			}
			if s.Mode == config.ModeDSR {
				port = 0 // DSR never changes the destination port
			}
			b.Address = netip.AddrPortFrom(a, port)
		case "port":
			p, err := parsePort(v, network)
			if err != nil {
				return fmt.Errorf("server: %v", err)
			}
			if s.Mode == config.ModeDSR {
				continue // ignored, as in Pen's DSR
			}
			b.Address = netip.AddrPortFrom(b.Address.Addr(), p)
		case "max", "hard", "weight", "prio":
			x, err := num("server "+k, v)
			if err != nil {
				return err
			}
			*map[string]*int{"max": &b.Max, "hard": &b.Hard, "weight": &b.Weight, "prio": &b.Prio}[k] = x
		case "blacklist":
			if blacklist, err = num("server blacklist", v); err != nil {
				return err
			}
		default:
			return fmt.Errorf("server: unknown keyword '%s'", k)
		}
	}
	if blacklist >= 0 {
		if st.in.RT == nil {
			return errors.New("server: blacklist needs a running lbd")
		}
		rt, name, d := st.in.RT, s.Name, time.Duration(blacklist)*time.Second
		*st.post = append(*st.post, func() error { return rt.Blacklist(name, n, d) })
	}
	return nil
}

// unusedBackend is an empty server slot (Pen's address 0.0.0.0). Its
// weight is Pen's default 0, except in DSR mode, where Pen counts weight 0
// as 1 but nib drains the server: there it is 1.
func unusedBackend(m config.Mode) config.Backend {
	b := config.NewBackend(netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
	if m != config.ModeDSR {
		b.Weight = 0
	}
	return b
}

// dsrIf runs "dsr_if IF". ParseArgs applies -o/-O "dsr_if IF" before it
// builds the config (the listener must be read as the VIP), so here the
// service is already in DSR mode on IF and the verb does nothing; the
// same holds when a -F file repeats it, also on SIGHUP. Anything else
// would change the mode of a built service, which is refused. permit
// refuses dsr_if IF from a control client before this runs.
func (st *state) dsrIf(args []string) error {
	if len(args) == 0 {
		return errors.New("dsr_if: missing interface name")
	}
	s := st.s()
	switch {
	case s.Mode == config.ModeDSR && s.Interface == args[0]:
		return nil
	case s.Mode == config.ModeDSR:
		return fmt.Errorf("dsr_if: the service forwards on %s; changing the interface needs a restart", s.Interface)
	}
	return errors.New("dsr_if: give it with -o/-O on the command line, where it makes the listener the VIP[:port]")
}

// servers prints the server table in Pen's format.
func (st *state) servers() {
	s := st.s()
	var stats []ServerStat
	if st.in.RT != nil {
		stats = st.in.RT.ServerStats(s.Name)
	}
	for i, b := range s.Backends {
		var ss ServerStat
		if i < len(stats) {
			ss = stats[i]
		}
		addr, port := "0.0.0.0", 0
		if b.Used() {
			addr, port = b.Address.Addr().String(), int(b.Address.Port())
		}
		st.printf("%d addr %s port %d conn %d max %d hard %d weight %d prio %d sx %d rx %d\n",
			i, addr, port, ss.Conns, b.Max, b.Hard, b.Weight, b.Prio, ss.Sent, ss.Recv)
	}
}

// recent prints clients seen in the last N seconds (default 300).
func (st *state) recent(args []string) error {
	n := 300
	if err := optNum("recent", args, 0, &n); err != nil {
		return err
	}
	if st.in.RT == nil {
		return nil
	}
	for _, c := range st.in.RT.Recent(st.s().Name, time.Duration(n)*time.Second) {
		st.printf("%s connects %d sx %d rx %d\n", c.Addr, c.Connects, c.Sent, c.Recv)
	}
	return nil
}

// status rewrites the -w file and streams the page back.
func (st *state) status() error {
	s := st.s()
	if s.WebStats == "" || st.in.RT == nil {
		st.printf("Unable to create webstats\n")
		return nil
	}
	var page bytes.Buffer
	if err := st.in.RT.StatusHTML(s.Name, &page); err != nil {
		return fmt.Errorf("status: %v", err)
	}
	if err := writeFileAtomic(s.WebStats, page.Bytes()); err != nil {
		st.printf("Unable to create webstats\n")
		return nil
	}
	st.out.Write(page.Bytes())
	return nil
}

// write saves the service in Pen's format.
func (st *state) write(args []string) error {
	if len(args) == 0 && st.in.SaveTOML != nil {
		if err := st.in.SaveTOML(st.c); err != nil {
			return fmt.Errorf("write: %v", err)
		}
		return nil
	}
	path := st.in.ConfigFile
	if len(args) > 0 {
		path = args[0]
	}
	if path == "" {
		return errors.New("write: no file given and no -F file")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Generated by lbd %s\n", time.Now().Format(time.DateTime))
	WriteConfig(st.c, st.svc, &b)
	if err := writeFileAtomic(path, b.Bytes()); err != nil {
		return fmt.Errorf("write: %v", err)
	}
	return nil
}

// writeFileAtomic replaces path with data: temp file, fsync, rename.
func writeFileAtomic(path string, data []byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// penAddrPort prints an address the way Pen's listener syntax reads it:
// host:port split at the last colon, no brackets.
func penAddrPort(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return ""
	}
	return ap.Addr().String() + ":" + strconv.Itoa(int(ap.Port()))
}
