package config

import (
	"maps"
	"slices"
)

// Clone returns a deep copy of c: no map, slice or TLS settings are shared.
func (c *Config) Clone() *Config {
	if c == nil {
		return nil
	}
	n := *c
	n.Network = c.Network.Clone()
	if c.ACLs != nil {
		n.ACLs = make(map[string]ACL, len(c.ACLs))
		for name, l := range maps.All(c.ACLs) {
			n.ACLs[name] = ACL{Rules: slices.Clone(l.Rules)}
		}
	}
	n.Dummies = slices.Clone(c.Dummies)
	n.Services = slices.Clone(c.Services)
	for i := range n.Services {
		s := &n.Services[i]
		s.Backends = slices.Clone(s.Backends)
		if s.TLS != nil {
			t := *s.TLS
			t.Ciphers = slices.Clone(t.Ciphers)
			s.TLS = &t
		}
	}
	return &n
}
