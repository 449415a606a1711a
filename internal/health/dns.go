package health

import (
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// DNS is a Probe that sends one A query for name (made fully qualified;
// "" is the root ".") to the server at addr over network "udp" (the
// default) or "tcp". It passes on a response with our ID and question and
// RCODE NOERROR or NXDOMAIN (the server answers; whether the name exists
// is not the check's business). Other RCODEs fail as "dns SERVFAIL", "dns
// REFUSED", ... Over UDP, responses with another ID or question are
// ignored until the timeout, which is then reported as "dns ID mismatch"
// (or "dns question mismatch") rather than "timeout".
func DNS(addr netip.AddrPort, network, name string) Probe {
	if network == "" {
		network = "udp"
	}
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	qname, nameErr := dnsmessage.NewName(name)
	return func(ctx context.Context) Result {
		if nameErr != nil {
			return Result{Reason: "bad query name"}
		}
		if network != "udp" && network != "tcp" {
			return Result{Reason: "bad network " + strconv.Quote(network)}
		}
		q := dnsmessage.Question{Name: qname, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
		id := uint16(rand.Uint32())
		msg := dnsmessage.Message{
			Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
			Questions: []dnsmessage.Question{q},
		}
		start := time.Now()
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr.String())
		if err != nil {
			return fail(ctx, start, err)
		}
		defer conn.Close()
		stop := bindDeadline(ctx, conn)
		defer stop()
		prefix := 0
		if network == "tcp" {
			prefix = 2
		}
		req, err := msg.AppendPack(make([]byte, prefix, 512))
		if err != nil {
			return Result{Reason: err.Error()}
		}
		if prefix > 0 {
			binary.BigEndian.PutUint16(req, uint16(len(req)-prefix))
		}
		if _, err := conn.Write(req); err != nil {
			return fail(ctx, start, err)
		}
		if network == "tcp" {
			var n [2]byte
			if _, err := io.ReadFull(conn, n[:]); err != nil {
				return fail(ctx, start, err)
			}
			resp := make([]byte, binary.BigEndian.Uint16(n[:]))
			if _, err := io.ReadFull(conn, resp); err != nil {
				return fail(ctx, start, err)
			}
			r, _ := judgeDNS(resp, id, q)
			r.Latency = time.Since(start)
			return r
		}
		buf := make([]byte, 1500)
		mismatch := ""
		for {
			n, err := conn.Read(buf)
			if err != nil {
				r := fail(ctx, start, err)
				if mismatch != "" && r.Reason == "timeout" {
					r.Reason = mismatch
				}
				return r
			}
			r, ours := judgeDNS(buf[:n], id, q)
			if ours {
				r.Latency = time.Since(start)
				return r
			}
			mismatch = r.Reason
		}
	}
}

// judgeDNS judges the response b to query id with question q. ours is
// false for a message that is not a response to it (Result says why).
func judgeDNS(b []byte, id uint16, q dnsmessage.Question) (r Result, ours bool) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil || !h.Response {
		return Result{Reason: "dns bad response"}, false
	}
	if h.ID != id {
		return Result{Reason: "dns ID mismatch"}, false
	}
	if h.RCode != dnsmessage.RCodeSuccess && h.RCode != dnsmessage.RCodeNameError {
		// A server may leave the question out of an error response.
		return Result{Reason: "dns " + rcodeName(h.RCode)}, true
	}
	got, err := p.Question()
	if err != nil || got.Type != q.Type || got.Class != q.Class || !strings.EqualFold(got.Name.String(), q.Name.String()) {
		return Result{Reason: "dns question mismatch"}, false
	}
	return Result{OK: true, Reason: "dns " + rcodeName(h.RCode)}, true
}

// rcodeName is an RCODE's mnemonic.
func rcodeName(c dnsmessage.RCode) string {
	switch c {
	case dnsmessage.RCodeSuccess:
		return "NOERROR"
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeNameError:
		return "NXDOMAIN"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return "rcode " + strconv.Itoa(int(c))
}
