package proxy

import (
	"net/netip"
	"time"

	"github.com/nib-lb/nib/internal/balance"
)

// session is one client's way through a service, the same on every path
// (the TCP engine, the stream path, UDP flows):
//
//	admit → pick → connect → failover → done → log
//
// It is admitted under MaxConnections; the pool picks its backend (a client
// the ACL denies goes to the abuse server or nowhere); a connect that fails
// blacklists the backend and the pool reserves the next one, except that an
// error of this host's own (isLocalError) blames nobody and ends the
// session; at the end the backend is released with the bytes moved, the
// request log gets a line, and the connection slot is given back.
//
// A session holds these decisions and the counting only. The paths own the
// sockets, connect their own way (the engine without blocking, the others
// with a blocking dial) and report each outcome to it. One goroutine at a
// time uses a session.
type session struct {
	svc   *Service
	opts  *Options       // as they were when the client was admitted
	peer  netip.AddrPort // the client
	start time.Time
	// choice is the backend reserved for the session, or none (Index
	// balance.NoServer).
	choice balance.Choice
	// served: a connect to a backend succeeded. A client is refused only
	// if it never was.
	served bool
	// reported are the bytes sent and received already added to the
	// pool's counters (progress).
	reported [2]uint64
}

// noChoice is a session's choice while no backend is reserved. (The zero
// Choice is server 0's.)
var noChoice = balance.Choice{Index: balance.NoServer}

// reportEvery is how many bytes a connection moves between reports to the
// pool's live counters (progress).
const reportEvery = 1 << 20

// admit starts s for a client of svc under o, svc's current options, and
// reserves a connection slot. When the service is full it reports false:
// the client is counted refused and must be closed, and s is not to be
// used further.
func (s *session) admit(svc *Service, o *Options, peer netip.AddrPort, now time.Time) bool {
	*s = session{svc: svc, opts: o, peer: peer, start: now, choice: noChoice}
	return svc.admit(o)
}

// pick reserves the backend the pool chooses for the client. It reports
// false when there is none: the client must be closed (done).
func (s *session) pick(now time.Time) bool {
	s.choice = s.svc.pool.Pick(s.peer, now)
	return s.ok()
}

// ok reports whether a backend is reserved; when none is, a client never
// served is counted refused.
func (s *session) ok() bool {
	if s.choice.Index != balance.NoServer {
		return true
	}
	if !s.served {
		s.svc.noBackend()
	}
	return false
}

// failed reports that connecting to the reserved backend failed with err.
// An error of this host's own (isLocalError) releases the backend, blaming
// it for nothing, logs, and reports false: the client must be closed. Any
// other error is the backend's: the pool blacklists it and reserves the
// next one to try (true), if any is left.
func (s *session) failed(err error, now time.Time) bool {
	if isLocalError(err) {
		s.svc.localError("connect to "+s.choice.Addr.String(), s.peer, err)
		s.abandon()
		return false
	}
	s.choice = s.svc.pool.Failed(s.choice, s.peer, now)
	return s.ok()
}

// connected reports that the connect to the reserved backend succeeded.
func (s *session) connected(now time.Time) {
	s.svc.pool.Connected(s.choice, s.peer, now)
	s.served = true
}

// abandon gives the reserved backend back without counting anything: its
// connect failed for a reason of this host's, or did not finish.
func (s *session) abandon() {
	if s.choice.Index != balance.NoServer {
		s.svc.pool.Done(s.choice, 0, 0)
		s.choice = noChoice
	}
}

// progress adds the bytes moved since the last report to the backend's
// counters once they reach reportEvery, so that long connections show in
// the statistics while they last. sent and recv are the totals so far.
func (s *session) progress(sent, recv uint64) {
	ds, dr := sent-s.reported[0], recv-s.reported[1]
	if ds+dr < reportEvery || s.choice.Index == balance.NoServer {
		return
	}
	s.svc.pool.AddBytes(s.choice, ds, dr)
	s.reported = [2]uint64{sent, recv}
}

// done ends the session: the backend, if one is reserved, is released
// with the bytes sent to and received from it (the totals; what progress
// reported is not counted again) and, if it was connected, the request
// log gets a line; the connection slot admit took is given back. It must
// be called once for every admitted session.
func (s *session) done(sent, recv uint64, now time.Time) {
	if s.choice.Index != balance.NoServer {
		if s.served {
			s.svc.pool.Done(s.choice, sent-s.reported[0], recv-s.reported[1])
			s.log(sent, recv, now)
		} else {
			s.svc.pool.Done(s.choice, 0, 0)
		}
		s.choice = noChoice
	}
	s.svc.release()
}

// log records the session in the request log, if the service has one.
func (s *session) log(sent, recv uint64, now time.Time) {
	if l := s.opts.Log; l != nil {
		l.record(logRecord{service: s.opts.Name, client: s.peer, server: s.choice.Addr, sent: sent, recv: recv, start: s.start, end: now})
	}
}
