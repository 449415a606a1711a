package proxyproto

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// unhex decodes hex with spaces, for readable golden bytes.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const sigHex = "0d0a0d0a 000d0a51 5549540a"

func TestAppendV1(t *testing.T) {
	ffff := "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	tests := []struct {
		name     string
		src, dst netip.AddrPort
		want     string
	}{
		{
			name: "spec example",
			src:  ap("192.168.0.1:56324"), dst: ap("192.168.0.11:443"),
			want: "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
		},
		{
			name: "longest TCP4 line",
			src:  ap("255.255.255.255:65535"), dst: ap("255.255.255.255:65535"),
			want: "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
		},
		{
			name: "longest TCP6 line",
			src:  ap("[" + ffff + "]:65535"), dst: ap("[" + ffff + "]:65535"),
			want: "PROXY TCP6 " + ffff + " " + ffff + " 65535 65535\r\n",
		},
		{
			name: "TCP6",
			src:  ap("[2001:db8::1]:40000"), dst: ap("[2001:db8::a]:80"),
			want: "PROXY TCP6 2001:db8::1 2001:db8::a 40000 80\r\n",
		},
		{
			name: "zones dropped",
			src:  ap("[fe80::1%eth0]:1"), dst: ap("[fe80::2%eth0]:2"),
			want: "PROXY TCP6 fe80::1 fe80::2 1 2\r\n",
		},
		{
			name: "mapped IPv4 is TCP4",
			src:  ap("[::ffff:192.0.2.1]:1234"), dst: ap("192.0.2.100:0"),
			want: "PROXY TCP4 192.0.2.1 192.0.2.100 1234 0\r\n",
		},
		{
			name: "mixed families as TCP6, IPv4 mapped in hex",
			src:  ap("192.0.2.1:1234"), dst: ap("[2001:db8::a]:443"),
			want: "PROXY TCP6 ::ffff:c000:201 2001:db8::a 1234 443\r\n",
		},
		{
			name: "invalid source",
			dst:  ap("192.0.2.100:80"),
			want: "PROXY UNKNOWN\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendV1([]byte("x"), tt.src, tt.dst)
			if diff := cmp.Diff("x"+tt.want, string(got)); diff != "" {
				t.Errorf("AppendV1 (-want +got):\n%s", diff)
			}
			if len(got)-1 > MaxV1Len {
				t.Errorf("line is %d bytes, longer than %d", len(got)-1, MaxV1Len)
			}
		})
	}
}

func TestAppendV2(t *testing.T) {
	tests := []struct {
		name     string
		tcp      bool
		src, dst netip.AddrPort
		want     string // hex
	}{
		{
			// Captured from haproxy's send-proxy-v2.
			name: "TCP4 from haproxy",
			tcp:  true, src: ap("172.19.0.1:42578"), dst: ap("172.19.0.3:80"),
			want: sigHex + "21 11 000c ac130001 ac130003 a652 0050",
		},
		{
			name: "UDP4",
			src:  ap("192.0.2.1:53000"), dst: ap("192.0.2.100:53"),
			want: sigHex + "21 12 000c c0000201 c0000264 cf08 0035",
		},
		{
			name: "TCP6",
			tcp:  true, src: ap("[2001:db8::1]:1"), dst: ap("[2001:db8::a]:443"),
			want: sigHex + "21 21 0024 20010db8000000000000000000000001 20010db800000000000000000000000a 0001 01bb",
		},
		{
			name: "UDP6, mixed families mapped",
			src:  ap("192.0.2.1:1"), dst: ap("[2001:db8::a]:2"),
			want: sigHex + "21 22 0024 00000000000000000000ffffc0000201 20010db800000000000000000000000a 0001 0002",
		},
		{
			name: "mapped IPv4 is AF_INET",
			tcp:  true, src: ap("[::ffff:192.0.2.1]:1"), dst: ap("[::ffff:192.0.2.2]:2"),
			want: sigHex + "21 11 000c c0000201 c0000202 0001 0002",
		},
		{
			name: "invalid destination is UNSPEC",
			tcp:  true, src: ap("192.0.2.1:1"),
			want: sigHex + "21 00 0000",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendV2([]byte{0xee}, tt.tcp, tt.src, tt.dst)
			want := append([]byte{0xee}, unhex(t, tt.want)...)
			if diff := cmp.Diff(hex.EncodeToString(want), hex.EncodeToString(got)); diff != "" {
				t.Errorf("AppendV2 (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParse(t *testing.T) {
	ffff := "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	tests := []struct {
		name    string
		in      []byte
		want    Header
		wantN   int
		wantErr error
	}{
		{
			name:  "v1 spec example followed by a request",
			in:    []byte("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"),
			want:  Header{Version: 1, TCP: true, Src: ap("192.168.0.1:56324"), Dst: ap("192.168.0.11:443")},
			wantN: 47,
		},
		{
			name:  "v1 TCP6 with a dotted mapped address",
			in:    []byte("PROXY TCP6 ::ffff:192.0.2.1 2001:DB8::A 0 65535\r\n"),
			want:  Header{Version: 1, TCP: true, Src: ap("[::ffff:192.0.2.1]:0"), Dst: ap("[2001:db8::a]:65535")},
			wantN: 49,
		},
		{
			name:  "v1 UNKNOWN short",
			in:    []byte("PROXY UNKNOWN\r\nxyz"),
			want:  Header{Version: 1},
			wantN: 15,
		},
		{
			name:  "v1 UNKNOWN worst case, 107 bytes",
			in:    []byte("PROXY UNKNOWN " + ffff + " " + ffff + " 65535 65535\r\n"),
			want:  Header{Version: 1},
			wantN: 107,
		},
		{
			name:  "v2 TCP4 from haproxy followed by a request",
			in:    append(unhex(t, sigHex+"21 11 000c ac130001 ac130003 a652 0050"), "GET / HTTP/1.1\r\n"...),
			want:  Header{Version: 2, TCP: true, Src: ap("172.19.0.1:42578"), Dst: ap("172.19.0.3:80")},
			wantN: 28,
		},
		{
			name:  "v2 UDP6 with TLVs skipped",
			in:    unhex(t, sigHex+"21 22 002b 20010db8000000000000000000000001 20010db800000000000000000000000a 0001 0002 01 0004 68327063"),
			want:  Header{Version: 2, Src: ap("[2001:db8::1]:1"), Dst: ap("[2001:db8::a]:2")},
			wantN: 59,
		},
		{
			name:  "v2 LOCAL health check",
			in:    unhex(t, sigHex+"20 00 0000"),
			want:  Header{Version: 2},
			wantN: 16,
		},
		{
			name:  "v2 LOCAL ignores its address block",
			in:    unhex(t, sigHex+"20 11 0003 010203"),
			want:  Header{Version: 2},
			wantN: 19,
		},
		{
			name:  "v2 PROXY UNSPEC",
			in:    unhex(t, sigHex+"21 00 0000"),
			want:  Header{Version: 2},
			wantN: 16,
		},
		{
			name:  "v2 AF_UNIX stream has no IP addresses",
			in:    append(unhex(t, sigHex+"21 31 00d8"), make([]byte, 216)...),
			want:  Header{Version: 2},
			wantN: 232,
		},

		{name: "empty", in: nil, wantErr: ErrIncomplete},
		{name: "v1 prefix", in: []byte("PRO"), wantErr: ErrIncomplete},
		{name: "v1 without CRLF yet", in: []byte("PROXY TCP4 192.168.0.1 192.1"), wantErr: ErrIncomplete},
		{name: "v1 CR without LF yet", in: []byte("PROXY UNKNOWN\r"), wantErr: ErrIncomplete},
		{name: "v2 signature prefix", in: unhex(t, "0d0a0d0a00"), wantErr: ErrIncomplete},
		{name: "v2 fixed part short", in: unhex(t, sigHex+"21 11 00"), wantErr: ErrIncomplete},
		{name: "v2 addresses short", in: unhex(t, sigHex+"21 11 000c ac130001 ac13"), wantErr: ErrIncomplete},
		{name: "v2 LOCAL block short", in: unhex(t, sigHex+"20 00 0002 01"), wantErr: ErrIncomplete},

		{name: "HTTP request", in: []byte("GET / HTTP/1.1\r\n\r\n"), wantErr: ErrInvalid},
		{name: "v1 lower case", in: []byte("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), wantErr: ErrInvalid},
		{name: "v1 no space", in: []byte("PROXY\r\n"), wantErr: ErrInvalid},
		{name: "v1 bare LF", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), wantErr: ErrInvalid},
		{name: "v1 bare CR", in: []byte("PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n"), wantErr: ErrInvalid},
		{name: "v1 bare CR, more to come", in: []byte("PROXY TCP4 1.2.3.4\r5"), wantErr: ErrInvalid},
		{name: "v1 no CRLF in 107 bytes", in: []byte("PROXY UNKNOWN " + strings.Repeat("x", 100) + "\r\n"), wantErr: ErrInvalid},
		{name: "v1 UDP4", in: []byte("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), wantErr: ErrInvalid},
		{name: "v1 too few fields", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), wantErr: ErrInvalid},
		{name: "v1 too many fields", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), wantErr: ErrInvalid},
		{name: "v1 trailing space", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), wantErr: ErrInvalid},
		{name: "v1 double space", in: []byte("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), wantErr: ErrInvalid},
		{name: "v1 IPv6 in TCP4", in: []byte("PROXY TCP4 ::1 5.6.7.8 1 2\r\n"), wantErr: ErrInvalid},
		{name: "v1 IPv4 in TCP6", in: []byte("PROXY TCP6 ::1 5.6.7.8 1 2\r\n"), wantErr: ErrInvalid},
		{name: "v1 leading zero in address", in: []byte("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"), wantErr: ErrInvalid},
		{name: "v1 zone", in: []byte("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), wantErr: ErrInvalid},
		{name: "v1 port leading zero", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), wantErr: ErrInvalid},
		{name: "v1 port too big", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"), wantErr: ErrInvalid},
		{name: "v1 port sign", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"), wantErr: ErrInvalid},
		{name: "v2 bad signature", in: unhex(t, "0d0a0d0a 000d0a51 5549540b 21 11 000c ac130001 ac130003 a652 0050"), wantErr: ErrInvalid},
		{name: "v2 version 1", in: unhex(t, sigHex+"11 11 000c ac130001 ac130003 a652 0050"), wantErr: ErrInvalid},
		{name: "v2 version 1, short", in: unhex(t, sigHex+"11"), wantErr: ErrInvalid},
		{name: "v2 command 2", in: unhex(t, sigHex+"22 11 000c ac130001 ac130003 a652 0050"), wantErr: ErrInvalid},
		{name: "v2 family 4", in: unhex(t, sigHex+"21 41 000c ac130001 ac130003 a652 0050"), wantErr: ErrInvalid},
		{name: "v2 protocol 3, short", in: unhex(t, sigHex+"21 13"), wantErr: ErrInvalid},
		{name: "v2 TCP4 length too small", in: unhex(t, sigHex+"21 11 000b ac130001 ac130003 a652 00"), wantErr: ErrInvalid},
		{name: "v2 TCP6 length too small", in: unhex(t, sigHex+"21 21 000c ac130001 ac130003 a652 0050"), wantErr: ErrInvalid},
		{name: "v2 UNIX length too small", in: unhex(t, sigHex+"21 31 000c ac130001 ac130003 a652 0050"), wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n, err := Parse(tt.in)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Parse error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tt.want, h, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("Parse header (-want +got):\n%s", diff)
			}
			if n != tt.wantN {
				t.Errorf("Parse n = %d, want %d", n, tt.wantN)
			}
		})
	}
}

// equivalent reports whether two headers name the same connection, treating
// IPv4-mapped addresses as IPv4.
func equivalent(a, b Header) bool {
	unmap := func(p netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(p.Addr().Unmap(), p.Port()) }
	return a.Version == b.Version && a.TCP == b.TCP && unmap(a.Src) == unmap(b.Src) && unmap(a.Dst) == unmap(b.Dst)
}

func TestRoundTrip(t *testing.T) {
	addrs := []netip.AddrPort{
		ap("192.0.2.1:1"), ap("0.0.0.0:0"), ap("255.255.255.255:65535"),
		ap("[::ffff:198.51.100.2]:8080"), ap("[2001:db8::1]:443"), ap("[::]:0"),
		ap("[fe80::1%eth0]:22"), {},
	}
	for _, src := range addrs {
		for _, dst := range addrs {
			known := src.IsValid() && dst.IsValid()
			strip := func(p netip.AddrPort) netip.AddrPort {
				if !known {
					return netip.AddrPort{}
				}
				return netip.AddrPortFrom(p.Addr().WithZone(""), p.Port())
			}
			cases := []struct {
				enc  []byte
				want Header
			}{
				{AppendV1(nil, src, dst), Header{Version: 1, TCP: known, Src: strip(src), Dst: strip(dst)}},
				{AppendV2(nil, true, src, dst), Header{Version: 2, TCP: known, Src: strip(src), Dst: strip(dst)}},
				{AppendV2(nil, false, src, dst), Header{Version: 2, Src: strip(src), Dst: strip(dst)}},
			}
			for _, c := range cases {
				h, n, err := Parse(append(c.enc, "payload"...))
				if err != nil || n != len(c.enc) || !equivalent(h, c.want) {
					t.Errorf("Parse(%q) = %+v, %d, %v; want %+v, %d", c.enc, h, n, err, c.want, len(c.enc))
				}
				for k := range len(c.enc) {
					if _, _, err := Parse(c.enc[:k]); !errors.Is(err, ErrIncomplete) {
						t.Errorf("Parse(%q) error = %v, want ErrIncomplete", c.enc[:k], err)
					}
				}
			}
		}
	}
}

func BenchmarkAppendV1(b *testing.B) {
	src, dst := ap("[2001:db8::1]:40000"), ap("[2001:db8::a]:443")
	buf := make([]byte, 0, MaxV1Len)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendV1(buf[:0], src, dst)
	}
}

func BenchmarkAppendV2(b *testing.B) {
	src, dst := ap("[2001:db8::1]:40000"), ap("[2001:db8::a]:443")
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendV2(buf[:0], true, src, dst)
	}
}
