package lbd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/control"
)

// apiWeights is every backend's weight from GET /api/v1/status, per service.
func apiWeights(t *testing.T, a *apiClient) map[string][]int {
	t.Helper()
	code, body := a.do("GET", "/api/v1/status", "")
	var st control.Status
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("status: %d %v %s", code, err, body)
	}
	w := map[string][]int{}
	for _, s := range st.Services {
		for _, b := range s.Backends {
			w[s.Name] = append(w[s.Name], b.Weight)
		}
	}
	return w
}

func apiPen(t *testing.T, a *apiClient, cmd string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"command": cmd})
	code, reply := a.do("POST", "/api/v1/pen", string(body))
	var pr control.PenReply
	if code != 200 || json.Unmarshal([]byte(reply), &pr) != nil {
		t.Fatalf("pen %q: %d %s", cmd, code, reply)
	}
	return pr.Output
}

// Changes made through the API and written survive a restart: the running
// config and the backends' weights are the same before and after.
func TestAPIWriteRestartSameState(t *testing.T) {
	e := newApplianceEnv(t)
	b0, b1 := namedBackend(t, "b0"), namedBackend(t, "b1")
	apiAddr, svcAddr := freePort(t), freePort(t)
	cfg := fmt.Sprintf(`[control]
listen = %q

[[service]]
name = "tcp"
listen = %q

[[service.backend]]
address = %q

[[service.backend]]
address = %q
`, apiAddr, svcAddr, b0, b1)
	putFile(t, e.file, []byte(cfg))
	p := e.start(t)
	a := newAPIClient(t, apiAddr.String(), e.state)

	apiPen(t, a, "server 1 weight 3")
	apiPen(t, a, "blacklist 17")
	if got := strings.TrimSpace(apiPen(t, a, "blacklist")); got != "17" {
		t.Errorf("blacklist reads back %q", got)
	}
	if code, body := a.do("POST", "/api/v1/write", ""); code != 200 || strings.TrimSpace(body) != `{"ok":true}` {
		t.Fatalf("write: %d %s", code, body)
	}
	code, before := a.do("GET", "/api/v1/config", "")
	if code != 200 {
		t.Fatalf("config: %d %s", code, before)
	}
	wBefore := apiWeights(t, a)
	if got := wBefore["tcp"]; len(got) != 2 || got[1] != 3 {
		t.Fatalf("weights before restart: %v", wBefore)
	}
	parsed, err := config.Parse("api", []byte(before))
	if err != nil || len(parsed.Services) != 1 || parsed.Services[0].Blacklist != 17*time.Second ||
		parsed.Services[0].Backends[1].Weight != 3 {
		t.Fatalf("running config lacks the changes: %v\n%s", err, before)
	}
	if c := p.stop(t); c != 0 {
		t.Fatalf("lbd exited %d:\n%s", c, p.logs())
	}

	p2 := e.start(t)
	defer p2.stop(t)
	a2 := newAPIClient(t, apiAddr.String(), e.state)
	code, after := a2.do("GET", "/api/v1/config", "")
	if code != 200 || after != before {
		t.Errorf("config after restart: %d\n--- before\n%s\n--- after\n%s", code, before, after)
	}
	wAfter := apiWeights(t, a2)
	if fmt.Sprint(wAfter) != fmt.Sprint(wBefore) {
		t.Errorf("weights: before %v, after %v", wBefore, wAfter)
	}
	if got := strings.TrimSpace(apiPen(t, a2, "blacklist")); got != "17" {
		t.Errorf("blacklist after restart %q", got)
	}
}

// A reload through the API, broken or good, loses nothing on a long-lived
// proxied connection.
func TestAPIReloadUnderLoad(t *testing.T) {
	e := newApplianceEnv(t)
	back := namedBackend(t, "echo")
	apiAddr, svcAddr, svc2Addr := freePort(t), freePort(t), freePort(t)
	cfg := fmt.Sprintf(`[control]
listen = %q

[[service]]
name = "tcp"
listen = %q

[[service.backend]]
address = %q
`, apiAddr, svcAddr, back)
	putFile(t, e.file, []byte(cfg))
	p := e.start(t)
	defer p.stop(t)
	a := newAPIClient(t, apiAddr.String(), e.state)

	name, c := greet(t, svcAddr)
	if name != "echo" {
		t.Fatalf("greeting %q", name)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))

	// A writer sends numbered lines without pause; a reader checks each
	// one comes back, in order.
	end := lineStream(t, c)
	time.Sleep(100 * time.Millisecond)

	// A broken file: 422, the old config keeps running.
	putFile(t, e.file, []byte(cfg+"bogus = 1\n"))
	if code, body := a.do("POST", "/api/v1/reload", ""); code != 422 {
		t.Errorf("broken reload: %d %s", code, body)
	}
	time.Sleep(100 * time.Millisecond)
	if code, body := a.do("GET", "/api/v1/config", ""); code != 200 || strings.Contains(body, svc2Addr.String()) {
		t.Errorf("config after a broken reload: %d\n%s", code, body)
	}

	// A good file with a changed weight and a new service: 200.
	good := strings.Replace(cfg, fmt.Sprintf("address = %q\n", back), fmt.Sprintf("address = %q\nweight = 5\n", back), 1) +
		fmt.Sprintf("\n[[service]]\nname = \"tcp2\"\nlisten = %q\n\n[[service.backend]]\naddress = %q\n", svc2Addr, back)
	putFile(t, e.file, []byte(good))
	if code, body := a.do("POST", "/api/v1/reload", ""); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	time.Sleep(100 * time.Millisecond)

	sent := end()
	if sent < 50 {
		t.Errorf("only %d lines exchanged", sent)
	}
	// The connection still works end to end.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	echoes(t, c, "still here\n")

	code, body := a.do("GET", "/api/v1/config", "")
	parsed, err := config.Parse("api", []byte(body))
	if code != 200 || err != nil || len(parsed.Services) != 2 || parsed.Services[0].Backends[0].Weight != 5 {
		t.Errorf("config after reload: %d %v\n%s", code, err, body)
	}
	if w := apiWeights(t, a); len(w["tcp"]) != 1 || w["tcp"][0] != 5 || len(w["tcp2"]) != 1 {
		t.Errorf("weights after reload: %v", w)
	}
	name2, c2 := greet(t, svc2Addr)
	if name2 != "echo" {
		t.Errorf("new service greets %q", name2)
	}
	// Closed before lbd stops, so it has nothing to drain.
	c2.Close()
	c.Close()
}

// write in appliance mode saves the file as loaded (without lbd's -d boost,
// which a restart adds again) and keeps it as the last good config; the
// welcome page's {{config}} keeps naming the file.
func TestAPIWriteUnboostedAndLastGood(t *testing.T) {
	e := newApplianceEnv(t)
	e.flags = []string{"-d"}
	back := namedBackend(t, "echo")
	apiAddr, svcAddr := freePort(t), freePort(t)
	putFile(t, e.file, []byte(fmt.Sprintf(`debug = 1

[control]
listen = %q

[[service]]
name = "tcp"
listen = %q

[[service.backend]]
address = %q
`, apiAddr, svcAddr, back)))
	p := e.start(t)
	defer func() { p.stop(t) }()
	a := newAPIClient(t, apiAddr.String(), e.state)
	if out := apiPen(t, a, "debug"); strings.TrimSpace(out) != "2" {
		t.Fatalf("running debug level %q, want 2 (1 + -d)", out)
	}
	lastGood, _ := os.ReadFile(e.lastGood())
	if code, body := a.do("POST", "/api/v1/backend", fmt.Sprintf(`{"service":"tcp","backend":%q,"op":"weight","weight":4}`, back)); code != 200 {
		t.Fatalf("weight: %d %s", code, body)
	}
	if code, body := a.do("POST", "/api/v1/write", ""); code != 200 {
		t.Fatalf("write: %d %s", code, body)
	}
	saved, err := os.ReadFile(e.file)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(saved); !strings.Contains(s, "debug = 1\n") || !strings.Contains(s, "weight = 4") {
		t.Errorf("saved config:\n%s", s)
	}
	// The main loop takes the saved file as last-good.
	var got []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got, _ = os.ReadFile(e.lastGood()); string(got) == string(saved) {
			break
		}
	}
	if string(got) != string(saved) || string(got) == string(lastGood) {
		t.Errorf("last-good after write:\n%s\nwant the saved file:\n%s", got, saved)
	}
	// Pen's write verb saves the same way.
	apiPen(t, a, "debug 3")
	apiPen(t, a, "write")
	if saved, _ := os.ReadFile(e.file); !strings.Contains(string(saved), "debug = 2\n") {
		t.Errorf("after debug 3 and Pen's write (boost 1):\n%s", saved)
	}
	// A restart with -d runs the level the operator set.
	p.stop(t)
	p = e.start(t)
	a = newAPIClient(t, apiAddr.String(), e.state)
	if out := apiPen(t, a, "debug"); strings.TrimSpace(out) != "3" {
		t.Errorf("debug after the restart %q, want 3", out)
	}
}

// lineStream writes numbered lines to c, an echo, about one a millisecond,
// and checks each comes back in order, until end is called: end stops the
// writer, waits (at most 10 s) until every line sent has come back, stops
// the reader and returns how many lines made the round trip. A line lost,
// reordered or garbled, or a broken connection, fails the test.
func lineStream(t *testing.T, c net.Conn) (end func() int64) {
	t.Helper()
	stop := make(chan struct{})
	werr, rerr := make(chan error, 1), make(chan error, 1)
	var wrote, read atomic.Int64
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				werr <- nil
				return
			default:
			}
			if _, err := fmt.Fprintf(c, "line %08d\n", i); err != nil {
				werr <- err
				return
			}
			wrote.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	go func() {
		buf := make([]byte, len("line 00000000\n"))
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				rerr <- err
				return
			}
			if want := fmt.Sprintf("line %08d\n", read.Load()); string(buf) != want {
				rerr <- fmt.Errorf("got %q, want %q", buf, want)
				return
			}
			read.Add(1)
		}
	}()
	return func() int64 {
		t.Helper()
		close(stop)
		if err := <-werr; err != nil {
			t.Fatalf("writer: %v", err)
		}
		sent := wrote.Load()
		for deadline := time.Now().Add(10 * time.Second); read.Load() < sent; {
			select {
			case err := <-rerr:
				t.Fatalf("reader after %d of %d lines: %v", read.Load(), sent, err)
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d lines sent, %d came back", sent, read.Load())
			}
		}
		c.SetReadDeadline(time.Now())
		if err := <-rerr; !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("reader: %v", err)
		}
		if got := read.Load(); got != sent {
			t.Fatalf("%d lines sent, %d came back", sent, got)
		}
		return sent
	}
}
