// Package dnstest is a minimal DNS server for tests: it answers every A
// query with one address, so an answer tells which backend served it.
package dnstest

import (
	"net"

	"golang.org/x/net/dns/dnsmessage"
)

// Serve answers the A queries arriving on pc with a until pc is closed.
// Call it in a goroutine.
func Serve(pc net.PacketConn, a [4]byte) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp, ok := Answer(buf[:n], a); ok {
			pc.WriteTo(resp, from)
		}
	}
}

// Answer builds the response to query req: an A record a for the question's
// name (A queries), or no answer (other types). It reports false for
// something that is not a query.
func Answer(req []byte, a [4]byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(req)
	if err != nil || h.Response {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired})
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil, false
	}
	if q.Type == dnsmessage.TypeA && q.Class == dnsmessage.ClassINET {
		rr := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60}
		if b.AResource(rr, dnsmessage.AResource{A: a}) != nil {
			return nil, false
		}
	}
	out, err := b.Finish()
	return out, err == nil
}
