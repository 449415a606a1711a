package config

import (
	"errors"
	"fmt"
	"net/netip"
)

// Changes to one backend of a service, named by the service's name and the
// backend's address (the control API's and penctl's "backend" verbs). They
// edit a Config in place; the caller validates and applies the result as a
// whole, like any other new config.

// BackendOp is what EditBackend does.
type BackendOp string

// The backend operations.
const (
	// OpAdd appends a new backend (weight Edit.Weight, or DefaultWeight
	// when it is 0).
	OpAdd BackendOp = "add"
	// OpRemove removes the backend; its established connections and
	// DSR flows finish on it, new ones go elsewhere.
	OpRemove BackendOp = "remove"
	// OpDrain sets drain: no new clients or flows (see Backend.Drain).
	OpDrain BackendOp = "drain"
	// OpUndrain clears drain.
	OpUndrain BackendOp = "undrain"
	// OpWeight sets the weight to Edit.Weight.
	OpWeight BackendOp = "weight"
)

// BackendOps are the operations EditBackend knows, in the order help lists
// them.
var BackendOps = []BackendOp{OpAdd, OpRemove, OpDrain, OpUndrain, OpWeight}

// An Edit is one change to a backend.
type Edit struct {
	Op      BackendOp
	Service string
	// Backend is the backend's address: "ip:port", or "ip" alone when the
	// service has one backend with that ip (and, for OpAdd of a proxy
	// service, to take the service's port, as Pen does). DSR backends
	// are named by ip alone.
	Backend string
	// Weight is OpWeight's new weight and OpAdd's initial one.
	Weight int
}

// Errors of EditBackend that callers tell apart (errors.Is).
var (
	ErrNoService  = errors.New("no such service")
	ErrNoBackend  = errors.New("no such backend")
	ErrExists     = errors.New("backend already exists")
	ErrBadBackend = errors.New("bad backend")
)

// EditBackend applies e to c and returns the index of the backend it
// changed (for OpRemove, the index it had). It checks only what it needs
// to find and change the backend; Validate checks the result.
func (c *Config) EditBackend(e Edit) (int, error) {
	s, err := c.FindService(e.Service)
	if err != nil {
		return -1, err
	}
	switch e.Op {
	case OpAdd:
		a, err := backendAddr(s, e.Backend)
		if err != nil {
			return -1, err
		}
		for _, b := range s.Backends {
			if b.Address == a {
				return -1, fmt.Errorf("%w: service %q has backend %s", ErrExists, s.Name, e.Backend)
			}
		}
		b := NewBackend(a)
		if e.Weight != 0 {
			b.Weight = e.Weight
		}
		s.Backends = append(s.Backends, b)
		return len(s.Backends) - 1, nil
	case OpRemove, OpDrain, OpUndrain, OpWeight:
	default:
		return -1, fmt.Errorf("%w: unknown operation %q", ErrBadBackend, e.Op)
	}
	i, err := s.FindBackend(e.Backend)
	if err != nil {
		return -1, err
	}
	b := &s.Backends[i]
	switch e.Op {
	case OpRemove:
		s.Backends = append(s.Backends[:i], s.Backends[i+1:]...)
	case OpDrain:
		b.Drain = true
	case OpUndrain:
		b.Drain = false
	case OpWeight:
		b.Weight = e.Weight
	}
	return i, nil
}

// FindService returns the service named name; its error wraps
// ErrNoService.
func (c *Config) FindService(name string) (*Service, error) {
	for i := range c.Services {
		if c.Services[i].Name == name {
			return &c.Services[i], nil
		}
	}
	return nil, fmt.Errorf("%w %q", ErrNoService, name)
}

// backendAddr is the address a new backend named by name gets in s.
func backendAddr(s *Service, name string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		if a.Zone() != "" || a.IsUnspecified() {
			return netip.AddrPort{}, fmt.Errorf("%w: %q is not a backend address", ErrBadBackend, name)
		}
		if s.Mode == ModeDSR {
			return netip.AddrPortFrom(a.Unmap(), 0), nil
		}
		return netip.AddrPortFrom(a.Unmap(), s.Listen.Port()), nil
	}
	ap, err := netip.ParseAddrPort(name)
	if err != nil || ap.Addr().Zone() != "" || ap.Addr().IsUnspecified() || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: %q is not ip or ip:port", ErrBadBackend, name)
	}
	if s.Mode == ModeDSR {
		return netip.AddrPort{}, fmt.Errorf("%w: DSR backends are named by ip alone (DSR keeps the client's port), not %q", ErrBadBackend, name)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// FindBackend returns the index of the used backend named by name: its
// ip:port, or its ip when no other backend of s has that ip.
func (s *Service) FindBackend(name string) (int, error) {
	if ap, err := netip.ParseAddrPort(name); err == nil {
		for i, b := range s.Backends {
			if b.Used() && b.Address.Addr() == ap.Addr().Unmap() && b.Address.Port() == ap.Port() {
				return i, nil
			}
		}
		return -1, fmt.Errorf("%w %s in service %q", ErrNoBackend, name, s.Name)
	}
	a, err := netip.ParseAddr(name)
	if err != nil {
		return -1, fmt.Errorf("%w: %q is not ip or ip:port", ErrBadBackend, name)
	}
	found := -1
	for i, b := range s.Backends {
		if b.Used() && b.Address.Addr() == a.Unmap() {
			if found >= 0 {
				return -1, fmt.Errorf("%w: service %q has several backends on %s: give ip:port", ErrBadBackend, s.Name, name)
			}
			found = i
		}
	}
	if found < 0 {
		return -1, fmt.Errorf("%w %s in service %q", ErrNoBackend, name, s.Name)
	}
	return found, nil
}
