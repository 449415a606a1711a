package dsrsetup

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/netnstest"
)

// checkArgsEnv passes setup check's arguments (tab-separated) to the helper.
const checkArgsEnv = "NIB_SETUP_CHECK_ARGS"

// TestLinuxSetupCheck runs `setup check` from the LB's namespace against
// five backends, each with one fault or none, and checks that every fault
// is reported on the line naming its backend; then against the good
// backend alone (exit 0, the leaking backend now a warning), against it and
// the fixed leaking one (exit 0, nothing else), and with another host
// answering ARP for the VIP (a warning naming its MAC, still exit 0).
func TestLinuxSetupCheck(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tp := netnstest.New(t, netnstest.Options{Backends: 5, NoBackendVIP: true})
	vip := tp.VIP().String()
	bes := tp.Backends()
	good, leak, noVIP, noListener, down := bes[0], bes[1], bes[2], bes[3], bes[4]
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	dsrSysctls := func(h *netnstest.Host) {
		for _, dev := range []string{"all", "eth0"} {
			h.Sysctl(t, "net.ipv4.conf."+dev+".arp_ignore", "1")
			h.Sysctl(t, "net.ipv4.conf."+dev+".arp_announce", "2")
		}
	}
	// be1: ready.
	dsrSysctls(good)
	good.Run(t, "ip", "addr", "add", vip+"/32", "dev", "lo")
	netnstest.ServeHTTP(t, good, vip+":80", handler)
	// be2: the VIP and a listener, but the ARP defaults (arp_ignore=0):
	// it answers who-has VIP.
	leak.Run(t, "ip", "addr", "add", vip+"/32", "dev", "lo")
	netnstest.ServeHTTP(t, leak, vip+":80", handler)
	// be3: the sysctls and a listener on every address, but no VIP: a SYN
	// for the VIP is not for it.
	dsrSysctls(noVIP)
	netnstest.ServeHTTP(t, noVIP, "0.0.0.0:80", handler)
	// be4: the VIP and the sysctls, nothing on port 80.
	dsrSysctls(noListener)
	noListener.Run(t, "ip", "addr", "add", vip+"/32", "dev", "lo")
	// be5: down.
	down.Run(t, "ip", "link", "set", "eth0", "down")

	lb := tp.LB()
	run := func(t *testing.T, backends ...*netnstest.Host) (lines []string, code int) {
		t.Helper()
		args := []string{"-i", "eth0", "-vip", vip + ":80", "-timeout", "1s"}
		for _, b := range backends {
			args = append(args, b.Addr().String())
		}
		start := time.Now()
		out, err := lb.HelperCommand(ctx, t, "TestHelperSetupCheck", checkArgsEnv+"="+strings.Join(args, "\t")).CombinedOutput()
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		code = -1
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), "NIBCHECK "); ok {
				lines = append(lines, s)
			} else if s, ok := strings.CutPrefix(sc.Text(), "NIBCHECK-EXIT "); ok {
				code, _ = strconv.Atoi(s)
			}
		}
		if code < 0 {
			t.Fatalf("helper printed no exit status:\n%s", out)
		}
		t.Logf("setup check %s: exit %d after %v:\n%s", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond), strings.Join(lines, "\n"))
		return lines, code
	}
	// wantLine checks that line names be, its MAC (unless want is
	// "unreachable") and the verdict want.
	wantLine := func(t *testing.T, line string, be *netnstest.Host, want string) {
		t.Helper()
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != be.Addr().String() {
			t.Errorf("line %q: want it to start with %s", line, be.Addr())
			return
		}
		mac := "-"
		if want != "unreachable" {
			mac = be.MAC().String()
		}
		if f[1] != mac {
			t.Errorf("line %q: MAC %s, want %s", line, f[1], mac)
		}
		if !strings.HasPrefix(strings.Join(f[2:], " "), want+": ") {
			t.Errorf("line %q: want verdict %q", line, want)
		}
	}

	t.Run("faults", func(t *testing.T) {
		lines, code := run(t, bes...)
		if code != ExitFailed {
			t.Errorf("exit status %d, want %d", code, ExitFailed)
		}
		if len(lines) != len(bes) {
			t.Fatalf("%d lines, want one per backend (%d):\n%s", len(lines), len(bes), strings.Join(lines, "\n"))
		}
		wantLine(t, lines[0], good, "ok")
		wantLine(t, lines[1], leak, "arp leak")
		wantLine(t, lines[2], noVIP, "vip not bound")
		wantLine(t, lines[3], noListener, "not listening")
		wantLine(t, lines[4], down, "unreachable")
		if !strings.Contains(lines[0], "SYN+ACK from "+vip+":80") {
			t.Errorf("ok line %q does not say what answered", lines[0])
		}
	})
	// wantWarning checks that line warns of mac answering ARP for the VIP.
	wantWarning := func(t *testing.T, line string, mac string) {
		t.Helper()
		if !strings.HasPrefix(line, "warning: "+mac+" ") || !strings.Contains(line, vip) {
			t.Errorf("warning %q does not name the MAC %s and the VIP", line, mac)
		}
	}
	t.Run("good", func(t *testing.T) {
		lines, code := run(t, good)
		if code != ExitOK {
			t.Errorf("exit status %d, want %d", code, ExitOK)
		}
		// be2 still answers for the VIP: not checked this time, it is
		// another host answering, a warning.
		if len(lines) != 2 {
			t.Fatalf("%d lines, want the backend's and a warning about be2", len(lines))
		}
		wantLine(t, lines[0], good, "ok")
		wantWarning(t, lines[1], leak.MAC().String())
	})
	t.Run("fixed", func(t *testing.T) {
		dsrSysctls(leak)
		lines, code := run(t, good, leak)
		if code != ExitOK || len(lines) != 2 {
			t.Fatalf("exit status %d with %d lines, want %d with 2", code, len(lines), ExitOK)
		}
		wantLine(t, lines[0], good, "ok")
		wantLine(t, lines[1], leak, "ok")
	})
	t.Run("other host answers for the VIP", func(t *testing.T) {
		client := tp.Client()
		client.Run(t, "ip", "addr", "add", vip+"/32", "dev", "eth0")
		defer client.Run(t, "ip", "addr", "del", vip+"/32", "dev", "eth0")
		lines, code := run(t, good)
		if code != ExitOK {
			t.Errorf("exit status %d, want %d (a warning only)", code, ExitOK)
		}
		if len(lines) != 2 {
			t.Fatalf("%d lines, want the backend's and a warning", len(lines))
		}
		wantLine(t, lines[0], good, "ok")
		wantWarning(t, lines[1], client.MAC().String())
	})
}

// TestHelperSetupCheck runs setup check in the LB's namespace for
// TestLinuxSetupCheck, printing its output lines and exit status with
// markers.
func TestHelperSetupCheck(t *testing.T) {
	if !netnstest.IsHelper(t.Name()) {
		t.Skip("helper process of TestLinuxSetupCheck")
	}
	var stdout, stderr bytes.Buffer
	code := checkMain(strings.Split(os.Getenv(checkArgsEnv), "\t"), &stdout, &stderr)
	for line := range strings.Lines(stdout.String()) {
		fmt.Print("NIBCHECK " + line)
	}
	fmt.Fprint(os.Stderr, stderr.String())
	fmt.Printf("NIBCHECK-EXIT %d\n", code)
}
