package lbd

import (
	"io"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// SIGUSR1's status file replaces a symlink at its path instead of writing
// through it: lbd runs as root, and the directory may be writable by others.
func TestWebStatsReplacesSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stats := filepath.Join(dir, "stats.html")
	if err := os.Symlink(victim, stats); err != nil {
		t.Fatal(err)
	}
	cfg := oneService(freePort(t), namedBackend(t, "a"))
	cfg.Services[0].WebStats = stats
	d, logs := newDaemon(t, cfg)
	d.writeWebStats(log.New(io.Discard, "", 0))

	if got := readFile(t, victim); got != "precious\n" {
		t.Fatalf("symlink target overwritten: %q", got)
	}
	st, err := os.Lstat(stats)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm() != 0o644 {
		t.Fatalf("status file is %v, want a regular file 0644 (logs: %s)", st.Mode(), logs)
	}
	if got := readFile(t, stats); !strings.Contains(got, "<h1>lbd status: web</h1>") {
		t.Fatalf("status file: %q", got)
	}
	assertDir(t, dir, "stats.html", "victim")
}

// The status file is replaced whole (a new file renamed over it), never
// truncated and rewritten in place where a reader could see half a page.
func TestWebStatsReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	stats := filepath.Join(dir, "stats.html")
	if err := os.WriteFile(stats, []byte("old page\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A second name for the old file: an in-place rewrite would show here.
	held := filepath.Join(dir, "held")
	if err := os.Link(stats, held); err != nil {
		t.Fatal(err)
	}
	cfg := oneService(freePort(t), namedBackend(t, "a"))
	cfg.Services[0].WebStats = stats
	d, _ := newDaemon(t, cfg)
	d.writeWebStats(log.New(io.Discard, "", 0))
	if got := readFile(t, held); got != "old page\n" {
		t.Fatalf("old status file rewritten in place: %q", got)
	}
	if got := readFile(t, stats); !strings.Contains(got, "lbd status: web") {
		t.Fatalf("status file: %q", got)
	}
	assertDir(t, dir, "held", "stats.html")
}

// assertDir checks that dir holds exactly names (no temporary files left).
func assertDir(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, names) {
		t.Fatalf("%s holds %q, want %q", dir, got, names)
	}
}
