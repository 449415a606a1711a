package main

import (
	"github.com/nib-lb/nib/internal/bench/benchkit"
	"slices"

	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nib-lb/nib/internal/netnstest"
	"github.com/nib-lb/nib/internal/pen"
)

// Fixed addresses of the benchmark (inside the topology's namespaces only).
const (
	iperfPort  = "5201"
	framePort  = "9"
	tarpitAddr = "198.51.100.77"
	spoofAddr  = "198.51.100.11" // source of the tarpit SYNs: configured nowhere, so the client's kernel drops the SYN+ACKs instead of answering with RSTs
)

// env is the shared state of one benchmark run.
type env struct {
	o     options
	clk   int64
	tools map[string]string
	self  string
	lbd   string
	topo  *netnstest.Topology

	servers []*benchkit.Child // iperf3 servers on the backends
	offload string            // the current offload setting, as printed
	direct  map[string]*iperfSet
	results []*lbResult
	notes   []string // general notes for the table
}

// iperfRes is one iperf3 run.
type iperfRes struct {
	bps   float64
	retr  int64
	err   error
	noise string
	lbCPU float64 // share of the LB CPU the LB process used
}

type iperfSet struct {
	offload         string
	up1, upN, down1 iperfRes
}

// frameRes is one UDP frame load (64-byte frames or DNS-size datagrams).
type frameRes struct {
	rate      float64 // pacing asked for (0: full)
	sent      uint64
	refused   uint64
	secs      float64
	atLB      uint64 // frames lb's eth0 received
	forwarded uint64 // frames be1+be2 received
	beRx      []uint64
	backlog   uint64 // softnet backlog drops during the load (all CPUs)
	offered   float64
	fwdPPS    float64
	loss      float64
	lbCPU     float64 // the LB process's share of its CPU
	// cpuAll is the LB's CPU busy fraction during the load, whatever ran
	// there (process, softirq: receive, XDP, forwarding); cpuPerFrame the
	// busy CPU time per forwarded frame, in seconds.
	cpuAll, cpuPerFrame float64
	noise               string
	err                 error
	measured            bool
	targetNote          string
	diag                string // the LB's socket drops and (lbd) its own counters
}

type tarpitRes struct {
	sent          uint64
	secs          float64
	replies       uint64
	rate          float64
	sample, valid int
	noise         string
	lbCPU         float64
	err           error
	measured      bool
}

// lbResult is everything measured for one load balancer.
type lbResult struct {
	name   string
	iperf  iperfSet
	frames frameRes
	atPen  frameRes // lbd only: paced at pen's forwarded rate
	// sharedPace is a 64-byte load at half pen's forwarded rate with pen's
	// offload settings, the same for lbd and pen: neither is saturated,
	// so their CPU per frame compares.
	sharedPace frameRes
	// dns and dnsShared are the same two loads with DNS-size datagrams.
	dns, dnsShared frameRes
	tarpit         tarpitRes
	cmdlines       []string
	notes          []string
}

func (e *env) lbHost() *netnstest.Host     { return e.topo.LB() }
func (e *env) client() *netnstest.Host     { return e.topo.Client() }
func (e *env) backends() []*netnstest.Host { return e.topo.Backends() }

// nsArgv is `ip netns exec NS taskset -c CPU argv...`.
func nsArgv(h *netnstest.Host, cpu string, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", h.NS(), "taskset", "-c", cpu}, argv...)
}

func (e *env) bench() error {
	o := e.o
	if o.steer {
		if err := e.steer(); err != nil {
			return fmt.Errorf("RPS steering: %v", err)
		}
	}
	// iperf3 servers on both backends, listening on every address (the VIP
	// on lo and the backend's own).
	for _, be := range e.backends() {
		c, err := benchkit.StartChild("iperf3-"+be.Name(), filepath.Join(tmpDir, "iperf3-server-"+be.Name()+".log"),
			nsArgv(be, o.loadCPU, e.tools["iperf3"], "-s", "-p", iperfPort)...)
		if err != nil {
			return err
		}
		e.servers = append(e.servers, c)
	}
	time.Sleep(300 * time.Millisecond)
	for _, c := range e.servers {
		if c.Exited() {
			return c.ExitError()
		}
	}
	e.direct = map[string]*iperfSet{}
	var lbd, pen *lbResult

	// Phase 1: realistic offloads (veth defaults, GRO on at lb).
	if slices.Contains(o.only, "lbd") {
		if err := e.setOffloads(true); err != nil {
			return err
		}
		if slices.Contains(o.tests, "iperf") {
			e.measureDirect("realistic")
		}
		lbd = &lbResult{name: "lbd"}
		e.results = append(e.results, lbd)
		e.measureLB(lbd)
	}
	// Phase 2: what pen needs (client tx checksum offload off, lb GRO off).
	if slices.Contains(o.only, "pen") && !benchkit.Stopping() {
		if err := e.setOffloads(false); err != nil {
			return err
		}
		if slices.Contains(o.tests, "iperf") {
			e.measureDirect("pen")
		}
		pen = &lbResult{name: "pen"}
		e.results = append(e.results, pen)
		e.measureLB(pen)
	}
	// Phase 3: lbd (realistic offloads again) paced at pen's forwarded rate.
	if lbd != nil && slices.Contains(o.tests, "frames") && !benchkit.Stopping() {
		rate, how := 0.21e6, "pen not measured: the issue's 0.21 Mpps"
		if pen != nil && pen.frames.measured && pen.frames.fwdPPS > 0 {
			rate, how = pen.frames.fwdPPS, "pen's forwarded rate in this run"
		}
		if err := e.setOffloads(true); err != nil {
			return err
		}
		lbd.atPen = e.framesAt(lbd, rate, smallPayload)
		lbd.atPen.targetNote = how
	}
	// Phase 4: lbd and pen at one pace that saturates neither, with pen's
	// offloads, for the CPU each spends per frame.
	shared := func(full func(*lbResult) *frameRes, paced func(*lbResult) *frameRes, payload int) error {
		if lbd == nil || pen == nil || !full(pen).measured || full(pen).fwdPPS <= 0 || benchkit.Stopping() {
			return nil
		}
		if err := e.setOffloads(false); err != nil {
			return err
		}
		rate := full(pen).fwdPPS / 2
		*paced(pen) = e.framesAt(pen, rate, payload)
		*paced(lbd) = e.framesAt(lbd, rate, payload)
		return nil
	}
	if slices.Contains(o.tests, "frames") {
		if err := shared(func(r *lbResult) *frameRes { return &r.frames }, func(r *lbResult) *frameRes { return &r.sharedPace }, smallPayload); err != nil {
			return err
		}
	}
	if slices.Contains(o.tests, "dns") {
		if err := shared(func(r *lbResult) *frameRes { return &r.dns }, func(r *lbResult) *frameRes { return &r.dnsShared }, o.dnsSize); err != nil {
			return err
		}
	}
	if benchkit.Stopping() {
		return nil
	}
	printTable(os.Stdout, e)
	return nil
}

// cpuMask turns a CPU list ("1" or "0,1") into a hex mask for rps_cpus.
func cpuMask(list string) (string, error) {
	var m uint64
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 63 {
			return "", fmt.Errorf("CPU list %q: want numbers separated by commas", list)
		}
		m |= 1 << n
	}
	return strconv.FormatUint(m, 16), nil
}

// steer sets RPS so that lb's eth0 receive work runs on the LB's CPU and
// every other interface's (the switch ports, client, backends) on the load
// CPU: the LB's CPU pays for its own receive and send, as on real hardware,
// not for the switch's and the backends' work.
func (e *env) steer() error {
	lbMask, err := cpuMask(e.o.lbCPU)
	if err != nil {
		return err
	}
	loadMask, err := cpuMask(e.o.loadCPU)
	if err != nil {
		return err
	}
	set := func(ns, glob, mask string) error {
		_, err := benchkit.RunChild("rps", filepath.Join(tmpDir, "rps.log"), "ip", "netns", "exec", ns, "sh", "-c",
			fmt.Sprintf("for f in %s; do echo %s > $f || exit 1; done", glob, mask))
		return err
	}
	for _, h := range e.topo.Hosts() {
		mask := loadMask
		if h == e.lbHost() {
			mask = lbMask
		}
		if err := set(h.NS(), "/sys/class/net/eth0/queues/rx-*/rps_cpus", mask); err != nil {
			return err
		}
	}
	if err := set(e.topo.SwitchNS(), "/sys/class/net/[!b]*/queues/rx-*/rps_cpus", loadMask); err != nil {
		return err
	}
	benchkit.Logf("RPS: lb eth0 receive on CPU %s; switch ports, client and backends on CPU %s", e.o.lbCPU, e.o.loadCPU)
	return nil
}

// setOffloads switches between the realistic offloads (veth defaults on the
// client, GRO on at lb) and the ones pen needs (client tx checksum offload
// off, which also turns TSO off; GRO off at lb).
func (e *env) setOffloads(realistic bool) error {
	return try(func() {
		c, lb := e.client(), e.lbHost()
		c.SetOffload(tb, "tx", realistic)
		if realistic {
			c.SetOffload(tb, "tso", true)
		}
		lb.SetOffload(tb, "gro", realistic)
		desc := func(h *netnstest.Host) string {
			var f []string
			for _, k := range []string{"tx", "tso", "gso", "gro"} {
				v := "off"
				if h.Offload(tb, k) {
					v = "on"
				}
				f = append(f, k+" "+v)
			}
			return h.Name() + ": " + strings.Join(f, ", ")
		}
		name := "realistic (veth defaults, GRO on at lb)"
		if !realistic {
			name = "pen's (client tx checksum offload off, lb GRO off)"
		}
		e.offload = fmt.Sprintf("%s — %s; %s; backends: veth defaults", name, desc(c), desc(lb))
		benchkit.Logf("offloads: %s", e.offload)
	})
}

// measureDirect runs the iperf3 set straight to be1's own address.
func (e *env) measureDirect(tag string) {
	set := &iperfSet{offload: e.offload}
	target := e.backends()[0].Addr().String()
	set.up1 = e.iperf("direct", target, 1, false, nil)
	set.upN = e.iperf("direct", target, e.o.streams, false, nil)
	set.down1 = e.iperf("direct", target, 1, true, nil)
	e.direct[tag] = set
}

// lbArgv is the command line of the load balancer name in the lb namespace.
func (e *env) lbArgv(name string, extra ...string) []string {
	bin := e.lbd
	if name == "pen" {
		bin = e.tools["pen"]
	}
	flags := "-f"
	if name == "lbd" || e.o.penDebug {
		flags = "-df"
	}
	argv := []string{bin, flags}
	if name == "lbd" {
		// Pen's command line has no flag for it: the environment.
		argv = []string{"env", "LBD_DSR_PATH=" + e.o.dsrPath, bin, flags}
	}
	return nsArgv(e.lbHost(), e.o.lbCPU, append(argv, extra...)...)
}

// startLB starts the load balancer and waits until it runs.
func (e *env) startLB(r *lbResult, tag string, args ...string) (*benchkit.Child, error) {
	argv := e.lbArgv(r.name, args...)
	r.cmdlines = append(r.cmdlines, quoteArgv(argv))
	benchkit.Logf("%s: %s", r.name, quoteArgv(argv))
	c, err := benchkit.StartChild(r.name, filepath.Join(tmpDir, r.name+"-"+tag+".log"), argv...)
	if err != nil {
		return nil, err
	}
	if r.name == "lbd" {
		err = c.WaitLog("forwarding", 10*time.Second)
	} else {
		time.Sleep(time.Second)
		if c.Exited() {
			err = c.ExitError()
		}
	}
	if err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func quoteArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\"'") {
			a = strconv.Quote(a)
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// resolveFromClient makes the client resolve addr by ARP (after flushing its
// entry) and checks that the LB answered. If nobody answers it adds a
// static neighbour entry for the LB's MAC and says so in r's notes.
func (e *env) resolveFromClient(r *lbResult, addr string) error {
	c := e.client()
	benchkit.RunChild("neigh", filepath.Join(tmpDir, "neigh.log"), "ip", "-n", c.NS(), "neigh", "del", addr, "dev", "eth0")
	lbMAC := e.lbHost().MAC().String()
	res, err := e.helper(c, "arp", 30*time.Second, "-dst", addr, "-arp-timeout", "10s")
	if err == nil {
		if res.MAC != lbMAC {
			return fmt.Errorf("%s resolved to %s, not lb's %s", addr, res.MAC, lbMAC)
		}
		benchkit.Logf("%s: the client resolved %s to lb's MAC %s (%s answers ARP itself)", r.name, addr, lbMAC, r.name)
		return nil
	}
	note := fmt.Sprintf("%s did not answer ARP for %s (%v): the client got a static neighbour entry %s lladdr %s", r.name, addr, err, addr, lbMAC)
	benchkit.Logf("%s", note)
	r.notes = append(r.notes, note)
	_, err = benchkit.RunChild("neigh", filepath.Join(tmpDir, "neigh.log"), "ip", "-n", c.NS(), "neigh", "replace", addr, "lladdr", lbMAC, "dev", "eth0", "nud", "permanent")
	return err
}

// helper runs this binary in h's namespace in helper mode and parses its result.
func (e *env) helper(h *netnstest.Host, mode string, limit time.Duration, args ...string) (*genResult, error) {
	argv := nsArgv(h, e.o.loadCPU, append([]string{e.self, "-helper", mode, "-batch", strconv.Itoa(e.o.batch)}, args...)...)
	c, err := benchkit.StartChild("helper-"+mode, filepath.Join(tmpDir, "helper-"+mode+".log"), argv...)
	if err != nil {
		return nil, err
	}
	select {
	case <-c.Done():
	case <-time.After(limit):
		c.Stop()
		return nil, fmt.Errorf("helper %s did not finish within %v", mode, limit)
	}
	c.Stop()
	out, _ := os.ReadFile(c.LogPath())
	for _, line := range strings.Split(string(out), "\n") {
		if js, ok := strings.CutPrefix(line, "RESULT "); ok {
			var res genResult
			if err := json.Unmarshal([]byte(js), &res); err != nil {
				return nil, err
			}
			res.usage = rusageTicks(c, e.clk)
			return &res, nil
		}
	}
	return nil, c.ExitError()
}

// rusageTicks is the CPU time of an exited child in clock ticks.
func rusageTicks(c *benchkit.Child, clk int64) int64 {
	if c.ProcessState() == nil {
		return 0
	}
	ru, ok := c.ProcessState().SysUsage().(*syscall.Rusage)
	if !ok {
		return 0
	}
	us := ru.Utime.Sec*1e6 + ru.Utime.Usec + ru.Stime.Sec*1e6 + ru.Stime.Usec
	return us * clk / 1e6
}

// measureLB runs the iperf3 set, the 64-byte and DNS-size loads and the tarpit against
// load balancer r.name.
func (e *env) measureLB(r *lbResult) {
	r.iperf.offload = e.offload
	r.notes = append(r.notes, "offloads: "+e.offload)

	if slices.Contains(e.o.tests, "iperf") {
		e.measureIperf(r)
	}
	if slices.Contains(e.o.tests, "frames") && !benchkit.Stopping() {
		r.frames = e.framesAt(r, 0, smallPayload)
	}
	if slices.Contains(e.o.tests, "dns") && !benchkit.Stopping() {
		r.dns = e.framesAt(r, 0, e.o.dnsSize)
	}
	if slices.Contains(e.o.tests, "tarpit") && !benchkit.Stopping() {
		r.tarpit = e.tarpitLoad(r)
	}
}

// measureIperf runs the iperf3 set through the VIP.
func (e *env) measureIperf(r *lbResult) {
	vip := e.topo.VIP().String()
	be := []string{e.backends()[0].Addr().String(), e.backends()[1].Addr().String()}
	// iperf3: without -r, so the control and data connections of one
	// iperf3 client reach the same backend (client tracking: the backend
	// is chosen by the client address).
	if c, err := e.startLB(r, "iperf", "-O", "dsr_if eth0", vip+":"+iperfPort, be[0], be[1]); err != nil {
		r.iperf.up1.err, r.iperf.upN.err, r.iperf.down1.err = err, err, err
	} else {
		if err := e.resolveFromClient(r, vip); err != nil {
			r.iperf.up1.err, r.iperf.upN.err, r.iperf.down1.err = err, err, err
		} else if err := e.iperfReady(vip, c); err != nil {
			r.iperf.up1.err, r.iperf.upN.err, r.iperf.down1.err = err, err, err
		} else {
			r.iperf.up1 = e.iperf(r.name, vip, 1, false, c)
			r.iperf.upN = e.iperf(r.name, vip, e.o.streams, false, c)
			r.iperf.down1 = e.iperf(r.name, vip, 1, true, c)
		}
		c.Stop()
	}
}

// iperfReady runs short iperf3 uploads through the VIP until one works (the
// LB resolves the backends' MACs first).
func (e *env) iperfReady(vip string, lb *benchkit.Child) error {
	var last error
	for range 5 {
		argv := nsArgv(e.client(), e.o.loadCPU, e.tools["iperf3"], "-c", vip, "-p", iperfPort, "-t", "1", "-J", "--connect-timeout", "2000")
		out, err := e.runBounded("iperf3-warmup", 20*time.Second, argv...)
		if err == nil {
			if _, err = parseIperf(out, false); err == nil {
				return nil
			}
		}
		last = err
		if lb.Exited() {
			return lb.ExitError()
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("no iperf3 transfer through the VIP works: %v", last)
}

// runBounded runs argv as a child, killed after limit, and returns its output.
func (e *env) runBounded(name string, limit time.Duration, argv ...string) (string, error) {
	c, err := benchkit.StartChild(name, filepath.Join(tmpDir, name+".log"), argv...)
	if err != nil {
		return "", err
	}
	var timedOut bool
	select {
	case <-c.Done():
	case <-time.After(limit):
		timedOut = true
	}
	c.Stop()
	out, _ := os.ReadFile(c.LogPath())
	if timedOut {
		return string(out), fmt.Errorf("%s killed after %v", name, limit)
	}
	if c.Err() != nil {
		return string(out), fmt.Errorf("%s: %v", name, c.Err())
	}
	return string(out), nil
}

type iperfJSON struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			BPS         float64 `json:"bits_per_second"`
			Retransmits int64   `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			BPS float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

// parseIperf returns the upload rate and retransmits (end.sum_sent) or, for
// a reverse run, the rate the client received (end.sum_received) and the
// server's retransmits.
func parseIperf(out string, reverse bool) (iperfRes, error) {
	var r iperfRes
	i := strings.Index(out, "{")
	if i < 0 {
		return r, fmt.Errorf("iperf3 printed no JSON: %s", strings.TrimSpace(out))
	}
	var j iperfJSON
	if err := json.Unmarshal([]byte(out[i:]), &j); err != nil {
		return r, fmt.Errorf("iperf3 JSON: %v", err)
	}
	if j.Error != "" {
		return r, fmt.Errorf("iperf3: %s", j.Error)
	}
	r.bps, r.retr = j.End.SumSent.BPS, j.End.SumSent.Retransmits
	if reverse {
		r.bps = j.End.SumReceived.BPS
	}
	if r.bps <= 0 {
		return r, fmt.Errorf("iperf3 measured no transfer")
	}
	return r, nil
}

// iperf runs one iperf3 client in the client namespace.
func (e *env) iperf(who, target string, streams int, reverse bool, lb *benchkit.Child) iperfRes {
	secs := int(e.o.duration / time.Second)
	argv := nsArgv(e.client(), e.o.loadCPU, e.tools["iperf3"], "-c", target, "-p", iperfPort,
		"-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams), "-J", "--connect-timeout", "3000")
	if reverse {
		argv = append(argv, "-R")
	}
	what := fmt.Sprintf("%s: iperf3 -P %d%s", who, streams, map[bool]string{true: " -R (download)", false: " (upload)"}[reverse])
	benchkit.Logf("%s: %s", what, quoteArgv(argv))
	w := e.watch(lb)
	c, err := benchkit.StartChild("iperf3", filepath.Join(tmpDir, "iperf3-client.log"), argv...)
	if err != nil {
		return iperfRes{err: err}
	}
	select {
	case <-c.Done():
	case <-time.After(e.o.duration + 30*time.Second):
	}
	c.Stop()
	noise, lbCPU := w.done(rusageTicks(c, e.clk))
	out, _ := os.ReadFile(c.LogPath())
	r, perr := parseIperf(string(out), reverse)
	if perr != nil {
		if c.Err() != nil {
			perr = fmt.Errorf("%v (%v)", perr, c.Err())
		}
		benchkit.Logf("%s: %v", what, perr)
		return iperfRes{err: perr}
	}
	r.noise, r.lbCPU = noise, lbCPU
	benchkit.Logf("%s: %.2f Gbit/s, %d retransmits%s%s", what, r.bps/1e9, r.retr, cpuSuffix(lb != nil, lbCPU), noiseSuffix(noise))
	return r
}

func cpuSuffix(has bool, share float64) string {
	if !has {
		return ""
	}
	return fmt.Sprintf(", LB process %.0f%% of its CPU", 100*share)
}

func noiseSuffix(n string) string {
	if n == "" {
		return ""
	}
	return "; NOISY: " + n
}

// rxPackets reads eth0's received-frame counter in h's namespace.
func rxPackets(h *netnstest.Host) (uint64, error) {
	out, err := benchkit.RunChild("ip-link", filepath.Join(tmpDir, "ip-link.log"), "ip", "-n", h.NS(), "-s", "-j", "link", "show", "dev", "eth0")
	if err != nil {
		return 0, err
	}
	var links []struct {
		Stats struct {
			RX struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return 0, fmt.Errorf("ip -s -j link show in %s: %v: %s", h.NS(), err, out)
	}
	return links[0].Stats.RX.Packets, nil
}

// counters reads eth0's rx_packets of lb and every backend.
func (e *env) counters() (lb uint64, be []uint64, err error) {
	if lb, err = rxPackets(e.lbHost()); err != nil {
		return
	}
	for _, h := range e.backends() {
		n, err := rxPackets(h)
		if err != nil {
			return 0, nil, err
		}
		be = append(be, n)
	}
	return lb, be, nil
}

// smallPayload is the UDP payload of a 64-byte frame: 14 Ethernet, 20 IP,
// 8 UDP and 18 bytes, plus the 4-byte FCS on the wire.
const smallPayload = 18

// maxPayload is the largest UDP payload of an unfragmented datagram at a
// 1500-byte MTU.
const maxPayload = 1472

// sizeLabel names the frames of a load with payload bytes of UDP payload.
func sizeLabel(payload int) string {
	if payload == smallPayload {
		return "64-byte frames"
	}
	return fmt.Sprintf("DNS-size datagrams (%d-byte UDP payload)", payload)
}

// framesAt starts the load balancer for UDP VIP:9 (per-flow, -r) and runs
// the UDP generator with payload bytes per datagram at rate (0: full speed).
func (e *env) framesAt(r *lbResult, rate float64, payload int) frameRes {
	name := r.name
	vip := e.topo.VIP().String()
	be := []string{e.backends()[0].Addr().String(), e.backends()[1].Addr().String()}
	res := frameRes{rate: rate}
	args := []string{"-r", "-U", "-O", "dsr_if eth0", vip + ":" + framePort, be[0], be[1]}
	ctl := ""
	if name == "lbd" {
		ctl = filepath.Join(tmpDir, fmt.Sprintf("lbd-udp-%d.ctl", len(r.cmdlines)))
		// -w: lbd's "status" verb writes (and returns) the status page.
		args = append([]string{"-C", ctl, "-w", strings.TrimSuffix(ctl, ".ctl") + ".html"}, args...)
	}
	c, err := e.startLB(r, "udp", args...)
	if err != nil {
		res.err = err
		return res
	}
	defer c.Stop()
	if err := e.resolveFromClient(r, vip); err != nil {
		res.err = err
		return res
	}
	// Warm up until frames reach the backends (the LB resolves their MACs).
	ready := false
	for range 10 {
		w, err := e.frameLoad(c, 5000, time.Second, payload)
		if err != nil {
			res.err = err
			return res
		}
		if w.forwarded > 0 && len(w.beRx) == 2 && w.beRx[0] > 0 && w.beRx[1] > 0 {
			ready = true
			break
		}
		if c.Exited() {
			res.err = c.ExitError()
			return res
		}
	}
	if !ready {
		res.err = fmt.Errorf("no %s reached both backends during the warm-up", sizeLabel(payload))
		return res
	}
	f, err := e.frameLoad(c, rate, e.o.frameDur, payload)
	if err != nil {
		res.err = err
		return res
	}
	if c.Exited() {
		res.err = c.ExitError()
		return res
	}
	f.measured = true
	f.diag = e.lbDiag(c, ctl)
	benchkit.Logf("%s: %s%s: sent %d in %.2fs (%.3f Mpps, %d refused by the client's send), lb eth0 received %d, backends %v = %.3f Mpps forwarded, loss %.2f%%, backlog drops %d, LB process %.0f%% of its CPU, LB CPU busy %.0f%% (process, softirq, XDP: everything on it, less its idle share), %.2f µs per forwarded frame%s",
		name, sizeLabel(payload), map[bool]string{true: fmt.Sprintf(" paced at %.3f Mpps", rate/1e6), false: " at full rate"}[rate > 0],
		f.sent, f.secs, f.offered/1e6, f.refused, f.atLB, f.beRx, f.fwdPPS/1e6, 100*f.loss, f.backlog, 100*f.lbCPU, 100*f.cpuAll, 1e6*f.cpuPerFrame, noiseSuffix(f.noise))
	if f.diag != "" {
		benchkit.Logf("%s: after the load: %s", name, f.diag)
		r.notes = append(r.notes, fmt.Sprintf("%s%s, after the load: %s", sizeLabel(payload),
			map[bool]string{true: fmt.Sprintf(" paced at %.3f Mpps", rate/1e6), false: " at full rate"}[rate > 0], f.diag))
	}
	return f
}

// frameLoad runs the UDP generator once and counts what the backends got.
func (e *env) frameLoad(lb *benchkit.Child, rate float64, d time.Duration, payload int) (frameRes, error) {
	f := frameRes{rate: rate}
	lb0, be0, err := e.counters()
	if err != nil {
		return f, err
	}
	sn0 := softnetDrops()
	// The LB's CPU is not idle without the load either (timers, the
	// namespaces' housekeeping, whatever else runs there): its busy share
	// over a quiet second is taken off the load's.
	quiet0, err := benchkit.ReadCPU(e.o.lbCPU)
	if err != nil {
		return f, err
	}
	time.Sleep(time.Second)
	start, err := benchkit.ReadCPU(e.o.lbCPU)
	if err != nil {
		return f, err
	}
	idleShare := 0.0
	if start.Total > quiet0.Total {
		idleShare = float64(busy(start)-busy(quiet0)) / float64(start.Total-quiet0.Total)
	}
	w := e.watch(lb)
	res, err := e.helper(e.client(), "udp", d+30*time.Second, "-dst", e.topo.VIP().String(), "-dport", framePort,
		"-src", e.client().Addr().String(), "-for", d.String(), "-rate", strconv.FormatFloat(rate, 'f', 0, 64), "-payload", strconv.Itoa(payload))
	if err != nil {
		w.done(0)
		return f, err
	}
	end, err := benchkit.ReadCPU(e.o.lbCPU)
	if err != nil {
		return f, err
	}
	time.Sleep(500 * time.Millisecond) // frames in flight and in queues
	f.noise, f.lbCPU = w.done(res.usage)
	lb1, be1, err := e.counters()
	if err != nil {
		return f, err
	}
	f.backlog = softnetDrops() - sn0
	f.sent, f.refused, f.secs = res.Sent, res.Refused, res.Seconds
	f.atLB = lb1 - lb0
	for i := range be1 {
		f.beRx = append(f.beRx, be1[i]-be0[i])
		f.forwarded += be1[i] - be0[i]
	}
	if f.secs > 0 {
		f.offered = float64(f.sent) / f.secs
		f.fwdPPS = float64(f.forwarded) / f.secs
	}
	if f.sent > 0 {
		f.loss = 1 - float64(f.forwarded)/float64(f.sent)
	}
	if span := end.Total - start.Total; span > 0 {
		net := float64(busy(end)-busy(start)) - idleShare*float64(span)
		f.cpuAll = max(net, 0) / float64(span)
		if f.forwarded > 0 {
			f.cpuPerFrame = max(net, 0) / float64(e.clk) / float64(f.forwarded)
		}
	}
	return f, nil
}

// busy is a CPU's time not idle: its tasks (the LB's process), the
// kernel's interrupt and softirq work (receive, XDP, forwarding) and what
// the hypervisor took, all that ran there.
func busy(s benchkit.CPUSample) int64 { return s.Task + s.IRQ + s.Steal }

// tarpitLoad starts the load balancer with a tarpit for 198.51.100.77 and
// floods it with SYNs from the client.
func (e *env) tarpitLoad(r *lbResult) tarpitRes {
	vip := e.topo.VIP().String()
	be := []string{e.backends()[0].Addr().String(), e.backends()[1].Addr().String()}
	var t tarpitRes
	c, err := e.startLB(r, "tarpit", "-r", "-O", "acl 1 permit "+tarpitAddr, "-O", "tarpit_acl 1", "-O", "dsr_if eth0", vip+":80", be[0], be[1])
	if err != nil {
		t.err = err
		return t
	}
	defer c.Stop()
	if err := e.resolveFromClient(r, tarpitAddr); err != nil {
		t.err = err
		return t
	}
	w := e.watch(c)
	res, err := e.helper(e.client(), "syn", e.o.tarpitDur+30*time.Second, "-dst", tarpitAddr, "-dport", "80",
		"-src", spoofAddr, "-for", e.o.tarpitDur.String())
	if err != nil {
		w.done(0)
		t.err = err
		return t
	}
	t.noise, t.lbCPU = w.done(res.usage)
	if c.Exited() {
		t.err = c.ExitError()
		return t
	}
	t.sent, t.secs, t.replies, t.sample, t.valid = res.Sent, res.Seconds, res.Replies, res.Sample, res.SampleValid
	if t.secs > 0 {
		t.rate = float64(t.replies) / t.secs
	}
	t.measured = true
	benchkit.Logf("%s: tarpit: %d SYNs sent in %.2fs (%.0f/s), %d SYN+ACKs back = %.0f/s; checksums right in %d of %d sampled; LB process %.0f%% of its CPU%s",
		r.name, t.sent, t.secs, float64(t.sent)/t.secs, t.replies, t.rate, t.valid, t.sample, 100*t.lbCPU, noiseSuffix(t.noise))
	return t
}

// lbDiag describes where frames were lost inside the LB: the kernel's drop
// count of each AF_PACKET socket (`ss -0 -m`: skmem d) and, for lbd, its
// own counters from the status page on the control socket ctl.
func (e *env) lbDiag(lb *benchkit.Child, ctl string) string {
	var parts []string
	out, err := benchkit.RunChild("ss", filepath.Join(tmpDir, "ss.log"), "ip", "netns", "exec", e.lbHost().NS(), "ss", "-0", "-a", "-m", "-p")
	if err == nil {
		var drops []string
		lines := strings.Split(out, "\n")
		for i, l := range lines {
			if !strings.Contains(l, fmt.Sprintf("pid=%d,", lb.PID())) {
				continue
			}
			sk := l
			if i+1 < len(lines) && !strings.Contains(l, "skmem:") {
				sk += lines[i+1]
			}
			if j := strings.Index(sk, "skmem:("); j >= 0 {
				m := sk[j+len("skmem:("):]
				m = m[:strings.IndexByte(m, ')')]
				for _, kv := range strings.Split(m, ",") {
					if strings.HasPrefix(kv, "d") {
						drops = append(drops, strings.TrimPrefix(kv, "d"))
					}
				}
			}
		}
		parts = append(parts, fmt.Sprintf("kernel drops on the LB's packet sockets (ss skmem d): [%s]", strings.Join(drops, " ")))
	}
	if ctl != "" {
		var b strings.Builder
		if err := pen.Send(ctl, []string{"status"}, &b); err == nil {
			txt := htmlTag.ReplaceAllString(b.String(), " ")
			if !strings.Contains(txt, "Frames received") {
				parts = append(parts, "lbd status: "+strings.Join(strings.Fields(txt), " "))
			}
			for _, want := range []string{"Frames received", "Dropped:"} {
				if i := strings.Index(txt, want); i >= 0 {
					line := txt[i:]
					if j := strings.IndexByte(line, '\n'); j >= 0 {
						line = line[:j]
					}
					parts = append(parts, "lbd status: "+strings.Join(strings.Fields(line), " "))
				}
			}
		} else {
			parts = append(parts, fmt.Sprintf("lbd status: %v", err))
		}
	}
	return strings.Join(parts, "; ")
}

var htmlTag = regexp.MustCompile(`<[^>]*>`)
