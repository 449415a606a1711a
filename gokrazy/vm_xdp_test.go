package gokrazy

// The XDP DSR data path on gokrazy's own arm64 kernel: the VM gets a second
// NIC on a tap that joins a network-namespace topology (internal/netnstest:
// client and backend on a bridge), lbd runs a DSR service on it (eth1 in the
// guest), and the client's traffic to the VIP must reach the backend through
// lbd's XDP program, with the replies going straight back.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/appliance"
	"github.com/nib-lb/nib/internal/control"
	"github.com/nib-lb/nib/internal/needs"
	"github.com/nib-lb/nib/internal/netnstest"
	"github.com/nib-lb/nib/internal/penctl"
)

// The appliance on the topology's segment (198.51.100.0/24, netnstest's
// address plan; its "lb" namespace, .2, stays idle).
var (
	xdpGuestAddr = netip.MustParsePrefix("198.51.100.3/24")
	xdpGuestMAC  = net.HardwareAddr{0x02, 0x00, 198, 51, 100, 3}
)

const (
	xdpUDPPort   = 5300
	xdpTCPPort   = 80
	xdpDatagrams = 200
	xdpUpload    = 1 << 20
)

// xdpConfig is the appliance's first config plus a static address on eth1
// and two DSR services there (UDP and TCP, one backend each).
func xdpConfig(vip, backend netip.Addr) []byte {
	var b bytes.Buffer
	b.Write(config.ApplianceTOML())
	fmt.Fprintf(&b, `
[network]
interface = "eth1"
mode = "static"
address = %q
`, xdpGuestAddr)
	for _, s := range []struct {
		name, proto string
		port        int
	}{{"xdp-udp", "udp", xdpUDPPort}, {"xdp-tcp", "tcp", xdpTCPPort}} {
		fmt.Fprintf(&b, `
[[service]]
name = %q
listen = "%s"
protocol = %q
mode = "dsr"
interface = "eth1"

[[service.backend]]
address = "%s"
`, s.name, netip.AddrPortFrom(vip, uint16(s.port)), s.proto, backend)
	}
	return b.Bytes()
}

// TestApplianceXDP runs lbd's default path (auto: native XDP on virtio_net)
// and -dsr-path xdp-generic (generic XDP, the only hook the Pis' NICs
// have), each in its own boot.
func TestApplianceXDP(t *testing.T) {
	for _, tc := range []struct{ path, mode string }{{"auto", "native"}, {"xdp-generic", "generic"}} {
		t.Run(tc.path, func(t *testing.T) { testApplianceXDP(t, tc.path, tc.mode) })
	}
}

// testApplianceXDP boots the appliance with lbd's LBD_DSR_PATH set to path
// (auto: not set) and wants its XDP program attached in mode.
func testApplianceXDP(t *testing.T, path, wantMode string) {
	if testing.Short() {
		t.Skip("boots QEMU: skipped with -short")
	}
	needs.Tools(t, "qemu-system-aarch64", "mksquashfs", "mkfs.fat", "mcopy", "mke2fs", "ip")
	netnstest.SkipUnprivileged(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		needs.Unmet(t, "the VM's DSR NIC is a tap: %v", err)
	}
	start := time.Now()
	topo := netnstest.New(t, netnstest.Options{Backends: 1})
	client, be := topo.Client(), topo.Host("be1")
	vip := topo.VIP()
	tap := topo.Prefix() + "-vm"

	inst := instance(t)
	if path != "auto" {
		setLbdEnv(t, inst, "LBD_DSR_PATH="+path)
	}
	img := filepath.Join(t.TempDir(), "nib-vm.img")
	cfg := xdpConfig(vip, be.Addr())
	if _, err := config.Parse("config.toml", cfg); err != nil {
		t.Fatalf("the test's lbd config: %v\n%s", err, cfg)
	}
	buildVMConfig(t, inst, img, 1700000000, cfg)
	probe := filepath.Join(t.TempDir(), "xdpprobe")
	build := exec.Command("go", "build", "-o", probe, "./internal/xdpprobe")
	build.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building xdpprobe: %v\n%s", err, out)
	}
	t.Logf("topology and image ready after %v", time.Since(start).Round(time.Second))

	v := startVM(t, img, vmPassword(t, inst), appliance.TapNIC{Name: tap, MAC: xdpGuestMAC})
	// QEMU creates the tap in the root namespace when it starts; move it to
	// the topology's switch at once, long before the guest's lbd runs.
	plugTap(t, v, tap, topo.SwitchNS())
	v.waitPage("welcome page", 4*time.Minute)
	t.Logf("appliance up after %v", time.Since(start).Round(time.Second))
	bootKernel := ""
	if m := regexp.MustCompile(`Linux version (\S+)`).FindStringSubmatch(v.console.String()); m != nil {
		bootKernel = m[1]
		t.Logf("guest kernel (console): %s", bootKernel)
	}

	// lbd's DSR path: XDP (native or generic), not the AF_PACKET fallback.
	// lbd logs how the forwarder attached (or why XDP is not available)
	// before "forwarding N services"; that line alone means -dsr-path packet.
	line := v.waitLog(t, "/user/lbd", regexp.MustCompile(`dsr eth1: (XDP forwarder attached \(.*\)|XDP is not available.*|forwarding .*)`), 2*time.Minute)
	t.Logf("lbd: %s", line)
	if !strings.Contains(line, "XDP forwarder attached") {
		t.Fatalf("lbd does not forward with XDP on the guest's kernel: %s", line)
	}

	// What the guest's kernel says about the attached program and its JIT
	// (virtio_net warns on the console when XDP_TX must share TX queues).
	for _, m := range regexp.MustCompile(`\[ *[0-9.]+\] virtio_net [^\n]*XDP[^\n]*`).FindAllString(v.console.String(), -1) {
		t.Logf("guest console: %s", m)
	}
	report := v.runProbe(t, probe, "eth1")
	for _, l := range report {
		t.Logf("guest: %s", l)
	}
	xdpLine, kernel := "", ""
	for _, l := range report {
		if after, ok := strings.CutPrefix(l, "xdp eth1: "); ok {
			xdpLine = after
		}
		if after, ok := strings.CutPrefix(l, "kernel: "); ok {
			kernel = after
		}
	}
	if bootKernel == "" || !strings.HasPrefix(kernel, bootKernel+" ") {
		t.Errorf("the probe ran on kernel %q, the VM booted %q", kernel, bootKernel)
	}
	if !strings.Contains(xdpLine, "name=xdp_dsr") {
		t.Errorf("the guest's eth1 does not run lbd's XDP program: %q", xdpLine)
	}
	// lbd's log and the kernel agree on how it is attached and whether
	// the JIT compiled it.
	mode := "generic"
	if strings.Contains(line, "(native;") {
		mode = "native"
	}
	if !strings.Contains(xdpLine, "mode="+mode+" ") {
		t.Errorf("lbd says %q, the kernel %q", line, xdpLine)
	}
	if mode != wantMode {
		t.Errorf("-dsr-path %s: lbd attached in %s mode, want %s: %q", path, mode, wantMode, line)
	}
	if strings.Contains(xdpLine, "jited=true") != strings.Contains(line, "JIT-compiled") {
		t.Errorf("lbd says %q, the kernel %q", line, xdpLine)
	}

	api := func() control.Status {
		t.Helper()
		var out, errOut bytes.Buffer
		pc := filepath.Join(inst, "penctl-vm.json")
		if code := penctl.Main([]string{"-config", pc, "-s", v.api, "-json", "status"}, &out, &errOut); code != 0 {
			t.Fatalf("penctl status: exit %d: %s", code, errOut.String())
		}
		var st control.Status
		if err := json.Unmarshal(out.Bytes(), &st); err != nil {
			t.Fatalf("penctl -json status: %v\n%s", err, out.String())
		}
		return st
	}
	// lbd resolves the backend's MAC by ARP before it forwards.
	deadline := time.Now().Add(time.Minute)
	for {
		st := api()
		ok := 0
		for _, s := range st.Services {
			if s.Mode == "dsr" && len(s.Backends) == 1 && s.Backends[0].State == "ok" {
				ok++
			}
		}
		if ok == 2 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(st, "", " ")
			t.Fatalf("the DSR backend is not ok after 1m:\n%s", b)
		}
		time.Sleep(time.Second)
	}
	before := dsrCounters(api(), "xdp-udp")

	// UDP: request and answer one at a time, so every datagram is
	// accounted for; the backend answers from the VIP, straight to the client.
	pc, err := be.ListenPacket("udp4", netip.AddrPortFrom(vip, xdpUDPPort).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	// The backend counts the datagrams that come from the client's own
	// address (DSR changes only the Ethernet header).
	gotBE := make(chan int, 1)
	go func() {
		n := 0
		defer func() { gotBE <- n }()
		buf := make([]byte, 2048)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if a, ok := from.(*net.UDPAddr); ok && a.AddrPort().Addr().Unmap() == client.Addr() && bytes.HasPrefix(buf[:k], []byte("nib-xdp ")) {
				n++
				pc.WriteTo(append([]byte("echo "), buf[:k]...), from)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "udp4", netip.AddrPortFrom(vip, xdpUDPPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sent, answered := 0, 0
	udpStart := time.Now()
	buf := make([]byte, 2048)
	for i := 0; i < xdpDatagrams && ctx.Err() == nil; i++ {
		msg := fmt.Sprintf("nib-xdp %d", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		sent++
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, err := c.Read(buf)
		if err == nil && string(buf[:k]) == "echo "+msg {
			answered++
		}
	}
	udpTime := time.Since(udpStart)
	pc.Close()
	received := <-gotBE
	// The client sent to the appliance's MAC (lbd answers ARP for the VIP).
	if n, ok := netnstest.ARPEntry(t, client, vip); !ok || !bytes.Equal(n.MAC, xdpGuestMAC) {
		t.Errorf("the client's ARP entry for the VIP is %+v (%v), want the appliance's eth1 %v", n, ok, xdpGuestMAC)
	}
	t.Logf("UDP: client sent %d datagrams to %s:%d, backend received %d, client got %d answers (%v)", sent, vip, xdpUDPPort, received, answered, udpTime.Round(time.Millisecond))
	if sent != xdpDatagrams || received != sent || answered != sent {
		t.Errorf("UDP through the XDP program: sent %d of %d, backend received %d, answered %d", sent, xdpDatagrams, received, answered)
	}
	after := waitCounters(t, api, "xdp-udp", func(c xdpCounters) bool { return c.backendPackets-before.backendPackets >= uint64(received) })
	t.Logf("lbd's counters for the UDP run: eth1 received %d, forwarded %d, drops %v; backend packets %d",
		after.received-before.received, after.forwarded-before.forwarded, after.drops, after.backendPackets-before.backendPackets)
	if got := after.backendPackets - before.backendPackets; got != uint64(received) {
		t.Errorf("lbd counted %d packets to the UDP backend, the backend received %d", got, received)
	}
	if got := after.forwarded - before.forwarded; got != uint64(received) {
		t.Errorf("lbd counted %d frames forwarded on eth1, the backend received %d", got, received)
	}

	// TCP: a 1 MiB upload through the VIP (the client's veth offloads on,
	// as the kernel sets them), answered by the backend directly.
	before = dsrCounters(api(), "xdp-tcp")
	netnstest.ServeTCP(t, be, netip.AddrPortFrom(vip, xdpTCPPort).String(), netnstest.CountBytes)
	tcpStart := time.Now()
	tc, err := client.Dial(ctx, "tcp4", netip.AddrPortFrom(vip, xdpTCPPort).String())
	if err != nil {
		t.Fatalf("TCP to the VIP: %v", err)
	}
	tc.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := tc.Write(make([]byte, xdpUpload)); err != nil {
		t.Fatalf("TCP upload: %v", err)
	}
	tc.(*net.TCPConn).CloseWrite()
	reply, err := io.ReadAll(tc)
	tc.Close()
	tcpTime := time.Since(tcpStart)
	if err != nil || string(reply) != strconv.Itoa(xdpUpload) {
		t.Fatalf("TCP upload through the VIP: the backend answered %q (%v), want %d", reply, err, xdpUpload)
	}
	// Every byte of the upload crossed lbd (its frames hold headers too).
	after = waitCounters(t, api, "xdp-tcp", func(c xdpCounters) bool { return c.backendBytes-before.backendBytes >= xdpUpload })
	t.Logf("TCP: %d bytes uploaded through %s:%d in %v; lbd forwarded %d frames (%d bytes) to the backend, super frames %d, partial checksums %d",
		xdpUpload, vip, xdpTCPPort, tcpTime.Round(time.Millisecond), after.backendPackets-before.backendPackets,
		after.backendBytes-before.backendBytes, after.superFrames-before.superFrames, after.partial-before.partial)
	t.Logf("lbd's eth1 totals: received %d, forwarded %d, drops %v", after.received, after.forwarded, after.drops)
	t.Logf("whole test: %v", time.Since(start).Round(time.Second))
}

// setLbdEnv adds kv to lbd's environment in the instance's config.json.
func setLbdEnv(t *testing.T, inst, kv string) {
	t.Helper()
	file := filepath.Join(inst, "config.json")
	in, err := appliance.LoadInstance(file)
	if err != nil {
		t.Fatal(err)
	}
	const lbd = "github.com/nib-lb/nib/lbd"
	pc, ok := in.PackageConfig[lbd]
	if !ok {
		t.Fatalf("%s: no PackageConfig for lbd", file)
	}
	pc.Environment = append(pc.Environment, kv)
	in.PackageConfig[lbd] = pc
	b, err := json.MarshalIndent(in, "", "    ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// plugTap waits for QEMU's tap to appear in the root namespace and moves
// it into ns as a port of br0.
func plugTap(t *testing.T, v *vm, tap, ns string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := net.InterfaceByName(tap); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU did not create the tap %s within 30s\nconsole:\n%s", tap, v.console.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, args := range [][]string{
		{"link", "set", tap, "netns", ns},
		{"-n", ns, "link", "set", tap, "master", "br0", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// logLines returns what gokrazy keeps of a program's output (its last 100
// lines of stdout and of stderr). The log is a stream that never ends: it
// reads what comes within a second.
func (v *vm) logLines(path string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+v.ui+"/log?stream=both&path="+url.QueryEscape(path), nil)
	req.SetBasicAuth("gokrazy", v.password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("log of %s: %s", path, resp.Status)
	}
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return lines, err
	}
	return lines, nil
}

// waitLog waits for a line of path's log that matches re and returns the match.
func (v *vm) waitLog(t *testing.T, path string, re *regexp.Regexp, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	var lines []string
	var err error
	for time.Now().Before(deadline) {
		lines, err = v.logLines(path)
		for _, l := range lines {
			if m := re.FindString(l); m != "" {
				return m
			}
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("no line of %s's log matches %q within %v (%v):\n%s", path, re, within, err, strings.Join(lines, "\n"))
	return ""
}

// runProbe runs the xdpprobe binary in the guest, as `gok run` would: it
// uploads it to the guest's /tmp, diverts a new service to it, and returns
// the lines it printed.
func (v *vm) runProbe(t *testing.T, binary string, args ...string) []string {
	t.Helper()
	const path = "/user/xdpprobe"
	f, err := os.Open(binary)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := http.Client{Timeout: time.Minute}
	req, _ := http.NewRequest("PUT", "http://"+v.ui+"/uploadtemp/nibtest/xdpprobe", f)
	req.SetBasicAuth("gokrazy", v.password)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("uploading xdpprobe: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("uploading xdpprobe: %s", resp.Status)
	}
	body, _ := json.Marshal(map[string]any{"Path": path, "Diversion": "nibtest/xdpprobe", "Flags": args})
	req, _ = http.NewRequest("POST", "http://"+v.ui+"/divert", bytes.NewReader(body))
	req.SetBasicAuth("gokrazy", v.password)
	req.Header.Set("Content-Type", "application/json")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatalf("starting xdpprobe: %v", err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// A new service may already have started when /divert restarts it, so
	// it may run twice; its last complete report counts.
	if resp.StatusCode != 200 {
		t.Logf("divert: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	deadline := time.Now().Add(time.Minute)
	for {
		lines, err := v.logLines(path)
		var report []string
		for _, l := range lines {
			switch {
			case strings.HasPrefix(l, "kernel: "):
				report = []string{l}
			case l == "xdpprobe: done":
				return report
			case report != nil && strings.Contains(l, ": ") && !strings.HasPrefix(l, "gokrazy: "):
				report = append(report, l)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("xdpprobe did not report within 1m (%v):\n%s", err, strings.Join(lines, "\n"))
		}
		time.Sleep(time.Second)
	}
}

// xdpCounters are lbd's counters of a DSR service: its interface's and
// its one backend's.
type xdpCounters struct {
	received, forwarded, superFrames, partial uint64
	backendPackets, backendBytes              uint64
	drops                                     map[string]uint64
}

func dsrCounters(st control.Status, service string) xdpCounters {
	for _, s := range st.Services {
		if s.Name != service || s.DSR == nil {
			continue
		}
		c := xdpCounters{received: s.DSR.Received, forwarded: s.DSR.Forwarded, superFrames: s.DSR.SuperFrames, partial: s.DSR.PartialChecksums, drops: s.DSR.Drops}
		for _, b := range s.Backends {
			c.backendPackets += b.Packets
			c.backendBytes += b.Sent
		}
		return c
	}
	return xdpCounters{}
}

// waitCounters polls lbd's status (up to 15 s) until done holds for the
// service's counters, and returns that reading; the test fails if it never
// holds.
func waitCounters(t *testing.T, api func() control.Status, service string, done func(xdpCounters) bool) xdpCounters {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c := dsrCounters(api(), service)
		if done(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("lbd's counters of %s: %+v after 15 s; want more", service, c)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
