package lbd

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/netnstest"
	"github.com/nib-lb/nib/internal/pen"
)

// lbdIn runs the lbd binary in a host's namespace until the test ends.
func lbdIn(t *testing.T, h *netnstest.Host, args ...string) *syncBuffer {
	t.Helper()
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	cmd := h.Command(ctx, lbdBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("lbd output:\n%s", out.String())
		}
	})
	return &out
}

// The seed's DSR and tarpit command lines, with lbd in place of pen, on the
// LB's one interface (which keeps its own address): HTTP through the VIP,
// ARP answered for the VIP and the tarpit address only, tarpit holding a
// request, and the control verbs reading the DSR counters.
func TestLinuxDSRSeedCommandLine(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	tp := netnstest.New(t, netnstest.Options{})
	vip := tp.VIP().String()
	for _, be := range tp.Backends() {
		name := be.Name()
		netnstest.ServeHTTP(t, be, vip+":80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
	}
	ctl := t.TempDir() + "/ctl"
	trap, outside := "198.51.100.77", "198.51.100.78"
	out := lbdIn(t, tp.LB(), "-df", "-C", ctl, "-w", t.TempDir()+"/web.html", "-r",
		"-O", "acl 1 permit "+trap, "-O", "tarpit_acl 1", "-O", "dsr_if eth0",
		vip+":80", tp.Backends()[0].Addr().String(), tp.Backends()[1].Addr().String())
	out.waitFor(t, "forwarding", 10*time.Second)

	client := tp.Client()
	hc := client.HTTPClient(t)
	hc.Timeout = 3 * time.Second
	hc.Transport.(*http.Transport).DisableKeepAlives = true
	seen := map[string]int{}
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; i < 40; {
		// The first requests wait for lbd to claim the VIP and resolve
		// the backends.
		resp, err := hc.Get("http://" + vip + "/")
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("request %d: %v", i, err)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[string(b)]++
		i++
	}
	if seen["be1"] == 0 || seen["be2"] == 0 {
		t.Fatalf("answers by backend: %v", seen)
	}
	// The client learned the VIP at the LB's MAC (lbd answered ARP).
	if n, ok := netnstest.ARPEntry(t, client, tp.VIP()); !ok || n.MAC.String() != tp.LB().MAC().String() {
		t.Fatalf("client's entry for the VIP: %+v", n)
	}

	// The control verbs see the DSR counters (sx: bytes to each backend).
	var sb strings.Builder
	if err := pen.Send(ctl, []string{"servers"}, &sb); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(sb.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "addr "+tp.Backends()[0].Addr().String()) || strings.Contains(lines[0], " sx 0 ") {
		t.Fatalf("servers:\n%s", sb.String())
	}

	sb.Reset()
	if err := pen.Send(ctl, []string{"status"}, &sb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DSR on eth0", "Frames received", "Dropped:", "ARP: requests seen", "VIP " + vip + ": claimed"} {
		if !strings.Contains(sb.String(), want) {
			t.Fatalf("status lacks %q:\n%s", want, sb.String())
		}
	}

	// The tarpit address is answered (after lbd's probe found nobody
	// else using it), and a request to it never completes.
	tc := client.HTTPClient(t)
	tc.Timeout = 2 * time.Second
	for range 3 {
		if resp, err := tc.Get("http://" + trap + "/"); err == nil {
			resp.Body.Close()
			t.Fatal("a request to the tarpit completed")
		}
	}
	if n, ok := netnstest.ARPEntry(t, client, netip.MustParseAddr(trap)); !ok || n.MAC.String() != tp.LB().MAC().String() {
		t.Fatalf("client's entry for the tarpit address: %+v", n)
	}
	// An address outside the tarpit ACL gets no ARP reply.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if c, err := client.Dial(ctx, "tcp", outside+":80"); err == nil {
		c.Close()
		t.Fatal("connected to an address outside the tarpit ACL")
	}
	if n, ok := netnstest.ARPEntry(t, client, netip.MustParseAddr(outside)); ok && n.MAC != nil {
		t.Fatalf("%s resolved to %v", outside, n.MAC)
	}
}
