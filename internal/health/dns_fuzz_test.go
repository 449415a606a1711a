package health

import (
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzJudgeDNS: whatever a backend answers, judgeDNS never panics, and
// what it takes as the answer to query 0x1234 for example.com. A is one:
// a response (QR set) with that ID; it passes only with RCODE NOERROR or
// NXDOMAIN and the same question first, and any other RCODE fails.
func FuzzJudgeDNS(f *testing.F) {
	q := dnsmessage.Question{Name: dnsmessage.MustNewName("example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
	const id = 0x1234
	pack := func(h dnsmessage.Header, qs ...dnsmessage.Question) []byte {
		b, err := (&dnsmessage.Message{Header: h, Questions: qs}).Pack()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	other := q
	other.Name = dnsmessage.MustNewName("example.org.")
	for _, b := range [][]byte{
		pack(dnsmessage.Header{ID: id, Response: true}, q),
		pack(dnsmessage.Header{ID: id, Response: true, RCode: dnsmessage.RCodeNameError}, q),
		pack(dnsmessage.Header{ID: id, Response: true, RCode: dnsmessage.RCodeServerFailure}),
		pack(dnsmessage.Header{ID: id, Response: true, RCode: dnsmessage.RCodeRefused}, q),
		pack(dnsmessage.Header{ID: id + 1, Response: true}, q),
		pack(dnsmessage.Header{ID: id}, q),
		pack(dnsmessage.Header{ID: id, Response: true}, other),
		pack(dnsmessage.Header{ID: id, Response: true}, q, other),
		{0x12, 0x34, 0x80},
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, ours := judgeDNS(b, id, q)
		if !ours {
			if r.OK {
				t.Fatalf("%x: passed but not taken as the answer", b)
			}
			return
		}
		if len(b) < 12 || binary.BigEndian.Uint16(b) != id || b[2]&0x80 == 0 {
			t.Fatalf("%x: taken as the answer to %#x: %+v", b, id, r)
		}
		rcode := dnsmessage.RCode(b[3] & 0x0f)
		okCode := rcode == dnsmessage.RCodeSuccess || rcode == dnsmessage.RCodeNameError
		if !okCode {
			if r.OK {
				t.Fatalf("%x: RCODE %v passed", b, rcode)
			}
			return
		}
		if !r.OK {
			t.Fatalf("%x: answer with RCODE %v failed: %s", b, rcode, r.Reason)
		}
		var p dnsmessage.Parser
		if _, err := p.Start(b); err != nil {
			t.Fatal(err)
		}
		got, err := p.Question()
		if err != nil || got.Type != q.Type || got.Class != q.Class || !strings.EqualFold(got.Name.String(), q.Name.String()) {
			t.Fatalf("%x: passed with first question %v, %v", b, got, err)
		}
	})
}
