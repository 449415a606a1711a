package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/nib-lb/nib/internal/atomicfile"
)

// Marshal writes c as canonical TOML: keys in the order of reference.toml,
// values equal to their default left out, except that every service
// always shows its name, listen, protocol and backends. For a valid c,
// Parse(Marshal(c)) equals c. Marshal does not validate c (Save does), but
// fails on values the file cannot express, such as an unknown algorithm.
func Marshal(c *Config) ([]byte, error) {
	if c == nil {
		return nil, errors.New("no configuration")
	}
	var errs errList
	f := rawFile{Debug: c.Debug, Network: rawNetworkOf(&errs, c.Network)}
	if c.Control != (Control{}) {
		f.Control = &rawControl{
			PenListen: c.Control.PenListen,
			PenACL:    c.Control.PenACL,
			AllowExit: c.Control.AllowExit,
			Listen:    c.Control.Listen,
			ACL:       c.Control.ACL,
		}
	}
	for name, l := range c.ACLs {
		if f.ACL == nil {
			f.ACL = make(map[string][]string, len(c.ACLs))
		}
		rules := make([]string, 0, len(l.Rules))
		for i, r := range l.Rules {
			if !validAction(r.Action) {
				errs.add(fmt.Sprintf("%s[%d]", aclKey(name), i), "action %d is neither permit nor deny", r.Action)
			}
			rules = append(rules, r.String())
		}
		f.ACL[name] = rules
	}
	for _, d := range c.Dummies {
		f.Dummy = append(f.Dummy, rawDummy{Listen: formatAddrPort(d.Listen), Body: d.Body})
	}
	for i := range c.Services {
		f.Service = append(f.Service, rawServiceOf(&errs, fmt.Sprintf("service[%d]", i), &c.Services[i]))
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteString("# lbd configuration, written by lbd. Every key is documented in nib's config/reference.toml.\n\n")
	if err := toml.NewEncoder(&buf).Encode(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func rawServiceOf(errs *errList, key string, s *Service) rawService {
	def := NewService(s.Name, s.Listen, s.Protocol)
	listen := formatAddrPort(s.Listen)
	if s.Mode == ModeDSR {
		def = NewDSRService(s.Name, s.Interface, s.Listen, s.Protocol)
		listen = formatVIP(s.Listen)
	}
	rs := rawService{
		Name:      s.Name,
		Listen:    listen,
		Protocol:  ptr(enumValue(errs, key+".protocol", protocolNames, int(s.Protocol))),
		Interface: s.Interface,
		TarpitACL: s.TarpitACL,
		HashPort:  s.HashPort,
		Stubborn:  s.Stubborn,
		Emergency: formatAddrPort(s.Emergency),
		Abuse:     formatAddrPort(s.Abuse),
		ClientACL: s.ClientACL,
		HTTP:      s.HTTP,
		NoDelay:   s.NoDelay,
		KeepAlive: s.KeepAlive,
		Log:       s.Log,
		WebStats:  s.WebStats,
	}
	if s.Mode != ModeProxy {
		rs.Mode = ptr(enumValue(errs, key+".mode", modeNames, int(s.Mode)))
	}
	if s.Algorithm != def.Algorithm {
		rs.Algorithm = ptr(enumValue(errs, key+".algorithm", algorithmNames, int(s.Algorithm)))
	}
	rs.Tracking = unlessDefault(s.Tracking, def.Tracking)
	rs.TrackingExpiry = durationUnlessDefault(s.TrackingExpiry, def.TrackingExpiry)
	rs.TrackingSize = unlessDefault(s.TrackingSize, def.TrackingSize)
	rs.Blacklist = durationUnlessDefault(s.Blacklist, def.Blacklist)
	rs.ConnectTimeout = durationUnlessDefault(s.ConnectTimeout, def.ConnectTimeout)
	rs.IdleTimeout = durationUnlessDefault(s.IdleTimeout, def.IdleTimeout)
	rs.MaxConnections = unlessDefault(s.MaxConnections, def.MaxConnections)
	rs.ProxyProtocol = enumValue(errs, key+".proxy_protocol", proxyProtocolNames, int(s.ProxyProtocol))
	if s.Source.IsValid() {
		rs.Source = s.Source.String()
	}
	rs.Backlog = unlessDefault(s.Backlog, def.Backlog)
	if s.TLS != nil {
		rs.TLS = rawTLSOf(errs, key+".tls", s.TLS)
	}
	rs.Health = rawHealthOf(errs, key+".health", &s.Health)
	for _, b := range s.Backends {
		addr := formatAddrPort(b.Address)
		if s.Mode == ModeDSR {
			addr = formatVIP(b.Address)
		}
		rs.Backend = append(rs.Backend, rawBackend{
			Address: addr,
			Max:     b.Max,
			Hard:    b.Hard,
			Weight:  unlessDefault(b.Weight, DefaultWeight),
			Prio:    b.Prio,
			ACL:     b.ACL,
			Drain:   b.Drain,
		})
	}
	return rs
}

func rawTLSOf(errs *errList, key string, t *TLS) *rawTLS {
	def := NewTLS(t.Cert, t.Key)
	rt := &rawTLS{
		Cert:       t.Cert,
		Key:        t.Key,
		Chain:      t.Chain,
		SNIDir:     t.SNIDir,
		OCSPStaple: t.OCSPStaple,
		ClientCA:   t.ClientCA,
	}
	if t.MinVersion != def.MinVersion {
		name, ok := tlsVersionNames[t.MinVersion]
		if !ok {
			errs.add(key+".min_version", "version %#04x must be TLS 1.2 or 1.3", t.MinVersion)
		}
		rt.MinVersion = &name
	}
	for i, id := range t.Ciphers {
		name, ok := cipherName(id)
		if !ok {
			errs.add(fmt.Sprintf("%s.ciphers[%d]", key, i), "%#04x is not a TLS 1.2 cipher suite of crypto/tls", id)
		}
		rt.Ciphers = append(rt.Ciphers, name)
	}
	if t.ClientAuth != def.ClientAuth {
		rt.ClientAuth = ptr(enumValue(errs, key+".client_auth", clientAuthNames, int(t.ClientAuth)))
	}
	return rt
}

// enumValue returns the name of an enumerated value, reporting unknown ones.
func enumValue(errs *errList, key string, names []string, v int) string {
	s, ok := enumName(names, v)
	if !ok {
		errs.add(key, "value %d cannot be written", v)
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func unlessDefault[T comparable](v, def T) *T {
	if v == def {
		return nil
	}
	return &v
}

func durationUnlessDefault(d, def time.Duration) *string {
	if d == def {
		return nil
	}
	s := d.String()
	return &s
}

// formatAddrPort writes the zero AddrPort (none) as "".
func formatAddrPort(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return ""
	}
	return ap.String()
}

// formatVIP writes a DSR address: "ip" for port 0, else "ip:port".
func formatVIP(ap netip.AddrPort) string {
	if ap.IsValid() && ap.Port() == 0 {
		return ap.Addr().String()
	}
	return formatAddrPort(ap)
}

// Save writes c to path atomically after validating it: a temporary file
// in the same directory is written, synced and made mode 0600, then
// renamed over path, and the directory is synced. On error the old file is
// left as it was and the temporary file is removed. It returns the bytes
// written.
func Save(path string, c *Config) ([]byte, error) {
	if err := Validate(c); err != nil {
		return nil, err
	}
	data, err := Marshal(c)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("failed to save config to %s: %w", path, err)
	}
	return data, nil
}
