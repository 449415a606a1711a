package lbd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/netconfig"
	"github.com/nib-lb/nib/internal/netnstest"
)

// resolvEnv names the resolver file a test lbd writes (see resolvConf).
const resolvEnv = "LBD_TEST_RESOLV_CONF"

func init() {
	// Runs in the test binary run as lbd (TestMain) before Main.
	if p := os.Getenv(resolvEnv); p != "" && os.Getenv(asLbdEnv) != "" {
		resolvConf = p
	}
}

// netAddrs lists eth0's IPv4 addresses in h's namespace.
func netAddrs(t *testing.T, h *netnstest.Host, dev string) []string {
	t.Helper()
	var out []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(h.Run(t, "ip", "-j", "-4", "addr", "show", "dev", dev)), &out); err != nil {
		t.Fatal(err)
	}
	var l []string
	for _, i := range out {
		for _, a := range i.AddrInfo {
			l = append(l, netip.PrefixFrom(netip.MustParseAddr(a.Local), a.PrefixLen).String())
		}
	}
	slices.Sort(l)
	return l
}

// netGet fetches url from h's namespace.
func netGet(t *testing.T, h *netnstest.Host, url string) string {
	t.Helper()
	resp, err := h.HTTPClient(t).Get(url)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", url, h, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s from %s: %d, %v", url, h, resp.StatusCode, err)
	}
	return string(b)
}

// netWaitCount waits until s appears n times in p's log.
func netWaitCount(t *testing.T, p *daemonProc, s string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); strings.Count(p.logs(), s) < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("lbd did not log %q %d times:\n%s", s, n, p.logs())
		}
	}
}

// staticConfig is an appliance config with a static [network] on eth0 and
// a service on that address in front of a dummy answering body.
func staticConfig(iface, address, gateway, dummy, body string) []byte {
	a := netip.MustParsePrefix(address).Addr()
	return fmt.Appendf(nil, `[network]
interface = %q
mode = "static"
address = %q
gateway = %q
dns = ["198.51.100.53"]

[[dummy]]
listen = %q
body = %q

[[service]]
name = "web"
listen = "%s:80"

[[service.backend]]
address = %q
`, iface, address, gateway, dummy, body, a, dummy)
}

// lbd in appliance mode in a network namespace: the static address is set
// before the services (one listens on it), the resolver file is written, a
// reload moves the address, a [network] that cannot be applied leaves the
// services serving and is retried until its interface appears; without
// -state nothing is changed.
func TestApplianceNetworkNetns(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	topo := netnstest.New(t, netnstest.Options{Backends: 1})
	lb, client := topo.LB(), topo.Client()
	e := newApplianceEnv(t)
	e.retry = 100 * time.Millisecond
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	dummy := "127.0.0.1:8081"
	putFile(t, e.file, staticConfig("eth0", "198.51.100.5/24", "198.51.100.10", dummy, "static v1\n"))

	cmd := e.command(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ns := lb.Command(ctx, cmd.Path, cmd.Args[1:]...)
	ns.Env = append(cmd.Env, resolvEnv+"="+resolv)
	p, err := startCmd(t, ns)
	if err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "started (")
	wantContains(t, "log", p.logs(),
		"network: applying [network] of "+e.file+": eth0 static 198.51.100.5/24 via 198.51.100.10 dns [198.51.100.53]\n",
		"network: eth0: removed address 198.51.100.2/24\n",
		"network: eth0: added address 198.51.100.5/24\n",
		"network: eth0: set default route 0.0.0.0/0 via 198.51.100.10 metric 1\n",
		"network: "+resolv+": name servers 198.51.100.53\n")
	if got := netGet(t, client, "http://198.51.100.5/"); got != "static v1\n" {
		t.Errorf("service on the static address: %q", got)
	}
	if got := netAddrs(t, lb, "eth0"); !slices.Equal(got, []string{"198.51.100.5/24"}) {
		t.Errorf("eth0: %q", got)
	}
	if b, err := os.ReadFile(resolv); err != nil || !strings.HasSuffix(string(b), "\nnameserver 198.51.100.53\n") {
		t.Errorf("resolver file: %q, %v", b, err)
	}

	// Reload: the address moves, and the service with it.
	putFile(t, e.file, staticConfig("eth0", "198.51.100.6/24", "198.51.100.10", dummy, "static v2\n"))
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "reloaded "+e.file)
	wantContains(t, "log", p.logs(), "network: eth0: removed address 198.51.100.5/24\n", "network: eth0: added address 198.51.100.6/24\n")
	if got := netGet(t, client, "http://198.51.100.6/"); got != "static v2\n" {
		t.Errorf("service on the new address: %q", got)
	}
	if got := netAddrs(t, lb, "eth0"); !slices.Equal(got, []string{"198.51.100.6/24"}) {
		t.Errorf("eth0: %q", got)
	}
	// Reloading the same config changes nothing.
	changes := strings.Count(p.logs(), "network: ")
	p.cmd.Process.Signal(syscall.SIGHUP)
	netWaitCount(t, p, "reloaded "+e.file, 2)
	if n := strings.Count(p.logs(), "network: "); n != changes {
		t.Errorf("the same config applied again logged %d lines:\n%s", n-changes, p.logs())
	}

	// A [network] on a missing interface: reported, the services serve, and
	// it is applied once the interface appears.
	putFile(t, e.file, fmt.Appendf(nil, "[network]\ninterface = \"lan1\"\nmode = \"static\"\naddress = \"203.0.113.5/24\"\n\n[[dummy]]\nlisten = %q\nbody = \"v3\"\n", dummy))
	p.cmd.Process.Signal(syscall.SIGHUP)
	netWaitCount(t, p, "reloaded "+e.file, 3)
	wantContains(t, "log", p.logs(),
		"network: eth0 is no longer in [network]; it keeps its static address until the next boot",
		"network: applying [network] (lan1 static 203.0.113.5/24) failed; services are not affected; trying again every 100ms: interface lan1: ")
	if got := netGet(t, lb, "http://"+dummy+"/"); got != "v3" {
		t.Errorf("dummy while [network] fails: %q", got)
	}
	lb.Run(t, "ip", "link", "add", "lan1", "type", "veth", "peer", "name", "lan1p")
	p.waitLog(t, "network: lan1: added address 203.0.113.5/24")
	p.waitLog(t, "network: [network] applied (lan1 static 203.0.113.5/24)")
	if got := netAddrs(t, lb, "lan1"); !slices.Equal(got, []string{"203.0.113.5/24"}) {
		t.Errorf("lan1: %q", got)
	}
	if got := netAddrs(t, lb, "eth0"); !slices.Equal(got, []string{"198.51.100.6/24"}) {
		t.Errorf("eth0 after [network] moved to lan1: %q", got)
	}
	if code := p.stop(t); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}

	// Without -state (not appliance mode) [network] is never applied.
	plain := filepath.Join(t.TempDir(), "lbd.toml")
	putFile(t, plain, staticConfig("eth0", "198.51.100.7/24", "198.51.100.10", dummy, "plain\n"))
	cmd = e.command(t)
	ns = lb.Command(ctx, cmd.Path, "-config", plain)
	ns.Env = append(cmd.Env, resolvEnv+"="+resolv)
	if p, err = startCmd(t, ns); err != nil {
		t.Fatal(err)
	}
	// Its service cannot listen on an address that is not there.
	select {
	case err := <-p.done:
		p.done <- err // for startCmd's cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("lbd -config with a listener on a missing address did not exit")
	}
	wantContains(t, "log", p.logs(), "198.51.100.7:80")
	if strings.Contains(p.logs(), "network:") {
		t.Errorf("lbd without -state touched the network:\n%s", p.logs())
	}
	if got := netAddrs(t, lb, "eth0"); !slices.Equal(got, []string{"198.51.100.6/24"}) {
		t.Errorf("eth0 after lbd without -state: %q", got)
	}
	if got := netconfig.DHCPClients(os.DirFS("/proc")); len(got) > 0 {
		t.Logf("DHCP clients on this machine: %v", got)
	}
}
