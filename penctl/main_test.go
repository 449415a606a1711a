package main

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain runs main instead of the tests when PENCTL_RUN_MAIN is set, so
// the tests can check the command's real exit statuses.
func TestMain(m *testing.M) {
	if os.Getenv("PENCTL_RUN_MAIN") == "1" {
		os.Args = append([]string{"penctl"}, strings.Fields(os.Getenv("PENCTL_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestExitStatus(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	for _, c := range []struct {
		args   string
		code   int
		output string
	}{
		{"help", 0, "reload"},
		{"", 2, "missing verb"},
		{"-s " + closed + " -fingerprint " + strings.Repeat("a", 64) + " status", 3, "connection refused"},
		{closed + " servers", 1, "error connecting to server"}, // Pen's plain protocol
	} {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "PENCTL_RUN_MAIN=1", "PENCTL_ARGS="+c.args, "NIB_TOKEN=x", "NIB_HOST=", "NIB_PENCTL_CONFIG=")
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code || !strings.Contains(string(out), c.output) {
			t.Errorf("penctl %s: exit %d, want %d; output lacks %q?\n%s", c.args, code, c.code, c.output, out)
		}
	}
}
