package netnstest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/needs"
)

// Capability bits from linux/capability.h.
const (
	capNetAdmin = 12
	capSysAdmin = 21
)

var (
	privOnce   sync.Once
	privReason string // empty: privileged
)

// SkipUnprivileged skips the test unless the process runs as root with
// CAP_NET_ADMIN and CAP_SYS_ADMIN and `ip netns add` works; the message says
// which of these is missing. Under CI (CI=true) it fails the test instead
// (needs.Unmet): CI runs as root, so a network-namespace test that cannot run
// there is a failure. The probe runs once per test binary.
func SkipUnprivileged(t testing.TB) {
	t.Helper()
	privOnce.Do(func() { privReason = probePrivileges() })
	if privReason != "" {
		needs.Unmet(t, "network-namespace test: %s", privReason)
	}
}

func probePrivileges() string {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Sprintf("not root (euid %d); run the test binary as root", uid)
	}
	caps, err := effectiveCaps()
	if err != nil {
		return fmt.Sprintf("cannot read capabilities: %v", err)
	}
	for _, c := range []struct {
		bit  uint
		name string
	}{{capNetAdmin, "CAP_NET_ADMIN"}, {capSysAdmin, "CAP_SYS_ADMIN"}} {
		if caps&(1<<c.bit) == 0 {
			return fmt.Sprintf("root without %s (effective capabilities %#x)", c.name, caps)
		}
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "the ip command (Debian package iproute2) is not installed"
	}
	name := "nibprobe" + randomHex(3)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Sprintf("`ip netns add` does not work here: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Sprintf("`ip netns del %s` failed: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return ""
}

// effectiveCaps reads CapEff from /proc/self/status.
func effectiveCaps() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no CapEff line in /proc/self/status")
}

// cmdTimeout bounds every command this package runs.
const cmdTimeout = 30 * time.Second

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// command runs name args with a bounded time and returns its combined output.
// The error names the command line and includes the output.
func command(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v\n%s", cmdline(name, args), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func cmdline(name string, args []string) string {
	return strings.Join(append([]string{name}, args...), " ")
}
