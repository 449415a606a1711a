package lbd

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/control"
	"github.com/nib-lb/nib/internal/dsrpath"
	"github.com/nib-lb/nib/internal/netnstest"
)

// Active health checks of a DSR service, in network namespaces: a backend
// whose service stops while its host stays up (it still answers ARP) gets
// no new flows once its check fails, and flows again when it is back; with
// vip = true a backend whose own address answers but that lost the VIP
// from its loopback is marked down too ("vip not bound").
func TestLinuxDSRHealth(t *testing.T) {
	for _, path := range []string{dsrpath.Packet, dsrpath.XDP} {
		t.Run(path, func(t *testing.T) { dsrHealth(t, path) })
	}
}

func dsrHealth(t *testing.T, path string) {
	netnstest.SkipUnprivileged(t)
	tp := netnstest.New(t, netnstest.Options{Backends: 3})
	vip := tp.VIP()
	bes := tp.Backends()
	stops := make([]func(), len(bes))
	for i, be := range bes {
		stops[i] = netnstest.ServeTCP(t, be, "0.0.0.0:80", be.NameEcho) // the VIP and the backend's own address
	}
	lb, client := tp.LB(), tp.Client()
	out, _, a := lbdWithAPI(t, lb, fmt.Sprintf(`[control]
listen = %q

[[service]]
name = "web"
listen = "%s:80"
mode = "dsr"
interface = "eth0"
tracking = false

[service.health]
check = "tcp"
interval = "100ms"
timeout = "80ms"
rise = 2
fall = 2
vip = true

[[service.backend]]
address = %q

[[service.backend]]
address = %q

[[service.backend]]
address = %q
`, nsAPIAddr, vip, bes[0].Addr(), bes[1].Addr(), bes[2].Addr()), "-dsr-path", path)
	health := func(be *netnstest.Host) *control.HealthStatus {
		t.Helper()
		code, body := a.do("GET", "/api/v1/status", "")
		var st control.Status
		if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
			t.Fatalf("status: %d %s", code, body)
		}
		for _, b := range st.Services[0].Backends {
			if b.Address == be.Addr().String() {
				return b.Health
			}
		}
		t.Fatalf("no backend %s", be.Addr())
		return nil
	}
	waitHealth := func(be *netnstest.Host, up bool) *control.HealthStatus {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if h := health(be); h != nil && h.Up == up {
				return h
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not up=%v: %+v\n%s", be.Name(), up, health(be), out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	flows := func(n int) map[string]int { return client.Names(t, vip.String()+":80", n) }
	for _, be := range bes {
		waitHealth(be, true)
	}
	if seen := flows(24); seen["be1"] == 0 || seen["be2"] == 0 || seen["be3"] == 0 || seen["error"] != 0 {
		t.Fatalf("before: %v", seen)
	}

	// be2's service stops; its host still answers ARP.
	stops[1]()
	start := time.Now()
	h := waitHealth(bes[1], false)
	t.Logf("be2 down after %v: %s", time.Since(start), h.Reason)
	if seen := flows(24); seen["be2"] != 0 || seen["error"] != 0 {
		t.Errorf("after be2's service stopped: %v, want no flow on be2 and none failing", seen)
	}
	stops[1] = netnstest.ServeTCP(t, bes[1], "0.0.0.0:80", bes[1].NameEcho)
	waitHealth(bes[1], true)
	if seen := flows(24); seen["be2"] == 0 || seen["error"] != 0 {
		t.Errorf("after be2 came back: %v", seen)
	}

	// be3 loses the VIP: its own address still answers the TCP check, the
	// VIP probe does not.
	bes[2].Run(t, "ip", "addr", "del", vip.String()+"/32", "dev", "lo")
	h = waitHealth(bes[2], false)
	if !strings.Contains(h.Reason, "vip not bound") {
		t.Errorf("be3's reason %q, want vip not bound", h.Reason)
	}
	if seen := flows(24); seen["be3"] != 0 || seen["error"] != 0 {
		t.Errorf("after be3 lost the VIP: %v", seen)
	}
	out.waitFor(t, "backend "+bes[2].Addr().String()+" is down: vip not bound", time.Second)
}
