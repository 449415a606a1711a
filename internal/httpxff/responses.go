package httpxff

import (
	"bytes"
	"sync"
)

// kind describes a request as far as the framing and meaning of its
// response are concerned.
type kind uint8

const (
	kindHead    kind = 1 << iota // HEAD: the response has no body
	kindConnect                  // CONNECT: a 2xx answer opens a tunnel
	kindUpgrade                  // asks for an upgrade: a 101 answer switches protocols
)

// maxInFlight bounds the requests passed on whose responses have not begun.
// A client that pipelines more than this stops the Responses follower: its
// requests are still rewritten, but an upgrade on that connection is never
// taken as granted.
const maxInFlight = 64

type answer uint8

const (
	answerNone     answer = iota // no CONNECT or upgrade request waits for an answer
	answerPending                // one was passed on; the backend has not answered yet
	answerSwitched               // the backend switched protocols
	answerRefused                // the backend did not, or can no longer be followed
)

// exchange is what a Rewriter and its Responses share. A proxy feeds them
// from two goroutines, hence the mutex.
type exchange struct {
	mu       sync.Mutex
	n, first int               // requests in flight, ring index of the oldest
	kinds    [maxInFlight]kind // ring of requests in flight
	answer   answer
	lost     bool // the responses can no longer be followed
}

// push records a request passed on to the backend, before its bytes are.
func (x *exchange) push(k kind) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if k&(kindConnect|kindUpgrade) != 0 {
		x.answer = answerPending
	}
	if x.lost {
		x.loseLocked()
		return
	}
	if x.n == maxInFlight {
		x.loseLocked()
		return
	}
	x.kinds[(x.first+x.n)%maxInFlight] = k
	x.n++
}

// take returns the answer to the last CONNECT or upgrade request, if it is
// known (settled), and forgets it.
func (x *exchange) take() (settled, switched bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	a := x.answer
	if a == answerPending {
		return false, false
	}
	x.answer = answerNone
	return true, a == answerSwitched
}

// pop removes the oldest request in flight: its response begins.
func (x *exchange) pop() (kind, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.n == 0 {
		return 0, false
	}
	k := x.kinds[x.first]
	x.first = (x.first + 1) % maxInFlight
	x.n--
	return k, true
}

// settle records the backend's answer to the CONNECT or upgrade request in
// flight. It reports whether that request was waiting for it.
func (x *exchange) settle(switched bool) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.answer != answerPending {
		return false
	}
	x.answer = answerRefused
	if switched {
		x.answer = answerSwitched
	}
	return true
}

// lose records that the responses can no longer be followed: a request
// waiting for an answer, and every later one, is answered "not switched".
// It reports whether a request was waiting.
func (x *exchange) lose() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.loseLocked()
}

func (x *exchange) loseLocked() bool {
	x.lost, x.n = true, 0
	if x.answer == answerPending {
		x.answer = answerRefused
		return true
	}
	return false
}

type phase uint8

const (
	phStatus phase = iota // a status line is next
	phFields              // header fields, up to the empty line
	phBody                // a body, framed by the embedded framer
	phTunnel              // the protocol switched: nothing more to follow
	phLost                // the responses can no longer be followed
)

// Responses follows a backend's HTTP/1.x responses to the requests a
// [Rewriter] passed on, in order, to find its answer to a CONNECT or
// upgrade request: the protocol switched on a 101 to a request that asked
// for an upgrade, or on a 2xx to a CONNECT. It reads only status lines,
// Content-Length and Transfer-Encoding, and the chunked framing of bodies;
// it never changes or holds the bytes, which the proxy passes on as they
// are.
//
// What it cannot follow (a malformed or oversized head, a response whose
// body ends at the close of the connection, a 101 that no request asked
// for, more than 64 requests in flight) stops it, and so does a response
// after which the backend closes the connection: every CONNECT or upgrade
// request from then on is taken as refused, so the client's later bytes are
// still parsed as requests. A Responses is fed from one goroutine, which may
// differ from the one feeding its Rewriter.
type Responses struct {
	x   *exchange
	max int

	phase  phase
	framer        // body framing in phBody
	req    kind   // the request the current response answers
	status int    // the current response's status code
	cl     int64  // its Content-Length, -1 if none
	te     bool   // it has Transfer-Encoding
	chunk  bool   // which is "chunked"
	http10 bool   // its version is HTTP/1.0
	close  bool   // it has "close" in Connection
	keep   bool   // it has "keep-alive" in Connection
	last   bool   // the backend closes the connection after it
	size   int    // bytes of the current head so far
	line   []byte // a head line split across calls to Feed
}

// Feed consumes bytes p received from the backend. It reports whether they
// settled the answer to a CONNECT or upgrade request the Rewriter waits for
// (or may wait for, if the request's body is still being sent): the caller
// should then let the Rewriter go on ([Rewriter.Resume]). Feed holds no
// reference to p, and at most one split head line between calls.
func (s *Responses) Feed(p []byte) (settled bool) {
	for len(p) > 0 {
		switch s.phase {
		case phTunnel, phLost:
			return settled
		case phBody:
			n, done, err := s.body(p, s.max)
			p = p[n:]
			if err != nil {
				return s.lose() || settled
			}
			if done && s.next() {
				settled = true
			}
		default:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				if s.size += len(p); s.size > s.max {
					return s.lose() || settled
				}
				s.line = append(s.line, p...)
				return settled
			}
			if s.size += i + 1; s.size > s.max {
				return s.lose() || settled
			}
			line := p[:i+1]
			p = p[i+1:]
			if len(s.line) > 0 {
				s.line = append(s.line, line...)
				line = s.line
			}
			if s.headLine(line) {
				settled = true
			}
			if len(s.line) > 0 {
				s.line = s.line[:0]
			}
		}
	}
	return settled
}

// Close records that the backend's stream ended. It reports whether that
// settled a CONNECT or upgrade request waiting for its answer (as refused).
func (s *Responses) Close() bool {
	if s.phase == phTunnel {
		return false
	}
	return s.lose()
}

// Switched reports whether the backend switched protocols: Feed has nothing
// more to follow.
func (s *Responses) Switched() bool { return s.phase == phTunnel }

func (s *Responses) lose() bool {
	s.phase, s.line = phLost, nil
	return s.x.lose()
}

// next gets ready for the next response, if one may follow. It reports
// whether that settled an answer (as refused).
func (s *Responses) next() bool {
	if s.last {
		return s.lose() // nothing follows a response that closes the connection
	}
	s.phase, s.size = phStatus, 0
	if cap(s.line) > keepBuf {
		s.line = nil
	}
	return false
}

// headLine handles one line of a response head, LF included. It reports
// whether the answer to a CONNECT or upgrade request was settled.
func (s *Responses) headLine(line []byte) bool {
	line, _ = nextLine(line)
	if s.phase == phStatus {
		return s.statusLine(line)
	}
	if len(line) == 0 {
		return s.endHead()
	}
	name, value, err := splitField(line)
	if err != nil {
		return s.lose()
	}
	switch {
	case equalFold(name, "content-length"):
		// Strictly digits, no list: what a backend sends, and what
		// clients read.
		n, ok := parseDigits(value)
		if !ok || s.cl >= 0 && n != s.cl {
			return s.lose()
		}
		s.cl = n
	case equalFold(name, "connection"):
		for elem := range bytes.SplitSeq(value, []byte(",")) {
			switch elem = trimOWS(elem); {
			case equalFold(elem, "close"):
				s.close = true
			case equalFold(elem, "keep-alive"):
				s.keep = true
			}
		}
	case equalFold(name, "transfer-encoding"):
		// Only a single "chunked" is followed; any other coding makes the
		// body end at the close.
		if s.te {
			return s.lose()
		}
		s.te, s.chunk = true, equalFold(value, "chunked")
	}
	return false
}

// statusLine handles "HTTP/1.d SP 3DIGIT SP reason-phrase" (RFC 9112 §4);
// the space after the code may be missing when the reason is empty.
func (s *Responses) statusLine(line []byte) bool {
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[7] < '0' || line[7] > '9' ||
		line[8] != ' ' || len(line) > 12 && line[12] != ' ' {
		return s.lose()
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return s.lose()
		}
		code = code*10 + int(c-'0')
	}
	for _, c := range line[12:] {
		if isCTL(c) {
			return s.lose()
		}
	}
	if code < 100 {
		return s.lose()
	}
	s.phase, s.status, s.cl, s.te, s.chunk, s.req = phFields, code, -1, false, false, 0
	s.http10, s.close, s.keep = line[7] == '0', false, false
	if code == 101 {
		if k, ok := s.x.pop(); !ok || k&kindUpgrade == 0 {
			return s.lose() // a switch nobody asked for: cannot follow it
		}
		s.phase, s.line = phTunnel, nil
		return s.x.settle(true)
	}
	if code < 200 {
		return false // interim: the final response follows
	}
	k, _ := s.x.pop() // none: an unsolicited response, such as a 408
	s.req = k
	switch {
	case k&kindConnect != 0 && code < 300:
		s.phase, s.line = phTunnel, nil
		return s.x.settle(true)
	case k&(kindConnect|kindUpgrade) != 0:
		return s.x.settle(false)
	}
	return false
}

// endHead sets up the framing of the body after a response head (RFC 9112
// §6.3), and notes whether the connection closes after it (§9.3).
func (s *Responses) endHead() bool {
	if s.status >= 200 && (s.close || s.http10 && !s.keep) {
		s.last = true
	}
	switch {
	case s.status < 200, s.req&kindHead != 0, s.status == 204, s.status == 304:
		return s.next()
	case s.te:
		if !s.chunk || s.cl >= 0 {
			return s.lose() // ends at the close, or ambiguous
		}
		s.phase = phBody
		s.startBody(true, 0)
	case s.cl > 0:
		s.phase = phBody
		s.startBody(false, uint64(s.cl))
	case s.cl == 0:
		return s.next()
	default:
		return s.lose() // the body ends at the close of the connection
	}
	return false
}
