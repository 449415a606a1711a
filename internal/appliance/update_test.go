package appliance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"time"

	"github.com/nib-lb/nib/internal/needs"
)

// testDisk assembles a small but real appliance disk: MBR, a FAT16 boot
// partition with cmdline.txt, a gzip squashfs in root A, ext4 /perm.
func testDisk(t *testing.T) (img string, root []byte) {
	t.Helper()
	needs.Tool(t, "mksquashfs")
	needs.Tool(t, "mke2fs")
	dir := t.TempDir()
	sig := Partuuid("nib")
	bootDir := filepath.Join(dir, "boot")
	os.MkdirAll(bootDir, 0o755)
	cmdline := Cmdline("init=/gokrazy/init", sig, "off")
	os.WriteFile(filepath.Join(bootDir, "cmdline.txt"), []byte(cmdline), 0o644)
	os.WriteFile(filepath.Join(bootDir, "vmlinuz"), bytes.Repeat([]byte("k"), 5000), 0o644)
	bootImg := filepath.Join(dir, "boot.img")
	if err := makeFAT(runner{}, bootDir, bootImg, sig, time.Unix(1700000000, 0)); err != nil {
		t.Fatal(err)
	}
	rootDir := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(rootDir, "etc"), 0o755)
	os.WriteFile(filepath.Join(rootDir, "etc", "hostname"), []byte("nib"), 0o444)
	sq := filepath.Join(dir, "root.sqfs")
	if err := (runner{}).run("mksquashfs", rootDir, sq, "-comp", "gzip", "-noappend", "-all-root", "-no-progress", "-quiet"); err != nil {
		t.Fatal(err)
	}
	img = filepath.Join(dir, "disk.img")
	total := int64(PermStart)*SectorSize + 8*MiB
	parts, _ := Partitions(uint64(total / SectorSize))
	if err := writeDisk(img, total, MBR(sig, parts), bootImg, sq); err != nil {
		t.Fatal(err)
	}
	permImg := filepath.Join(dir, "perm.img")
	os.MkdirAll(filepath.Join(dir, "perm"), 0o755)
	if err := makePerm(filepath.Join(dir, "perm"), permImg, 8*MiB, permUUID(sig), time.Unix(1700000000, 0)); err != nil {
		t.Fatal(err)
	}
	if err := copySparse(img, int64(PermStart)*SectorSize, permImg); err != nil {
		t.Fatal(err)
	}
	if err := CheckImage(img, sig); err != nil {
		t.Fatal(err)
	}
	root, err := os.ReadFile(sq)
	if err != nil {
		t.Fatal(err)
	}
	return img, root
}

func TestDiskViews(t *testing.T) {
	img, root := testDisk(t)
	d, err := OpenDisk(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, n, err := d.Cmdline(); n != 2 || err != nil {
		t.Fatalf("Cmdline: root %d, %v", n, err)
	}
	r, err := d.Root(2)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	if !bytes.Equal(got, root) {
		t.Errorf("Root(2) is %d bytes, want the %d-byte squashfs", len(got), len(root))
	}
	if _, err := d.Root(3); err == nil {
		t.Error("Root(3) of an empty partition succeeded")
	}
	if !d.HasExt4(4) || d.HasExt4(3) {
		t.Error("HasExt4 wrong")
	}
}

func TestSquashfsGzipOnly(t *testing.T) {
	needs.Tool(t, "mksquashfs")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	for comp, ok := range map[string]bool{"gzip": true, "xz": false, "lz4": false} {
		out := filepath.Join(t.TempDir(), "s")
		if b, err := exec.Command("mksquashfs", dir, out, "-comp", comp, "-noappend", "-quiet", "-no-progress").CombinedOutput(); err != nil {
			t.Fatalf("mksquashfs -comp %s: %v\n%s", comp, err, b)
		}
		f, _ := os.Open(out)
		size, err := SquashfsSize(f)
		st, _ := f.Stat()
		f.Close()
		if ok && (err != nil || size <= 0 || size > st.Size()) {
			t.Errorf("%s: size %d of %d, %v", comp, size, st.Size(), err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "only gzip")) {
			t.Errorf("%s: %v, want a refusal", comp, err)
		}
	}
}

// fakeGokrazy implements the runtime's side of the update protocol.
type fakeGokrazy struct {
	mu        sync.Mutex
	password  string
	build     string
	next      string // the build after reboot
	got       map[string][]byte
	switched  bool
	rebooted  bool
	corrupt   string // path whose digest reply is wrong
	downUntil time.Time
}

func (g *fakeGokrazy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Now().Before(g.downUntil) {
		http.Error(w, "booting", http.StatusServiceUnavailable)
		return
	}
	if u, p, ok := r.BasicAuth(); !ok || u != "gokrazy" || p != g.password {
		w.Header().Set("WWW-Authenticate", `Basic realm="gokrazy"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	switch {
	case r.URL.Path == "/" && r.Header.Get("Accept") == "application/json":
		fmt.Fprintf(w, `{"BuildTimestamp":%q,"Hostname":"nib"}`, g.build)
	case r.URL.Path == "/update/features":
		io.WriteString(w, "partuuid,updatehash,")
	case strings.HasPrefix(r.URL.Path, "/update/") && r.Method == http.MethodPut:
		b, _ := io.ReadAll(r.Body)
		g.got[r.URL.Path] = b
		sum := sha256.Sum256(b)
		if r.URL.Path == g.corrupt {
			sum[0] ^= 1
		}
		io.WriteString(w, hex.EncodeToString(sum[:]))
	case r.URL.Path == "/update/switch" && r.Method == http.MethodPost:
		g.switched = true
	case r.URL.Path == "/reboot" && r.Method == http.MethodPost:
		g.rebooted = true
		io.WriteString(w, "Rebooting...\n")
		g.downUntil = time.Now().Add(1500 * time.Millisecond)
		if g.switched {
			g.build = g.next
		}
	default:
		http.Error(w, "expected a PUT/POST request", http.StatusBadRequest)
	}
}

func TestUpdateProtocol(t *testing.T) {
	img, root := testDisk(t)
	g := &fakeGokrazy{password: "pw", build: "old", next: "new", got: map[string][]byte{}}
	srv := httptest.NewServer(g)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	var log bytes.Buffer
	err := Update(context.Background(), UpdateOptions{Image: img, Host: host, Password: "pw", BuildTimestamp: "new", Timeout: 20 * time.Second, Log: &log})
	if err != nil {
		t.Fatalf("Update: %v\n%s", err, log.String())
	}
	if !bytes.Equal(g.got["/update/root"], root) {
		t.Errorf("root: got %d bytes, want the %d-byte squashfs", len(g.got["/update/root"]), len(root))
	}
	if n := len(g.got["/update/boot"]); n != BootSize*SectorSize {
		t.Errorf("boot: got %d bytes, want %d", n, BootSize*SectorSize)
	}
	mbr := g.got["/update/mbr"]
	if len(mbr) != 446 || mbr[440] != 0x5e || mbr[443] != 0x13 {
		t.Errorf("mbr: %d bytes (want 446 with the disk signature)", len(mbr))
	}
	if !g.switched || !g.rebooted {
		t.Errorf("switched %v rebooted %v", g.switched, g.rebooted)
	}
	if !strings.Contains(log.String(), "runs the new build new") {
		t.Errorf("log lacks the final line:\n%s", log.String())
	}
}

func TestUpdateRefusesBadDigestAndPassword(t *testing.T) {
	img, _ := testDisk(t)
	g := &fakeGokrazy{password: "pw", build: "old", next: "new", got: map[string][]byte{}, corrupt: "/update/boot"}
	srv := httptest.NewServer(g)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	err := Update(context.Background(), UpdateOptions{Image: img, Host: host, Password: "pw", BuildTimestamp: "new", Timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "corrupted") {
		t.Errorf("corrupt digest: %v", err)
	}
	if g.switched || g.rebooted {
		t.Error("switched or rebooted after a corrupted transfer")
	}
	err = Update(context.Background(), UpdateOptions{Image: img, Host: host, Password: "wrong", BuildTimestamp: "new", Timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "password") {
		t.Errorf("wrong password: %v", err)
	}
	// Same build: nothing to do, nothing sent.
	g.corrupt, g.got = "", map[string][]byte{}
	if err := Update(context.Background(), UpdateOptions{Image: img, Host: host, Password: "pw", BuildTimestamp: "old"}); err != nil || len(g.got) != 0 {
		t.Errorf("same build: %v, sent %d parts", err, len(g.got))
	}
}
