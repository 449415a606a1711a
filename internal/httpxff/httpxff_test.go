package httpxff

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var client4 = netip.MustParseAddr("192.0.2.7")

// crlfs writes test requests readably: "|" stands for CRLF.
func crlfs(s string) string { return strings.ReplaceAll(s, "|", "\r\n") }

// answerAll feeds r's Responses a response to every request in flight: 204 to
// all but the last, the CONNECT or upgrade request r waits for, which gets
// 101 (200 to a CONNECT) if switched and 403 with an empty body otherwise.
func answerAll(r *Rewriter, switched bool) {
	r.x.mu.Lock()
	n, last := r.x.n, r.x.kinds[(r.x.first+r.x.n+maxInFlight-1)%maxInFlight]
	r.x.mu.Unlock()
	var b strings.Builder
	for range n - 1 {
		b.WriteString("HTTP/1.1 204 No Content\r\n\r\n")
	}
	switch {
	case switched && last&kindConnect != 0:
		b.WriteString("HTTP/1.1 200 Connection established\r\n\r\n")
	case switched:
		b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
	default:
		b.WriteString("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
	}
	r.Responses().Feed([]byte(b.String()))
}

// feedAnswering feeds in to r in the given pieces, as a proxy does: when r
// waits for the answer to a CONNECT or upgrade request, the backend gives
// the next of answers ('s' switched, 'r' refused) and r resumes; with no
// answers left, r goes on holding what it gets.
func feedAnswering(r *Rewriter, pieces [][]byte, answers string) ([]byte, error) {
	var out []byte
	for _, p := range pieces {
		var err error
		if out, err = r.Feed(out, p); err != nil {
			return out, err
		}
		for r.Waiting() && answers != "" {
			answerAll(r, answers[0] == 's')
			answers = answers[1:]
			if out, err = r.Resume(out); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// splits returns ways to cut in into pieces: whole, byte by byte, and
// random cuts from a fixed seed.
func splits(in []byte) map[string][][]byte {
	m := map[string][][]byte{"one-shot": {in}}
	var bytewise [][]byte
	for i := range in {
		bytewise = append(bytewise, in[i:i+1])
	}
	m["byte-by-byte"] = bytewise
	rng := rand.New(rand.NewPCG(1, uint64(len(in))))
	for k := range 20 {
		var pieces [][]byte
		for rest := in; len(rest) > 0; {
			n := 1 + rng.IntN(min(len(rest), 1+rng.IntN(40)))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		m["random-"+string(rune('a'+k))] = pieces
	}
	return m
}

func TestFeed(t *testing.T) {
	tests := []struct {
		name    string
		client  netip.Addr // client4 if zero
		proto   string     // "http" if empty
		max     int
		in      string // "|" is CRLF
		want    string
		wantErr error
		// answers are the backend's answers to the CONNECT and upgrade
		// requests, in order: 's' switched, 'r' refused.
		answers string
	}{
		{
			name: "single GET",
			in:   "GET / HTTP/1.1|Host: a|User-Agent: t||",
			want: "GET / HTTP/1.1|Host: a|User-Agent: t|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name:  "https",
			proto: "https",
			in:    "GET / HTTP/1.1|Host: a||",
			want:  "GET / HTTP/1.1|Host: a|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: https||",
		},
		{
			name:   "IPv6 client",
			client: netip.MustParseAddr("2001:db8::1%eth0"),
			in:     "GET / HTTP/1.1|Host: a||",
			want:   "GET / HTTP/1.1|Host: a|X-Forwarded-For: 2001:db8::1|X-Forwarded-Proto: http||",
		},
		{
			name:   "IPv4-mapped client written as IPv4",
			client: netip.MustParseAddr("::ffff:198.51.100.9"),
			in:     "GET / HTTP/1.1|Host: a||",
			want:   "GET / HTTP/1.1|Host: a|X-Forwarded-For: 198.51.100.9|X-Forwarded-Proto: http||",
		},
		{
			name: "existing XFF extended",
			in:   "GET / HTTP/1.1|Host: a|X-Forwarded-For: 203.0.113.1||",
			want: "GET / HTTP/1.1|Host: a|X-Forwarded-For: 203.0.113.1, 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "existing XFF list extended, case-insensitive name",
			in:   "GET / HTTP/1.1|x-forwarded-FOR:\t203.0.113.1, 10.0.0.1 |Host: a||",
			want: "GET / HTTP/1.1|Host: a|X-Forwarded-For: 203.0.113.1, 10.0.0.1, 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "multiple XFF lines merged",
			in:   "GET / HTTP/1.1|X-Forwarded-For: 1.1.1.1|Host: a|X-Forwarded-For: 2.2.2.2, 3.3.3.3|X_Forwarded_For: 4.4.4.4||",
			want: "GET / HTTP/1.1|Host: a|X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4, 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "empty XFF dropped",
			in:   "GET / HTTP/1.1|X-Forwarded-For:   |Host: a||",
			want: "GET / HTTP/1.1|Host: a|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "XFP replaced",
			in:   "GET / HTTP/1.1|X-Forwarded-Proto: https|Host: a|x_forwarded_proto: https||",
			want: "GET / HTTP/1.1|Host: a|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "keep-alive, three requests each rewritten (pipelined when one-shot)",
			in: "GET /1 HTTP/1.1|Host: a||" +
				"GET /2 HTTP/1.1|Host: a|X-Forwarded-For: 9.9.9.9||" +
				"HEAD /3 HTTP/1.1|Host: a|X-Forwarded-Proto: https||",
			want: "GET /1 HTTP/1.1|Host: a|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET /2 HTTP/1.1|Host: a|X-Forwarded-For: 9.9.9.9, 192.0.2.7|X-Forwarded-Proto: http||" +
				"HEAD /3 HTTP/1.1|Host: a|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "POST body that looks like a request is not rewritten",
			in: "POST /p HTTP/1.1|Host: a|Content-Length: 44||" +
				"GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||" +
				"GET /n HTTP/1.1||",
			want: "POST /p HTTP/1.1|Host: a|Content-Length: 44|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||" +
				"GET /n HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "Content-Length 0",
			in:   "POST / HTTP/1.1|Content-Length: 0||GET / HTTP/1.1||",
			want: "POST / HTTP/1.1|Content-Length: 0|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET / HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "duplicate Content-Length folded",
			in:   "PUT / HTTP/1.1|content-length: 3|Content-Length: 03, 3||abcGET / HTTP/1.1||",
			want: "PUT / HTTP/1.1|Content-Length: 3|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||abc" +
				"GET / HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "chunked body with extensions and trailers",
			in: "POST /c HTTP/1.1|Host: a|Transfer-Encoding: gzip|Transfer-Encoding: Chunked||" +
				"5;name=\"v;al\"|GET /|" +
				"1A |GET / HTTP/1.1|Host: xx||" +
				"0|X-Forwarded-For: 6.6.6.6|Checksum: abc||" +
				"GET /after HTTP/1.1||",
			want: "POST /c HTTP/1.1|Host: a|Transfer-Encoding: gzip|Transfer-Encoding: Chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"5;name=\"v;al\"|GET /|" +
				"1A |GET / HTTP/1.1|Host: xx||" +
				"0|X-Forwarded-For: 6.6.6.6|Checksum: abc||" +
				"GET /after HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "chunked body without trailers",
			in:   "POST / HTTP/1.1|Transfer-Encoding: chunked||3|abc|0||GET / HTTP/1.1||",
			want: "POST / HTTP/1.1|Transfer-Encoding: chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||3|abc|0||" +
				"GET / HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "LF-only lines normalised to CRLF",
			in:   "GET / HTTP/1.1\nHost: a\nX-Forwarded-For: 1.1.1.1\n\nGET /2 HTTP/1.0\n\n",
			want: "GET / HTTP/1.1|Host: a|X-Forwarded-For: 1.1.1.1, 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET /2 HTTP/1.0|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "empty lines before request line dropped",
			in:   "POST / HTTP/1.1|Content-Length: 1||x|\n|GET / HTTP/1.1||",
			want: "POST / HTTP/1.1|Content-Length: 1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||x" +
				"GET / HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "Expect 100-continue passes through",
			in:   "PUT /u HTTP/1.1|Expect: 100-continue|Content-Length: 2||ok",
			want: "PUT /u HTTP/1.1|Expect: 100-continue|Content-Length: 2|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||ok",
		},
		{
			name:    "websocket upgrade switched, then pass-through",
			answers: "s",
			in: "GET /ws HTTP/1.1|Host: a|Upgrade: websocket|Connection: keep-alive, Upgrade||" +
				"\x81\x05hello GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
			want: "GET /ws HTTP/1.1|Host: a|Upgrade: websocket|Connection: keep-alive, Upgrade|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"\x81\x05hello GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
		},
		{
			name: "bytes after an unanswered upgrade held",
			in:   "GET /ws HTTP/1.1|Upgrade: websocket|Connection: Upgrade||\x81\x05hello",
			want: "GET /ws HTTP/1.1|Upgrade: websocket|Connection: Upgrade|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name:    "more than the limit after an unanswered upgrade rejected",
			max:     64,
			in:      "GET / HTTP/1.1|Upgrade: x||" + strings.Repeat("a", 65),
			want:    "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrAwaitingAnswer,
		},
		{
			name:    "websocket upgrade refused, then a frame rejected, not passed through",
			answers: "r",
			in:      "GET /ws HTTP/1.1|Upgrade: websocket|Connection: Upgrade||\x81\x05hello GET / HTTP/1.1||",
			want:    "GET /ws HTTP/1.1|Upgrade: websocket|Connection: Upgrade|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrBadRequestLine,
		},
		{
			name:    "Connection upgrade alone refused, next request rewritten",
			answers: "r",
			in:      "GET / HTTP/1.1|Connection: upgrade||GET / HTTP/1.1||",
			want: "GET / HTTP/1.1|Connection: upgrade|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET / HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name:    "upgrade ignored by backend, spoofed XFF of next request extended",
			answers: "r",
			in: "GET / HTTP/1.1|Host: a|Upgrade: x||" +
				"GET /next HTTP/1.1|Host: a|X-Forwarded-For: 6.6.6.6|X-Forwarded-Proto: https||",
			want: "GET / HTTP/1.1|Host: a|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET /next HTTP/1.1|Host: a|X-Forwarded-For: 6.6.6.6, 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name:    "upgrade ignored, then another upgrade that happens",
			answers: "rs",
			in: "GET / HTTP/1.1|Upgrade: x||" +
				"GET /ws HTTP/1.1|Upgrade: websocket|Connection: Upgrade|X-Forwarded-For: 6.6.6.6||" +
				"\x82\x80\x01\x02\x03\x04GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
			want: "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET /ws HTTP/1.1|Upgrade: websocket|Connection: Upgrade|X-Forwarded-For: 6.6.6.6, 192.0.2.7|X-Forwarded-Proto: http||" +
				"\x82\x80\x01\x02\x03\x04GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
		},
		{
			name:    "upgrade ignored, empty lines before next request dropped",
			answers: "r",
			in:      "GET / HTTP/1.1|Upgrade: x||\n|GET /n HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
			want: "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET /n HTTP/1.1|X-Forwarded-For: 6.6.6.6, 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			// Lenient backends (Python's http.server splits the request
			// line on any whitespace) read these as requests.
			name:    "upgrade ignored, then a request line led by a space rejected, not passed through",
			answers: "r",
			in:      "GET / HTTP/1.1|Upgrade: x|| GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
			want:    "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrBadRequestLine,
		},
		{
			name:    "upgrade ignored, then a request line split by control bytes rejected, not passed through",
			answers: "r",
			in:      "GET / HTTP/1.1|Upgrade: x||GET\x1f/\x1fHTTP/1.1|X-Forwarded-For: 6.6.6.6||",
			want:    "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrBadRequestLine,
		},
		{
			name:    "upgrade ignored, then a text protocol line rejected",
			answers: "r",
			in:      "GET / HTTP/1.1|Upgrade: irc||NICK guest|USER guest 0 * :G||",
			want:    "GET / HTTP/1.1|Upgrade: irc|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrBadRequestLine,
		},
		{
			name:    "upgrade switched, then empty lines and a frame, all passed through",
			answers: "s",
			in:      "GET / HTTP/1.1|Upgrade: x||||\x81\x00",
			want:    "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||||\x81\x00",
		},
		{
			name:    "h2c upgrade switched, then the HTTP/2 preface passed through",
			answers: "s",
			in:      "GET / HTTP/1.1|Host: a|Connection: Upgrade, HTTP2-Settings|Upgrade: h2c|HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA||PRI * HTTP/2.0||SM||\x00\x00\x00\x04\x00",
			want: "GET / HTTP/1.1|Host: a|Connection: Upgrade, HTTP2-Settings|Upgrade: h2c|HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"PRI * HTTP/2.0||SM||\x00\x00\x00\x04\x00",
		},
		{
			name:    "pipelined requests, then an upgrade that happens",
			answers: "s",
			in:      "GET /1 HTTP/1.1||HEAD /2 HTTP/1.1||GET /ws HTTP/1.1|Upgrade: websocket||GET / HTTP/1.1||",
			want: "GET /1 HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"HEAD /2 HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET /ws HTTP/1.1|Upgrade: websocket|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||GET / HTTP/1.1||",
		},
		{
			name:    "upgrade request body framed before the answer",
			answers: "r",
			in: "POST /up HTTP/1.1|Upgrade: h2c|Content-Length: 44||" +
				"GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||" +
				"GET /n HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
			want: "POST /up HTTP/1.1|Upgrade: h2c|Content-Length: 44|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||" +
				"GET /n HTTP/1.1|X-Forwarded-For: 6.6.6.6, 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name:    "chunked upgrade request body framed before the answer",
			answers: "s",
			in: "POST /up HTTP/1.1|Upgrade: x|Transfer-Encoding: chunked||" +
				"4|GET |0|T: v||\x81\x00GET / HTTP/1.1||",
			want: "POST /up HTTP/1.1|Upgrade: x|Transfer-Encoding: chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"4|GET |0|T: v||\x81\x00GET / HTTP/1.1||",
		},
		{
			name:    "CONNECT established, then pass-through",
			answers: "s",
			in:      "CONNECT db:5432 HTTP/1.1|Host: db:5432||\x00\x01binary\r\n\r\n",
			want:    "CONNECT db:5432 HTTP/1.1|Host: db:5432|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||\x00\x01binary\r\n\r\n",
		},
		{
			name:    "CONNECT established, then TLS ClientHello passed through",
			answers: "s",
			in:      "CONNECT example.com:443 HTTP/1.1|Host: example.com:443||" + tlsHello,
			want:    "CONNECT example.com:443 HTTP/1.1|Host: example.com:443|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" + tlsHello,
		},
		{
			name:    "CONNECT refused, next request rewritten",
			answers: "r",
			in:      "CONNECT a:1 HTTP/1.1|Host: a:1||GET / HTTP/1.1|Host: a|X-Forwarded-For: 6.6.6.6||",
			want: "CONNECT a:1 HTTP/1.1|Host: a:1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET / HTTP/1.1|Host: a|X-Forwarded-For: 6.6.6.6, 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name:    "CONNECT refused, then a TLS ClientHello rejected",
			answers: "r",
			in:      "CONNECT example.com:443 HTTP/1.1||" + tlsHello,
			want:    "CONNECT example.com:443 HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrBadRequestLine,
		},
		{
			name: "head at the limit",
			max:  len(crlfs("GET / HTTP/1.1|Host: a||")),
			in:   "GET / HTTP/1.1|Host: a||",
			want: "GET / HTTP/1.1|Host: a|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name:    "head one byte over the limit",
			max:     len(crlfs("GET / HTTP/1.1|Host: a||")) - 1,
			in:      "GET / HTTP/1.1|Host: a||",
			wantErr: ErrHeaderTooLarge,
		},
		{
			name:    "too-large second head after a good one",
			max:     64,
			in:      "GET / HTTP/1.1||GET / HTTP/1.1|Cookie: " + strings.Repeat("x", 100) + "||",
			want:    "GET / HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrHeaderTooLarge,
		},
		{
			name:    "endless empty lines",
			max:     64,
			in:      strings.Repeat("|", 40),
			wantErr: ErrHeaderTooLarge,
		},
		{
			name:    "too-large trailers",
			max:     64,
			in:      "POST / HTTP/1.1|Transfer-Encoding: chunked||0|T: " + strings.Repeat("x", 100) + "||",
			want:    "POST / HTTP/1.1|Transfer-Encoding: chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||0|T: " + strings.Repeat("x", 61),
			wantErr: ErrHeaderTooLarge,
		},
		{name: "bad CL letters", in: "POST / HTTP/1.1|Content-Length: 1x||", wantErr: ErrBadContentLength},
		{name: "bad CL sign", in: "POST / HTTP/1.1|Content-Length: +1||", wantErr: ErrBadContentLength},
		{name: "bad CL empty", in: "POST / HTTP/1.1|Content-Length: ||", wantErr: ErrBadContentLength},
		{name: "bad CL huge", in: "POST / HTTP/1.1|Content-Length: 1234567890123456789||", wantErr: ErrBadContentLength},
		{name: "conflicting CL lines", in: "POST / HTTP/1.1|Content-Length: 1|Content-Length: 2||", wantErr: ErrBadContentLength},
		{name: "conflicting CL list", in: "POST / HTTP/1.1|Content-Length: 1, 2||", wantErr: ErrBadContentLength},
		{name: "CL and TE", in: "POST / HTTP/1.1|Content-Length: 3|Transfer-Encoding: chunked||", wantErr: ErrAmbiguousLength},
		{name: "TE and CL", in: "POST / HTTP/1.1|Transfer-Encoding: chunked|Content-Length: 3||", wantErr: ErrAmbiguousLength},
		{name: "TE not ending in chunked", in: "POST / HTTP/1.1|Transfer-Encoding: chunked, gzip||", wantErr: ErrBadTransferEncoding},
		{name: "TE chunked twice", in: "POST / HTTP/1.1|Transfer-Encoding: chunked|Transfer-Encoding: chunked||", wantErr: ErrBadTransferEncoding},
		{name: "TE identity", in: "POST / HTTP/1.1|Transfer-Encoding: identity||", wantErr: ErrBadTransferEncoding},
		{name: "TE lookalike", in: "POST / HTTP/1.1|Transfer-Encoding: xchunked||", wantErr: ErrBadTransferEncoding},
		{name: "TE in HTTP/1.0", in: "POST / HTTP/1.0|Transfer-Encoding: chunked||", wantErr: ErrBadTransferEncoding},
		{name: "space before colon", in: "GET / HTTP/1.1|Transfer-Encoding : chunked||", wantErr: ErrBadHeader},
		{name: "obs-fold", in: "GET / HTTP/1.1|X-A: b| c||", wantErr: ErrBadHeader},
		{name: "no colon", in: "GET / HTTP/1.1|Host||", wantErr: ErrBadHeader},
		{name: "bare CR in value", in: "GET / HTTP/1.1|X-A: b\rX-Forwarded-For: 1.1.1.1||", wantErr: ErrBadHeader},
		{name: "NUL in value", in: "GET / HTTP/1.1|X-A: \x00||", wantErr: ErrBadHeader},
		{name: "request line without version", in: "GET /||", wantErr: ErrBadRequestLine},
		{name: "request line double space", in: "GET  / HTTP/1.1||", wantErr: ErrBadRequestLine},
		{name: "request line bad method", in: "G(T / HTTP/1.1||", wantErr: ErrBadRequestLine},
		{name: "request line HTTP/2", in: "PRI * HTTP/2.0||SM||", wantErr: ErrBadRequestLine},
		{name: "request line lower-case version", in: "GET / http/1.1||", wantErr: ErrBadRequestLine},
		{name: "request target not a path (fuzz c09d6310)", in: "0 0 HTTP/1.0||", wantErr: ErrBadRequestLine},
		{name: "asterisk and absolute targets",
			in:   "OPTIONS * HTTP/1.1||GET http://a/b HTTP/1.1||",
			want: "OPTIONS * HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||GET http://a/b HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||"},
		{name: "bare CR before request line", in: "\rGET / HTTP/1.1||", wantErr: ErrBadRequestLine},
		{name: "TLS on a plain port", in: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", wantErr: ErrBadRequestLine},
		{
			name:    "bad chunk size",
			in:      "POST / HTTP/1.1|Transfer-Encoding: chunked||5x|",
			want:    "POST / HTTP/1.1|Transfer-Encoding: chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||5",
			wantErr: ErrBadChunk,
		},
		{
			name:    "missing chunk size",
			in:      "POST / HTTP/1.1|Transfer-Encoding: chunked||;x|",
			want:    "POST / HTTP/1.1|Transfer-Encoding: chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrBadChunk,
		},
		{
			name:    "chunk size overflow",
			in:      "POST / HTTP/1.1|Transfer-Encoding: chunked||10000000000000000|",
			want:    "POST / HTTP/1.1|Transfer-Encoding: chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||1000000000000000",
			wantErr: ErrBadChunk,
		},
		{
			name:    "chunk line with bare LF",
			in:      "POST / HTTP/1.1|Transfer-Encoding: chunked||3\nabc|0||",
			want:    "POST / HTTP/1.1|Transfer-Encoding: chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||3",
			wantErr: ErrBadChunk,
		},
		{
			name:    "chunk data longer than its size",
			in:      "POST / HTTP/1.1|Transfer-Encoding: chunked||3|abcd|0||",
			want:    "POST / HTTP/1.1|Transfer-Encoding: chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||3|abc",
			wantErr: ErrBadChunk,
		},
		{
			name:    "chunk data ended by bare LF",
			in:      "POST / HTTP/1.1|Transfer-Encoding: chunked||3|abc\n0||",
			want:    "POST / HTTP/1.1|Transfer-Encoding: chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||3|abc",
			wantErr: ErrBadChunk,
		},
		{
			name:    "trailer section ended by bare LF",
			in:      "POST / HTTP/1.1|Transfer-Encoding: chunked||0|\nGET / HTTP/1.1||",
			want:    "POST / HTTP/1.1|Transfer-Encoding: chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||0|",
			wantErr: ErrBadChunk,
		},
		{
			name:    "obs-folded trailer",
			in:      "POST / HTTP/1.1|Transfer-Encoding: chunked||0|A: b| c||",
			want:    "POST / HTTP/1.1|Transfer-Encoding: chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||0|A: b|",
			wantErr: ErrBadChunk,
		},
		{
			name:    "long chunk extension",
			in:      "POST / HTTP/1.1|Transfer-Encoding: chunked||1;" + strings.Repeat("e", maxChunkLine) + "|",
			want:    "POST / HTTP/1.1|Transfer-Encoding: chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||1;" + strings.Repeat("e", maxChunkLine-2),
			wantErr: ErrBadChunk,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, proto := tt.client, tt.proto
			if !client.IsValid() {
				client = client4
			}
			if proto == "" {
				proto = "http"
			}
			in, want := []byte(crlfs(tt.in)), crlfs(tt.want)
			for how, pieces := range splits(in) {
				got, err := feedAnswering(New(client, proto, tt.max), pieces, tt.answers)
				if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
					t.Fatalf("%s: Feed error = %v, want %v", how, err, tt.wantErr)
				}
				if diff := cmp.Diff(want, string(got)); diff != "" {
					t.Fatalf("%s: output mismatch (-want +got):\n%s", how, diff)
				}
			}
		})
	}
}

// tlsHello is the start of a TLS 1.3 ClientHello record; its bytes 5 and 9
// are LFs, so a rewriter reading it as HTTP would see lines.
const tlsHello = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\x8b\x1f GET / HTTP/1.1\r\n\r\n"

// TestUpgradeAnswerTiming checks the answer to an upgrade request arriving
// at each point: before the request's body is all sent, while the Rewriter
// waits, or never (the backend closes).
func TestUpgradeAnswerTiming(t *testing.T) {
	const (
		up    = "POST /up HTTP/1.1\r\nUpgrade: x\r\nContent-Length: 4\r\n\r\n"
		upOut = "POST /up HTTP/1.1\r\nUpgrade: x\r\nContent-Length: 4\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
		next  = "GET /n HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
		nextW = "GET /n HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6, 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
	)
	feed := func(t *testing.T, r *Rewriter, dst []byte, p string) []byte {
		t.Helper()
		out, err := r.Feed(dst, []byte(p))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	t.Run("switched before the body ends", func(t *testing.T) {
		r := New(client4, "http", 0)
		out := feed(t, r, nil, up+"ab")
		if !r.Responses().Feed([]byte("HTTP/1.1 101 Switching Protocols\r\n\r\n")) {
			t.Error("101 did not settle the answer")
		}
		out = feed(t, r, out, "cd"+next)
		if r.Waiting() || string(out) != upOut+"abcd"+next {
			t.Fatalf("waiting %v, output %q", r.Waiting(), out)
		}
	})
	t.Run("refused before the body ends", func(t *testing.T) {
		r := New(client4, "http", 0)
		out := feed(t, r, nil, up+"ab")
		if !r.Responses().Feed([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) {
			t.Error("200 did not settle the answer")
		}
		out = feed(t, r, out, "cd"+next)
		if string(out) != upOut+"abcd"+nextW {
			t.Fatalf("output %q", out)
		}
	})
	t.Run("held while waiting, then refused", func(t *testing.T) {
		r := New(client4, "http", 0)
		out := feed(t, r, nil, up+"abcd"+next[:10])
		out = feed(t, r, out, next[10:])
		if !r.Waiting() || string(out) != upOut+"abcd" {
			t.Fatalf("waiting %v, output %q", r.Waiting(), out)
		}
		if out, _ := r.Resume(nil); len(out) != 0 || !r.Waiting() {
			t.Fatalf("Resume before the answer: %q, waiting %v", out, r.Waiting())
		}
		resp := r.Responses()
		in := "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n"
		for i := range len(in) {
			if settled := resp.Feed([]byte(in[i : i+1])); settled != (i == len("HTTP/1.1 426 Upgrade Required\r\n")-1) {
				t.Fatalf("byte %d: settled = %v", i, settled)
			}
		}
		out, err := r.Resume(out)
		if err != nil || r.Waiting() || string(out) != upOut+"abcd"+nextW {
			t.Fatalf("after the answer: %q, %v, waiting %v", out, err, r.Waiting())
		}
	})
	t.Run("backend closes while waiting", func(t *testing.T) {
		r := New(client4, "http", 0)
		out := feed(t, r, nil, up+"abcd\x81\x00\r\n\r\n")
		if !r.Responses().Close() {
			t.Fatal("Close did not settle the answer")
		}
		out, err := r.Resume(out)
		if !errors.Is(err, ErrBadRequestLine) || string(out) != upOut+"abcd" {
			t.Fatalf("after the close: %q, %v; want the frame rejected", out, err)
		}
	})
	t.Run("later upgrades refused once the backend closed", func(t *testing.T) {
		r := New(client4, "http", 0)
		r.Responses().Close()
		out := feed(t, r, nil, up+"abcd"+next)
		if r.Waiting() || string(out) != upOut+"abcd"+nextW {
			t.Fatalf("waiting %v, output %q", r.Waiting(), out)
		}
	})
	t.Run("Resume when not waiting", func(t *testing.T) {
		r := New(client4, "http", 0)
		out, err := r.Resume([]byte("x"))
		if err != nil || string(out) != "x" {
			t.Fatalf("Resume = %q, %v", out, err)
		}
	})
}

func TestInHead(t *testing.T) {
	r := New(client4, "http", 0)
	steps := []struct {
		in     string
		inHead bool
	}{
		{"", false},
		{"\r\n", true},
		{"GET / HTTP/1.1\r\n", true},
		{"Host: a\r\n\r\n", false},
		{"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", false},
		{"c", false},
		{"G", true},
	}
	for _, st := range steps {
		if _, err := r.Feed(nil, []byte(st.in)); err != nil {
			t.Fatal(err)
		}
		if r.InHead() != st.inHead {
			t.Fatalf("after %q: InHead = %v", st.in, r.InHead())
		}
	}
	if n := r.Requests(); n != 2 {
		t.Errorf("Requests() = %d, want 2", n)
	}
}

func TestFeedErrorIsSticky(t *testing.T) {
	r := New(client4, "http", 0)
	if _, err := r.Feed(nil, []byte("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n")); !errors.Is(err, ErrBadContentLength) {
		t.Fatalf("Feed(bad CL) error = %v, want ErrBadContentLength", err)
	}
	out, err := r.Feed([]byte("kept"), []byte("GET / HTTP/1.1\r\n\r\n"))
	if !errors.Is(err, ErrBadContentLength) || string(out) != "kept" {
		t.Fatalf("Feed after error = %q, %v; want \"kept\", ErrBadContentLength", out, err)
	}
}

func TestFeedAppendsToDst(t *testing.T) {
	r := New(client4, "http", 0)
	out, err := r.Feed([]byte("prefix:"), []byte("GET / HTTP/1.1\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := "prefix:GET / HTTP/1.1\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
	if string(out) != want {
		t.Fatalf("Feed = %q, want %q", out, want)
	}
}

// TestFeedLargeBodyNotBuffered checks that body bytes come out as they go in,
// whatever the body's size.
func TestFeedLargeBodyNotBuffered(t *testing.T) {
	r := New(client4, "http", 1024)
	out, err := r.Feed(nil, []byte("POST / HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(out, []byte("\r\n\r\n")) {
		t.Fatalf("head not emitted at once: %q", out)
	}
	chunk := bytes.Repeat([]byte("GET / HTTP/1.1\r\n\r\n"), 1000)
	for sent := 0; sent < 10000000; {
		n := min(len(chunk), 10000000-sent)
		got, err := r.Feed(nil, chunk[:n])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, chunk[:n]) {
			t.Fatalf("body bytes at %d changed", sent)
		}
		sent += n
	}
	got, err := r.Feed(nil, []byte("GET /next HTTP/1.1\r\n\r\n"))
	if err != nil || !bytes.Contains(got, []byte("X-Forwarded-For: 192.0.2.7")) {
		t.Fatalf("request after body = %q, %v; want it rewritten", got, err)
	}
}

// TestFeedUpgradeAllocs checks that an ignored upgrade, with the next
// request line held across calls while the backend answers, costs no
// allocations once the buffers are warm.
func TestFeedUpgradeAllocs(t *testing.T) {
	in := []byte("GET / HTTP/1.1\r\nUpgrade: x\r\n\r\nGET /next HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
	cut := bytes.Index(in, []byte("/next"))
	pieces := [][]byte{in[:cut-2], in[cut-2 : cut], in[cut : cut+3], in[cut+3:]}
	answers := [][]byte{[]byte("HTTP/1.1 200 OK\r\nContent-"), []byte("Length: 2\r\n\r\nok"), []byte("HTTP/1.1 204 No Content\r\n\r\n")}
	r := New(client4, "http", 0)
	resp := r.Responses()
	dst := make([]byte, 0, 1024)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		dst = dst[:0]
		for i, p := range pieces {
			if dst, err = r.Feed(dst, p); err != nil {
				t.Fatal(err)
			}
			if i == 2 {
				resp.Feed(answers[0])
				resp.Feed(answers[1])
				if dst, err = r.Resume(dst); err != nil {
					t.Fatal(err)
				}
			}
		}
		resp.Feed(answers[2])
	})
	if !bytes.Contains(dst, []byte("X-Forwarded-For: 6.6.6.6, 192.0.2.7\r\n")) {
		t.Fatalf("next request not rewritten: %q", dst)
	}
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
}

func TestNewPanicsOnBadProto(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New with proto \"ftp\" did not panic")
		}
	}()
	New(client4, "ftp", 0)
}

func TestNewInvalidClient(t *testing.T) {
	out, err := New(netip.Addr{}, "http", 0).Feed(nil, []byte("GET / HTTP/1.1\r\n\r\n"))
	if err != nil || !bytes.Contains(out, []byte("X-Forwarded-For: unknown\r\n")) {
		t.Fatalf("Feed = %q, %v; want X-Forwarded-For: unknown", out, err)
	}
}

const benchGET = "GET /assets/app.js?v=1234 HTTP/1.1\r\n" +
	"Host: www.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: */*\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Referer: https://www.example.com/\r\n" +
	"Connection: keep-alive\r\n" +
	"\r\n"

func BenchmarkFeed(b *testing.B) {
	in := []byte(benchGET)
	r := New(client4, "http", 0)
	dst := make([]byte, 0, 1024)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = r.Feed(dst[:0], in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFeedSplit feeds the same request in three pieces, so the head is
// carried between calls.
func BenchmarkFeedSplit(b *testing.B) {
	in := []byte(benchGET)
	r := New(client4, "http", 0)
	dst := make([]byte, 0, 1024)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		dst = dst[:0]
		for _, p := range [][]byte{in[:100], in[100:200], in[200:]} {
			if dst, err = r.Feed(dst, p); err != nil {
				b.Fatal(err)
			}
		}
	}
}
