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
	// ErrAwaitingAnswer is more than the head size limit sent after a
	// CONNECT or upgrade request before the backend answered it. A proxy
	// that stops reading the client while [Rewriter.Waiting] never sees it.
	ErrAwaitingAnswer = errors.New("too much data before the answer to an upgrade request")
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
	stWait                      // after CONNECT or upgrade: waiting for the answer
	stTunnel                    // the protocol switched: pass everything through
)

// Rewriter rewrites the request stream of one client connection. It is not
// safe for concurrent use; a connection's reader owns it.
type Rewriter struct {
	client string // X-Forwarded-For element naming the client
	tail   string // "\r\nX-Forwarded-Proto: <proto>\r\n\r\n"
	max    int
	x      *exchange
	resp   *Responses

	framer         // state and body framing
	skipped int    // empty lines' bytes skipped before the request line
	skipCR  bool   // a CR of an empty line before the request line was seen
	upgrade bool   // the current message is a CONNECT or asks for an upgrade
	heads   uint64 // request heads passed on
	head    []byte // incomplete request head carried between Feed calls
	held    []byte // stWait: bytes received while waiting for the answer
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
	r := &Rewriter{
		client: client,
		tail:   "\r\nX-Forwarded-Proto: " + proto + "\r\n\r\n",
		max:    maxHeader,
		x:      new(exchange),
	}
	r.resp = &Responses{x: r.x, max: maxHeader}
	return r
}

// Responses returns the follower of the backend's responses to the requests
// this Rewriter passes on. Feed it everything the backend sends; it tells
// the Rewriter how the backend answered a CONNECT or upgrade request.
func (r *Rewriter) Responses() *Responses { return r.resp }

// Waiting reports whether the Rewriter has passed on a CONNECT or upgrade
// request and waits for the backend's answer to it: until [Responses.Feed]
// or [Responses.Close] reports the answer, Feed holds what the client sends
// (up to the head size limit) and returns nothing more. Once the answer is
// known, [Rewriter.Resume] (or the next Feed) goes on.
func (r *Rewriter) Waiting() bool { return r.err == nil && r.state == stWait }

// Requests returns how many request heads the Rewriter has passed on.
func (r *Rewriter) Requests() uint64 { return r.heads }

// InHead reports whether part of a request head has been received and the
// rest has not: the time a slow client takes to send a head.
func (r *Rewriter) InHead() bool {
	return r.err == nil && r.state == stHead && (len(r.head) > 0 || r.skipped > 0 || r.skipCR)
}

// Resume appends to dst the output for the bytes held while waiting for the
// answer to a CONNECT or upgrade request, if the answer is known by now: the
// held bytes pass through unchanged if the protocol switched, and are parsed
// as requests otherwise. It returns dst unchanged while the Rewriter is
// still waiting, or is not waiting at all.
func (r *Rewriter) Resume(dst []byte) ([]byte, error) {
	if r.err != nil {
		return dst, r.err
	}
	if r.state != stWait {
		return dst, nil
	}
	return r.resume(dst)
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
	if r.state == stWait {
		var err error
		if dst, err = r.resume(dst); err != nil {
			return dst, err
		}
	}
	for len(p) > 0 {
		switch r.state {
		case stTunnel:
			return append(dst, p...), nil
		case stWait:
			if len(r.held)+len(p) > r.max {
				return dst, r.fail(fmt.Errorf("more than %d bytes before the answer to an upgrade request: %w", r.max, ErrAwaitingAnswer))
			}
			r.held = append(r.held, p...)
			return dst, nil
		case stHead:
			var err error
			dst, p, err = r.feedHead(dst, p)
			if err != nil {
				return dst, r.fail(err)
			}
		default:
			n, done, err := r.body(p, r.max)
			dst = append(dst, p[:n]...)
			p = p[n:]
			if err != nil {
				return dst, r.fail(err)
			}
			if done {
				r.endMessage()
			}
		}
	}
	return dst, nil
}

// resume leaves stWait if the answer is known by now: the held bytes pass
// through if the protocol switched and are fed as requests if not.
func (r *Rewriter) resume(dst []byte) ([]byte, error) {
	settled, switched := r.x.take()
	if !settled {
		return dst, nil
	}
	// The held bytes are fed from the start of r.held's array, which may
	// be reused for what the feed holds again: append copies forward.
	held := r.held
	r.held = r.held[:0]
	if cap(held) > keepBuf {
		r.held = nil
	}
	if switched {
		r.state = stTunnel
		return append(dst, held...), nil
	}
	r.state = stHead
	return r.Feed(dst, held)
}

func (r *Rewriter) fail(err error) error {
	r.err = err
	r.head, r.xff, r.held = nil, nil, nil
	return err
}

// endMessage moves on after the end of a request message: to the next
// request head, or, after a CONNECT or upgrade request, to the backend's
// answer if it is known, and to waiting for it otherwise.
func (r *Rewriter) endMessage() {
	r.state = stHead
	if !r.upgrade {
		return
	}
	r.upgrade = false
	switch settled, switched := r.x.take(); {
	case !settled:
		r.state = stWait
	case switched:
		r.state = stTunnel
	}
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

// framer follows a message body delimited by Content-Length (stBody) or by
// the chunked transfer coding (the stChunk* and stTrailer* states). Requests
// and responses share it.
type framer struct {
	state  state
	n      uint64 // body or chunk bytes left; chunk size being parsed
	count  int    // bytes in the current chunk line or trailer section
	digits int    // hex digits seen in the current chunk size
}

// startBody sets up the framing of a body: chunked, or n bytes.
func (r *framer) startBody(chunked bool, n uint64) {
	if chunked {
		r.state, r.n, r.digits, r.count = stChunkSize, 0, 0, 0
	} else {
		r.state, r.n = stBody, n
	}
}

// body consumes body bytes from p, up to the end of the body. It returns
// how many bytes it consumed and whether the body ended; on error, the
// bytes before the offending one. max bounds the trailer section.
func (r *framer) body(p []byte, max int) (int, bool, error) {
	if r.state == stBody || r.state == stChunkData {
		k := uint64(len(p))
		if k > r.n {
			k = r.n
		}
		r.n -= k
		if r.n > 0 {
			return int(k), false, nil
		}
		if r.state == stBody {
			return int(k), true, nil
		}
		r.state = stChunkDataCR
		return int(k), false, nil
	}
	return r.framing(p, max)
}

// framing consumes chunk-size lines, chunk-data terminators and trailer
// fields from p, up to the start of chunk data or the end of the message. It
// returns how many bytes it consumed and whether the message ended; on
// error, the bytes before the offending one.
func (r *framer) framing(p []byte, max int) (int, bool, error) {
	for i, c := range p {
		r.count++
		switch r.state {
		case stChunkSize:
			if v := unhex(c); v >= 0 {
				if r.n >= maxBodyLen>>4 {
					return i, false, fmt.Errorf("chunk size too large: %w", ErrBadChunk)
				}
				r.n = r.n<<4 | uint64(v)
				r.digits++
				break
			}
			if r.digits == 0 {
				return i, false, fmt.Errorf("chunk size expected, got %q: %w", c, ErrBadChunk)
			}
			switch c {
			case ' ', '\t':
				r.state = stChunkBWS
			case ';':
				r.state = stChunkExt
			case '\r':
				r.state = stChunkSizeLF
			default:
				return i, false, fmt.Errorf("%q after chunk size: %w", c, ErrBadChunk)
			}
		case stChunkBWS:
			switch c {
			case ' ', '\t':
			case ';':
				r.state = stChunkExt
			case '\r':
				r.state = stChunkSizeLF
			default:
				return i, false, fmt.Errorf("%q after chunk size: %w", c, ErrBadChunk)
			}
		case stChunkExt:
			if c == '\r' {
				r.state = stChunkSizeLF
			} else if isCTL(c) {
				return i, false, fmt.Errorf("%q in chunk extension: %w", c, ErrBadChunk)
			}
		case stChunkSizeLF:
			if c != '\n' {
				return i, false, fmt.Errorf("chunk-size line not ended by CRLF: %w", ErrBadChunk)
			}
			r.count = 0
			if r.n == 0 {
				r.state = stTrailerStart
				break
			}
			r.state = stChunkData
			return i + 1, false, nil
		case stChunkDataCR:
			if c != '\r' {
				return i, false, fmt.Errorf("chunk data not followed by CRLF: %w", ErrBadChunk)
			}
			r.state = stChunkDataLF
		case stChunkDataLF:
			if c != '\n' {
				return i, false, fmt.Errorf("chunk data not followed by CRLF: %w", ErrBadChunk)
			}
			r.state, r.n, r.digits, r.count = stChunkSize, 0, 0, 0
		case stTrailerStart:
			switch {
			case c == '\r':
				r.state = stTrailerEndLF
			case tchar[c]:
				r.state = stTrailerName
			default:
				return i, false, fmt.Errorf("%q at start of trailer field: %w", c, ErrBadChunk)
			}
		case stTrailerName:
			if c == ':' {
				r.state = stTrailerValue
			} else if !tchar[c] {
				return i, false, fmt.Errorf("%q in trailer field name: %w", c, ErrBadChunk)
			}
		case stTrailerValue:
			if c == '\r' {
				r.state = stTrailerLF
			} else if isCTL(c) {
				return i, false, fmt.Errorf("%q in trailer field value: %w", c, ErrBadChunk)
			}
		case stTrailerLF:
			if c != '\n' {
				return i, false, fmt.Errorf("trailer field not ended by CRLF: %w", ErrBadChunk)
			}
			r.state = stTrailerStart
		case stTrailerEndLF:
			if c != '\n' {
				return i, false, fmt.Errorf("trailer section not ended by CRLF: %w", ErrBadChunk)
			}
			r.state = stHead
			return i + 1, true, nil
		}
		if r.state >= stChunkSize && r.state <= stChunkSizeLF && r.count > maxChunkLine {
			return i, false, fmt.Errorf("chunk-size line longer than %d bytes: %w", maxChunkLine, ErrBadChunk)
		}
		if r.state >= stTrailerStart && r.state <= stTrailerEndLF && r.count > max {
			return i, false, fmt.Errorf("trailer section longer than %d bytes: %w", max, ErrHeaderTooLarge)
		}
	}
	return len(p), false, nil
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
