package benchkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/hosttool"
)

// LookTool finds a command in PATH or in the sbin directories (root's PATH
// may lack them when run through sudo or make).
func LookTool(name string) (string, bool) {
	p, err := hosttool.Look(name)
	return p, err == nil
}

// EnsureTools installs the Debian packages of the missing commands.
func EnsureTools(cmds map[string]string) error {
	var missing []string
	for cmd, pkg := range cmds {
		if _, ok := LookTool(cmd); !ok {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	missing = uniq(missing)
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing Debian packages %s; install them (apt-get install %s) or run as root",
			strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	// Keep the packages' own services (nginx on :80, haproxy) from starting.
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); os.IsNotExist(err) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err == nil {
			defer os.Remove(policy)
		}
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, argv := range [][]string{
		{"apt-get", "-q", "update"},
		append([]string{"apt-get", "-q", "install", "-y", "--no-install-recommends"}, missing...),
	} {
		fmt.Fprintf(os.Stderr, "+ %s\n", strings.Join(argv, " "))
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr, cmd.Env = os.Stderr, os.Stderr, env
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
		}
	}
	for cmd := range cmds {
		if _, ok := LookTool(cmd); !ok {
			return fmt.Errorf("%s still missing after apt-get install", cmd)
		}
	}
	return nil
}

func uniq(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// RaiseNofile raises this process's RLIMIT_NOFILE soft limit to the hard
// limit. Setting it explicitly also makes children inherit the raised limit
// (the Go runtime otherwise restores the original soft limit in children).
func RaiseNofile() (uint64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	rl.Cur = rl.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	return rl.Cur, nil
}

// ModuleRoot returns the directory of the main module's go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the nib module (run from the repository)")
	}
	return filepath.Dir(gomod), nil
}

// BuildLbd runs go build -o dir/lbd ./lbd in the module root.
func BuildLbd(dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "lbd")
	cmd := exec.Command("go", "build", "-o", out, "./lbd")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./lbd: %v: %s", err, strings.Join(strings.Fields(string(b)), " "))
	}
	return out, nil
}
