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

// feedChunks feeds in to a new Rewriter in the given pieces.
func feedChunks(r *Rewriter, pieces [][]byte) ([]byte, error) {
	var out []byte
	for _, p := range pieces {
		var err error
		if out, err = r.Feed(out, p); err != nil {
			return out, err
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
			name: "websocket upgrade, then pass-through",
			in: "GET /ws HTTP/1.1|Host: a|Upgrade: websocket|Connection: keep-alive, Upgrade||" +
				"\x81\x05hello GET / HTTP/1.1||",
			want: "GET /ws HTTP/1.1|Host: a|Upgrade: websocket|Connection: keep-alive, Upgrade|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"\x81\x05hello GET / HTTP/1.1||",
		},
		{
			name: "Connection upgrade alone ignored, next request rewritten",
			in:   "GET / HTTP/1.1|Connection: upgrade||GET / HTTP/1.1||",
			want: "GET / HTTP/1.1|Connection: upgrade|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET / HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "upgrade ignored by backend, spoofed XFF of next request extended",
			in: "GET / HTTP/1.1|Host: a|Upgrade: x||" +
				"GET /next HTTP/1.1|Host: a|X-Forwarded-For: 6.6.6.6|X-Forwarded-Proto: https||",
			want: "GET / HTTP/1.1|Host: a|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET /next HTTP/1.1|Host: a|X-Forwarded-For: 6.6.6.6, 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "upgrade ignored, then another upgrade that happens",
			in: "GET / HTTP/1.1|Upgrade: x||" +
				"GET /ws HTTP/1.1|Upgrade: websocket|Connection: Upgrade|X-Forwarded-For: 6.6.6.6||" +
				"\x82\x80\x01\x02\x03\x04GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
			want: "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET /ws HTTP/1.1|Upgrade: websocket|Connection: Upgrade|X-Forwarded-For: 6.6.6.6, 192.0.2.7|X-Forwarded-Proto: http||" +
				"\x82\x80\x01\x02\x03\x04GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
		},
		{
			name: "upgrade ignored, empty lines before next request dropped",
			in:   "GET / HTTP/1.1|Upgrade: x||\n|GET /n HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
			want: "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET /n HTTP/1.1|X-Forwarded-For: 6.6.6.6, 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "upgrade, then empty lines and a frame, all passed through",
			in:   "GET / HTTP/1.1|Upgrade: x||||\x81\x00",
			want: "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||||\x81\x00",
		},
		{
			name: "upgrade, then HTTP/2 prior-knowledge preface passed through",
			in:   "GET / HTTP/1.1|Host: a|Connection: Upgrade, HTTP2-Settings|Upgrade: h2c|HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA||PRI * HTTP/2.0||SM||\x00\x00\x00\x04\x00",
			want: "GET / HTTP/1.1|Host: a|Connection: Upgrade, HTTP2-Settings|Upgrade: h2c|HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"PRI * HTTP/2.0||SM||\x00\x00\x00\x04\x00",
		},
		{
			name: "upgrade, then a text protocol line passed through",
			in:   "GET / HTTP/1.1|Upgrade: irc||NICK guest|USER guest 0 * :G|",
			want: "GET / HTTP/1.1|Upgrade: irc|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||NICK guest|USER guest 0 * :G|",
		},
		{
			name: "upgrade, then a token-started binary message passed through",
			max:  64,
			in:   "GET / HTTP/1.1|Upgrade: x||" + "A\x00\x00\x10" + strings.Repeat("a", 100) + "|GET / HTTP/1.1||",
			want: "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" + "A\x00\x00\x10" + strings.Repeat("a", 100) + "|GET / HTTP/1.1||",
		},
		{
			name:    "upgrade, then text without a line end up to the limit rejected",
			max:     64,
			in:      "GET / HTTP/1.1|Upgrade: x||" + strings.Repeat("a", 64) + "|GET / HTTP/1.1||",
			want:    "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrHeaderTooLarge,
		},
		{
			name: "upgrade, then a request head of exactly the limit parsed",
			max:  64,
			in:   "GET / HTTP/1.1|Upgrade: x||" + "GET /" + strings.Repeat("a", 64-len(crlfs("GET / HTTP/1.1||"))) + " HTTP/1.1||",
			want: "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET /" + strings.Repeat("a", 64-len(crlfs("GET / HTTP/1.1||"))) + " HTTP/1.1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name:    "upgrade, then a request line of exactly the limit taken as HTTP, head too large",
			max:     64,
			in:      "GET / HTTP/1.1|Upgrade: x||" + "GET /" + strings.Repeat("a", 64-len(crlfs("GET / HTTP/1.1|"))) + " HTTP/1.1||",
			want:    "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrHeaderTooLarge,
		},
		{
			// A backend with a larger limit would read it, spoofed XFF and all.
			name:    "upgrade, then a request line over the limit rejected, not passed through",
			max:     64,
			in:      "GET / HTTP/1.1|Upgrade: x||" + "GET /" + strings.Repeat("a", 65-len(crlfs("GET / HTTP/1.1|"))) + " HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
			want:    "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrHeaderTooLarge,
		},
		{
			name:    "upgrade, then a lower-case version rejected, not passed through",
			in:      "GET / HTTP/1.1|Upgrade: x||GET / http/1.1|X-Forwarded-For: 6.6.6.6||",
			want:    "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrBadRequestLine,
		},
		{
			name:    "upgrade, then a malformed HTTP/1 request line rejected, not passed through",
			in:      "GET / HTTP/1.1|Upgrade: x||GET  / HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
			want:    "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrBadRequestLine,
		},
		{
			name:    "upgrade, then a bare CR before a request line rejected",
			in:      "GET / HTTP/1.1|Upgrade: x||\rGET / HTTP/1.1||",
			want:    "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrBadRequestLine,
		},
		{
			name:    "upgrade, then a bad head after a good request line rejected",
			in:      "GET / HTTP/1.1|Upgrade: x||GET / HTTP/1.1|X-A: \x00||",
			want:    "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrBadHeader,
		},
		{
			name:    "upgrade, then endless empty lines rejected",
			max:     64,
			in:      "GET / HTTP/1.1|Upgrade: x||" + strings.Repeat("|", 40),
			want:    "GET / HTTP/1.1|Upgrade: x|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||",
			wantErr: ErrHeaderTooLarge,
		},
		{
			name: "upgrade request body framed before deciding",
			in: "POST /up HTTP/1.1|Upgrade: h2c|Content-Length: 44||" +
				"GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||" +
				"GET /n HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
			want: "POST /up HTTP/1.1|Upgrade: h2c|Content-Length: 44|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||" +
				"GET /n HTTP/1.1|X-Forwarded-For: 6.6.6.6, 192.0.2.7|X-Forwarded-Proto: http||",
		},
		{
			name: "chunked upgrade request body framed before deciding",
			in: "POST /up HTTP/1.1|Upgrade: x|Transfer-Encoding: chunked||" +
				"4|GET |0|T: v||\x81\x00GET / HTTP/1.1||",
			want: "POST /up HTTP/1.1|Upgrade: x|Transfer-Encoding: chunked|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"4|GET |0|T: v||\x81\x00GET / HTTP/1.1||",
		},
		{
			name: "CONNECT, then pass-through",
			in:   "CONNECT db:5432 HTTP/1.1|Host: db:5432||\x00\x01binary\r\n\r\n",
			want: "CONNECT db:5432 HTTP/1.1|Host: db:5432|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||\x00\x01binary\r\n\r\n",
		},
		{
			name: "CONNECT, then TLS ClientHello passed through",
			in:   "CONNECT example.com:443 HTTP/1.1|Host: example.com:443||" + tlsHello,
			want: "CONNECT example.com:443 HTTP/1.1|Host: example.com:443|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" + tlsHello,
		},
		{
			name: "CONNECT refused, next request rewritten",
			in:   "CONNECT a:1 HTTP/1.1|Host: a:1||GET / HTTP/1.1|Host: a|X-Forwarded-For: 6.6.6.6||",
			want: "CONNECT a:1 HTTP/1.1|Host: a:1|X-Forwarded-For: 192.0.2.7|X-Forwarded-Proto: http||" +
				"GET / HTTP/1.1|Host: a|X-Forwarded-For: 6.6.6.6, 192.0.2.7|X-Forwarded-Proto: http||",
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
				got, err := feedChunks(New(client, proto, tt.max), pieces)
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

// TestFeedAfterUpgradeSplits checks the decision after an upgrade with
// chosen cuts: the head ends in one piece and the next bytes arrive alone, or
// with the head's empty line, or in pieces of the first line.
func TestFeedAfterUpgradeSplits(t *testing.T) {
	const (
		up     = "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
		upOut  = "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
		next   = "GET /n HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
		nextRw = "GET /n HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6, 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
	)
	tests := []struct {
		name   string
		pieces []string
		want   string
	}{
		{"frame after a split head", []string{up[:20], up[20 : len(up)-1], up[len(up)-1:], "\x88\x80", "GET / HTTP/1.1\r\n\r\n"}, upOut + "\x88\x80GET / HTTP/1.1\r\n\r\n"},
		{"frame with the empty line", []string{up[:len(up)-2], "\r\n\x81", "\x05hello"}, upOut + "\x81\x05hello"},
		{"empty lines, then a frame", []string{up, "\r", "\n\n", "\x81\x00"}, upOut + "\r\n\n\x81\x00"},
		{"TLS after held empty lines", []string{up, "\r\n", tlsHello}, upOut + "\r\n" + tlsHello},
		{"request in pieces", []string{up, "G", "ET /n HT", "TP/1.1\r", "\nX-Forwarded-For: 6.6.6.6\r\n\r\n"}, upOut + nextRw},
		{"request after held empty lines", []string{up, "\r\n", "\r\nGET", next[3:]}, upOut + nextRw},
		{"preface in pieces", []string{up, "PRI * HTTP/2.0\r", "\n\r\nSM\r\n\r\n"}, upOut + "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pieces [][]byte
			for _, p := range tt.pieces {
				pieces = append(pieces, []byte(p))
			}
			got, err := feedChunks(New(client4, "http", 0), pieces)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Fatalf("output mismatch (-want +got):\n%s", diff)
			}
		})
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
// request line held across calls, costs no allocations once the buffers are
// warm.
func TestFeedUpgradeAllocs(t *testing.T) {
	in := []byte("GET / HTTP/1.1\r\nUpgrade: x\r\n\r\nGET /next HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
	cut := bytes.Index(in, []byte("/next"))
	pieces := [][]byte{in[:cut-2], in[cut-2 : cut], in[cut : cut+3], in[cut+3:]}
	r := New(client4, "http", 0)
	dst := make([]byte, 0, 1024)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		dst = dst[:0]
		for _, p := range pieces {
			if dst, err = r.Feed(dst, p); err != nil {
				t.Fatal(err)
			}
		}
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
