package appliance

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Epoch returns the time stamped on every file of an image: s (Unix seconds,
// from -epoch or SOURCE_DATE_EPOCH) if set, else the time of the last commit
// in repo, else the Unix epoch. A fixed time makes the same inputs give the
// same bytes.
func Epoch(s, repo string) (time.Time, error) {
	if s != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || n < 0 {
			return time.Time{}, fmt.Errorf("epoch %q: want Unix seconds", s)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	cmd := exec.Command("git", "log", "-1", "--format=%ct")
	cmd.Dir = repo
	if b, err := cmd.Output(); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			return time.Unix(n, 0).UTC(), nil
		}
	}
	return time.Unix(0, 0).UTC(), nil
}

// The kernel and console of a VM image (Options.VM): QEMU's arm64 kernel
// and its PL011 serial port.
const (
	vmKernel        = "github.com/gokrazy/kernel.arm64"
	vmSerialConsole = "ttyAMA0,115200"
)

// sourceVersion describes the source tree with git (tag or commit, and
// "-dirty" with uncommitted changes); "" without git.
func sourceVersion(repo string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty", "--tags")
	cmd.Dir = repo
	b, err := cmd.Output()
	if err != nil {
		return ""
	}
	v := strings.TrimSpace(string(b))
	if strings.ContainsAny(v, " '\"") {
		return ""
	}
	return v
}
