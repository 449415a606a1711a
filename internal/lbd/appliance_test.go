package lbd

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nib-lb/nib/config"
)

// httpGet fetches url and returns the body; it fails the test on errors or a
// status other than 200.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// A reload that keeps a dummy's address but changes its body serves the new
// body (the listener is kept).
func TestReloadChangesDummyBody(t *testing.T) {
	addr := freePort(t)
	cfg := &config.Config{Dummies: []config.Dummy{{Listen: addr, Body: "one\n"}}}
	d, _ := newDaemon(t, cfg)
	url := "http://" + addr.String() + "/"
	if got := httpGet(t, url); got != "one\n" {
		t.Fatalf("before reload: %q", got)
	}
	cfg.Dummies[0].Body = "two\n"
	if err := d.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if got := httpGet(t, url); got != "two\n" {
		t.Fatalf("after reload: %q", got)
	}
}
