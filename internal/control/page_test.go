package control

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const pageToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// pageBackend is a Backend whose counters move: each Status call adds
// step to them and, when clock is set, advances it by tick. Methods it
// does not define panic (the embedded nil Backend): a session must not
// reach them.
type pageBackend struct {
	Backend
	mu      sync.Mutex
	st      Status
	step    uint64
	tick    time.Duration
	clock   *fakeClock
	calls   int
	changes int // Pen, Write and Reload calls
}

func (b *pageBackend) Status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	for i := range b.st.Services {
		s := &b.st.Services[i]
		s.Accepted += b.step
		for j := range s.Backends {
			s.Backends[j].Sent += 100 * b.step
			s.Backends[j].Received += 10 * b.step
		}
	}
	if b.clock != nil {
		b.clock.advance(b.tick)
	}
	return cloneStatus(b.st)
}

func (b *pageBackend) Pen(string) (string, error)  { b.changed(); return "", nil }
func (b *pageBackend) ConfigTOML() ([]byte, error) { return []byte("x = 1\n"), nil }
func (b *pageBackend) Write() error                { b.changed(); return nil }
func (b *pageBackend) Reload() error               { b.changed(); return nil }

func (b *pageBackend) changed() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.changes++
}

func (b *pageBackend) counts() (calls, changes int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls, b.changes
}

// cloneStatus deep-copies the parts of a Status the tests change.
func cloneStatus(st Status) Status {
	out := st
	out.Services = append([]ServiceStatus(nil), st.Services...)
	for i := range out.Services {
		out.Services[i].Backends = append([]BackendStatus(nil), st.Services[i].Backends...)
	}
	return out
}

func webStatus() Status {
	return Status{Version: "test", Services: []ServiceStatus{{
		Name: "web", Listen: "127.0.0.1:8080", Protocol: "tcp", Mode: "proxy",
		Backends: []BackendStatus{
			{Index: 0, Address: "10.0.0.1:80", State: "ok", Weight: 1},
			{Index: 1, Address: "10.0.0.2:80", State: "blacklisted", Weight: 1},
		},
	}}}
}

// fakeClock is a settable clock for Options.now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newPageServer returns a Server (not listening) with pageToken and b.
func newPageServer(t *testing.T, b *pageBackend, clock *fakeClock) *Server {
	t.Helper()
	if b == nil {
		b = &pageBackend{st: webStatus()}
	}
	o := Options{Backend: b, Secrets: Secrets{Token: pageToken}, Logf: t.Logf}
	if clock != nil {
		o.now = clock.now
	}
	return New(o)
}

// req is one request to the handler.
type req struct {
	method, path string
	from         string // remote address; "" for 192.0.2.1
	body         string
	form         bool   // body is a form
	cookie       string // session id to send
	bearer       string
	header       map[string]string
}

func (q req) do(s *Server) *httptest.ResponseRecorder {
	r := httptest.NewRequest(q.method, q.path, strings.NewReader(q.body))
	r.RemoteAddr = "192.0.2.1:1234"
	if q.from != "" {
		r.RemoteAddr = q.from + ":1234"
	}
	if q.form {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if q.cookie != "" {
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: q.cookie})
	}
	if q.bearer != "" {
		r.Header.Set("Authorization", "Bearer "+q.bearer)
	}
	for k, v := range q.header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func loginReq(token string) req {
	return req{method: "POST", path: "/login", form: true, body: url.Values{"token": {token}}.Encode()}
}

// login logs in and returns the session id.
func login(t *testing.T, s *Server) string {
	t.Helper()
	w := loginReq(pageToken).do(s)
	if w.Code != http.StatusSeeOther {
		t.Fatalf("login: %d %s", w.Code, w.Body)
	}
	for _, c := range w.Result().Cookies() {
		if c.Name == sessionCookie {
			return c.Value
		}
	}
	t.Fatal("login set no session cookie")
	return ""
}

func TestLoginSetsCookie(t *testing.T) {
	s := newPageServer(t, nil, nil)
	w := loginReq(pageToken).do(s)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		t.Fatalf("login: %d Location %q", w.Code, w.Header().Get("Location"))
	}
	sc := w.Header().Values("Set-Cookie")
	if len(sc) != 1 {
		t.Fatalf("Set-Cookie %q", sc)
	}
	m := regexp.MustCompile(`^nib_session=([0-9a-f]{64}); Path=/; Max-Age=43200; HttpOnly; Secure; SameSite=Strict$`).FindStringSubmatch(sc[0])
	if m == nil {
		t.Fatalf("Set-Cookie %q", sc[0])
	}
	if b, _ := hex.DecodeString(m[1]); len(b) != 32 {
		t.Errorf("session id %q", m[1])
	}
	// Two logins, two different sessions.
	if id2 := login(t, s); id2 == m[1] {
		t.Error("same session id twice")
	}
	// The cookie opens the page; without it there is the login form.
	page := req{method: "GET", path: "/", cookie: m[1]}.do(s)
	if page.Code != 200 || !strings.Contains(page.Body.String(), `id="services"`) || !strings.Contains(page.Body.String(), `src="/static/app.js"`) {
		t.Errorf("page: %d %s", page.Code, page.Body)
	}
	form := req{method: "GET", path: "/"}.do(s)
	if form.Code != 200 || !strings.Contains(form.Body.String(), `name="token"`) || strings.Contains(form.Body.String(), `id="services"`) {
		t.Errorf("login form: %d %s", form.Code, form.Body)
	}
	// A token in the URL is not a form field.
	if w := (req{method: "POST", path: "/login?token=" + pageToken, form: true}).do(s); w.Code != http.StatusUnauthorized {
		t.Errorf("token in the query: %d", w.Code)
	}
}

func TestLoginWrongTokenThrottled(t *testing.T) {
	s := newPageServer(t, nil, &fakeClock{t: time.Unix(1.7e9, 0)})
	for i := 1; i < failFree; i++ {
		w := loginReq("wrong").do(s)
		if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "Wrong token") || len(w.Header().Values("Set-Cookie")) != 0 {
			t.Fatalf("wrong token %d: %d %q %s", i, w.Code, w.Header().Values("Set-Cookie"), w.Body)
		}
		if !strings.Contains(w.Body.String(), `name="token"`) {
			t.Fatal("no form again after a wrong token")
		}
	}
	// The right token resets the count.
	login(t, s)
	if n := s.thr.size(); n != 0 {
		t.Errorf("after a good login the throttle holds %d sources", n)
	}
	// failFree wrong tokens block the source: the form says to retry later,
	// even for the right token, and so does the API.
	for range failFree {
		loginReq(strings.ToUpper(pageToken)).do(s)
	}
	w := loginReq(pageToken).do(s)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "retry later") || len(w.Header().Values("Set-Cookie")) != 0 {
		t.Errorf("blocked login: %d %v %s", w.Code, w.Header(), w.Body)
	}
	if w := (req{method: "GET", path: "/api/v1/status", bearer: pageToken}).do(s); w.Code != http.StatusTooManyRequests {
		t.Errorf("API from the blocked source: %d", w.Code)
	}
	if w := (req{method: "GET", path: "/"}).do(s); w.Code != 200 || !strings.Contains(w.Body.String(), "retry later") {
		t.Errorf("form for the blocked source: %d %s", w.Code, w.Body)
	}
	// Another source logs in.
	q := loginReq(pageToken)
	q.from = "192.0.2.2"
	if w := q.do(s); w.Code != http.StatusSeeOther {
		t.Errorf("other source: %d", w.Code)
	}
}

func TestLoginBadForms(t *testing.T) {
	s := newPageServer(t, nil, nil)
	for _, tc := range []struct {
		name string
		q    req
		want int
	}{
		{"json", req{method: "POST", path: "/login", body: `{"token":"` + pageToken + `"}`, header: map[string]string{"Content-Type": "application/json"}}, http.StatusUnsupportedMediaType},
		{"no type", req{method: "POST", path: "/login", body: "token=" + pageToken}, http.StatusUnsupportedMediaType},
		{"too large", req{method: "POST", path: "/login", form: true, body: "token=" + pageToken + "&x=" + strings.Repeat("a", maxLoginBody)}, http.StatusRequestEntityTooLarge},
		{"malformed", req{method: "POST", path: "/login", form: true, body: "token=%zz"}, http.StatusBadRequest},
		{"cross-site", req{method: "POST", path: "/login", form: true, body: "token=" + pageToken, header: map[string]string{"Sec-Fetch-Site": "cross-site"}}, http.StatusForbidden},
		{"GET", req{method: "GET", path: "/login"}, http.StatusMethodNotAllowed},
		{"PUT /", req{method: "PUT", path: "/"}, http.StatusMethodNotAllowed},
	} {
		w := tc.q.do(s)
		if w.Code != tc.want || len(w.Header().Values("Set-Cookie")) != 0 {
			t.Errorf("%s: %d %q, want %d", tc.name, w.Code, w.Header().Values("Set-Cookie"), tc.want)
		}
	}
	// None of them tried a token, so none counts as a failure.
	if n := s.thr.size(); n != 0 {
		t.Errorf("throttle holds %d sources", n)
	}
}

func TestSessionIsReadOnly(t *testing.T) {
	b := &pageBackend{st: webStatus()}
	s := newPageServer(t, b, nil)
	id := login(t, s)
	for _, p := range []string{"/api/v1/status", "/api/v1/history"} {
		w := req{method: "GET", path: p, cookie: id}.do(s)
		if w.Code != 200 || !json.Valid(w.Body.Bytes()) {
			t.Errorf("GET %s with the cookie: %d %s", p, w.Code, w.Body)
		}
	}
	var st Status
	w := req{method: "GET", path: "/api/v1/status", cookie: id}.do(s)
	if json.Unmarshal(w.Body.Bytes(), &st) != nil || st.Services[0].Backends[1].Address != "10.0.0.2:80" {
		t.Errorf("status: %s", w.Body)
	}
	// Each refused request from its own source, so the throttle does not
	// turn the 401s into 429s.
	for i, q := range []req{
		{method: "POST", path: "/api/v1/pen", body: `{"command":"server 0 weight 0"}`},
		{method: "POST", path: "/api/v1/write"},
		{method: "POST", path: "/api/v1/reload"},
		{method: "POST", path: "/api/v1/backend", body: `{}`},
		{method: "GET", path: "/api/v1/config"},
		{method: "GET", path: "/metrics"},
		{method: "POST", path: "/api/v1/status"},
		{method: "POST", path: "/api/v1/history"},
	} {
		q.cookie, q.from = id, fmt.Sprintf("198.51.100.%d", i+1)
		if w := q.do(s); w.Code != http.StatusUnauthorized {
			t.Errorf("%s %s with the cookie: %d %s", q.method, q.path, w.Code, w.Body)
		}
	}
	if _, changes := b.counts(); changes != 0 {
		t.Errorf("the cookie changed state %d times", changes)
	}
	// The bearer token still does everything.
	if w := (req{method: "POST", path: "/api/v1/write", bearer: pageToken}).do(s); w.Code != 200 {
		t.Errorf("write with the token: %d", w.Code)
	}
}

func TestLogout(t *testing.T) {
	s := newPageServer(t, nil, nil)
	id, other := login(t, s), login(t, s)
	w := req{method: "POST", path: "/logout", cookie: id}.do(s)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		t.Fatalf("logout: %d %v", w.Code, w.Header())
	}
	if sc := w.Header().Get("Set-Cookie"); !strings.HasPrefix(sc, "nib_session=;") || !strings.Contains(sc, "Max-Age=0") {
		t.Errorf("logout Set-Cookie %q", sc)
	}
	if w := (req{method: "GET", path: "/api/v1/status", cookie: id}).do(s); w.Code != http.StatusUnauthorized {
		t.Errorf("status after logout: %d", w.Code)
	}
	if w := (req{method: "GET", path: "/", cookie: id}).do(s); strings.Contains(w.Body.String(), `id="services"`) {
		t.Error("page after logout")
	}
	// Other sessions live on.
	if w := (req{method: "GET", path: "/api/v1/status", cookie: other, from: "192.0.2.9"}).do(s); w.Code != 200 {
		t.Errorf("other session after logout: %d", w.Code)
	}
	// A cross-site logout (a forged form) is refused.
	q := req{method: "POST", path: "/logout", cookie: other, header: map[string]string{"Sec-Fetch-Site": "cross-site"}}
	if w := q.do(s); w.Code != http.StatusForbidden || !s.page.sessions.valid(other, time.Now()) {
		t.Errorf("cross-site logout: %d", w.Code)
	}
}

func TestForgedAndExpiredCookies(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1.7e9, 0)}
	s := newPageServer(t, nil, clock)
	id := login(t, s)
	forged := newSessionID()
	for i, c := range []string{forged, strings.ToUpper(id), id[:63], id + "0", "x"} {
		from := fmt.Sprintf("198.51.100.%d", i+1)
		if w := (req{method: "GET", path: "/api/v1/status", cookie: c, from: from}).do(s); w.Code != http.StatusUnauthorized {
			t.Errorf("cookie %q: %d", c, w.Code)
		}
	}
	// The page shows the form and drops a dead cookie.
	w := req{method: "GET", path: "/", cookie: forged}.do(s)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `name="token"`) || !strings.Contains(w.Header().Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("page with a forged cookie: %d %v", w.Code, w.Header())
	}
	clock.advance(sessionTTL - time.Second)
	if w := (req{method: "GET", path: "/api/v1/status", cookie: id}).do(s); w.Code != 200 {
		t.Errorf("before expiry: %d", w.Code)
	}
	clock.advance(time.Second)
	if w := (req{method: "GET", path: "/api/v1/status", cookie: id}).do(s); w.Code != http.StatusUnauthorized {
		t.Errorf("at expiry: %d", w.Code)
	}
	if n := s.page.sessions.size(); n != 0 {
		t.Errorf("expired session kept: %d", n)
	}
	// Sessions die with the Server.
	id = login(t, s)
	s2 := newPageServer(t, nil, clock)
	if w := (req{method: "GET", path: "/api/v1/status", cookie: id}).do(s2); w.Code != http.StatusUnauthorized {
		t.Errorf("another Server took the cookie: %d", w.Code)
	}
}

func TestSessionsBounded(t *testing.T) {
	var st sessions
	now := time.Unix(1.7e9, 0)
	ids := make([]string, maxSessions+10)
	for i := range ids {
		ids[i] = newSessionID()
		st.add(ids[i], now.Add(time.Duration(i)*time.Second))
	}
	if n := st.size(); n != maxSessions {
		t.Errorf("%d sessions, want %d", n, maxSessions)
	}
	later := now.Add(time.Hour)
	for i, id := range ids {
		if want := i >= 10; st.valid(id, later) != want {
			t.Errorf("session %d valid: %v, want %v (the oldest go first)", i, !want, want)
		}
	}
	// Expired sessions go before live ones.
	var st2 sessions
	for i := range maxSessions {
		c := now
		if i == maxSessions-1 {
			c = now.Add(-sessionTTL) // the newest entry, but already expired
		}
		st2.add(fmt.Sprintf("%064d", i), c)
	}
	st2.add(newSessionID(), now)
	if st2.size() != maxSessions || !st2.valid(fmt.Sprintf("%064d", 0), now) {
		t.Error("a live session was evicted while an expired one stayed")
	}
	// Through the server: the oldest login is logged out by the newest.
	clock := &fakeClock{t: now}
	s := newPageServer(t, nil, clock)
	first := login(t, s)
	for range maxSessions {
		clock.advance(time.Second)
		login(t, s)
	}
	if w := (req{method: "GET", path: "/api/v1/status", cookie: first}).do(s); w.Code != http.StatusUnauthorized {
		t.Errorf("the oldest session survived: %d", w.Code)
	}
}

func TestPageHeadersAndAssets(t *testing.T) {
	s := newPageServer(t, nil, nil)
	id := login(t, s)
	const csp = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
	for name, w := range map[string]*httptest.ResponseRecorder{
		"login form":  req{method: "GET", path: "/"}.do(s),
		"page":        req{method: "GET", path: "/", cookie: id}.do(s),
		"wrong token": loginReq("nope").do(s),
	} {
		h := w.Header()
		if h.Get("Content-Security-Policy") != csp || h.Get("X-Content-Type-Options") != "nosniff" ||
			h.Get("Referrer-Policy") != "no-referrer" || h.Get("Cache-Control") != "no-store" ||
			h.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("%s: headers %v", name, h)
		}
	}
	// No inline script or style, nothing from elsewhere.
	script := regexp.MustCompile(`<script\b([^>]*)>([^<]*)</script>`)
	inline := regexp.MustCompile(`(?i)\son[a-z]+\s*=|\sstyle\s*=|<style|https?://|javascript:`)
	for _, n := range []string{"web/index.html", "web/login.html"} {
		b := string(mustRead(n))
		tags := script.FindAllStringSubmatch(b, -1)
		if len(tags) != strings.Count(b, "<script") {
			t.Errorf("%s: a script tag not closed at once", n)
		}
		for _, m := range tags {
			if !strings.Contains(m[1], `src="/static/`) || strings.TrimSpace(m[2]) != "" {
				t.Errorf("%s: inline script %q", n, m[0])
			}
		}
		if m := inline.FindString(b); m != "" {
			t.Errorf("%s: %q", n, m)
		}
	}
	for _, n := range []string{"web/app.js", "web/style.css"} {
		if m := regexp.MustCompile(`https?://[^"]*`).FindAll(mustRead(n), -1); len(m) != 0 && !(len(m) == 1 && string(m[0]) == "http://www.w3.org/2000/svg") {
			t.Errorf("%s refers elsewhere: %q", n, m)
		}
	}
	for _, tc := range []struct{ path, ctype string }{
		{"/static/app.js", "text/javascript; charset=utf-8"},
		{"/static/style.css", "text/css; charset=utf-8"},
	} {
		w := req{method: "GET", path: tc.path}.do(s) // no authentication needed
		want := mustRead("web/" + strings.TrimPrefix(tc.path, "/static/"))
		if w.Code != 200 || w.Header().Get("Content-Type") != tc.ctype || w.Body.String() != string(want) ||
			w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d %v", tc.path, w.Code, w.Header())
		}
		etag := w.Header().Get("ETag")
		q := req{method: "GET", path: tc.path, header: map[string]string{"If-None-Match": etag}}
		if w := q.do(s); etag == "" || w.Code != http.StatusNotModified {
			t.Errorf("%s revalidated: %d (ETag %q)", tc.path, w.Code, etag)
		}
	}
	for _, p := range []string{"/static/nope.js", "/static/", "/static/../page.go", "/static/index.html", "/favicon.ico"} {
		if w := (req{method: "GET", path: p}).do(s); w.Code != http.StatusNotFound {
			t.Errorf("%s: %d", p, w.Code)
		}
	}
	// Other paths are the API's.
	if w := (req{method: "GET", path: "/index.html", from: "192.0.2.7"}).do(s); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), `"unauthorized"`) {
		t.Errorf("/index.html: %d %s", w.Code, w.Body)
	}
	if n := s.thr.size(); n != 2 { // the wrong token and /index.html
		t.Errorf("throttle holds %d sources, want 2", n)
	}
}

// The cookie works from a real HTTPS client with a cookie jar, which keeps
// a Secure cookie for https only.
func TestStatusPageOverHTTPS(t *testing.T) {
	s, base := start(t, Options{Backend: &pageBackend{st: webStatus()}})
	c := client(s.o.Secrets.Fingerprint, "")
	jar, _ := cookiejar.New(nil)
	c.Jar = jar
	resp, err := c.PostForm(base+"/login", url.Values{"token": {s.o.Secrets.Token}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/" || !strings.Contains(string(body), `id="services"`) {
		t.Fatalf("after login: %d %s %s", resp.StatusCode, resp.Request.URL, body)
	}
	if code, body, _ := do(t, c, "GET", base+"/api/v1/status", "", nil); code != 200 || !strings.Contains(body, "10.0.0.1:80") {
		t.Errorf("status with the cookie: %d %s", code, body)
	}
	if code, _, _ := do(t, c, "GET", base+"/api/v1/config", "", nil); code != 401 {
		t.Errorf("config with the cookie: %d", code)
	}
}

func TestHistoryRates(t *testing.T) {
	t0 := time.Unix(1.7e9, 0)
	var h history
	h.init(5 * time.Second)
	st := webStatus()
	st.Services = append(st.Services, ServiceStatus{Name: "dns", Mode: "dsr",
		Backends: []BackendStatus{{Index: 0, Address: "10.0.1.1", Sent: 1000, Packets: 10}}})
	h.record(st, t0)
	if n := len(h.points()); n != 0 {
		t.Fatalf("the baseline made %d points", n)
	}
	next := cloneStatus(st)
	web := &next.Services[0]
	web.Active = 7
	web.Accepted = 50
	web.Backends[0].Sent, web.Backends[0].Received = 4000, 500
	web.Backends[1].Sent, web.Backends[1].Received = 1000, 0
	next.Services[1].Backends[0].Sent, next.Services[1].Backends[0].Packets = 6000, 60
	h.record(next, t0.Add(5*time.Second))
	pts := h.points()
	if len(pts) != 1 || !pts[0].Time.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("points %+v", pts)
	}
	want := []ServiceSample{
		{Name: "web", Active: 7, Accepted: 10, Sent: 1000, Received: 100},
		{Name: "dns", Sent: 1000, Packets: 10},
	}
	if got := pts[0].Services; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rates\n got %+v\nwant %+v", got, want)
	}

	// lbd reloaded: web's counters restarted (negative deltas count as 0),
	// one backend was replaced (no previous sample: 0), and a new service
	// appeared (0).
	third := cloneStatus(next)
	web = &third.Services[0]
	web.Accepted = 20
	web.Backends[0].Sent, web.Backends[0].Received = 4200, 520 // +200, +20
	web.Backends[1] = BackendStatus{Index: 1, Address: "10.0.0.3:80", Sent: 9999}
	third.Services = append(third.Services, ServiceStatus{Name: "new", Accepted: 1000})
	h.record(third, t0.Add(15*time.Second))
	got := h.points()[1].Services
	want = []ServiceSample{
		{Name: "web", Active: 7, Accepted: 0, Sent: 20, Received: 2},
		{Name: "dns"},
		{Name: "new"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after a reload\n got %+v\nwant %+v", got, want)
	}
	// A clock that did not move adds nothing.
	h.record(third, t0.Add(15*time.Second))
	if n := len(h.points()); n != 2 {
		t.Errorf("%d points after a zero interval", n)
	}
}

func TestHistoryRingBounded(t *testing.T) {
	if n := historyCap(DefaultHistoryInterval); n != 120 {
		t.Errorf("cap at 5s: %d, want 120", n)
	}
	if n := historyCap(time.Millisecond); n != maxHistoryPoints {
		t.Errorf("cap at 1ms: %d", n)
	}
	if n := historyCap(time.Hour); n != 2 {
		t.Errorf("cap at 1h: %d", n)
	}
	var h history
	h.init(time.Minute) // 10 points
	t0 := time.Unix(1.7e9, 0)
	for i := range 25 {
		h.record(webStatus(), t0.Add(time.Duration(i)*time.Minute))
	}
	pts := h.points()
	if len(pts) != 10 {
		t.Fatalf("%d points, want 10", len(pts))
	}
	for i, p := range pts { // the last 10 of 24, oldest first
		if want := t0.Add(time.Duration(15+i) * time.Minute); !p.Time.Equal(want) {
			t.Errorf("point %d at %v, want %v", i, p.Time, want)
		}
	}
}

// The sampler samples every HistoryInterval and stops with the Server.
func TestHistorySampler(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1.7e9, 0)}
	// Each snapshot: +10 accepted, +1000 bytes sent and +100 received per
	// backend, and one second later on the clock.
	b := &pageBackend{st: webStatus(), step: 10, tick: time.Second, clock: clock}
	s := newPageServer(t, b, clock)
	s.o.HistoryInterval = 10 * time.Millisecond
	s.startSampler()
	// As Close stops it: Stop signals, Wait waits.
	stopSampler := func() { s.signalSampler(); s.waitSampler() }
	defer stopSampler()
	var hr HistoryReply
	deadline := time.Now().Add(10 * time.Second)
	for len(hr.Points) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d points", len(hr.Points))
		}
		time.Sleep(10 * time.Millisecond)
		w := req{method: "GET", path: "/api/v1/history", bearer: pageToken}.do(s)
		hr = HistoryReply{}
		if err := json.Unmarshal(w.Body.Bytes(), &hr); w.Code != 200 || err != nil {
			t.Fatalf("history: %d %s %v", w.Code, w.Body, err)
		}
	}
	if hr.IntervalSeconds != 0.01 {
		t.Errorf("interval_seconds %v", hr.IntervalSeconds)
	}
	for i, p := range hr.Points {
		want := ServiceSample{Name: "web", Accepted: 10, Sent: 2000, Received: 200}
		if len(p.Services) != 1 || p.Services[0] != want {
			t.Errorf("point %d: %+v, want %+v", i, p.Services, want)
		}
		if i > 0 && p.Time.Sub(hr.Points[i-1].Time) != time.Second {
			t.Errorf("point %d %v after the one before", i, p.Time.Sub(hr.Points[i-1].Time))
		}
	}
	// The reply's JSON names.
	w := req{method: "GET", path: "/api/v1/history", bearer: pageToken}.do(s)
	for _, k := range []string{`"interval_seconds":0.01`, `"points":[{"time":"`, `"accepted_per_second":10`, `"sent_bytes_per_second":2000`, `"received_bytes_per_second":200`, `"packets_per_second":0`, `"active":0`} {
		if !strings.Contains(w.Body.String(), k) {
			t.Errorf("history JSON lacks %s: %s", k, w.Body)
		}
	}
	stopSampler()
	calls, _ := b.counts()
	time.Sleep(50 * time.Millisecond)
	if after, _ := b.counts(); after != calls {
		t.Errorf("%d snapshots after stopSampler", after-calls)
	}
	stopSampler() // again: a no-op
}

// Without a running sampler the history is empty, not an error.
func TestHistoryEmpty(t *testing.T) {
	s := newPageServer(t, nil, nil)
	w := req{method: "GET", path: "/api/v1/history", bearer: pageToken}.do(s)
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"interval_seconds":5,"points":[]}` {
		t.Errorf("history: %d %s", w.Code, w.Body)
	}
}

// FuzzLogin posts arbitrary forms to /login: it never panics, never answers
// 200, and starts a session only for the right token.
func FuzzLogin(f *testing.F) {
	f.Add("application/x-www-form-urlencoded", []byte("token="+pageToken))
	f.Add("application/x-www-form-urlencoded; charset=utf-8", []byte("token=+"+pageToken+"+&token=x"))
	f.Add("application/x-www-form-urlencoded", []byte("token=wrong"))
	f.Add("application/x-www-form-urlencoded", []byte("token=%zz"))
	f.Add("multipart/form-data; boundary=x", []byte("--x\r\n"))
	f.Add("", []byte(strings.Repeat("a", maxLoginBody+1)))
	f.Fuzz(func(t *testing.T, ctype string, body []byte) {
		if len(body) > 2*maxLoginBody {
			return
		}
		s := New(Options{Backend: &pageBackend{}, Secrets: Secrets{Token: pageToken}, Logf: func(string, ...any) {}})
		w := req{method: "POST", path: "/login", body: string(body), header: map[string]string{"Content-Type": ctype}}.do(s)
		switch w.Code {
		case http.StatusSeeOther:
			v, err := url.ParseQuery(string(body))
			if err != nil || strings.TrimSpace(v.Get("token")) != pageToken || s.page.sessions.size() != 1 {
				t.Fatalf("session for %q %q", ctype, body)
			}
		case http.StatusUnauthorized, http.StatusBadRequest, http.StatusUnsupportedMediaType, http.StatusRequestEntityTooLarge:
			if s.page.sessions.size() != 0 || len(w.Header().Values("Set-Cookie")) != 0 {
				t.Fatalf("%d with a session for %q %q", w.Code, ctype, body)
			}
		default:
			t.Fatalf("%d for %q %q", w.Code, ctype, body)
		}
	})
}
