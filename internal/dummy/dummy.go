// Package dummy runs lbd's built-in HTTP test backends (Pen's dummy mode as a
// separate server), so a fresh install can balance without real backends.
//
// A body may hold placeholders, {{name}}, that are replaced on every request
// with live values from the server's Facts (lbd supplies its addresses and
// the config it serves, for the appliance's welcome page). A placeholder that
// Facts does not know is sent as written.
package dummy

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
)

// Facts returns the current value of the placeholder {{name}}, and whether
// it knows name. It is called for each request and must be safe for
// concurrent use.
type Facts func(name string) (value string, ok bool)

// Server answers every HTTP request with its body.
type Server struct {
	ln    net.Listener
	srv   *http.Server
	facts Facts
	page  atomic.Pointer[page]
}

// page is a parsed body: literal text and placeholders, alternating.
type page struct {
	static []byte   // the whole body when it has no placeholders
	parts  []string // literal, name, literal, name, ..., literal
	length string   // Content-Length of a static body
}

// Listen starts a dummy server on addr (Open, then Serve). facts may be
// nil: placeholders are then sent as written.
func Listen(addr netip.AddrPort, body string, facts Facts) (*Server, error) {
	l, err := Open(addr)
	if err != nil {
		return nil, err
	}
	return l.Serve(body, facts), nil
}

// SetBody replaces the body; requests that follow answer with it.
func (s *Server) SetBody(body string) {
	p := &page{}
	if s.facts != nil {
		p.parts = split(body)
	}
	if len(p.parts) <= 1 {
		p.parts = nil
		p.static = []byte(body)
		p.length = strconv.Itoa(len(body))
	}
	s.page.Store(p)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	p := s.page.Load()
	body := p.static
	length := p.length
	if p.parts != nil {
		body = p.expand(s.facts)
		length = strconv.Itoa(len(body))
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", length)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

func (p *page) expand(facts Facts) []byte {
	var b []byte
	for i, part := range p.parts {
		if i%2 == 0 {
			b = append(b, part...)
			continue
		}
		if v, ok := facts(part); ok {
			b = append(b, v...)
		} else {
			b = append(b, "{{"+part+"}}"...)
		}
	}
	return b
}

// split cuts body at its placeholders: {{name}} where name is one or more
// of a-z, 0-9 and '_'. Anything else in braces is literal text.
func split(body string) []string {
	var parts []string
	lit := 0 // start of the current literal
	for i := 0; ; {
		j := strings.Index(body[i:], "{{")
		if j < 0 {
			break
		}
		start := i + j
		k := strings.Index(body[start+2:], "}}")
		if k < 0 {
			break
		}
		name := body[start+2 : start+2+k]
		if !validName(name) {
			i = start + 1
			continue
		}
		parts = append(parts, body[lit:start], name)
		i = start + 2 + k + 2
		lit = i
	}
	return append(parts, body[lit:])
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// Addr returns the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server and its connections.
func (s *Server) Close() error { return s.srv.Close() }
