package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// Errors returned by Parse. ErrInvalid is wrapped with details; test it with
// errors.Is.
var (
	// ErrIncomplete means b is a valid start of a header: read more bytes.
	ErrIncomplete = errors.New("incomplete PROXY header")
	// ErrInvalid means b does not start with a valid PROXY header. A
	// receiver must close the connection.
	ErrInvalid = errors.New("invalid PROXY header")
)

// Header is a decoded PROXY header.
type Header struct {
	Version int  // 1 or 2
	TCP     bool // a stream (TCP) connection; false for datagrams (UDP, v2 only) and unknown addresses
	// Src and Dst are the original connection's client and server
	// addresses. Both are the zero AddrPort when the header carries none
	// (v1 UNKNOWN; v2 LOCAL, or an UNSPEC or AF_UNIX family).
	Src, Dst netip.AddrPort
}

const (
	// MaxV1Len is the longest version 1 line, CRLF included.
	MaxV1Len = 107
	v1Prefix = "PROXY "
)

// sigV2 is the 12-byte signature that starts a version 2 header.
var sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")

const (
	v2Local = 0x20 // version 2, LOCAL
	v2Proxy = 0x21 // version 2, PROXY

	afUnspec = 0x0
	afInet   = 0x1
	afInet6  = 0x2
	afUnix   = 0x3

	tpStream = 0x1
	tpDgram  = 0x2
)

// pair normalises an address pair to one family: both IPv4, or both IPv6
// (IPv4 ones mapped). ok is false if either address is invalid.
func pair(src, dst netip.AddrPort) (s, d netip.Addr, v4, ok bool) {
	if !src.Addr().IsValid() || !dst.Addr().IsValid() {
		return s, d, false, false
	}
	s, d = src.Addr().Unmap().WithZone(""), dst.Addr().Unmap().WithZone("")
	if s.Is4() && d.Is4() {
		return s, d, true, true
	}
	return netip.AddrFrom16(s.As16()), netip.AddrFrom16(d.As16()), false, true
}

// AppendV1 appends a version 1 header for a TCP connection from src to dst2:
// "PROXY TCP4 <src> <dst> <sport> <dport>\r\n", or TCP6. If either address
// is invalid it appends "PROXY UNKNOWN\r\n". An IPv4-mapped address in a TCP6
// line is written in hexadecimal ("::ffff:c000:207"), as the spec asks.
func AppendV1(dst []byte, src, dst2 netip.AddrPort) []byte {
	s, d, v4, ok := pair(src, dst2)
	if !ok {
		return append(dst, "PROXY UNKNOWN\r\n"...)
	}
	if v4 {
		dst = append(dst, "PROXY TCP4 "...)
	} else {
		dst = append(dst, "PROXY TCP6 "...)
	}
	dst = appendAddrV1(dst, s)
	dst = append(dst, ' ')
	dst = appendAddrV1(dst, d)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(src.Port()), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(dst2.Port()), 10)
	return append(dst, "\r\n"...)
}

func appendAddrV1(dst []byte, a netip.Addr) []byte {
	if !a.Is4In6() {
		return a.AppendTo(dst)
	}
	b := a.As16()
	dst = append(dst, "::ffff:"...)
	dst = strconv.AppendUint(dst, uint64(b[12])<<8|uint64(b[13]), 16)
	dst = append(dst, ':')
	return strconv.AppendUint(dst, uint64(b[14])<<8|uint64(b[15]), 16)
}

// AppendV2 appends a version 2 header with the PROXY command for a
// connection from src to dst2: TCP (STREAM) if tcp is set, else UDP (DGRAM);
// AF_INET or AF_INET6. If either address is invalid the family is UNSPEC and
// no address follows.
func AppendV2(dst []byte, tcp bool, src, dst2 netip.AddrPort) []byte {
	dst = append(dst, sigV2...)
	dst = append(dst, v2Proxy)
	s, d, v4, ok := pair(src, dst2)
	if !ok {
		return append(dst, afUnspec<<4, 0, 0)
	}
	tp := byte(tpDgram)
	if tcp {
		tp = tpStream
	}
	if v4 {
		dst = append(dst, afInet<<4|tp, 0, 12)
		a, b := s.As4(), d.As4()
		dst = append(dst, a[:]...)
		dst = append(dst, b[:]...)
	} else {
		dst = append(dst, afInet6<<4|tp, 0, 36)
		a, b := s.As16(), d.As16()
		dst = append(dst, a[:]...)
		dst = append(dst, b[:]...)
	}
	dst = binary.BigEndian.AppendUint16(dst, src.Port())
	return binary.BigEndian.AppendUint16(dst, dst2.Port())
}

// Parse decodes the PROXY header, of either version, at the start of b. It
// returns the header and its length in bytes. It returns ErrIncomplete if b
// is a proper prefix of a possibly valid header, and an error wrapping
// ErrInvalid if b cannot start one. Version 2 TLVs are skipped, unchecked.
func Parse(b []byte) (h Header, n int, err error) {
	switch {
	case len(b) == 0:
		return h, 0, ErrIncomplete
	case b[0] == v1Prefix[0]:
		return parseV1(b)
	case b[0] == sigV2[0]:
		return parseV2(b)
	}
	return h, 0, fmt.Errorf("%w: no signature", ErrInvalid)
}

func parseV1(b []byte) (h Header, n int, err error) {
	if k := min(len(b), len(v1Prefix)); string(b[:k]) != v1Prefix[:k] {
		return h, 0, fmt.Errorf("%w: no signature", ErrInvalid)
	}
	end := bytes.IndexByte(b[:min(len(b), MaxV1Len)], '\n')
	if cr := bytes.IndexByte(b[:min(len(b), MaxV1Len)], '\r'); end < 0 {
		switch {
		case len(b) >= MaxV1Len:
			return h, 0, fmt.Errorf("%w: no CRLF within %d bytes", ErrInvalid, MaxV1Len)
		case cr >= 0 && cr != len(b)-1:
			return h, 0, fmt.Errorf("%w: CR without LF", ErrInvalid)
		}
		return h, 0, ErrIncomplete
	} else if cr != end-1 {
		return h, 0, fmt.Errorf("%w: line not ended by CRLF", ErrInvalid)
	}
	line := string(b[len(v1Prefix) : end-1])
	h.Version = 1
	proto, rest, _ := cut(line)
	switch proto {
	case "UNKNOWN":
		// The receiver must ignore anything up to the CRLF.
		return h, end + 1, nil
	case "TCP4", "TCP6":
	default:
		return h, 0, fmt.Errorf("%w: protocol %q", ErrInvalid, proto)
	}
	var f [4]string
	for i := range f {
		var more bool
		f[i], rest, more = cut(rest)
		if more != (i < 3) {
			return h, 0, fmt.Errorf("%w: want 4 fields after %s in %q", ErrInvalid, proto, line)
		}
	}
	src, err1 := parseAddrV1(f[0], proto == "TCP4")
	dst, err2 := parseAddrV1(f[1], proto == "TCP4")
	sport, err3 := parsePortV1(f[2])
	dport, err4 := parsePortV1(f[3])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return h, 0, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	h.TCP = true
	h.Src = netip.AddrPortFrom(src, sport)
	h.Dst = netip.AddrPortFrom(dst, dport)
	return h, end + 1, nil
}

// cut splits s at its first space.
func cut(s string) (before, after string, found bool) {
	i := 0
	for i < len(s) && s[i] != ' ' {
		i++
	}
	if i == len(s) {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

func parseAddrV1(s string, v4 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return a, err
	case a.Zone() != "":
		return a, fmt.Errorf("address %q has a zone", s)
	case v4 != a.Is4():
		return a, fmt.Errorf("address %q of the wrong family", s)
	}
	return a, nil
}

func parsePortV1(s string) (uint16, error) {
	if s == "" || len(s) > 5 || s[0] == '0' && s != "0" {
		return 0, fmt.Errorf("port %q", s)
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("port %q", s)
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, fmt.Errorf("port %q", s)
	}
	return uint16(n), nil
}

func parseV2(b []byte) (h Header, n int, err error) {
	if k := min(len(b), len(sigV2)); !bytes.Equal(b[:k], sigV2[:k]) {
		return h, 0, fmt.Errorf("%w: no signature", ErrInvalid)
	}
	if len(b) < 16 {
		// Check the fixed part as far as it goes.
		if len(b) > 12 && b[12] != v2Local && b[12] != v2Proxy {
			return h, 0, fmt.Errorf("%w: version and command %#02x", ErrInvalid, b[12])
		}
		if len(b) > 13 && (b[13]>>4 > afUnix || b[13]&0xf > tpDgram) {
			return h, 0, fmt.Errorf("%w: family and protocol %#02x", ErrInvalid, b[13])
		}
		return h, 0, ErrIncomplete
	}
	verCmd, fam := b[12], b[13]
	if verCmd != v2Local && verCmd != v2Proxy {
		return h, 0, fmt.Errorf("%w: version and command %#02x", ErrInvalid, verCmd)
	}
	af, tp := fam>>4, fam&0xf
	if af > afUnix || tp > tpDgram {
		return h, 0, fmt.Errorf("%w: family and protocol %#02x", ErrInvalid, fam)
	}
	n = 16 + int(binary.BigEndian.Uint16(b[14:16]))
	h.Version = 2
	if verCmd == v2Local || tp == 0 {
		// The receiver uses the connection's own endpoints.
		if len(b) < n {
			return Header{}, 0, ErrIncomplete
		}
		return h, n, nil
	}
	addr := b[16:min(len(b), n)]
	var need int
	switch af {
	case afInet:
		need = 12
	case afInet6:
		need = 36
	case afUnix:
		need = 216
	}
	if n-16 < need {
		return Header{}, 0, fmt.Errorf("%w: %d address bytes for family %#x, want %d", ErrInvalid, n-16, af, need)
	}
	if len(b) < n {
		return Header{}, 0, ErrIncomplete
	}
	switch af {
	case afInet:
		h.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(addr[0:4])), binary.BigEndian.Uint16(addr[8:]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(addr[4:8])), binary.BigEndian.Uint16(addr[10:]))
	case afInet6:
		h.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(addr[0:16])), binary.BigEndian.Uint16(addr[32:]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(addr[16:32])), binary.BigEndian.Uint16(addr[34:]))
	default:
		// AF_UNSPEC with a protocol, or AF_UNIX: no IP addresses.
		return h, n, nil
	}
	h.TCP = tp == tpStream
	return h, n, nil
}
