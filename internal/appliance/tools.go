package appliance

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// RequiredTools are the Debian commands the builder runs, with the package
// that has each.
var RequiredTools = [][2]string{
	{"mksquashfs", "squashfs-tools"},
	{"mkfs.fat", "dosfstools"},
	{"mcopy", "mtools"},
	{"mmd", "mtools"},
	{"mke2fs", "e2fsprogs"},
	{"debugfs", "e2fsprogs"},
}

// CheckTools reports every missing tool at once, with the apt-get line that
// installs them.
func CheckTools(tools [][2]string) error {
	var missing, pkgs []string
	seen := map[string]bool{}
	for _, t := range tools {
		if _, err := lookPath(t[0]); err != nil {
			missing = append(missing, t[0])
			if !seen[t[1]] {
				seen[t[1]] = true
				pkgs = append(pkgs, t[1])
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing tools %s: apt-get install %s", strings.Join(missing, ", "), strings.Join(pkgs, " "))
	}
	return nil
}

// lookPath also searches the sbin directories, which are not in every
// user's PATH but hold mkfs.fat and mke2fs.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

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
	p, err := lookPath(name)
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
