package httpxff

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nib-lb/nib/internal/tcptest"
)

// relay is a test-only TCP proxy: client→backend through a Rewriter,
// backend→client copied as is through the Rewriter's Responses. A request
// the Rewriter rejects gets a 400.
type relay struct {
	addr     string
	backend  string
	accepted atomic.Int32
}

func startRelay(t *testing.T, backend string) *relay {
	t.Helper()
	rl := &relay{backend: backend}
	rl.addr = tcptest.Serve(t, func(c net.Conn) {
		rl.accepted.Add(1)
		rl.serve(t, c)
	}).String()
	return rl
}

func (rl *relay) serve(t *testing.T, c net.Conn) {
	defer c.Close()
	b, err := net.Dial("tcp", rl.backend)
	if err != nil {
		t.Errorf("dial backend: %v", err)
		return
	}
	defer b.Close()
	rw := New(c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(), "http", 0)
	answered := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp := rw.Responses()
		buf := make([]byte, 4096)
		for {
			n, err := b.Read(buf)
			settled := resp.Feed(buf[:n])
			if n > 0 {
				if _, err := c.Write(buf[:n]); err != nil {
					settled = resp.Close() || settled
				}
			}
			if err != nil {
				settled = resp.Close() || settled
			}
			if settled {
				select {
				case answered <- struct{}{}:
				default:
				}
			}
			if err != nil {
				return
			}
		}
	}()

	buf := make([]byte, 4096)
	var out []byte
	for {
		n, rerr := c.Read(buf)
		out, err = rw.Feed(out[:0], buf[:n])
		for err == nil && rw.Waiting() {
			if _, werr := b.Write(out); werr != nil {
				return
			}
			<-answered
			out, err = rw.Resume(out[:0])
		}
		if _, werr := b.Write(out); werr != nil {
			return
		}
		if err != nil {
			b.Close()
			<-done
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
			return
		}
		if rerr != nil {
			b.(*net.TCPConn).CloseWrite()
			<-done
			return
		}
	}
}

type seen struct {
	Path, XFF, XFP, Body string
	NXFF                 int
}

func TestEndToEnd(t *testing.T) {
	var (
		mu   sync.Mutex
		got  []seen
		ipsa = map[string]bool{}
	)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("%s: reading body: %v", r.URL.Path, err)
		}
		mu.Lock()
		got = append(got, seen{
			Path: r.URL.Path,
			XFF:  strings.Join(r.Header["X-Forwarded-For"], " | "),
			NXFF: len(r.Header["X-Forwarded-For"]),
			XFP:  strings.Join(r.Header["X-Forwarded-Proto"], " | "),
			Body: string(body),
		})
		ipsa[r.RemoteAddr] = true
		mu.Unlock()
		io.WriteString(w, "ok "+r.URL.Path)
	}))
	defer backend.Close()
	rl := startRelay(t, backend.Listener.Addr().String())

	tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	base := "http://" + rl.addr
	smuggle := "GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"

	reqs := []func() (*http.Request, error){
		func() (*http.Request, error) { return http.NewRequest("GET", base+"/1", nil) },
		func() (*http.Request, error) {
			r, err := http.NewRequest("GET", base+"/2-spoofed", nil)
			if err == nil {
				r.Header.Set("X-Forwarded-For", "6.6.6.6")
				r.Header.Set("X-Forwarded-Proto", "https")
			}
			return r, err
		},
		func() (*http.Request, error) {
			return http.NewRequest("POST", base+"/3-post", strings.NewReader(smuggle))
		},
		func() (*http.Request, error) {
			// A reader of unknown length makes the client send chunks.
			r, err := http.NewRequest("POST", base+"/4-chunked", io.MultiReader(strings.NewReader(smuggle)))
			if err == nil {
				r.Header.Set("X-Forwarded-For", "10.1.1.1")
			}
			return r, err
		},
		func() (*http.Request, error) {
			r, err := http.NewRequest("GET", base+"/5-two-lines", nil)
			if err == nil {
				r.Header.Add("X-Forwarded-For", "10.0.0.1")
				r.Header.Add("X-Forwarded-For", "10.0.0.2")
			}
			return r, err
		},
		func() (*http.Request, error) {
			// The backend ignores the upgrade and answers 200 on the same
			// connection, so the next request is HTTP/1 again.
			r, err := http.NewRequest("GET", base+"/6-upgrade-ignored", nil)
			if err == nil {
				r.Header.Set("Upgrade", "foo")
			}
			return r, err
		},
		func() (*http.Request, error) {
			r, err := http.NewRequest("GET", base+"/7-after-upgrade", nil)
			if err == nil {
				r.Header.Set("X-Forwarded-For", "spoofed")
			}
			return r, err
		},
	}
	for _, mk := range reqs {
		req, err := mk()
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(body) != "ok "+req.URL.Path {
			t.Fatalf("%s %s: %d %q %v", req.Method, req.URL.Path, resp.StatusCode, body, err)
		}
	}

	want := []seen{
		{Path: "/1", XFF: "127.0.0.1", NXFF: 1, XFP: "http"},
		{Path: "/2-spoofed", XFF: "6.6.6.6, 127.0.0.1", NXFF: 1, XFP: "http"},
		{Path: "/3-post", XFF: "127.0.0.1", NXFF: 1, XFP: "http", Body: smuggle},
		{Path: "/4-chunked", XFF: "10.1.1.1, 127.0.0.1", NXFF: 1, XFP: "http", Body: smuggle},
		{Path: "/5-two-lines", XFF: "10.0.0.1, 10.0.0.2, 127.0.0.1", NXFF: 1, XFP: "http"},
		{Path: "/6-upgrade-ignored", XFF: "127.0.0.1", NXFF: 1, XFP: "http"},
		{Path: "/7-after-upgrade", XFF: "spoofed, 127.0.0.1", NXFF: 1, XFP: "http"},
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("backend saw (-want +got):\n%s", diff)
	}
	if n := rl.accepted.Load(); n != 1 || len(ipsa) != 1 {
		t.Errorf("relay accepted %d connections, backend saw %d; want 1 keep-alive connection", n, len(ipsa))
	}
}

// TestEndToEndBadRequest checks that a rejected request reaches the client
// as a 400 and the backend never sees it.
func TestEndToEndBadRequest(t *testing.T) {
	var hits atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
	}))
	defer backend.Close()
	rl := startRelay(t, backend.Listener.Addr().String())

	c, err := net.Dial("tcp", rl.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status = %d, want 400", resp.StatusCode)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("connection not closed after 400: %v", err)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("backend handled %d requests, want 0", n)
	}
}

// TestEndToEndUpgrade checks both outcomes of an upgrade on one raw
// keep-alive connection: the backend first ignores "Upgrade: foo" (the next
// request is rewritten), then switches protocols (what follows reaches it
// unchanged, even bytes that look like a request).
func TestEndToEndUpgrade(t *testing.T) {
	const tunnelled = "\x81\x04pingGET / HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
	var (
		mu   sync.Mutex
		xffs []string
	)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		xffs = append(xffs, r.URL.Path+" "+strings.Join(r.Header["X-Forwarded-For"], " | "))
		mu.Unlock()
		if r.URL.Path != "/switch" {
			io.WriteString(w, "ok")
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n")
		buf := make([]byte, len(tunnelled))
		if _, err := io.ReadFull(brw, buf); err != nil {
			t.Errorf("reading tunnelled bytes: %v", err)
			return
		}
		c.Write(buf) // echo
	}))
	defer backend.Close()
	rl := startRelay(t, backend.Listener.Addr().String())

	c, err := net.Dial("tcp", rl.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	roundTrip := func(req string, wantStatus int) {
		t.Helper()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != wantStatus {
			t.Fatalf("status = %d, want %d", resp.StatusCode, wantStatus)
		}
		if wantStatus != http.StatusSwitchingProtocols {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	roundTrip("GET /ignored HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n", 200)
	roundTrip("GET /next HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: spoofed\r\n\r\n", 200)
	roundTrip("GET /switch HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\nConnection: Upgrade\r\nX-Forwarded-For: spoofed\r\n\r\n", 101)
	io.WriteString(c, tunnelled)
	echo := make([]byte, len(tunnelled))
	if _, err := io.ReadFull(br, echo); err != nil {
		t.Fatal(err)
	}
	if string(echo) != tunnelled {
		t.Errorf("tunnelled bytes came back as %q, want %q", echo, tunnelled)
	}

	want := []string{"/ignored 127.0.0.1", "/next spoofed, 127.0.0.1", "/switch spoofed, 127.0.0.1"}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, xffs); diff != "" {
		t.Errorf("backend saw (-want +got):\n%s", diff)
	}
	if n := rl.accepted.Load(); n != 1 {
		t.Errorf("relay accepted %d connections, want 1", n)
	}
}
