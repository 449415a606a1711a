package control

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzHandler sends arbitrary requests through the handler: it never
// panics, and never answers 200 without the token except for the status
// page's public parts (its login form and assets), which show nothing of
// lbd's state.
func FuzzHandler(f *testing.F) {
	const token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	f.Add("POST", "/api/v1/pen", "Bearer "+token, []byte(`{"command":"servers"}`))
	f.Add("GET", "/api/v1/status", "Bearer "+token, []byte(nil))
	f.Add("GET", "/api/v1/config", "Bearer nope", []byte(nil))
	f.Add("POST", "/api/v1/reload", "", []byte("x"))
	f.Add("PUT", "/../api/v1/write", "bearer "+token, []byte(`{}`))
	f.Add("GET", "/", "", []byte(nil))
	f.Add("GET", "/static/app.js", "", []byte(nil))
	f.Add("POST", "/login", "", []byte("token="+token))
	f.Fuzz(func(t *testing.T, method, path, auth string, body []byte) {
		raw := method + " " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + "\r\n\r\n"
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader([]byte(raw))))
		if err != nil {
			return
		}
		req.Body = httpNoClose{bytes.NewReader(body)}
		req.ContentLength = int64(len(body))
		req.RemoteAddr = "192.0.2.1:1234"
		s := New(Options{Backend: &fakeBackend{}, Secrets: Secrets{Token: token}, Logf: func(string, ...any) {}})
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code != http.StatusOK || s.authorized(req) {
			return
		}
		public := (req.Method == http.MethodGet || req.Method == http.MethodHead) &&
			(req.URL.Path == "/" || strings.HasPrefix(req.URL.Path, "/static/"))
		if !public {
			t.Fatalf("200 without the token: %q", raw)
		}
		if b := w.Body.String(); strings.Contains(b, "127.0.0.1:80") || strings.Contains(b, "ran ") {
			t.Fatalf("the public page shows lbd's state: %q → %q", raw, b)
		}
	})
}

type httpNoClose struct{ *bytes.Reader }

func (httpNoClose) Close() error { return nil }
