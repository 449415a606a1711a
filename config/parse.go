package config

import (
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/nib-lb/nib/internal/acl"
)

// Load reads and parses the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes a TOML configuration strictly (unknown keys are errors),
// fills in defaults and validates it. filename only names the source in
// errors. All errors found are returned, joined; each is an *Error naming
// filename:line:column and the key.
func Parse(filename string, data []byte) (*Config, error) {
	ps := scanPositions(data)
	var f rawFile
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, decodeErrors(filename, err, ps).err()
	}
	c, errs := f.config()
	// A value that did not convert is left zero, which Validate would
	// report again under the same key.
	bad := make(map[string]bool)
	for _, e := range errs {
		bad[e.Key] = true
	}
	for _, e := range splitErrors(Validate(c)) {
		if !bad[e.Key] {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		locate(filename, errs, ps)
		sortErrors(errs)
		return nil, errs.err()
	}
	return c, nil
}

// config converts the raw file to a typed Config, reporting values that do
// not convert (bad addresses, durations, names of enumerated values).
func (f *rawFile) config() (*Config, errList) {
	var errs errList
	c := &Config{Debug: f.Debug}
	if f.Network != nil {
		c.Network = f.Network.network(&errs)
	}
	if f.Control != nil {
		c.Control = Control{
			PenListen: f.Control.PenListen,
			PenACL:    f.Control.PenACL,
			AllowExit: f.Control.AllowExit,
			Listen:    f.Control.Listen,
			ACL:       f.Control.ACL,
		}
	}
	for _, name := range slices.Sorted(maps.Keys(f.ACL)) {
		rules := f.ACL[name]
		if c.ACLs == nil {
			c.ACLs = make(map[string]ACL, len(f.ACL))
		}
		var l ACL
		for i, s := range rules {
			r, err := acl.ParseRule(s)
			if err != nil {
				// r is the zero Rule, which keeps the indices of later
				// rules those of the file.
				errs.add(aclKey(name)+"["+strconv.Itoa(i)+"]", "%v", err)
			}
			l.Rules = append(l.Rules, r)
		}
		c.ACLs[name] = l
	}
	for i, rd := range f.Dummy {
		key := fmt.Sprintf("dummy[%d]", i)
		d := Dummy{Body: rd.Body}
		d.Listen = parseAddrPort(&errs, key+".listen", rd.Listen)
		c.Dummies = append(c.Dummies, d)
	}
	for i := range f.Service {
		c.Services = append(c.Services, f.Service[i].service(&errs, fmt.Sprintf("service[%d]", i)))
	}
	return c, errs
}

func (rs *rawService) service(errs *errList, key string) Service {
	p := TCP
	if rs.Protocol != nil {
		p = Protocol(parseName(errs, key+".protocol", *rs.Protocol, protocolNames))
	}
	mode := ModeProxy
	if rs.Mode != nil {
		mode = Mode(parseName(errs, key+".mode", *rs.Mode, modeNames))
	}
	var s Service
	if mode == ModeDSR {
		s = NewDSRService(rs.Name, rs.Interface, parseVIP(errs, key+".listen", rs.Listen), p)
	} else {
		s = NewService(rs.Name, parseAddrPort(errs, key+".listen", rs.Listen), p)
		s.Interface = rs.Interface
	}
	s.TarpitACL = rs.TarpitACL
	if rs.Algorithm != nil {
		s.Algorithm = Algorithm(parseName(errs, key+".algorithm", *rs.Algorithm, algorithmNames))
	}
	if rs.Tracking != nil {
		s.Tracking = *rs.Tracking
	}
	parseDuration(errs, key+".tracking_expiry", rs.TrackingExpiry, &s.TrackingExpiry)
	if rs.TrackingSize != nil {
		s.TrackingSize = *rs.TrackingSize
	}
	s.HashPort = rs.HashPort
	s.Stubborn = rs.Stubborn
	parseDuration(errs, key+".blacklist", rs.Blacklist, &s.Blacklist)
	parseDuration(errs, key+".connect_timeout", rs.ConnectTimeout, &s.ConnectTimeout)
	parseDuration(errs, key+".idle_timeout", rs.IdleTimeout, &s.IdleTimeout)
	if rs.MaxConnections != nil {
		s.MaxConnections = *rs.MaxConnections
	}
	if rs.Emergency != "" {
		s.Emergency = parseAddrPort(errs, key+".emergency", rs.Emergency)
	}
	if rs.Abuse != "" {
		s.Abuse = parseAddrPort(errs, key+".abuse", rs.Abuse)
	}
	s.ClientACL = rs.ClientACL
	s.HTTP = rs.HTTP
	s.ProxyProtocol = ProxyProtocol(parseName(errs, key+".proxy_protocol", rs.ProxyProtocol, proxyProtocolNames))
	if rs.Source != "" {
		ip, err := netip.ParseAddr(rs.Source)
		if err != nil {
			errs.add(key+".source", "%q is not an ip address", rs.Source)
		}
		s.Source = ip
	}
	s.NoDelay = rs.NoDelay
	s.KeepAlive = rs.KeepAlive
	if rs.Backlog != nil {
		s.Backlog = *rs.Backlog
	}
	s.Log = rs.Log
	s.WebStats = rs.WebStats
	if rs.TLS != nil {
		s.TLS = rs.TLS.tls(errs, key+".tls")
	}
	if rs.Health != nil {
		s.Health = rs.Health.health(errs, key+".health")
	}
	for i, rb := range rs.Backend {
		bkey := fmt.Sprintf("%s.backend[%d]", key, i)
		var b Backend
		if mode == ModeDSR {
			b = NewBackend(parseVIP(errs, bkey+".address", rb.Address))
		} else {
			b = NewBackend(parseAddrPort(errs, bkey+".address", rb.Address))
		}
		b.Max = rb.Max
		b.Hard = rb.Hard
		if rb.Weight != nil {
			b.Weight = *rb.Weight
		}
		b.Prio = rb.Prio
		b.ACL = rb.ACL
		b.Drain = rb.Drain
		s.Backends = append(s.Backends, b)
	}
	return s
}

func (rt *rawTLS) tls(errs *errList, key string) *TLS {
	t := NewTLS(rt.Cert, rt.Key)
	t.Chain = rt.Chain
	if rt.MinVersion != nil {
		v, ok := tlsVersion(*rt.MinVersion)
		if !ok {
			errs.add(key+".min_version", "%q must be \"1.2\" or \"1.3\"", *rt.MinVersion)
		} else {
			t.MinVersion = v
		}
	}
	for i, name := range rt.Ciphers {
		id, ok := cipherSuites[name]
		if !ok {
			// Keep the indices of later ciphers those of the file.
			errs.add(fmt.Sprintf("%s.ciphers[%d]", key, i), "%q is not a TLS 1.2 cipher suite of crypto/tls", name)
		}
		t.Ciphers = append(t.Ciphers, id)
	}
	t.SNIDir = rt.SNIDir
	t.OCSPStaple = rt.OCSPStaple
	t.ClientCA = rt.ClientCA
	if rt.ClientAuth != nil {
		t.ClientAuth = ClientAuth(parseName(errs, key+".client_auth", *rt.ClientAuth, clientAuthNames))
	}
	return t
}

func tlsVersion(s string) (uint16, bool) {
	for v, n := range tlsVersionNames {
		if n == s {
			return v, true
		}
	}
	return 0, false
}

// parseName converts an enumerated value's name to its index; unknown names
// are reported and give 0.
func parseName(errs *errList, key, s string, names []string) int {
	v, ok := parseEnum(names, s)
	if !ok {
		errs.add(key, "%q must be one of %s", s, quoteList(names))
	}
	return v
}

func parseAddrPort(errs *errList, key, s string) netip.AddrPort {
	if s == "" {
		// Validate reports the missing address.
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		errs.add(key, "%q is not an ip:port", s)
	}
	return ap
}

// parseVIP parses a DSR address: "ip" (port 0) or "ip:port".
func parseVIP(errs *errList, key, s string) netip.AddrPort {
	if s == "" {
		return netip.AddrPort{}
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.AddrPortFrom(a, 0)
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Addr().Zone() != "" {
		errs.add(key, "%q is not an ip or ip:port", s)
		return netip.AddrPort{}
	}
	return ap
}

// parseDuration sets *d from s when s is set.
func parseDuration(errs *errList, key string, s *string, d *time.Duration) {
	if s == nil {
		return
	}
	v, err := time.ParseDuration(*s)
	if err != nil {
		errs.add(key, "%q is not a duration such as \"30s\" or \"1m30s\"", *s)
		return
	}
	*d = v
}
