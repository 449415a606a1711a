package netnstest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// A test binary killed by -timeout (or SIGKILL) runs no t.Cleanup. So that its
// namespaces do not pile up, every topology writes an owner record
// recordDir/<prefix> holding its process id and start time, and the first New
// in each process deletes the namespaces of records whose process is gone.
const recordDir = "/run/nib-netnstest"

var reapOnce sync.Once

// owner identifies this process across pid reuse.
func owner(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// Field 22 (starttime) counts from after the ")" that ends field 2 (comm).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return fmt.Sprintf("%d %s", pid, f[19]), nil
}

func writeRecord(prefix string) error {
	me, err := owner(os.Getpid())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(recordDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(recordDir, prefix), []byte(me+"\n"), 0o644)
}

func removeRecord(prefix string) error {
	err := os.Remove(filepath.Join(recordDir, prefix))
	if os.IsNotExist(err) {
		return nil
	}
	return err
}

// reapStale deletes the namespaces of topologies whose process has died. It is
// best effort: errors are returned as text for a log line, never fatal.
func reapStale() []string {
	ents, err := os.ReadDir(recordDir)
	if err != nil {
		return nil
	}
	var notes []string
	for _, e := range ents {
		prefix := e.Name()
		if !validPrefix(prefix) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(recordDir, prefix))
		if err != nil {
			continue
		}
		rec := strings.TrimSpace(string(b))
		pid, _, _ := strings.Cut(rec, " ")
		n, err := strconv.Atoi(pid)
		if err != nil {
			continue
		}
		if cur, err := owner(n); err == nil && cur == rec {
			continue // still running
		}
		for _, err := range deleteNamespaces(prefix) {
			notes = append(notes, err.Error())
		}
		if err := removeRecord(prefix); err != nil {
			notes = append(notes, err.Error())
		}
		notes = append(notes, fmt.Sprintf("removed the namespaces of dead topology %s (owner %s)", prefix, rec))
	}
	return notes
}

// namespacesWithPrefix lists the network namespaces named prefix-*.
func namespacesWithPrefix(prefix string) ([]string, error) {
	out, err := command("ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// LeftOver lists what still exists of the topology with the given prefix:
// network namespaces named prefix-* and the owner record. A test can check in
// a t.Cleanup registered before New (so that it runs after the topology's own
// cleanup) that it is empty.
func LeftOver(prefix string) ([]string, error) {
	left, err := namespacesWithPrefix(prefix)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(recordDir, prefix)); err == nil {
		left = append(left, filepath.Join(recordDir, prefix))
	}
	return left, nil
}

// deleteNamespaces deletes the namespaces prefix-*, the switch namespace last.
func deleteNamespaces(prefix string) []error {
	names, err := namespacesWithPrefix(prefix)
	if err != nil {
		return []error{err}
	}
	var errs []error
	sw := prefix + "-sw"
	hasSw := false
	for _, n := range names {
		if n == sw {
			hasSw = true
			continue
		}
		if _, err := command("ip", "netns", "del", n); err != nil {
			errs = append(errs, err)
		}
	}
	if hasSw {
		if _, err := command("ip", "netns", "del", sw); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func validPrefix(p string) bool {
	if len(p) != 9 || !strings.HasPrefix(p, "nib") {
		return false
	}
	for _, c := range p[3:] {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}
