package netnstest

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestHelperUnprivileged is the child of TestSkipUnprivilegedFailsUnderCI:
// the privilege probe is made to report a missing privilege.
func TestHelperUnprivileged(t *testing.T) {
	if !IsHelper(t.Name()) {
		t.Skip("runs only as the helper process of TestSkipUnprivilegedFailsUnderCI")
	}
	privOnce.Do(func() { privReason = "pretend: not root" })
	SkipUnprivileged(t)
	t.Log("went on without privileges")
}

// TestSkipUnprivilegedFailsUnderCI: without the privileges, a
// network-namespace test skips, and under CI=true it fails.
func TestSkipUnprivilegedFailsUnderCI(t *testing.T) {
	for _, tc := range []struct {
		ci   string
		want string
	}{{"", "SKIP"}, {"true", "FAIL"}} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := HelperCommand(ctx, t, "TestHelperUnprivileged", "CI="+tc.ci).CombinedOutput()
			var exit *exec.ExitError
			if failed := errors.As(err, &exit); failed != (tc.want == "FAIL") || (err != nil && !failed) {
				t.Fatalf("child: %v, want failed=%v\n%s", err, tc.want == "FAIL", out)
			}
			for _, s := range []string{"--- " + tc.want + ": TestHelperUnprivileged", "network-namespace test: pretend: not root"} {
				if !strings.Contains(string(out), s) {
					t.Errorf("child output lacks %q:\n%s", s, out)
				}
			}
			if strings.Contains(string(out), "went on without privileges") {
				t.Errorf("child went on past SkipUnprivileged:\n%s", out)
			}
		})
	}
}
