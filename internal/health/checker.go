package health

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	DefaultInterval = 2 * time.Second
	DefaultRise     = 2
	DefaultFall     = 3
	DefaultLimit    = 32 // checks in flight, process-wide, with Options.Limit nil
)

// A Limiter bounds the checks in flight of the Checkers sharing it.
type Limiter struct{ sem chan struct{} }

// NewLimiter returns a Limiter of n checks in flight (at least 1).
func NewLimiter(n int) *Limiter {
	return &Limiter{sem: make(chan struct{}, max(n, 1))}
}

// InFlight is the number of checks running under l.
func (l *Limiter) InFlight() int { return len(l.sem) }

var defaultLimiter = NewLimiter(DefaultLimit)

// Options configure a Checker.
type Options struct {
	Interval time.Duration // between two checks of a backend; 0 is DefaultInterval
	Timeout  time.Duration // of one check; 0 or more than Interval is Interval
	Rise     int           // consecutive successes to come up; 0 is DefaultRise
	Fall     int           // consecutive failures to go down; 0 is DefaultFall
	// StartDown makes new backends start down (they come up after Rise
	// successes); by default they start up.
	StartDown bool
	// Limit bounds the checks in flight; share one between Checkers to
	// bound them together. nil is a process-wide Limiter of DefaultLimit.
	Limit *Limiter
	// OnChange, when set, is called on each transition of a backend, after
	// Up reports the new state, without the Checker's locks held: in order
	// for each key, concurrently for different keys. r is the check that
	// made the transition; its Reason is the failure's for a down
	// transition, the probe's note or "ok" for an up one. New and Update
	// call it for nothing (a new backend's first state is no transition).
	// It must not call Close; while it runs, the backend is not checked.
	OnChange func(key string, up bool, r Result)
}

func (o Options) normalized() Options {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Timeout <= 0 || o.Timeout > o.Interval {
		o.Timeout = o.Interval
	}
	if o.Rise <= 0 {
		o.Rise = DefaultRise
	}
	if o.Fall <= 0 {
		o.Fall = DefaultFall
	}
	if o.Limit == nil {
		o.Limit = defaultLimiter
	}
	return o
}

// A Target is one backend to check. Key identifies it across Updates
// (e.g. its address).
type Target struct {
	Key   string
	Probe Probe
}

// Status is a backend's health and history.
type Status struct {
	Up          bool
	Since       time.Time // of the last transition, or when the backend was added
	Reason      string    // of the last transition; "" before any
	Run         int       // consecutive results against Up (see State)
	LastCheck   time.Time // when the last check ended; zero before any
	LastOK      bool
	LastLatency time.Duration
	LastFailure string // the last failed check's reason
	Checks      uint64
	Failures    uint64
	Transitions uint64
}

// A Checker checks a set of backends on a schedule, each every Interval,
// and keeps their health. Its methods are safe for concurrent use.
type Checker struct {
	mu      sync.Mutex
	opts    Options
	queue   schedule
	running bool // a scheduler goroutine runs
	closed  bool
	wake    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// targets is replaced, never written, by Update (under mu): Up reads
	// it without locks.
	targets atomic.Pointer[map[string]*target]
}

// target is one backend of a Checker.
type target struct {
	key    string
	up     atomic.Bool
	ctx    context.Context // cancelled when the target is dropped
	cancel context.CancelFunc

	// Guarded by Checker.mu.
	probe Probe
	next  time.Time // of the next check
	index int       // in the schedule
	busy  bool      // a check is queued or in flight
	gone  bool
	state State
	st    Status
}

// New returns a Checker of targets, checking them from now on: target i
// first at i×Interval/len(targets), then every Interval. With no targets
// nothing runs until an Update adds some.
func New(o Options, targets []Target) *Checker {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Checker{
		wake:   make(chan struct{}, 1),
		ctx:    ctx,
		cancel: cancel,
	}
	c.Update(o, targets)
	return c
}

// Update changes the options and the set of backends, as on a reload.
// Backends whose key stays keep their state, history and place in the
// schedule (their probe is replaced; a check in flight completes with the
// old one); new ones start up, or down with StartDown, their first checks
// spread over the next Interval; those gone are dropped, their check in
// flight cancelled and discarded. Of targets with the same Key, the first
// counts.
func (c *Checker) Update(o Options, targets []Target) {
	o = o.normalized()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	now := time.Now()
	old := c.opts
	c.opts = o
	cur := c.all()
	keep := make(map[string]*target, len(targets))
	var added []*target
	for _, tg := range targets {
		if _, dup := keep[tg.Key]; dup {
			continue
		}
		t := cur[tg.Key]
		if t == nil {
			t = &target{key: tg.Key}
			t.ctx, t.cancel = context.WithCancel(c.ctx)
			t.state.Up = !o.StartDown
			t.up.Store(t.state.Up)
			t.st.Since = now
			added = append(added, t)
		} else if o.Interval != old.Interval {
			// Keep the phase, within the new interval.
			if d := t.next.Sub(now); d > o.Interval {
				t.next = now.Add(d % o.Interval)
				heap.Fix(&c.queue, t.index)
			}
		}
		t.probe = tg.Probe
		keep[tg.Key] = t
	}
	for k, t := range cur {
		if keep[k] == nil {
			t.gone = true
			t.cancel()
			heap.Remove(&c.queue, t.index)
		}
	}
	for i, t := range added {
		t.next = now.Add(time.Duration(i) * (o.Interval / time.Duration(len(added))))
		heap.Push(&c.queue, t)
	}
	c.targets.Store(&keep)
	if len(keep) > 0 && !c.running {
		c.running = true
		c.wg.Add(1)
		go c.run()
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Up reports whether the backend key is up: cheap enough for the data
// path (a map lookup and an atomic load, no locks). A key the Checker does
// not check, or a nil Checker, is up.
func (c *Checker) Up(key string) bool {
	if c == nil {
		return true
	}
	t := c.all()[key]
	return t == nil || t.up.Load()
}

// all is the set of targets by key, to be read only.
func (c *Checker) all() map[string]*target {
	if m := c.targets.Load(); m != nil {
		return *m
	}
	return nil
}

// Status returns the backend key's health and history, and false for a
// key the Checker does not check.
func (c *Checker) Status(key string) (Status, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.all()[key]
	if t == nil {
		return Status{}, false
	}
	return t.status(), true
}

// Statuses returns the health and history of every backend, by key.
func (c *Checker) Statuses() map[string]Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := c.all()
	m := make(map[string]Status, len(all))
	for k, t := range all {
		m[k] = t.status()
	}
	return m
}

// status is t's Status; c.mu is held.
func (t *target) status() Status {
	s := t.st
	s.Up, s.Run = t.state.Up, t.state.Run
	return s
}

// Close stops the checks, cancelling those in flight, and waits for every
// goroutine of the Checker (OnChange calls included) to end. Up, Status
// and Statuses keep answering with the last states. Close is idempotent.
func (c *Checker) Close() {
	c.mu.Lock()
	c.closed = true
	c.cancel()
	c.mu.Unlock()
	c.wg.Wait()
}

// run is the scheduler: it starts the checks that are due, each in its own
// goroutine that waits for room in the Limiter, skipping a backend whose
// previous check has not ended.
func (c *Checker) run() {
	defer c.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			// Nothing to check: Update starts a scheduler again when it
			// adds targets.
			c.running = false
			c.mu.Unlock()
			return
		}
		now := time.Now()
		iv := c.opts.Interval
		for len(c.queue) > 0 && !c.queue[0].next.After(now) {
			t := c.queue[0]
			if !t.busy {
				t.busy = true
				c.wg.Add(1)
				go c.check(t, t.probe, c.opts.Limit, c.opts.Timeout)
			}
			t.next = t.next.Add(iv)
			if late := now.Sub(t.next); late >= 0 {
				t.next = t.next.Add((late/iv + 1) * iv)
			}
			heap.Fix(&c.queue, 0)
		}
		wait := c.queue[0].next.Sub(now)
		c.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-c.ctx.Done():
			return
		case <-timer.C:
		case <-c.wake:
		}
	}
}

// check runs one check of t and records its result.
func (c *Checker) check(t *target, p Probe, lim *Limiter, timeout time.Duration) {
	defer c.wg.Done()
	defer func() {
		c.mu.Lock()
		t.busy = false
		c.mu.Unlock()
	}()
	select {
	case lim.sem <- struct{}{}:
	case <-t.ctx.Done():
		return
	}
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	start := time.Now()
	r := Result{Reason: "no probe"}
	if p != nil {
		r = p(ctx)
	}
	elapsed := time.Since(start)
	// ctx's timer may not have fired yet on a busy machine: time decides.
	timedOut := elapsed >= timeout || errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()
	<-lim.sem
	if r.Latency <= 0 {
		r.Latency = elapsed
	}
	// A pass that came too late fails; a failure keeps the probe's own
	// reason (e.g. "dns ID mismatch"), unless it gives none.
	if timedOut && (r.OK || r.Reason == "") {
		r.OK, r.Reason = false, "timeout"
	}

	c.mu.Lock()
	if t.gone || c.closed {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	t.st.Checks++
	t.st.LastCheck, t.st.LastOK, t.st.LastLatency = now, r.OK, r.Latency
	if !r.OK {
		t.st.Failures++
		t.st.LastFailure = r.Reason
	}
	changed := t.state.Observe(r.OK, c.opts.Rise, c.opts.Fall)
	onChange := c.opts.OnChange
	if changed {
		if r.OK && r.Reason == "" {
			r.Reason = "ok"
		}
		t.up.Store(r.OK)
		t.st.Transitions++
		t.st.Since, t.st.Reason = now, r.Reason
	}
	c.mu.Unlock()
	if changed && onChange != nil {
		onChange(t.key, r.OK, r)
	}
}

// schedule is a min-heap of targets by next check.
type schedule []*target

func (s schedule) Len() int           { return len(s) }
func (s schedule) Less(i, j int) bool { return s[i].next.Before(s[j].next) }
func (s schedule) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index, s[j].index = i, j
}
func (s *schedule) Push(x any) {
	t := x.(*target)
	t.index = len(*s)
	*s = append(*s, t)
}
func (s *schedule) Pop() any {
	old := *s
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*s = old[:len(old)-1]
	t.index = -1
	return t
}
