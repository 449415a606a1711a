package lbd

import (
	"net"
	"os"
	"strings"
	"sync/atomic"
)

// status holds the live facts that dummy bodies show through placeholders
// (the appliance's welcome page):
//
//	{{addresses}}  the host's interface addresses, loopback and IPv6
//	               link-local left out, e.g. "192.168.1.23, 2001:db8::23"
//	{{config}}     the config being served and, when it is not the -config
//	               file, which one it is and why
//	{{hostname}}   the host name
//	{{version}}    lbd's version
type status struct {
	config atomic.Pointer[string]
}

// setConfig sets what {{config}} says.
func (s *status) setConfig(desc string) { s.config.Store(&desc) }

// fact is a dummy.Facts.
func (s *status) fact(name string) (string, bool) {
	switch name {
	case "addresses":
		return addresses(), true
	case "config":
		if p := s.config.Load(); p != nil {
			return *p, true
		}
		return "", true
	case "hostname":
		h, _ := os.Hostname()
		return h, true
	case "version":
		return Version(), true
	}
	return "", false
}

// addresses lists the host's interface addresses for people to connect to:
// not loopback, and not IPv6 link-local (useless without a zone).
func addresses() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	var out []string
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLoopback() || (ipn.IP.To4() == nil && ipn.IP.IsLinkLocalUnicast()) {
				continue
			}
			out = append(out, ipn.IP.String())
		}
	}
	if len(out) == 0 {
		return "none yet"
	}
	return strings.Join(out, ", ")
}

// describeSource is what {{config}} says outside appliance mode.
func describeSource(inv *invocation) string {
	switch {
	case inv.tomlFile != "":
		return inv.tomlFile
	case inv.penFile != "":
		return inv.penFile + " (Pen -F) and the Pen command line"
	case inv.native:
		return "the built-in default"
	}
	return "the Pen command line"
}
