package compat

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestTestsuite runs the 11 local cases of Pen's testsuite.sh (reference/
// pen.md §4.2) against Debian's pen and against lbd, with the same command
// lines and the same assertions. Differences from the original, all for
// hermeticity: Apache and BIND are Go servers on ephemeral loopback ports;
// the second client address is 127.0.0.2 (a forced source address) instead
// of a second interface; listeners are 127.0.0.1:<free port> (or ::1) instead
// of bare ports, which would bind 0.0.0.0; Pen's control socket is a Unix
// socket in a temporary directory, as in the original.
//
// Every process is started as `<bin> -f -p DIR/pid [-C DIR/ctl -X] <case
// args>` (pen also gets `-u root` with -C when run as root); the UDP relays
// of case 5 get no -C. What an implementation must do beyond the cases'
// assertions:
//   - stay in the foreground with -f and not exit until SIGTERM (an early
//     exit fails the case); exit on SIGTERM (SIGKILL follows after 2 s);
//   - readiness is read from /proc/net/{tcp,udp}{,6}: a TCP socket in LISTEN
//     or a bound UDP socket on the listen port (no probe connection is made);
//   - the control socket may come up a little later: penctl is retried
//     while it reports "error connecting" (up to 5 s);
//   - the pid file holds the process's own pid (it is checked against the
//     started process before any signal is sent), written once the SIGHUP
//     handler is installed; SIGHUP re-reads the -F file and the new server
//     address is used for new connections within 5 s (pen: at once);
//   - a connection that no server may take (and no emergency server) is
//     closed, not left open.
//
// NIB_COMPAT_GO_CLIENTS=1 replaces curl and dig by Go clients (also used
// when those tools are missing, except under CI=true, where that fails).
func TestTestsuite(t *testing.T) {
	for _, im := range implementations() {
		t.Run(im.name, func(t *testing.T) {
			// pen and lbd run side by side: every port comes from freePort,
			// which never hands out the same port twice.
			t.Parallel()
			im.require(t)
			for _, c := range testsuiteCases {
				t.Run(c.name, func(t *testing.T) {
					if c.ctl {
						requirePenctl(t)
					}
					c.run(t, im)
				})
			}
		})
	}
}

type testsuiteCase struct {
	name string
	ctl  bool // driven through penctl
	run  func(t *testing.T, im impl)
}

var testsuiteCases = []testsuiteCase{
	{"1_tcp_tracking", false, caseTCPTracking},
	{"2_tcp_roundrobin", false, caseTCPRoundRobin},
	{"3_udp_tracking", false, caseUDPTracking},
	{"4_udp_roundrobin", false, caseUDPRoundRobin},
	{"5_udp_failover", true, caseUDPFailover},
	{"6_emergency", true, caseEmergency},
	{"7_abuse", true, caseAbuse},
	{"8_tls", false, caseTLS},
	{"9_ipv6_to_ipv4", false, caseV6toV4},
	{"10_ipv4_to_ipv6", false, caseV4toV6},
	{"11_sighup_reload", false, caseSIGHUP},
}

func url(port int) string { return "http://" + hostPort(ip1, port) + "/" }

// Case 1: `8080 :100 :101`. Clients are tracked by address: two requests from
// IP1 get the same backend, two from IP2 get the same as each other and a
// different one from IP1's.
func caseTCPTracking(t *testing.T, im impl) {
	b0, b1 := httpBackend(t, ip1, "100"), httpBackend(t, ip1, "101")
	l := freePort(t)
	startLB(t, im, true, "tcp", l, hostPort(ip1, l), hostPort(ip1, b0), hostPort(ip1, b1))

	h1a := get(t, ip1, url(l))
	checkDifferent(t, "First result", "", h1a)
	h1b := get(t, ip1, url(l))
	checkResult(t, "Second result", h1a.out, h1b)
	h2a := get(t, ip2, url(l))
	checkDifferent(t, "Third result", h1a.out, h2a)
	h2b := get(t, ip2, url(l))
	checkResult(t, "Fourth result", h2a.out, h2b)
}

// Case 2: `-r 8080 :100 :101`. Round-robin regardless of the client.
func caseTCPRoundRobin(t *testing.T, im impl) {
	b0, b1 := httpBackend(t, ip1, "100"), httpBackend(t, ip1, "101")
	l := freePort(t)
	startLB(t, im, true, "tcp", l, "-r", hostPort(ip1, l), hostPort(ip1, b0), hostPort(ip1, b1))

	h1a := get(t, ip1, url(l))
	checkDifferent(t, "First result", "", h1a)
	h1b := get(t, ip1, url(l))
	checkDifferent(t, "Second result", h1a.out, h1b)
	h2a := get(t, ip2, url(l))
	checkResult(t, "Third result", h1a.out, h2a)
	h2b := get(t, ip2, url(l))
	checkDifferent(t, "Fourth result", h2a.out, h2b)
}

// Case 3: `-U 8080 IP1:53 IP2:53`. UDP with client tracking. The two DNS
// backends answer 1.1.1.1 and 2.2.2.2, which tells them apart.
func caseUDPTracking(t *testing.T, im impl) {
	d0, d1 := dnsBackend(t, "1.1.1.1"), dnsBackend(t, "2.2.2.2")
	l := freePort(t)
	startLB(t, im, true, "udp", l, "-U", hostPort(ip1, l), hostPort(ip1, d0), hostPort(ip1, d1))

	h1a := dig(t, ip1, l)
	checkDifferent(t, "First result", "", h1a)
	h1b := dig(t, ip1, l)
	checkResult(t, "Second result", h1a.out, h1b)
	h2a := dig(t, ip2, l)
	checkDifferent(t, "Third result", h1a.out, h2a)
	h2b := dig(t, ip2, l)
	checkResult(t, "Fourth result", h2a.out, h2b)
}

// Case 4: `-Ur 8080 IP1:53 IP2:53`. UDP round-robin.
func caseUDPRoundRobin(t *testing.T, im impl) {
	d0, d1 := dnsBackend(t, "1.1.1.1"), dnsBackend(t, "2.2.2.2")
	l := freePort(t)
	startLB(t, im, true, "udp", l, "-Ur", hostPort(ip1, l), hostPort(ip1, d0), hostPort(ip1, d1))

	h1a := dig(t, ip1, l)
	checkDifferent(t, "First result", "", h1a)
	h1b := dig(t, ip1, l)
	checkDifferent(t, "Second result", h1a.out, h1b)
	h2a := dig(t, ip2, l)
	checkResult(t, "Third result", h1a.out, h2a)
	h2b := dig(t, ip2, l)
	checkDifferent(t, "Fourth result", h2a.out, h2b)
}

// Case 5 (issue #19): three `-U 1000x IP1:53` relays behind
// `-Ur 5353 :10000 :10001 :10002`; blacklisting through penctl steers UDP,
// and with every server blacklisted the query gets no reply (dig exit 9).
func caseUDPFailover(t *testing.T, im impl) {
	d := dnsBackend(t, "1.1.1.1")
	var relays []int
	for range 3 {
		r := freePort(t)
		startLB(t, im, false, "udp", r, "-U", hostPort(ip1, r), hostPort(ip1, d))
		checkResult(t, "Result from target "+strconv.Itoa(r), "1.1.1.1", dig(t, ip1, r))
		relays = append(relays, r)
	}
	l := freePort(t)
	p := startLB(t, im, true, "udp", l, "-Ur", hostPort(ip1, l),
		hostPort(ip1, relays[0]), hostPort(ip1, relays[1]), hostPort(ip1, relays[2]))

	checkResult(t, "First result from load balanced service", "1.1.1.1", dig(t, ip1, l))
	p.ctl(t, "server", "1", "blacklist", "30")
	checkResult(t, "Second result from load balanced service", "1.1.1.1", dig(t, ip1, l))
	p.ctl(t, "server", "2", "blacklist", "30")
	checkResult(t, "Third result from load balanced service", "1.1.1.1", dig(t, ip1, l))
	p.ctl(t, "server", "0", "blacklist", "30")
	if r := dig(t, ip1, l); r.code != digNoReply {
		t.Errorf("Fourth result (all servers blacklisted): dig exit code %d, output %q; want exit %d (no reply)", r.code, r.out, digNoReply)
	}
	p.ctl(t, "server", "0", "blacklist", "0")
	checkResult(t, "Fifth result from load balanced service", "1.1.1.1", dig(t, ip1, l))
}

// Case 6: `-r -e :102 10000 :100 :101:0:0:101`. The emergency server is used
// only when every regular server is blacklisted.
func caseEmergency(t *testing.T, im impl) {
	b0, b1 := httpBackend(t, ip1, "100"), httpBackend(t, ip1, "101")
	e := httpBackend(t, ip1, "Emergency")
	l := freePort(t)
	p := startLB(t, im, true, "tcp", l, "-r", "-e", hostPort(ip1, e), hostPort(ip1, l),
		hostPort(ip1, b0), hostPort(ip1, b1)+":0:0:101")

	h1 := get(t, ip1, url(l))
	checkDifferent(t, "First result", "", h1)
	h2 := get(t, ip1, url(l))
	checkDifferent(t, "Second result", h1.out, h2)

	p.ctl(t, "server", "0", "blacklist", "100")
	h1 = get(t, ip1, url(l))
	checkDifferent(t, "Third result", "", h1)
	h2 = get(t, ip1, url(l))
	checkResult(t, "Fourth result", h1.out, h2)

	p.ctl(t, "server", "1", "blacklist", "100")
	checkResult(t, "Fifth result", "Emergency", get(t, ip1, url(l)))

	p.ctl(t, "server", "0", "blacklist", "0")
	h1 = get(t, ip1, url(l))
	checkDifferent(t, "Sixth result", "", h1)
	h2 = get(t, ip1, url(l))
	checkResult(t, "Seventh result", h1.out, h2)

	p.ctl(t, "server", "1", "blacklist", "0")
	h1 = get(t, ip1, url(l))
	checkDifferent(t, "Eighth result", "", h1)
	h2 = get(t, ip1, url(l))
	checkDifferent(t, "Ninth result", h1.out, h2)
}

// Case 7: `-B :103 10000 :100`. Clients denied by client_acl go to the abuse
// server; a client that the only server's own ACL refuses is dropped.
func caseAbuse(t *testing.T, im impl) {
	b0 := httpBackend(t, ip1, "100")
	a := httpBackend(t, ip1, "Abuse")
	l := freePort(t)
	p := startLB(t, im, true, "tcp", l, "-B", hostPort(ip1, a), hostPort(ip1, l), hostPort(ip1, b0))

	p.ctl(t, "acl", "1", "permit", ip1)
	p.ctl(t, "client_acl", "1")
	checkDifferent(t, "First result", "Abuse", get(t, ip1, url(l)))
	checkResult(t, "Second result", "Abuse", get(t, ip2, url(l)))
	p.ctl(t, "client_acl", "0")
	checkDifferent(t, "Third result", "Abuse", get(t, ip2, url(l)))

	// Blocking access to the single regular server drops the connection.
	p.ctl(t, "server", "0", "acl", "1")
	checkDifferent(t, "Fourth result", "Abuse", get(t, ip1, url(l)))
	r := get(t, ip2, url(l))
	if r.out != "" {
		t.Errorf("Fifth result: expected '', got %q (exit %d)", r.out, r.code)
	}
	// The original's curl has no -m, so a hang would never end: the
	// connection must be closed, not left open.
	if r.code == curlTimeout {
		t.Errorf("Fifth result: connection was left open (curl timed out); want it closed")
	}
}

// Case 8: `-E siag.pem 1443 :100`, with a fresh RSA-2048 certificate (the
// original key is too small for OpenSSL 3).
func caseTLS(t *testing.T, im impl) {
	cert := selfSignedPEM(t)
	b0 := httpBackend(t, ip1, "100")
	l := freePort(t)
	startLB(t, im, true, "tcp", l, "-E", cert, hostPort(ip1, l), hostPort(ip1, b0))
	checkResult(t, "First result", "100", get(t, ip1, "https://"+hostPort(ip1, l)+"/"))
}

// Case 9: `:::10000 :100` — an IPv6 listener (here ::1 rather than the
// wildcard) in front of an IPv4 backend; `curl -g6 http://[::1]:10000/`.
func caseV6toV4(t *testing.T, im impl) {
	if !haveIPv6() {
		t.Skip("::1 is not usable on this machine")
	}
	b0 := httpBackend(t, ip1, "100")
	l := freePort(t)
	startLB(t, im, true, "tcp", l, "::1:"+strconv.Itoa(l), hostPort(ip1, b0))
	checkResult(t, "First result", "100", get(t, "", "http://"+hostPort("::1", l)+"/"))
}

// Case 10: `127.0.0.1:10000 [::1]:100` — IPv4 listener, IPv6 backend.
func caseV4toV6(t *testing.T, im impl) {
	if !haveIPv6() {
		t.Skip("::1 is not usable on this machine")
	}
	b0 := httpBackend(t, "::1", "100")
	l := freePort(t)
	startLB(t, im, true, "tcp", l, hostPort(ip1, l), hostPort("::1", b0))
	checkResult(t, "First result", "100", get(t, ip1, url(l)))
}

// Case 11: `10000 -F autotest.cfg` where the file holds
// `server 0 address 127.0.0.1 port 100`; rewrite it to port 101 and
// `kill -HUP $(cat PIDFILE)`: the answer becomes 101. (The original puts -F
// after the listen port and relies on GNU getopt's permutation; here it
// comes first.)
func caseSIGHUP(t *testing.T, im impl) {
	b0, b1 := httpBackend(t, ip1, "100"), httpBackend(t, ip1, "101")
	cfg := filepath.Join(shortDir(t), "autotest.cfg")
	writeCfg := func(port int) {
		t.Helper()
		line := "server 0 address 127.0.0.1 port " + strconv.Itoa(port) + "\n"
		if err := os.WriteFile(cfg, []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg(b0)
	l := freePort(t)
	p := startLB(t, im, true, "tcp", l, "-F", cfg, hostPort(ip1, l))
	checkResult(t, "First result", "100", get(t, ip1, url(l)))

	writeCfg(b1)
	pid := p.pid(t)
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatalf("kill -HUP %d: %v", pid, err)
	}
	// Pen re-reads the file before its next accept; a reload may also be
	// applied asynchronously, so poll (bounded): every answer must be 100
	// or 101, and 101 must come.
	deadline := time.Now().Add(readyTimeout)
	for i := 0; ; i++ {
		r := get(t, ip1, url(l))
		if r.out == "101" {
			if i > 0 {
				t.Logf("reload took effect after %d requests", i+1)
			}
			return
		}
		if r.out != "100" || i >= 50 || time.Now().After(deadline) {
			checkResult(t, "Second result", "101", r)
			return
		}
		time.Sleep(pollEvery)
	}
}
