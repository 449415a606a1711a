package proxy

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/balance"
)

// connectSession drives s the way the paths do: pick, then connect through
// dial, failing over as the session decides. It returns the backends tried.
func connectSession(s *session, now time.Time, dial func(netip.AddrPort) error) (tried []netip.AddrPort, ok bool) {
	if !s.pick(now) {
		return nil, false
	}
	for {
		tried = append(tried, s.choice.Addr)
		err := dial(s.choice.Addr)
		if err == nil {
			s.connected(now)
			return tried, true
		}
		if !s.failed(err, now) {
			return tried, false
		}
	}
}

// sessionWant is what a session case must leave behind.
type sessionWant struct {
	admitted bool
	tried    []netip.AddrPort
	ok       bool
	// blacklisted are the slots blacklisted afterwards.
	blacklisted []int
	counters    Counters
	// logged is the request log line, without its time fields; "" for
	// none.
	logged string
	// sent and recv are the pool's byte counters of slot 0 after done.
	sent, recv uint64
}

// The admit → pick → connect → failover → done → log sequence, with a fake
// dialer (an outcome per backend) and a fake clock.
func TestSessionSequence(t *testing.T) {
	b := []netip.AddrPort{
		netip.MustParseAddrPort("10.0.0.1:80"),
		netip.MustParseAddrPort("10.0.0.2:80"),
		netip.MustParseAddrPort("10.0.0.3:80"),
	}
	emergency := netip.MustParseAddrPort("10.0.0.9:80")
	abuse := netip.MustParseAddrPort("10.0.0.66:80")
	client := netip.MustParseAddrPort("192.0.2.7:4321")
	refused, emfile := syscall.ECONNREFUSED, syscall.EMFILE
	deny := func(netip.Addr) bool { return false }
	line := func(server netip.AddrPort, sent, recv uint64) string {
		return fmt.Sprintf("192.0.2.7 %s svc 4321 %d %d %d", server.Addr(), server.Port(), sent, recv)
	}

	for _, tc := range []struct {
		name  string
		pool  balance.Options
		max   int
		held  int                       // sessions admitted before and still open
		fail  map[netip.AddrPort]error  // the fake dialer's outcomes; nil connects
		then  func(*session, time.Time) // after connecting, before done
		bytes [2]uint64                 // the totals passed to done
		want  sessionWant
	}{{
		name: "first backend connects", bytes: [2]uint64{5, 7},
		want: sessionWant{admitted: true, tried: b[:1], ok: true, counters: Counters{Accepted: 1},
			logged: line(b[0], 5, 7), sent: 5, recv: 7},
	}, {
		name: "refused backend failed over", fail: map[netip.AddrPort]error{b[0]: refused},
		want: sessionWant{admitted: true, tried: b[:2], ok: true, blacklisted: []int{0},
			counters: Counters{Accepted: 1}, logged: line(b[1], 0, 0)},
	}, {
		name: "every backend refuses", fail: map[netip.AddrPort]error{b[0]: refused, b[1]: refused, b[2]: refused},
		want: sessionWant{admitted: true, tried: b, blacklisted: []int{0, 1, 2},
			counters: Counters{Accepted: 1, Refused: 1}},
	}, {
		name: "emergency server after every backend",
		pool: balance.Options{Emergency: emergency},
		fail: map[netip.AddrPort]error{b[0]: refused, b[1]: refused, b[2]: refused},
		want: sessionWant{admitted: true, tried: append(slices.Clone(b), emergency), ok: true,
			blacklisted: []int{0, 1, 2}, counters: Counters{Accepted: 1}, logged: line(emergency, 0, 0)},
	}, {
		name: "stubborn pool does not fail over", pool: balance.Options{Stubborn: true},
		fail: map[netip.AddrPort]error{b[0]: refused},
		want: sessionWant{admitted: true, tried: b[:1], blacklisted: []int{0},
			counters: Counters{Accepted: 1, Refused: 1}},
	}, {
		name: "local error blames nobody", fail: map[netip.AddrPort]error{b[0]: emfile},
		want: sessionWant{admitted: true, tried: b[:1], counters: Counters{Accepted: 1, LocalErrors: 1}},
	}, {
		name: "epoll refusing a socket blames nobody", fail: map[netip.AddrPort]error{b[0]: hostError{syscall.ENOSPC}},
		want: sessionWant{admitted: true, tried: b[:1], counters: Counters{Accepted: 1, LocalErrors: 1}},
	}, {
		name: "local error after a refusal", fail: map[netip.AddrPort]error{b[0]: refused, b[1]: emfile},
		want: sessionWant{admitted: true, tried: b[:2], blacklisted: []int{0},
			counters: Counters{Accepted: 1, LocalErrors: 1}},
	}, {
		name: "denied client closed", pool: balance.Options{ClientAllowed: deny},
		want: sessionWant{admitted: true, counters: Counters{Accepted: 1, Refused: 1}},
	}, {
		name: "denied client to the abuse server", pool: balance.Options{ClientAllowed: deny, Abuse: abuse},
		want: sessionWant{admitted: true, tried: []netip.AddrPort{abuse}, ok: true,
			counters: Counters{Accepted: 1}, logged: line(abuse, 0, 0)},
	}, {
		name: "service full", max: 1, held: 1,
		want: sessionWant{counters: Counters{Active: 1, Accepted: 1, Refused: 1}},
	}, {
		name: "room under the limit", max: 2, held: 1,
		want: sessionWant{admitted: true, tried: b[:1], ok: true, counters: Counters{Active: 1, Accepted: 2},
			logged: line(b[0], 0, 0)},
	}, {
		// A UDP flow whose backend refuses later, with none left: it was
		// served, so it is not counted refused.
		name: "served session loses its backend",
		then: func(s *session, now time.Time) {
			for s.failed(refused, now) {
			}
		},
		want: sessionWant{admitted: true, tried: b[:1], ok: true, blacklisted: []int{0, 1, 2}, counters: Counters{Accepted: 1}},
	}, {
		// Long connections report bytes as they go; done adds the rest
		// only.
		name: "progress reported once", bytes: [2]uint64{3 << 20, 5},
		then: func(s *session, now time.Time) {
			s.progress(100, 0) // below reportEvery: nothing yet
			s.progress(2<<20, 1)
		},
		want: sessionWant{admitted: true, tried: b[:1], ok: true, counters: Counters{Accepted: 1},
			logged: line(b[0], 3<<20, 5), sent: 3 << 20, recv: 5},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			servers := []balance.Server{{Addr: b[0]}, {Addr: b[1]}, {Addr: b[2]}}
			tc.pool.Algorithm = balance.Prio // first choice: slot 0
			tc.pool.Blacklist = time.Minute
			pool := balance.New(tc.pool, servers)
			log, err := OpenConnLog(t.TempDir() + "/req.log")
			if err != nil {
				t.Fatal(err)
			}
			svc := NewService(Options{Name: "svc", MaxConnections: tc.max, Log: log}, pool, t.Logf)
			now := time.Unix(1_000_000, 0)
			o := svc.opts.Load()
			for range tc.held {
				var h session
				if !h.admit(svc, o, netip.MustParseAddrPort("192.0.2.1:1"), now) {
					t.Fatal("held session not admitted")
				}
			}
			var s session
			admitted := s.admit(svc, o, client, now)
			var got sessionWant
			got.admitted = admitted
			if admitted {
				got.tried, got.ok = connectSession(&s, now, func(a netip.AddrPort) error { return tc.fail[a] })
				if got.ok && tc.then != nil {
					tc.then(&s, now)
				}
				s.done(tc.bytes[0], tc.bytes[1], now.Add(1500*time.Millisecond))
			}
			st := pool.Stats(now)
			for i, ss := range st {
				if ss.Conns != 0 {
					t.Errorf("slot %d holds %d connections after done", i, ss.Conns)
				}
				if !ss.BlacklistedUntil.IsZero() {
					got.blacklisted = append(got.blacklisted, i)
				}
			}
			got.sent, got.recv = st[0].Sent, st[0].Recv
			got.counters = svc.Counters()
			if lines := readLog(t, log); len(lines) > 0 {
				f := strings.Fields(lines[0])
				if len(lines) != 1 || len(f) != 9 || f[1] != "1000001" || f[8] != "1500" {
					t.Errorf("log %q: want one line, ending at 1000001, lasting 1500ms", lines)
				}
				got.logged = strings.Join(slices.Concat(f[:1], f[2:8]), " ")
			}
			if got.admitted != tc.want.admitted || !slices.Equal(got.tried, tc.want.tried) || got.ok != tc.want.ok ||
				!slices.Equal(got.blacklisted, tc.want.blacklisted) || got.counters != tc.want.counters ||
				got.logged != tc.want.logged || got.sent != tc.want.sent || got.recv != tc.want.recv {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// readLog returns the lines of a request log once it is closed.
func readLog(t *testing.T, l *ConnLog) []string {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(strings.Split(string(b), "\n"), func(s string) bool { return s == "" })
}
