package lbd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/balance"
	"github.com/nib-lb/nib/internal/dummy"
	"github.com/nib-lb/nib/internal/proxy"
)

// setFailAt makes the reload step named step (or every step whose first
// word it is) fail; "" stops injecting.
func setFailAt(d *Daemon, step string) {
	d.mu.Lock()
	d.failAt = step
	d.mu.Unlock()
}

// fdSet is this process's open descriptors and what they are.
type fdSet map[string]string

func openFDs(t *testing.T) fdSet {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	s := fdSet{}
	for _, e := range ents {
		// The TCP engine keeps a pool of splice pipes that grows and
		// shrinks with traffic, on its own: they are not counted.
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && !strings.HasPrefix(link, "pipe:") {
			s[e.Name()] = link
		}
	}
	return s
}

// settledFDs is openFDs once connections closed before (by a test's
// cleanup, finishing in the background) are gone: two readings 50 ms
// apart agree.
func settledFDs(t *testing.T) fdSet {
	t.Helper()
	prev := openFDs(t)
	for range 100 {
		time.Sleep(50 * time.Millisecond)
		cur := openFDs(t)
		if len(cur) == len(prev) {
			return cur
		}
		prev = cur
	}
	return prev
}

// sameFDs waits (briefly) until the process has the descriptors it had:
// a failed reload must neither leak nor close any.
func sameFDs(t *testing.T, want fdSet) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := openFDs(t)
		var extra, gone []string
		for fd, link := range got {
			if want[fd] != link {
				extra = append(extra, fd+" "+link)
			}
		}
		for fd, link := range want {
			if got[fd] != link {
				gone = append(gone, fd+" "+link)
			}
		}
		// The descriptor that read the directory differs.
		if len(extra) <= 1 && len(gone) <= 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("descriptors opened %v, closed %v by the failed reload", extra, gone)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runState is what a reload may change, by identity: the running objects
// and their settings.
type runState struct {
	cfg      *config.Config
	services map[string]*running
	svcCfg   map[string]config.Service
	opts     map[string]proxy.Options
	kinds    map[string]proxy.Kind
	pools    map[string]*balance.Pool
	slots    map[string]int
	retired  int
	engine   *proxy.Engine
	dummies  map[netip.AddrPort]*dummy.Server
	logs     map[string]*proxy.ConnLog
	dsr      map[string]*dsrPort
	dsrSpec  map[string]*dsrSpec
	penctl   *penControl
	penACL   *ctlACL
	debug    int32
}

func stateOf(d *Daemon) runState {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := runState{
		cfg: d.cfg.Clone(), services: map[string]*running{}, svcCfg: map[string]config.Service{},
		opts: map[string]proxy.Options{}, kinds: map[string]proxy.Kind{}, pools: map[string]*balance.Pool{},
		slots: map[string]int{}, retired: len(d.retired), engine: d.engine,
		dummies: map[netip.AddrPort]*dummy.Server{}, logs: map[string]*proxy.ConnLog{},
		dsr: map[string]*dsrPort{}, dsrSpec: map[string]*dsrSpec{},
		penctl: d.penctl, penACL: d.penACL.Load(), debug: d.debug.Load(),
	}
	for name, r := range d.services {
		s.services[name] = r
		s.svcCfg[name] = r.cfg
		s.opts[name] = r.svc.Options()
		s.kinds[name] = r.kind()
		s.pools[name] = r.pool
		s.slots[name] = len(r.pool.Stats(time.Now()))
	}
	for a, x := range d.dummies {
		s.dummies[a] = x
	}
	for p, l := range d.logs {
		s.logs[p] = l
	}
	for i, p := range d.dsr {
		s.dsr[i] = p
		p.mu.Lock()
		s.dsrSpec[i] = p.spec
		p.mu.Unlock()
	}
	return s
}

// sameState fails unless d runs exactly what before described.
func sameState(t *testing.T, d *Daemon, before runState) {
	t.Helper()
	after := stateOf(d)
	if !reflect.DeepEqual(after.cfg, before.cfg) {
		t.Errorf("Config() changed:\n%+v\nwant\n%+v", after.cfg, before.cfg)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s changed: %v, want %v", what, got, want)
		}
	}
	check("services", after.services, before.services)
	check("service configs", after.svcCfg, before.svcCfg)
	check("service options", after.opts, before.opts)
	check("service kinds", after.kinds, before.kinds)
	check("pools", after.pools, before.pools)
	check("pool slots", after.slots, before.slots)
	check("retired services", after.retired, before.retired)
	if after.engine != before.engine {
		t.Errorf("engine changed: %p, want %p", after.engine, before.engine)
	}
	check("dummies", after.dummies, before.dummies)
	check("request logs", after.logs, before.logs)
	check("DSR ports", after.dsr, before.dsr)
	check("DSR services", after.dsrSpec, before.dsrSpec)
	if after.penctl != before.penctl || after.penACL != before.penACL {
		t.Errorf("control listener or ACL changed")
	}
	check("debug level", after.debug, before.debug)
}

// xffBackend answers HTTP requests with the X-Forwarded-For they carry
// ("-" for none) and name: which path (stream or engine) proxied them.
func xffBackend(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		xff := r.Header.Get("X-Forwarded-For")
		if xff == "" {
			xff = "-"
		}
		fmt.Fprintf(w, "%s %s", name, xff)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// httpConn is a kept-alive HTTP connection, asked one request at a time.
type httpConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialHTTP(t *testing.T, addr netip.AddrPort) *httpConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &httpConn{c: c, br: bufio.NewReader(c)}
}

func (h *httpConn) get(t *testing.T) string {
	t.Helper()
	h.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(h.c, "GET / HTTP/1.1\r\nHost: nib.test\r\n\r\n"); err != nil {
		t.Fatalf("request: %v", err)
	}
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return string(b)
}

// askHTTP asks addr once, on a new connection.
func askHTTP(t *testing.T, addr netip.AddrPort) string {
	t.Helper()
	return dialHTTP(t, addr).get(t)
}

// udpBackend answers every datagram with its name.
func udpBackend(t *testing.T, name string) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort([]byte(name), from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// udpAsk sends a datagram to addr from a new socket and returns the answer.
func udpAsk(t *testing.T, addr netip.AddrPort) string {
	t.Helper()
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for range 3 {
		c.Write([]byte("?"))
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil {
			return string(buf[:n])
		}
	}
	t.Fatalf("no answer from %s", addr)
	return ""
}

func freeUDPPort(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// refuses fails unless nothing listens on addr.
func refuses(t *testing.T, addr netip.AddrPort, what string) {
	t.Helper()
	if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		c.Close()
		t.Fatalf("%s: something listens on %s", what, addr)
	}
}

// echoesHeld is echoes on a connection kept across reloads (greet gave it
// a deadline).
func echoesHeld(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	echoes(t, c, msg)
}

func service(name string, listen netip.AddrPort, p config.Protocol, backends ...netip.AddrPort) config.Service {
	s := config.NewService(name, listen, p)
	s.Tracking = false
	for _, b := range backends {
		s.Backends = append(s.Backends, config.NewBackend(b))
	}
	return s
}

// A reload that fails at any step of its prepare phase leaves everything as
// it was and serving: the same configuration, the same services with the
// same listeners, pools, options and connections, the same dummies with
// their old bodies, request logs and control listener, and no descriptor
// opened or closed. The same reload then succeeds, and the connections
// established before it survive.
func TestReloadIsAllOrNothing(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	xa := xffBackend(t, "xa")
	u1, u2 := udpBackend(t, "u1"), udpBackend(t, "u2")
	lWeb, lAPI, lGone, lFresh, lTLS := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	lDNS := freeUDPPort(t)
	d1, d2 := freePort(t), freePort(t)

	web := service("web", lWeb, config.TCP, a)
	web.Log = filepath.Join(dir, "web.log")
	old := &config.Config{
		Services: []config.Service{
			web,
			service("api", lAPI, config.TCP, xa),
			service("dns", lDNS, config.UDP, u1),
			service("gone", lGone, config.TCP, a),
		},
		Dummies: []config.Dummy{{Listen: d1, Body: "old body"}},
		Control: config.Control{PenListen: filepath.Join(dir, "ctl1")},
	}
	d, _ := newDaemon(t, old)

	// What changes: web keeps its listener and gets backend b with
	// weight 7 and a backlog; api moves from the engine to the stream
	// path (HTTP) on the same socket; dns is renamed (same socket); gone
	// goes; fresh (engine, new log) and secure (TLS) are new; the dummy
	// gets a new body and a second one comes; control moves.
	newWeb := service("web", lWeb, config.TCP, b)
	newWeb.Backends[0].Weight = 7
	newWeb.Backlog = 64
	newWeb.Log = web.Log
	api := service("api", lAPI, config.TCP, xa)
	api.HTTP = true
	fresh := service("fresh", lFresh, config.TCP, b)
	fresh.Log = filepath.Join(dir, "fresh.log")
	secure := service("secure", lTLS, config.TCP, a)
	secure.TLS = config.NewTLS(pki.BundleFile, pki.LeafKeyFile)
	next := &config.Config{
		Services: []config.Service{newWeb, api, service("dns2", lDNS, config.UDP, u2), fresh, secure},
		Dummies:  []config.Dummy{{Listen: d1, Body: "new body"}, {Listen: d2, Body: "second"}},
		Control:  config.Control{PenListen: filepath.Join(dir, "ctl2")},
	}

	// Connections established before any reload.
	_, heldWeb := greet(t, lWeb)
	heldAPI := dialHTTP(t, lAPI)
	if got := heldAPI.get(t); got != "xa -" {
		t.Fatalf("api through the engine: %q", got)
	}
	_, heldGone := greet(t, lGone)

	serving := func(t *testing.T) {
		t.Helper()
		if name, _ := greet(t, lWeb); name != "a" {
			t.Errorf("web: new connections go to %q, want a", name)
		}
		echoesHeld(t, heldWeb, "web held")
		if got := askHTTP(t, lAPI); got != "xa -" {
			t.Errorf("api: %q, want the engine's answer (no X-Forwarded-For)", got)
		}
		if got := heldAPI.get(t); got != "xa -" {
			t.Errorf("api, held: %q", got)
		}
		if got := udpAsk(t, lDNS); got != "u1" {
			t.Errorf("dns: %q, want u1", got)
		}
		if name, _ := greet(t, lGone); name != "a" {
			t.Errorf("gone: %q", name)
		}
		echoesHeld(t, heldGone, "gone held")
		if got := askHTTP(t, d1); got != "old body" {
			t.Errorf("dummy: %q, want the old body", got)
		}
		if got := penCommand(t, old.Control.PenListen, "mode"); !strings.Contains(got, "roundrobin") {
			t.Errorf("control: %q", got)
		}
		refuses(t, lFresh, "fresh")
		refuses(t, lTLS, "secure")
		refuses(t, d2, "second dummy")
		for _, p := range []string{next.Control.PenListen, fresh.Log} {
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left behind: %v", p, err)
			}
		}
	}

	steps := []string{
		"log " + fresh.Log,
		"tls secure",
		"listen", // the first listener: web's stays, so api's
		"listen api",
		"listen dns2",
		"listen fresh",
		"listen secure",
		"dummy " + d2.String(),
		"control",
	}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			before := stateOf(d)
			fds := settledFDs(t)
			setFailAt(d, step)
			err := d.Apply(next)
			setFailAt(d, "")
			if !errors.Is(err, errInjected) {
				t.Fatalf("Apply: %v, want the injected failure", err)
			}
			if !strings.HasPrefix(err.Error(), step) && step != "listen" && !strings.Contains(err.Error(), step) {
				t.Errorf("error %q does not name the step", err)
			}
			sameFDs(t, fds)
			sameState(t, d, before)
			serving(t)
		})
	}

	// Failures that are not injected: a port in use, a certificate file
	// missing.
	busy, err := net.Listen("tcp", lFresh.String())
	if err != nil {
		t.Fatal(err)
	}
	before, fds := stateOf(d), settledFDs(t)
	if err := d.Apply(next); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Apply with fresh's port in use: %v", err)
	}
	sameFDs(t, fds)
	sameState(t, d, before)
	busy.Close()
	fds = settledFDs(t)
	noCert := next.Clone()
	noCert.Services[4].TLS = config.NewTLS(filepath.Join(dir, "missing.pem"), "")
	if err := d.Apply(noCert); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("Apply with a missing certificate: %v", err)
	}
	sameFDs(t, fds)
	sameState(t, d, before)
	serving(t)

	// Now the reload succeeds.
	if err := d.Apply(next); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d.Config(), next) {
		t.Errorf("Config() after the reload:\n%+v\nwant\n%+v", d.Config(), next)
	}
	echoesHeld(t, heldWeb, "web survives")
	if name, _ := greet(t, lWeb); name != "b" {
		t.Errorf("web: %q, want b", name)
	}
	if got := heldAPI.get(t); got != "xa -" {
		t.Errorf("api's connection from before: %q, want it still through the engine", got)
	}
	if got := askHTTP(t, lAPI); got != "xa 127.0.0.1" {
		t.Errorf("api: %q, want the stream path's X-Forwarded-For", got)
	}
	if got := udpAsk(t, lDNS); got != "u2" {
		t.Errorf("dns2: %q, want u2", got)
	}
	refuses(t, lGone, "gone")
	echoesHeld(t, heldGone, "gone's connection survives")
	if name, _ := greet(t, lFresh); name != "b" {
		t.Errorf("fresh: %q", name)
	}
	mustGreet(t, lTLS, pki.verifying("default.example"))
	if got := askHTTP(t, d1); got != "new body" {
		t.Errorf("dummy: %q", got)
	}
	if got := askHTTP(t, d2); got != "second" {
		t.Errorf("second dummy: %q", got)
	}
	if got := penCommand(t, next.Control.PenListen, "mode"); !strings.Contains(got, "roundrobin") {
		t.Errorf("control: %q", got)
	}
	if _, err := os.Lstat(old.Control.PenListen); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old control socket: %v", err)
	}
	st := stateOf(d)
	if st.services["web"] != before.services["web"] || st.pools["web"] != before.pools["web"] {
		t.Error("web did not keep its running service and pool")
	}
	if st.kinds["api"] != proxy.StreamKind || st.kinds["dns2"] != proxy.UDPKind {
		t.Errorf("kinds: %v", st.kinds)
	}
	if st.retired == 0 {
		t.Error("gone and api's old service are not kept for Shutdown and Close")
	}
}

// The TCP engine is created by the first reload that needs it, and a
// reload that fails after creating it closes it again.
func TestReloadEngineStep(t *testing.T) {
	d1 := freePort(t)
	d, _ := newDaemon(t, &config.Config{Dummies: []config.Dummy{{Listen: d1, Body: "x"}}})
	a := namedBackend(t, "a")
	l := freePort(t)
	cfg := oneService(l, a)
	cfg.Dummies = []config.Dummy{{Listen: d1, Body: "x"}}
	before, fds := stateOf(d), settledFDs(t)
	setFailAt(d, "engine")
	if err := d.Apply(cfg); !errors.Is(err, errInjected) {
		t.Fatalf("Apply: %v", err)
	}
	setFailAt(d, "")
	sameFDs(t, fds)
	sameState(t, d, before)
	if before.engine != nil {
		t.Fatal("an engine without engine services")
	}
	refuses(t, l, "web")
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if name, _ := greet(t, l); name != "a" {
		t.Fatalf("web: %q", name)
	}
}

// A TCP service that changes kind (engine, stream) or name keeps its
// socket: no connect is refused during the reloads, and connections made
// under each configuration finish under it. Close closes those of
// services a reload retired too.
func TestReloadKindChangeKeepsPort(t *testing.T) {
	xa := xffBackend(t, "xa")
	l := freePort(t)
	engine := service("web", l, config.TCP, xa)
	stream := engine
	stream.HTTP = true
	renamed := engine
	renamed.Name = "welcome"
	d, logs := newDaemon(t, &config.Config{Services: []config.Service{engine}})

	stop := make(chan struct{})
	failed := make(chan []error, 1)
	go func() {
		var errs []error
		for {
			select {
			case <-stop:
				failed <- errs
				return
			case <-time.After(time.Millisecond):
			}
			c, err := net.DialTimeout("tcp", l.String(), 2*time.Second)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			c.Close()
		}
	}()

	type held struct {
		c    *httpConn
		want string
	}
	var conns []held
	cur := "xa -"
	for i, step := range []struct {
		svc  config.Service
		want string
	}{
		{stream, "xa 127.0.0.1"},
		{engine, "xa -"},
		{renamed, "xa -"},
		{stream, "xa 127.0.0.1"},
	} {
		c := dialHTTP(t, l)
		if got := c.get(t); got != cur {
			t.Fatalf("before reload %d: %q, want %q", i, got, cur)
		}
		conns = append(conns, held{c, cur})
		cur = step.want
		if err := d.Apply(&config.Config{Services: []config.Service{step.svc}}); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		if got := askHTTP(t, l); got != step.want {
			t.Fatalf("after reload %d: %q, want %q", i, got, step.want)
		}
		for j, h := range conns {
			if got := h.c.get(t); got != h.want {
				t.Fatalf("after reload %d, connection %d: %q, want %q", i, j, got, h.want)
			}
		}
	}
	close(stop)
	if errs := <-failed; len(errs) > 0 {
		t.Fatalf("%d connects failed during the reloads: %v", len(errs), errs)
	}
	if !strings.Contains(logs.String(), "service welcome: took over "+l.String()) {
		t.Errorf("no hand-over logged:\n%s", logs)
	}

	// Close hangs up on every connection, those of retired services too.
	d.Close()
	for j, h := range conns {
		h.c.c.SetDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(h.c.c, "GET / HTTP/1.1\r\nHost: nib.test\r\n\r\n")
		if _, err := http.ReadResponse(h.c.br, nil); err == nil {
			t.Errorf("connection %d still answered after Close", j)
		}
	}
}

// A listener cannot move to an address that overlaps the running one
// without being the same: the reload fails, says why, and changes nothing.
func TestReloadOverlappingAddressFails(t *testing.T) {
	a := namedBackend(t, "a")
	p := freePort(t)
	wild := netip.AddrPortFrom(netip.IPv4Unspecified(), p.Port())
	d, _ := newDaemon(t, &config.Config{Services: []config.Service{service("welcome", wild, config.TCP, a)}})
	before, fds := stateOf(d), settledFDs(t)
	err := d.Apply(&config.Config{Services: []config.Service{service("web", p, config.TCP, a)}})
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), `the running service "welcome" on `+wild.String()) || !strings.Contains(err.Error(), "two reloads") {
		t.Fatalf("Apply: %v", err)
	}
	sameFDs(t, fds)
	sameState(t, d, before)
	if name, _ := greet(t, p); name != "a" {
		t.Fatalf("after the failed reload: %q", name)
	}
}

// Control commands that change the configuration reload through the same
// transaction: one whose reload fails answers the error and changes
// nothing.
func TestControlCommandReloadIsAllOrNothing(t *testing.T) {
	a, b := namedBackend(t, "a"), namedBackend(t, "b")
	l := freePort(t)
	cfg := oneService(l, a, b)
	cfg.Control.PenListen = filepath.Join(t.TempDir(), "ctl")
	d, _ := newDaemon(t, cfg)
	before := stateOf(d)
	setFailAt(d, "control")
	got := penCommand(t, cfg.Control.PenListen, "server 0 weight 9")
	setFailAt(d, "")
	if !strings.Contains(got, errInjected.Error()) {
		t.Fatalf("server 0 weight 9: %q, want the reload's error", got)
	}
	sameState(t, d, before)
	if got := penCommand(t, cfg.Control.PenListen, "servers"); !strings.Contains(got, " weight 1 ") || strings.Contains(got, " weight 9 ") {
		t.Fatalf("servers after the failed command: %q", got)
	}
	if got := penCommand(t, cfg.Control.PenListen, "server 0 weight 9"); got != "" {
		t.Fatalf("server 0 weight 9: %q", got)
	}
	if d.Config().Services[0].Backends[0].Weight != 9 {
		t.Fatal("the command did not apply once the reload could")
	}
}
