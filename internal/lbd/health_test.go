package lbd

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/control"
)

// switchable is an HTTP backend on a fixed address that the test can stop,
// start again, or make answer 503.
type switchable struct {
	t      *testing.T
	name   string
	addr   netip.AddrPort
	status atomic.Int32 // answered by "/"
	mu     sync.Mutex
	srv    *http.Server
}

func newSwitchable(t *testing.T, name string) *switchable {
	s := &switchable{t: t, name: name, addr: freePort(t)}
	s.status.Store(200)
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *switchable) start() {
	s.t.Helper()
	ln, err := net.Listen("tcp", s.addr.String())
	if err != nil {
		s.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(s.status.Load()))
		io.WriteString(w, s.name)
	})}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(ln)
}

func (s *switchable) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.srv.Close()
		s.srv = nil
	}
}

// healthService is service web over backends with an HTTP check every
// 100 ms (timeout 80 ms), rise 2, fall 2.
func healthService(listen netip.AddrPort, backends ...netip.AddrPort) *config.Config {
	cfg := oneService(listen, backends...)
	h := &cfg.Services[0].Health
	h.Check, h.Interval, h.Timeout, h.Rise, h.Fall = config.CheckHTTP, 100*time.Millisecond, 80*time.Millisecond, 2, 2
	return cfg
}

// through makes n requests through lbd and counts the answers by body; a
// failed request counts as "error".
func through(t *testing.T, listen netip.AddrPort, n int) map[string]int {
	t.Helper()
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	got := map[string]int{}
	for range n {
		resp, err := c.Get("http://" + listen.String() + "/")
		if err != nil {
			got["error"]++
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got[string(b)]++
	}
	return got
}

// healthOf waits (at most d) until backend addr of service web has the
// health wanted, and returns its status.
func healthOf(t *testing.T, d *Daemon, addr netip.AddrPort, up bool, within time.Duration) control.BackendStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, b := range (apiBackend{d}).Status().Services[0].Backends {
			if b.Address == addr.String() && b.Health != nil && b.Health.Up == up {
				return b
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %s not up=%v within %v: %+v", addr, up, within, (apiBackend{d}).Status().Services[0].Backends)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A proxied backend whose service dies while its host stays up: down
// within fall × interval, no client request fails after that, back after
// rise × interval; an HTTP 503 is a failure too; the state shows in the
// status, Pen's servers line and the log.
func TestHealthProxyDownAndUp(t *testing.T) {
	a, b := newSwitchable(t, "a"), newSwitchable(t, "b")
	listen := freePort(t)
	d, logs := newDaemon(t, healthService(listen, a.addr, b.addr))
	if got := through(t, listen, 10); got["a"] == 0 || got["b"] == 0 {
		t.Fatalf("before: %v", got)
	}

	b.stop()
	start := time.Now()
	st := healthOf(t, d, b.addr, false, 2*time.Second)
	took := time.Since(start)
	t.Logf("down after %v: %+v", took, *st.Health)
	if took > 2*100*time.Millisecond+300*time.Millisecond {
		t.Errorf("detection took %v, more than fall × interval and slack", took)
	}
	if st.State != "down" || !strings.Contains(st.Health.Reason, "refused") {
		t.Errorf("status of the stopped backend: %+v %+v", st, *st.Health)
	}
	if got := through(t, listen, 20); got["a"] != 20 {
		t.Errorf("after detection: %v, want every request on a", got)
	}
	logs.waitFor(t, "health: service web backend "+b.addr.String()+" is down", time.Second)
	var out strings.Builder
	d.ExecPen("servers", &out, false)
	if !strings.Contains(out.String(), "port "+itoa(b.addr.Port())) || !strings.Contains(out.String(), " health down\n") ||
		!strings.Contains(out.String(), " health up\n") {
		t.Errorf("servers:\n%s", out.String())
	}
	var page strings.Builder
	if err := (runtimeView{d}).StatusHTML("web", &page); err != nil || !strings.Contains(page.String(), "<td>down (health: connection refused)</td>") {
		t.Errorf("status page (%v):\n%s", err, page.String())
	}

	b.start()
	start = time.Now()
	healthOf(t, d, b.addr, true, 2*time.Second)
	t.Logf("up again after %v", time.Since(start))
	if got := through(t, listen, 10); got["b"] == 0 || got["error"] != 0 {
		t.Errorf("after recovery: %v", got)
	}

	// A 503 fails the check.
	b.status.Store(503)
	st = healthOf(t, d, b.addr, false, 2*time.Second)
	if st.Health.Reason != "http 503" {
		t.Errorf("reason %q, want http 503", st.Health.Reason)
	}
	if got := through(t, listen, 10); got["a"] != 10 {
		t.Errorf("with b answering 503: %v", got)
	}
}

// Every backend down: the service uses them all (fail open), or none with
// fail_closed, where the emergency server takes the clients.
func TestHealthAllDown(t *testing.T) {
	a, b := newSwitchable(t, "a"), newSwitchable(t, "b")
	a.status.Store(503)
	b.status.Store(503)
	listen := freePort(t)
	d, logs := newDaemon(t, healthService(listen, a.addr, b.addr))
	healthOf(t, d, a.addr, false, 2*time.Second)
	healthOf(t, d, b.addr, false, 2*time.Second)
	logs.waitFor(t, "fail open", time.Second)
	if got := through(t, listen, 10); got["a"]+got["b"] != 10 {
		t.Errorf("fail open: %v, want every request answered by a or b", got)
	}
	if st := (apiBackend{d}).Status().Services[0]; !st.AllDown || st.FailClosed {
		t.Errorf("service status: %+v", st)
	}

	// fail_closed with an emergency server.
	e := newSwitchable(t, "emergency")
	cfg := healthService(listen, a.addr, b.addr)
	cfg.Services[0].Health.FailClosed = true
	cfg.Services[0].Emergency = e.addr
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	logs.waitFor(t, "using none (fail_closed)", time.Second)
	if got := through(t, listen, 10); got["emergency"] != 10 {
		t.Errorf("fail closed: %v, want the emergency server", got)
	}
	// One comes back: it takes the clients again.
	a.status.Store(200)
	healthOf(t, d, a.addr, true, 2*time.Second)
	if got := through(t, listen, 10); got["a"] != 10 {
		t.Errorf("after a recovered: %v", got)
	}
}

// A reload keeps the health of backends that stay; a new backend starts
// up, or down with start_down; switching the check off lets every backend
// back.
func TestHealthReload(t *testing.T) {
	a, b, c := newSwitchable(t, "a"), newSwitchable(t, "b"), newSwitchable(t, "c")
	b.status.Store(503)
	listen := freePort(t)
	d, _ := newDaemon(t, healthService(listen, a.addr, b.addr))
	healthOf(t, d, b.addr, false, 2*time.Second)

	// Slow checks from now on, so the state seen right after the reload
	// is the one carried over.
	cfg := healthService(listen, a.addr, b.addr, c.addr)
	cfg.Services[0].Health.Interval, cfg.Services[0].Health.Timeout = time.Hour, time.Second
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if st := healthOf(t, d, b.addr, false, 0); st.State != "down" {
		t.Errorf("b after the reload: %+v", st)
	}
	healthOf(t, d, c.addr, true, 0)
	if got := through(t, listen, 12); got["b"] != 0 || got["a"] == 0 || got["c"] == 0 {
		t.Errorf("after the reload: %v", got)
	}

	cfg.Services[0].Health.StartDown = true
	d2 := newSwitchable(t, "d")
	cfg.Services[0].Backends = append(cfg.Services[0].Backends, config.NewBackend(d2.addr))
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	healthOf(t, d, d2.addr, false, 0)

	cfg.Services[0].Health = config.NewHealth() // check = "none"
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if got := through(t, listen, 16); got["b"] == 0 || got["d"] == 0 {
		t.Errorf("without checks: %v, want every backend", got)
	}
	for _, bs := range (apiBackend{d}).Status().Services[0].Backends {
		if bs.Health != nil {
			t.Errorf("health shown without checks: %+v", bs)
		}
	}
}
