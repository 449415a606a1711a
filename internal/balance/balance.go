package balance

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Algorithm is the initial server choice for clients without a usable
// tracked server. The order matches config.Algorithm.
type Algorithm int

// Algorithms.
const (
	// RoundRobin takes the next available server after the previous
	// choice; the cursor starts after server 0 (Pen's default algorithm).
	RoundRobin Algorithm = iota
	// Hash maps the client address (and port, with HashPort) to a slot.
	Hash
	// Weight is weighted least-connections: the lowest conns*256/weight
	// wins, ties to the lowest index, weight 0 never (Pen -W).
	Weight
	// Prio takes the available server with the lowest Prio, ties to the
	// lowest index.
	Prio
	// Maglev is weighted Maglev consistent hashing over the client address
	// (and port, with HashPort); weight 0 never.
	Maglev
)

// String returns Pen's name of the algorithm ("maglev" for Maglev).
func (a Algorithm) String() string {
	switch a {
	case RoundRobin:
		return "roundrobin"
	case Hash:
		return "hash"
	case Weight:
		return "weight"
	case Prio:
		return "prio"
	case Maglev:
		return "maglev"
	}
	return "algorithm(" + strconv.Itoa(int(a)) + ")"
}

// Special Choice.Index values.
const (
	// Emergency is the emergency server (Options.Emergency).
	Emergency = -1
	// Abuse is the abuse server (Options.Abuse).
	Abuse = -2
	// NoServer means the client must be closed.
	NoServer = -3
)

// DefaultTrackingSize is Pen's default client table size (clients_max).
const DefaultTrackingSize = 2048

// Server is one server slot.
type Server struct {
	// Addr is the server. An invalid or unspecified address or port 0 marks
	// an unused slot, which is never chosen.
	Addr netip.AddrPort
	// Max is the soft connection limit; 0 is unlimited.
	Max int
	// Hard lets a client whose last server was this one exceed Max, up to
	// Hard connections.
	Hard int
	// Weight is used by Weight and Maglev; with those algorithms a slot of
	// weight 0 is drained: never chosen, not even by tracking or failover.
	Weight int
	// Drain takes the slot out of the choice under every algorithm (as
	// weight 0 does under Weight and Maglev); its connections stay.
	Drain bool
	// Prio is used by Prio: lower is preferred.
	Prio int
	// Allow is the per-server client ACL; nil permits everyone.
	Allow func(netip.Addr) bool
}

// Options are a pool's settings.
type Options struct {
	// Algorithm is the initial choice for untracked clients.
	Algorithm Algorithm
	// Tracking sends a returning client to its previous server (Pen's
	// default; -r turns it off). The client table is kept either way, for
	// Recent and for Hard.
	Tracking bool
	// TrackingExpiry forgets a client not seen for this long; 0 never.
	TrackingExpiry time.Duration
	// TrackingSize is the number of clients remembered, least recently seen
	// evicted first; 0 means DefaultTrackingSize.
	TrackingSize int
	// HashPort includes the client port in Hash and Maglev (Pen -r -h).
	HashPort bool
	// Stubborn closes the client instead of failing over.
	Stubborn bool
	// Blacklist is how long a server whose connect failed is skipped; 0
	// does not blacklist.
	Blacklist time.Duration
	// Emergency is tried when no server is available or failover has
	// cycled through all of them; the zero value means none.
	Emergency netip.AddrPort
	// Abuse receives clients denied by ClientAllowed; the zero value means
	// they are closed.
	Abuse netip.AddrPort
	// ClientAllowed is the client ACL; nil permits everyone.
	ClientAllowed func(netip.Addr) bool
}

// Choice is the server chosen for one connection.
type Choice struct {
	// Index is the server slot, or Emergency, Abuse or NoServer.
	Index int
	// Addr is the server to connect to; zero for NoServer.
	Addr netip.AddrPort

	// first is the slot failover started from; failover stops when it
	// comes back to it.
	first int
	// id identifies the server the connection was reserved on, so that
	// Done and Failed find it after an Update moved it to another index.
	id uint64
}

// ServerStats are one slot's counters.
type ServerStats struct {
	// Conns is the number of reserved (connecting or open) connections.
	Conns int
	// Sent is bytes sent to the server, Recv bytes received from it.
	Sent, Recv uint64
	// Connects counts successful connects, Failures failed or timed-out
	// ones, since the server joined the pool.
	Connects, Failures uint64
	// Down is set while an active health check holds the server down
	// (SetDown).
	Down bool
	// Drained is set while the server's own settings keep new connections
	// from it: Drain, or weight 0 under Weight or Maglev (unless every
	// weight is 0, when all count as 1).
	Drained bool
	// BlacklistedUntil is when the blacklist ends; zero if the slot is not
	// blacklisted now.
	BlacklistedUntil time.Time
}

// ClientStats describe one remembered client.
type ClientStats struct {
	Addr netip.Addr
	// Last is when the client last connected.
	Last time.Time
	// Connects counts the client's successful connects.
	Connects uint64
	// Sent is bytes sent to the client, Recv bytes received from it.
	Sent, Recv uint64
	// Server is the slot of the client's last successful connect, or
	// NoServer.
	Server int
}

// Pool chooses servers the way Pen's server.c does (reference/pen.md
// §1.3). It is safe for concurrent use.
//
// For each new connection: the client table is updated (every client,
// denied ones too, so that Recent lists them); a client denied by
// ClientAllowed goes to the abuse server or NoServer; with Tracking, a
// client whose last server is still eligible gets it; otherwise the
// algorithm chooses. A tracked, hashed or Maglev slot that is unavailable
// (blacklisted, at Max, or refused by its ACL) is failed over from as if its
// connect had failed; when an algorithm finds no available server at all,
// the emergency server is used, else NoServer. Failover goes to the next
// slots in order, wrapping around to the first choice, then to the
// emergency server; stubborn pools, abuse and emergency never fail over.
//
// Deliberate differences from Pen:
//   - Hash is byte-order independent: an IPv4 address is a big-endian
//     uint32 (Pen reads network-order bytes as a native integer, so x86 and
//     big-endian machines disagree), and IPv6 hashes all 16 bytes with
//     FNV-1a-64 (Pen uses the last byte only). The port, with HashPort, is
//     XORed in as a number.
//   - With Weight and Maglev a slot of weight 0 is drained: it is skipped by
//     tracking and failover too (Pen's failover ignores weights). When every
//     weight is 0 (Pen's -W without per-server weights, which makes Pen
//     reset every connection) all servers count as weight 1.
//   - Weight's load is Pen's integer conns*256/weight.
//   - Maglev is new (Pen has no consistent hashing in proxy mode).
//   - Clients are keyed by IP with IPv4-mapped addresses unmapped, and the
//     table is a true LRU instead of Pen's linear scan.
//   - When no server is available for the initial choice, the emergency
//     server is used even with Stubborn (stubborn only forbids failing over
//     from a chosen server).
type Pool struct {
	mu      sync.Mutex
	opt     Options
	slots   []slot
	rr      int // the last round-robin choice
	clients clientTable
	maglev  *MaglevTable
	mgKeys  []string
	mgW     []int
	lastID  uint64 // the last slot id handed out
}

// slot is a server and its runtime state.
type slot struct {
	Server
	used       bool
	down       bool   // held down by a health check (SetDown)
	id         uint64 // unique in the pool's life; kept with the address
	conns      int
	sent, recv uint64
	connects   uint64
	failures   uint64
	until      time.Time // blacklisted while now < until
	weight     int       // effective weight: Weight, or 1 when all are 0
}

// New returns a pool for servers, in slot order.
func New(o Options, servers []Server) *Pool {
	p := &Pool{}
	p.clients.init()
	p.Update(o, servers)
	return p
}

// Update replaces the options and the server table, as on a reload.
// Runtime state (connections, counters, blacklist) stays with the server's
// address wherever it moves in the table, and so do remembered clients; a
// new address starts from zero. The client table (shrunk to the new
// TrackingSize, least recently seen first) and the round-robin cursor
// survive. Servers that disappear lose their state; Done for their
// connections is ignored.
func (p *Pool) Update(o Options, servers []Server) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.opt = o
	old := make(map[netip.AddrPort]int, len(p.slots))
	for i, s := range p.slots {
		if _, dup := old[s.Addr]; s.used && !dup {
			old[s.Addr] = i
		}
	}
	moved := make(map[int]int, len(servers)) // old index → new index
	slots := make([]slot, len(servers))
	for i, s := range servers {
		j, ok := old[s.Addr]
		if ok && usable(s.Addr) {
			delete(old, s.Addr) // a duplicate address starts afresh
			slots[i] = p.slots[j]
			moved[j] = i
		} else {
			p.lastID++
			slots[i] = slot{id: p.lastID}
		}
		slots[i].Server = s
		slots[i].used = usable(s.Addr)
	}
	p.clients.remap(func(i int) int {
		if j, ok := moved[i]; ok {
			return j
		}
		return NoServer
	})
	// Pen's -W with no weights given skips every server; here a table
	// whose weights are all 0 counts every server as weight 1.
	allZero := true
	for i := range slots {
		if slots[i].used && slots[i].Weight > 0 {
			allZero = false
		}
	}
	for i := range slots {
		slots[i].weight = slots[i].Weight
		if allZero {
			slots[i].weight = 1
		}
	}
	p.slots = slots
	if len(slots) > 0 {
		p.rr %= len(slots)
	} else {
		p.rr = 0
	}
	size := o.TrackingSize
	if size <= 0 {
		size = DefaultTrackingSize
	}
	p.clients.resize(size)
	p.rebuildMaglev()
}

// rebuildMaglev rebuilds the Maglev table if the algorithm is Maglev and
// the servers or weights changed.
func (p *Pool) rebuildMaglev() {
	if p.opt.Algorithm != Maglev {
		p.maglev, p.mgKeys, p.mgW = nil, nil, nil
		return
	}
	keys := make([]string, len(p.slots))
	ws := make([]int, len(p.slots))
	for i, s := range p.slots {
		keys[i] = s.Addr.String()
		if p.eligible(i) { // the table leaves out what Pick may not choose
			ws[i] = s.weight
		}
	}
	if p.maglev != nil && equalSlices(keys, p.mgKeys) && equalSlices(ws, p.mgW) {
		return
	}
	p.maglev, p.mgKeys, p.mgW = NewMaglev(keys, ws, MaglevSize), keys, ws
}

func equalSlices[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// usable reports whether a is a real server address.
func usable(a netip.AddrPort) bool {
	return a.Addr().IsValid() && !a.Addr().IsUnspecified() && a.Port() != 0
}

// normalise unmaps IPv4-mapped IPv6 clients, so that a dual-stack
// listener's clients are hashed, tracked and checked as IPv4.
func normalise(c netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(c.Addr().Unmap(), c.Port())
}

// Pick chooses the server for a new connection from client and reserves a
// connection on it. The caller must pass the Choice to Failed, or to
// Connected and later Done.
func (p *Pool) Pick(client netip.AddrPort, now time.Time) Choice {
	client = normalise(client)
	p.mu.Lock()
	defer p.mu.Unlock()
	ce := p.clients.touch(client.Addr(), now, p.opt.TrackingExpiry)
	if p.opt.ClientAllowed != nil && !p.opt.ClientAllowed(client.Addr()) {
		if usable(p.opt.Abuse) {
			return Choice{Index: Abuse, Addr: p.opt.Abuse, first: Abuse}
		}
		return Choice{Index: NoServer, first: NoServer}
	}
	i := NoServer
	if p.opt.Tracking && ce.server >= 0 && ce.server < len(p.slots) && p.eligible(ce.server) {
		i = ce.server
	} else {
		i = p.algorithm(client, ce, now)
	}
	if i < 0 {
		return p.last()
	}
	if p.available(i, ce.server, client.Addr(), now) {
		return p.reserve(i, i)
	}
	// A tracked or hashed slot that cannot take the client: fail over from
	// it as from a failed connect.
	return p.failover(Choice{Index: i, first: i}, ce.server, client.Addr(), now)
}

// algorithm returns the first choice by Options.Algorithm, or NoServer if
// no server qualifies. Hash and Maglev may return an unavailable slot.
func (p *Pool) algorithm(client netip.AddrPort, ce *clientEntry, now time.Time) int {
	n := len(p.slots)
	if n == 0 {
		return NoServer
	}
	a := client.Addr()
	switch p.opt.Algorithm {
	case Prio:
		best := NoServer
		for i := range p.slots {
			if p.available(i, ce.server, a, now) && (best < 0 || p.slots[i].Prio < p.slots[best].Prio) {
				best = i
			}
		}
		return best
	case Weight:
		best, bestLoad := NoServer, 0
		for i := range p.slots {
			s := &p.slots[i]
			if !p.available(i, ce.server, a, now) {
				continue
			}
			load := s.conns * 256 / s.weight
			if best < 0 || load < bestLoad {
				best, bestLoad = i, load
			}
		}
		return best
	case Hash:
		return int(hashPen(client, p.opt.HashPort) % uint64(n))
	case Maglev:
		if i := p.maglev.Lookup(hashMaglev(client, p.opt.HashPort)); i >= 0 {
			return i
		}
		return NoServer
	default:
		for k := 1; k <= n; k++ {
			i := (p.rr + k) % n
			if p.available(i, ce.server, a, now) {
				p.rr = i
				return i
			}
		}
		return NoServer
	}
}

// eligible reports whether slot i is a server the algorithms may choose at
// all: used, not held down and not drained.
func (p *Pool) eligible(i int) bool {
	s := &p.slots[i]
	return s.used && !s.down && !p.drained(s)
}

// drained reports whether s's own settings take it out of the choice:
// Drain, or weight 0 under Weight or Maglev.
func (p *Pool) drained(s *slot) bool {
	return s.Drain || (p.opt.Algorithm == Weight || p.opt.Algorithm == Maglev) && s.weight <= 0
}

// available is Pen's try_server: slot i is eligible, not blacklisted, below
// Max (a client whose last server was i may go up to Hard), and its ACL
// allows the client.
func (p *Pool) available(i, last int, client netip.Addr, now time.Time) bool {
	if !p.eligible(i) {
		return false
	}
	s := &p.slots[i]
	if now.Before(s.until) {
		return false
	}
	if s.Max > 0 && s.conns >= s.Max && (last != i || s.conns >= s.Hard) {
		return false
	}
	return s.Allow == nil || s.Allow(client)
}

func (p *Pool) reserve(i, first int) Choice {
	p.slots[i].conns++
	return Choice{Index: i, Addr: p.slots[i].Addr, first: first, id: p.slots[i].id}
}

// slotOf returns the index of the slot c was reserved on, wherever an
// Update moved it, or NoServer when it is gone (or c is not a slot).
func (p *Pool) slotOf(c Choice) int {
	if c.Index < 0 {
		return NoServer
	}
	if c.Index < len(p.slots) && p.slots[c.Index].id == c.id {
		return c.Index
	}
	for i := range p.slots {
		if p.slots[i].id == c.id {
			return i
		}
	}
	return NoServer
}

// last returns the emergency server if there is one, else NoServer.
func (p *Pool) last() Choice {
	if usable(p.opt.Emergency) {
		return Choice{Index: Emergency, Addr: p.opt.Emergency, first: Emergency}
	}
	return Choice{Index: NoServer, first: NoServer}
}

// failover is Pen's failover_server: nothing after stubborn, abuse or
// emergency; otherwise the slots after c.Index, wrapping around, up to but
// not including c.first; then the emergency server.
func (p *Pool) failover(c Choice, last int, client netip.Addr, now time.Time) Choice {
	if p.opt.Stubborn || c.Index < 0 {
		return Choice{Index: NoServer, first: NoServer}
	}
	// The bound matters only if c.first is gone (see Failed); otherwise
	// the walk reaches c.first first.
	n := len(p.slots)
	for k, i := 1, c.Index; k <= n; k++ {
		i = (i + 1) % n
		if i == c.first {
			break
		}
		if p.available(i, last, client, now) {
			return p.reserve(i, c.first)
		}
	}
	return p.last()
}

// Failed reports that connecting to c failed or timed out. It releases c,
// blacklists its slot for Options.Blacklist, and returns the next choice
// (reserved), which is NoServer when the client must be closed.
func (p *Pool) Failed(c Choice, client netip.AddrPort, now time.Time) Choice {
	client = normalise(client)
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := p.slotOf(c); i >= 0 {
		s := &p.slots[i]
		if s.conns > 0 {
			s.conns--
		}
		s.failures++
		if p.opt.Blacklist > 0 {
			s.until = now.Add(p.opt.Blacklist)
		}
		if i != c.Index {
			c.first = NoServer // moved by an Update: try every slot
		}
		c.Index = i
	} else if c.Index >= 0 {
		// The slot went away in an Update: try every slot.
		c.Index, c.first = len(p.slots)-1, NoServer
	}
	last := NoServer
	if ce := p.clients.get(client.Addr(), now, p.opt.TrackingExpiry); ce != nil {
		last = ce.server
	}
	return p.failover(c, last, client.Addr(), now)
}

// Connected reports that the connection to c succeeded: the client is
// counted and, unless c is the emergency or abuse server, remembered as
// using c's slot.
func (p *Pool) Connected(c Choice, client netip.AddrPort, now time.Time) {
	client = normalise(client)
	p.mu.Lock()
	defer p.mu.Unlock()
	ce := p.clients.touch(client.Addr(), now, p.opt.TrackingExpiry)
	ce.connects++
	if i := p.slotOf(c); i >= 0 {
		ce.server = i
		p.slots[i].connects++
	}
}

// Done reports that the connection to c is over: it releases c and adds the
// bytes sent to and received from the server (pass 0, 0 if they were
// already counted with AddBytes).
func (p *Pool) Done(c Choice, sent, recv uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := p.slotOf(c)
	if i < 0 {
		return
	}
	s := &p.slots[i]
	if s.conns > 0 {
		s.conns--
	}
	s.sent += sent
	s.recv += recv
}

// AddBytes adds bytes sent to and received from c's server, for live
// counters. Choices of servers no longer in the pool are ignored.
func (p *Pool) AddBytes(c Choice, sent, recv uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := p.slotOf(c); i >= 0 {
		p.slots[i].sent += sent
		p.slots[i].recv += recv
	}
}

// SetBlacklist blacklists slot index for d from now (penctl "server N
// blacklist T"); d <= 0 clears the blacklist. Out-of-range indexes are
// ignored.
func (p *Pool) SetBlacklist(index int, d time.Duration, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if index < 0 || index >= len(p.slots) {
		return
	}
	if d <= 0 {
		p.slots[index].until = time.Time{}
		return
	}
	p.slots[index].until = now.Add(d)
}

// SetDown holds the servers at addr out of the choice (down) or lets them
// back (an active health check's verdict): like Drain, their connections
// stay. The state stays with the address through Update. lbd calls it for
// every backend whenever a verdict changes, so a call that changes nothing
// costs no Maglev rebuild. Whether every server being down should rather
// leave them all usable (fail open) is the caller's decision.
func (p *Pool) SetDown(addr netip.AddrPort, down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := false
	for i := range p.slots {
		if s := &p.slots[i]; s.Addr == addr && s.down != down {
			s.down, changed = down, true
		}
	}
	if changed {
		p.rebuildMaglev()
	}
}

// Stats returns each slot's counters, in slot order.
func (p *Pool) Stats(now time.Time) []ServerStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := make([]ServerStats, len(p.slots))
	for i, s := range p.slots {
		st[i] = ServerStats{Conns: s.conns, Sent: s.sent, Recv: s.recv, Connects: s.connects, Failures: s.failures,
			Down: s.down, Drained: s.used && p.drained(&s)}
		if now.Before(s.until) {
			st[i].BlacklistedUntil = s.until
		}
	}
	return st
}

// Recent returns the remembered clients seen within the given duration
// before now, most recent first (penctl "recent").
func (p *Pool) Recent(now time.Time, within time.Duration) []ClientStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []ClientStats
	for e := p.clients.head; e >= 0; e = p.clients.e[e].next {
		ce := &p.clients.e[e]
		if now.Sub(ce.last) > within {
			break // the rest were seen even earlier
		}
		if ce.expired(now, p.opt.TrackingExpiry) {
			continue
		}
		out = append(out, ClientStats{
			Addr: ce.addr, Last: ce.last, Connects: ce.connects,
			Sent: ce.sent, Recv: ce.recv, Server: ce.server,
		})
	}
	return out
}

// ClientBytes adds bytes sent to and received from a remembered client.
// Unknown clients are ignored.
func (p *Pool) ClientBytes(client netip.Addr, sent, recv uint64) {
	client = client.Unmap()
	p.mu.Lock()
	defer p.mu.Unlock()
	if i, ok := p.clients.idx[client]; ok {
		p.clients.e[i].sent += sent
		p.clients.e[i].recv += recv
	}
}

// hashPen is the Hash algorithm's key, taken modulo the number of slots.
// IPv4: the address as a big-endian uint32, XOR the port with HashPort (Pen
// reads the network-order bytes as a native integer, so its result depends
// on the CPU's byte order; ours does not). IPv6: FNV-1a-64 of the 16
// address bytes, XOR the port with HashPort (Pen uses only the last byte).
func hashPen(c netip.AddrPort, withPort bool) uint64 {
	a := c.Addr()
	var h uint64
	if a.Is4() {
		b := a.As4()
		h = uint64(binary.BigEndian.Uint32(b[:]))
	} else {
		b := a.As16()
		h = fnv1a64(b[:])
	}
	if withPort {
		h ^= uint64(c.Port())
	}
	return h
}

// hashMaglev is the Maglev lookup key: FNV-1a-64 of the address bytes (4
// for IPv4, 16 for IPv6), followed by the port in big-endian order with
// HashPort.
func hashMaglev(c netip.AddrPort, withPort bool) uint64 {
	var buf [18]byte
	a := c.Addr()
	var n int
	if a.Is4() {
		b := a.As4()
		n = copy(buf[:], b[:])
	} else {
		b := a.As16()
		n = copy(buf[:], b[:])
	}
	if withPort {
		binary.BigEndian.PutUint16(buf[n:], c.Port())
		n += 2
	}
	return fnv1a64(buf[:n])
}
