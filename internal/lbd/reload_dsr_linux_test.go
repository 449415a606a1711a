package lbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/netnstest"
)

// The DSR side of an all-or-nothing reload, with lbd's Daemon running in a
// helper process inside the LB's namespace: a reload that fails at any DSR
// step (a new port opened on a second interface, the filter of the port
// that stays checked, that port's forwarder updated) leaves the running
// port, its forwarder, its ARP and its services as they were, and traffic
// keeps flowing to every backend it had; the same reload then succeeds.
func TestLinuxDSRReloadAllOrNothing(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	tp := netnstest.New(t, netnstest.Options{})
	vip := tp.VIP()
	for _, be := range tp.Backends() {
		name := be.Name()
		netnstest.ServeHTTP(t, be, vip.String()+":80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
	}
	lb, client := tp.LB(), tp.Client()
	// A second interface for a new DSR port (a veth pair: this kernel may
	// lack the dummy link type).
	lb.Run(t, "ip", "link", "add", "dsr1", "type", "veth", "peer", "name", "dsr1p")
	lb.Run(t, "ip", "addr", "add", "203.0.113.1/24", "dev", "dsr1")
	lb.Run(t, "ip", "link", "set", "dsr1", "up")
	lb.Run(t, "ip", "link", "set", "dsr1p", "up")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var bes []string
	for _, be := range tp.Backends() {
		bes = append(bes, be.Addr().String())
	}
	cmd := lb.HelperCommand(ctx, t, "TestHelperDSRReload", "NIB_RELOAD_VIP="+vip.String(), "NIB_RELOAD_BACKENDS="+strings.Join(bes, ","))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	var out syncBuffer
	lines := make(chan string, 1024)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fmt.Fprintln(&out, sc.Text())
			if s, ok := strings.CutPrefix(sc.Text(), "NIBSYNC "); ok {
				lines <- s
			}
		}
		close(lines)
	}()
	exited := false
	defer func() {
		if !exited {
			stdin.Close()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("helper output:\n%s", out.String())
		}
	}()
	await := func(want string) {
		t.Helper()
		select {
		case got, ok := <-lines:
			if !ok || got != want {
				t.Fatalf("helper said %q (open %v), want %q", got, ok, want)
			}
		case <-time.After(time.Minute):
			t.Fatalf("helper never said %q", want)
		}
	}
	say := func(s string) {
		t.Helper()
		if _, err := io.WriteString(stdin, s+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	url := "http://" + vip.String() + "/"
	both := func(when string) {
		t.Helper()
		if seen := getAll(t, client, url, 20, 15*time.Second); seen["be1"] == 0 || seen["be2"] == 0 {
			t.Fatalf("%s: answers by backend %v, want both", when, seen)
		}
	}

	await("ready")
	both("before")
	say("fail")
	await("failed")
	both("after the failed reloads")
	say("apply")
	await("applied")
	if seen := getAll(t, client, url, 20, 15*time.Second); seen["be2"] != 0 || seen["be1"] == 0 {
		t.Fatalf("after the reload: answers by backend %v, want be1 only", seen)
	}
	stdin.Close()
	exited = true
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
}

// TestHelperDSRReload is the lbd side of TestLinuxDSRReloadAllOrNothing,
// run in the LB's namespace. It talks over stdin and stdout.
func TestHelperDSRReload(t *testing.T) {
	if !netnstest.IsHelper(t.Name()) {
		t.Skip("helper process of TestLinuxDSRReloadAllOrNothing")
	}
	vip := netip.MustParseAddr(os.Getenv("NIB_RELOAD_VIP"))
	var bes []netip.AddrPort
	for _, s := range strings.Split(os.Getenv("NIB_RELOAD_BACKENDS"), ",") {
		bes = append(bes, netip.AddrPortFrom(netip.MustParseAddr(s), 0))
	}
	dsrService := func(name, iface string, vip netip.Addr, backends ...netip.AddrPort) config.Service {
		s := config.NewDSRService(name, iface, netip.AddrPortFrom(vip, 80), config.TCP)
		s.Tracking = false // flows spread over the backends
		for _, b := range backends {
			s.Backends = append(s.Backends, config.NewBackend(b))
		}
		return s
	}
	old := &config.Config{Services: []config.Service{dsrService("web", "eth0", vip, bes...)}}
	// The reload drops be2 on eth0 and adds a port on dsr1.
	next := &config.Config{Services: []config.Service{
		dsrService("web", "eth0", vip, bes[0]),
		dsrService("other", "dsr1", netip.MustParseAddr("203.0.113.10"), netip.MustParseAddrPort("203.0.113.20:0")),
	}}

	var logs syncBuffer
	d := New(log.New(io.MultiWriter(&logs, os.Stdout), "lbd: ", 0))
	defer d.Close()
	if err := d.Apply(old); err != nil {
		t.Fatal(err)
	}
	logs.waitFor(t, "forwarding", 10*time.Second)
	in := bufio.NewScanner(os.Stdin)
	expect := func(want string) {
		t.Helper()
		if !in.Scan() || in.Text() != want {
			t.Fatalf("got %q (%v), want %q", in.Text(), in.Err(), want)
		}
	}
	say := func(s string) { fmt.Printf("NIBSYNC %s\n", s) }
	say("ready")

	// forwarding is what eth0's forwarder and ARP run now.
	forwarding := func() string {
		d.mu.Lock()
		defer d.mu.Unlock()
		p := d.dsr["eth0"]
		var b strings.Builder
		for _, s := range p.fwd.Stats().Services {
			fmt.Fprintf(&b, "%s:", s.Name)
			for _, be := range s.Backends {
				fmt.Fprintf(&b, " %s", be.Addr)
			}
			b.WriteString("; ")
		}
		var vips []string
		for _, v := range p.arp.VIPs() {
			vips = append(vips, v.Addr.String())
		}
		slices.Sort(vips)
		fmt.Fprintf(&b, "VIPs %v", vips)
		return b.String()
	}

	expect("fail")
	want := forwarding()
	for _, step := range []string{"dsr dsr1", "dsr eth0", "control", "dsr-update eth0"} {
		before, fds := stateOf(d), settledFDs(t)
		setFailAt(d, step)
		err := d.Apply(next)
		setFailAt(d, "")
		if !errors.Is(err, errInjected) {
			t.Fatalf("%s: Apply: %v, want the injected failure", step, err)
		}
		sameFDs(t, fds)
		sameState(t, d, before)
		if got := forwarding(); got != want {
			t.Errorf("%s: eth0 forwards %s, want %s as before", step, got, want)
		}
	}
	if n := strings.Count(logs.String(), "forwarding 1 services"); n != 1 {
		t.Errorf("ports started %d times, want once (no failed reload starts one)", n)
	}
	say("failed")

	expect("apply")
	if err := d.Apply(next); err != nil {
		t.Fatal(err)
	}
	if got := forwarding(); got == want || strings.Contains(got, bes[1].Addr().String()) {
		t.Errorf("after the reload eth0 forwards %s", got)
	}
	d.mu.Lock()
	if d.dsr["dsr1"] == nil {
		t.Error("no port on dsr1 after the reload")
	}
	d.mu.Unlock()
	say("applied")
	for in.Scan() { // until the test closes stdin
	}
}
