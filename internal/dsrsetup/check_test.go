package dsrsetup

import (
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseCheck(t *testing.T) {
	be1, be2 := netip.MustParseAddr("198.51.100.21"), netip.MustParseAddr("198.51.100.22")
	vip := netip.MustParseAddr("198.51.100.100")
	for _, tc := range []struct {
		name     string
		args     string
		port     uint16
		timeout  time.Duration
		backends []netip.Addr
		err      string // "" when valid
	}{
		{"port", "-i eth0 -vip 198.51.100.100:80 198.51.100.21 198.51.100.22", 80, time.Second, []netip.Addr{be1, be2}, ""},
		{"no port", "-i eth0 -vip 198.51.100.100 198.51.100.21", 0, time.Second, []netip.Addr{be1}, ""},
		{"flags after backends", "198.51.100.21 -i eth0 198.51.100.22 -vip 198.51.100.100:443 -timeout 250ms", 443, 250 * time.Millisecond, []netip.Addr{be1, be2}, ""},
		{"no interface", "-vip 198.51.100.100:80 198.51.100.21", 0, 0, nil, "-i IFACE is required"},
		{"no vip", "-i eth0 198.51.100.21", 0, 0, nil, "-vip ADDR[:PORT] is required"},
		{"no backends", "-i eth0 -vip 198.51.100.100:80", 0, 0, nil, "no backends"},
		{"bad vip", "-i eth0 -vip lb.example:80 198.51.100.21", 0, 0, nil, "want ADDR or ADDR:PORT"},
		{"port 0", "-i eth0 -vip 198.51.100.100:0 198.51.100.21", 0, 0, nil, "port 0"},
		{"IPv6 vip", "-i eth0 -vip [2001:db8::1]:80 198.51.100.21", 0, 0, nil, "is IPv6"},
		{"backend name", "-i eth0 -vip 198.51.100.100:80 be1.example", 0, 0, nil, `backend "be1.example" is not an IP address`},
		{"backend with port", "-i eth0 -vip 198.51.100.100:80 198.51.100.21:80", 0, 0, nil, "is not an IP address"},
		{"backend twice", "-i eth0 -vip 198.51.100.100:80 198.51.100.21 198.51.100.21", 0, 0, nil, "listed twice"},
		{"backend is the vip", "-i eth0 -vip 198.51.100.100:80 198.51.100.100", 0, 0, nil, "is the VIP"},
		{"zero timeout", "-i eth0 -vip 198.51.100.100:80 -timeout 0 198.51.100.21", 0, 0, nil, "-timeout must be positive"},
		{"long timeout", "-i eth0 -vip 198.51.100.100:80 -timeout 1h 198.51.100.21", 0, 0, nil, "timeout 1h0m0s out of range"},
		{"unknown flag", "-i eth0 -vip 198.51.100.100:80 -x 198.51.100.21", 0, 0, nil, "flag provided but not defined: -x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			o, code := parseCheck(strings.Fields(tc.args), io.Discard, &stderr)
			if tc.err != "" {
				if code != ExitUsage || !strings.Contains(stderr.String(), tc.err) || !strings.Contains(stderr.String(), "usage: setup check") {
					t.Errorf("exit %d, stderr:\n%s\nwant %d with %q and the usage", code, stderr.String(), ExitUsage, tc.err)
				}
				return
			}
			if code != -1 || stderr.Len() > 0 {
				t.Fatalf("exit %d, stderr %q", code, stderr.String())
			}
			if o.Interface != "eth0" || o.VIP != vip || o.Port != tc.port || o.Timeout != tc.timeout || len(o.Backends) != len(tc.backends) {
				t.Fatalf("options %+v", o)
			}
			for i, b := range tc.backends {
				if o.Backends[i] != b {
					t.Errorf("backend %d: %v, want %v", i, o.Backends[i], b)
				}
			}
		})
	}
}

func TestCheckMainStatus(t *testing.T) {
	var stdout, stderr strings.Builder
	if code := Main([]string{"check", "-vip", "198.51.100.100:80", "198.51.100.21"}, &stdout, &stderr); code != ExitUsage {
		t.Errorf("usage error: exit %d, want %d", code, ExitUsage)
	}
	stdout.Reset()
	stderr.Reset()
	// A check that cannot run (no such interface) fails without a report.
	code := Main([]string{"check", "-i", "nib-no-such0", "-vip", "198.51.100.100:80", "198.51.100.21"}, &stdout, &stderr)
	if code != ExitFailed || stdout.Len() > 0 || !strings.Contains(stderr.String(), "setup check: dsrcheck: interface nib-no-such0") {
		t.Errorf("exit %d, stdout %q, stderr %q; want %d and the interface named", code, stdout.String(), stderr.String(), ExitFailed)
	}
	stdout.Reset()
	stderr.Reset()
	if code := Main([]string{"check", "-h"}, &stdout, &stderr); code != ExitOK || !strings.HasPrefix(stdout.String(), "usage: setup check") || stderr.Len() > 0 {
		t.Errorf("-h: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}
