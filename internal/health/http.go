package health

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// HTTPOptions describe an HTTP(S) check.
type HTTPOptions struct {
	Path string // request path; "" is "/"
	Host string // Host header (and TLS SNI when it is a name); "" is the address
	// StatusLo..StatusHi is the range of passing status codes. Both zero
	// is 200..399 (redirects pass); StatusHi zero is StatusLo alone.
	StatusLo, StatusHi int
	Body               string // when set, the body (its first 64 KiB) must contain it
	TLS                bool   // HTTPS: TLS without certificate verification
}

// Limits of the HTTP response reader.
const (
	maxStatusLine = 1 << 10  // one status line, CRLF included
	maxHeaders    = 16 << 10 // all header lines of the response (and of 1xx ones)
	maxBody       = 64 << 10 // body bytes inspected for HTTPOptions.Body
	maxFraming    = 16 << 10 // chunk-size lines and CRLFs of a chunked body
	maxInterim    = 4        // 1xx responses skipped before the final one
	readBuf       = 4 << 10  // read-ahead of the reader
)

// Errors of the HTTP response reader; their text is the check's reason.
var (
	errStatusLine  = errors.New("bad status line")
	errLongStatus  = errors.New("status line too long")
	errBadHeader   = errors.New("malformed header")
	errBigHeaders  = errors.New("headers too large")
	errBadLength   = errors.New("bad content-length")
	errBadChunk    = errors.New("bad chunked body")
	errInterim     = errors.New("too many 1xx responses")
	errEmptyReply  = errors.New("empty reply")
	errLongLine    = errors.New("line too long")
	errBadEncoding = errors.New("unsupported transfer-encoding")
)

// HTTP is a Probe that sends one HTTP/1.1 GET (Connection: close) to addr
// and checks the response's status and, with o.Body, its body. It reads
// the response itself, within bounds: a status line up to 1 KiB, headers
// up to 16 KiB, the body's first 64 KiB (Content-Length, chunked or until
// close), and only when o.Body is set. With o.TLS it speaks HTTPS, without
// verifying the certificate, with SNI o.Host when that is a name.
func HTTP(addr netip.AddrPort, o HTTPOptions) Probe {
	if o.Path == "" {
		o.Path = "/"
	}
	if o.Host == "" {
		o.Host = addr.String()
		if (o.TLS && addr.Port() == 443) || (!o.TLS && addr.Port() == 80) {
			o.Host = addr.Addr().String()
			if addr.Addr().Is6() {
				o.Host = "[" + o.Host + "]"
			}
		}
	}
	if o.StatusLo == 0 && o.StatusHi == 0 {
		o.StatusLo, o.StatusHi = 200, 399
	} else if o.StatusHi == 0 {
		o.StatusHi = o.StatusLo
	}
	var bad string
	switch {
	case !validToken(o.Path) || o.Path[0] != '/' && o.Path != "*":
		bad = "bad path"
	case !validToken(o.Host):
		bad = "bad host"
	}
	req := []byte("GET " + o.Path + " HTTP/1.1\r\nHost: " + o.Host +
		"\r\nUser-Agent: nib-health\r\nAccept: */*\r\nConnection: close\r\n\r\n")
	var tc *tls.Config
	if o.TLS {
		tc = &tls.Config{InsecureSkipVerify: true, ServerName: sniName(o.Host)}
	}
	return func(ctx context.Context) Result {
		if bad != "" {
			return Result{Reason: bad}
		}
		start := time.Now()
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr.String())
		if err != nil {
			return fail(ctx, start, err)
		}
		defer conn.Close()
		stop := bindDeadline(ctx, conn)
		defer stop()
		if tc != nil {
			tconn := tls.Client(conn, tc)
			if err := tconn.HandshakeContext(ctx); err != nil {
				r := fail(ctx, start, err)
				if r.Reason != "timeout" && r.Reason != "cancelled" && !strings.HasPrefix(r.Reason, "tls") {
					r.Reason = "tls: " + r.Reason
				}
				return r
			}
			conn = tconn
		}
		if _, err := conn.Write(req); err != nil {
			return fail(ctx, start, err)
		}
		status, found, err := readHTTPResponse(conn, o.Body)
		lat := time.Since(start)
		switch {
		case status == 0:
			return Result{Reason: reasonOf(ctx, err), Latency: lat}
		case status < o.StatusLo || status > o.StatusHi:
			return Result{Reason: "http " + strconv.Itoa(status), Latency: lat}
		case o.Body != "" && !found:
			reason := fmt.Sprintf("body lacks %q", o.Body)
			if err != nil {
				reason += " (" + reasonOf(ctx, err) + ")"
			}
			return Result{Reason: reason, Latency: lat}
		}
		return Result{OK: true, Reason: "http " + strconv.Itoa(status), Latency: lat}
	}
}

// validToken reports whether s is non-empty and fit for a request line or
// header: printable ASCII without spaces.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// sniName is the TLS server name for a Host header: the name without its
// port, or "" for an address.
func sniName(host string) string {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if _, err := netip.ParseAddr(h); err == nil || h == "" {
		return ""
	}
	return h
}

// readHTTPResponse reads a response from r: the final status code (1xx
// interim responses are skipped), and whether the body contains want (want
// "": the body is not read, found is false). err is set when the response
// is malformed or cut short; status is then 0 when no status was read,
// else found tells about the body as far as read. It reads at most the
// package's limits of r (plus read-ahead), and a status it returns is
// within 100..599.
func readHTTPResponse(r io.Reader, want string) (status int, found bool, err error) {
	br := bufio.NewReaderSize(r, readBuf)
	headerBudget := maxHeaders
	var h respHeader
	for interim := 0; ; interim++ {
		line, err := readLine(br, maxStatusLine)
		if err != nil {
			if err == errLongLine {
				err = errLongStatus
			} else if err == io.EOF {
				err = errEmptyReply
			}
			return 0, false, err
		}
		code, ok := parseStatusLine(line)
		if !ok {
			return 0, false, errStatusLine
		}
		h, err = readHeaders(br, &headerBudget)
		if err != nil {
			return 0, false, err
		}
		if code >= 200 || code == 101 {
			status = code
			break
		}
		if interim == maxInterim {
			return 0, false, errInterim
		}
	}
	if want == "" || status < 200 || status == 204 || status == 304 {
		return status, false, nil
	}
	body := make([]byte, 0, 4<<10)
	switch {
	case h.unknownTE:
		return status, false, errBadEncoding
	case h.chunked:
		body, err = readChunked(br, body)
	case h.length >= 0:
		body, err = readUpTo(br, body, h.length)
	default:
		body, err = readUpTo(br, body, maxBody)
		if err == io.ErrUnexpectedEOF {
			err = nil // the body ends at the close
		}
	}
	return status, bytes.Contains(body, []byte(want)), err
}

// respHeader is what the reader needs of the headers.
type respHeader struct {
	length  int64 // Content-Length, -1 when absent
	chunked bool
	// unknownTE: a transfer coding other than chunked last, whose body we
	// cannot delimit.
	unknownTE bool
}

// readLine reads one line ending in LF, of at most max bytes (LF
// included), and returns it without its CRLF or LF. A line that ends
// without an LF is io.EOF (nothing read) or io.ErrUnexpectedEOF.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max {
			return nil, errLongLine
		}
		line = append(line, frag...)
		if err == nil {
			break
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// parseStatusLine parses "HTTP/1.x SSS reason".
func parseStatusLine(line []byte) (int, bool) {
	s := string(line)
	if !strings.HasPrefix(s, "HTTP/") {
		return 0, false
	}
	sp := strings.IndexByte(s, ' ')
	if sp < 0 || len(s) < sp+4 || len(s) > sp+4 && s[sp+4] != ' ' {
		return 0, false
	}
	code := 0
	for _, c := range []byte(s[sp+1 : sp+4]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 || code > 599 {
		return 0, false
	}
	return code, true
}

// readHeaders reads header lines up to the empty line, spending budget.
func readHeaders(br *bufio.Reader, budget *int) (respHeader, error) {
	h := respHeader{length: -1}
	for {
		line, err := readLine(br, *budget)
		if err == errLongLine {
			return h, errBigHeaders
		}
		if err != nil {
			return h, err
		}
		*budget -= len(line) + 2
		if *budget < 0 {
			return h, errBigHeaders
		}
		if len(line) == 0 {
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // obsolete line folding: a continuation we need not
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return h, errBadHeader
		}
		name := string(bytes.TrimSpace(line[:colon]))
		value := string(bytes.TrimSpace(line[colon+1:]))
		switch {
		case strings.EqualFold(name, "Content-Length"):
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 || value[0] == '+' || h.length >= 0 && h.length != n {
				return h, errBadLength
			}
			h.length = n
		case strings.EqualFold(name, "Transfer-Encoding"):
			codings := strings.Split(value, ",")
			last := strings.TrimSpace(codings[len(codings)-1])
			h.chunked = strings.EqualFold(last, "chunked")
			h.unknownTE = !h.chunked
		}
	}
}

// readUpTo appends up to n bytes of the body, at most maxBody in all.
// Fewer than n is io.ErrUnexpectedEOF (or the reader's error).
func readUpTo(br *bufio.Reader, body []byte, n int64) ([]byte, error) {
	if room := int64(maxBody - len(body)); n > room {
		n = room
	}
	for n > 0 {
		if len(body) == cap(body) {
			body = append(body, 0)[:len(body)]
		}
		m := int64(cap(body) - len(body))
		if m > n {
			m = n
		}
		k, err := br.Read(body[len(body) : len(body)+int(m)])
		body = body[:len(body)+k]
		n -= int64(k)
		if err == io.EOF {
			return body, io.ErrUnexpectedEOF
		}
		if err != nil {
			return body, err
		}
	}
	return body, nil
}

// readChunked appends the chunked body's data, up to maxBody, spending at
// most maxFraming bytes on chunk-size lines and CRLFs.
func readChunked(br *bufio.Reader, body []byte) ([]byte, error) {
	framing := maxFraming
	for len(body) < maxBody {
		line, err := readLine(br, framing)
		if err == errLongLine {
			return body, errBadChunk
		}
		if err != nil {
			return body, err
		}
		framing -= len(line) + 2
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || len(line) > 16 {
			return body, errBadChunk
		}
		size, err := strconv.ParseUint(string(line), 16, 64)
		if err != nil {
			return body, errBadChunk
		}
		if size == 0 {
			return body, nil // trailers are of no interest
		}
		if size > maxBody {
			size = maxBody
		}
		before := len(body)
		body, err = readUpTo(br, body, int64(size))
		if err != nil {
			return body, err
		}
		if len(body)-before < int(size) {
			return body, nil // maxBody reached
		}
		// The chunk's CRLF.
		line, err = readLine(br, min(framing, 2))
		if err != nil || len(line) != 0 {
			if err == nil || err == errLongLine {
				err = errBadChunk
			}
			return body, err
		}
		framing -= 2
	}
	return body, nil
}
