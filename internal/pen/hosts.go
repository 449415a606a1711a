package pen

import (
	"errors"
	"net/netip"
	"strings"
)

// Hosts holds the host names of one command line, looked up ahead of Exec
// by LookupHosts. The zero value and nil hold no names.
type Hosts struct {
	addrs map[string]netip.Addr
	errs  map[string]error
}

// LookupHosts looks up the host names that line's "server N address HOST"
// names (the one verb that resolves names), for Interp.Hosts. It does the
// DNS work Exec would otherwise do while its caller may hold a lock; call it
// without holding any. Failed lookups are kept and reported by Exec, in the
// same words and order as without Hosts; addresses need no lookup.
func LookupHosts(line string) *Hosts {
	h := &Hosts{addrs: map[string]netip.Addr{}, errs: map[string]error{}}
	t := tokens(line)
	if len(t) >= 2 && t[0] == "service" {
		t = t[2:]
	}
	if len(t) < 2 || t[0] != "server" {
		return h
	}
	for i := 2; i+1 < len(t); i += 2 {
		if t[i] != "address" {
			continue
		}
		host := serverHost(t[i+1])
		if _, err := netip.ParseAddr(host); err == nil || host == "" {
			continue
		}
		if _, ok := h.addrs[host]; ok {
			continue
		}
		if _, ok := h.errs[host]; ok {
			continue
		}
		if a, err := lookupHost(host); err != nil {
			h.errs[host] = err
		} else {
			h.addrs[host] = a
		}
	}
	return h
}

// errNotLookedUp is a host name Exec met that LookupHosts was not given.
var errNotLookedUp = errors.New("not looked up before the command ran")

// resolve is the package's resolve, with host names answered by h. A nil h
// looks names up now.
func (h *Hosts) resolve(host string) (netip.Addr, error) {
	if h == nil {
		return resolve(host)
	}
	return resolveWith(host, func(name string) (netip.Addr, error) {
		if a, ok := h.addrs[name]; ok {
			return a, nil
		}
		if err, ok := h.errs[name]; ok {
			return netip.Addr{}, err
		}
		return netip.Addr{}, errNotLookedUp
	})
}

// serverHost strips the brackets of "server N address [V6]".
func serverHost(v string) string {
	return strings.TrimSuffix(strings.TrimPrefix(v, "["), "]")
}
