package httpxff

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

var fuzzSeeds = []string{
	"GET / HTTP/1.1|Host: a||",
	"GET / HTTP/1.1|X-Forwarded-For: 1.1.1.1|X-Forwarded-For: 2.2.2.2|X-Forwarded-Proto: https||GET /2 HTTP/1.0||",
	"POST / HTTP/1.1|Content-Length: 18||GET / HTTP/1.1||GET / HTTP/1.1||",
	"POST / HTTP/1.1|Transfer-Encoding: chunked||5;a=b|hello|0|T: v||GET / HTTP/1.1||",
	"GET / HTTP/1.1\nHost: a\n\n",
	"||GET / HTTP/1.1||",
	"GET /ws HTTP/1.1|Upgrade: websocket|Connection: Upgrade||\x81\x00",
	"CONNECT a:1 HTTP/1.1||xx",
	"POST / HTTP/1.1|Content-Length: 1|Transfer-Encoding: chunked||",
	"PUT / HTTP/1.1|Content-Length: 2, 2||ab",
	"GET / HTTP/1.1|Upgrade: x||GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
	"GET / HTTP/1.1|Connection: upgrade||PRI * HTTP/2.0||SM||",
	"CONNECT a:443 HTTP/1.1||\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03",
	"CONNECT a:1 HTTP/1.1||GET / HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
	"POST / HTTP/1.1|Upgrade: h2c|Content-Length: 4||GET |\nGET / HTTP/1.1||",
	"GET / HTTP/1.1|Upgrade: x||GET /" + strings.Repeat("a", 600) + " HTTP/1.1|X-Forwarded-For: 6.6.6.6||",
}

// FuzzFeed checks that Feed never panics, that any way of splitting the
// stream gives the same output and error as feeding it at once, that a stream
// Feed accepts completely is one net/http reads as requests that each carry
// exactly our X-Forwarded-For and X-Forwarded-Proto, and that so does every
// HTTP/1 request net/http can read from any output up to where the protocol
// switched. The backend's answers to CONNECT and upgrade requests are the
// bits of answers, lowest first: 1 switched, 0 refused.
func FuzzFeed(f *testing.F) {
	for i, s := range fuzzSeeds {
		f.Add([]byte(crlfs(s)), uint16(i*7), uint16(i*13), uint16(i))
	}
	f.Fuzz(func(t *testing.T, in []byte, a, b, answers uint16) {
		const max = 512
		whole := New(client4, "https", max)
		want, wantCut, wantErr := feedFuzz(whole, [][]byte{in}, answers)

		i, j := int(a)%(len(in)+1), int(b)%(len(in)+1)
		if i > j {
			i, j = j, i
		}
		// Bytes held while waiting for an answer depend on how they come:
		// all at once, they may be more than the limit.
		held := func(err error) bool { return errors.Is(err, ErrAwaitingAnswer) }
		got, cut, err := feedFuzz(New(client4, "https", max), [][]byte{in[:i], in[i:j], in[j:]}, answers)
		if !held(err) && !held(wantErr) && (!bytes.Equal(got, want) || cut != wantCut || errString(err) != errString(wantErr)) {
			t.Fatalf("split at %d,%d: %q, %d, %v\none-shot: %q, %d, %v", i, j, got, cut, err, want, wantCut, wantErr)
		}
		if len(in) <= 64 {
			var pieces [][]byte
			for k := range in {
				pieces = append(pieces, in[k:k+1])
			}
			got, cut, err := feedFuzz(New(client4, "https", max), pieces, answers)
			if !held(err) && !held(wantErr) && (!bytes.Equal(got, want) || cut != wantCut || errString(err) != errString(wantErr)) {
				t.Fatalf("byte by byte: %q, %d, %v\none-shot: %q, %d, %v", got, cut, err, want, wantCut, wantErr)
			}
		}

		// Output ending with whole messages, all parsed by us, must all be
		// read by net/http. Other output (a message cut short) is read until
		// net/http stops. What follows a switch is not HTTP/1.
		if wantErr != nil {
			return
		}
		complete := len(whole.head) == 0 && !whole.skipCR && whole.state == stHead
		if wantCut >= 0 {
			want, complete = want[:wantCut], true
		}
		br := bufio.NewReader(bytes.NewReader(want))
		for n := 0; ; n++ {
			if _, err := br.Peek(1); err == io.EOF {
				return
			}
			req, err := http.ReadRequest(br)
			var uerr *url.Error
			if err != nil && (strings.Contains(err.Error(), "invalid URI") || errors.As(err, &uerr)) {
				return // net/http parses URLs; we only check their form
			}
			if err != nil || req.ProtoMajor != 1 {
				if !complete {
					return
				}
				t.Fatalf("request %d: net/http cannot read our output: %v\n%q", n, err, want)
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				if !complete {
					return
				}
				t.Fatalf("request %d: net/http cannot read the body: %v\n%q", n, err, want)
			}
			xff, xfp := req.Header["X-Forwarded-For"], req.Header["X-Forwarded-Proto"]
			if len(xff) != 1 || !(xff[0] == "192.0.2.7" || strings.HasSuffix(xff[0], ", 192.0.2.7")) ||
				len(xfp) != 1 || xfp[0] != "https" {
				t.Fatalf("request %d: X-Forwarded-For %q, X-Forwarded-Proto %q\n%q", n, xff, xfp, want)
			}
		}
	})
}

// feedFuzz feeds pieces to r as a proxy does, answering each CONNECT or
// upgrade request r waits for with the next bit of answers. It returns the
// output, where in it the protocol switched (-1 if it did not), and the
// error.
func feedFuzz(r *Rewriter, pieces [][]byte, answers uint16) ([]byte, int, error) {
	var out []byte
	cut := -1
	for _, p := range pieces {
		var err error
		if out, err = r.Feed(out, p); err != nil {
			return out, cut, err
		}
		for r.Waiting() {
			answerAll(r, answers&1 == 1)
			answers >>= 1
			n := len(out)
			if out, err = r.Resume(out); err != nil {
				return out, cut, err
			}
			if r.state == stTunnel && cut < 0 {
				cut = n
			}
		}
	}
	return out, cut, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
