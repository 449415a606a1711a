package arpd

import (
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/mdlayher/arp"

	"github.com/nib-lb/nib/internal/lograte"
)

// Options are arpd's timers and bounds. A zero field takes its default.
type Options struct {
	// ProbeWindow is how long a probe for a VIP or tarpit address must go
	// unanswered before we claim the address. Default 1 s.
	ProbeWindow time.Duration
	// Probes is the number of probes sent, evenly spread over the window,
	// so that one lost frame does not make us take an address that is in
	// use (RFC 5227 sends 3). Default 3.
	Probes int
	// ReplyWindow is how long after one of our requests a backend's reply
	// is accepted. Default 3 s.
	ReplyWindow time.Duration
	// Refresh is how often a resolved backend is asked again. Default 30 s.
	Refresh time.Duration
	// RetryMin and RetryMax bound the backoff between unanswered requests
	// (RetryMin, 2×RetryMin, ... RetryMax). Defaults 1 s and 30 s.
	RetryMin, RetryMax time.Duration
	// DownAfter is the number of requests in a row a backend may leave
	// unanswered before Down reports it. Default 3.
	DownAfter int
	// AnnounceCount gratuitous ARPs, AnnounceInterval apart, are sent when
	// a VIP is claimed. Defaults 3 and 1 s.
	AnnounceCount    int
	AnnounceInterval time.Duration
	// DefendInterval is the least time between two gratuitous ARPs sent to
	// defend a VIP that another host announces (RFC 5227). Default 10 s.
	DefendInterval time.Duration
	// InUseTTL is how long an address stays "in use by another host" after
	// its last ARP packet; InUseMax bounds that table. Defaults 5 min, 4096.
	InUseTTL time.Duration
	InUseMax int
	// TarpitMax bounds the claimed tarpit addresses (LRU); TarpitProbes
	// bounds the tarpit probes in flight. Defaults 4096 and 1024.
	TarpitMax    int
	TarpitProbes int
	// Tick is the period of the timer that drives probes, refreshes and
	// announcements. Default 100 ms.
	Tick time.Duration
}

func (o Options) withDefaults() Options {
	d := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	n := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	d(&o.ProbeWindow, time.Second)
	n(&o.Probes, 3)
	d(&o.ReplyWindow, 3*time.Second)
	d(&o.Refresh, 30*time.Second)
	d(&o.RetryMin, time.Second)
	d(&o.RetryMax, 30*time.Second)
	n(&o.DownAfter, 3)
	n(&o.AnnounceCount, 3)
	d(&o.AnnounceInterval, time.Second)
	d(&o.DefendInterval, 10*time.Second)
	d(&o.InUseTTL, 5*time.Minute)
	n(&o.InUseMax, 4096)
	n(&o.TarpitMax, 4096)
	n(&o.TarpitProbes, 1024)
	d(&o.Tick, 100*time.Millisecond)
	if o.RetryMax < o.RetryMin {
		o.RetryMax = o.RetryMin
	}
	return o
}

// Counters is a snapshot of arpd's counters.
type Counters struct {
	RequestsSeen       uint64 // ARP requests received (well-formed, not ours)
	RepliesVIP         uint64 // replies sent for VIPs
	RepliesTarpit      uint64 // replies sent for tarpit addresses
	BackendLearned     uint64 // backend replies to our requests accepted
	BackendConflicts   uint64 // replies to our request for a backend from a MAC other than the one kept
	UnsolicitedIgnored uint64 // replies/gratuitous ARP for a backend that we did not ask for
	Conflicts          uint64 // another host announced an address we had claimed
	InUseRefused       uint64 // claims not made because another host uses the address
	ProbesSent         uint64 // probes for VIPs and tarpit addresses
	RequestsSent       uint64 // requests for backends (first, refresh and retry)
	Announcements      uint64 // gratuitous ARPs sent for VIPs
	TarpitBusy         uint64 // tarpit probes not started: too many in flight
	Malformed          uint64 // short, truncated or non Ethernet/IPv4 ARP frames
	SendErrors         uint64
	ReadErrors         uint64
}

type counters struct {
	requestsSeen, repliesVIP, repliesTarpit, backendLearned, backendConflicts,
	unsolicited, conflicts, inUseRefused, probesSent, requestsSent, announcements,
	tarpitBusy, malformed, sendErrors, readErrors atomic.Uint64
}

func (c *counters) snapshot() Counters {
	return Counters{
		RequestsSeen:       c.requestsSeen.Load(),
		RepliesVIP:         c.repliesVIP.Load(),
		RepliesTarpit:      c.repliesTarpit.Load(),
		BackendLearned:     c.backendLearned.Load(),
		BackendConflicts:   c.backendConflicts.Load(),
		UnsolicitedIgnored: c.unsolicited.Load(),
		Conflicts:          c.conflicts.Load(),
		InUseRefused:       c.inUseRefused.Load(),
		ProbesSent:         c.probesSent.Load(),
		RequestsSent:       c.requestsSent.Load(),
		Announcements:      c.announcements.Load(),
		TarpitBusy:         c.tarpitBusy.Load(),
		Malformed:          c.malformed.Load(),
		SendErrors:         c.sendErrors.Load(),
		ReadErrors:         c.readErrors.Load(),
	}
}

// VIPState is where a VIP is in its claim.
type VIPState uint8

// VIP states.
const (
	VIPPending VIPState = iota // configured, probe not sent yet
	VIPProbing                 // probe sent, window open
	VIPClaimed                 // answered with our MAC
	VIPInUse                   // another host answers for it: not claimed
)

func (s VIPState) String() string {
	switch s {
	case VIPPending:
		return "pending"
	case VIPProbing:
		return "probing"
	case VIPClaimed:
		return "claimed"
	case VIPInUse:
		return "in-use"
	}
	return "?"
}

// VIPStatus describes one VIP for status output.
type VIPStatus struct {
	Addr  netip.Addr
	State VIPState
	// OtherMAC is the MAC of the host that uses the address (VIPInUse) or
	// that last announced it after we claimed it (a conflict); zero if none.
	OtherMAC   [6]byte
	ConflictAt time.Time // last conflict, zero if none
}

// probeState is a claim in progress: more probes to send, and the end of
// the window.
type probeState struct {
	until, next time.Time
	left        int
}

type vipEntry struct {
	state        VIPState
	probe        probeState // VIPProbing
	announceLeft int
	nextAnnounce time.Time
	otherMAC     [6]byte
	conflictAt   time.Time
	lastLog      time.Time
	lastDefend   time.Time
}

type backendEntry struct {
	mac    [6]byte
	has    bool
	down   bool
	missed int // requests in a row left unanswered
	// waitUntil is the end of the reply window of our last request (zero:
	// none open). The window stays open after the first answer, so that a
	// second MAC answering the same request is seen as a conflict.
	waitUntil time.Time
	answered  bool    // mac answered in this window
	cand      [6]byte // another MAC that answered in this window first (hasCand)
	hasCand   bool
	lastReq   time.Time
	nextReq   time.Time
}

// waiting reports whether the reply window of our last request is open.
func (b *backendEntry) waiting(now time.Time) bool {
	return !b.waitUntil.IsZero() && now.Before(b.waitUntil)
}

type inUseEntry struct {
	mac  [6]byte
	seen time.Time
}

// verdict says what handle decided, for tests and tracing.
type verdict uint16

const (
	vReply       verdict = 1 << iota // answered with our MAC
	vProbe                           // started a tarpit probe
	vLearned                         // learned (or confirmed) a backend MAC
	vUnsolicited                     // ignored an unsolicited reply / gratuitous ARP for a backend
	vConflict                        // another host announced an address we claimed
	vInUse                           // marked an address we care about as in use by another MAC
	vMalformed
	vOwn             // our own frame
	vBackendConflict // another MAC answered our request for a backend whose MAC we keep
)

// core holds arpd's state and makes every decision; it owns no socket and
// reads no clock. Not safe for concurrent use (Daemon serialises it).
type core struct {
	opt  Options
	mac  [6]byte
	ip   netip.Addr
	logf func(string, ...any)
	ctr  *counters

	vipCfg     []netip.Addr // the VIPs as last set (setIP applies them again)
	vips       map[netip.Addr]*vipEntry
	backends   map[netip.Addr]*backendEntry
	tarpit     func(netip.Addr) bool
	tpProbing  map[netip.Addr]probeState
	tpClaimed  *lru[struct{}]
	inUse      *lru[inUseEntry]
	dirty      bool // backend snapshot must be republished
	logLimited time.Time
	// conflictLog limits the log lines about backends answered for by two
	// MACs (a spoofer can cause them at will). It reads the wall clock:
	// only which lines are logged depends on it, no decision.
	conflictLog *lograte.Limiter
}

func newCore(mac [6]byte, ip netip.Addr, opt Options, logf func(string, ...any), ctr *counters) *core {
	opt = opt.withDefaults()
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &core{
		opt:       opt,
		mac:       mac,
		ip:        ip,
		logf:      logf,
		ctr:       ctr,
		vips:      make(map[netip.Addr]*vipEntry),
		backends:  make(map[netip.Addr]*backendEntry),
		tpProbing: make(map[netip.Addr]probeState),
		tpClaimed: newLRU[struct{}](opt.TarpitMax),
		inUse:     newLRU[inUseEntry](opt.InUseMax),

		conflictLog: lograte.New(10 * time.Second),
	}
}

// setVIPs replaces the VIP set. New VIPs start unclaimed (probed at the
// next tick); removed ones are no longer answered.
func (c *core) setVIPs(addrs []netip.Addr) {
	c.vipCfg = slices.Clone(addrs)
	want := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case !a.Is4() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			c.logf("arpd: VIP %s ignored: not a unicast IPv4 address", a)
			continue
		case a == c.ip:
			c.logf("arpd: VIP %s ignored: it is the LB's own address on this interface (the kernel answers ARP for it; a DSR VIP must not be a local address)", a)
			continue
		}
		want[a] = true
	}
	for a := range c.vips {
		if !want[a] {
			delete(c.vips, a)
			c.logf("arpd: VIP %s removed: no longer answered", a)
		}
	}
	for a := range want {
		if _, ok := c.vips[a]; !ok {
			c.vips[a] = &vipEntry{state: VIPPending}
			c.tpClaimed.del(a)
			delete(c.tpProbing, a)
		}
	}
}

// setIP makes ip the LB's own address: the sender address of our backend
// requests, and the address we leave to the kernel. It follows the
// interface when its address changes (a new DHCP lease): requests still
// open were sent from the old address, so their replies go there; every
// backend is asked again at the next tick, without counting the open
// request as missed. A VIP that is the new address is dropped (and one
// that was the old address taken back), as setVIPs does.
func (c *core) setIP(ip netip.Addr) {
	if ip == c.ip {
		return
	}
	old := c.ip
	c.ip = ip
	c.logf("arpd: own address %s -> %s: backend requests are sent from %s", old, ip, ip)
	c.setVIPs(c.vipCfg)
	c.tpClaimed.del(ip)
	delete(c.tpProbing, ip)
	c.askAgain()
}

// setMAC makes mac the LB's own MAC (the interface's was changed): claimed
// VIPs are announced again at it, so that neighbours move them over, and
// backends are asked again (their replies to open requests go to the old
// MAC).
func (c *core) setMAC(mac [6]byte) {
	if mac == c.mac {
		return
	}
	c.logf("arpd: own MAC %s -> %s: announcing the VIPs at it", macString(c.mac), macString(mac))
	c.mac = mac
	c.announceAgain()
	c.askAgain()
}

// linkUp is called when the link comes back up: the claimed VIPs are
// announced again (neighbours and switches may have forgotten them, or
// learned another host's announcement meanwhile) and the backends are
// asked again at once instead of after a backoff.
func (c *core) linkUp() {
	c.announceAgain()
	c.askAgain()
}

// announceAgain starts a new round of AnnounceCount gratuitous ARPs for
// every claimed VIP, the first at the next tick.
func (c *core) announceAgain() {
	for _, e := range c.vips {
		if e.state == VIPClaimed {
			e.announceLeft, e.nextAnnounce = c.opt.AnnounceCount, time.Time{}
		}
	}
}

// askAgain closes the backends' open reply windows without counting a
// miss and makes every backend due for a request at the next tick.
func (c *core) askAgain() {
	for _, b := range c.backends {
		b.waitUntil, b.answered, b.hasCand = time.Time{}, false, false
		b.nextReq = time.Time{}
	}
}

// setBackends replaces the backend set. New backends are requested at the
// next tick; removed ones are forgotten.
func (c *core) setBackends(addrs []netip.Addr) {
	want := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() && !a.IsUnspecified() {
			want[a] = true
		}
	}
	for a := range c.backends {
		if !want[a] {
			delete(c.backends, a)
			c.dirty = true
		}
	}
	for a := range want {
		if _, ok := c.backends[a]; !ok {
			c.backends[a] = &backendEntry{}
			c.tpClaimed.del(a)
			delete(c.tpProbing, a)
			c.dirty = true
		}
	}
}

// setTarpit replaces the tarpit matcher (nil: no tarpit). Claims are
// kept only for addresses the new matcher still matches.
func (c *core) setTarpit(match func(netip.Addr) bool) {
	c.tarpit = match
	if match == nil {
		c.tpClaimed.clear()
		clear(c.tpProbing)
		return
	}
	var drop []netip.Addr
	for a := range c.tpClaimed.m {
		if !match(a) {
			drop = append(drop, a)
		}
	}
	for _, a := range drop {
		c.tpClaimed.del(a)
	}
	for a := range c.tpProbing {
		if !match(a) {
			delete(c.tpProbing, a)
		}
	}
}

func (c *core) isTarpit(a netip.Addr) bool {
	if c.tarpit == nil || a == c.ip {
		return false
	}
	if _, ok := c.vips[a]; ok {
		return false
	}
	if _, ok := c.backends[a]; ok {
		return false
	}
	return c.tarpit(a)
}

// inUseBy reports whether another host used a within InUseTTL.
func (c *core) inUseBy(now time.Time, a netip.Addr) ([6]byte, bool) {
	e, ok := c.inUse.get(a)
	if !ok || now.Sub(e.seen) >= c.opt.InUseTTL {
		return [6]byte{}, false
	}
	return e.mac, true
}

// handle decides what to do with one received frame: it appends the frames
// to send to out and returns them with its verdict.
func (c *core) handle(now time.Time, b []byte, out []frame) ([]frame, verdict) {
	p, ok := ParseFrame(b)
	if !ok {
		c.ctr.malformed.Add(1)
		return out, vMalformed
	}
	if p.SHA == c.mac || p.EthSrc == c.mac {
		return out, vOwn // ours, or the kernel's on our interface
	}
	var v verdict
	switch {
	case p.SPA.IsUnspecified():
		// A probe (RFC 5227) for tpa: the sender wants that address.
		if p.Op == opRequest && p.TPA != c.ip {
			v |= c.noteSender(now, p.TPA, p.SHA)
		}
	case p.SPA != c.ip:
		v |= c.noteSender(now, p.SPA, p.SHA)
		v |= c.fromBackend(now, &p)
	}
	if p.Op == opRequest {
		c.ctr.requestsSeen.Add(1)
		var rv verdict
		out, rv = c.request(now, &p, out)
		v |= rv
	}
	return out, v
}

// noteSender records that mac uses address a: for addresses we care about
// (VIPs, tarpit candidates) it marks them in use, ends tarpit claims and
// reports VIP conflicts.
func (c *core) noteSender(now time.Time, a netip.Addr, mac [6]byte) verdict {
	var v verdict
	if e, ok := c.vips[a]; ok {
		switch e.state {
		case VIPClaimed:
			c.ctr.conflicts.Add(1)
			e.otherMAC, e.conflictAt = mac, now
			v |= vConflict
			if now.Sub(e.lastLog) >= c.opt.DefendInterval {
				e.lastLog = now
				c.logf("arpd: CONFLICT: VIP %s is also announced by %s (a backend without arp_ignore=1 and arp_announce=2, or a duplicate address); still answering for it", a, macString(mac))
			}
			if now.Sub(e.lastDefend) >= c.opt.DefendInterval {
				e.lastDefend = now
				e.announceLeft = max(e.announceLeft, 1)
				e.nextAnnounce = now
			}
		case VIPPending, VIPProbing:
			e.state, e.otherMAC = VIPInUse, mac
			c.refuseVIP(now, a, e)
		case VIPInUse:
			e.otherMAC = mac
		}
	} else if c.tpClaimed.del(a) {
		c.ctr.conflicts.Add(1)
		v |= vConflict
		c.logLimit(now, "arpd: tarpit address %s is used by %s: no longer answered", a, macString(mac))
	} else if _, ok := c.tpProbing[a]; ok {
		delete(c.tpProbing, a)
		c.ctr.inUseRefused.Add(1)
	} else if !c.isTarpit(a) {
		return v
	}
	c.inUse.put(a, inUseEntry{mac: mac, seen: now})
	return v | vInUse
}

func (c *core) refuseVIP(now time.Time, a netip.Addr, e *vipEntry) {
	c.ctr.inUseRefused.Add(1)
	if now.Sub(e.lastLog) >= c.opt.DefendInterval {
		e.lastLog = now
		c.logf("arpd: VIP %s NOT CLAIMED: %s answers ARP for it (usually a backend without arp_ignore=1 and arp_announce=2, or a duplicate address); retrying when it has been silent for %v", a, macString(e.otherMAC), c.opt.InUseTTL)
	}
}

// logLimit logs at most once a second (for events an attacker can cause).
func (c *core) logLimit(now time.Time, format string, args ...any) {
	if now.Sub(c.logLimited) >= time.Second {
		c.logLimited = now
		c.logf(format, args...)
	}
}

// fromBackend learns a backend's MAC from a reply to our request, and
// ignores everything else that claims an address for a backend. p's sender
// address is the backend's: the reply comes from the address we asked
// about (a reply from any other address is not an answer for this one).
func (c *core) fromBackend(now time.Time, p *Packet) verdict {
	b, ok := c.backends[p.SPA]
	if !ok {
		return 0
	}
	if p.Op == opReply && p.TPA == c.ip && p.THA == c.mac && b.waiting(now) {
		return c.answered(now, p.SPA, b, p.SHA)
	}
	if b.has && b.mac == p.SHA {
		return 0 // agrees with what we know
	}
	var v verdict
	if p.Op == opReply || p.SPA == p.TPA {
		c.ctr.unsolicited.Add(1)
		v = vUnsolicited
	}
	// Someone shows the backend at another MAC (a replaced backend, or a
	// spoofer): ask ourselves, soon, but no sooner than RetryMin after our
	// last request.
	if !b.waiting(now) {
		at := now
		if !b.lastReq.IsZero() && b.lastReq.Add(c.opt.RetryMin).After(at) {
			at = b.lastReq.Add(c.opt.RetryMin)
		}
		if at.Before(b.nextReq) {
			b.nextReq = at
		}
	}
	return v
}

// answered handles a reply from mac to our request for backend a, inside
// the reply window. The answer we keep is consistent: the first MAC that
// answers an unresolved backend is taken at once; once a MAC is known, a
// reply from another MAC does not replace it while the known one keeps
// answering (two hosts answering for one address, a duplicate or a
// spoofer, would otherwise flip the backend between them on every
// request). It is counted and logged (rate-limited) as a conflict, and
// taken only when the window closes without an answer from the known MAC
// (the backend was replaced): see closeWindow.
func (c *core) answered(now time.Time, a netip.Addr, b *backendEntry, mac [6]byte) verdict {
	if !b.has || mac == b.mac {
		c.learn(now, a, b, mac)
		return vLearned
	}
	c.ctr.backendConflicts.Add(1)
	c.conflictLog.Logf(c.logf, "arpd: CONFLICT: backend %s: %s answers our ARP request, but the backend is at %s (a duplicate address, a spoofer, or a replaced backend); keeping %s while it answers",
		a, macString(mac), macString(b.mac), macString(b.mac))
	if !b.answered && !b.hasCand {
		b.cand, b.hasCand = mac, true
	}
	return vBackendConflict
}

// learn takes mac as backend a's answer to our current request.
func (c *core) learn(now time.Time, a netip.Addr, b *backendEntry, mac [6]byte) {
	if b.has && b.mac != mac {
		c.logf("arpd: backend %s is now at %s (was %s, which no longer answers)", a, macString(mac), macString(b.mac))
	}
	if b.down {
		c.logf("arpd: backend %s answers ARP again", a)
	}
	if !b.has || b.mac != mac || b.down {
		c.dirty = true
	}
	b.mac, b.has, b.down, b.missed = mac, true, false, 0
	b.answered, b.hasCand = true, false
	b.nextReq = now.Add(c.opt.Refresh)
	c.ctr.backendLearned.Add(1)
}

// closeWindow ends the reply window of our request for backend a: without
// an answer from the MAC we keep, another MAC that answered takes over;
// without any answer the request counts as missed.
func (c *core) closeWindow(now time.Time, a netip.Addr, b *backendEntry) {
	b.waitUntil = time.Time{}
	switch {
	case b.answered:
	case b.hasCand:
		c.learn(now, a, b, b.cand)
	default:
		b.missed++
		if b.missed >= c.opt.DownAfter && !b.down {
			b.down = true
			c.dirty = true
			c.logf("arpd: backend %s left %d ARP requests unanswered: down", a, b.missed)
		}
		b.nextReq = now.Add(c.backoff(b.missed))
	}
	b.answered, b.hasCand = false, false
}

// request answers a request for a claimed VIP or tarpit address, and
// starts a tarpit probe on the first request for a tarpit address.
func (c *core) request(now time.Time, p *Packet, out []frame) ([]frame, verdict) {
	a := p.TPA
	if a == c.ip || p.SPA == a || a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return out, 0 // the kernel's address; a gratuitous ARP; nonsense
	}
	if e, ok := c.vips[a]; ok {
		if e.state != VIPClaimed {
			return out, 0
		}
		c.ctr.repliesVIP.Add(1)
		return c.appendReply(out, p), vReply
	}
	if !c.isTarpit(a) {
		return out, 0
	}
	if c.tpClaimed.touch(a) {
		c.ctr.repliesTarpit.Add(1)
		return c.appendReply(out, p), vReply
	}
	if pr, ok := c.tpProbing[a]; ok {
		if now.Before(pr.until) || !c.claimTarpit(now, a) {
			return out, 0
		}
		c.ctr.repliesTarpit.Add(1)
		return c.appendReply(out, p), vReply
	}
	if _, used := c.inUseBy(now, a); used || p.SPA.IsUnspecified() {
		return out, 0
	}
	if len(c.tpProbing) >= c.opt.TarpitProbes {
		c.ctr.tarpitBusy.Add(1)
		return out, 0
	}
	c.tpProbing[a] = c.newProbe(now)
	c.ctr.probesSent.Add(1)
	return c.appendProbe(out, a), vProbe
}

// claimTarpit ends a's probe and claims a unless another host used it.
func (c *core) claimTarpit(now time.Time, a netip.Addr) bool {
	delete(c.tpProbing, a)
	if _, used := c.inUseBy(now, a); used {
		c.ctr.inUseRefused.Add(1)
		return false
	}
	c.tpClaimed.put(a, struct{}{})
	return true
}

// tick drives the timers: VIP probes, claims and announcements, tarpit
// claims, backend requests, refreshes and down detection.
func (c *core) tick(now time.Time, out []frame) []frame {
	for {
		a, e, ok := c.inUse.oldest()
		if !ok || now.Sub(e.seen) < c.opt.InUseTTL {
			break
		}
		c.inUse.del(a)
	}
	for a, e := range c.vips {
		if e.state == VIPInUse {
			if _, used := c.inUseBy(now, a); !used {
				e.state = VIPPending
			}
		}
		switch e.state {
		case VIPPending:
			if mac, used := c.inUseBy(now, a); used {
				e.state, e.otherMAC = VIPInUse, mac
				c.refuseVIP(now, a, e)
				continue
			}
			e.state, e.probe = VIPProbing, c.newProbe(now)
			c.ctr.probesSent.Add(1)
			out = c.appendProbe(out, a)
		case VIPProbing:
			if now.Before(e.probe.until) {
				out = c.probeAgain(now, a, &e.probe, out)
				continue
			}
			e.state, e.otherMAC = VIPClaimed, [6]byte{}
			e.announceLeft, e.nextAnnounce = c.opt.AnnounceCount, now
			c.logf("arpd: VIP %s claimed (no other host answered our probe); answering ARP for it with %s", a, macString(c.mac))
		}
		if e.state == VIPClaimed && e.announceLeft > 0 && !now.Before(e.nextAnnounce) {
			e.announceLeft--
			e.nextAnnounce = now.Add(c.opt.AnnounceInterval)
			c.ctr.announcements.Add(1)
			out = c.appendAnnounce(out, a)
		}
	}
	for a, pr := range c.tpProbing {
		if !now.Before(pr.until) {
			c.claimTarpit(now, a)
		} else if pr.left > 0 {
			out = c.probeAgain(now, a, &pr, out)
			c.tpProbing[a] = pr
		}
	}
	for a, b := range c.backends {
		if !b.waitUntil.IsZero() && !now.Before(b.waitUntil) {
			c.closeWindow(now, a, b)
		}
		if b.waitUntil.IsZero() && !now.Before(b.nextReq) {
			b.lastReq, b.waitUntil = now, now.Add(c.opt.ReplyWindow)
			b.nextReq = b.waitUntil // replaced when answered or expired
			c.ctr.requestsSent.Add(1)
			out = c.appendRequest(out, a)
		}
	}
	return out
}

// newProbe starts a claim whose first probe is sent now.
func (c *core) newProbe(now time.Time) probeState {
	return probeState{
		until: now.Add(c.opt.ProbeWindow),
		next:  now.Add(c.opt.ProbeWindow / time.Duration(c.opt.Probes)),
		left:  c.opt.Probes - 1,
	}
}

// probeAgain sends the claim's next probe if it is due.
func (c *core) probeAgain(now time.Time, a netip.Addr, pr *probeState, out []frame) []frame {
	if pr.left <= 0 || now.Before(pr.next) {
		return out
	}
	pr.left--
	pr.next = pr.next.Add(c.opt.ProbeWindow / time.Duration(c.opt.Probes))
	c.ctr.probesSent.Add(1)
	return c.appendProbe(out, a)
}

func (c *core) backoff(missed int) time.Duration {
	d := c.opt.RetryMin
	for i := 1; i < missed && d < c.opt.RetryMax; i++ {
		d *= 2
	}
	return min(d, c.opt.RetryMax)
}

// appendARP appends an ARP frame to out. Building fails only for an
// address that is not IPv4, which arpd never keeps (VIPs, backends and our
// own address are checked when set, parsed addresses are 4 bytes): such a
// frame is counted as a send error and not sent.
func (c *core) appendARP(out []frame, dst [6]byte, op arp.Operation, spa netip.Addr, tha [6]byte, tpa netip.Addr) []frame {
	f, err := buildARP(dst, c.mac, op, c.mac, spa, tha, tpa)
	if err != nil {
		if c.ctr.sendErrors.Add(1)%1000 == 1 {
			c.logf("%v", err)
		}
		return out
	}
	return append(out, f)
}

// appendReply answers request p for p.tpa with our MAC.
func (c *core) appendReply(out []frame, p *Packet) []frame {
	return c.appendARP(out, p.SHA, opReply, p.TPA, p.SHA, p.SPA)
}

// appendProbe asks who has a, with sender address 0.0.0.0 (RFC 5227), so
// no host's cache learns anything from it.
func (c *core) appendProbe(out []frame, a netip.Addr) []frame {
	return c.appendARP(out, broadcast, opRequest, netip.IPv4Unspecified(), [6]byte{}, a)
}

// appendRequest asks who has backend a, from our own address.
func (c *core) appendRequest(out []frame, a netip.Addr) []frame {
	return c.appendARP(out, broadcast, opRequest, c.ip, [6]byte{}, a)
}

// appendAnnounce is a gratuitous ARP (an RFC 5227 announcement) for a.
func (c *core) appendAnnounce(out []frame, a netip.Addr) []frame {
	return c.appendARP(out, broadcast, opRequest, a, [6]byte{}, a)
}

// neighbor is one backend in the published snapshot.
type neighbor struct {
	mac  [6]byte
	has  bool
	down bool
}

func (c *core) snapshot() map[netip.Addr]neighbor {
	m := make(map[netip.Addr]neighbor, len(c.backends))
	for a, b := range c.backends {
		m[a] = neighbor{mac: b.mac, has: b.has, down: b.down}
	}
	return m
}

func (c *core) vipStatus() []VIPStatus {
	s := make([]VIPStatus, 0, len(c.vips))
	for a, e := range c.vips {
		s = append(s, VIPStatus{Addr: a, State: e.state, OtherMAC: e.otherMAC, ConflictAt: e.conflictAt})
	}
	return s
}
