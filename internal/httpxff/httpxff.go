package httpxff

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
)

// Errors returned by [Rewriter.Feed]. They are wrapped with details; test
// them with errors.Is. Each one means the proxy should answer 400 Bad Request
// (431 for ErrHeaderTooLarge fits too) and close the connection.
var (
	ErrHeaderTooLarge      = errors.New("request head too large")
	ErrBadRequestLine      = errors.New("malformed request line")
	ErrBadHeader           = errors.New("malformed header field")
	ErrBadContentLength    = errors.New("invalid content-length")
	ErrBadTransferEncoding = errors.New("unsupported transfer-encoding")
	ErrAmbiguousLength     = errors.New("both content-length and transfer-encoding")
	ErrBadChunk            = errors.New("malformed chunked body")
)

// DefaultMaxHeader is the head size limit used when New is given none.
const DefaultMaxHeader = 64 << 10

const (
	// maxChunkLine bounds a chunk-size line with its extensions, as Go's
	// net/http does.
	maxChunkLine = 4096
	// maxBodyLen bounds Content-Length and chunk sizes (2^62, far above
	// anything real, far below overflow).
	maxBodyLen = 1 << 62
	// keepBuf is the capacity above which scratch buffers are dropped after
	// use, so that idle connections stay small.
	keepBuf = 4096
)

type state uint8

const (
	stHead         state = iota // before or inside a request head
	stBody                      // Content-Length body: r.n bytes left
	stChunkSize                 // hex digits of a chunk size
	stChunkBWS                  // whitespace after the chunk size
	stChunkExt                  // chunk extensions, up to CR
	stChunkSizeLF               // CR seen at the end of a chunk-size line
	stChunkData                 // chunk data: r.n bytes left
	stChunkDataCR               // CR expected after chunk data
	stChunkDataLF               // LF expected after chunk data
	stTrailerStart              // start of a trailer line or of the final CRLF
	stTrailerName               // trailer field name
	stTrailerValue              // trailer field value, up to CR
	stTrailerLF                 // CR seen at the end of a trailer line
	stTrailerEndLF              // CR seen on the empty line ending the message
	stMaybeTunnel               // after CONNECT or upgrade: HTTP/1 or not?
	stTunnel                    // the protocol switched: pass everything through
)

// Rewriter rewrites the request stream of one client connection. It is not
// safe for concurrent use; a connection's reader owns it.
type Rewriter struct {
	client string // X-Forwarded-For element naming the client
	tail   string // "\r\nX-Forwarded-Proto: <proto>\r\n\r\n"
	max    int

	state   state
	n       uint64 // body or chunk bytes left; chunk size being parsed
	count   int    // bytes in the current chunk line or trailer section
	digits  int    // hex digits seen in the current chunk size
	skipped int    // empty lines' bytes skipped before the request line
	skipCR  bool   // a CR of an empty line before the request line was seen
	upgrade bool   // the current message is a CONNECT or asks for an upgrade
	pre     int    // stMaybeTunnel: CR and LF bytes seen before the first line
	head    []byte // incomplete request head carried between Feed calls
	peek    []byte // stMaybeTunnel: start of the first line after an upgrade
	xff     []byte // scratch: the client's X-Forwarded-For values
	err     error  // sticky error
}

// New returns a Rewriter for a connection from clientIP. proto is the scheme
// the client used, "http" or "https"; any other value panics. maxHeader
// bounds a request head (request line, fields, empty line, and any empty
// lines before it); zero or less means DefaultMaxHeader.
//
// An IPv4-mapped IPv6 address is written as plain IPv4, an IPv6 address
// without brackets or zone, and an invalid address as "unknown".
func New(clientIP netip.Addr, proto string, maxHeader int) *Rewriter {
	if proto != "http" && proto != "https" {
		panic(fmt.Sprintf("httpxff.New: proto %q is neither http nor https", proto))
	}
	if maxHeader <= 0 {
		maxHeader = DefaultMaxHeader
	}
	client := "unknown"
	if clientIP.IsValid() {
		client = clientIP.Unmap().WithZone("").String()
	}
	return &Rewriter{
		client: client,
		tail:   "\r\nX-Forwarded-Proto: " + proto + "\r\n\r\n",
		max:    maxHeader,
	}
}

// Feed consumes bytes p read from the client and appends to dst the bytes to
// send to the backend; it returns the extended dst. Feed holds no reference
// to p. It may be called with any split of the stream; the concatenated
// output is the same.
//
// On error, the returned slice holds the output for the input before the
// offending message element (a bad request head contributes nothing), and
// every later call returns the same error.
func (r *Rewriter) Feed(dst, p []byte) ([]byte, error) {
	if r.err != nil {
		return dst, r.err
	}
	for len(p) > 0 {
		switch r.state {
		case stTunnel:
			return append(dst, p...), nil
		case stMaybeTunnel:
			var err error
			dst, p, err = r.feedMaybeTunnel(dst, p)
			if err != nil {
				return dst, r.fail(err)
			}
		case stHead:
			var err error
			dst, p, err = r.feedHead(dst, p)
			if err != nil {
				return dst, r.fail(err)
			}
		case stBody, stChunkData:
			k := uint64(len(p))
			if k > r.n {
				k = r.n
			}
			dst = append(dst, p[:k]...)
			p = p[k:]
			r.n -= k
			if r.n == 0 {
				if r.state == stBody {
					r.endMessage()
				} else {
					r.state = stChunkDataCR
				}
			}
		default:
			i, err := r.framing(p)
			dst = append(dst, p[:i]...)
			p = p[i:]
			if err != nil {
				return dst, r.fail(err)
			}
		}
	}
	return dst, nil
}

func (r *Rewriter) fail(err error) error {
	r.err = err
	r.head, r.xff, r.peek = nil, nil, nil
	return err
}

// endMessage moves on after the end of a request message: to the next
// request head, or, after a CONNECT or upgrade request, to finding out
// whether the protocol switched.
func (r *Rewriter) endMessage() {
	if r.upgrade {
		r.state, r.upgrade, r.pre = stMaybeTunnel, false, 0
		return
	}
	r.state = stHead
}

// feedMaybeTunnel handles the bytes after a CONNECT or upgrade request. The
// backend's answer decides whether the protocol switched, and the rewriter
// does not see it; but a client that saw a 101 (or 2xx to CONNECT) sends the
// new protocol, and one that did not sends its next HTTP/1 request. So the
// start of the first line is held, up to r.max bytes, until [sniff] can tell
// which: on HTTP, the held bytes go through the request head parser and p is
// returned for the caller to go on with in stHead; otherwise everything is
// passed through from here on.
func (r *Rewriter) feedMaybeTunnel(dst, p []byte) ([]byte, []byte, error) {
	if len(r.peek) == 0 {
		switch r.sniff(p, 0) {
		case sniffTunnel:
			r.state = stTunnel
			return append(dst, p...), nil, nil
		case sniffHTTP:
			r.state = stHead
			return dst, p, nil
		}
		// sniffMore: p is shorter than r.max.
		r.peek = append(r.peek, p...)
		return dst, nil, nil
	}
	old := len(r.peek)
	r.peek = append(r.peek, p[:min(len(p), r.max-old)]...)
	v := r.sniff(r.peek, old)
	if v == sniffMore {
		return dst, nil, nil // all of p was held
	}
	held := r.peek[:old]
	var err error
	if v == sniffTunnel {
		r.state = stTunnel
		dst = append(dst, held...)
		dst = append(dst, p...)
		p = nil
	} else {
		// held ends before the end of the first line, so feedHead only
		// skips empty lines and copies the rest into r.head.
		r.state = stHead
		dst, _, err = r.feedHead(dst, held)
	}
	if cap(r.peek) > keepBuf {
		r.peek = nil
	} else {
		r.peek = r.peek[:0]
	}
	return dst, p, err
}

type sniffResult uint8

const (
	sniffMore   sniffResult = iota // cannot tell yet
	sniffHTTP                      // an HTTP/1 request follows
	sniffTunnel                    // the protocol switched
)

// sniff tells what b, the bytes after a CONNECT or upgrade request so far,
// hold; b[:old] was looked at before, with result sniffMore. Only the first
// r.max bytes count.
//
// HTTP/1 is: any empty lines (CR and LF bytes, which request parsers skip),
// then a first line that starts with a token character and is a valid
// request line or at least names an HTTP/1 version; the head parser then
// rewrites it or, if it is malformed, rejects it, rather than passing it to a
// backend that may be more lenient. A stream of empty lines, or a first line
// free of control bytes, that reaches r.max is taken for HTTP too and so
// rejected as too large: a backend with a larger limit would read it.
//
// Anything else is another protocol: a first byte that cannot start a
// request (a WebSocket frame, a TLS record), a control byte that no request
// line holds (HTAB, VT, FF and CR may be whitespace to lenient parsers, RFC
// 9112 §3), or a line such as "PRI * HTTP/2.0".
func (r *Rewriter) sniff(b []byte, old int) sniffResult {
	if len(b) > r.max {
		b = b[:r.max]
	}
	i := r.pre
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		i++
	}
	r.pre = i
	if i < len(b) && !tchar[b[i]] {
		return sniffTunnel
	}
	for k := max(i, old); k < len(b); k++ {
		switch c := b[k]; {
		case c == '\n':
			line, _ := nextLine(b[i : k+1])
			if _, _, err := checkRequestLine(line); err == nil || hasHTTP1(line) {
				return sniffHTTP
			}
			return sniffTunnel
		case c < ' ' && c != '\t' && c != '\v' && c != '\f' && c != '\r' || c == 0x7f:
			return sniffTunnel
		}
	}
	if len(b) == r.max {
		return sniffHTTP
	}
	return sniffMore
}

// hasHTTP1 reports whether line holds "HTTP/1", ignoring ASCII case.
func hasHTTP1(line []byte) bool {
	for i := 0; i+6 <= len(line); i++ {
		if equalFold(line[i:i+6], "http/1") {
			return true
		}
	}
	return false
}

// feedHead accumulates a request head from p. When the head is complete it
// appends the rewritten head to dst and returns the rest of p.
func (r *Rewriter) feedHead(dst, p []byte) ([]byte, []byte, error) {
	if len(r.head) == 0 {
		var err error
		if p, err = r.skipEmptyLines(p); err != nil || len(p) == 0 {
			return dst, p, err
		}
	}
	limit := r.max - r.skipped
	var h []byte
	if len(r.head) == 0 {
		end, err := headEnd(p, 0, limit)
		if err != nil {
			return dst, p, err
		}
		if end == 0 {
			r.head = append(r.head, p...)
			return dst, nil, nil
		}
		h, p = p[:end], p[end:]
	} else {
		old := len(r.head)
		r.head = append(r.head, p[:min(len(p), limit-old)]...)
		end, err := headEnd(r.head, max(0, old-2), limit)
		if err != nil {
			return dst, p, err
		}
		if end == 0 {
			return dst, nil, nil
		}
		h, p = r.head[:end], p[end-old:]
	}
	dst, err := r.rewrite(dst, h)
	if cap(r.head) > keepBuf {
		r.head = nil
	} else {
		r.head = r.head[:0]
	}
	r.skipped = 0
	return dst, p, err
}

// skipEmptyLines drops the empty lines that may precede a request line
// (RFC 9112 §2.2) from the start of p.
func (r *Rewriter) skipEmptyLines(p []byte) ([]byte, error) {
	for len(p) > 0 {
		switch c := p[0]; {
		case c == '\n':
			r.skipCR = false
		case c == '\r' && !r.skipCR:
			r.skipCR = true
		case r.skipCR:
			return p, fmt.Errorf("bare CR before request line: %w", ErrBadRequestLine)
		default:
			return p, nil
		}
		if r.skipped++; r.skipped >= r.max {
			return p, fmt.Errorf("%d bytes of empty lines before request line: %w", r.skipped, ErrHeaderTooLarge)
		}
		p = p[1:]
	}
	return p, nil
}

// headEnd returns the length of the head at the start of b: up to and
// including the first empty line (LF LF or LF CR LF). It returns 0 if b holds
// no complete head yet, and ErrHeaderTooLarge if the head cannot end within
// limit bytes. The search starts at from.
func headEnd(b []byte, from, limit int) (int, error) {
	s := b
	if len(s) > limit {
		s = s[:limit]
	}
	for i := from; i < len(s); {
		j := bytes.IndexByte(s[i:], '\n')
		if j < 0 {
			break
		}
		k := i + j + 1
		if k < len(s) && s[k] == '\n' {
			return k + 1, nil
		}
		if k+1 < len(s) && s[k] == '\r' && s[k+1] == '\n' {
			return k + 2, nil
		}
		i = k
	}
	if len(b) >= limit {
		return 0, fmt.Errorf("no end of head within %d bytes: %w", limit, ErrHeaderTooLarge)
	}
	return 0, nil
}

// framing consumes chunk-size lines, chunk-data terminators and trailer
// fields from p, up to the start of chunk data or the end of the message. It
// returns how many bytes it consumed; on error, the bytes before the
// offending one.
func (r *Rewriter) framing(p []byte) (int, error) {
	for i, c := range p {
		r.count++
		switch r.state {
		case stChunkSize:
			if v := unhex(c); v >= 0 {
				if r.n >= maxBodyLen>>4 {
					return i, fmt.Errorf("chunk size too large: %w", ErrBadChunk)
				}
				r.n = r.n<<4 | uint64(v)
				r.digits++
				break
			}
			if r.digits == 0 {
				return i, fmt.Errorf("chunk size expected, got %q: %w", c, ErrBadChunk)
			}
			switch c {
			case ' ', '\t':
				r.state = stChunkBWS
			case ';':
				r.state = stChunkExt
			case '\r':
				r.state = stChunkSizeLF
			default:
				return i, fmt.Errorf("%q after chunk size: %w", c, ErrBadChunk)
			}
		case stChunkBWS:
			switch c {
			case ' ', '\t':
			case ';':
				r.state = stChunkExt
			case '\r':
				r.state = stChunkSizeLF
			default:
				return i, fmt.Errorf("%q after chunk size: %w", c, ErrBadChunk)
			}
		case stChunkExt:
			if c == '\r' {
				r.state = stChunkSizeLF
			} else if isCTL(c) {
				return i, fmt.Errorf("%q in chunk extension: %w", c, ErrBadChunk)
			}
		case stChunkSizeLF:
			if c != '\n' {
				return i, fmt.Errorf("chunk-size line not ended by CRLF: %w", ErrBadChunk)
			}
			r.count = 0
			if r.n == 0 {
				r.state = stTrailerStart
				break
			}
			r.state = stChunkData
			return i + 1, nil
		case stChunkDataCR:
			if c != '\r' {
				return i, fmt.Errorf("chunk data not followed by CRLF: %w", ErrBadChunk)
			}
			r.state = stChunkDataLF
		case stChunkDataLF:
			if c != '\n' {
				return i, fmt.Errorf("chunk data not followed by CRLF: %w", ErrBadChunk)
			}
			r.state, r.n, r.digits, r.count = stChunkSize, 0, 0, 0
		case stTrailerStart:
			switch {
			case c == '\r':
				r.state = stTrailerEndLF
			case tchar[c]:
				r.state = stTrailerName
			default:
				return i, fmt.Errorf("%q at start of trailer field: %w", c, ErrBadChunk)
			}
		case stTrailerName:
			if c == ':' {
				r.state = stTrailerValue
			} else if !tchar[c] {
				return i, fmt.Errorf("%q in trailer field name: %w", c, ErrBadChunk)
			}
		case stTrailerValue:
			if c == '\r' {
				r.state = stTrailerLF
			} else if isCTL(c) {
				return i, fmt.Errorf("%q in trailer field value: %w", c, ErrBadChunk)
			}
		case stTrailerLF:
			if c != '\n' {
				return i, fmt.Errorf("trailer field not ended by CRLF: %w", ErrBadChunk)
			}
			r.state = stTrailerStart
		case stTrailerEndLF:
			if c != '\n' {
				return i, fmt.Errorf("trailer section not ended by CRLF: %w", ErrBadChunk)
			}
			r.endMessage()
			return i + 1, nil
		}
		if r.state >= stChunkSize && r.state <= stChunkSizeLF && r.count > maxChunkLine {
			return i, fmt.Errorf("chunk-size line longer than %d bytes: %w", maxChunkLine, ErrBadChunk)
		}
		if r.state >= stTrailerStart && r.state <= stTrailerEndLF && r.count > r.max {
			return i, fmt.Errorf("trailer section longer than %d bytes: %w", r.max, ErrHeaderTooLarge)
		}
	}
	return len(p), nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// isCTL reports whether c is a control character not allowed in a field
// value (HTAB is allowed).
func isCTL(c byte) bool {
	return c < ' ' && c != '\t' || c == 0x7f
}

// tchar holds the token characters of RFC 9110 §5.6.2.
var tchar = func() (t [256]bool) {
	for _, c := range []byte("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
		t[c] = true
	}
	return t
}()
