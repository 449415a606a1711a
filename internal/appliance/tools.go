package appliance

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/nib-lb/nib/internal/hosttool"
)

// RequiredTools are the Debian commands the builder runs.
var RequiredTools = []string{"mksquashfs", "mkfs.fat", "mcopy", "mmd", "mke2fs", "debugfs"}

// runner runs commands, showing each, and returns their combined output in
// the error when one fails.
type runner struct {
	log io.Writer
	env []string // added to the environment
	dir string
}

func (r runner) run(name string, args ...string) error {
	_, err := r.output(name, args...)
	return err
}

func (r runner) output(name string, args ...string) ([]byte, error) {
	p, err := hosttool.Look(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(p, args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), r.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return nil, fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}
