// Package dummy runs lbd's built-in HTTP test backends (Pen's dummy mode as a
// separate server), so a fresh install can balance without real backends.
package dummy

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// Server answers every HTTP request with a fixed body.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen starts a dummy server on addr.
func Listen(addr netip.AddrPort, body string) (*Server, error) {
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		return nil, err
	}
	length := strconv.Itoa(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", length)
		if r.Method != http.MethodHead {
			w.Write([]byte(body))
		}
	})
	s := &Server{ln: ln, srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			ln.Close()
		}
	}()
	return s, nil
}

// Addr returns the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server and its connections.
func (s *Server) Close() error { return s.srv.Close() }
