package appliance

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// goBuilder builds appliance programs in the appliance module.
type goBuilder struct {
	dir string
	log io.Writer
}

func (g goBuilder) build(pkg, out string, tags, extra []string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	args := append([]string{"build", "-o", out, "-trimpath", "-buildvcs=false", "-tags=" + strings.Join(tags, ",")}, extra...)
	args = append(args, pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = g.dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	fmt.Fprintf(g.log, "        built %s -> %s\n", pkg, out)
	return checkELF(out)
}

// moduleDir downloads a data module (kernel, firmware, EEPROM) at the
// version the appliance module requires and returns its directory.
func (g goBuilder) moduleDir(mod string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", mod)
	cmd.Dir = g.dir
	b, err := cmd.Output()
	if err != nil {
		var msg []byte
		if ee, ok := err.(*exec.ExitError); ok {
			msg = ee.Stderr
		}
		return "", fmt.Errorf("go mod download %s: %v\n%s%s", mod, err, msg, b)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(b, &m); err != nil {
		return "", err
	}
	if m.Error != "" || m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", mod, m.Error)
	}
	return m.Dir, nil
}

// rootDirs are the directories the runtime mounts on or expects.
var rootDirs = []string{"bin", "dev", "etc", "lib", "mnt", "perm", "proc", "run", "sys", "tmp", "etc/ssl"}

// caBundles are where Debian and others keep the system CA bundle.
var caBundles = []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/ca-bundle.pem"}

// stageRoot completes the root tree around the programs already built into
// rootDir/gokrazy and rootDir/user.
func stageRoot(rootDir string, in *Instance, kernelDir, password string) error {
	for _, d := range rootDirs {
		if err := os.MkdirAll(filepath.Join(rootDir, d), 0o755); err != nil {
			return err
		}
	}
	files := []struct {
		name, content string
		mode          os.FileMode
	}{
		{"etc/hostname", in.Hostname, 0o444}, // no newline: passed to sethostname as is
		{"etc/hosts", "127.0.0.1 localhost\n::1 localhost\n", 0o444},
		{"etc/http-port.txt", in.HTTPPort(), 0o444},
		{"etc/gokr-pw.txt", password, 0o400}, // without it, no update API
	}
	for _, f := range files {
		p := filepath.Join(rootDir, f.name)
		if err := os.WriteFile(p, []byte(f.content), f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	for _, l := range [][2]string{{"/tmp/resolv.conf", "etc/resolv.conf"}, {"/perm/var", "var"}} {
		if err := os.Symlink(l[0], filepath.Join(rootDir, l[1])); err != nil {
			return err
		}
	}
	for _, ca := range caBundles {
		if b, err := os.ReadFile(ca); err == nil {
			if err := os.WriteFile(filepath.Join(rootDir, "etc/ssl/ca-bundle.pem"), b, 0o444); err != nil {
				return err
			}
			break
		}
	}
	// Kernel modules, when the kernel package has them.
	mods := filepath.Join(kernelDir, "lib", "modules")
	if _, err := os.Stat(mods); err == nil {
		if err := copyTree(mods, filepath.Join(rootDir, "lib", "modules")); err != nil {
			return err
		}
	}
	return nil
}

// RequiredRootFiles must be in every root file system, with these modes.
var RequiredRootFiles = map[string]os.FileMode{
	"gokrazy/init":      0o755,
	"etc/hostname":      0o444,
	"etc/gokr-pw.txt":   0o400,
	"etc/http-port.txt": 0o444,
	"etc/hosts":         0o444,
	"etc/resolv.conf":   os.ModeSymlink,
	"var":               os.ModeSymlink,
}

// checkRoot verifies the staged tree: required files and modes, every
// program a linux/arm64 executable. It returns the tree's files.
func checkRoot(rootDir string) ([]string, error) {
	for name, mode := range RequiredRootFiles {
		st, err := os.Lstat(filepath.Join(rootDir, name))
		if err != nil {
			return nil, fmt.Errorf("root file system: %w", err)
		}
		if mode == os.ModeSymlink {
			if st.Mode()&os.ModeSymlink == 0 {
				return nil, fmt.Errorf("root file system: %s is not a symlink", name)
			}
		} else if st.Mode().Perm() != mode {
			return nil, fmt.Errorf("root file system: %s has mode %v, want %v", name, st.Mode().Perm(), mode)
		}
	}
	for _, d := range rootDirs {
		if st, err := os.Stat(filepath.Join(rootDir, d)); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("root file system: mount point /%s missing", d)
		}
	}
	var files []string
	err := filepath.WalkDir(rootDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(rootDir, p)
		if rel == "." {
			return nil
		}
		files = append(files, rel)
		if !d.IsDir() && (strings.HasPrefix(rel, "gokrazy/") || strings.HasPrefix(rel, "user/")) {
			return checkELF(p)
		}
		return nil
	})
	sort.Strings(files)
	return files, err
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if d.Type()&os.ModeSymlink != 0 {
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		}
		return copyFile(p, target, 0o444)
	})
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// stageBoot fills the boot partition's tree: the kernel package's kernel,
// DTBs and overlays; the firmware's boot files; the EEPROM update files;
// cmdline.txt and config.txt. It returns cmdline.txt and the files' paths.
func stageBoot(bootDir string, dirs map[string]string, kernel, firmware, eeprom, serial string, sig uint32, extraLines []string) (string, []string, error) {
	var files []string
	add := func(src, rel string) error {
		dst := filepath.Join(bootDir, rel)
		if _, err := os.Stat(dst); err == nil {
			return fmt.Errorf("boot partition: %s comes from two packages", rel)
		}
		files = append(files, "/"+filepath.ToSlash(rel))
		return copyFile(src, dst, 0o644)
	}
	globs := func(dir string, patterns ...string) error {
		for _, pat := range patterns {
			m, _ := filepath.Glob(filepath.Join(dir, pat))
			sort.Strings(m)
			for _, src := range m {
				rel, _ := filepath.Rel(dir, src)
				if err := add(src, rel); err != nil {
					return err
				}
			}
		}
		return nil
	}
	kdir := dirs[kernel]
	if err := globs(kdir, "vmlinuz", "*.dtb", "overlays/*.dtbo", "overlays/overlay_map.dtb"); err != nil {
		return "", nil, err
	}
	if _, err := os.Stat(filepath.Join(bootDir, "vmlinuz")); err != nil {
		return "", nil, fmt.Errorf("kernel package %s has no vmlinuz", kernel)
	}
	if firmware != "" {
		if err := globs(dirs[firmware], "*.bin", "*.dat", "*.elf", "*.upd", "*.sig", "overlays/*.dtbo"); err != nil {
			return "", nil, err
		}
	}
	if eeprom != "" {
		if err := stageEEPROM(dirs[eeprom], bootDir, &files); err != nil {
			return "", nil, err
		}
	}
	kc, err := os.ReadFile(filepath.Join(kdir, "cmdline.txt"))
	if err != nil {
		return "", nil, fmt.Errorf("kernel package %s: %w", kernel, err)
	}
	cmdline := Cmdline(string(kc), sig, serial)
	kcfg, _ := os.ReadFile(filepath.Join(kdir, "config.txt"))
	for _, f := range [][2]string{{"cmdline.txt", cmdline}, {"config.txt", ConfigTxt(string(kcfg), serial, extraLines)}} {
		if err := os.WriteFile(filepath.Join(bootDir, f[0]), []byte(f[1]), 0o644); err != nil {
			return "", nil, err
		}
		files = append(files, "/"+f[0])
	}
	sort.Strings(files)
	return cmdline, files, nil
}

// stageEEPROM adds the Pi 4 bootloader update as gok does: the newest
// pieeprom-*.bin as pieeprom.upd with its .sig, the newest vl805 firmware,
// and recovery.bin, which makes the boot ROM apply them.
func stageEEPROM(dir, bootDir string, files *[]string) error {
	newest := func(pat string) string {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		sort.Strings(m)
		if len(m) == 0 {
			return ""
		}
		return m[len(m)-1]
	}
	write := func(name string, b []byte) error {
		*files = append(*files, "/"+name)
		return os.WriteFile(filepath.Join(bootDir, name), b, 0o644)
	}
	pairs := [][3]string{{"pieeprom-*.bin", "pieeprom.upd", "pieeprom.sig"}, {"vl805-*.bin", "vl805.bin", "vl805.sig"}}
	for _, p := range pairs {
		src := newest(p[0])
		if src == "" {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		// The signature's ts: is the release date in the file name, not the
		// module cache's mtime, so builds are reproducible.
		ts := int64(0)
		base := filepath.Base(src)
		if t, err := time.Parse("2006-01-02", strings.TrimSuffix(strings.TrimPrefix(base, "pieeprom-"), ".bin")); err == nil {
			ts = t.Unix()
		}
		if err := write(p[1], b); err != nil {
			return err
		}
		if err := write(p[2], fmt.Appendf(nil, "%x\nts: %d\n", sha256.Sum256(b), ts)); err != nil {
			return err
		}
	}
	if rec := filepath.Join(dir, "recovery.bin"); fileExists(rec) {
		b, err := os.ReadFile(rec)
		if err != nil {
			return err
		}
		return write("recovery.bin", b)
	}
	return nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// FAT parameters: FAT16, one FAT (the runtime's reader needs it), 4 sectors
// per cluster, hidden sectors = the partition's start.
func makeFAT(r runner, bootDir, img string, sig uint32, epoch time.Time) error {
	os.Remove(img)
	if err := r.run("mkfs.fat", "-F", "16", "-f", "1", "-s", "4", "-h", fmt.Sprint(BootStart),
		"-n", "GOKRAZY", "-i", fmt.Sprintf("%08x", sig), "--invariant", "-C", img, fmt.Sprint(BootSize/2)); err != nil {
		return err
	}
	// Fixed times on every staged file and directory; mcopy -m keeps them.
	var entries []string
	err := filepath.WalkDir(bootDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Chtimes(p, epoch, epoch); err != nil {
			return err
		}
		if p != bootDir && filepath.Dir(p) == bootDir {
			entries = append(entries, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(entries)
	// Big files first, each written in one piece onto a fresh file system:
	// contiguous, as the runtime's in-place reads and writes require.
	mr := r
	mr.env = append(append([]string(nil), r.env...), "MTOOLS_SKIP_CHECK=1", fmt.Sprintf("SOURCE_DATE_EPOCH=%d", epoch.Unix()))
	args := append([]string{"-i", img, "-s", "-m", "-Q"}, entries...)
	args = append(args, "::/")
	return mr.run("mcopy", args...)
}

// checkBoot opens the FAT as the runtime would and finds every file.
func checkBoot(img string, files []string, cmdline string) error {
	f, err := os.Open(img)
	if err != nil {
		return err
	}
	defer f.Close()
	fat, err := OpenFAT(f)
	if err != nil {
		return err
	}
	got, err := fat.ReadFile("/cmdline.txt")
	if err != nil {
		return err
	}
	if string(got) != cmdline {
		return fmt.Errorf("boot partition: cmdline.txt reads back as %q", got)
	}
	// Files with 8.3 names are found by the runtime's rules and must be
	// contiguous; long names (DTBs, overlays) are only for the firmware,
	// which reads long names.
	for _, name := range files {
		if !is83(name[strings.LastIndexByte(name, '/')+1:]) {
			continue
		}
		if _, err := fat.Lookup(name); err != nil {
			return err
		}
	}
	return nil
}

// is83 reports whether a name fits a FAT short name without a ~N alias.
func is83(name string) bool {
	base, ext, _ := strings.Cut(name, ".")
	return base != "" && len(base) <= 8 && len(ext) <= 3 && !strings.Contains(ext, ".")
}

func stagePerm(permDir string, files map[string][]byte, epoch time.Time) error {
	if err := os.MkdirAll(permDir, 0o755); err != nil {
		return err
	}
	for _, name := range sortedKeys(files) {
		p := filepath.Join(permDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[name], 0o600); err != nil {
			return err
		}
	}
	return filepath.WalkDir(permDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, epoch, epoch)
	})
}

// writeDisk writes the MBR, the boot FAT and root A into a sparse file of
// size bytes; /perm is formatted in place afterwards.
func writeDisk(name string, size int64, mbr [SectorSize]byte, bootImg, rootImg string) error {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	if _, err := f.WriteAt(mbr[:], 0); err != nil {
		return err
	}
	for _, p := range []struct {
		src string
		at  int64
	}{{bootImg, BootStart * SectorSize}, {rootImg, RootAStart * SectorSize}} {
		src, err := os.Open(p.src)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.NewOffsetWriter(f, p.at), src)
		src.Close()
		if err != nil {
			return err
		}
	}
	return f.Sync()
}

// makePerm formats /perm as ext4 populated from permDir. mke2fs stamps the
// build's epoch on what it creates (E2FSPROGS_FAKE_TIME), but reading the
// staged files moves their access times to now, so debugfs sets those back:
// the same inputs give the same bytes.
func makePerm(permDir, img string, size int64, uuid string, epoch time.Time) error {
	os.Remove(img)
	secs := fmt.Sprint(epoch.Unix())
	r := runner{env: []string{"E2FSPROGS_FAKE_TIME=" + secs}}
	if err := r.run("mke2fs", "-q", "-F", "-t", "ext4", "-L", "perm", "-U", uuid,
		"-E", "root_owner=0:0,hash_seed="+uuid, "-d", permDir, img, fmt.Sprint(size/1024)+"k"); err != nil {
		return err
	}
	var script strings.Builder
	err := filepath.WalkDir(permDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(permDir, p)
		name := "/" + filepath.ToSlash(rel)
		if rel == "." {
			name = "/"
		}
		for _, field := range []string{"atime", "ctime", "mtime", "crtime"} {
			fmt.Fprintf(&script, "sif %q %s @%s\n", name, field, secs)
		}
		return nil
	})
	if err != nil {
		return err
	}
	cmds := img + ".debugfs"
	if err := os.WriteFile(cmds, []byte(script.String()), 0o600); err != nil {
		return err
	}
	defer os.Remove(cmds)
	return r.run("debugfs", "-w", "-f", cmds, img)
}

// copySparse writes src into dst at off, skipping all-zero blocks (dst is a
// fresh sparse file, so they are zero already).
func copySparse(dst string, off int64, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	buf := make([]byte, 64<<10)
	zero := make([]byte, len(buf))
	for pos := int64(0); ; {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := out.WriteAt(buf[:n], off+pos); err != nil {
				return err
			}
		}
		pos += int64(n)
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	return out.Sync()
}
