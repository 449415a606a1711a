package health

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// parseHTTPResponse is readHTTPResponse of the response b.
func parseHTTPResponse(b []byte, want string) (status int, found bool, err error) {
	return readHTTPResponse(bytes.NewReader(b), want)
}

func TestParseHTTPResponse(t *testing.T) {
	big := strings.Repeat("x", 70<<10)
	tests := []struct {
		name    string
		resp    string
		want    string
		status  int
		found   bool
		wantErr error // nil: no error
	}{
		{"200 no body check", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "", 200, false, nil},
		{"no reason phrase", "HTTP/1.1 204\r\n\r\n", "", 204, false, nil},
		{"LF only", "HTTP/1.0 200 OK\nContent-Length: 2\n\nok", "ok", 200, true, nil},
		{"body found", "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nstatus: ok!", "ok", 200, true, nil},
		{"body lacks", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfail", "ok", 200, false, nil},
		{"content-length cuts", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nnook", "ok", 200, false, nil},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", "ok", 200, true, io.ErrUnexpectedEOF},
		{"close-delimited", "HTTP/1.1 200 OK\r\n\r\nall ok", "ok", 200, true, nil},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\nd ok\r\n0\r\n\r\n", "d ok", 200, true, nil},
		{"chunked across chunks", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n", "ok", 200, true, nil},
		{"chunked no CRLF after data", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokxx\r\n0\r\n\r\n", "ok", 200, true, errBadChunk},
		{"chunked bad size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n", "ok", 200, false, errBadChunk},
		{"transfer-encoding gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", "ok", 200, false, errBadEncoding},
		{"503", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nok", "ok", 503, true, nil},
		{"301", "HTTP/1.1 301 Moved\r\nLocation: /x\r\n\r\n", "", 301, false, nil},
		{"interim 100", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "ok", 200, true, nil},
		{"too many interim", strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 6) + "HTTP/1.1 200 OK\r\n\r\n", "", 0, false, errInterim},
		{"304 has no body", "HTTP/1.1 304 Not Modified\r\n\r\nok", "ok", 304, false, nil},
		{"body beyond 64 KiB not seen", "HTTP/1.1 200 OK\r\n\r\n" + big + "ok", "ok", 200, false, nil},
		{"body within 64 KiB", "HTTP/1.1 200 OK\r\n\r\n" + big[:60<<10] + "ok", "ok", 200, true, nil},
		{"empty", "", "", 0, false, errEmptyReply},
		{"cut status line", "HTTP/1.1 200", "", 0, false, io.ErrUnexpectedEOF},
		{"cut headers", "HTTP/1.1 200 OK\r\nServer: x", "", 0, false, io.ErrUnexpectedEOF},
		{"not http", "SSH-2.0-OpenSSH\r\n", "", 0, false, errStatusLine},
		{"status 99", "HTTP/1.1 099 x\r\n\r\n", "", 0, false, errStatusLine},
		{"status 600", "HTTP/1.1 600 x\r\n\r\n", "", 0, false, errStatusLine},
		{"status 4 digits", "HTTP/1.1 2000 x\r\n\r\n", "", 0, false, errStatusLine},
		{"status letters", "HTTP/1.1 2x0 x\r\n\r\n", "", 0, false, errStatusLine},
		{"long status line", "HTTP/1.1 200 " + strings.Repeat("a", 2000) + "\r\n\r\n", "", 0, false, errLongStatus},
		{"huge header", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 17<<10) + "\r\n\r\n", "", 0, false, errBigHeaders},
		{"many headers", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 600) + "\r\n", "", 0, false, errBigHeaders},
		{"header without colon", "HTTP/1.1 200 OK\r\nbogus\r\n\r\n", "", 0, false, errBadHeader},
		{"folded header", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", "", 200, false, nil},
		{"bad content-length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "", 0, false, errBadLength},
		{"conflicting content-length", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "", 0, false, errBadLength},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, found, err := parseHTTPResponse([]byte(tc.resp), tc.want)
			if status != tc.status || found != tc.found || err != tc.wantErr {
				t.Errorf("got %d %v %v, want %d %v %v", status, found, err, tc.status, tc.found, tc.wantErr)
			}
		})
	}
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// maxRead bounds what readHTTPResponse reads: status lines (the final and
// the interim ones), headers, body, chunk framing, and the read-ahead.
const maxRead = (maxInterim+1)*maxStatusLine + maxHeaders + maxBody + maxFraming + readBuf

func FuzzParseHTTPResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), "ok", []byte(nil))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "b", []byte(nil))
	f.Add([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 503 x\r\n\r\nbody"), "", []byte(nil))
	f.Add([]byte("HTTP/1.1 301 Moved\r\nLocation: /\r\nContent-Length: 0\r\n\r\n"), "x", []byte(nil))
	f.Add([]byte("HTTP/1.1 200\nX: y\n z\n\nok"), "ok", []byte(nil))
	// Endless streams: headers, chunks, a close-delimited body, 1xx.
	f.Add([]byte("HTTP/1.1 200 OK\r\n"), "", []byte("X: y\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), "z", []byte("1\r\nx\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\n\r\n"), "z", []byte("x"))
	f.Add([]byte(""), "", []byte("HTTP/1.1 100 Continue\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte, want string, fill []byte) {
		// Unbounded input: b, then fill repeated forever, which a reader
		// without bounds would read forever.
		if len(fill) == 0 {
			fill = []byte("A\r\n")
		}
		cr := &countingReader{r: io.MultiReader(bytes.NewReader(b), &endless{fill: fill})}
		status, found, err := readHTTPResponse(cr, want)
		if cr.n > maxRead+len(b) {
			t.Fatalf("read %d bytes", cr.n)
		}
		if status != 0 && (status < 100 || status > 599) {
			t.Fatalf("status %d", status)
		}
		if status == 0 && (found || err == nil) {
			t.Fatalf("no status, found %v, err %v", found, err)
		}
		if found && want == "" {
			t.Fatal("found nothing")
		}
		// The bounded input alone.
		status, found, err = parseHTTPResponse(b, want)
		if status != 0 && (status < 100 || status > 599) {
			t.Fatalf("status %d", status)
		}
		if status == 0 && (found || err == nil) {
			t.Fatalf("no status, found %v, err %v", found, err)
		}
		// (A chunked body may split want, but its bytes come from b.)
		for i := 0; found && i < len(want); i++ {
			if bytes.IndexByte(b, want[i]) < 0 {
				t.Fatalf("found %q, not in the input", want)
			}
		}
	})
}

// endless reads as fill repeated forever.
type endless struct {
	fill []byte
	off  int
}

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = e.fill[e.off]
		e.off = (e.off + 1) % len(e.fill)
	}
	return len(p), nil
}
