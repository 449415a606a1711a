package appliance

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nib-lb/nib/internal/needs"
)

func TestPartuuid(t *testing.T) {
	// gok's disk signatures (FNV-1a 32 of the hostname).
	for host, want := range map[string]uint32{"nib": 0x13a4025e, "gokrazy": 0x2e18c40c} {
		if got := Partuuid(host); got != want {
			t.Errorf("Partuuid(%q) = %08x, want %08x", host, got, want)
		}
	}
}

func TestLayoutConstants(t *testing.T) {
	// The layout gok uses, in bytes: boot at 4 MiB, root A at 104 MiB, root
	// B at 604 MiB, perm at 1104 MiB.
	for _, c := range []struct {
		name string
		lba  int64
		want int64
	}{
		{"boot", BootStart, 4 * MiB},
		{"rootA", RootAStart, 104 * MiB},
		{"rootB", RootBStart, 604 * MiB},
		{"perm", PermStart, 1104 * MiB},
	} {
		if c.lba*SectorSize != c.want {
			t.Errorf("%s starts at byte %d, want %d", c.name, c.lba*SectorSize, c.want)
		}
	}
	if _, err := Partitions(PermStart); err == nil {
		t.Error("Partitions accepted a disk with no room for /perm")
	}
}

func TestMBRBytes(t *testing.T) {
	total := uint64(PermStart) + 524288
	parts, err := Partitions(total)
	if err != nil {
		t.Fatal(err)
	}
	b := MBR(0x13a4025e, parts)
	for i := 0; i < 440; i++ {
		if b[i] != 0 {
			t.Fatalf("boot code byte %d = %#x, want 0", i, b[i])
		}
	}
	if got := binary.LittleEndian.Uint32(b[440:]); got != 0x13a4025e {
		t.Errorf("disk signature %08x", got)
	}
	if b[444] != 0 || b[445] != 0 || b[510] != 0x55 || b[511] != 0xaa {
		t.Errorf("bytes 444-445 %x, 510-511 %x", b[444:446], b[510:])
	}
	want := [4]string{
		"80feffff0cfeffff0020000000200300",
		"00feffff83feffff0040030000a00f00",
		"00feffff83feffff00e0120000a00f00",
		"00feffff83feffff0080220000000800",
	}
	for i := range want {
		got := b[446+16*i : 446+16*(i+1)]
		if h := hexs(got); h != want[i] {
			t.Errorf("entry %d = %s, want %s", i+1, h, want[i])
		}
	}

	// Debian's sfdisk reads it as the layout (an independent parser).
	sfdisk := needs.Tool(t, "sfdisk")
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(int64(total) * SectorSize)
	f.WriteAt(b[:], 0)
	f.Close()
	out, err := exec.Command(sfdisk, "-d", img).CombinedOutput()
	if err != nil {
		t.Fatalf("sfdisk -d: %v\n%s", err, out)
	}
	for _, line := range []string{
		"label: dos", "label-id: 0x13a4025e",
		"start=        8192, size=      204800, type=c, bootable",
		"start=      212992, size=     1024000, type=83",
		"start=     1236992, size=     1024000, type=83",
		"start=     2260992, size=      524288, type=83",
	} {
		if !strings.Contains(string(out), line) {
			t.Errorf("sfdisk -d lacks %q:\n%s", line, out)
		}
	}

	// And OpenDisk's own parser agrees.
	d := &Disk{MBR: b}
	if err := d.parseMBR(); err != nil {
		t.Fatal(err)
	}
	if d.Sig != 0x13a4025e || d.Parts != parts {
		t.Errorf("parseMBR = %08x %+v", d.Sig, d.Parts)
	}
	b[444] = 1
	d = &Disk{MBR: b}
	if err := d.parseMBR(); err == nil {
		t.Error("parseMBR accepted a nonzero byte 444 (rootdev would not find the disk)")
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	var sb strings.Builder
	for _, c := range b {
		sb.WriteByte(digits[c>>4])
		sb.WriteByte(digits[c&15])
	}
	return sb.String()
}

func TestCmdline(t *testing.T) {
	const rpi = "root=/dev/mmcblk0p2 init=/gokrazy/init rootwait panic=10 oops=panic\n"
	const arm64 = "root=/dev/sda2 ro init=/gokrazy/init panic=10 oops=panic"
	pad := strings.Repeat(" ", 64)
	for _, c := range []struct {
		kernel, serial, want string
	}{
		{rpi, "serial0,115200", "console=tty1 console=serial0,115200 root=PARTUUID=13a4025e-02 init=/gokrazy/init rootwait panic=10 oops=panic" + pad},
		{rpi, "", "console=tty1 console=serial0,115200 root=PARTUUID=13a4025e-02 init=/gokrazy/init rootwait panic=10 oops=panic" + pad},
		{rpi, "off", "console=tty1 root=PARTUUID=13a4025e-02 init=/gokrazy/init rootwait panic=10 oops=panic" + pad},
		{arm64, "ttyAMA0,115200", "console=tty1 console=ttyAMA0,115200 root=PARTUUID=13a4025e-02 ro init=/gokrazy/init panic=10 oops=panic rootwait" + pad},
		{"init=/gokrazy/init", "off", "console=tty1 root=PARTUUID=13a4025e-02 init=/gokrazy/init rootwait" + pad},
	} {
		got := Cmdline(c.kernel, 0x13a4025e, c.serial)
		if got != c.want {
			t.Errorf("Cmdline(%q, %q) =\n%q\nwant\n%q", c.kernel, c.serial, got, c.want)
		}
		if n, err := ActiveRoot(got, 0x13a4025e); n != 2 || err != nil {
			t.Errorf("ActiveRoot = %d, %v; want 2", n, err)
		}
		// The runtime's switch rewrites root= in place to the other
		// partition; the VM runner and make update then see partition 3.
		switched := strings.Replace(got, "-02 ", "-03 ", 1)
		if n, err := ActiveRoot(switched, 0x13a4025e); n != 3 || err != nil {
			t.Errorf("after switch ActiveRoot = %d, %v; want 3", n, err)
		}
	}
	for _, bad := range []string{"init=/gokrazy/init", "root=PARTUUID=13a4025e-04", "root=PARTUUID=deadbeef-02", "root=PARTUUID=13A4025E-02"} {
		if n, err := ActiveRoot(bad, 0x13a4025e); err == nil {
			t.Errorf("ActiveRoot(%q) = %d, want an error", bad, n)
		}
	}
}

func TestConfigTxt(t *testing.T) {
	const k = "arm_control=0x200\nenable_uart=0\nkernel=vmlinuz\n"
	if got := ConfigTxt(k, "serial0,115200", nil); got != "arm_control=0x200\nenable_uart=1\nkernel=vmlinuz\n" {
		t.Errorf("serial on: %q", got)
	}
	if got := ConfigTxt(k, "off", []string{"dtoverlay=disable-bt"}); got != k+"dtoverlay=disable-bt\n" {
		t.Errorf("serial off, extra line: %q", got)
	}
	if got := ConfigTxt("", "", nil); got != "" {
		t.Errorf("empty kernel config: %q", got)
	}
}
