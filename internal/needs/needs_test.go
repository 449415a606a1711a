package needs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/hosttool"
)

func TestCI(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "1": true, "TRUE": true, "": false, "false": false, "0": false, "yes": false} {
		t.Setenv("CI", v)
		if got := CI(); got != want {
			t.Errorf("CI=%q: CI() = %v, want %v", v, got, want)
		}
	}
}

// fakeTool writes an executable script named name into dir.
func fakeTool(t *testing.T, dir, name string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestToolLooksInPathThenSbin(t *testing.T) {
	bin, sbin := t.TempDir(), t.TempDir()
	inPath := fakeTool(t, bin, "nibtool-a", 0o755)
	inSbin := fakeTool(t, sbin, "nibtool-b", 0o755)
	t.Setenv("PATH", bin)
	saved := hosttool.SbinDirs
	hosttool.SbinDirs = []string{sbin}
	t.Cleanup(func() { hosttool.SbinDirs = saved })

	for _, tc := range []struct{ name, want string }{
		{"nibtool-a", inPath},
		{"nibtool-b", inSbin},
		{inSbin, inSbin}, // a path is taken as it is
	} {
		if got := Tool(t, tc.name); got != tc.want {
			t.Errorf("Tool(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
	// What Look refuses is hosttool's test.
}

func TestInstallHint(t *testing.T) {
	if h := installHint("dig"); !strings.Contains(h, "dnsutils") {
		t.Errorf("installHint(dig) = %q, want it to name dnsutils", h)
	}
	if h := installHint("/usr/bin/penctl"); !strings.Contains(h, "Debian package pen") {
		t.Errorf("installHint(/usr/bin/penctl) = %q, want it to name the pen package", h)
	}
	if h := installHint("nibtool-missing"); h != "" {
		t.Errorf("installHint of an unknown tool = %q, want none", h)
	}
}

// TestCIInstallsEveryKnownTool: every Debian package the hints name is in
// .ci/run's package list, so a hint never sends CI's reader to a package
// CI does not install.
func TestCIInstallsEveryKnownTool(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)\nPKGS=\(([^)]*)\)`).FindSubmatch(b)
	if m == nil {
		t.Fatal(".ci/run: no PKGS=(...) list")
	}
	pkgs := strings.Fields(string(m[1]))
	for tool, pkg := range hosttool.Packages() {
		if !slices.Contains(pkgs, pkg) {
			t.Errorf("%s comes from Debian package %s, which .ci/run does not install (PKGS: %v)", tool, pkg, pkgs)
		}
	}
}

const helperEnv = "NIB_NEEDS_HELPER"

// TestHelperNeeds is the child process of TestUnmetSkipsOrFailsUnderCI: it
// states the need its environment names, then prints a marker that shows
// whether the test went on past it.
func TestHelperNeeds(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process of TestUnmetSkipsOrFailsUnderCI")
	}
	switch mode {
	case "tool":
		Tool(t, "nibtool-missing")
	case "tool-path":
		Tool(t, "/nonexistent/pen")
	case "tools":
		Tools(t, "sh", "nibtool-missing")
	case "root":
		geteuid = func() int { return 1000 }
		Root(t)
	case "met":
		geteuid = func() int { return 0 }
		Root(t)
		Tool(t, "sh")
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	t.Log("went on past the need")
}

// TestUnmetSkipsOrFailsUnderCI runs this test binary's TestHelperNeeds
// with a need that is not met: without CI the test skips, with CI=true it
// fails; either way it stops at the need and says what is missing.
func TestUnmetSkipsOrFailsUnderCI(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// This test itself may run under CI=true: the child gets exactly the CI
	// value each case names.
	base := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "CI=") || strings.HasPrefix(kv, helperEnv+"=") || strings.HasPrefix(kv, "GORACE=")
	})
	base = append(base, "GORACE=atexit_sleep_ms=0")
	for _, tc := range []struct {
		mode, ci string
		want     string // SKIP, FAIL or PASS
		message  string
	}{
		{"tool", "", "SKIP", "needs nibtool-missing, which is not installed"},
		{"tool", "true", "FAIL", "needs nibtool-missing, which is not installed"},
		{"tool", "false", "SKIP", "needs nibtool-missing"},
		{"tool-path", "", "SKIP", "needs /nonexistent/pen, which is not installed (Debian package pen"},
		{"tool-path", "true", "FAIL", "needs /nonexistent/pen"},
		{"tools", "", "SKIP", "needs nibtool-missing"},
		{"tools", "1", "FAIL", "needs nibtool-missing"},
		{"root", "", "SKIP", "needs root (effective uid is 1000)"},
		{"root", "true", "FAIL", "needs root (effective uid is 1000)"},
		{"met", "true", "PASS", "went on past the need"},
	} {
		t.Run(tc.mode+"/CI="+tc.ci, func(t *testing.T) {
			cmd := exec.Command(exe, "-test.run=^TestHelperNeeds$", "-test.count=1", "-test.v", "-test.timeout=1m")
			cmd.Env = append(slices.Clone(base), helperEnv+"="+tc.mode)
			if tc.ci != "" {
				cmd.Env = append(cmd.Env, "CI="+tc.ci)
			}
			cmd.WaitDelay = 5 * time.Second
			b, err := cmd.CombinedOutput()
			out := string(b)
			var exit *exec.ExitError
			switch {
			case tc.want == "FAIL" && !errors.As(err, &exit):
				t.Fatalf("child: %v, want a failing exit status\n%s", err, out)
			case tc.want != "FAIL" && err != nil:
				t.Fatalf("child: %v, want success\n%s", err, out)
			}
			if !strings.Contains(out, "--- "+tc.want+": TestHelperNeeds") {
				t.Errorf("child output lacks --- %s: TestHelperNeeds:\n%s", tc.want, out)
			}
			if !strings.Contains(out, tc.message) {
				t.Errorf("child output lacks %q:\n%s", tc.message, out)
			}
			if reached := strings.Contains(out, "went on past the need"); reached != (tc.want == "PASS") {
				t.Errorf("child went on past the need: %v, want %v:\n%s", reached, tc.want == "PASS", out)
			}
			if ciNote := strings.Contains(out, "CI=true: CI provides every need"); ciNote != (tc.want == "FAIL") {
				t.Errorf("child mentions CI: %v, want %v:\n%s", ciNote, tc.want == "FAIL", out)
			}
		})
	}
}
