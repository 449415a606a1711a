package appliance

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nib-lb/nib/internal/needs"
)

const mounts = `/dev/sda2 / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
/dev/sda1 /boot/efi vfat rw 0 0
/dev/sdb1 /media/card vfat rw,nosuid 0 0
tmpfs /tmp tmpfs rw 0 0
`

func TestMountedChecks(t *testing.T) {
	sda := []string{"/dev/sda", "/dev/sda1", "/dev/sda2"}
	sdb := []string{"/dev/sdb", "/dev/sdb1"}
	sdc := []string{"/dev/sdc"}
	if d, ok := MountedOn(mounts, "/", sda); !ok || d != "/dev/sda2" {
		t.Errorf("the system disk: %q %v", d, ok)
	}
	if _, ok := MountedOn(mounts, "/", sdb); ok {
		t.Error("sdb is not the system disk")
	}
	if m, ok := MountedAny(mounts, sdb); !ok || !strings.Contains(m, "/media/card") {
		t.Errorf("sdb1 is mounted: %q %v", m, ok)
	}
	if _, ok := MountedAny(mounts, sdc); ok {
		t.Error("sdc is not mounted")
	}
}

func TestCheckTargetDeviceRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "nib.img")
	os.WriteFile(file, nil, 0o644)
	if err := CheckTargetDevice(file); err == nil || !strings.Contains(err.Error(), "not a block device") {
		t.Errorf("regular file: %v", err)
	}
	if err := CheckTargetDevice("/dev/null"); err == nil || !strings.Contains(err.Error(), "not a block device") {
		t.Errorf("character device: %v", err)
	}
	// The disk this test runs from (the root file system's) is refused.
	mountsNow, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Skip(err)
	}
	for _, line := range strings.Split(string(mountsNow), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[1] != "/" || !strings.HasPrefix(f[0], "/dev/") {
			continue
		}
		dev, err := filepath.EvalSymlinks(f[0])
		if err != nil {
			t.Skip(err)
		}
		// The whole disk that holds the partition, from sysfs.
		disk := dev
		if link, err := filepath.EvalSymlinks("/sys/class/block/" + filepath.Base(dev)); err == nil {
			if _, err := os.Stat(filepath.Join(link, "partition")); err == nil {
				disk = "/dev/" + filepath.Base(filepath.Dir(link))
			}
		}
		err = CheckTargetDevice(disk)
		if err == nil || !(strings.Contains(err.Error(), "running system") || strings.Contains(err.Error(), "mounted")) {
			t.Errorf("CheckTargetDevice(%s), the system disk: %v", disk, err)
		}
		if disk != dev {
			if err := CheckTargetDevice(dev); err == nil {
				t.Errorf("CheckTargetDevice(%s), a mounted partition: accepted", dev)
			}
		}
		return
	}
	t.Skip("/ is not on a /dev block device here")
}

// make image DEV=: the image lands on a real block device (a loop device
// over a file), byte for byte.
func TestWriteDeviceLoop(t *testing.T) {
	needs.Root(t)
	losetup := needs.Tool(t, "losetup")
	dir := t.TempDir()
	img := filepath.Join(dir, "nib.img")
	data := make([]byte, 3*MiB+512)
	for i := range data {
		data[i] = byte(i*7 + i/4096)
	}
	os.WriteFile(img, data, 0o644)
	card := filepath.Join(dir, "card")
	os.WriteFile(card, make([]byte, 4*MiB), 0o644)
	out, err := exec.Command(losetup, "--find", "--show", card).Output()
	if err != nil {
		needs.Unmet(t, "no loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "-d", dev).Run() })
	var log strings.Builder
	if err := WriteDevice(context.Background(), img, dev, &log); err != nil {
		t.Fatalf("WriteDevice(%s): %v", dev, err)
	}
	got, err := os.ReadFile(card)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(data)], data) {
		t.Error("the card does not hold the image")
	}
	if !strings.Contains(log.String(), "writing "+dev) {
		t.Errorf("no progress line: %q", log.String())
	}
	// A partition of it, or the file itself, is refused.
	if err := WriteDevice(context.Background(), img, card, io.Discard); err == nil {
		t.Error("wrote to a regular file")
	}
}
