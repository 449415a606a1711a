package httpxff

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// outcome is what a Responses made of the answer to the last request.
type outcome string

const (
	pending  outcome = "pending"  // not answered yet
	switched outcome = "switched" // the protocol switched
	refused  outcome = "refused"  // it did not
)

// followResponses passes requests (CRLF written as "|") through a new
// Rewriter, feeds the responses to its Responses in the given pieces, and
// returns what became of the answer to the last request, whether the
// follower was lost, and how many Feed calls reported a settled answer.
func followResponses(t *testing.T, max int, requests string, pieces [][]byte) (outcome, bool, int) {
	t.Helper()
	r := New(client4, "http", max)
	if _, err := r.Feed(nil, []byte(crlfs(requests))); err != nil {
		t.Fatalf("requests: %v", err)
	}
	resp := r.Responses()
	settled := 0
	for _, p := range pieces {
		if resp.Feed(p) {
			settled++
		}
	}
	if _, err := r.Resume(nil); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	o := pending
	switch r.state {
	case stTunnel:
		o = switched
	case stHead:
		o = refused
	}
	r.x.mu.Lock()
	defer r.x.mu.Unlock()
	return o, r.x.lost, settled
}

func TestResponses(t *testing.T) {
	const (
		ws  = "GET /ws HTTP/1.1|Upgrade: websocket|Connection: Upgrade||"
		get = "GET / HTTP/1.1||"
		sw  = "HTTP/1.1 101 Switching Protocols|Upgrade: websocket|Connection: Upgrade||"
	)
	fake101 := "HTTP/1.1 101 Switching Protocols||" // inside bodies
	tests := []struct {
		name      string
		max       int
		requests  string
		responses string // "|" is CRLF
		want      outcome
		lost      bool
	}{
		{name: "101", requests: ws, responses: sw, want: switched},
		{name: "101 without a reason", requests: ws, responses: "HTTP/1.1 101|Upgrade: websocket||", want: switched},
		{name: "200 to an upgrade", requests: ws, responses: "HTTP/1.1 200 OK|Content-Length: 2||ok", want: refused},
		{name: "426 to an upgrade", requests: ws, responses: "HTTP/1.1 426 Upgrade Required|Content-Length: 0||", want: refused},
		{name: "not answered yet", requests: ws, responses: "HTTP/1.1 10", want: pending},
		{name: "100 Continue, then 101", requests: ws, responses: "HTTP/1.1 100 Continue||" + sw, want: switched},
		{name: "103 Early Hints, then 200", requests: ws, responses: "HTTP/1.1 103 Early Hints|Link: </a>||HTTP/1.1 200 OK|Content-Length: 0||", want: refused},
		{name: "CONNECT 200", requests: "CONNECT a:443 HTTP/1.1||", responses: "HTTP/1.1 200 Connection established||", want: switched},
		{name: "CONNECT 407", requests: "CONNECT a:443 HTTP/1.1||", responses: "HTTP/1.1 407 Proxy Authentication Required|Content-Length: 0||", want: refused},
		{name: "CONNECT 101 without Upgrade", requests: "CONNECT a:443 HTTP/1.1||", responses: sw, want: refused, lost: true},
		{
			name:      "101 in a Content-Length body is not a response",
			requests:  get + ws,
			responses: "HTTP/1.1 200 OK|Content-Length: 36||" + fake101 + "HTTP/1.1 400 Bad Request|Content-Length: 0||",
			want:      refused,
		},
		{
			name:      "101 in a chunked body is not a response",
			requests:  get + ws,
			responses: "HTTP/1.1 200 OK|Transfer-Encoding: chunked||24|" + fake101 + "|0|Trailer: x||HTTP/1.1 400 Bad Request|Content-Length: 0||",
			want:      refused,
		},
		{
			name:      "101 after a 304 with Content-Length",
			requests:  get + ws,
			responses: "HTTP/1.1 304 Not Modified|Content-Length: 36||" + sw,
			want:      switched,
		},
		{
			name:      "101 after a 204",
			requests:  get + ws,
			responses: "HTTP/1.1 204 No Content||" + sw,
			want:      switched,
		},
		{
			name:      "101 after the answer to HEAD, which has no body",
			requests:  "HEAD / HTTP/1.1||" + ws,
			responses: "HTTP/1.1 200 OK|Content-Length: 36||" + sw,
			want:      switched,
		},
		{
			name:      "the answer to HEAD skipped as a body would be taken for a response",
			requests:  "HEAD / HTTP/1.1||" + ws,
			responses: "HTTP/1.1 200 OK|Content-Length: 36||" + "HTTP/1.1 404 Not Found|Content-Length: 0||",
			want:      refused,
		},
		{
			// A response cannot tell which request it answers: the first
			// one in flight it is. The 101 is then nobody's.
			name:      "a 408 answers the upgrade request",
			requests:  ws,
			responses: "HTTP/1.1 408 Request Timeout|Content-Length: 0||" + sw,
			want:      refused,
			lost:      true,
		},
		{name: "101 nobody asked for", requests: get + ws, responses: sw + sw, want: refused, lost: true},
		{name: "body up to the close", requests: get + ws, responses: "HTTP/1.1 200 OK||" + sw, want: refused, lost: true},
		{name: "body up to the close, HTTP/1.0", requests: get + ws, responses: "HTTP/1.0 200 OK|Content-Type: text/plain||" + sw, want: refused, lost: true},
		{name: "Connection: close", requests: get + ws, responses: "HTTP/1.1 200 OK|Content-Length: 0|Connection: close||" + sw, want: refused, lost: true},
		{name: "HTTP/1.0 without keep-alive", requests: get + ws, responses: "HTTP/1.0 204 No Content||" + sw, want: refused, lost: true},
		{name: "HTTP/1.0 keep-alive", requests: get + ws, responses: "HTTP/1.0 200 OK|Connection: Keep-Alive|Content-Length: 1||x" + sw, want: switched},
		{name: "Connection: close on an interim response", requests: ws, responses: "HTTP/1.1 100 Continue|Connection: close||" + sw, want: switched},
		{name: "transfer coding not ending in chunked", requests: get + ws, responses: "HTTP/1.1 200 OK|Transfer-Encoding: gzip||" + sw, want: refused, lost: true},
		{name: "chunked, then another coding", requests: get + ws, responses: "HTTP/1.1 200 OK|Transfer-Encoding: chunked, gzip||0||" + sw, want: refused, lost: true},
		{name: "another coding, then chunked", requests: get + ws, responses: "HTTP/1.1 200 OK|Transfer-Encoding: gzip, chunked||0||" + sw, want: refused, lost: true},
		{name: "chunked twice", requests: get + ws, responses: "HTTP/1.1 200 OK|Transfer-Encoding: chunked|Transfer-Encoding: chunked||0||" + sw, want: refused, lost: true},
		{name: "Content-Length list", requests: get + ws, responses: "HTTP/1.1 200 OK|Content-Length: 1, 1||x" + sw, want: refused, lost: true},
		{name: "chunked in any case", requests: get + ws, responses: "HTTP/1.1 200 OK|Transfer-Encoding: Chunked||1|x|0||" + sw, want: switched},
		{name: "Content-Length and Transfer-Encoding", requests: get + ws, responses: "HTTP/1.1 200 OK|Content-Length: 5|Transfer-Encoding: chunked||0||" + sw, want: refused, lost: true},
		{name: "conflicting Content-Length", requests: get + ws, responses: "HTTP/1.1 200 OK|Content-Length: 5|Content-Length: 6||" + sw, want: refused, lost: true},
		{name: "equal Content-Length lines", requests: get + ws, responses: "HTTP/1.1 200 OK|Content-Length: 2|Content-Length: 2||ok" + sw, want: switched},
		{name: "bad status line", requests: ws, responses: "HTTP/1.1 1O1 Switching||", want: refused, lost: true},
		{name: "HTTP/2 status line", requests: ws, responses: "HTTP/2 101||", want: refused, lost: true},
		{name: "status code below 100", requests: ws, responses: "HTTP/1.1 099 x||", want: refused, lost: true},
		{name: "control byte in the reason", requests: ws, responses: "HTTP/1.1 101 \x01||", want: refused, lost: true},
		{name: "empty line for a status line", requests: get + ws, responses: "HTTP/1.1 200 OK|Content-Length: 0||" + "|" + sw, want: refused, lost: true},
		{name: "obs-fold", requests: get + ws, responses: "HTTP/1.1 200 OK|Content-Length: 0|X: a| b||" + sw, want: refused, lost: true},
		{name: "bad chunk", requests: get + ws, responses: "HTTP/1.1 200 OK|Transfer-Encoding: chunked||zz|" + sw, want: refused, lost: true},
		{name: "head over the limit", max: 64, requests: get + ws, responses: "HTTP/1.1 204 No Content|X: " + strings.Repeat("a", 33) + "||" + sw, want: refused, lost: true},
		{name: "head at the limit", max: 64, requests: get + ws, responses: "HTTP/1.1 204 No Content|X: " + strings.Repeat("a", 32) + "||" + sw, want: switched},
		{name: "LF line ends", requests: get + ws, responses: "HTTP/1.1 200 OK\nContent-Length: 1\n\nxHTTP/1.1 101 Switching Protocols\n\n", want: switched},
		{
			name:      "more requests in flight than followed",
			requests:  strings.Repeat(get, maxInFlight) + ws,
			responses: strings.Repeat("HTTP/1.1 204 No Content||", maxInFlight) + sw,
			want:      refused,
			lost:      true,
		},
		{
			name:      "as many requests in flight as followed",
			requests:  strings.Repeat(get, maxInFlight-1) + ws,
			responses: strings.Repeat("HTTP/1.1 204 No Content||", maxInFlight-1) + sw,
			want:      switched,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(crlfs(tt.responses))
			for how, pieces := range splits(in) {
				got, lost, settled := followResponses(t, tt.max, tt.requests, pieces)
				if got != tt.want || lost != tt.lost {
					t.Fatalf("%s: answer %s, lost %v; want %s, lost %v", how, got, lost, tt.want, tt.lost)
				}
				wantSettled := 1
				if tt.want == pending || strings.HasPrefix(tt.requests, strings.Repeat(get, maxInFlight)) {
					wantSettled = 0 // not yet, or refused as it was passed on
				}
				if settled != wantSettled {
					t.Fatalf("%s: %d Feed calls settled the answer, want %d", how, settled, wantSettled)
				}
			}
		})
	}
}

// TestResponsesHoldNothingBetweenResponses checks that a follower keeps no
// buffer once a head split across reads is complete.
func TestResponsesHoldNothingBetweenResponses(t *testing.T) {
	r := New(client4, "http", 0)
	r.Feed(nil, []byte("GET / HTTP/1.1\r\n\r\n"))
	resp := r.Responses()
	// A header line longer than keepBuf, split: held while incomplete,
	// and its buffer dropped once the response head is done, so an idle
	// connection keeps nothing that size.
	pad := strings.Repeat("a", 2*keepBuf)
	resp.Feed([]byte("HTTP/1.1 200 OK\r\nX-Pad: " + pad[:keepBuf]))
	if len(resp.line) <= keepBuf/2 || cap(resp.line) < len(resp.line) {
		t.Fatalf("split line not held: len %d", len(resp.line))
	}
	resp.Feed([]byte(pad[keepBuf:] + "\r\nContent-Length: 0\r\n\r\n"))
	if len(resp.line) != 0 || cap(resp.line) > keepBuf {
		t.Fatalf("line buffer kept: len %d cap %d", len(resp.line), cap(resp.line))
	}
}

var responseSeeds = []struct{ requests, responses string }{
	{"GET /ws HTTP/1.1|Upgrade: websocket||", "HTTP/1.1 101 Switching Protocols||"},
	{"GET / HTTP/1.1||GET /ws HTTP/1.1|Upgrade: x||", "HTTP/1.1 200 OK|Content-Length: 36||HTTP/1.1 101 Switching Protocols||HTTP/1.1 400 x|Content-Length: 0||"},
	{"GET / HTTP/1.1||GET /ws HTTP/1.1|Upgrade: x||", "HTTP/1.1 200 OK|Transfer-Encoding: chunked||24|HTTP/1.1 101 Switching Protocols|||0||HTTP/1.1 101 x||"},
	{"HEAD / HTTP/1.1||GET /ws HTTP/1.1|Upgrade: x||", "HTTP/1.1 200 OK|Content-Length: 36||HTTP/1.1 101 Switching Protocols||"},
	{"CONNECT a:1 HTTP/1.1||", "HTTP/1.1 200 OK||"},
	{"GET / HTTP/1.1||CONNECT a:1 HTTP/1.1||", "HTTP/1.1 100 Continue||HTTP/1.1 304 Not Modified|Content-Length: 9||HTTP/1.1 407 x|Content-Length: 1||xHTTP/1.1 200 OK||"},
	{"GET /ws HTTP/1.1|Upgrade: x||", "HTTP/1.1 200 OK|Transfer-Encoding: chunked||1;a=b|x|0|T: 1||"},
}

// FuzzResponses checks that a Responses never panics, holds at most a head's
// worth of bytes, decides the same however the stream is split, and never
// takes as switched what net/http, reading the same responses to the same
// requests, does not: a response body must never pass for a 101.
func FuzzResponses(f *testing.F) {
	for i, s := range responseSeeds {
		f.Add(s.requests, []byte(crlfs(s.responses)), uint16(i*11))
	}
	f.Fuzz(func(t *testing.T, requests string, in []byte, cut uint16) {
		const max = 256
		r := New(client4, "http", max)
		if _, err := r.Feed(nil, []byte(crlfs(requests))); err != nil || r.state != stWait {
			return // only a stream ending with a CONNECT or upgrade request
		}
		methods := requestMethods(t, crlfs(requests))
		i := int(cut) % (len(in) + 1)
		one, lost1, _ := followResponses(t, max, requests, [][]byte{in})
		two, lost2, _ := followResponses(t, max, requests, [][]byte{in[:i], in[i:]})
		if one != two || lost1 != lost2 {
			t.Fatalf("split at %d: %s, lost %v; one-shot: %s, lost %v", i, two, lost2, one, lost1)
		}
		resp := r.Responses()
		for k := range in {
			resp.Feed(in[k : k+1])
			if len(resp.line) > max {
				t.Fatalf("holding %d bytes", len(resp.line))
			}
		}
		if one != switched {
			return
		}
		// net/http must see the last request's answer switch protocols.
		// That answer is decided by its status line alone.
		br := bufio.NewReader(bytes.NewReader(in))
		for n, m := range methods {
			req := &http.Request{Method: m}
			if n == len(methods)-1 {
				for {
					line, err := br.ReadBytes('\n')
					if err != nil {
						t.Fatalf("response %d: no status line: %v; we took the stream as switched", n, err)
					}
					res, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(line), strings.NewReader("\r\n"))), req)
					if err != nil {
						t.Fatalf("response %d: net/http: %v; we took %q as switching", n, err, line)
					}
					switch c := res.StatusCode; {
					case c == 101, m == "CONNECT" && c/100 == 2:
						return
					case c < 200:
						br = bufio.NewReader(io.MultiReader(bytes.NewReader(line), br))
						if _, err := http.ReadResponse(br, req); err != nil {
							t.Fatalf("response %d: net/http cannot read an interim response: %v", n, err)
						}
						continue
					}
					t.Fatalf("response %d: net/http reads status %d; we took it as switched", n, res.StatusCode)
				}
			}
			for {
				res, err := http.ReadResponse(br, req)
				if err != nil {
					t.Fatalf("response %d: net/http: %v; we took a later one as switched", n, err)
				}
				if res.StatusCode == 101 {
					t.Fatalf("response %d: 101 to a request that did not ask", n)
				}
				if res.StatusCode < 200 {
					continue
				}
				if _, err := io.Copy(io.Discard, res.Body); err != nil {
					t.Fatalf("response %d: net/http cannot read the body: %v", n, err)
				}
				if res.Close {
					t.Fatalf("response %d: the connection closes after it, yet we took a later one as switched", n)
				}
				break
			}
		}
	})
}

// requestMethods returns the methods of the requests in s.
func requestMethods(t *testing.T, s string) []string {
	var m []string
	br := bufio.NewReader(strings.NewReader(s))
	for {
		if _, err := br.Peek(1); err != nil {
			return m
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Skipf("net/http cannot read the requests: %v", err)
		}
		io.Copy(io.Discard, req.Body)
		m = append(m, req.Method)
	}
}
