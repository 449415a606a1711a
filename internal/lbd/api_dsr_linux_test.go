package lbd

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/control"
	"github.com/nib-lb/nib/internal/dsrpath"
	"github.com/nib-lb/nib/internal/netnstest"
)

// A DSR flow and the control API under load, in network namespaces: while
// a client streams numbered lines through the VIP on one long-lived flow,
// the API rejects a broken config (422), applies a changed one (200),
// drains the flow's backend and adds one; the flow never loses or reorders
// a line and keeps its backend, new flows go elsewhere, and the reloads are
// counted by outcome in the metrics.
func TestLinuxDSRAPIReloadUnderLoad(t *testing.T) {
	for _, path := range []string{dsrpath.Packet, dsrpath.XDP} {
		t.Run(path, func(t *testing.T) { dsrAPIReloadUnderLoad(t, path) })
	}
}

func dsrAPIReloadUnderLoad(t *testing.T, path string) {
	netnstest.SkipUnprivileged(t)
	tp := netnstest.New(t, netnstest.Options{Backends: 3})
	vip := tp.VIP()
	bes := tp.Backends()
	for _, be := range bes {
		netnstest.ServeTCP(t, be, vip.String()+":80", be.NameEcho)
	}
	lb, client := tp.LB(), tp.Client()

	cfg := fmt.Sprintf(`[control]
listen = %q

[[service]]
name = "web"
listen = "%s:80"
mode = "dsr"
interface = "eth0"
tracking = false

[[service.backend]]
address = %q

[[service.backend]]
address = %q
`, nsAPIAddr, vip, bes[0].Addr(), bes[1].Addr())
	out, file, a := lbdWithAPI(t, lb, cfg, "-dsr-path", path)
	if path == dsrpath.XDP && !strings.Contains(out.String(), "XDP forwarder attached") {
		t.Fatalf("no XDP forwarder:\n%s", out.String())
	}

	// The long-lived flow (the first connections wait for ARP).
	var c net.Conn
	var owner string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := client.Dial(ctx, "tcp", vip.String()+":80")
		cancel()
		if err == nil {
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			line, rerr := bufio.NewReader(conn).ReadString('\n')
			if rerr == nil {
				c, owner = conn, strings.TrimSpace(line)
				break
			}
			conn.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no flow through the VIP: %v\n%s", err, out.String())
		}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(90 * time.Second))
	t.Logf("the long-lived flow is on %s", owner)

	end := lineStream(t, c)
	time.Sleep(200 * time.Millisecond)

	// A broken file is rejected with its position; the old config stays.
	putFile(t, file, []byte(cfg+"bogus = 1\n"))
	if code, body := a.do("POST", "/api/v1/reload", ""); code != 422 || !strings.Contains(body, "config.toml:") {
		t.Errorf("broken reload: %d %s", code, body)
	}
	// A changed file (weights) applies.
	good := strings.Replace(cfg, fmt.Sprintf("address = %q\n", bes[1].Addr()), fmt.Sprintf("address = %q\nweight = 3\n", bes[1].Addr()), 1)
	putFile(t, file, []byte(good))
	if code, body := a.do("POST", "/api/v1/reload", ""); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	// Drain the flow's backend and add a third: the flow stays where it
	// is, new flows avoid the drained backend.
	if code, body := a.do("POST", "/api/v1/backend", fmt.Sprintf(`{"service":"web","backend":%q,"op":"drain"}`, ownerAddr(t, tp, owner))); code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	if code, body := a.do("POST", "/api/v1/backend", fmt.Sprintf(`{"service":"web","backend":%q,"op":"add"}`, bes[2].Addr())); code != 200 {
		t.Fatalf("add: %d %s", code, body)
	}
	seen := client.Names(t, vip.String()+":80", 12)
	if seen[owner] != 0 || seen["error"] != 0 || len(seen) == 0 {
		t.Errorf("new flows after draining %s: %v", owner, seen)
	}
	time.Sleep(300 * time.Millisecond)

	sent := end()
	if sent < 100 {
		t.Fatalf("the flow carried only %d lines", sent)
	}
	t.Logf("the flow carried all %d lines through two reloads and two backend changes", sent)

	code, metrics := a.do("GET", "/metrics", "")
	for _, want := range []string{`lbd_reloads_total{outcome="applied"} 1`, `lbd_reloads_total{outcome="rejected"} 1`, `lbd_dsr_frames_forwarded_total{interface="eth0"}`} {
		if code != 200 || !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s (%d)", want, code)
		}
	}
}

// ownerAddr is the address of the backend host named name.
func ownerAddr(t *testing.T, tp *netnstest.Topology, name string) string {
	t.Helper()
	for _, be := range tp.Backends() {
		if be.Name() == name {
			return be.Addr().String()
		}
	}
	t.Fatalf("no backend %q", name)
	return ""
}

// The DSR check through the API, run by lbd from its own interface: a good
// backend, one that leaks ARP for the VIP, one without the VIP; penctl
// check prints a line per backend and exits 1. lbd's own ARP replies for
// the VIP (it serves the VIP) are not taken for a leak.
func TestLinuxDSRCheckThroughAPI(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	tp := netnstest.New(t, netnstest.Options{Backends: 3, NoBackendVIP: true})
	vip := tp.VIP()
	bes := tp.Backends()
	for i, be := range bes {
		for _, k := range []string{"all", "eth0"} {
			be.Sysctl(t, "net.ipv4.conf."+k+".arp_ignore", map[bool]string{true: "0", false: "1"}[i == 1])
			be.Sysctl(t, "net.ipv4.conf."+k+".arp_announce", "2")
		}
		if i != 2 {
			be.Run(t, "ip", "addr", "add", vip.String()+"/32", "dev", "lo")
			netnstest.ServeTCP(t, be, vip.String()+":80", be.NameEcho)
		}
	}
	lb := tp.LB()
	_, _, a := lbdWithAPI(t, lb, fmt.Sprintf(`[control]
listen = %q

[[service]]
name = "web"
listen = "%s:80"
mode = "dsr"
interface = "eth0"

[[service.backend]]
address = %q

[[service.backend]]
address = %q

[[service.backend]]
address = %q

[[service]]
name = "local"
listen = "127.0.0.1:8080"

[[service.backend]]
address = "127.0.0.1:8081"
`, nsAPIAddr, vip, bes[0].Addr(), bes[1].Addr(), bes[2].Addr()))

	code, body := a.do("POST", "/api/v1/check", `{"service":"web"}`)
	var rep control.CheckReply
	if code != 200 || json.Unmarshal([]byte(body), &rep) != nil {
		t.Fatalf("check: %d %s", code, body)
	}
	t.Logf("report:\n%s", strings.Join(rep.Lines, "\n"))
	if rep.OK || len(rep.Lines) < 3 {
		t.Fatalf("report says ok %v with %d lines", rep.OK, len(rep.Lines))
	}
	for i, want := range []string{" ok: ", " arp leak: ", " vip not bound: "} {
		if line := rep.Lines[i]; !strings.HasPrefix(line, bes[i].Addr().String()+" ") || !strings.Contains(line, want) {
			t.Errorf("line %d: %q, want %s and %q", i, line, bes[i].Addr(), want)
		}
	}
	for _, l := range rep.Lines {
		if strings.Contains(l, lb.MAC().String()) {
			t.Errorf("lbd's own MAC reported: %q", l)
		}
	}
	if code, body := a.do("POST", "/api/v1/check", `{"service":"local"}`); code != 400 || !strings.Contains(body, "not a DSR service") {
		t.Errorf("check of a proxy service: %d %s", code, body)
	}
	if code, body := a.do("POST", "/api/v1/check", `{"service":"nope"}`); code != 404 {
		t.Errorf("check of no service: %d %s", code, body)
	}
}

// nsAPIAddr is where lbdWithAPI's lbd serves the control API: loopback
// inside the LB's namespace.
const nsAPIAddr = "127.0.0.1:9443"

// lbdWithAPI runs lbd in appliance mode in lb's namespace on the TOML text
// cfg (whose [control] listens on nsAPIAddr), with more flags, until its
// DSR port forwards; it returns lbd's output, its config file, and an API
// client that dials inside the namespace.
func lbdWithAPI(t *testing.T, lb *netnstest.Host, cfg string, flags ...string) (out *syncBuffer, file string, a *apiClient) {
	t.Helper()
	dir := t.TempDir()
	file, state := filepath.Join(dir, "config.toml"), filepath.Join(dir, "state")
	putFile(t, file, []byte(cfg))
	out = lbdIn(t, lb, append([]string{"-config", file, "-state", state}, flags...)...)
	out.waitFor(t, "forwarding", 10*time.Second)
	a = newAPIClient(t, nsAPIAddr, state)
	a.c.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return lb.Dial(ctx, network, addr)
	}
	return out, file, a
}
