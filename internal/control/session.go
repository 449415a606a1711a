package control

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"sync"
	"time"
)

// Status page sessions. Logging in with the token creates a session: a
// random id kept in a bounded table in memory and given to the browser as
// a cookie. A session only reads (see cookieReadable); it dies with the
// Server, so restarting lbd logs everybody out.
const (
	sessionCookie = "nib_session"
	sessionTTL    = 12 * time.Hour
	// maxSessions bounds the table; a new session evicts the oldest.
	maxSessions = 64
	// sessionIDLen is the id's length: 32 random bytes as hex.
	sessionIDLen = 64
)

// sessionKey is a session's table key: the SHA-256 of its id, so that
// looking an id up does not compare the secret itself byte by byte.
type sessionKey [sha256.Size]byte

func keyOf(id string) sessionKey { return sha256.Sum256([]byte(id)) }

// sessions is the session table. The zero value is empty and ready.
type sessions struct {
	mu      sync.Mutex
	created map[sessionKey]time.Time
}

// newSessionID returns a fresh session id: 32 random bytes as 64 hex
// digits.
func newSessionID() string {
	var b [sessionIDLen / 2]byte
	rand.Read(b[:]) // never fails (crypto/rand panics rather than return an error)
	return hex.EncodeToString(b[:])
}

// add records the session id, created at now, evicting expired sessions
// and, while the table is still full, the oldest.
func (t *sessions) add(id string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.created == nil {
		t.created = make(map[sessionKey]time.Time)
	}
	for len(t.created) >= maxSessions {
		t.evictLocked(now)
	}
	t.created[keyOf(id)] = now
}

// evictLocked drops every expired session; if none was, the oldest.
func (t *sessions) evictLocked(now time.Time) {
	var oldest sessionKey
	var oldestT time.Time
	found, dropped := false, false
	for k, c := range t.created {
		if expired(c, now) {
			delete(t.created, k)
			dropped = true
			continue
		}
		if !found || c.Before(oldestT) {
			oldest, oldestT, found = k, c, true
		}
	}
	if !dropped && found {
		delete(t.created, oldest)
	}
}

// expired reports whether a session created at c has expired at now.
func expired(c, now time.Time) bool { return !now.Before(c.Add(sessionTTL)) }

// valid reports whether id is a live session at now. An expired session is
// forgotten.
func (t *sessions) valid(id string, now time.Time) bool {
	if len(id) != sessionIDLen {
		return false
	}
	k := keyOf(id)
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.created[k]
	if ok && expired(c, now) {
		delete(t.created, k)
		return false
	}
	return ok
}

// remove forgets the session id (logout).
func (t *sessions) remove(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.created, keyOf(id))
}

func (t *sessions) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.created)
}

// sessionCookieFor is the cookie that carries a session id to the browser:
// HTTPS only, out of JavaScript's reach, never sent with cross-site
// requests, and kept as long as the session lives.
func sessionCookieFor(id string) *http.Cookie {
	return &http.Cookie{
		Name:     sessionCookie,
		Value:    id,
		Path:     "/",
		MaxAge:   int(sessionTTL / time.Second),
		Secure:   true,
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
	}
}

// expiredCookie tells the browser to drop its session cookie.
func expiredCookie() *http.Cookie {
	c := sessionCookieFor("")
	c.MaxAge = -1 // "Max-Age=0"
	return c
}

// sessionID returns r's session cookie's value ("" without one).
func sessionID(r *http.Request) string {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return ""
	}
	return c.Value
}

// sessionOK reports whether r carries a valid session cookie.
func (s *Server) sessionOK(r *http.Request, now time.Time) bool {
	id := sessionID(r)
	return id != "" && s.page.sessions.valid(id, now)
}

// cookieReadable reports whether a session cookie may read path (with
// GET): the status and its history, nothing that changes state, and not
// the metrics.
func cookieReadable(path string) bool {
	return path == "/api/v1/status" || path == "/api/v1/history"
}
