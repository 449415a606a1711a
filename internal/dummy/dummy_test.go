package dummy

import (
	"io"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"sync/atomic"
	"testing"
)

func get(t *testing.T, method, url string) (string, int64) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: status %d", method, url, resp.StatusCode)
	}
	return string(body), resp.ContentLength
}

func TestDummyAnswers(t *testing.T) {
	s, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), "hello\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	url := "http://" + s.Addr().String() + "/any/path"
	for _, method := range []string{"GET", "POST", "HEAD"} {
		req, _ := http.NewRequest(method, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := "hello\n"
		if method == "HEAD" {
			want = ""
		}
		if resp.StatusCode != 200 || string(body) != want || resp.ContentLength != 6 {
			t.Errorf("%s: %d %q (length %d)", method, resp.StatusCode, body, resp.ContentLength)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(url); err == nil {
		t.Error("still answering after Close")
	}
}

// Placeholders are expanded on every request with the facts of that moment;
// unknown names and malformed braces stay as written.
func TestDummyPlaceholders(t *testing.T) {
	var n atomic.Int64
	facts := func(name string) (string, bool) {
		switch name {
		case "count":
			return strconv.FormatInt(n.Add(1), 10), true
		case "addr":
			return "192.0.2.1, 2001:db8::1", true
		}
		return "", false
	}
	s, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), "n={{count}} at {{addr}}; {{other}} {{ count }} {{{addr}}} {{", facts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	url := "http://" + s.Addr().String() + "/"
	for i := 1; i <= 2; i++ {
		want := "n=" + strconv.Itoa(i) + " at 192.0.2.1, 2001:db8::1; {{other}} {{ count }} {192.0.2.1, 2001:db8::1} {{"
		body, length := get(t, "GET", url)
		if body != want || length != int64(len(want)) {
			t.Fatalf("request %d: %q (length %d), want %q", i, body, length, want)
		}
	}
	body, length := get(t, "HEAD", url)
	if body != "" || length != int64(len("n=3 at 192.0.2.1, 2001:db8::1; {{other}} {{ count }} {192.0.2.1, 2001:db8::1} {{")) {
		t.Fatalf("HEAD: %q, length %d", body, length)
	}

	s.SetBody("now {{addr}}")
	if body, _ := get(t, "GET", url); body != "now 192.0.2.1, 2001:db8::1" {
		t.Fatalf("after SetBody: %q", body)
	}
}

// Without Facts a body is sent exactly as written.
func TestDummyNoFacts(t *testing.T) {
	s, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), "{{addresses}}", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if body, _ := get(t, "GET", "http://"+s.Addr().String()+"/"); body != "{{addresses}}" {
		t.Fatalf("%q", body)
	}
}

func TestSplit(t *testing.T) {
	for in, want := range map[string][]string{
		"":                   {""},
		"plain":              {"plain"},
		"{{a}}":              {"", "a", ""},
		"x{{a}}y{{b_1}}z":    {"x", "a", "y", "b_1", "z"},
		"{{A}} {{}} {{a b}}": {"{{A}} {{}} {{a b}}"},
		"{{a}":               {"{{a}"},
		"{{{a}}}":            {"{", "a", "}"},
	} {
		if got := split(in); !reflect.DeepEqual(got, want) {
			t.Errorf("split(%q) = %q, want %q", in, got, want)
		}
	}
}
