package config

import (
	"errors"
	"net/netip"
	"strconv"
	"testing"
)

func editFixture() *Config {
	web := NewService("web", netip.MustParseAddrPort("198.51.100.1:80"), TCP)
	web.Backends = []Backend{
		NewBackend(netip.MustParseAddrPort("10.0.0.1:8080")),
		NewBackend(netip.MustParseAddrPort("10.0.0.2:8080")),
		NewBackend(netip.MustParseAddrPort("10.0.0.2:8081")),
	}
	web.Backends[0].Drain = true
	vip := NewDSRService("vip", "eth1", netip.MustParseAddrPort("198.51.100.2:80"), TCP)
	vip.Backends = []Backend{NewBackend(netip.MustParseAddrPort("10.0.1.1:0"))}
	return &Config{Services: []Service{web, vip}}
}

func TestEditBackend(t *testing.T) {
	tests := []struct {
		name    string
		e       Edit
		index   int
		err     error
		service int
		want    []string // backend addresses afterwards, "+" marks drain, "*N" a weight other than 1
	}{
		{name: "add ip:port", e: Edit{Op: OpAdd, Service: "web", Backend: "10.0.0.3:9000"}, index: 3, service: 0,
			want: []string{"10.0.0.1:8080+", "10.0.0.2:8080", "10.0.0.2:8081", "10.0.0.3:9000"}},
		{name: "add ip takes the service's port", e: Edit{Op: OpAdd, Service: "web", Backend: "10.0.0.3", Weight: 5}, index: 3, service: 0,
			want: []string{"10.0.0.1:8080+", "10.0.0.2:8080", "10.0.0.2:8081", "10.0.0.3:80*5"}},
		{name: "add DSR", e: Edit{Op: OpAdd, Service: "vip", Backend: "10.0.1.2"}, index: 1, service: 1,
			want: []string{"10.0.1.1:0", "10.0.1.2:0"}},
		{name: "add DSR with a port", e: Edit{Op: OpAdd, Service: "vip", Backend: "10.0.1.2:80"}, index: -1, err: ErrBadBackend},
		{name: "add existing", e: Edit{Op: OpAdd, Service: "web", Backend: "10.0.0.1:8080"}, index: -1, err: ErrExists},
		{name: "add unspecified", e: Edit{Op: OpAdd, Service: "web", Backend: "0.0.0.0:80"}, index: -1, err: ErrBadBackend},
		{name: "add garbage", e: Edit{Op: OpAdd, Service: "web", Backend: "example.com"}, index: -1, err: ErrBadBackend},
		{name: "unknown service", e: Edit{Op: OpDrain, Service: "nope", Backend: "10.0.0.1"}, index: -1, err: ErrNoService},
		{name: "remove by ip", e: Edit{Op: OpRemove, Service: "web", Backend: "10.0.0.1"}, index: 0, service: 0,
			want: []string{"10.0.0.2:8080", "10.0.0.2:8081"}},
		{name: "remove ambiguous ip", e: Edit{Op: OpRemove, Service: "web", Backend: "10.0.0.2"}, index: -1, err: ErrBadBackend},
		{name: "remove by ip:port", e: Edit{Op: OpRemove, Service: "web", Backend: "10.0.0.2:8081"}, index: 2, service: 0,
			want: []string{"10.0.0.1:8080+", "10.0.0.2:8080"}},
		{name: "remove missing", e: Edit{Op: OpRemove, Service: "web", Backend: "10.0.0.9:1"}, index: -1, err: ErrNoBackend},
		{name: "drain", e: Edit{Op: OpDrain, Service: "web", Backend: "10.0.0.2:8080"}, index: 1, service: 0,
			want: []string{"10.0.0.1:8080+", "10.0.0.2:8080+", "10.0.0.2:8081"}},
		{name: "drain DSR", e: Edit{Op: OpDrain, Service: "vip", Backend: "10.0.1.1"}, index: 0, service: 1,
			want: []string{"10.0.1.1:0+"}},
		{name: "undrain", e: Edit{Op: OpUndrain, Service: "web", Backend: "10.0.0.1"}, index: 0, service: 0,
			want: []string{"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.2:8081"}},
		{name: "weight", e: Edit{Op: OpWeight, Service: "web", Backend: "10.0.0.1", Weight: 7}, index: 0, service: 0,
			want: []string{"10.0.0.1:8080*7+", "10.0.0.2:8080", "10.0.0.2:8081"}},
		{name: "unknown op", e: Edit{Op: "explode", Service: "web", Backend: "10.0.0.1"}, index: -1, err: ErrBadBackend},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := editFixture()
			before := editFixture()
			i, err := c.EditBackend(tt.e)
			if i != tt.index || !errors.Is(err, tt.err) {
				t.Fatalf("EditBackend = %d, %v; want %d, %v", i, err, tt.index, tt.err)
			}
			if err != nil {
				if !equalConfig(c, before) {
					t.Errorf("a failed edit changed the config")
				}
				return
			}
			var got []string
			for _, b := range c.Services[tt.service].Backends {
				s := b.Address.String()
				if b.Weight != DefaultWeight {
					s += "*" + strconv.Itoa(b.Weight)
				}
				if b.Drain {
					s += "+"
				}
				got = append(got, s)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("backends %q, want %q", got, tt.want)
			}
			for k := range got {
				if got[k] != tt.want[k] {
					t.Fatalf("backends %q, want %q", got, tt.want)
				}
			}
			if err := Validate(c); err != nil {
				t.Errorf("the result does not validate: %v", err)
			}
		})
	}
}

func equalConfig(a, b *Config) bool {
	x, err1 := Marshal(a)
	y, err2 := Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
