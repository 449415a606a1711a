// Command dsr is nib's side-by-side DSR benchmark (`make bench-dsr`): in a
// network-namespace topology (client, lb, be1, be2 on one bridge, see
// internal/netnstest) it measures lbd and Debian's pen in DSR mode in one run:
// iperf3 upload and download through the VIP against the same transfer
// straight to a backend, 64-byte frames and DNS-size UDP datagrams forwarded
// (from a sendmmsg generator in the client namespace) with loss and the LB's
// CPU per frame, and tarpit SYN+ACKs per second, and
// prints them next to the targets in DESIGN.md.
//
// It is a benchmark, not a test: it needs root, installs missing Debian
// packages, and takes a few minutes. Every process it starts and every
// namespace it creates is removed at the end, also on Ctrl-C or SIGTERM.
package main

import (
	"slices"

	"github.com/nib-lb/nib/internal/bench/benchkit"
	"github.com/nib-lb/nib/internal/dsrpath"

	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/nib-lb/nib/internal/netnstest"
)

type options struct {
	duration  time.Duration // each iperf3 run
	streams   int           // iperf3 -P of the multi-stream upload
	frameDur  time.Duration // each 64-byte (and DNS-size) load
	dnsSize   int           // UDP payload of the DNS-size loads
	tarpitDur time.Duration
	batch     int
	lbCPU     string
	loadCPU   string
	lbdPath   string
	dsrPath   string // lbd's DSR data path (LBD_DSR_PATH), as dsrpath.Check accepts
	only      []string
	tests     []string
	steer     bool
	penDebug  bool
	keep      bool
}

var (
	allLBs   = []string{"lbd", "pen"}
	allTests = []string{"iperf", "frames", "dns", "tarpit"}
)

var (
	tb       = &benchTB{}
	tmpDir   string
	keepTemp bool
)

func cleanup() {
	benchkit.KillAll()
	tb.runCleanups()
	benchkit.RemoveTemp(tmpDir, keepTemp)
}

func main() {
	var o options
	var only, tests string
	var h helperOpts
	flag.DurationVar(&o.duration, "t", 10*time.Second, "duration of each iperf3 run (iperf3 -t)")
	flag.IntVar(&o.streams, "P", 4, "parallel streams of the multi-stream upload (iperf3 -P)")
	flag.DurationVar(&o.frameDur, "frames", 5*time.Second, "duration of each 64-byte and DNS-size frame load")
	flag.IntVar(&o.dnsSize, "dns-size", 512, "UDP payload bytes of the DNS-size loads (512: the largest DNS message over UDP without EDNS, RFC 1035)")
	flag.DurationVar(&o.tarpitDur, "tarpit", 5*time.Second, "duration of each tarpit SYN load")
	flag.IntVar(&o.batch, "batch", 64, "frames per sendmmsg of the generators")
	flag.StringVar(&only, "only", strings.Join(allLBs, ","), "comma-separated load balancers to measure: lbd,pen")
	flag.StringVar(&tests, "tests", strings.Join(allTests, ","), "comma-separated measurements: iperf,frames (64-byte),dns (DNS-size UDP),tarpit")
	flag.StringVar(&o.lbCPU, "lb-cpu", "0", "CPU the load balancer is pinned to (taskset -c), and where lb's eth0 receive is steered (RPS)")
	flag.StringVar(&o.loadCPU, "load-cpu", "1", "CPU of iperf3, the frame generators and (RPS) the switch, client and backends")
	flag.StringVar(&o.lbdPath, "lbd", "", "use this lbd binary instead of building ./lbd")
	flag.StringVar(&o.dsrPath, "dsr-path", "auto", "lbd's DSR data path: auto (lbd's default: XDP, else AF_PACKET), xdp (the XDP program; generic mode on veth), xdp-generic (generic mode always) or packet (AF_PACKET in lbd)")
	flag.BoolVar(&o.steer, "steer", true, "steer receive processing with RPS: lb's eth0 to -lb-cpu, every other interface to -load-cpu")
	flag.BoolVar(&o.penDebug, "pen-d", true, "run pen with -d, as the seed command lines do")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs)")
	// Internal: the helper processes run inside a namespace.
	flag.StringVar(&h.mode, "helper", "", "internal: run a helper (arp, udp, syn) in the current namespace")
	flag.StringVar(&h.iface, "iface", "eth0", "internal (helper): interface")
	flag.StringVar(&h.src, "src", "", "internal (helper): source address")
	flag.StringVar(&h.dst, "dst", "", "internal (helper): destination address")
	flag.IntVar(&h.dport, "dport", 9, "internal (helper): destination port")
	flag.DurationVar(&h.duration, "for", 5*time.Second, "internal (helper): how long to send")
	flag.Float64Var(&h.rate, "rate", 0, "internal (helper): frames per second (0: as fast as possible)")
	flag.IntVar(&h.payload, "payload", smallPayload, "internal (helper, udp): bytes of UDP payload")
	flag.DurationVar(&h.timeout, "arp-timeout", 5*time.Second, "internal (helper): time to wait for ARP")
	flag.Parse()

	if h.mode != "" {
		h.batch = o.batch
		if err := runHelper(h); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		return
	}
	if err := dsrpath.Check(o.dsrPath); err != nil {
		fmt.Fprintf(os.Stderr, "-dsr-path %v\n", err)
		os.Exit(2)
	}
	for _, p := range strings.Split(only, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(allLBs, p) {
			fmt.Fprintf(os.Stderr, "-only: unknown load balancer %q (want lbd,pen)\n", p)
			os.Exit(2)
		}
		o.only = append(o.only, p)
	}
	for _, p := range strings.Split(tests, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !slices.Contains(allTests, p) {
			fmt.Fprintf(os.Stderr, "-tests: unknown measurement %q (want iperf,frames,dns,tarpit)\n", p)
			os.Exit(2)
		}
		o.tests = append(o.tests, p)
	}
	if len(o.only) == 0 || len(o.tests) == 0 || o.duration < time.Second || o.streams < 1 || o.frameDur <= 0 || o.tarpitDur <= 0 || o.dnsSize < smallPayload || o.dnsSize > maxPayload {
		flag.Usage()
		os.Exit(2)
	}
	keepTemp = o.keep

	benchkit.Main("bench-dsr", func() error { return run(o) }, cleanup)
}

func run(o options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces, AF_PACKET)")
	}
	if runtime.NumCPU() < 2 && o.lbCPU != o.loadCPU {
		benchkit.Logf("warning: only %d CPU: pinning everything to CPU 0", runtime.NumCPU())
		o.lbCPU, o.loadCPU = "0", "0"
	}
	cmds := map[string]string{"iperf3": "iperf3", "ethtool": "ethtool", "taskset": "util-linux", "ip": "iproute2", "sysctl": "procps"}
	if slices.Contains(o.only, "pen") {
		cmds["pen"] = "pen"
	}
	if err := benchkit.EnsureTools(cmds); err != nil {
		return err
	}
	e := &env{o: o, tools: map[string]string{}}
	for c := range cmds {
		e.tools[c], _ = benchkit.LookTool(c)
	}
	e.clk, _ = benchkit.ClockTicks()
	var err error
	if e.self, err = os.Executable(); err != nil {
		return err
	}
	tmpDir, err = os.MkdirTemp("/tmp", "nib-bench-dsr-")
	if err != nil {
		return err
	}
	if slices.Contains(o.only, "lbd") {
		if o.lbdPath != "" {
			e.lbd = o.lbdPath
		} else {
			benchkit.Logf("go build -o %s/lbd ./lbd", tmpDir)
			if e.lbd, err = benchkit.BuildLbd(tmpDir); err != nil {
				return err
			}
		}
	}
	if err := try(func() {
		e.topo = netnstest.New(tb, netnstest.Options{Offloads: map[string]netnstest.Offloads{
			"lb": {TxChecksum: true, GRO: true, TSO: true, GSO: true},
		}})
	}); err != nil {
		return fmt.Errorf("topology: %v", err)
	}
	return e.bench()
}
