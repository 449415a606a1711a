package hosttool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fakeTool(t *testing.T, dir, name string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// Look searches PATH, then the sbin directories, and takes only
// executable regular files.
func TestLookPathThenSbin(t *testing.T) {
	bin, sbin := t.TempDir(), t.TempDir()
	t.Setenv("PATH", bin)
	saved := SbinDirs
	SbinDirs = []string{sbin}
	t.Cleanup(func() { SbinDirs = saved })
	inBin := fakeTool(t, bin, "nibtool-both", 0o755)
	fakeTool(t, sbin, "nibtool-both", 0o755)
	inSbin := fakeTool(t, sbin, "nibtool-sbin", 0o755)
	fakeTool(t, sbin, "nibtool-noexec", 0o644)
	os.Mkdir(filepath.Join(sbin, "nibtool-dir"), 0o755)
	for name, want := range map[string]string{"nibtool-both": inBin, "nibtool-sbin": inSbin, inSbin: inSbin} { // a path is taken as it is
		if p, err := Look(name); err != nil || p != want {
			t.Errorf("Look(%q) = %q, %v; want %q", name, p, err, want)
		}
	}
	for _, name := range []string{"nibtool-noexec", "nibtool-dir", "nibtool-none", filepath.Join(bin, "nibtool-sbin"), "/nonexistent/nibtool"} {
		if p, err := Look(name); err == nil {
			t.Errorf("Look(%q) = %q, want an error", name, p)
		}
	}
	err := Missing("nibtool-sbin", "nibtool-none", "mke2fs-nib-none")
	if err == nil || !strings.Contains(err.Error(), "nibtool-none") || strings.Contains(err.Error(), "nibtool-sbin") {
		t.Errorf("Missing: %v", err)
	}
	if Missing("nibtool-both", "nibtool-sbin") != nil {
		t.Error("Missing reports tools that are there")
	}
}

func TestPackage(t *testing.T) {
	for name, want := range map[string]string{"dig": "dnsutils", "/usr/bin/penctl": "pen", "mkfs.fat": "dosfstools", "nibtool": ""} {
		if got := Package(name); got != want {
			t.Errorf("Package(%q) = %q, want %q", name, got, want)
		}
	}
	t.Setenv("PATH", t.TempDir())
	saved := SbinDirs
	SbinDirs = nil
	t.Cleanup(func() { SbinDirs = saved })
	if err := Missing("mke2fs", "debugfs", "mcopy"); err == nil || !strings.HasSuffix(err.Error(), "apt-get install e2fsprogs mtools") {
		t.Errorf("Missing: %v", err)
	}
}
