package lbd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/nib-lb/nib/internal/needs"
)

// browserTimeout bounds everything the browser does in a test.
const browserTimeout = 60 * time.Second

// newBrowser starts a headless Chromium for t and returns its tab's
// context. It trusts any certificate: lbd's is self-signed, made for the
// test.
func newBrowser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // the tests run as root
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(1200, 900),
	)
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(func() { bcancel(); acancel(); cancel() })
	return bctx
}

// waitJS evaluates the JavaScript expression until its result (decoded
// into T) satisfies ok, for at most d, and returns the last result. Errors
// while a page loads (the expression runs in whatever page is there) are
// retried.
func waitJS[T any](t *testing.T, ctx context.Context, d time.Duration, what, expr string, ok func(T) bool) T {
	t.Helper()
	deadline := time.Now().Add(d)
	var v T
	var err error
	for {
		v, err = chromedp.Run(ctx, chromedp.Evaluate[T](expr))
		if err == nil && ok(v) {
			return v
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: not after %v: last %+v, %v", what, d, v, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pageCounters are the numbers the test reads off the status page.
type pageCounters struct {
	Address     string  `json:"address"`
	State       string  `json:"state"`
	Accepted    float64 `json:"accepted"`
	Sent        float64 `json:"sent"`
	Connects    float64 `json:"connects"`
	Reloads     string  `json:"reloads"`
	Received    float64 `json:"received"`
	ChartPoints float64 `json:"chart_points"`
	ChartPeak   float64 `json:"chart_peak"`
	Updated     string  `json:"updated"`
	Error       string  `json:"error"`
}

// countersJS reads pageCounters for service "web" and its backend 0.
const countersJS = `(() => {
	const svc = document.querySelector('section.service[data-service="web"]');
	if (!svc) return null;
	const num = (sel) => { const e = svc.querySelector(sel); return e ? Number(e.dataset.value) : -1; };
	const be = svc.querySelector('tr[data-backend="0"]');
	const chart = svc.querySelector('figure.chart-rate');
	const err = document.getElementById('error');
	return {
		address: be ? be.querySelector('.be-address').textContent : "",
		state: be ? be.dataset.state : "",
		accepted: num('.svc-accepted'),
		sent: num('tr[data-backend="0"] .be-sent'),
		connects: num('tr[data-backend="0"] .be-connects'),
		reloads: document.getElementById('reloads').textContent,
		received: num('tr[data-backend="0"] .be-received'),
		chart_points: chart ? Number(chart.dataset.points) : -1,
		chart_peak: chart ? Number(chart.dataset.peak) : -1,
		updated: document.getElementById('updated').textContent,
		error: err && !err.hidden ? err.textContent : "",
	};
})()`

// The status page in headless Chromium, against a real lbd: log in with
// the token, see the backend and its counters, watch them change under
// traffic, and keep a screenshot.
func TestStatusPageBrowser(t *testing.T) {
	chromium := needs.Tool(t, "chromium")
	x := startAPIAppliance(t)
	base := "https://" + x.apiAddr.String()
	ctx := newBrowser(t, chromium)

	// Uncaught exceptions and console errors other than failed requests
	// (a CSP violation is one) fail the test.
	var mu sync.Mutex
	var jsErrors []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg := ev.ExceptionDetails.Text
			if e := ev.ExceptionDetails.Exception; e != nil {
				msg += " " + e.Description
			}
			jsErrors = append(jsErrors, msg)
		case *cdplog.EventEntryAdded:
			if e := ev.Entry; e.Level == cdplog.EntryLevelError && e.Source != cdplog.EntrySourceNetwork {
				jsErrors = append(jsErrors, fmt.Sprintf("%s: %s (%s)", e.Source, e.Text, e.URL))
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{})
		return err
	})); err != nil {
		t.Fatal(err)
	}

	// Not logged in: the form.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("token"))); err != nil {
		t.Fatalf("login form: %v", err)
	}
	// A wrong token: the form again, saying so.
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("token"), strings.Repeat("0", 64)), chromedp.Click(chromedp.ID("login"))); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 10*time.Second, "wrong token message",
		`(document.getElementById('login-message') || {}).textContent || ""`,
		func(s string) bool { return strings.Contains(s, "Wrong token") })

	// The right token: the page, with service web and its backend.
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("token"), x.a.token), chromedp.Click(chromedp.ID("login"))); err != nil {
		t.Fatal(err)
	}
	before := waitJS(t, ctx, 10*time.Second, "service web on the page", countersJS, func(c *pageCounters) bool {
		return c != nil && c.Address == x.dummyAddr.String()
	})
	if before.State != "ok" || before.Accepted < 0 || before.Sent < 0 || before.Connects < 0 || before.Error != "" || before.Updated == "never" ||
		before.Reloads != "0 applied, 0 rejected, 0 failed" {
		t.Errorf("page before traffic: %+v", before)
	}

	// Traffic through lbd: the counters on the page follow.
	const n = 20
	for range n {
		if got := httpGet(t, "http://"+x.svcAddr.String()+"/"); got != "v1" {
			t.Fatalf("through lbd: %q", got)
		}
	}
	after := waitJS(t, ctx, 25*time.Second, "counters and chart after traffic", countersJS, func(c *pageCounters) bool {
		return c != nil && c.Accepted >= before.Accepted+n && c.Connects >= before.Connects+n && c.Sent > before.Sent && c.Received > before.Received &&
			c.ChartPoints >= 2 && c.ChartPeak > 0
	})
	t.Logf("page before: %+v", *before)
	t.Logf("page after %d requests: %+v", n, *after)
	if after.Error != "" {
		t.Errorf("error banner: %q", after.Error)
	}
	if polylines := waitJS(t, ctx, time.Second, "chart lines", `document.querySelectorAll('section[data-service="web"] figure.chart polyline').length`,
		func(int) bool { return true }); polylines < 3 { // connections/s; to and from backends
		t.Errorf("%d chart lines", polylines)
	}

	// The session cookie, as the browser keeps it.
	checkSessionCookie(t, ctx, base)
	if c := waitJS(t, ctx, time.Second, "document.cookie", `document.cookie`, func(string) bool { return true }); strings.Contains(c, "nib_session") {
		t.Errorf("the session cookie is visible to JavaScript: %q", c)
	}

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", saveArtifact(t, "statuspage.png", shot))

	// Logging out ends the session: the form again, the cookie gone, and
	// the API refuses a read.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token"))); err != nil {
		t.Fatalf("logout: %v", err)
	}
	code, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch('/api/v1/status').then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || code != 401 {
		t.Errorf("status after logout: %d %v", code, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, e := range jsErrors {
		t.Errorf("JavaScript error: %s", e)
	}
}

// checkSessionCookie checks the browser's nib_session cookie for base.
func checkSessionCookie(t *testing.T, ctx context.Context, base string) {
	t.Helper()
	res, err := chromedp.Run(ctx, func(ctx context.Context, tg *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
	})
	if err != nil {
		t.Fatal(err)
	}
	var found *network.Cookie
	for _, c := range res.Cookies {
		if c.Name == "nib_session" {
			found = c
		}
	}
	if found == nil {
		b, _ := json.Marshal(res.Cookies)
		t.Fatalf("no nib_session cookie: %s", b)
	}
	left := time.Until(time.Unix(int64(found.Expires), 0))
	if !found.HTTPOnly || !found.Secure || found.SameSite != network.CookieSameSiteStrict || found.Path != "/" ||
		len(found.Value) != 64 || found.Session || left < 12*time.Hour-time.Minute || left > 12*time.Hour+time.Minute {
		t.Errorf("session cookie: %+v (expires in %v)", *found, left)
	}
}

// saveArtifact writes a test artifact into $NIB_ARTIFACTS, or a directory
// in the temporary directory, and returns its path.
func saveArtifact(t *testing.T, name string, data []byte) string {
	t.Helper()
	dir := os.Getenv("NIB_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "nib-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
