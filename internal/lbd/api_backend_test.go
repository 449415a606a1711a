package lbd

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/control"
)

// apiStatus fetches the status.
func apiStatus(t *testing.T, a *apiClient) control.Status {
	t.Helper()
	code, body := a.do("GET", "/api/v1/status", "")
	var st control.Status
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("status: %d %v %s", code, err, body)
	}
	return st
}

// apiBackends is each backend of service "tcp" by address.
func apiBackends(t *testing.T, a *apiClient) map[string]control.BackendStatus {
	t.Helper()
	out := map[string]control.BackendStatus{}
	for _, s := range apiStatus(t, a).Services {
		if s.Name == "tcp" {
			for _, b := range s.Backends {
				out[b.Address] = b
			}
		}
	}
	return out
}

// greetings counts the backends that n new connections reach.
func greetings(t *testing.T, addr netip.AddrPort, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		name, c := greet(t, addr)
		c.Close()
		got[name]++
	}
	return got
}

// Backends changed by name through the API: add, drain, undrain, weight,
// blacklist, remove; established connections stay; write saves the
// result; errors map to status codes; the counters reach the metrics.
func TestAPIBackendEdits(t *testing.T) {
	e := newApplianceEnv(t)
	one, two := namedBackend(t, "one"), namedBackend(t, "two")
	apiAddr, svcAddr := freePort(t), freePort(t)
	putFile(t, e.file, []byte(fmt.Sprintf(`[control]
listen = %q

[[service]]
name = "tcp"
listen = %q
tracking = false

[[service.backend]]
address = %q
`, apiAddr, svcAddr, one)))
	p := e.start(t)
	defer p.stop(t)
	a := newAPIClient(t, apiAddr.String(), e.state)
	edit := func(body string, want int) string {
		t.Helper()
		code, reply := a.do("POST", "/api/v1/backend", body)
		if code != want {
			t.Fatalf("%s: %d %s, want %d", body, code, reply, want)
		}
		return reply
	}
	req := func(op, backend, extra string) string {
		return fmt.Sprintf(`{"service":"tcp","backend":%q,"op":%q%s}`, backend, op, extra)
	}

	name, held := greet(t, svcAddr)
	if name != "one" {
		t.Fatalf("greeting %q", name)
	}
	held.SetDeadline(time.Now().Add(time.Minute))
	if r := edit(req("add", two.String(), `,"weight":2`), 200); !strings.Contains(r, `"index":1`) {
		t.Errorf("add: %s", r)
	}
	if got := greetings(t, svcAddr, 6); got["one"] == 0 || got["two"] == 0 {
		t.Errorf("after add: %v, want both", got)
	}
	edit(req("add", two.String(), ""), 409)
	edit(`{"service":"nope","backend":"127.0.0.1","op":"drain"}`, 404)
	edit(req("drain", "127.0.0.9:1", ""), 404)
	edit(req("drain", "127.0.0.1", ""), 400) // both backends are on 127.0.0.1

	// Drain: no new connections to one, under round-robin too; the
	// established one keeps relaying.
	edit(req("drain", one.String(), ""), 200)
	if got := greetings(t, svcAddr, 6); got["two"] != 6 {
		t.Errorf("after drain: %v, want two only", got)
	}
	echoes(t, held, "after drain\n")
	if b := apiBackends(t, a)[one.String()]; b.State != "drained" || !b.Drain || b.Active != 1 {
		t.Errorf("drained backend: %+v", b)
	}
	edit(req("undrain", one.String(), ""), 200)
	if got := greetings(t, svcAddr, 6); got["one"] == 0 {
		t.Errorf("after undrain: %v, want one again", got)
	}
	edit(req("weight", two.String(), `,"weight":7`), 200)
	if b := apiBackends(t, a)[two.String()]; b.Weight != 7 || b.State != "ok" {
		t.Errorf("weight: %+v", b)
	}

	// Blacklist is runtime state: it ends, and 0 clears it.
	edit(req("blacklist", one.String(), `,"seconds":60`), 200)
	if b := apiBackends(t, a)[one.String()]; b.State != "blacklisted" {
		t.Errorf("blacklisted backend: %+v", b)
	}
	if got := greetings(t, svcAddr, 4); got["two"] != 4 {
		t.Errorf("while blacklisted: %v, want two only", got)
	}
	edit(req("blacklist", one.String(), `,"seconds":0`), 200)
	if b := apiBackends(t, a)[one.String()]; b.State != "ok" {
		t.Errorf("blacklist cleared: %+v", b)
	}

	// Remove: gone from the status and the config; its established
	// connection still relays; two keeps its counters at its new index.
	before := apiBackends(t, a)[two.String()]
	if r := edit(req("remove", one.String(), ""), 200); !strings.Contains(r, `"index":0`) {
		t.Errorf("remove: %s", r)
	}
	bs := apiBackends(t, a)
	if _, ok := bs[one.String()]; ok || len(bs) != 1 {
		t.Errorf("after remove: %+v", bs)
	}
	if b := bs[two.String()]; b.Index != 0 || b.Connects < before.Connects || b.Connects == 0 || b.Sent < before.Sent {
		t.Errorf("two after remove: %+v, before %+v", b, before)
	}
	echoes(t, held, "after remove\n")
	if got := greetings(t, svcAddr, 3); got["two"] != 3 {
		t.Errorf("after remove: %v", got)
	}

	// Nothing is saved until write; write saves the changes.
	if data, _ := os.ReadFile(e.file); strings.Contains(string(data), two.String()) {
		t.Errorf("the file changed before write:\n%s", data)
	}
	edit(req("drain", two.String(), ""), 200)
	if code, body := a.do("POST", "/api/v1/write", ""); code != 200 {
		t.Fatalf("write: %d %s", code, body)
	}
	data, _ := os.ReadFile(e.file)
	if s := string(data); !strings.Contains(s, two.String()) || strings.Contains(s, one.String()) || !strings.Contains(s, "drain = true") || !strings.Contains(s, "weight = 7") {
		t.Errorf("written config:\n%s", s)
	}

	// The per-backend counters reach the metrics.
	code, metrics := a.do("GET", "/metrics", "")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		fmt.Sprintf(`lbd_backend_connections_total{backend=%q,index="0",service="tcp"}`, two.String()),
		fmt.Sprintf(`lbd_backend_connect_failures_total{backend=%q,index="0",service="tcp"} 0`, two.String()),
		`lbd_reloads_total{outcome="applied"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
