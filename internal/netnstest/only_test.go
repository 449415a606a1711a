package netnstest

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// privateNetns matches test code that makes or enters network namespaces by
// itself: `ip netns add` as a command, or setns(2) on a network namespace.
var privateNetns = regexp.MustCompile(`"netns",\s*"add"|ip netns add|unix\.Setns\(|CLONE_NEWNET`)

// TestOnlyNetnstestBuildsNamespaces: test code elsewhere in the module builds
// its network namespaces with this package (unique names, removal also when
// setup fails, SkipUnprivileged), not with a private copy of it.
func TestOnlyNetnstestBuildsNamespaces(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root %s: %v", root, err)
	}
	self, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == self || (path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if privateNetns.MatchString(line) {
				rel, _ := filepath.Rel(root, path)
				bad = append(bad, rel+":"+strconv.Itoa(i+1)+": "+strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Errorf("test code that builds or enters network namespaces itself (use netnstest.New and Host.Do):\n%s", strings.Join(bad, "\n"))
	}
}
