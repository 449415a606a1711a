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
	"strconv"
	"testing"

	"github.com/nib-lb/nib/internal/hosttool"
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
// is looked up in PATH, then in the sbin directories (hosttool.Look); a
// name with a slash must be that executable file.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := hosttool.Look(name)
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

func installHint(name string) string {
	if pkg := hosttool.Package(name); pkg != "" {
		return fmt.Sprintf(" (Debian package %s: apt-get install %s; .ci/run installs it)", pkg, pkg)
	}
	return ""
}
