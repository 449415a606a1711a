package pen

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/acl"
	"github.com/nib-lb/nib/internal/atomicfile"
)

// The handlers of verbTable. call has checked the permission and the
// argument count; st.name is the verb, for error texts.

// Algorithm, in Pen's precedence prio > weight > hash > roundrobin. A DSR
// service always uses weighted Maglev, and Tracking alone chooses its flow
// key: the algorithm verbs leave it alone, as Pen's DSR ignores them.

func (st *state) roundrobin([]string) error {
	s := st.s()
	s.Tracking = false
	s.HashPort = isHash(s.Algorithm) && s.Mode == config.ModeProxy
	return nil
}

func (st *state) noRoundrobin([]string) error {
	s := st.s()
	s.Tracking = true
	s.HashPort = false
	return nil
}

func (st *state) hash([]string) error {
	s := st.s()
	if s.Mode == config.ModeDSR {
		return nil
	}
	if s.Algorithm == config.RoundRobin {
		s.Algorithm = config.Hash
	}
	s.HashPort = isHash(s.Algorithm) && !s.Tracking
	return nil
}

func (st *state) noHash([]string) error {
	s := st.s()
	if isHash(s.Algorithm) && s.Mode != config.ModeDSR {
		s.Algorithm = config.RoundRobin
		s.HashPort = false
	}
	return nil
}

func (st *state) weight([]string) error {
	s := st.s()
	if s.Algorithm != config.Prio && s.Mode != config.ModeDSR {
		s.Algorithm = config.Weight
	}
	return nil
}

func (st *state) noWeight([]string) error {
	s := st.s()
	if s.Algorithm == config.Weight {
		s.Algorithm = config.RoundRobin
	}
	return nil
}

func (st *state) prio([]string) error {
	s := st.s()
	if s.Mode != config.ModeDSR {
		s.Algorithm = config.Prio
	}
	return nil
}

func (st *state) noPrio([]string) error {
	s := st.s()
	if s.Algorithm == config.Prio {
		s.Algorithm = config.RoundRobin
	}
	return nil
}

func (st *state) mode([]string) error {
	s := st.s()
	st.printf("%shash %sroundrobin %sstubborn %sweight %sprio\n",
		no(isHash(s.Algorithm)), no(!s.Tracking), no(s.Stubborn),
		no(s.Algorithm == config.Weight), no(s.Algorithm == config.Prio))
	return nil
}

func (st *state) debug(args []string) error {
	if err := optNum(st.name, args, 0, &st.c.Debug); err != nil {
		return err
	}
	if st.c.Debug > maxDebug {
		return fmt.Errorf("debug: levels are 0 to %d", maxDebug)
	}
	st.printf("%d\n", st.c.Debug)
	return nil
}

// ACLs.

func (st *state) clientACL(args []string) error {
	s := st.s()
	if len(args) > 0 {
		n, err := aclNum(st.name, args[0])
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
	return nil
}

func (st *state) controlACL(args []string) error {
	if len(args) > 0 {
		n, err := aclNum(st.name, args[0])
		if err != nil {
			return err
		}
		st.c.Control.PenACL = strconv.Itoa(n)
		st.ensureACL(st.c.Control.PenACL)
	}
	st.printf("%s\n", aclName(st.c.Control.PenACL))
	return nil
}

func (st *state) tarpitACL(args []string) error {
	s := st.s()
	if len(args) > 0 && args[0] == "-1" {
		s.TarpitACL = "" // Pen's "off"
	} else if len(args) > 0 {
		n, err := aclNum(st.name, args[0])
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
	return nil
}

func (st *state) noTarpitACL([]string) error {
	st.s().TarpitACL = ""
	return nil
}

// acl runs "acl N permit|deny [ADDR [MASK]|V6[/LEN]]".
func (st *state) acl(args []string) error {
	n, err := aclNum("acl", args[0])
	if err != nil {
		return err
	}
	r, err := acl.ParsePen(args[1:])
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

// noACL runs "no acl N": it empties list N, and deletes it when nothing
// refers to it.
func (st *state) noACL(args []string) error {
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
	return nil
}

// Connections.

func (st *state) source(args []string) error {
	s := st.s()
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
	return nil
}

func (st *state) noSource([]string) error {
	st.s().Source = netip.Addr{}
	return nil
}

// Logs, status and the process.

func (st *state) log(args []string) error {
	s := st.s()
	if len(args) > 0 {
		if strings.Contains(args[0], ":") && !strings.HasPrefix(args[0], "/") {
			return fmt.Errorf("log: logging to penlogd over the network (%s) is not supported; give a file", args[0])
		}
		s.Log = args[0]
	}
	if s.Log != "" {
		st.printf("%s\n", s.Log)
	}
	return nil
}

func (st *state) noLog([]string) error {
	st.s().Log = ""
	return nil
}

func (st *state) webStats(args []string) error {
	s := st.s()
	if len(args) > 0 {
		s.WebStats = args[0]
	}
	if s.WebStats != "" {
		st.printf("%s\n", s.WebStats)
	}
	return nil
}

func (st *state) noWebStats([]string) error {
	st.s().WebStats = ""
	return nil
}

func (st *state) pid([]string) error {
	if st.in.RT != nil {
		st.printf("%d\n", st.in.RT.Pid())
	} else {
		st.printf("%d\n", os.Getpid())
	}
	return nil
}

func (st *state) control([]string) error {
	a := st.in.ControlAddr
	if a == "" {
		a = st.c.Control.PenListen
	}
	st.printf("%s\n", a)
	return nil
}

func (st *state) listen(args []string) error {
	s := st.s()
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
	return nil
}

// include runs the lines of a file on the working copy.
func (st *state) include(args []string) error {
	sub := *st.in
	sub.Cfg = st.c
	sub.Service = st.svc
	return sub.execFile(args[0], st.out, st.depth+1)
}

func (st *state) exit([]string) error {
	if !st.c.Control.AllowExit {
		st.printf(exitDisabled)
		return nil
	}
	if st.in.RT == nil {
		return errors.New("exit: lbd is not running")
	}
	*st.post = append(*st.post, st.in.RT.Exit)
	return nil
}

// Accepted for compatibility; see VERBS.md.

func (st *state) idlers(args []string) error {
	if err := checkNum(st, args); err != nil {
		return err
	}
	st.printf("Idlers: 0/0\n")
	return nil
}

func (st *state) tcpFastclose(args []string) error {
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
	return nil
}

func (st *state) sslCiphers([]string) error {
	st.printf("ssl_ciphers ignored: lbd uses Go's TLS 1.2+ cipher suites (set tls ciphers in the TOML configuration)\n")
	return nil
}

// sslOption maps Pen's OpenSSL protocol options onto the TLS minimum
// version; lbd never speaks SSLv2, SSLv3, TLS 1.0 or 1.1.
func (st *state) sslOption(args []string) error {
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

func (st *state) sslOCSPResponse(args []string) error {
	st.s().TLS.OCSPStaple = args[0]
	return nil
}

func (st *state) sslSNIPath(args []string) error {
	st.s().TLS.SNIDir = args[0]
	return nil
}

// dsrIf runs "dsr_if IF". ParseArgs applies -o/-O "dsr_if IF" before it
// builds the config (the listener must be read as the VIP), so here the
// service is already in DSR mode on IF and the verb does nothing; the
// same holds when a -F file repeats it, also on SIGHUP. Anything else
// would change the mode of a built service, which is refused. permit
// refuses dsr_if IF from a control client before this runs.
func (st *state) dsrIf(args []string) error {
	s := st.s()
	switch {
	case s.Mode == config.ModeDSR && s.Interface == args[0]:
		return nil
	case s.Mode == config.ModeDSR:
		return fmt.Errorf("dsr_if: the service forwards on %s; changing the interface needs a restart", s.Interface)
	}
	return errors.New("dsr_if: give it with -o/-O on the command line, where it makes the listener the VIP[:port]")
}

// Helpers.

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

func no(on bool) string {
	if on {
		return ""
	}
	return "no "
}

func isHash(a config.Algorithm) bool { return a == config.Hash || a == config.Maglev }

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

// maxRules bounds an ACL list.
const maxRules = 4096

// server runs "server N [acl A] [address A] [port P] [max M] [hard H]
// [blacklist T] [weight W] [prio P]".
func (st *state) server(args []string) error {
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

// servers prints the server table in Pen's format.
func (st *state) servers([]string) error {
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
		st.printf("%d addr %s port %d conn %d max %d hard %d weight %d prio %d sx %d rx %d",
			i, addr, port, ss.Conns, b.Max, b.Hard, b.Weight, b.Prio, ss.Sent, ss.Recv)
		if ss.Health != "" {
			st.printf(" health %s", ss.Health) // nib: Pen has no health checks
		}
		st.printf("\n")
	}
	return nil
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
func (st *state) status([]string) error {
	s := st.s()
	if s.WebStats == "" || st.in.RT == nil {
		st.printf("Unable to create webstats\n")
		return nil
	}
	var page bytes.Buffer
	if err := st.in.RT.StatusHTML(s.Name, &page); err != nil {
		return fmt.Errorf("status: %v", err)
	}
	if err := atomicfile.Write(s.WebStats, page.Bytes(), 0o644); err != nil {
		st.printf("Unable to create webstats\n")
		return nil
	}
	st.out.Write(page.Bytes())
	return nil
}

// penAddrPort prints an address the way Pen's listener syntax reads it:
// host:port split at the last colon, no brackets.
func penAddrPort(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return ""
	}
	return ap.Addr().String() + ":" + strconv.Itoa(int(ap.Port()))
}
