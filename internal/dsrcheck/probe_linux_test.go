package dsrcheck

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/netnstest"
)

// TestLinuxProbeVIP probes one backend at a time from the LB's namespace,
// as the active health checks do: a SYN+ACK is OK and comes at once, a RST
// is NotListening, no answer (no VIP, or the MAC of a host without it) is
// VIPNotBound after the timeout, and a cancelled context ends the probe.
// Check runs there too, without a port.
func TestLinuxProbeVIP(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	tp := netnstest.New(t, netnstest.Options{Backends: 3}) // VIP on the backends' lo, ARP sysctls set
	vip := tp.VIP()
	bes := tp.Backends()
	netnstest.ServeHTTP(t, bes[0], vip.String()+":80", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") }))
	bes[2].Run(t, "ip", "addr", "del", vip.String()+"/32", "dev", "lo")
	lb := tp.LB()

	probe := func(ctx context.Context, mac net.HardwareAddr, timeout time.Duration) (v Verdict, detail string, took time.Duration, err error) {
		start := time.Now()
		derr := lb.Do(func() error {
			v, detail, err = ProbeVIP(ctx, "eth0", vip, 80, mac, timeout)
			return nil
		})
		if derr != nil {
			t.Fatal(derr)
		}
		return v, detail, time.Since(start), err
	}
	for _, tc := range []struct {
		name    string
		mac     net.HardwareAddr
		timeout time.Duration
		want    Verdict
		detail  string
	}{
		{"listening", bes[0].MAC(), 5 * time.Second, OK, "SYN+ACK from 198.51.100.100:80"},
		{"not listening", bes[1].MAC(), 5 * time.Second, NotListening, "RST from 198.51.100.100:80"},
		{"no VIP", bes[2].MAC(), 300 * time.Millisecond, VIPNotBound, "no answer to a SYN for 198.51.100.100:80 sent to its MAC within 300ms"},
		{"not a backend", tp.Client().MAC(), 300 * time.Millisecond, VIPNotBound, "no answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, detail, took, err := probe(t.Context(), tc.mac, tc.timeout)
			if err != nil || v != tc.want || !strings.Contains(detail, tc.detail) {
				t.Fatalf("ProbeVIP = %v, %q, %v; want %v, %q", v, detail, err, tc.want, tc.detail)
			}
			if tc.want != VIPNotBound && took > time.Second {
				t.Errorf("answered probe took %v: it should end at the answer", took)
			}
			if tc.want == OK {
				// Our RST ended the half-open connection at once (the
				// backend would otherwise keep it in SYN-RECEIVED,
				// resending its SYN+ACK).
				var out string
				for range 20 { // the RST is on its way when ProbeVIP returns
					if out = bes[0].Run(t, "ss", "-Htn", "state", "syn-recv"); strings.TrimSpace(out) == "" {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				if strings.TrimSpace(out) != "" {
					t.Errorf("half-open connection left on the backend:\n%s", out)
				}
			}
			if tc.want == VIPNotBound && took < tc.timeout {
				t.Errorf("unanswered probe ended after %v, before the timeout %v", took, tc.timeout)
			}
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(100*time.Millisecond, cancel)
		_, _, took, err := probe(ctx, bes[2].MAC(), 10*time.Second)
		if !errors.Is(err, context.Canceled) || took > 2*time.Second {
			t.Errorf("ProbeVIP after cancel: %v after %v, want context.Canceled at once", err, took)
		}
	})
	t.Run("check without port", func(t *testing.T) {
		var rep Report
		var err error
		if derr := lb.Do(func() error {
			rep, err = Check(t.Context(), Options{Interface: "eth0", VIP: vip, Backends: []netip.Addr{bes[0].Addr(), bes[1].Addr()}, Timeout: 300 * time.Millisecond})
			return nil
		}); derr != nil {
			t.Fatal(derr)
		}
		if err != nil || !rep.OK() || len(rep.Results) != 2 || len(rep.Others) != 0 {
			t.Fatalf("Check = %+v, %v", rep, err)
		}
		for i, r := range rep.Results {
			if r.MAC.String() != bes[i].MAC().String() || !strings.Contains(r.Detail, "SYN probe skipped") {
				t.Errorf("result %s", r)
			}
		}
	})
}
