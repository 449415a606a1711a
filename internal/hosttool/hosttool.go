// Package hosttool finds the host commands nib runs — Debian's tools that
// build the appliance image, the tests' oracles and peers, the benchmarks'
// load generators — and names the Debian package that has each, for the
// messages that say how to install a missing one.
package hosttool

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// SbinDirs are searched after PATH: mkfs.fat, mke2fs and the like live
// there, and PATH lacks them under sudo, make or a plain user's shell.
// Tests may replace them.
var SbinDirs = []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}

// Look finds the command name in PATH, then in SbinDirs. A name with a
// slash is taken as a path.
func Look(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if strings.Contains(name, "/") {
		return "", fmt.Errorf("%s is not an executable file", name)
	}
	for _, dir := range SbinDirs {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s", name, strings.Join(SbinDirs, ", "))
}

// packages names the Debian package that installs each command nib runs
// (.ci/run installs them all; a test checks that it does).
var packages = map[string]string{
	"pen": "pen", "penctl": "pen",
	"curl": "curl", "dig": "dnsutils",
	"ip": "iproute2", "ping": "iputils-ping", "ethtool": "ethtool",
	"haproxy": "haproxy", "nginx": "nginx", "wrk": "wrk", "iperf3": "iperf3", "tcpdump": "tcpdump",
	"openssl": "openssl", "mksquashfs": "squashfs-tools", "unsquashfs": "squashfs-tools",
	"mkfs.fat": "dosfstools", "mcopy": "mtools", "mmd": "mtools", "mdel": "mtools",
	"sfdisk": "fdisk", "mke2fs": "e2fsprogs", "debugfs": "e2fsprogs", "e2fsck": "e2fsprogs",
	"qemu-system-aarch64": "qemu-system-arm", "chromium": "chromium",
	"clang": "clang", "llvm-strip": "llvm",
}

// Package is the Debian package of the command name (a path counts by its
// base name), or "" when nib does not know it.
func Package(name string) string { return packages[filepath.Base(name)] }

// Packages returns every command nib knows with its Debian package.
func Packages() map[string]string { return maps.Clone(packages) }

// Missing reports every command of names that Look cannot find, with the
// apt-get line that installs them; nil when all are there.
func Missing(names ...string) error {
	var missing, pkgs []string
	seen := map[string]bool{}
	for _, n := range names {
		if _, err := Look(n); err == nil {
			continue
		}
		missing = append(missing, n)
		if p := Package(n); p != "" && !seen[p] {
			seen[p] = true
			pkgs = append(pkgs, p)
		}
	}
	switch {
	case len(missing) == 0:
		return nil
	case len(pkgs) == 0:
		return fmt.Errorf("missing tools %s", strings.Join(missing, ", "))
	}
	return fmt.Errorf("missing tools %s: apt-get install %s", strings.Join(missing, ", "), strings.Join(pkgs, " "))
}
