package dummy

import (
	"io"
	"net/http"
	"net/netip"
	"testing"
)

func TestDummyAnswers(t *testing.T) {
	s, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), "hello\n")
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
