package pen

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nib-lb/nib/config"
)

// verb is one of Pen's verbs: an entry of the verb table.
type verb struct {
	// name is the first word of the command ("no acl" for a no form).
	name string
	// min is the fewest arguments the verb takes; with fewer it is refused
	// with "name: missing". max is the most it reads: further arguments are
	// ignored, as Pen's strtok leaves them (max < 0: run reads them all and
	// refuses what it does not expect).
	min, max int
	missing  string
	// namesPath says the argument names a file or directory lbd reads,
	// writes or serves from; startupOnly that it sets what lbd listens or
	// forwards on. Either way only the startup configuration may give the
	// argument (see permit); why is the reason a control client is given
	// (default: pathsWhy).
	namesPath, startupOnly bool
	why                    string
	// needTLS refuses the verb on a service without TLS (-E), before the
	// arguments are checked.
	needTLS bool
	// changes says the verb may change the config; the others never do
	// (TestVerbChanges checks).
	changes bool
	// run is the handler. It sees at least min and, when max >= 0, at most
	// max arguments.
	run func(st *state, args []string) error
	// no is "no NAME"; without it "no NAME" does nothing, as every "no"
	// form Pen does not know.
	no *verb
}

// startupConfig names the startup configuration in refusals.
const startupConfig = "the startup configuration (TOML, -F, -o, -O)"

// pathsWhy is why a control client may not name a file.
const pathsWhy = "file names are accepted only in " + startupConfig

// verbTable is every verb the interpreter knows, in VERBS.md's order.
// Words not in it print "do_cmd: ignoring command starting with 'X'", as
// in Pen. "service NAME" is a prefix of the line, not a verb (see line).
var verbTable = []verb{
	// Algorithm, in Pen's precedence prio > weight > hash > roundrobin.
	{name: "roundrobin", changes: true, run: (*state).roundrobin, no: &verb{changes: true, run: (*state).noRoundrobin}},
	{name: "hash", changes: true, run: (*state).hash, no: &verb{changes: true, run: (*state).noHash}},
	{name: "weight", changes: true, run: (*state).weight, no: &verb{changes: true, run: (*state).noWeight}},
	{name: "prio", changes: true, run: (*state).prio, no: &verb{changes: true, run: (*state).noPrio}},
	{name: "stubborn", changes: true, run: flag(stubborn, true), no: &verb{changes: true, run: flag(stubborn, false)}},
	{name: "mode", run: (*state).mode},

	// Settings: "verb [N]" sets the value when N is given and prints it.
	{name: "tracking", max: 1, changes: true, run: seconds(trackingExpiry, 0, "%d\n")},
	{name: "clients_max", max: 1, changes: true, run: number(trackingSize, 1)},
	{name: "conn_max", max: 1, changes: true, run: number(maxConnections, 1)},
	{name: "blacklist", max: 1, changes: true, run: seconds(blacklist, 0, "%d\n")},
	{name: "timeout", max: 1, changes: true, run: seconds(connectTimeout, 1, "%d\n")},
	{name: "idle_timeout", max: 1, changes: true, run: seconds(idleTimeout, 0, "Idle timeout: %d seconds\n")},
	{name: "debug", max: 1, changes: true, run: (*state).debug},

	// Servers and ACLs.
	{name: "server", min: 1, max: -1, missing: "missing slot number", changes: true, run: (*state).server},
	{name: "servers", run: (*state).servers},
	{name: "acl", min: 2, max: -1, missing: "usage is acl N permit|deny [address [mask]]", changes: true, run: (*state).acl,
		no: &verb{min: 1, max: 1, missing: "missing list number", changes: true, run: (*state).noACL}},
	{name: "client_acl", max: 1, changes: true, run: (*state).clientACL},
	{name: "control_acl", max: 1, changes: true, run: (*state).controlACL},
	{name: "tarpit_acl", max: 1, changes: true, run: (*state).tarpitACL, no: &verb{changes: true, run: (*state).noTarpitACL}},

	// Connections.
	{name: "http", changes: true, run: flag(httpMode, true), no: &verb{changes: true, run: flag(httpMode, false)}},
	{name: "tcp_nodelay", changes: true, run: flag(noDelay, true), no: &verb{changes: true, run: flag(noDelay, false)}},
	{name: "keepalive", changes: true, run: flag(keepAlive, true), no: &verb{changes: true, run: flag(keepAlive, false)}},
	{name: "source", max: 1, changes: true, run: (*state).source, no: &verb{changes: true, run: (*state).noSource}},

	// Logs, status and the process.
	{name: "log", max: 1, namesPath: true, changes: true, run: (*state).log, no: &verb{changes: true, run: (*state).noLog}},
	{name: "web_stats", max: 1, namesPath: true, changes: true, run: (*state).webStats, no: &verb{changes: true, run: (*state).noWebStats}},
	{name: "status", run: (*state).status},
	{name: "recent", max: 1, run: (*state).recent},
	{name: "pid", run: (*state).pid},
	{name: "control", run: (*state).control},
	{name: "listen", max: 1, startupOnly: true, changes: true,
		why: "the listener is set only in " + startupConfig + "; edit it and reload", run: (*state).listen},
	{name: "dsr_if", min: 1, max: 1, missing: "missing interface name", startupOnly: true,
		why: "DSR is set up only in the startup configuration (-o/-O); it needs a restart", run: (*state).dsrIf},
	{name: "write", max: 1, namesPath: true, why: pathsWhy + "; write alone saves only the -F file", run: (*state).write},
	{name: "include", min: 1, max: 1, missing: "missing file name", namesPath: true, changes: true, run: (*state).include},
	{name: "exit", run: (*state).exit},

	// Accepted for compatibility.
	{name: "epoll", run: nop},
	{name: "kqueue", run: nop},
	{name: "poll", run: nop},
	{name: "select", run: nop},
	{name: "multi_accept", max: 1, run: checkNum},
	{name: "pending_max", max: 1, run: checkNum},
	{name: "idlers", max: 1, run: (*state).idlers},
	{name: "ascii", run: nop, no: &verb{run: nop}},
	{name: "abort_on_error", run: nop, no: &verb{run: nop}},
	{name: "dsr_ip", max: 1, run: nop},
	{name: "tcp_fastclose", max: 1, run: (*state).tcpFastclose},
	{name: "ssl_client_renegotiation_interval", max: 1, run: nop},
	{name: "ssl_option", min: 1, max: 1, missing: "missing option", needTLS: true, changes: true, run: (*state).sslOption},
	{name: "ssl_ciphers", max: 1, needTLS: true, run: (*state).sslCiphers},
	{name: "ssl_ocsp_response", min: 1, max: 1, missing: "missing file name", namesPath: true, needTLS: true, changes: true,
		run: (*state).sslOCSPResponse},
	{name: "ssl_sni_path", min: 1, max: 1, missing: "missing directory", namesPath: true,
		why: "directories are accepted only in " + startupConfig, needTLS: true, changes: true, run: (*state).sslSNIPath},

	// Refused with a message.
	{name: "peek", run: refuse("not supported (unfinished in Pen)"), no: &verb{run: nop}},
	{name: "dummy", run: refuse("not supported on a service; use a [[dummy]] server in the TOML configuration"), no: &verb{run: nop}},
	{name: "transparent", run: refuse("transparent mode is not supported"), no: &verb{run: nop}},
	{name: "connection", max: 1, run: refuse("not supported; see status for connections")},
	{name: "close", max: 1, run: refuse("not supported; see status for connections")},
	{name: "socket", max: 1, run: refuse("not supported; see status for connections")},
}

// verbs indexes verbTable by name.
var verbs = map[string]*verb{}

func init() {
	for i := range verbTable {
		v := &verbTable[i]
		if v.no != nil {
			v.no.name = "no " + v.name
		}
		verbs[v.name] = v
	}
}

// do runs the verb named by the first word of a command with the rest as
// its arguments: "no NAME" runs NAME's no form, or does nothing, as unknown
// "no" forms in Pen; a word not in the table is ignored with Pen's message.
func (st *state) do(name string, args []string) error {
	if name == "no" {
		if len(args) == 0 {
			return nil
		}
		if v := verbs[args[0]]; v != nil && v.no != nil {
			return st.call(v.no, args[1:])
		}
		return nil
	}
	v := verbs[name]
	if v == nil {
		st.printf("do_cmd: ignoring command starting with '%s'\n", name)
		return nil
	}
	return st.call(v, args)
}

// call runs v's handler after the checks every verb shares, in this order:
// the permission gate, TLS, the argument count.
func (st *state) call(v *verb, args []string) error {
	if err := st.permit(v, args); err != nil {
		return err
	}
	if v.needTLS && st.s().TLS == nil {
		return fmt.Errorf("%s: TLS is not enabled; start with -E CERT", v.name)
	}
	if len(args) < v.min {
		return fmt.Errorf("%s: %s", v.name, v.missing)
	}
	if v.max >= 0 && len(args) > v.max {
		args = args[:v.max]
	}
	st.name = v.name
	return v.run(st, args)
}

// permit is the interpreter's one permission check, run before any
// handler: only the startup configuration (TOML, -F, -o, -O, include) may
// give a verb that names a path or is startup only its argument, never a
// control client (Interp.Startup false), since Pen lets any control client
// read and overwrite files and move the listener. Without an argument
// these verbs only show the value (write alone saves the -F file) and are
// allowed everywhere.
func (st *state) permit(v *verb, args []string) error {
	if !v.namesPath && !v.startupOnly || st.in.Startup || len(args) == 0 {
		return nil
	}
	why := v.why
	if why == "" {
		why = pathsWhy
	}
	return fmt.Errorf("%s: refused over the control socket: %s", v.name, why)
}

// Handlers shared by several verbs.

func nop(*state, []string) error { return nil }

// checkNum accepts "verb [N]" with a valid N and does nothing.
func checkNum(st *state, args []string) error {
	if len(args) > 0 {
		if _, err := num(st.name, args[0]); err != nil {
			return err
		}
	}
	return nil
}

// refuse is a verb nib does not support.
func refuse(why string) func(*state, []string) error {
	return func(st *state, _ []string) error { return fmt.Errorf("%s: %s", st.name, why) }
}

// flag sets or clears a boolean of the service.
func flag(field func(*config.Service) *bool, on bool) func(*state, []string) error {
	return func(st *state, _ []string) error {
		*field(st.s()) = on
		return nil
	}
}

// number is "verb [N]" for a number of the service: N >= lo sets it; the
// value is printed.
func number(field func(*config.Service) *int, lo int) func(*state, []string) error {
	return func(st *state, args []string) error {
		p := field(st.s())
		if err := optNum(st.name, args, lo, p); err != nil {
			return err
		}
		st.printf("%d\n", *p)
		return nil
	}
}

// seconds is "verb [N]" for a duration of the service in seconds: N >= lo
// sets it; the value is printed with format.
func seconds(field func(*config.Service) *time.Duration, lo int, format string) func(*state, []string) error {
	return func(st *state, args []string) error {
		p := field(st.s())
		if err := optSecs(st.name, args, lo, p); err != nil {
			return err
		}
		st.printf(format, secs(*p))
		return nil
	}
}

// The service fields the generic handlers set.

func stubborn(s *config.Service) *bool                { return &s.Stubborn }
func httpMode(s *config.Service) *bool                { return &s.HTTP }
func noDelay(s *config.Service) *bool                 { return &s.NoDelay }
func keepAlive(s *config.Service) *bool               { return &s.KeepAlive }
func trackingSize(s *config.Service) *int             { return &s.TrackingSize }
func maxConnections(s *config.Service) *int           { return &s.MaxConnections }
func trackingExpiry(s *config.Service) *time.Duration { return &s.TrackingExpiry }
func blacklist(s *config.Service) *time.Duration      { return &s.Blacklist }
func connectTimeout(s *config.Service) *time.Duration { return &s.ConnectTimeout }
func idleTimeout(s *config.Service) *time.Duration    { return &s.IdleTimeout }

// Verbs returns the names of the control verbs, sorted ("no NAME" forms
// are not listed).
func Verbs() []string {
	names := make([]string, 0, len(verbs))
	for name := range verbs {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// IsVerb reports whether a command line starts with a known verb (or "no",
// which Pen accepts before any word).
func IsVerb(line string) bool {
	f := strings.Fields(line)
	if len(f) == 0 {
		return false
	}
	_, ok := verbs[f[0]]
	return ok || f[0] == "no"
}
