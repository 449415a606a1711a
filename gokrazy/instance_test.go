package gokrazy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nib-lb/nib/internal/appliance"
)

// Every program the instance installs is a tool of this module, so builds
// resolve it from go.mod without changing go.mod or go.sum.
func TestInstanceProgramsAreTools(t *testing.T) {
	in, err := appliance.LoadInstance(filepath.Join("nib", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	tools := map[string]bool{}
	inBlock := false
	for _, line := range strings.Split(string(mod), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "tool (":
			inBlock = true
		case inBlock && line == ")":
			inBlock = false
		case inBlock:
			tools[line] = true
		case strings.HasPrefix(line, "tool "):
			tools[strings.TrimSpace(strings.TrimPrefix(line, "tool "))] = true
		}
	}
	for _, p := range append(in.SystemPackages(), in.Packages...) {
		if !tools[p] {
			t.Errorf("config.json installs %s, which is not a tool in gokrazy/go.mod (add it to the tool block and run go mod tidy)", p)
		}
	}
}
