package appliance

import (
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nib-lb/nib/internal/hosttool"
	"github.com/nib-lb/nib/internal/initspec"
)

// Options describe one image build.
type Options struct {
	// ModuleDir is the appliance module (gokrazy/): the programs and the
	// kernel, firmware and EEPROM data modules resolve there.
	ModuleDir string
	// InstanceDir holds config.json and the local, never committed files
	// (the web UI password).
	InstanceDir string
	// Output is the image file to write.
	Output string
	// WorkDir holds intermediate files; a temporary directory when empty.
	WorkDir string

	// VM builds for QEMU instead of the instance's Pi: kernel.arm64, no
	// firmware or EEPROM, the PL011 console (make vm).
	VM bool

	// PermSize is /perm's size (DefaultPermSize when 0).
	PermSize int64
	// PermFiles are written into /perm (path relative to /perm → content).
	PermFiles map[string][]byte
	// Epoch is the time stamped on every file (reproducible builds):
	// SOURCE_DATE_EPOCH, else the last commit's time, else 0.
	Epoch time.Time

	Log io.Writer
}

// Result says what a build produced.
type Result struct {
	Image          string
	BuildTimestamp string // what the appliance's web UI reports
	Partuuid       uint32
	Cmdline        string
	RootSize       int64 // squashfs bytes
	BootFiles      []string
	RootFiles      []string
}

const initPkg = "github.com/nib-lb/nib/gokrazy/init"

// goBuildTags are gok's tags for appliance programs.
var goBuildTags = []string{"gokrazy", "netgo", "osusergo"}

// Build builds the programs and writes the image.
func Build(o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if err := hosttool.Missing(RequiredTools...); err != nil {
		return nil, err
	}
	in, err := LoadInstance(filepath.Join(o.InstanceDir, "config.json"))
	if err != nil {
		return nil, err
	}
	kernel, firmware, eeprom, serial := in.Kernel(), in.Firmware(), in.EEPROM(), in.SerialConsole
	if o.VM {
		kernel, firmware, eeprom, serial = vmKernel, "", "", vmSerialConsole
	}
	if kernel == "" {
		return nil, errors.New("no KernelPackage: an image needs a kernel")
	}
	if o.PermSize == 0 {
		o.PermSize = DefaultPermSize
	}
	if o.WorkDir == "" {
		d, err := os.MkdirTemp("", "nib-image-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		o.WorkDir = d
	}
	password, err := HTTPPassword(in, o.InstanceDir)
	if err != nil {
		return nil, err
	}
	step := newSteps(o.Log, 6)

	// 1. Programs.
	step.next("building %d programs for linux/arm64", len(in.SystemPackages())+len(in.Packages)+1)
	rootDir := filepath.Join(o.WorkDir, "root")
	if err := os.RemoveAll(rootDir); err != nil {
		return nil, err
	}
	gb := goBuilder{dir: o.ModuleDir, log: o.Log}
	// lbd reports the source tree it was built from (the linker ignores -X
	// for programs without the variable).
	var userFlags []string
	if v := sourceVersion(filepath.Dir(o.ModuleDir)); v != "" {
		userFlags = []string{"-ldflags=-X github.com/nib-lb/nib/internal/lbd.version=" + v}
	}
	var bins []string
	for _, sys := range [][2]any{{"gokrazy", in.SystemPackages()}, {"user", in.Packages}} {
		for _, pkg := range sys[1].([]string) {
			out := filepath.Join(rootDir, sys[0].(string), in.Basename(pkg))
			tags := goBuildTags
			if pc, ok := in.PackageConfig[pkg]; ok {
				tags = append(append([]string(nil), tags...), pc.GoBuildTags...)
			}
			var extra []string
			if sys[0] == "user" {
				extra = userFlags
			}
			if err := gb.build(pkg, out, tags, extra); err != nil {
				return nil, err
			}
			bins = append(bins, out)
		}
	}
	// The build timestamp names this exact build: the epoch plus a digest of
	// everything else in the image, so two different builds never report
	// the same timestamp (make update waits for it) and the same inputs
	// give the same bytes.
	kernelDir, err := gb.moduleDir(kernel)
	if err != nil {
		return nil, err
	}
	dirs := map[string]string{kernel: kernelDir}
	for _, m := range []string{firmware, eeprom} {
		if m == "" {
			continue
		}
		d, err := gb.moduleDir(m)
		if err != nil {
			return nil, err
		}
		dirs[m] = d
	}
	h := sha256.New()
	for _, b := range bins {
		if err := hashFile(h, b); err != nil {
			return nil, err
		}
	}
	cfgJSON, _ := json.Marshal(in)
	h.Write(cfgJSON)
	fmt.Fprintf(h, "%s|%s|%s|%s|%s", kernelDir, dirs[firmware], dirs[eeprom], serial, password)
	for _, name := range sortedKeys(o.PermFiles) {
		fmt.Fprintf(h, "%s=%x", name, sha256.Sum256(o.PermFiles[name]))
	}
	ts := o.Epoch.UTC().Format(time.RFC3339) + "+" + hex.EncodeToString(h.Sum(nil))[:12]
	svc, err := initspec.Encode(in.Services())
	if err != nil {
		return nil, err
	}
	ldflags := "-X main.buildTimestamp=" + ts + " -X main.services=" + svc
	if err := gb.build(initPkg, filepath.Join(rootDir, "gokrazy", "init"), goBuildTags, []string{"-ldflags=" + ldflags}); err != nil {
		return nil, err
	}

	// 2. Root file system.
	step.next("root file system (squashfs, gzip)")
	if err := stageRoot(rootDir, in, kernelDir, password); err != nil {
		return nil, err
	}
	rootFiles, err := checkRoot(rootDir)
	if err != nil {
		return nil, err
	}
	epoch := strconv.FormatInt(o.Epoch.Unix(), 10)
	sqfs := filepath.Join(o.WorkDir, "root.sqfs")
	os.Remove(sqfs)
	if err := (runner{log: o.Log}).run("mksquashfs", rootDir, sqfs,
		"-comp", "gzip", "-b", "131072", "-noappend", "-no-xattrs", "-all-root",
		"-mkfs-time", epoch, "-all-time", epoch, "-no-progress", "-quiet"); err != nil {
		return nil, err
	}
	st, err := os.Stat(sqfs)
	if err != nil {
		return nil, err
	}
	if st.Size() > RootSize*SectorSize {
		return nil, fmt.Errorf("root file system is %d bytes; the partition holds %d", st.Size(), RootSize*SectorSize)
	}

	// 3. Boot partition.
	sig := Partuuid(in.Hostname)
	step.next("boot partition (FAT16, one FAT)")
	bootDir := filepath.Join(o.WorkDir, "boot")
	os.RemoveAll(bootDir)
	cmdline, bootFiles, err := stageBoot(bootDir, dirs, kernel, firmware, eeprom, serial, sig, in.BootloaderExtraLines)
	if err != nil {
		return nil, err
	}
	bootImg := filepath.Join(o.WorkDir, "boot.img")
	if err := makeFAT(runner{log: o.Log}, bootDir, bootImg, sig, o.Epoch); err != nil {
		return nil, err
	}
	if err := checkBoot(bootImg, bootFiles, cmdline); err != nil {
		return nil, err
	}

	// 4. /perm and 5. the disk.
	step.next("/perm (ext4, %d MiB)", o.PermSize/MiB)
	total := int64(PermStart)*SectorSize + o.PermSize
	parts, err := Partitions(uint64(total / SectorSize))
	if err != nil {
		return nil, err
	}
	tmp := o.Output + ".tmp"
	os.Remove(tmp)
	if err := writeDisk(tmp, total, MBR(sig, parts), bootImg, sqfs); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	permDir := filepath.Join(o.WorkDir, "perm")
	os.RemoveAll(permDir)
	if err := stagePerm(permDir, o.PermFiles, o.Epoch); err != nil {
		return nil, err
	}
	permImg := filepath.Join(o.WorkDir, "perm.img")
	if err := makePerm(permDir, permImg, o.PermSize, permUUID(sig), o.Epoch); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if err := copySparse(tmp, int64(PermStart)*SectorSize, permImg); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	step.next("checking the image")
	if err := CheckImage(tmp, sig); err != nil {
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, o.Output); err != nil {
		return nil, err
	}
	step.next("wrote %s (%d MiB): hostname %s, build %s", o.Output, total/MiB, in.Hostname, ts)
	return &Result{
		Image: o.Output, BuildTimestamp: ts, Partuuid: sig, Cmdline: cmdline,
		RootSize: st.Size(), BootFiles: bootFiles, RootFiles: rootFiles,
	}, nil
}

// steps prints numbered progress lines.
type steps struct {
	w     io.Writer
	n, of int
	start time.Time
}

func newSteps(w io.Writer, of int) *steps { return &steps{w: w, of: of, start: time.Now()} }

func (s *steps) next(format string, args ...any) {
	s.n++
	fmt.Fprintf(s.w, "[%d/%d %5.1fs] %s\n", s.n, s.of, time.Since(s.start).Seconds(), fmt.Sprintf(format, args...))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func hashFile(w io.Writer, name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// permUUID is /perm's file system UUID, fixed per disk (reproducible).
func permUUID(sig uint32) string {
	return fmt.Sprintf("%08x-6e69-4262-9065-726d00000004", sig)
}

// HTTPPassword returns the web UI password: config.json's Update.HTTPPassword
// if set, else the instance's http-password.txt, created (0600, random) on
// first use, as gok does. It is never committed (.gitignore).
func HTTPPassword(in *Instance, instanceDir string) (string, error) {
	if in.Update != nil && in.Update.HTTPPassword != "" {
		return in.Update.HTTPPassword, nil
	}
	file := filepath.Join(instanceDir, "http-password.txt")
	b, err := os.ReadFile(file)
	if err == nil {
		pw := strings.TrimSpace(string(b))
		if pw == "" {
			return "", fmt.Errorf("%s is empty", file)
		}
		return pw, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	pw := randomPassword()
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(pw + "\n"); err != nil {
		f.Close()
		return "", err
	}
	return pw, f.Close()
}

func randomPassword() string {
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 24)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// checkELF requires a linux/arm64 executable.
func checkELF(name string) error {
	f, err := elf.Open(name)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 || f.Class != elf.ELFCLASS64 || f.Type != elf.ET_EXEC {
		return fmt.Errorf("%s: %v %v %v, want a 64-bit arm64 executable", name, f.Class, f.Machine, f.Type)
	}
	if f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
		return fmt.Errorf("%s: OS ABI %v, want Linux", name, f.OSABI)
	}
	return nil
}
