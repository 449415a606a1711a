package compat

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCompareOutputs runs one scenario on pen and on lbd and asserts that
// lbd's observable outcomes equal pen's:
//
//   - `penctl mode` (byte for byte);
//   - `penctl servers` before any traffic (byte for byte: all counters 0);
//   - the answers of four sequential round-robin requests (case 2's setup,
//     `-r LISTEN :100 :101`);
//   - `penctl servers` while one more client connection is held open, and
//     again after it closed, compared field by field: the line format (Pen's
//     "%d addr %s port %d conn %d max %d hard %d weight %d prio %d sx %llu
//     rx %llu"), addr, port, conn, max, hard, weight, prio. For sx and rx
//     (bytes sent to / received from the server) only "zero or not" is
//     compared: the exact totals depend on when each implementation counts
//     (Pen adds per recv() chunk), on HTTP Date headers and on how far a
//     held connection got, so they legitimately differ;
//   - `penctl recent`: client address and number of connects (again not the
//     byte counters).
//
// Both implementations use the same backends, so addr and port are equal.
func TestCompareOutputs(t *testing.T) {
	requirePenctl(t)
	b0, b1 := httpBackend(t, ip1, "100"), httpBackend(t, ip1, "101")
	var (
		obs [2]observation
		ok  [2]bool
	)
	for i, im := range implementations() {
		t.Run(im.name, func(t *testing.T) {
			im.require(t)
			obs[i] = observe(t, im, b0, b1)
			ok[i] = true // not reached when skipped
		})
	}
	if t.Failed() {
		return
	}
	if !ok[0] || !ok[1] {
		t.Skip("comparison needs both pen and lbd")
	}
	pen, lbd := obs[0], obs[1]
	if lbd.mode != pen.mode {
		t.Errorf("mode: lbd %q, pen %q", lbd.mode, pen.mode)
	}
	if lbd.serversIdle != pen.serversIdle {
		t.Errorf("servers before traffic:\nlbd:\n%s\npen:\n%s", lbd.serversIdle, pen.serversIdle)
	}
	if strings.Join(lbd.answers, ",") != strings.Join(pen.answers, ",") {
		t.Errorf("round-robin answers: lbd %q, pen %q", lbd.answers, pen.answers)
	}
	compareServers(t, "servers with one connection held", lbd.serversBusy, pen.serversBusy)
	compareServers(t, "servers after it closed", lbd.serversDone, pen.serversDone)
	if fmt.Sprint(lbd.recent) != fmt.Sprint(pen.recent) {
		t.Errorf("recent (client connects): lbd %v, pen %v", lbd.recent, pen.recent)
	}
}

type observation struct {
	mode        string
	serversIdle string
	answers     []string
	serversBusy []serverLine
	serversDone []serverLine
	recent      []string // "client connects N"
}

// serverLine is one line of `servers`, minus the byte counts.
type serverLine struct {
	idx, addr, port, conn, max, hard, weight, prio string
	sxNonZero, rxNonZero                           bool
}

var serverRE = regexp.MustCompile(`^(\d+) addr (\S+) port (\d+) conn (\d+) max (\d+) hard (\d+) weight (-?\d+) prio (-?\d+) sx (\d+) rx (\d+)$`)

// parseServers fails t (fatally) on a line that does not have Pen's format.
func parseServers(t *testing.T, out string) []serverLine {
	t.Helper()
	var ls []serverLine
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		m := serverRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("servers: line %q does not have Pen's format\n%%d addr %%s port %%d conn %%d max %%d hard %%d weight %%d prio %%d sx %%llu rx %%llu\nfull output:\n%s", line, out)
		}
		ls = append(ls, serverLine{m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9] != "0", m[10] != "0"})
	}
	return ls
}

func totalConn(ls []serverLine) int {
	n := 0
	for _, l := range ls {
		c, _ := strconv.Atoi(l.conn)
		n += c
	}
	return n
}

func compareServers(t *testing.T, what string, lbd, pen []serverLine) {
	t.Helper()
	if fmt.Sprint(lbd) != fmt.Sprint(pen) {
		t.Errorf("%s (idx addr port conn max hard weight prio sx>0 rx>0):\nlbd %+v\npen %+v", what, lbd, pen)
	}
}

var recentRE = regexp.MustCompile(`^(\S+) connects (\d+) sx (\d+) rx (\d+)$`)

func observe(t *testing.T, im impl, b0, b1 int) observation {
	var o observation
	l := freePort(t)
	p := startLB(t, im, true, "tcp", l, "-r", hostPort(ip1, l), hostPort(ip1, b0), hostPort(ip1, b1))

	o.mode = p.ctl(t, "mode")
	o.serversIdle = p.ctl(t, "servers")
	parseServers(t, o.serversIdle)
	for range 4 {
		o.answers = append(o.answers, get(t, ip1, url(l)).out)
	}
	// Connections close asynchronously after curl exits: wait for conn 0.
	waitServers(t, p, "all connections closed", func(ls []serverLine) bool { return totalConn(ls) == 0 })

	// Hold one client connection open (no request sent): the balancer has
	// picked a server and connected to it.
	c, err := net.DialTimeout("tcp", hostPort(ip1, l), readyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	o.serversBusy = waitServers(t, p, "one connection open", func(ls []serverLine) bool { return totalConn(ls) == 1 })
	c.Close()
	o.serversDone = waitServers(t, p, "held connection closed", func(ls []serverLine) bool { return totalConn(ls) == 0 })

	for _, line := range strings.Split(strings.TrimSuffix(p.ctl(t, "recent"), "\n"), "\n") {
		m := recentRE.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("recent: line %q does not have Pen's format", line)
			continue
		}
		o.recent = append(o.recent, m[1]+" connects "+m[2])
	}
	return o
}

// waitServers polls `servers` (bounded) until cond holds and returns the
// parsed lines.
func waitServers(t *testing.T, p *lb, what string, cond func([]serverLine) bool) []serverLine {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		ls := parseServers(t, p.ctl(t, "servers"))
		if cond(ls) {
			return ls
		}
		if time.Now().After(deadline) {
			t.Fatalf("servers: %s not reached within %v; last %+v", what, readyTimeout, ls)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
