//go:build linux

package xdp

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/internal/needs"
)

// The committed objects and bindings are what bpf/dsr.c compiles to: gen.go's
// bpf2go command, run into a temporary directory, gives the same bytes (so
// an edit of the C source without go generate fails here).
func TestGeneratedUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the program")
	}
	needs.Tools(t, "clang", "llvm-strip") // Debian packages clang, llvm
	for h, pkg := range map[string]string{"/usr/include/bpf/bpf_helpers.h": "libbpf-dev", "/usr/include/linux/bpf.h": "linux-libc-dev"} {
		if _, err := os.Stat(h); err != nil {
			needs.Unmet(t, "needs %s (Debian package %s)", h, pkg)
		}
	}
	src, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for line := range strings.Lines(string(src)) {
		if rest, ok := strings.CutPrefix(line, "//go:generate go tool "); ok {
			args = strings.Fields(rest)
		}
	}
	if len(args) == 0 || args[0] != "bpf2go" {
		t.Fatalf("no go:generate line for bpf2go in gen.go")
	}
	out := t.TempDir()
	args = append([]string{"tool", "bpf2go", "-output-dir", out}, args[1:]...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "GOPACKAGE=xdp")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	for _, name := range []string{"dsr_bpfel.o", "dsr_bpfeb.o", "dsr_bpfel.go", "dsr_bpfeb.go"} {
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what go generate makes of bpf/dsr.c now (run go generate ./internal/xdp; clang %s)", name, clangVersion())
		}
	}
}

func clangVersion() string {
	b, _ := exec.Command("clang", "--version").Output()
	v, _, _ := strings.Cut(string(b), "\n")
	return v
}
