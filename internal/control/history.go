package control

import (
	"net/http"
	"sync"
	"time"
)

// The status page's history: a sampler takes a Status snapshot every
// interval and keeps, per service, the rates between consecutive snapshots
// for the last historyWindow, so the page can chart the recent minutes.

// DefaultHistoryInterval is how often the status page's history is sampled.
const DefaultHistoryInterval = 5 * time.Second

const (
	// historyWindow is how far back the history goes.
	historyWindow = 10 * time.Minute
	// maxHistoryPoints bounds the ring whatever the interval.
	maxHistoryPoints = 600
)

// HistoryReply is the reply of GET /api/v1/history.
type HistoryReply struct {
	// IntervalSeconds is the sampling interval.
	IntervalSeconds float64 `json:"interval_seconds"`
	// Points are the samples, oldest first.
	Points []HistoryPoint `json:"points"`
}

// HistoryPoint is one sample: each service's rates since the sample
// before it.
type HistoryPoint struct {
	Time     time.Time       `json:"time"`
	Services []ServiceSample `json:"services"`
}

// ServiceSample is one service in a HistoryPoint. Rates are per second
// over the time since the previous sample; a counter that went backwards
// (lbd reloaded) counts as 0, as does a service or backend the previous
// sample did not have.
type ServiceSample struct {
	Name string `json:"name"`
	// Active is the current connections (proxy services).
	Active int64 `json:"active"`
	// Accepted is connections accepted per second (proxy services).
	Accepted float64 `json:"accepted_per_second"`
	// Sent and Received are bytes per second to and from the backends,
	// summed over them.
	Sent     float64 `json:"sent_bytes_per_second"`
	Received float64 `json:"received_bytes_per_second"`
	// Packets is frames forwarded per second (DSR services).
	Packets float64 `json:"packets_per_second"`
}

// historyInterval is the sampling interval of o.
func historyInterval(o Options) time.Duration {
	if o.HistoryInterval > 0 {
		return o.HistoryInterval
	}
	return DefaultHistoryInterval
}

// historyCap is how many points cover historyWindow at interval d.
func historyCap(d time.Duration) int {
	n := int((historyWindow + d - 1) / d)
	return min(max(n, 2), maxHistoryPoints)
}

// history holds the samples. The zero value records nothing until init.
type history struct {
	mu    sync.Mutex
	ring  []HistoryPoint // capacity historyCap(interval)
	next  int            // where the next point goes once ring is full
	prev  Status         // the last snapshot
	prevT time.Time      // when it was taken; zero before the first
}

// init empties h for sampling every interval.
func (h *history) init(interval time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ring = make([]HistoryPoint, 0, historyCap(interval))
	h.next = 0
	h.prevT = time.Time{}
}

// record adds the snapshot st taken at t: the first snapshot is only the
// baseline, each later one adds a point.
func (h *history) record(st Status, t time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.prevT.IsZero() && t.After(h.prevT) && cap(h.ring) > 0 {
		h.push(HistoryPoint{Time: t, Services: rates(h.prev, st, t.Sub(h.prevT))})
	}
	h.prev, h.prevT = st, t
}

// push adds p to the ring, overwriting the oldest point when it is full.
func (h *history) push(p HistoryPoint) {
	if len(h.ring) < cap(h.ring) {
		h.ring = append(h.ring, p)
		return
	}
	h.ring[h.next] = p
	h.next = (h.next + 1) % len(h.ring)
}

// points returns the points, oldest first.
func (h *history) points() []HistoryPoint {
	h.mu.Lock()
	defer h.mu.Unlock()
	pts := make([]HistoryPoint, 0, len(h.ring))
	pts = append(pts, h.ring[h.next:]...)
	return append(pts, h.ring[:h.next]...)
}

// rates computes each service of cur's sample from the snapshots prev and
// cur taken d apart. Services and backends are matched by name and by
// index and address.
func rates(prev, cur Status, d time.Duration) []ServiceSample {
	secs := d.Seconds()
	before := make(map[string]*ServiceStatus, len(prev.Services))
	for i := range prev.Services {
		before[prev.Services[i].Name] = &prev.Services[i]
	}
	out := make([]ServiceSample, 0, len(cur.Services))
	for _, s := range cur.Services {
		smp := ServiceSample{Name: s.Name, Active: s.Active}
		if p := before[s.Name]; p != nil && secs > 0 {
			smp.Accepted = float64(delta(p.Accepted, s.Accepted)) / secs
			var sent, recv, pkts uint64
			for _, b := range s.Backends {
				pb, ok := findBackend(p.Backends, b)
				if !ok {
					continue
				}
				sent += delta(pb.Sent, b.Sent)
				recv += delta(pb.Received, b.Received)
				pkts += delta(pb.Packets, b.Packets)
			}
			smp.Sent = float64(sent) / secs
			smp.Received = float64(recv) / secs
			smp.Packets = float64(pkts) / secs
		}
		out = append(out, smp)
	}
	return out
}

// findBackend returns the backend of bs with b's index and address.
func findBackend(bs []BackendStatus, b BackendStatus) (BackendStatus, bool) {
	for _, x := range bs {
		if x.Index == b.Index && x.Address == b.Address {
			return x, true
		}
	}
	return BackendStatus{}, false
}

// delta is how much a counter grew from a to b; 0 when it went backwards
// (it restarted).
func delta(a, b uint64) uint64 {
	if b < a {
		return 0
	}
	return b - a
}

// sampler is the history's goroutine's handle.
type sampler struct {
	mu      sync.Mutex
	stop    chan struct{} // closed to stop it; nil when not started
	done    chan struct{} // closed when it has stopped
	stopped bool          // stop is closed
}

// startSampler starts sampling the history (Serve calls it).
func (s *Server) startSampler() {
	sm := &s.page.sampler
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.stop != nil {
		return
	}
	d := historyInterval(s.o)
	s.page.history.init(d)
	sm.stop, sm.done = make(chan struct{}), make(chan struct{})
	go s.sample(d, sm.stop, sm.done)
}

// signalSampler tells the sampler to stop (Stop calls it); waitSampler
// waits until it has (Wait).
func (s *Server) signalSampler() {
	sm := &s.page.sampler
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.stop != nil && !sm.stopped {
		close(sm.stop)
		sm.stopped = true
	}
}

func (s *Server) waitSampler() {
	sm := &s.page.sampler
	sm.mu.Lock()
	done := sm.done
	sm.mu.Unlock()
	if done != nil {
		<-done
	}
}

// sample records a snapshot now and every d until stop is closed.
func (s *Server) sample(d time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		s.page.history.record(s.o.Backend.Status(), s.o.now())
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// history serves GET /api/v1/history.
func (s *Server) history(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, HistoryReply{
		IntervalSeconds: historyInterval(s.o).Seconds(),
		Points:          s.page.history.points(),
	})
}
