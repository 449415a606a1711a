package control

import (
	"net/http"
	"net/netip"
	"time"
)

// DefaultHistoryInterval is how often the status page's history is sampled.
const DefaultHistoryInterval = 5 * time.Second

// pageState is the status page's state (placeholder until the page exists).
type pageState struct{}

func (s *Server) startSampler() {}
func (s *Server) stopSampler()  {}

// servePage serves the status page's routes; false for every other path.
func (s *Server) servePage(w http.ResponseWriter, r *http.Request, src netip.Addr, now time.Time) bool {
	return false
}

// cookieReadable reports whether a session cookie may read path.
func cookieReadable(path string) bool { return false }

// sessionOK reports whether r carries a valid session cookie.
func (s *Server) sessionOK(r *http.Request, now time.Time) bool { return false }

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "not found")
}
