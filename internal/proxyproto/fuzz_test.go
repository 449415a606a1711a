package proxyproto

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParse checks that Parse never panics, that a header it accepts has a
// sane length, that every proper prefix of it is ErrIncomplete, and that it
// re-encodes to an equivalent header.
func FuzzParse(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /"))
	f.Add([]byte("PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 1 2\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(AppendV2(nil, true, ap("172.19.0.1:42578"), ap("172.19.0.3:80")))
	f.Add(AppendV2(nil, false, ap("[2001:db8::1]:1"), ap("[2001:db8::2]:2")))
	f.Add(append(sigV2[:len(sigV2):len(sigV2)], 0x20, 0x00, 0x00, 0x00))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrIncomplete) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error %v is neither ErrIncomplete nor ErrInvalid", b, err)
			}
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("Parse(%q) n = %d, out of range", b, n)
		}
		if h2, n2, err := Parse(b[:n]); err != nil || n2 != n || h2 != h {
			t.Fatalf("Parse(header only) = %+v, %d, %v; want %+v, %d", h2, n2, err, h, n)
		}
		for k := range n {
			if _, _, err := Parse(b[:k]); !errors.Is(err, ErrIncomplete) {
				t.Fatalf("Parse(%q) error = %v, want ErrIncomplete", b[:k], err)
			}
		}
		var enc []byte
		switch h.Version {
		case 1:
			if !h.TCP && h.Src.IsValid() {
				t.Fatalf("v1 header %+v has addresses but is not TCP", h)
			}
			enc = AppendV1(nil, h.Src, h.Dst)
		case 2:
			enc = AppendV2(nil, h.TCP, h.Src, h.Dst)
		default:
			t.Fatalf("Parse(%q) version %d", b, h.Version)
		}
		h2, n2, err := Parse(enc)
		if err != nil || n2 != len(enc) || !equivalent(h, h2) {
			t.Fatalf("re-encoded %+v as %q, parsed %+v, %d, %v", h, enc, h2, n2, err)
		}
		if h.Version == 1 && h.TCP && !bytes.Equal(enc, b[:n]) && h.Src.Addr().Is4() {
			// A TCP4 line has one canonical form, so it must re-encode
			// to the same bytes.
			t.Fatalf("TCP4 line %q re-encoded as %q", b[:n], enc)
		}
	})
}
