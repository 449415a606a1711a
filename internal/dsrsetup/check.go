package dsrsetup

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"time"

	"github.com/nib-lb/nib/internal/dsrcheck"
)

// checkSynopsis is setup check's command line, for the usage messages.
const checkSynopsis = "setup check -i IFACE -vip ADDR[:PORT] [-timeout D] BACKEND..."

const checkUsage = "usage: " + checkSynopsis + `

Checks DSR backends from this host's interface IFACE, on their Ethernet
segment (run it on the load balancer): for each BACKEND address, ARP for
the backend itself (unreachable), one who-has ADDR (arp leak: the backend
answers for the VIP) and, with PORT, a SYN for ADDR:PORT sent to the
backend's MAC (vip not bound: no answer; not listening: a RST). One line
per backend, then warnings; exit status 0 when every backend is ok, 1 when
one is not or the check cannot run, 2 for a bad command line. Needs root
(CAP_NET_RAW).
`

// checkMain is `setup check`.
func checkMain(args []string, stdout, stderr io.Writer) int {
	o, code := parseCheck(args, stdout, stderr)
	if code >= 0 {
		return code
	}
	// Bounded: ARP and SYN rounds take about twice the timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 2*o.Timeout+10*time.Second)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	rep, err := dsrcheck.Check(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "setup check: %v\n", err)
		return ExitFailed
	}
	if _, err := rep.WriteTo(stdout); err != nil {
		fmt.Fprintf(stderr, "setup check: %v\n", err)
		return ExitFailed
	}
	if !rep.OK() {
		return ExitFailed
	}
	return ExitOK
}

// parseCheck parses check's command line into valid options; code is -1
// when the check should run, else the exit status (usage printed: on
// stdout for -h, with the error on stderr otherwise).
// Flags and backend addresses may be mixed.
func parseCheck(args []string, stdout, stderr io.Writer) (o dsrcheck.Options, code int) {
	fs := flag.NewFlagSet("setup check", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	iface := fs.String("i", "", "the interface on the backends' segment")
	vip := fs.String("vip", "", "the VIP, ADDR or ADDR:PORT (with PORT, the SYN probe)")
	timeout := fs.Duration("timeout", dsrcheck.DefaultTimeout, "how long to wait for ARP and SYN answers")
	usage := func(err error) (dsrcheck.Options, int) {
		fmt.Fprintf(stderr, "setup check: %v\n%s", err, checkUsage)
		return dsrcheck.Options{}, ExitUsage
	}
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, checkUsage)
				return dsrcheck.Options{}, ExitOK
			}
			return usage(err)
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	o = dsrcheck.Options{Interface: *iface, Timeout: *timeout}
	if *iface == "" {
		return usage(errors.New("-i IFACE is required"))
	}
	if *vip == "" {
		return usage(errors.New("-vip ADDR[:PORT] is required"))
	}
	addr, port, err := parseVIP(*vip)
	if err != nil {
		return usage(err)
	}
	o.VIP, o.Port = addr, port
	if *timeout == 0 {
		return usage(errors.New("-timeout must be positive"))
	}
	for _, s := range positional {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return usage(fmt.Errorf("backend %q is not an IP address", s))
		}
		o.Backends = append(o.Backends, a)
	}
	if err := o.Validate(); err != nil {
		return usage(err)
	}
	return o, -1
}

// parseVIP parses ADDR or ADDR:PORT ([ADDR]:PORT for IPv6, which Validate
// then refuses with its reason).
func parseVIP(s string) (netip.Addr, uint16, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a, 0, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("-vip %q: want ADDR or ADDR:PORT", s)
	}
	if ap.Port() == 0 {
		return netip.Addr{}, 0, fmt.Errorf("-vip %q: port 0 (leave the port out to skip the SYN probe)", s)
	}
	return ap.Addr(), ap.Port(), nil
}
