// Package needs is how a test says what it needs from the machine: root,
// or a command such as pen, dig or qemu-system-aarch64.
//
// Where a need is not met the test skips and says what is missing and how
// to get it. Under CI (the CI environment variable set to true, as .ci/run
// runs) it fails instead: CI runs as root and installs every tool the tests
// use, so a green CI run means the root and oracle tests ran.
//
//	func TestPenOracle(t *testing.T) {
//		pen := needs.Tool(t, "pen")
//		...
//	}
//
// Skips for other reasons (testing.Short, a helper process, data a case
// cannot use) stay plain t.Skip calls.
//
// It is test support: only _test.go files (and test-support packages such as
// netnstest) may import it.
package needs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// CI reports whether the tests run under CI (CI=true, or another value
// strconv.ParseBool takes as true), where an unmet need fails the test.
func CI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// Unmet ends t because something it needs is missing: a skip, or under CI a
// failure. The message says what is missing (and how to get it). Root and
// Tool use it; call it directly for other needs, such as a privilege that
// only a probe can find (netnstest.SkipUnprivileged).
func Unmet(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("%s\n(CI=true: CI provides every need, so this test fails rather than skip)", msg)
	}
	t.Skipf("%s", msg)
}

// geteuid is os.Geteuid; this package's tests replace it.
var geteuid = os.Geteuid

// Root needs the test to run as root (effective uid 0).
func Root(t testing.TB) {
	t.Helper()
	if uid := geteuid(); uid != 0 {
		Unmet(t, "needs root (effective uid is %d): run the test binary as root", uid)
	}
}

// Tool needs the command name and returns its path. A name without a slash
// is looked up in PATH, then in /usr/sbin and /sbin (which are not in a
// normal user's PATH); a name with a slash must be that executable file.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := lookPath(name)
	if err != nil {
		Unmet(t, "needs %s, which is not installed%s", name, installHint(name))
	}
	return p
}

// Tools needs each of the commands names.
func Tools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		Tool(t, n)
	}
}

// sbinDirs are searched after PATH; this package's tests replace them.
var sbinDirs = []string{"/usr/sbin", "/sbin"}

func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if strings.Contains(name, "/") {
		return "", fmt.Errorf("%s is not an executable file", name)
	}
	for _, dir := range sbinDirs {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s", name, strings.Join(sbinDirs, ", "))
}

// debianPackage names the Debian package that installs each command the
// tests use (.ci/run installs them all; a test checks that it does).
var debianPackage = map[string]string{
	"pen": "pen", "penctl": "pen",
	"curl": "curl", "dig": "dnsutils",
	"ip": "iproute2", "ping": "iputils-ping", "ethtool": "ethtool",
	"haproxy": "haproxy", "nginx": "nginx", "wrk": "wrk", "iperf3": "iperf3", "tcpdump": "tcpdump",
	"openssl": "openssl", "mksquashfs": "squashfs-tools", "unsquashfs": "squashfs-tools",
	"mkfs.fat": "dosfstools", "mcopy": "mtools", "mdel": "mtools",
	"sfdisk": "fdisk", "mke2fs": "e2fsprogs", "debugfs": "e2fsprogs",
	"qemu-system-aarch64": "qemu-system-arm", "chromium": "chromium",
}

func installHint(name string) string {
	if pkg, ok := debianPackage[filepath.Base(name)]; ok {
		return fmt.Sprintf(" (Debian package %s: apt-get install %s; .ci/run installs it)", pkg, pkg)
	}
	return ""
}
