package health

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// event is one OnChange call.
type event struct {
	key string
	up  bool
	r   Result
	at  time.Time
}

// recorder collects OnChange calls.
type recorder struct {
	mu     sync.Mutex
	events []event
	ch     chan event
}

func newRecorder() *recorder { return &recorder{ch: make(chan event, 100)} }

func (r *recorder) onChange(key string, up bool, res Result) {
	e := event{key, up, res, time.Now()}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	r.ch <- e
}

func (r *recorder) wait(t *testing.T, within time.Duration) event {
	t.Helper()
	select {
	case e := <-r.ch:
		return e
	case <-time.After(within):
		t.Fatalf("no transition within %v", within)
		return event{}
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// switchable is a probe failing with a reason while set.
type switchable struct {
	reason atomic.Pointer[string]
	checks atomic.Int64
	run    atomic.Int64 // consecutive results like the last: >0 successes, <0 failures
}

func (s *switchable) set(reason string) { s.reason.Store(&reason) }

func (s *switchable) probe(ctx context.Context) Result {
	s.checks.Add(1)
	if r := s.reason.Load(); r != nil && *r != "" {
		if s.run.Load() > 0 {
			s.run.Store(0)
		}
		s.run.Add(-1)
		return Result{Reason: *r}
	}
	if s.run.Load() < 0 {
		s.run.Store(0)
	}
	s.run.Add(1)
	return Result{OK: true}
}

// eventually waits up to a second for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCheckerFallRise(t *testing.T) {
	const iv = 20 * time.Millisecond
	rec := newRecorder()
	var p switchable
	// The results the probe gave in a row when a transition is reported:
	// no other check of the backend runs until OnChange returns.
	runs := make(chan int64, 10)
	onChange := func(key string, up bool, r Result) {
		runs <- p.run.Load()
		rec.onChange(key, up, r)
	}
	c := New(Options{Interval: iv, Timeout: 10 * time.Millisecond, Rise: 2, Fall: 3, OnChange: onChange},
		[]Target{{Key: "10.0.0.1:80", Probe: p.probe}})
	defer c.Close()
	eventually(t, "checks", func() bool { return p.checks.Load() >= 3 })
	if !c.Up("10.0.0.1:80") {
		t.Fatal("down while healthy")
	}

	start := time.Now()
	p.set("http 503")
	e := rec.wait(t, time.Second)
	d := e.at.Sub(start)
	if e.key != "10.0.0.1:80" || e.up || e.r.OK || e.r.Reason != "http 503" {
		t.Errorf("event %+v", e)
	}
	if n := <-runs; n != -3 {
		t.Errorf("down after %d results in a row, want 3 failures", n)
	}
	// Three checks of an interval each (and slack for a busy machine).
	if d > 4*iv+500*time.Millisecond {
		t.Errorf("down after %v, want about %v", d, 3*iv)
	}
	if c.Up("10.0.0.1:80") {
		t.Error("Up after the down transition")
	}
	st, ok := c.Status("10.0.0.1:80")
	if !ok || st.Up || st.Reason != "http 503" || st.Transitions != 1 || st.Failures < 3 || st.LastFailure != "http 503" ||
		st.LastOK || st.Since.Before(start) || st.Checks < st.Failures {
		t.Errorf("status %+v", st)
	}
	time.Sleep(3 * iv)
	if n := rec.count(); n != 1 {
		t.Errorf("%d transitions while failing, want 1", n)
	}

	start = time.Now()
	p.set("")
	e = rec.wait(t, time.Second)
	d = e.at.Sub(start)
	if !e.up || !e.r.OK || e.r.Reason != "ok" {
		t.Errorf("event %+v", e)
	}
	if n := <-runs; n != 2 {
		t.Errorf("up after %d results in a row, want 2 successes", n)
	}
	if d > 3*iv+500*time.Millisecond {
		t.Errorf("up after %v, want about %v", d, 2*iv)
	}
	st, _ = c.Status("10.0.0.1:80")
	if !st.Up || st.Reason != "ok" || st.Transitions != 2 || !st.LastOK || st.LastLatency <= 0 {
		t.Errorf("status %+v", st)
	}
	if _, ok := c.Status("nope"); ok {
		t.Error("status of an unknown key")
	}
}

func TestCheckerTimeout(t *testing.T) {
	rec := newRecorder()
	var cancelled atomic.Bool
	blocking := func(reason string) Probe {
		return func(ctx context.Context) Result {
			<-ctx.Done()
			cancelled.Store(true)
			return Result{Reason: reason}
		}
	}
	// A probe that passes, but too late, fails as well.
	late := func(ctx context.Context) Result {
		time.Sleep(30 * time.Millisecond)
		return Result{OK: true}
	}
	c := New(Options{Interval: 40 * time.Millisecond, Timeout: 15 * time.Millisecond, Fall: 1, OnChange: rec.onChange},
		[]Target{{Key: "a", Probe: blocking("")}, {Key: "b", Probe: late}, {Key: "c", Probe: blocking("dns ID mismatch")}})
	defer c.Close()
	got := map[string]event{}
	for range 3 {
		e := rec.wait(t, time.Second)
		got[e.key] = e
	}
	// A failure at the deadline keeps the probe's own reason.
	for k, want := range map[string]string{"a": "timeout", "b": "timeout", "c": "dns ID mismatch"} {
		if e := got[k]; e.up || e.r.Reason != want {
			t.Errorf("%s: %+v, want reason %q", k, e, want)
		}
	}
	if !cancelled.Load() {
		t.Error("the probe's context was not cancelled")
	}
	if st, _ := c.Status("a"); st.LastLatency < 15*time.Millisecond {
		t.Errorf("latency %v", st.LastLatency)
	}
}

func TestCheckerSpread(t *testing.T) {
	const (
		n  = 10
		iv = 200 * time.Millisecond
	)
	var (
		mu    sync.Mutex
		first = map[int]time.Time{}
	)
	targets := make([]Target, n)
	for i := range targets {
		targets[i] = Target{Key: fmt.Sprint(i), Probe: func(context.Context) Result {
			mu.Lock()
			if _, ok := first[i]; !ok {
				first[i] = time.Now()
			}
			mu.Unlock()
			return Result{OK: true}
		}}
	}
	start := time.Now()
	c := New(Options{Interval: iv, Timeout: 10 * time.Millisecond}, targets)
	defer c.Close()
	eventually(t, "first checks", func() bool { mu.Lock(); defer mu.Unlock(); return len(first) == n })
	mu.Lock()
	defer mu.Unlock()
	// Target i's first check at i×iv/n: never before its slot (so by
	// then at most i checks have started), and not long after it (late by
	// scheduling at most, generous for a busy machine).
	for i := range n {
		off := first[i].Sub(start)
		slot := time.Duration(i) * iv / n
		if off < slot-time.Millisecond || off > slot+150*time.Millisecond {
			t.Errorf("target %d first checked at %v, slot %v", i, off, slot)
		}
	}
}

// inflight counts probes in flight and their maximum.
type inflight struct {
	now, max atomic.Int64
}

func (f *inflight) enter() {
	n := f.now.Add(1)
	for {
		m := f.max.Load()
		if n <= m || f.max.CompareAndSwap(m, n) {
			return
		}
	}
}

func (f *inflight) leave() { f.now.Add(-1) }

func TestCheckerLimit(t *testing.T) {
	lim := NewLimiter(3)
	var f inflight
	var limOver atomic.Bool
	blocking := func(ctx context.Context) Result {
		f.enter()
		defer f.leave()
		if lim.InFlight() > 3 {
			limOver.Store(true)
		}
		<-ctx.Done()
		return Result{}
	}
	var targets1, targets2 []Target
	for i := range 6 {
		targets1 = append(targets1, Target{Key: fmt.Sprint(i), Probe: blocking})
		targets2 = append(targets2, Target{Key: fmt.Sprint(i), Probe: blocking})
	}
	// Two checkers share the limiter.
	o := Options{Interval: 30 * time.Millisecond, Timeout: 25 * time.Millisecond, Limit: lim}
	c1 := New(o, targets1)
	c2 := New(o, targets2)
	time.Sleep(200 * time.Millisecond)
	c1.Close()
	c2.Close()
	if m := f.max.Load(); m != 3 {
		t.Errorf("at most %d in flight, want 3", m)
	}
	if limOver.Load() {
		t.Error("limiter over its bound")
	}
	if n := lim.InFlight(); n != 0 {
		t.Errorf("%d in flight after Close", n)
	}
}

// TestCheckerOneInFlight: a probe ignoring its context and outlasting
// the interval has no second check started beside it.
func TestCheckerOneInFlight(t *testing.T) {
	var f inflight
	var checks atomic.Int64
	slow := func(ctx context.Context) Result {
		f.enter()
		defer f.leave()
		checks.Add(1)
		time.Sleep(50 * time.Millisecond)
		return Result{OK: true}
	}
	c := New(Options{Interval: 10 * time.Millisecond, Fall: 100}, []Target{{Key: "a", Probe: slow}})
	time.Sleep(200 * time.Millisecond)
	c.Close()
	if m := f.max.Load(); m != 1 {
		t.Errorf("%d checks of one backend in flight", m)
	}
	if n := checks.Load(); n < 1 || n > 5 {
		t.Errorf("%d checks in 200ms of 50ms each", n)
	}
	st, _ := c.Status("a")
	if st.Failures != st.Checks || st.LastFailure != "timeout" {
		t.Errorf("status %+v", st)
	}
}

func TestCheckerUpdate(t *testing.T) {
	rec := newRecorder()
	var a, c2 switchable
	a.set("connection refused")
	var bCancelled atomic.Bool
	bStarted := make(chan struct{}, 1)
	b := func(ctx context.Context) Result {
		select {
		case bStarted <- struct{}{}:
		default:
		}
		<-ctx.Done()
		bCancelled.Store(errorsIsCanceled(ctx))
		return Result{OK: true}
	}
	o := Options{Interval: 30 * time.Millisecond, Timeout: 30 * time.Millisecond, Rise: 2, Fall: 1, OnChange: rec.onChange}
	c := New(o, []Target{{Key: "a", Probe: a.probe}, {Key: "b", Probe: b}})
	defer c.Close()
	if e := rec.wait(t, time.Second); e.key != "a" || e.up {
		t.Fatalf("event %+v", e)
	}
	<-bStarted
	before, _ := c.Status("a")

	// Reload: a stays (down), b goes, c comes, down with StartDown.
	o.StartDown = true
	c2.set("")
	c.Update(o, []Target{{Key: "a", Probe: a.probe}, {Key: "c", Probe: c2.probe}})
	if c.Up("a") || c.Up("c") {
		t.Error("a or c up right after the reload")
	}
	if !c.Up("b") {
		t.Error("a dropped key is not up (unknown keys are)")
	}
	if _, ok := c.Status("b"); ok {
		t.Error("status of a dropped key")
	}
	eventually(t, "b cancelled", bCancelled.Load)
	after, ok := c.Status("a")
	if !ok || after.Up || after.Transitions != 1 || after.Checks < before.Checks || !after.Since.Equal(before.Since) {
		t.Errorf("a before %+v, after %+v", before, after)
	}
	if e := rec.wait(t, time.Second); e.key != "c" || !e.up {
		t.Fatalf("event %+v", e)
	}
	if st, _ := c.Status("c"); st.Checks < 2 || st.Checks > 3 || st.Transitions != 1 {
		t.Errorf("c came up after %d checks: %+v", st.Checks, st)
	}

	// Without StartDown a new key starts up; a recovers with its new probe.
	o.StartDown = false
	c.Update(o, []Target{{Key: "a", Probe: c2.probe}, {Key: "c", Probe: c2.probe}, {Key: "d", Probe: c2.probe}, {Key: "d", Probe: a.probe}})
	if !c.Up("d") {
		t.Error("d down")
	}
	if e := rec.wait(t, time.Second); e.key != "a" || !e.up {
		t.Fatalf("event %+v", e)
	}
	if st := c.Statuses(); len(st) != 3 || !st["a"].Up || !st["c"].Up || !st["d"].Up || st["d"].Transitions != 0 {
		t.Errorf("statuses %+v", st)
	}
	time.Sleep(100 * time.Millisecond)
	if st, _ := c.Status("d"); !st.Up || st.Failures != 0 {
		t.Errorf("d (the first of the duplicates counts): %+v", st)
	}

	// Down to nothing, and back.
	c.Update(o, nil)
	if len(c.Statuses()) != 0 {
		t.Error("targets left")
	}
	c.Update(o, []Target{{Key: "e", Probe: c2.probe}})
	st, ok := c.Status("e")
	eventually(t, "e checked", func() bool { st, ok = c.Status("e"); return st.Checks > 0 })
	if !ok || !st.Up {
		t.Errorf("e %+v", st)
	}
}

func errorsIsCanceled(ctx context.Context) bool { return ctx.Err() == context.Canceled }

// settle waits for the goroutines to fall back to at most n.
func settle(t *testing.T, n int) {
	t.Helper()
	var got int
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got = runtime.NumGoroutine(); got <= n {
			return
		}
	}
	buf := make([]byte, 1<<16)
	t.Errorf("%d goroutines, want %d at most:\n%s", got, n, buf[:runtime.Stack(buf, true)])
}

func TestCheckerClose(t *testing.T) {
	before := runtime.NumGoroutine()
	rec := newRecorder()
	started := make(chan struct{}, 100)
	blocking := func(ctx context.Context) Result {
		started <- struct{}{}
		<-ctx.Done()
		return Result{}
	}
	var targets []Target
	for i := range 20 {
		targets = append(targets, Target{Key: fmt.Sprint(i), Probe: blocking})
	}
	c := New(Options{Interval: time.Second, Limit: NewLimiter(4), Fall: 1, OnChange: rec.onChange}, targets)
	for range 4 {
		<-started
	}
	if runtime.NumGoroutine() <= before {
		t.Error("no goroutines running")
	}
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Close hangs")
	}
	c.Close()
	c.Update(Options{}, targets)
	settle(t, before)
	if n := rec.count(); n != 0 {
		t.Errorf("%d transitions from cancelled checks", n)
	}
	if !c.Up("0") {
		t.Error("state lost at Close")
	}
}

func TestCheckerIdle(t *testing.T) {
	before := runtime.NumGoroutine()
	c := New(Options{Interval: 10 * time.Millisecond}, nil)
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines without targets, %d before", n, before)
	}
	if !c.Up("x") {
		t.Error("unknown key down")
	}
	// Targets come and go: the scheduler goes with them.
	c.Update(Options{Interval: 10 * time.Millisecond}, []Target{{Key: "a", Probe: func(context.Context) Result { return Result{OK: true} }}})
	if n := runtime.NumGoroutine(); n <= before {
		t.Errorf("%d goroutines with a target, %d before", n, before)
	}
	c.Update(Options{Interval: 10 * time.Millisecond}, nil)
	settle(t, before)
	c.Close()
	var nilChecker *Checker
	if !nilChecker.Up("x") {
		t.Error("nil checker: down")
	}
}

func TestOptionsNormalized(t *testing.T) {
	o := Options{}.normalized()
	if o.Interval != DefaultInterval || o.Timeout != DefaultInterval || o.Rise != DefaultRise || o.Fall != DefaultFall || o.Limit != defaultLimiter {
		t.Errorf("%+v", o)
	}
	o = Options{Interval: time.Second, Timeout: 5 * time.Second}.normalized()
	if o.Timeout != time.Second {
		t.Errorf("timeout %v beyond the interval", o.Timeout)
	}
	if l := NewLimiter(0); cap(l.sem) != 1 || l.InFlight() != 0 {
		t.Errorf("NewLimiter(0): cap %d, in flight %d", cap(l.sem), l.InFlight())
	}
}

// TestCheckerUpdateKeepsPhase: a reload does not move the next check of
// a backend that stays.
func TestCheckerUpdateKeepsPhase(t *testing.T) {
	const iv = 100 * time.Millisecond
	checks := make(chan time.Time, 100)
	p := func(context.Context) Result { checks <- time.Now(); return Result{OK: true} }
	o := Options{Interval: iv}
	c := New(o, []Target{{Key: "k", Probe: p}})
	defer c.Close()
	<-checks
	last := <-checks
	time.Sleep(iv / 3)
	c.Update(o, []Target{{Key: "k", Probe: p}, {Key: "new", Probe: func(context.Context) Result { return Result{OK: true} }}})
	next := <-checks
	// A round may be skipped on a busy machine (the previous check not
	// over yet when the next is due), but the phase stays.
	if d := next.Sub(last); d < iv-10*time.Millisecond || d%iv > 60*time.Millisecond && d%iv < iv-10*time.Millisecond {
		t.Errorf("next check %v after the last, want a multiple of %v", d, iv)
	}
	// A shorter interval keeps the phase within it.
	o.Interval = iv / 2
	c.Update(o, []Target{{Key: "k", Probe: p}})
	if d := (<-checks).Sub(next); d > iv+200*time.Millisecond {
		t.Errorf("next check %v after the last", d)
	}
}
