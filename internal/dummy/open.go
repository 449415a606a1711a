package dummy

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// Listener is a dummy server's socket, bound and listening but not served:
// lbd opens every socket a new configuration needs before it changes
// anything, then serves them (Serve) or, if anything failed, closes them
// (Close). Connections that arrive meanwhile wait in the backlog.
type Listener struct {
	ln net.Listener
}

// Open binds addr for a dummy server without serving it.
func Open(addr netip.AddrPort) (*Listener, error) {
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		return nil, err
	}
	return &Listener{ln: ln}, nil
}

// Close releases a listener that was not served.
func (l *Listener) Close() error { return l.ln.Close() }

// Serve starts a dummy server on l, as Listen does. facts may be nil.
func (l *Listener) Serve(body string, facts Facts) *Server {
	s := &Server{ln: l.ln, facts: facts}
	s.SetBody(body)
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serve),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	ln := l.ln
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			ln.Close()
		}
	}()
	return s
}
