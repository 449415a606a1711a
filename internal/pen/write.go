package pen

import (
	"fmt"
	"io"
	"strconv"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/acl"
)

// WriteConfig writes service svc of c in Pen's "write" format: "no acl N"
// before the entries of each list 0-9, then the settings in Pen's order,
// then the settings Pen does not save (clients_max, conn_max,
// idle_timeout, keepalive, source). Executing the lines with an Interp on
// a config made from the same command line reproduces the service, its
// ACLs, the debug level and the control ACL. What only the command line
// sets (listener, protocol, TLS, emergency and abuse servers, backlog,
// and DSR's dsr_if) is not written, as with Pen; a DSR service's tarpit_acl
// is.
func WriteConfig(c *config.Config, svc int, w io.Writer) {
	if svc < 0 || svc >= len(c.Services) {
		return
	}
	s := &c.Services[svc]
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	onoff := func(on bool, verb string) { p("%s%s\n", no(on), verb) }

	for n := 0; n <= 9; n++ {
		name := strconv.Itoa(n)
		p("no acl %d\n", n)
		for _, r := range c.ACLs[name].Rules {
			p("acl %d %s\n", n, ruleString(r))
		}
	}
	for name := range c.ACLs {
		if _, ok := penACL(name); !ok {
			p("# acl %q cannot be written in Pen's format\n", name)
		}
	}
	p("blacklist %d\n", secs(s.Blacklist))
	p("client_acl %s\n", aclRef(s.ClientACL, w, "client_acl"))
	if c.Control.PenACL != "" {
		p("control_acl %s\n", aclRef(c.Control.PenACL, w, "control_acl"))
	}
	p("debug %d\n", c.Debug)
	// Clear the higher-precedence algorithms first so that "hash" takes
	// effect whatever the command line chose; weight and prio follow.
	p("no prio\nno weight\n")
	if s.Algorithm == config.Maglev {
		p("# algorithm maglev is written as hash\n")
	}
	onoff(isHash(s.Algorithm), "hash")
	onoff(s.HTTP, "http")
	if s.Log != "" {
		p("log %s\n", s.Log)
	} else {
		p("no log\n")
	}
	onoff(!s.Tracking, "roundrobin")
	for i, b := range s.Backends {
		addr, port := "0.0.0.0", 0
		if b.Used() {
			addr, port = b.Address.Addr().String(), int(b.Address.Port())
		}
		p("server %d acl %s address %s port %d max %d hard %d weight %d prio %d\n",
			i, aclRef(b.ACL, w, "server "+strconv.Itoa(i)+" acl"), addr, port, b.Max, b.Hard, b.Weight, b.Prio)
	}
	onoff(s.Stubborn, "stubborn")
	if s.Mode == config.ModeDSR {
		// Pen does not write dsr_if (it is startup only); nib does not
		// either, but keeps the tarpit.
		if _, ok := penACL(s.TarpitACL); ok {
			p("tarpit_acl %s\n", s.TarpitACL)
		} else {
			if s.TarpitACL != "" {
				p("# tarpit_acl %q cannot be written in Pen's format\n", s.TarpitACL)
			}
			p("no tarpit_acl\n")
		}
	}
	onoff(s.NoDelay, "tcp_nodelay")
	p("timeout %d\n", secs(s.ConnectTimeout))
	p("tracking %d\n", secs(s.TrackingExpiry))
	if s.WebStats != "" {
		p("web_stats %s\n", s.WebStats)
	} else {
		p("no web_stats\n")
	}
	onoff(s.Algorithm == config.Weight, "weight")
	onoff(s.Algorithm == config.Prio, "prio")
	p("clients_max %d\n", s.TrackingSize)
	p("conn_max %d\n", s.MaxConnections)
	p("idle_timeout %d\n", secs(s.IdleTimeout))
	onoff(s.KeepAlive, "keepalive")
	if s.Source.IsValid() {
		p("source %s\n", s.Source)
	} else {
		p("no source\n")
	}
}

// penACL reports whether an ACL name is one of Pen's lists 0-9.
func penACL(name string) (int, bool) {
	n, err := strconv.Atoi(name)
	if err != nil || n < 0 || n > 9 || strconv.Itoa(n) != name {
		return 0, false
	}
	return n, true
}

// aclRef prints an ACL reference as Pen's list number; a name Pen cannot
// express is written as 0 with a comment.
func aclRef(name string, w io.Writer, what string) string {
	if name == "" {
		return "0"
	}
	if _, ok := penACL(name); !ok {
		fmt.Fprintf(w, "# %s %q cannot be written in Pen's format\n", what, name)
		return "0"
	}
	return name
}

// ruleString prints an ACL entry as the acl verb reads it.
func ruleString(r config.Rule) string {
	a := acl.Permit
	if r.Action == config.Deny {
		a = acl.Deny
	}
	return acl.Rule{Action: a, Prefix: r.Prefix}.PenString()
}
