package dnstest

import (
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func TestAnswer(t *testing.T) {
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 7, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	req, _ := q.Pack()
	resp, ok := Answer(req, [4]byte{1, 2, 3, 4})
	if !ok {
		t.Fatal("no answer")
	}
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		t.Fatal(err)
	}
	if m.ID != 7 || !m.Response || len(m.Answers) != 1 || m.Answers[0].Body.(*dnsmessage.AResource).A != [4]byte{1, 2, 3, 4} {
		t.Fatalf("answer %+v", m)
	}
	if _, ok := Answer(resp, [4]byte{}); ok {
		t.Fatal("answered a response")
	}
	if _, ok := Answer([]byte{1, 2}, [4]byte{}); ok {
		t.Fatal("answered garbage")
	}
}
