// Command proxy is nib's side-by-side proxy benchmark (`make bench-proxy`): it
// measures lbd, pen and haproxy in one run on 127.0.0.1, each pinned to one CPU
// with nginx and wrk on the other, and prints CPU time per request for three
// loads and RSS per idle proxied connection next to the targets in DESIGN.md.
//
// It is a benchmark, not a test: it starts real daemons, installs missing
// Debian packages when run as root, and takes a few minutes.
package main

import (
	"github.com/nib-lb/nib/internal/bench/benchkit"
	"slices"

	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

type options struct {
	duration     time.Duration
	warmup       time.Duration
	conns        int
	idle         int
	idleParallel int
	idleTimeout  time.Duration
	only         []string
	backlog      int
	proxyCPU     string
	loadCPU      string
	lbdPath      string
	keep         bool
	splice       string
	smallSize    int
	bigSize      int
}

// load is one wrk workload.
type load struct {
	key, title string
	path       string // object on nginx
	close      bool   // send Connection: close (one connection per request)
	big        bool
}

var loads = []load{
	{key: "keepalive", title: "keepalive small object", path: "/small"},
	{key: "close", title: "connection per request", path: "/small", close: true},
	{key: "big", title: "1 MB object, keepalive", path: "/big", big: true},
}

var allProxies = []string{"lbd", "pen", "haproxy"}

// measurement is the outcome of one load against one proxy.
type measurement struct {
	wrk     wrkResult
	ticks   int64   // proxy utime+stime during the run
	usReq   float64 // CPU µs per completed request
	wrkErrs string  // what wrk counted as failed, if anything
	short   string  // bytes read look too small for the object size
	foreign float64 // share of the proxy CPU used by other tasks or stolen (-1: unknown)
	irq     float64 // share of the proxy CPU spent in irq/softirq (-1: unknown)
	err     error
}

// result is everything measured for one proxy.
type result struct {
	name     string
	startErr error
	loads    map[string]*measurement
	notes    []string

	idleErr             error
	rssBefore, rssAfter int64 // KiB
	fdsBefore, fdsAfter int
	idleConns           int
	rssPerConn          float64 // KiB
	childNofile         int64
	childComm           string
}

var (
	tmpDir   string
	keepTemp bool
)

func cleanup() {
	benchkit.KillAll()
	benchkit.RemoveTemp(tmpDir, keepTemp)
}

func main() {
	var o options
	var only, hold string
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "duration of each wrk load")
	flag.DurationVar(&o.warmup, "warmup", 1*time.Second, "wrk warm-up before each load (0: none)")
	flag.IntVar(&o.conns, "conns", 50, "wrk connections (wrk -c), one wrk thread")
	flag.IntVar(&o.idle, "idle", 8000, "idle connections for the RSS measurement (0: skip)")
	flag.IntVar(&o.idleParallel, "idle-parallel", 64, "concurrent dialers while opening idle connections")
	flag.DurationVar(&o.idleTimeout, "idle-timeout", 30*time.Second, "time allowed for each idle connection's dial and echo")
	flag.StringVar(&only, "only", strings.Join(allProxies, ","), "comma-separated proxies to measure: lbd,pen,haproxy")
	flag.IntVar(&o.backlog, "q", 1000, "listen backlog passed to lbd and pen as -q (0: omit -q)")
	flag.StringVar(&o.proxyCPU, "proxy-cpu", "0", "CPU list the proxy is pinned to (taskset -c)")
	flag.StringVar(&o.loadCPU, "load-cpu", "1", "CPU list wrk, nginx and the idle backend are pinned to")
	flag.StringVar(&o.lbdPath, "lbd", "", "use this lbd binary instead of building ./lbd")
	flag.StringVar(&o.splice, "haproxy-splice", "always", "haproxy splice(2) use: off, auto (option splice-auto) or always (splice-request/-response)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configs and logs)")
	flag.IntVar(&o.smallSize, "small-size", 100, "size in bytes of the small object")
	flag.IntVar(&o.bigSize, "big-size", 1<<20, "size in bytes of the big object")
	flag.StringVar(&hold, "hold-server", "", "internal: run the idle-connection backend on this address")
	flag.Parse()

	if hold != "" {
		if err := holdServer(hold); err != nil {
			fmt.Fprintln(os.Stderr, "hold-server:", err)
			os.Exit(1)
		}
		return
	}
	for _, p := range strings.Split(only, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(allProxies, p) {
			fmt.Fprintf(os.Stderr, "-only: unknown proxy %q (want %s)\n", p, strings.Join(allProxies, ","))
			os.Exit(2)
		}
		o.only = append(o.only, p)
	}
	if o.splice != "off" && o.splice != "auto" && o.splice != "always" {
		fmt.Fprintf(os.Stderr, "-haproxy-splice: want off, auto or always, not %q\n", o.splice)
		os.Exit(2)
	}
	if len(o.only) == 0 || o.conns < 1 || o.duration <= 0 || o.idle < 0 {
		flag.Usage()
		os.Exit(2)
	}
	keepTemp = o.keep

	benchkit.Main("bench-proxy", func() error { return run(o) }, cleanup)
}

// env is the shared state of one benchmark run.
type env struct {
	o      options
	clk    int64
	tools  map[string]string // command → path
	lbd    string
	lbdErr error
}

func run(o options) error {
	limit, err := benchkit.RaiseNofile()
	if err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE: %v", err)
	}
	if need := uint64(2*o.idle + 100); o.idle > 0 && limit < need {
		benchkit.Logf("warning: RLIMIT_NOFILE is %d; a proxy needs about %d descriptors for %d idle connections", limit, need, o.idle)
	}
	if runtime.NumCPU() < 2 && o.proxyCPU != o.loadCPU {
		benchkit.Logf("warning: only %d CPU: pinning everything to CPU 0", runtime.NumCPU())
		o.proxyCPU, o.loadCPU = "0", "0"
	}

	cmds := map[string]string{"wrk": "wrk", "nginx": "nginx", "taskset": "util-linux"}
	for _, p := range o.only {
		if p != "lbd" {
			cmds[p] = p
		}
	}
	if err := benchkit.EnsureTools(cmds); err != nil {
		return err
	}
	e := &env{o: o, tools: map[string]string{}}
	for c := range cmds {
		e.tools[c], _ = benchkit.LookTool(c)
	}
	var how string
	e.clk, how = benchkit.ClockTicks()

	tmpDir, err = os.MkdirTemp("/tmp", "nib-bench-")
	if err != nil {
		return err
	}
	if err := os.Chmod(tmpDir, 0o755); err != nil { // nginx workers must reach the docroot
		return err
	}
	for _, a := range []string{proxyAddr, nginxAddr, holdAddr} {
		if err := checkPortFree(a); err != nil {
			return err
		}
	}
	if slices.Contains(o.only, "haproxy") {
		for tag, backend := range map[string]string{"http": nginxAddr, "idle": holdAddr} {
			cfg := haproxyConfig(proxyAddr, backend, haproxyMaxconn(limit, o.splice), o.splice)
			if err := os.WriteFile(filepath.Join(tmpDir, "haproxy-"+tag+".cfg"), []byte(cfg), 0o644); err != nil {
				return err
			}
		}
	}
	benchkit.Logf("temp dir %s, RLIMIT_NOFILE %d, CLK_TCK %d (%s), proxy on CPU %s, load on CPU %s, haproxy maxconn %d splice %s",
		tmpDir, limit, e.clk, how, o.proxyCPU, o.loadCPU, haproxyMaxconn(limit, o.splice), o.splice)

	// Backend: nginx, one worker.
	www, err := makeDocroot(tmpDir, o.smallSize, o.bigSize)
	if err != nil {
		return err
	}
	nconf := filepath.Join(tmpDir, "nginx.conf")
	if err := os.WriteFile(nconf, []byte(nginxConfig(tmpDir, www)), 0o644); err != nil {
		return err
	}
	ng, err := benchkit.StartChild("nginx", filepath.Join(tmpDir, "nginx.out"), "taskset", "-c", o.loadCPU,
		e.tools["nginx"], "-p", tmpDir, "-e", filepath.Join(tmpDir, "nginx-error.log"), "-c", nconf, "-g", "daemon off;")
	if err != nil {
		return err
	}
	err = waitReady(ng, 10*time.Second, func() error {
		for path, size := range map[string]int{"/small": o.smallSize, "/big": o.bigSize} {
			code, n, err := httpGet("http://"+nginxAddr+path, 5*time.Second)
			if err != nil {
				return err
			}
			if code != 200 || n != int64(size) {
				return fmt.Errorf("GET %s: status %d, %d bytes (want 200, %d bytes)", path, code, n, size)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("nginx: %v (log: %s)", err, ng.LogTail(5))
	}
	benchkit.Logf("nginx ready on %s (pid %d)", nginxAddr, ng.PID())

	// Backend of the idle-connection test: this binary in -hold-server mode.
	if o.idle > 0 {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		hs, err := benchkit.StartChild("hold-server", filepath.Join(tmpDir, "hold-server.log"), "taskset", "-c", o.loadCPU,
			self, "-hold-server", holdAddr)
		if err != nil {
			return err
		}
		if err := waitReady(hs, 10*time.Second, func() error {
			c, err := net.DialTimeout("tcp", holdAddr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}); err != nil {
			return err
		}
		benchkit.Logf("idle backend ready on %s (pid %d)", holdAddr, hs.PID())
	}

	if slices.Contains(o.only, "lbd") {
		if o.lbdPath != "" {
			e.lbd = o.lbdPath
		} else {
			benchkit.Logf("go build -o %s/lbd ./lbd", tmpDir)
			e.lbd, e.lbdErr = benchkit.BuildLbd(tmpDir)
		}
	}

	var results []*result
	for _, name := range allProxies {
		if !slices.Contains(o.only, name) {
			continue
		}
		results = append(results, benchProxy(e, name))
	}
	if benchkit.Stopping() {
		return nil
	}
	printTable(os.Stdout, e, results)
	return nil
}

// proxyArgv is the command line of proxy name listening on proxyAddr and
// forwarding to backend, pinned to the proxy CPU.
func proxyArgv(e *env, name, tag, backend string) ([]string, error) {
	argv := []string{"taskset", "-c", e.o.proxyCPU}
	q := []string{}
	if e.o.backlog > 0 {
		q = []string{"-q", fmt.Sprint(e.o.backlog)}
	}
	switch name {
	case "lbd":
		if e.lbdErr != nil {
			return nil, e.lbdErr
		}
		argv = append(argv, e.lbd, "-f", "-r", "-x", maxConnFlag)
		argv = append(argv, q...)
		argv = append(argv, proxyAddr, backend)
	case "pen":
		argv = append(argv, e.tools["pen"], "-f", "-r", "-x", maxConnFlag)
		if os.Geteuid() == 0 {
			argv = append(argv, "-u", "root")
		}
		argv = append(argv, q...)
		argv = append(argv, proxyAddr, backend)
	case "haproxy":
		// Written by run: haproxy-http.cfg → nginx, haproxy-idle.cfg → hold server.
		argv = append(argv, e.tools["haproxy"], "-db", "-f", filepath.Join(tmpDir, "haproxy-"+tag+".cfg"))
	default:
		return nil, fmt.Errorf("unknown proxy %q", name)
	}
	return argv, nil
}

// startProxy starts proxy name towards backend and waits until probe passes
// through it.
func startProxy(e *env, name, tag, backend string, probe func() error) (*benchkit.Child, error) {
	if err := waitPortFree(proxyAddr, 10*time.Second); err != nil {
		return nil, err
	}
	argv, err := proxyArgv(e, name, tag, backend)
	if err != nil {
		return nil, err
	}
	benchkit.Logf("%s: %s", name, strings.Join(argv, " "))
	c, err := benchkit.StartChild(name, filepath.Join(tmpDir, name+"-"+tag+".log"), argv...)
	if err != nil {
		return nil, err
	}
	if err := waitReady(c, 10*time.Second, probe); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func benchProxy(e *env, name string) *result {
	r := &result{name: name, loads: map[string]*measurement{}}
	c, err := startProxy(e, name, "http", nginxAddr, func() error {
		code, n, err := httpGet("http://"+proxyAddr+"/small", 2*time.Second)
		if err == nil && (code != 200 || n != int64(e.o.smallSize)) {
			err = fmt.Errorf("GET /small through proxy: status %d, %d bytes", code, n)
		}
		return err
	})
	if err != nil {
		r.startErr = err
		benchkit.Logf("%s: %v", name, err)
		return r
	}
	pid := c.PID()
	r.childComm = benchkit.ProcComm(pid)
	r.childNofile, _ = benchkit.NofileLimit(pid)
	benchkit.Logf("%s: ready, pid %d (%s), RLIMIT_NOFILE %d", name, pid, r.childComm, r.childNofile)
	if need := int64(2*e.o.idle + 64); e.o.idle > 0 && r.childNofile < need {
		r.notes = append(r.notes, fmt.Sprintf("RLIMIT_NOFILE of the proxy is %d, the idle test needs about %d", r.childNofile, need))
	}
	for _, l := range loads {
		m := runLoad(e, c, l)
		r.loads[l.key] = m
		if m.err != nil {
			benchkit.Logf("%s %s: %v", name, l.key, m.err)
			if c.Exited() {
				break
			}
			continue
		}
		benchkit.Logf("%s %s: %d requests in %.2fs, %.0f req/s, proxy CPU %d ticks = %.2f µs/req%s",
			name, l.key, m.wrk.Requests, m.wrk.Seconds, m.wrk.RPS, m.ticks, m.usReq, suffix(m))
	}
	c.Stop()

	if e.o.idle > 0 {
		measureIdle(e, r)
		if r.idleErr != nil {
			benchkit.Logf("%s idle: %v", name, r.idleErr)
		} else {
			benchkit.Logf("%s idle: %d connections, RSS %d → %d KiB, fds %d → %d: %.2f KiB per connection",
				name, r.idleConns, r.rssBefore, r.rssAfter, r.fdsBefore, r.fdsAfter, r.rssPerConn)
		}
	}
	return r
}

func suffix(m *measurement) string {
	s := ""
	if m.wrkErrs != "" {
		s += "; wrk errors: " + m.wrkErrs
	}
	if m.short != "" {
		s += "; " + m.short
	}
	if m.foreign >= 0 {
		s += fmt.Sprintf("; proxy CPU: %.0f%% softirq (not counted), %.0f%% other tasks or steal", 100*m.irq, 100*m.foreign)
	}
	return s
}

func runLoad(e *env, c *benchkit.Child, l load) *measurement {
	m := &measurement{}
	url := "http://" + proxyAddr + l.path
	argv := func(d time.Duration) []string {
		a := []string{"taskset", "-c", e.o.loadCPU, e.tools["wrk"], "-t1", fmt.Sprintf("-c%d", e.o.conns),
			fmt.Sprintf("-d%ds", int((d+time.Second-1)/time.Second)), "--timeout", "5s"}
		if l.close {
			a = append(a, "-H", "Connection: close")
		}
		return append(a, url)
	}
	logPath := filepath.Join(tmpDir, fmt.Sprintf("wrk-%s-%s.log", c.Name, l.key))
	if e.o.warmup > 0 {
		if _, err := benchkit.RunChild("wrk", logPath, argv(e.o.warmup)...); err != nil {
			m.err = fmt.Errorf("warm-up: %v", err)
			return m
		}
	}
	if c.Exited() {
		m.err = c.ExitError()
		return m
	}
	t0, err := benchkit.CPUTicks(c.PID())
	if err != nil {
		m.err = err
		return m
	}
	s0, cpuErr := benchkit.ReadCPU(e.o.proxyCPU)
	benchkit.Logf("%s %s: %s", c.Name, l.key, strings.Join(argv(e.o.duration), " "))
	out, err := benchkit.RunChild("wrk", logPath, argv(e.o.duration)...)
	if err != nil {
		m.err = fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
		return m
	}
	time.Sleep(200 * time.Millisecond) // let the proxy finish closing wrk's connections
	if c.Exited() {
		m.err = c.ExitError()
		return m
	}
	t1, err := benchkit.CPUTicks(c.PID())
	if err != nil {
		m.err = err
		return m
	}
	s1, cpuErr1 := benchkit.ReadCPU(e.o.proxyCPU)
	m.wrk, err = parseWrk(out)
	if err != nil {
		m.err = err
		return m
	}
	if m.wrk.Requests == 0 {
		m.err = fmt.Errorf("wrk completed no requests: %s", strings.TrimSpace(out))
		return m
	}
	m.ticks = t1 - t0
	m.foreign, m.irq = -1, -1
	if n := s1.Total - s0.Total; cpuErr == nil && cpuErr1 == nil && n > 0 {
		m.foreign = max(0, float64(s1.Task-s0.Task+s1.Steal-s0.Steal-m.ticks)/float64(n))
		m.irq = float64(s1.IRQ-s0.IRQ) / float64(n)
	}
	m.usReq = float64(m.ticks) * 1e6 / float64(e.clk) / float64(m.wrk.Requests)
	m.wrkErrs = m.wrk.errors()
	size := e.o.smallSize
	if l.big {
		size = e.o.bigSize
	}
	// wrk rounds the bytes it read; headers make the true figure larger.
	if want := float64(m.wrk.Requests) * float64(size) * 0.95; m.wrk.BytesRead < want {
		m.short = fmt.Sprintf("only %.0f bytes read for %d responses of %d bytes", m.wrk.BytesRead, m.wrk.Requests, size)
	}
	return m
}

// measureIdle starts the proxy towards the hold server and measures VmRSS
// before and after opening e.o.idle idle connections through it.
func measureIdle(e *env, r *result) {
	c, err := startProxy(e, r.name, "idle", holdAddr, func() error {
		conn, err := echoOnce(proxyAddr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err
	})
	if err != nil {
		r.idleErr = err
		return
	}
	defer c.Stop()
	pid := c.PID()

	// Warm-up: open and close a few connections, wait until they are gone.
	fd0, err := benchkit.FDCount(pid)
	if err != nil {
		r.idleErr = err
		return
	}
	warm, err := openIdle(proxyAddr, min(200, e.o.idle), e.o.idleParallel, e.o.idleTimeout)
	closeAll(warm)
	if err != nil {
		r.idleErr = fmt.Errorf("warm-up: %v", err)
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := benchkit.FDCount(pid)
		if err != nil {
			r.idleErr = err
			return
		}
		if n <= fd0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if r.rssBefore, err = benchkit.RSSKB(pid); err != nil {
		r.idleErr = err
		return
	}
	if r.fdsBefore, err = benchkit.FDCount(pid); err != nil {
		r.idleErr = err
		return
	}

	start := time.Now()
	conns, err := openIdle(proxyAddr, e.o.idle, e.o.idleParallel, e.o.idleTimeout)
	defer closeAll(conns)
	if err != nil {
		r.idleErr = err
		if c.Exited() {
			r.idleErr = fmt.Errorf("%v; %v", err, c.ExitError())
		}
		return
	}
	benchkit.Logf("%s idle: %d connections established end to end in %v", r.name, len(conns), time.Since(start).Round(time.Millisecond))
	// Every connection echoed a byte, so both of the proxy's sockets exist;
	// still wait for the descriptor count to settle before reading RSS.
	want := r.fdsBefore + 2*len(conns)
	deadline = time.Now().Add(10 * time.Second)
	for {
		n, err := benchkit.FDCount(pid)
		if err != nil {
			r.idleErr = err
			return
		}
		r.fdsAfter = n
		if n >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if c.Exited() {
		r.idleErr = c.ExitError()
		return
	}
	if r.rssAfter, err = benchkit.RSSKB(pid); err != nil {
		r.idleErr = err
		return
	}
	r.idleConns = len(conns)
	r.rssPerConn = float64(r.rssAfter-r.rssBefore) / float64(len(conns))
	if r.fdsAfter < want {
		r.notes = append(r.notes, fmt.Sprintf("idle: proxy holds %d descriptors, expected at least %d", r.fdsAfter, want))
	}
}
