package httpxff

import (
	"bytes"
	"fmt"
	"strconv"
)

const crlf = "\r\n"

// rewrite appends the rewritten request head h (complete, up to and
// including its empty line) to dst and sets up the framing of the message
// body. On error it appends nothing.
func (r *Rewriter) rewrite(dst, h []byte) ([]byte, error) {
	start := len(dst)
	line, rest := nextLine(h)
	tunnel, http10, err := checkRequestLine(line)
	if err != nil {
		return dst, err
	}
	// The backend's responses are matched to the requests in order; the
	// Responses follower needs to know which ones have no body (HEAD) and
	// which may switch protocols.
	var k kind
	if bytes.HasPrefix(line, []byte("HEAD ")) {
		k |= kindHead
	}
	dst = append(dst, line...)
	dst = append(dst, crlf...)

	var (
		cl               int64 = -1
		te, chunked, upg bool
		xff              = r.xff[:0]
	)
	for {
		line, rest = nextLine(rest)
		if len(line) == 0 {
			break
		}
		name, value, err := splitField(line)
		if err != nil {
			return dst[:start], err
		}
		switch {
		case forwardedName(name, "x-forwarded-for"):
			if len(value) > 0 {
				if len(xff) > 0 {
					xff = append(xff, ", "...)
				}
				xff = append(xff, value...)
			}
			continue
		case forwardedName(name, "x-forwarded-proto"):
			continue
		case equalFold(name, "content-length"):
			n, err := parseContentLength(value)
			if err != nil {
				return dst[:start], err
			}
			if cl >= 0 {
				if n != cl {
					return dst[:start], fmt.Errorf("content-length %d and %d: %w", cl, n, ErrBadContentLength)
				}
				continue
			}
			cl = n
			dst = append(dst, "Content-Length: "...)
			dst = strconv.AppendInt(dst, n, 10)
			dst = append(dst, crlf...)
			continue
		case equalFold(name, "transfer-encoding"):
			te = true
			for elem := range bytes.SplitSeq(value, []byte(",")) {
				elem = trimOWS(elem)
				if len(elem) == 0 {
					continue
				}
				if chunked {
					return dst[:start], fmt.Errorf("transfer coding %q after chunked: %w", clip(elem), ErrBadTransferEncoding)
				}
				chunked = equalFold(elem, "chunked")
			}
		case equalFold(name, "connection"):
			for elem := range bytes.SplitSeq(value, []byte(",")) {
				if equalFold(trimOWS(elem), "upgrade") {
					upg = true
				}
			}
		case equalFold(name, "upgrade"):
			upg = true
		}
		dst = append(dst, line...)
		dst = append(dst, crlf...)
	}
	if te {
		switch {
		case http10:
			return dst[:start], fmt.Errorf("transfer-encoding in an HTTP/1.0 request: %w", ErrBadTransferEncoding)
		case !chunked:
			return dst[:start], fmt.Errorf("final transfer coding is not chunked: %w", ErrBadTransferEncoding)
		case cl >= 0:
			return dst[:start], ErrAmbiguousLength
		}
	}

	dst = append(dst, "X-Forwarded-For: "...)
	if len(xff) > 0 {
		dst = append(dst, xff...)
		dst = append(dst, ", "...)
	}
	dst = append(dst, r.client...)
	dst = append(dst, r.tail...)
	if cap(xff) > keepBuf {
		xff = nil
	}
	r.xff = xff

	if tunnel {
		k |= kindConnect
	}
	if upg {
		k |= kindUpgrade
	}
	r.x.push(k)
	r.heads++

	// The message is framed as any other, so that its body is never taken
	// for the next request or for the new protocol.
	r.upgrade = tunnel || upg
	switch {
	case chunked || cl > 0:
		r.startBody(chunked, uint64(max(cl, 0)))
	default:
		r.endMessage()
	}
	return dst, nil
}

// nextLine splits off the first line of b, without its LF and an optional
// CR before it.
func nextLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

// checkRequestLine validates "method SP request-target SP HTTP/1.d"
// (RFC 9112 §3), strictly: single spaces, token method, no control
// characters.
func checkRequestLine(line []byte) (connect, http10 bool, err error) {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return false, false, fmt.Errorf("%q: %w", clip(line), ErrBadRequestLine)
	}
	method := line[:sp1]
	for _, c := range method {
		if !tchar[c] {
			return false, false, fmt.Errorf("method %q: %w", clip(method), ErrBadRequestLine)
		}
	}
	sp2 := bytes.LastIndexByte(line, ' ')
	target, version := line[sp1+1:max(sp2, sp1+1)], line[sp2+1:]
	connect = string(method) == "CONNECT"
	if len(target) == 0 {
		return false, false, fmt.Errorf("%q: %w", clip(line), ErrBadRequestLine)
	}
	for _, c := range target {
		if c <= ' ' || c == 0x7f {
			return false, false, fmt.Errorf("request target %q: %w", clip(target), ErrBadRequestLine)
		}
	}
	if !connect && !validTargetForm(target) {
		return false, false, fmt.Errorf("request target %q: %w", clip(target), ErrBadRequestLine)
	}
	if len(version) != 8 || string(version[:7]) != "HTTP/1." || version[7] < '0' || version[7] > '9' {
		return false, false, fmt.Errorf("version %q: %w", clip(version), ErrBadRequestLine)
	}
	return connect, version[7] == '0', nil
}

// validTargetForm reports whether a request target other than CONNECT's has
// origin-form ("/..."), asterisk-form ("*") or absolute-form ("scheme:...")
// (RFC 9112 §3.2).
func validTargetForm(t []byte) bool {
	if t[0] == '/' || len(t) == 1 && t[0] == '*' {
		return true
	}
	for i, c := range t {
		switch {
		case 'a' <= lower(c) && lower(c) <= 'z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		case i > 0 && c == ':':
			return true
		default:
			return false
		}
	}
	return false
}

// splitField splits "name: value" and trims the value (RFC 9112 §5).
func splitField(line []byte) (name, value []byte, err error) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, nil, fmt.Errorf("%q: %w", clip(line), ErrBadHeader)
	}
	name, value = line[:colon], line[colon+1:]
	for _, c := range name {
		if !tchar[c] {
			return nil, nil, fmt.Errorf("field name %q: %w", clip(name), ErrBadHeader)
		}
	}
	for _, c := range value {
		if isCTL(c) {
			return nil, nil, fmt.Errorf("%q in field %q: %w", c, clip(name), ErrBadHeader)
		}
	}
	return name, trimOWS(value), nil
}

// parseContentLength parses a Content-Length value: 1*DIGIT, or a list of
// identical ones (RFC 9110 §8.6).
func parseContentLength(v []byte) (int64, error) {
	n := int64(-1)
	for elem := range bytes.SplitSeq(v, []byte(",")) {
		m, ok := parseDigits(trimOWS(elem))
		if !ok || n >= 0 && m != n {
			return 0, fmt.Errorf("%q: %w", clip(v), ErrBadContentLength)
		}
		n = m
	}
	return n, nil
}

// parseDigits parses 1*DIGIT of at most 18 digits (no overflow).
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold reports whether b equals the lower-case ASCII string s, ignoring
// ASCII case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != s[i] {
			return false
		}
	}
	return true
}

// forwardedName is equalFold, with "_" in b also matching "-" in s.
func forwardedName(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := lower(b[i])
		if c == '_' {
			c = '-'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// clip shortens b for an error message.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
