package balance

import (
	"hash/fnv"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var t0 = time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// servers returns n servers 10.0.0.1:80, 10.0.0.2:80, ...
func servers(n int) []Server {
	s := make([]Server, n)
	for i := range s {
		s[i] = Server{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 80)}
	}
	return s
}

func withWeights(s []Server, w ...int) []Server {
	for i := range w {
		s[i].Weight = w[i]
	}
	return s
}

// conn is one client connection in a scenario.
type conn struct {
	client string        // "addr:port"
	at     time.Duration // after t0
	hold   bool          // stays open (no Done)
}

// run connects each client in turn and returns the chosen indexes. A
// connection to a server, emergency or abuse succeeds at once.
func run(p *Pool, conns []conn) []int {
	var got []int
	for _, c := range conns {
		now := t0.Add(c.at)
		ch := p.Pick(ap(c.client), now)
		got = append(got, ch.Index)
		if ch.Index != NoServer {
			p.Connected(ch, ap(c.client), now)
		}
		if !c.hold {
			p.Done(ch, 0, 0)
		}
	}
	return got
}

func short(clients ...string) []conn {
	var cs []conn
	for _, c := range clients {
		cs = append(cs, conn{client: c})
	}
	return cs
}

func held(clients ...string) []conn {
	cs := short(clients...)
	for i := range cs {
		cs[i].hold = true
	}
	return cs
}

const (
	cA = "192.0.2.1:1000"
	cB = "192.0.2.2:1000"
	cC = "192.0.2.3:1000"
	cD = "192.0.2.4:1000"
)

var (
	emerg = ap("10.9.9.1:80")
	abuse = ap("10.9.9.2:80")
)

func TestPick(t *testing.T) {
	unused := servers(4)
	unused[1].Addr = ap("0.0.0.0:80")
	unused[2].Addr = netip.AddrPort{}
	unused[3].Addr = ap("10.0.0.4:0")

	prio := servers(3)
	prio[0].Prio, prio[1].Prio, prio[2].Prio = 3, 1, 1

	maxHard := servers(2)
	maxHard[0].Max, maxHard[0].Hard = 1, 2
	maxHard[1].Prio = 1

	maxOnly := servers(2)
	maxOnly[0].Max = 1
	maxOnly[1].Prio = 1

	acl := servers(2)
	acl[1].Allow = func(a netip.Addr) bool { return a == netip.MustParseAddr("192.0.2.2") }

	tests := []struct {
		name    string
		opt     Options
		servers []Server
		in      []conn
		want    []int
	}{
		{
			name:    "round-robin starts at server 1",
			servers: servers(3),
			in:      short(cA, cA, cA, cA, cA),
			want:    []int{1, 2, 0, 1, 2},
		},
		{
			name:    "round-robin is one global cursor",
			servers: servers(2),
			in:      short(cA, cB, cC, cD),
			want:    []int{1, 0, 1, 0},
		},
		{
			name:    "unused slots never chosen",
			servers: unused,
			in:      short(cA, cA, cA),
			want:    []int{0, 0, 0},
		},
		{
			name:    "no servers, no emergency",
			servers: nil,
			in:      short(cA),
			want:    []int{NoServer},
		},
		{
			name:    "no servers, emergency",
			opt:     Options{Emergency: emerg},
			servers: []Server{{Addr: ap("0.0.0.0:80")}},
			in:      short(cA),
			want:    []int{Emergency},
		},
		{
			name:    "tracking sticks per IP, not port",
			opt:     Options{Tracking: true},
			servers: servers(3),
			in:      short(cA, cB, "192.0.2.1:2000", cC, cB, cA),
			want:    []int{1, 2, 1, 0, 2, 1},
		},
		{
			name:    "mapped address is the same client",
			opt:     Options{Tracking: true},
			servers: servers(3),
			in:      short(cA, cB, "[::ffff:192.0.2.1]:5"),
			want:    []int{1, 2, 1},
		},
		{
			name:    "tracking off alternates",
			opt:     Options{Tracking: false},
			servers: servers(2),
			in:      short(cA, cA, cA),
			want:    []int{1, 0, 1},
		},
		{
			name:    "tracking expires",
			opt:     Options{Tracking: true, TrackingExpiry: 10 * time.Second},
			servers: servers(3),
			in: []conn{
				{client: cA},
				{client: cB, at: 1 * time.Second},
				{client: cA, at: 5 * time.Second},  // sticks
				{client: cA, at: 15 * time.Second}, // last seen at 5 s: still within
				{client: cA, at: 26 * time.Second}, // 11 s later: forgotten
			},
			want: []int{1, 2, 1, 1, 0},
		},
		{
			name:    "tracking expiry 0 never expires",
			opt:     Options{Tracking: true},
			servers: servers(3),
			in: []conn{
				{client: cA},
				{client: cB},
				{client: cA, at: 1000 * time.Hour},
			},
			want: []int{1, 2, 1},
		},
		{
			name:    "LRU eviction at tracking size",
			opt:     Options{Tracking: true, TrackingSize: 2},
			servers: servers(3),
			// A, B fill the table; B is touched again, so C evicts A;
			// A comes back as new (evicting C) and B still sticks.
			in:   short(cA, cB, cB, cC, cA, cB),
			want: []int{1, 2, 2, 0, 1, 2},
		},
		{
			name:    "LRU eviction forgets least recently seen",
			opt:     Options{Tracking: true, TrackingSize: 2},
			servers: servers(3),
			// A, B, then C evicts A; A gets the next round-robin server.
			in:   short(cA, cB, cC, cA),
			want: []int{1, 2, 0, 1},
		},
		{
			name:    "prio lowest value, ties lowest index",
			opt:     Options{Algorithm: Prio},
			servers: prio,
			in:      short(cA, cB, cC),
			want:    []int{1, 1, 1},
		},
		{
			name:    "weight: sequential short connections land on 0",
			opt:     Options{Algorithm: Weight},
			servers: withWeights(servers(3), 1, 1, 1),
			in:      short(cA, cB, cC, cD),
			want:    []int{0, 0, 0, 0},
		},
		{
			name:    "weight: concurrent connections least-loaded",
			opt:     Options{Algorithm: Weight},
			servers: withWeights(servers(2), 1, 2),
			in:      held(cA, cA, cA, cA, cA, cA, cA),
			// loads 256c/w: (0,0)->0 (256,0)->1 (256,128)->1 (256,256)->0
			// (512,256)->1 (512,384)->1 (512,512)->0
			want: []int{0, 1, 1, 0, 1, 1, 0},
		},
		{
			name:    "weight 0 skipped",
			opt:     Options{Algorithm: Weight},
			servers: withWeights(servers(2), 0, 1),
			in:      held(cA, cA),
			want:    []int{1, 1},
		},
		{
			// Pen's -W without weights resets every connection; all-zero
			// weights count as equal, so this is least-connections.
			name:    "weight all 0 is least connections over all",
			opt:     Options{Algorithm: Weight, Emergency: emerg},
			servers: servers(2),
			in:      []conn{{client: cA, hold: true}, {client: cB, hold: true}, {client: cA}},
			want:    []int{0, 1, 0},
		},
		{
			name:    "weight 0 drains a tracked client",
			opt:     Options{Algorithm: Weight, Tracking: true},
			servers: withWeights(servers(2), 0, 1),
			in:      short(cA),
			want:    []int{1},
		},
		{
			// Big-endian: 192.0.2.1 = 0xc0000201, odd -> 1. Pen on x86
			// reads 0x010200c0, even -> 0.
			name:    "hash is big-endian",
			opt:     Options{Algorithm: Hash},
			servers: servers(2),
			in:      short(cA, "192.0.2.1:9", "127.0.0.1:1", "192.0.2.2:1"),
			want:    []int{1, 1, 1, 0},
		},
		{
			// 0xc0000201 ^ 1 = 0xc0000200 -> 0; ^ 2 -> 0xc0000203 -> 1.
			name:    "hash with port",
			opt:     Options{Algorithm: Hash, HashPort: true},
			servers: servers(2),
			in:      short("192.0.2.1:1", "192.0.2.1:2"),
			want:    []int{0, 1},
		},
		{
			// 0xc0000201 = 3221225985 = 3*1073741995, 0xc0000202 = 3*1073741995 + 1.
			name:    "hash mod slot count, mapped address hashes as IPv4",
			opt:     Options{Algorithm: Hash},
			servers: servers(3),
			in:      short(cA, cB, "[::ffff:192.0.2.2]:7", cC),
			want:    []int{0, 1, 1, 2},
		},
		{
			name:    "hash of unavailable slot fails over",
			opt:     Options{Algorithm: Hash},
			servers: []Server{servers(3)[0], {Addr: ap("0.0.0.0:80")}, servers(3)[2]},
			in:      short(cB), // hashes to 1
			want:    []int{2},
		},
		{
			name:    "max then others",
			opt:     Options{Algorithm: Prio},
			servers: maxOnly,
			in:      held(cA, cB, cA),
			want:    []int{0, 1, 1},
		},
		{
			name:    "hard lets the returning client exceed max",
			opt:     Options{Algorithm: Prio, Tracking: true},
			servers: maxHard,
			// A takes 0 (1 conn = max); B goes to 1; A returns and may use
			// 0 up to hard 2; the third A connection is over hard.
			in:   held(cA, cB, cA, cA),
			want: []int{0, 1, 0, 1},
		},
		{
			name:    "hard without tracking still counts the last server",
			opt:     Options{Algorithm: Prio},
			servers: maxHard,
			in:      held(cA, cB, cA),
			want:    []int{0, 1, 0},
		},
		{
			name:    "server ACL",
			servers: acl,
			in:      short(cA, cB, cA, cB),
			want:    []int{0, 1, 0, 1},
		},
		{
			name:    "client ACL deny goes to abuse",
			opt:     Options{Abuse: abuse, ClientAllowed: func(a netip.Addr) bool { return a != netip.MustParseAddr("192.0.2.2") }},
			servers: servers(2),
			in:      short(cA, cB, cA),
			want:    []int{1, Abuse, 0},
		},
		{
			name:    "client ACL deny without abuse",
			opt:     Options{Emergency: emerg, ClientAllowed: func(netip.Addr) bool { return false }},
			servers: servers(2),
			in:      short(cA),
			want:    []int{NoServer},
		},
		{
			name:    "client ACL sees unmapped addresses",
			opt:     Options{Abuse: abuse, ClientAllowed: func(a netip.Addr) bool { return a.Is4() }},
			servers: servers(2),
			in:      short("[::ffff:192.0.2.1]:1", "[2001:db8::1]:1"),
			want:    []int{1, Abuse},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(tt.opt, tt.servers)
			got := run(p, tt.in)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("chosen servers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPickAddr(t *testing.T) {
	p := New(Options{Abuse: abuse, ClientAllowed: func(a netip.Addr) bool { return a.Is4() }}, servers(2))
	tests := []struct {
		name string
		in   string
		want Choice
	}{
		{name: "server", in: cA, want: Choice{Index: 1, Addr: ap("10.0.0.2:80"), first: 1, id: 2}}, // ids count from 1
		{name: "abuse", in: "[2001:db8::1]:1", want: Choice{Index: Abuse, Addr: abuse, first: Abuse}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Pick(ap(tt.in), t0)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(Choice{}), cmpopts.EquateComparable(netip.AddrPort{})); diff != "" {
				t.Errorf("Pick (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHashIPv6(t *testing.T) {
	// IPv6 hashes FNV-1a-64 of the 16 address bytes (XOR the port with
	// HashPort); checked against the standard library's FNV.
	for _, n := range []int{2, 3, 5, 7} {
		for _, s := range []string{"[2001:db8::1]:1", "[2001:db8::2]:1", "[::1]:80", "[fe80::1234]:443"} {
			for _, withPort := range []bool{false, true} {
				c := ap(s)
				h := fnv.New64a()
				b := c.Addr().As16()
				h.Write(b[:])
				key := h.Sum64()
				if withPort {
					key ^= uint64(c.Port())
				}
				want := int(key % uint64(n))
				p := New(Options{Algorithm: Hash, HashPort: withPort}, servers(n))
				if got := p.Pick(c, t0).Index; got != want {
					t.Errorf("n=%d %s port=%v: Pick = %d, want %d", n, s, withPort, got, want)
				}
			}
		}
	}
}

func TestRoundRobinSkipsBlacklisted(t *testing.T) {
	p := New(Options{}, servers(3))
	p.SetBlacklist(2, time.Minute, t0)
	got := run(p, short(cA, cA, cA, cA))
	if diff := cmp.Diff([]int{1, 0, 1, 0}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	p.SetBlacklist(2, 0, t0)
	got = run(p, short(cA, cA, cA))
	if diff := cmp.Diff([]int{1, 2, 0}, got); diff != "" {
		t.Errorf("after clearing (-want +got):\n%s", diff)
	}
}

func TestPrioBlacklist(t *testing.T) {
	s := servers(3)
	s[0].Prio, s[1].Prio, s[2].Prio = 3, 1, 1
	p := New(Options{Algorithm: Prio}, s)
	var got []int
	got = append(got, run(p, short(cA))...)
	p.SetBlacklist(1, time.Minute, t0)
	got = append(got, run(p, short(cA))...)
	p.SetBlacklist(2, time.Minute, t0)
	got = append(got, run(p, short(cA))...)
	p.SetBlacklist(0, time.Minute, t0)
	got = append(got, run(p, short(cA))...)
	if diff := cmp.Diff([]int{1, 2, 0, NoServer}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestTrackedServerBlacklisted(t *testing.T) {
	// Pen's testsuite relies on this: a blacklist set by penctl is honoured
	// for a tracked client, which fails over from its server.
	tests := []struct {
		name string
		opt  Options
		want []int
	}{
		// The failover server is remembered and kept after the blacklist
		// is cleared.
		{name: "fails over from the tracked server", opt: Options{Tracking: true}, want: []int{1, 2, 2, 2}},
		{name: "stubborn closes", opt: Options{Tracking: true, Stubborn: true}, want: []int{1, NoServer, NoServer, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(tt.opt, servers(3))
			var got []int
			got = append(got, run(p, short(cA))...)
			p.SetBlacklist(1, 30*time.Second, t0)
			got = append(got, run(p, short(cA))...)
			got = append(got, run(p, []conn{{client: cA, at: 29 * time.Second}})...)
			p.SetBlacklist(1, 0, t0)
			got = append(got, run(p, []conn{{client: cA, at: 29 * time.Second}})...)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// failChain picks for the client and then fails every choice until
// NoServer, returning the indexes tried.
func failChain(p *Pool, client string, now time.Time) []int {
	c := p.Pick(ap(client), now)
	got := []int{c.Index}
	for c.Index != NoServer && len(got) < 20 {
		c = p.Failed(c, ap(client), now)
		got = append(got, c.Index)
	}
	return got
}

func TestFailover(t *testing.T) {
	tests := []struct {
		name    string
		opt     Options
		servers []Server
		pre     func(p *Pool)
		want    []int
	}{
		{
			name:    "wraps around to the initial, then emergency",
			opt:     Options{Emergency: emerg},
			servers: servers(4),
			want:    []int{1, 2, 3, 0, Emergency, NoServer},
		},
		{
			name:    "without emergency",
			servers: servers(4),
			want:    []int{1, 2, 3, 0, NoServer},
		},
		{
			name:    "skips unavailable",
			opt:     Options{Emergency: emerg},
			servers: servers(4),
			pre:     func(p *Pool) { p.SetBlacklist(3, time.Minute, t0) },
			want:    []int{1, 2, 0, Emergency, NoServer},
		},
		{
			name:    "one server",
			opt:     Options{Emergency: emerg},
			servers: servers(1),
			want:    []int{0, Emergency, NoServer},
		},
		{
			name:    "stubborn",
			opt:     Options{Stubborn: true, Emergency: emerg},
			servers: servers(3),
			want:    []int{1, NoServer},
		},
		{
			name:    "abuse is not failed over",
			opt:     Options{Abuse: abuse, ClientAllowed: func(netip.Addr) bool { return false }},
			servers: servers(3),
			want:    []int{Abuse, NoServer},
		},
		{
			name:    "hash starts at the hashed slot",
			opt:     Options{Algorithm: Hash},
			servers: servers(3), // 192.0.2.1 -> 0
			want:    []int{0, 1, 2, NoServer},
		},
		{
			name:    "prio",
			opt:     Options{Algorithm: Prio},
			servers: func() []Server { s := servers(3); s[0].Prio = 1; s[1].Prio = 1; return s }(),
			want:    []int{2, 0, 1, NoServer},
		},
		{
			name:    "weight failover skips drained slots",
			opt:     Options{Algorithm: Weight},
			servers: withWeights(servers(4), 1, 0, 1, 1),
			want:    []int{0, 2, 3, NoServer},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opt.Blacklist = 30 * time.Second
			p := New(tt.opt, tt.servers)
			if tt.pre != nil {
				tt.pre(p)
			}
			got := failChain(p, cA, t0)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("failover chain (-want +got):\n%s", diff)
			}
			for i, st := range p.Stats(t0) {
				if st.Conns != 0 {
					t.Errorf("slot %d has %d connections after the chain, want 0", i, st.Conns)
				}
			}
		})
	}
}

func TestFailedBlacklists(t *testing.T) {
	p := New(Options{Blacklist: 30 * time.Second}, servers(3))
	c := p.Pick(ap(cA), t0) // 1
	c = p.Failed(c, ap(cA), t0)
	if c.Index != 2 {
		t.Fatalf("Failed chose %d, want 2", c.Index)
	}
	want := []ServerStats{{}, {Failures: 1, BlacklistedUntil: t0.Add(30 * time.Second)}, {Conns: 1}}
	if diff := cmp.Diff(want, p.Stats(t0)); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	p.Connected(c, ap(cA), t0)
	p.Done(c, 10, 20)
	// Blacklist expiry. Failover does not move the round-robin cursor, so
	// it is still at 1.
	tests := []struct {
		name string
		at   time.Duration
		want []int
	}{
		{name: "still blacklisted at 29s", at: 29 * time.Second, want: []int{2, 0, 2}},
		{name: "back at 30s", at: 30 * time.Second, want: []int{0, 1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cs []conn
			for range tt.want {
				cs = append(cs, conn{client: cB, at: tt.at})
			}
			if diff := cmp.Diff(tt.want, run(p, cs)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestFailedNoBlacklist(t *testing.T) {
	p := New(Options{}, servers(2))
	c := p.Pick(ap(cA), t0)
	p.Failed(c, ap(cA), t0)
	if st := p.Stats(t0); !st[1].BlacklistedUntil.IsZero() {
		t.Errorf("blacklisted with Blacklist 0: %v", st[1].BlacklistedUntil)
	}
}

func TestMaxFailoverWithHard(t *testing.T) {
	// A failover target at max is skipped unless it is the client's last
	// server and below hard.
	s := servers(3)
	s[2].Max, s[2].Hard = 1, 2
	p := New(Options{Tracking: true}, s)
	// B holds a connection on 2.
	c := p.Pick(ap(cB), t0) // 1
	c = p.Failed(c, ap(cB), t0)
	if c.Index != 2 {
		t.Fatalf("B on %d, want 2", c.Index)
	}
	p.Connected(c, ap(cB), t0)
	p.SetBlacklist(1, 0, t0)
	// A is new: 0 is next in round-robin; fail it; 1 fails; 2 is at max.
	got := failChain(p, cA, t0)
	if diff := cmp.Diff([]int{0, 1, NoServer}, got); diff != "" {
		t.Errorf("A (-want +got):\n%s", diff)
	}
	p.SetBlacklist(0, 0, t0)
	p.SetBlacklist(1, 0, t0)
	// B returns to 2 (tracked, below hard) while it holds the first.
	if got := p.Pick(ap(cB), t0).Index; got != 2 {
		t.Errorf("returning B on %d, want 2", got)
	}
}

func TestUpdate(t *testing.T) {
	p := New(Options{Blacklist: time.Minute}, servers(3))
	c1 := p.Pick(ap(cA), t0) // 1, held
	p.Connected(c1, ap(cA), t0)
	p.AddBytes(c1, 100, 200)
	p.SetBlacklist(2, time.Minute, t0)

	s := servers(4)
	s[1].Weight = 5
	p.Update(Options{Blacklist: time.Minute, Tracking: true}, s)
	want := []ServerStats{{}, {Conns: 1, Sent: 100, Recv: 200, Connects: 1}, {BlacklistedUntil: t0.Add(time.Minute)}, {}}
	if diff := cmp.Diff(want, p.Stats(t0)); diff != "" {
		t.Errorf("Stats after Update (-want +got):\n%s", diff)
	}
	// The client table survived: A sticks to 1 now that tracking is on.
	if got := p.Pick(ap(cA), t0); got.Index != 1 {
		t.Errorf("A after Update on %d, want 1", got.Index)
	} else {
		p.Done(got, 0, 0)
	}
	// The cursor survived: after 1 comes 2 (blacklisted), so 3.
	if got := p.Pick(ap(cB), t0); got.Index != 3 {
		t.Errorf("B after Update on %d, want 3", got.Index)
	} else {
		p.Done(got, 0, 0)
	}
	p.Done(c1, 1, 2)
	want[1] = ServerStats{Sent: 101, Recv: 202, Connects: 1}
	if diff := cmp.Diff(want, p.Stats(t0)); diff != "" {
		t.Errorf("Stats after Done (-want +got):\n%s", diff)
	}

	// Shrinking drops the removed slots; late calls for them are ignored.
	c3 := p.Pick(ap(cC), t0) // the cursor is at 3: next is 0
	if c3.Index != 0 {
		t.Fatalf("C on %d, want 0", c3.Index)
	}
	c := p.Pick(ap(cD), t0) // 1
	p.Update(Options{}, servers(1))
	p.Done(c, 5, 5)
	p.AddBytes(c, 1, 1)
	p.SetBlacklist(3, time.Minute, t0)
	if diff := cmp.Diff([]ServerStats{{Conns: 1}}, p.Stats(t0)); diff != "" {
		t.Errorf("Stats after shrinking (-want +got):\n%s", diff)
	}
	if got := p.Failed(c, ap(cD), t0); got.Index != 0 {
		t.Errorf("Failed for a removed slot chose %d, want 0", got.Index)
	}
}

// State follows a server's address through an Update that reorders,
// removes and adds servers: connections held, counters, blacklist and the
// clients that track it.
func TestUpdateFollowsAddress(t *testing.T) {
	s := servers(3) // slots 0, 1, 2
	p := New(Options{Tracking: true, Blacklist: time.Minute}, s)
	cA1 := p.Pick(ap(cA), t0) // 1
	p.Connected(cA1, ap(cA), t0)
	p.AddBytes(cA1, 10, 20)
	cB2 := p.Pick(ap(cB), t0) // 2
	if cA1.Index != 1 || cB2.Index != 2 {
		t.Fatalf("picked %d and %d, want 1 and 2", cA1.Index, cB2.Index)
	}
	if got := p.Failed(cB2, ap(cB), t0); got.Index != 0 {
		t.Fatalf("failover to %d, want 0", got.Index)
	} else {
		p.Done(got, 0, 0)
	}
	// Remove server 0, move 2 before 1, add a new one at the end.
	fresh := netip.MustParseAddrPort("10.0.0.99:80")
	p.Update(Options{Tracking: true, Blacklist: time.Minute}, []Server{s[2], s[1], {Addr: fresh}})
	want := []ServerStats{
		{Failures: 1, BlacklistedUntil: t0.Add(time.Minute)}, // was 2
		{Conns: 1, Sent: 10, Recv: 20, Connects: 1},          // was 1
		{},
	}
	if diff := cmp.Diff(want, p.Stats(t0)); diff != "" {
		t.Errorf("Stats after reordering (-want +got):\n%s", diff)
	}
	// A still tracks its server, now at index 1.
	if got := p.Pick(ap(cA), t0); got.Index != 1 || got.Addr != s[1].Addr {
		t.Errorf("A after Update on %d (%v), want 1 (%v)", got.Index, got.Addr, s[1].Addr)
	} else {
		p.Done(got, 0, 0)
	}
	// The connection reserved before the move is released from the right
	// server.
	p.Done(cA1, 1, 1)
	want[1] = ServerStats{Sent: 11, Recv: 21, Connects: 1}
	if diff := cmp.Diff(want, p.Stats(t0)); diff != "" {
		t.Errorf("Stats after Done (-want +got):\n%s", diff)
	}
	// A server whose address changes at the same index starts afresh.
	p.Update(Options{Tracking: true}, []Server{{Addr: netip.MustParseAddrPort("10.0.0.98:80")}, s[1], {Addr: fresh}})
	if got := p.Stats(t0)[0]; got != (ServerStats{}) {
		t.Errorf("new address at index 0 has %+v, want zero", got)
	}
}

// Drain keeps a server out of every algorithm, tracking and failover
// included, while its connections stay.
func TestDrainEveryAlgorithm(t *testing.T) {
	for _, alg := range []Algorithm{RoundRobin, Hash, Weight, Prio, Maglev} {
		s := servers(3)
		p := New(Options{Algorithm: alg, Tracking: true}, s)
		held := p.Pick(ap(cA), t0)
		p.Connected(held, ap(cA), t0)
		s[held.Index].Drain = true
		p.Update(Options{Algorithm: alg, Tracking: true}, s)
		for i, c := range []string{cA, cB, cC, cD} {
			for port := uint16(1); port < 20; port++ {
				client := netip.AddrPortFrom(ap(c).Addr(), port)
				got := p.Pick(client, t0)
				if got.Index == held.Index {
					t.Fatalf("%v: client %d got the drained server %d", alg, i, got.Index)
				}
				if got = p.Failed(got, client, t0); got.Index == held.Index {
					t.Fatalf("%v: failover to the drained server %d", alg, got.Index)
				}
				p.Done(got, 0, 0)
			}
		}
		if got := p.Stats(t0)[held.Index].Conns; got != 1 {
			t.Errorf("%v: drained server holds %d connections, want 1", alg, got)
		}
	}
}

func TestUpdateShrinksClientTable(t *testing.T) {
	p := New(Options{Tracking: true}, servers(3))
	run(p, short(cA, cB, cC))
	p.Update(Options{Tracking: true, TrackingSize: 2}, servers(3))
	var got []string
	for _, c := range p.Recent(t0, time.Hour) {
		got = append(got, c.Addr.String())
	}
	if diff := cmp.Diff([]string{"192.0.2.3", "192.0.2.2"}, got); diff != "" {
		t.Errorf("Recent after shrinking (-want +got):\n%s", diff)
	}
	// The kept clients still stick, and the table works.
	if diff := cmp.Diff([]int{2, 0, 1, 1}, run(p, short(cB, cC, cD, cD))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestMaglevPool(t *testing.T) {
	s := withWeights(servers(4), 1, 1, 0, 1)
	p := New(Options{Algorithm: Maglev}, s)
	counts := make([]int, 4)
	var first []int
	for i := range 3000 {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 1)
		ch := p.Pick(c, t0)
		p.Done(ch, 0, 0)
		counts[ch.Index]++
		first = append(first, ch.Index)
	}
	if counts[2] != 0 {
		t.Errorf("drained slot 2 got %d clients", counts[2])
	}
	for _, i := range []int{0, 1, 3} {
		if counts[i] < 800 {
			t.Errorf("slot %d got %d of 3000 clients, want about 1000", i, counts[i])
		}
	}
	// Deterministic, and stable across an Update that changes nothing.
	p2 := New(Options{Algorithm: Maglev}, withWeights(servers(4), 1, 1, 0, 1))
	p2.Update(Options{Algorithm: Maglev}, withWeights(servers(4), 1, 1, 0, 1))
	for i := range 3000 {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 1)
		if got := p2.Pick(c, t0).Index; got != first[i] {
			t.Fatalf("client %v: second pool chose %d, first %d", c, got, first[i])
		}
	}
	// An undrained slot 2 takes a share after Update.
	p2.Update(Options{Algorithm: Maglev}, withWeights(servers(4), 1, 1, 1, 1))
	moved := 0
	for i := range 3000 {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 1)
		ch := p2.Pick(c, t0)
		p2.Done(ch, 0, 0)
		if ch.Index != first[i] && ch.Index != 2 {
			moved++
		}
	}
	if moved > 60 {
		t.Errorf("%d of 3000 clients moved between old slots when slot 2 joined", moved)
	}
}

func TestMaglevPoolFailover(t *testing.T) {
	p := New(Options{Algorithm: Maglev, Emergency: emerg}, withWeights(servers(3), 1, 1, 1))
	c := ap(cA)
	want := p.Pick(c, t0)
	p.Done(want, 0, 0)
	p.SetBlacklist(want.Index, time.Minute, t0)
	got := p.Pick(c, t0)
	if got.Index < 0 || got.Index == want.Index {
		t.Errorf("with slot %d blacklisted, chose %d", want.Index, got.Index)
	}
	if got := New(Options{Algorithm: Maglev, Emergency: emerg}, servers(3)).Pick(c, t0).Index; got < 0 {
		t.Errorf("all weights 0: chose %d, want a server (all-zero weights count as equal)", got)
	}
}

func TestRecent(t *testing.T) {
	p := New(Options{Tracking: true, TrackingExpiry: time.Hour}, servers(2))
	run(p, []conn{
		{client: cA},
		{client: cB, at: time.Minute},
		{client: cA, at: 2 * time.Minute},
	})
	p.ClientBytes(netip.MustParseAddr("::ffff:192.0.2.1"), 7, 8)
	p.ClientBytes(netip.MustParseAddr("192.0.2.99"), 1, 1) // unknown: ignored
	now := t0.Add(3 * time.Minute)
	// A denied client is listed too, without a server.
	deny := New(Options{ClientAllowed: func(netip.Addr) bool { return false }}, servers(1))
	run(deny, short(cC))
	tests := []struct {
		name   string
		p      *Pool
		now    time.Time
		within time.Duration
		want   []ClientStats
	}{
		{
			name: "all", p: p, now: now, within: 5 * time.Minute,
			want: []ClientStats{
				{Addr: netip.MustParseAddr("192.0.2.1"), Last: t0.Add(2 * time.Minute), Connects: 2, Sent: 7, Recv: 8, Server: 1},
				{Addr: netip.MustParseAddr("192.0.2.2"), Last: t0.Add(time.Minute), Connects: 1, Server: 0},
			},
		},
		{
			name: "within", p: p, now: now, within: 90 * time.Second,
			want: []ClientStats{
				{Addr: netip.MustParseAddr("192.0.2.1"), Last: t0.Add(2 * time.Minute), Connects: 2, Sent: 7, Recv: 8, Server: 1},
			},
		},
		{
			name: "expired left out", p: p, now: t0.Add(61*time.Minute + 30*time.Second), within: 24 * time.Hour,
			want: []ClientStats{
				{Addr: netip.MustParseAddr("192.0.2.1"), Last: t0.Add(2 * time.Minute), Connects: 2, Sent: 7, Recv: 8, Server: 1},
			},
		},
		{
			name: "denied client", p: deny, now: t0, within: time.Minute,
			want: []ClientStats{{Addr: netip.MustParseAddr("192.0.2.3"), Last: t0, Server: NoServer}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.p.Recent(tt.now, tt.within), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("Recent (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEmergencyNotTracked(t *testing.T) {
	p := New(Options{Tracking: true, Emergency: emerg}, servers(2))
	p.SetBlacklist(0, time.Minute, t0)
	p.SetBlacklist(1, time.Minute, t0)
	if diff := cmp.Diff([]int{Emergency}, run(p, short(cA))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	p.SetBlacklist(0, 0, t0)
	p.SetBlacklist(1, 0, t0)
	// Not stuck on the emergency server: round-robin resumes.
	if diff := cmp.Diff([]int{1, 1}, run(p, short(cA, cA))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestAlgorithmString(t *testing.T) {
	var got []string
	for a := RoundRobin; a <= Maglev+1; a++ {
		got = append(got, a.String())
	}
	want := []string{"roundrobin", "hash", "weight", "prio", "maglev", "algorithm(5)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestConcurrent(t *testing.T) {
	p := New(Options{Tracking: true, Algorithm: Weight, Blacklist: time.Millisecond}, withWeights(servers(4), 1, 2, 3, 4))
	done := make(chan bool)
	for g := range 8 {
		go func() {
			for i := range 2000 {
				c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(g), byte(i)}), uint16(i))
				now := t0.Add(time.Duration(i) * time.Millisecond)
				ch := p.Pick(c, now)
				if i%7 == 0 {
					ch = p.Failed(ch, c, now)
				}
				if ch.Index >= 0 {
					p.Connected(ch, c, now)
					p.Done(ch, 1, 1)
				}
			}
			done <- true
		}()
	}
	for range 8 {
		<-done
	}
	for i, st := range p.Stats(t0) {
		if st.Conns != 0 {
			t.Errorf("slot %d: %d connections left", i, st.Conns)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, alg := range []Algorithm{RoundRobin, Weight, Hash, Maglev} {
		b.Run(alg.String(), func(b *testing.B) {
			p := New(Options{Algorithm: alg, Tracking: true}, withWeights(servers(10), 1, 1, 1, 1, 1, 2, 2, 2, 2, 2))
			clients := make([]netip.AddrPort, 4096)
			for i := range clients {
				clients[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 1)
			}
			i := 0
			for b.Loop() {
				c := clients[i%len(clients)]
				ch := p.Pick(c, t0)
				p.Connected(ch, c, t0)
				p.Done(ch, 100, 100)
				i++
			}
		})
	}
}

// SetDown holds a server out of every algorithm like Drain, through an
// Update, until it is let back.
func TestSetDown(t *testing.T) {
	for _, alg := range []Algorithm{RoundRobin, Hash, Weight, Prio, Maglev} {
		s := servers(3)
		p := New(Options{Algorithm: alg, Tracking: true}, s)
		held := p.Pick(ap(cA), t0)
		p.Connected(held, ap(cA), t0)
		p.SetDown(held.Addr, true)
		p.Update(Options{Algorithm: alg, Tracking: true}, []Server{s[2], s[1], s[0]}) // the state follows the address
		count := func() (n int) {
			for _, c := range []string{cA, cB, cC, cD} {
				for port := uint16(1); port < 20; port++ {
					client := netip.AddrPortFrom(ap(c).Addr(), port)
					got := p.Pick(client, t0)
					if got.Addr == held.Addr {
						n++
					}
					p.Done(got, 0, 0)
				}
			}
			return n
		}
		if n := count(); n != 0 {
			t.Errorf("%v: the down server got %d clients", alg, n)
		}
		var st ServerStats
		for i, x := range p.Stats(t0) {
			if p.slots[i].Addr == held.Addr {
				st = x
			}
		}
		if !st.Down || st.Conns != 1 {
			t.Errorf("%v: down server stats %+v, want Down and its connection", alg, st)
		}
		p.SetDown(held.Addr, false)
		if n := count(); n == 0 && alg != Prio {
			t.Errorf("%v: the server did not come back", alg)
		}
	}
}

// Stats says drained exactly where the pool never chooses the server:
// Drain under any algorithm, weight 0 only under Weight and Maglev, and not
// at all when every weight is 0 (all then count as 1).
func TestStatsDrained(t *testing.T) {
	for _, tc := range []struct {
		name    string
		alg     Algorithm
		weights []int
		drain   int // index of a drained server, or -1
		want    []bool
	}{
		{"roundrobin ignores weight 0", RoundRobin, []int{0, 1}, -1, []bool{false, false}},
		{"hash ignores weight 0", Hash, []int{0, 1}, -1, []bool{false, false}},
		{"weight 0 drains under weight", Weight, []int{0, 1}, -1, []bool{true, false}},
		{"weight 0 drains under maglev", Maglev, []int{0, 1}, -1, []bool{true, false}},
		{"all weights 0 count as 1", Weight, []int{0, 0}, -1, []bool{false, false}},
		{"drain under roundrobin", RoundRobin, []int{1, 1}, 0, []bool{true, false}},
		{"drain with all weights 0", Maglev, []int{0, 0}, 1, []bool{false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srvs := withWeights(servers(len(tc.weights)), tc.weights...)
			if tc.drain >= 0 {
				srvs[tc.drain].Drain = true
			}
			p := New(Options{Algorithm: tc.alg}, srvs)
			chosen := make([]bool, len(srvs))
			for i := range 200 {
				client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), 1000+uint16(i))
				if c := p.Pick(client, t0); c.Index != NoServer {
					chosen[c.Index] = true // held open: Weight spreads by load
				}
			}
			for i, st := range p.Stats(t0) {
				if st.Drained != tc.want[i] {
					t.Errorf("server %d: Drained %t, want %t", i, st.Drained, tc.want[i])
				}
				if chosen[i] == st.Drained {
					t.Errorf("server %d: chosen %t with Drained %t", i, chosen[i], st.Drained)
				}
			}
		})
	}
}
