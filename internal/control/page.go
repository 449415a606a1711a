package control

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"mime"
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"time"
)

// The status page: GET / shows lbd's live state to a browser that logged
// in with the token (POST /login) and so holds a session cookie
// (session.go); its script polls /api/v1/status and /api/v1/history
// (history.go) with that cookie. Everything it needs is embedded below: it
// loads nothing from elsewhere and works offline.

//go:embed web
var webFS embed.FS

var (
	indexHTML = mustRead("web/index.html")
	loginTmpl = template.Must(template.ParseFS(webFS, "web/login.html"))
	// assets are the files under /static/, by name.
	assets = loadAssets("app.js", "style.css")
)

// maxLoginBody bounds POST /login's body: the form has one short field.
const maxLoginBody = 4 << 10

// pageHeaders are sent with every reply of the page's routes: nothing
// but this server's own scripts, styles and images runs, the page is
// never framed, and forms only post back here.
var pageHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
}

// csrf refuses cross-origin form posts (login and logout).
var csrf = http.NewCrossOriginProtection()

// pageState is the status page's state in a Server.
type pageState struct {
	sessions sessions
	history  history
	sampler  sampler
}

// asset is one embedded static file.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

func mustRead(name string) []byte {
	b, err := webFS.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return b
}

func loadAssets(names ...string) map[string]asset {
	m := make(map[string]asset, len(names))
	for _, n := range names {
		b := mustRead("web/" + n)
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(n))
		switch path.Ext(n) { // not left to the system's MIME table
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".css":
			ct = "text/css; charset=utf-8"
		}
		m[n] = asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return m
}

// servePage serves the status page's routes and reports whether r was one
// of them; every other path is the API's. These routes do their own
// authentication.
func (s *Server) servePage(w http.ResponseWriter, r *http.Request, src netip.Addr, now time.Time) bool {
	p := r.URL.Path
	switch {
	case p == "/":
		if pageMethod(w, r, http.MethodGet, http.MethodHead) {
			s.index(w, r, src, now)
		}
	case p == "/login":
		if pageMethod(w, r, http.MethodPost) {
			s.login(w, r, src, now)
		}
	case p == "/logout":
		if pageMethod(w, r, http.MethodPost) {
			s.logout(w, r)
		}
	case strings.HasPrefix(p, "/static/"):
		if pageMethod(w, r, http.MethodGet, http.MethodHead) {
			serveAsset(w, r, strings.TrimPrefix(p, "/static/"))
		}
	case p == "/favicon.ico":
		// Browsers ask for it on their own: answer here rather than
		// count it as a failed API request.
		setPageHeaders(w)
		http.NotFound(w, r)
	default:
		return false
	}
	return true
}

// setPageHeaders sets pageHeaders on w.
func setPageHeaders(w http.ResponseWriter) {
	for k, v := range pageHeaders {
		w.Header().Set(k, v)
	}
}

// pageMethod answers 405 unless r uses one of methods.
func pageMethod(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	setPageHeaders(w)
	w.Header().Set("Allow", strings.Join(methods, ", "))
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

// index serves GET /: the page with a valid session, else the login form.
func (s *Server) index(w http.ResponseWriter, r *http.Request, src netip.Addr, now time.Time) {
	if s.sessionOK(r, now) {
		writeHTML(w, http.StatusOK, indexHTML)
		return
	}
	if sessionID(r) != "" { // expired, from before a restart, or forged
		http.SetCookie(w, expiredCookie())
	}
	msg := ""
	if wait := s.thr.blocked(src, now); wait > 0 {
		msg = retryMessage(wait)
	}
	s.loginForm(w, http.StatusOK, msg)
}

// login serves POST /login: a form with the token. The right token starts
// a session; a wrong one counts as a failed attempt of the source, as a
// wrong bearer token does.
func (s *Server) login(w http.ResponseWriter, r *http.Request, src netip.Addr, now time.Time) {
	if err := csrf.Check(r); err != nil {
		s.loginForm(w, http.StatusForbidden, "Cross-origin request refused.")
		return
	}
	if wait := s.thr.blocked(src, now); wait > 0 {
		w.Header().Set("Connection", "close")
		w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(wait)))
		s.loginForm(w, http.StatusTooManyRequests, retryMessage(wait))
		return
	}
	token, code, msg := loginToken(w, r)
	if code != 0 {
		s.loginForm(w, code, msg)
		return
	}
	if !s.tokenOK(token) {
		s.authFailed(w, src, now, "wrong token at the status page login from %s", src)
		s.loginForm(w, http.StatusUnauthorized, "Wrong token.")
		return
	}
	s.thr.ok(src)
	id := newSessionID()
	s.page.sessions.add(id, now)
	s.o.Logf("control: status page login from %s", src)
	http.SetCookie(w, sessionCookieFor(id))
	seeOther(w, "/")
}

// loginToken reads the token field of a login form, bounded. When the
// form is unusable it returns the HTTP status to answer (else 0) and a
// message for the form.
func loginToken(w http.ResponseWriter, r *http.Request) (token string, code int, msg string) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return "", http.StatusUnsupportedMediaType, "Send the form as application/x-www-form-urlencoded."
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", http.StatusRequestEntityTooLarge, "The form is too large."
		}
		return "", http.StatusBadRequest, "The form is malformed."
	}
	return r.PostForm.Get("token"), 0, ""
}

// logout serves POST /logout: the session ends and the cookie goes.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if err := csrf.Check(r); err != nil {
		setPageHeaders(w)
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return
	}
	if id := sessionID(r); id != "" {
		s.page.sessions.remove(id)
	}
	http.SetCookie(w, expiredCookie())
	seeOther(w, "/")
}

// retryMessage is the login form's note for a blocked source.
func retryMessage(wait time.Duration) string {
	return "Too many failed attempts: retry later (in " + strconv.Itoa(retrySeconds(wait)) + " s)."
}

// loginData is what login.html shows.
type loginData struct {
	Message string
}

// loginForm answers with the login form and a message ("" for none).
func (s *Server) loginForm(w http.ResponseWriter, code int, msg string) {
	var b bytes.Buffer
	if err := loginTmpl.Execute(&b, loginData{Message: msg}); err != nil {
		s.o.Logf("control: login form: %v", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	writeHTML(w, code, b.Bytes())
}

// writeHTML answers with an HTML page, never cached.
func writeHTML(w http.ResponseWriter, code int, body []byte) {
	setPageHeaders(w)
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	w.Write(body)
}

// seeOther redirects a form post to url with 303.
func seeOther(w http.ResponseWriter, url string) {
	setPageHeaders(w)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", url)
	w.WriteHeader(http.StatusSeeOther)
}

// serveAsset serves the embedded static file name (no authentication:
// they hold no secrets). The browser revalidates them by ETag, so a new
// lbd's assets are picked up at once.
func serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	setPageHeaders(w)
	a, ok := assets[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}
