package appliance

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nib-lb/nib/internal/needs"
)

// mkfat makes a FAT image with mkfs.fat and copies files into it with
// mtools, in order (name → content; "" deletes the name).
func mkfat(t *testing.T, mkfsArgs []string, files [][2]string) string {
	t.Helper()
	mkfs, mcopy, mdel := needs.Tool(t, "mkfs.fat"), needs.Tool(t, "mcopy"), needs.Tool(t, "mdel")
	dir := t.TempDir()
	img := filepath.Join(dir, "boot.img")
	args := append(append([]string{}, mkfsArgs...), "-C", img, "102400")
	if out, err := exec.Command(mkfs, args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.fat: %v\n%s", err, out)
	}
	for i, f := range files {
		var cmd *exec.Cmd
		if f[1] == "" {
			cmd = exec.Command(mdel, "-i", img, "::"+f[0])
		} else {
			src := filepath.Join(dir, "src"+string(rune('a'+i)))
			os.WriteFile(src, []byte(f[1]), 0o644)
			cmd = exec.Command(mcopy, "-i", img, src, "::"+f[0])
		}
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
		}
	}
	return img
}

func openFATFile(t *testing.T, img string) (*FAT, error) {
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return OpenFAT(f)
}

func TestFATRuntimeRules(t *testing.T) {
	cmdline := "console=tty1 root=PARTUUID=13a4025e-02 init=/gokrazy/init"
	files := [][2]string{{"cmdline.txt", cmdline}, {"config.txt", "kernel=vmlinuz\n"}, {"vmlinuz", strings.Repeat("K", 100000)}}

	// nib's parameters: FAT16, one FAT.
	img := mkfat(t, []string{"-F", "16", "-f", "1", "-s", "4", "-h", "8192", "--invariant"}, files)
	fat, err := openFATFile(t, img)
	if err != nil {
		t.Fatalf("OpenFAT(one FAT16): %v", err)
	}
	for _, f := range files {
		got, err := fat.ReadFile("/" + f[0])
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != f[1] {
			t.Errorf("%s read back %d bytes, want %d", f[0], len(got), len(f[1]))
		}
	}
	// Case-insensitive 8.3 match, as the runtime does.
	if _, err := fat.Lookup("/CMDLINE.TXT"); err != nil {
		t.Errorf("upper-case lookup: %v", err)
	}
	if _, err := fat.Lookup("/missing.txt"); err == nil {
		t.Error("found a missing file")
	}

	// What the runtime cannot read is refused.
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"two FATs", []string{"-F", "16", "-f", "2", "-s", "4"}, "2 FATs"},
		{"FAT32", []string{"-F", "32", "-f", "1"}, "not FAT16"},
	} {
		img := mkfat(t, c.args, files[:1])
		if _, err := openFATFile(t, img); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: OpenFAT error %v, want %q", c.name, err, c.want)
		}
	}
}

func TestFATFragmentedRefused(t *testing.T) {
	// a and b take consecutive clusters; deleting a leaves a hole that c
	// (bigger than the hole) fills first and then continues after b.
	hole := strings.Repeat("a", 4096)
	img := mkfat(t, []string{"-F", "16", "-f", "1", "-s", "4", "--invariant"}, [][2]string{
		{"a.bin", hole}, {"b.bin", "b"}, {"a.bin", ""}, {"c.bin", strings.Repeat("c", 3*4096)},
	})
	fat, err := openFATFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fat.Lookup("/b.bin"); err != nil {
		t.Errorf("b.bin: %v", err)
	}
	_, err = fat.Lookup("/c.bin")
	if err == nil || !strings.Contains(err.Error(), "fragmented") {
		t.Errorf("c.bin: %v, want a fragmentation error", err)
	}
}

func TestFATNotAFileSystem(t *testing.T) {
	for _, b := range [][]byte{make([]byte, 512), bytes.Repeat([]byte{0xff}, 512), {1, 2, 3}} {
		if _, err := OpenFAT(bytes.NewReader(b)); err == nil {
			t.Errorf("OpenFAT(%d bytes of junk) succeeded", len(b))
		}
	}
}

func FuzzOpenFAT(f *testing.F) {
	f.Add(make([]byte, 512))
	f.Fuzz(func(t *testing.T, b []byte) {
		fat, err := OpenFAT(bytes.NewReader(b))
		if err != nil {
			return
		}
		fat.ReadFile("/cmdline.txt")
		fat.Lookup("/overlays/x.dtbo")
	})
}
