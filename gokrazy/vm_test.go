package gokrazy

// End-to-end tests of the appliance: build nib-vm.img with nib's builder,
// boot it in QEMU (TCG), and check it as an operator would, through the
// forwarded ports only. They take a few minutes; -short skips them.

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/appliance"
	"github.com/nib-lb/nib/internal/needs"
	"github.com/nib-lb/nib/internal/penctl"
	"github.com/nib-lb/nib/internal/syncbuf"
)

// instance copies nib/config.json into a temporary instance directory, so
// the test's password never lands in the work tree.
func instance(t *testing.T) string {
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join("nib", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func buildVM(t *testing.T, inst, out string, epoch int64) *appliance.Result {
	t.Helper()
	return buildVMConfig(t, inst, out, epoch, config.ApplianceTOML())
}

// buildVMConfig builds a VM image whose /perm/lbd/config.toml is lbdConfig.
func buildVMConfig(t *testing.T, inst, out string, epoch int64, lbdConfig []byte) *appliance.Result {
	t.Helper()
	perm, _, err := appliance.ControlSecrets(inst, "nib", "127.0.0.1:9443", filepath.Join(inst, "penctl-vm.json"))
	if err != nil {
		t.Fatal(err)
	}
	perm["lbd/config.toml"] = lbdConfig
	o := appliance.Options{
		ModuleDir: ".", InstanceDir: inst, Output: out,
		PermSize:  64 * appliance.MiB,
		PermFiles: perm,
		Epoch:     time.Unix(epoch, 0), Log: testWriter{t},
		VM: true,
	}
	res, err := appliance.Build(o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(b, "\n"))
	return len(b), nil
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// vm is one running QEMU (possibly across guest reboots).
type vm struct {
	t            *testing.T
	web, ui, api string
	password     string
	cancel       context.CancelFunc
	done         chan error
	console      *syncbuf.Buffer
}

// startVM boots img; taps become the guest's eth1, eth2, ...
func startVM(t *testing.T, img, password string, taps ...appliance.TapNIC) *vm {
	v := &vm{t: t, web: freeAddr(t), ui: freeAddr(t), api: freeAddr(t), password: password, done: make(chan error, 1), console: &syncbuf.Buffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	in, err := appliance.LoadInstance(filepath.Join("nib", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var uiPort int
	fmt.Sscan(in.HTTPPort(), &uiPort)
	go func() {
		v.done <- appliance.RunVM(ctx, appliance.VMOptions{
			Image:    img,
			Forwards: []appliance.Forward{{Host: v.web, Guest: 80}, {Host: v.ui, Guest: uiPort}, {Host: v.api, Guest: 9443}},
			Console:  v.console, Log: v.console,
			Taps: taps,
		})
	}()
	t.Cleanup(func() { v.stop() })
	return v
}

func (v *vm) stop() {
	if v.cancel == nil {
		return
	}
	v.cancel()
	v.cancel = nil
	select {
	case err := <-v.done:
		if err != nil {
			v.t.Errorf("RunVM: %v", err)
		}
	case <-time.After(30 * time.Second):
		v.t.Error("the VM did not stop within 30s")
	}
	if v.t.Failed() {
		v.t.Logf("console:\n%s", v.console.String())
	}
}

// get fetches the welcome port's page.
func (v *vm) get(timeout time.Duration) (string, error) {
	c := http.Client{Timeout: timeout}
	resp, err := c.Get("http://" + v.web + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// waitPage waits until port 80 answers with a body containing want.
func (v *vm) waitPage(want string, within time.Duration) string {
	v.t.Helper()
	deadline := time.Now().Add(within)
	last := ""
	for time.Now().Before(deadline) {
		body, err := v.get(5 * time.Second)
		if err == nil && strings.Contains(body, want) {
			return body
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("body %.80q", body)
		}
		time.Sleep(time.Second)
	}
	v.t.Fatalf("port 80 did not answer with %q within %v (last: %s)\nconsole:\n%s", want, within, last, v.console.String())
	return ""
}

// status is the gokrazy web UI's JSON status.
type status struct {
	BuildTimestamp string
	Services       []struct {
		Path    string
		Pid     int
		Stopped bool
	}
}

func (v *vm) status() (status, error) {
	req, _ := http.NewRequest("GET", "http://"+v.ui+"/", nil)
	req.SetBasicAuth("gokrazy", v.password)
	req.Header.Set("Accept", "application/json")
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return status{}, err
	}
	defer resp.Body.Close()
	var st status
	if resp.StatusCode != 200 {
		return st, fmt.Errorf("status: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (v *vm) lbdPid() int {
	st, err := v.status()
	if err != nil {
		return 0
	}
	for _, s := range st.Services {
		if s.Path == "/user/lbd" && !s.Stopped {
			return s.Pid
		}
	}
	return 0
}

// post sends a form to the web UI with a matching XSRF cookie and token.
func (v *vm) post(path string, form url.Values) error {
	form.Set("xsrftoken", "12345")
	req, _ := http.NewRequest("POST", "http://"+v.ui+path, strings.NewReader(form.Encode()))
	req.SetBasicAuth("gokrazy", v.password)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "gokrazy_xsrf", Value: "12345"})
	c := http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("POST %s: %s", path, resp.Status)
	}
	return nil
}

// permEdit runs a debugfs command on a file of /perm in an image that is not running,
// as an operator would with the card in another machine.
func permEdit(t *testing.T, img string, script string) string {
	t.Helper()
	d, err := appliance.OpenDisk(img)
	if err != nil {
		t.Fatal(err)
	}
	sec := d.Section(4)
	dir := t.TempDir()
	perm := filepath.Join(dir, "perm.img")
	f, _ := os.Create(perm)
	if _, err := io.Copy(f, sec); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d.Close()
	// Replay the journal first, as mounting it would.
	if out, err := exec.Command("e2fsck", "-fy", perm).CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			t.Fatalf("e2fsck: %v\n%s", err, out)
		}
	}
	out, err := exec.Command("debugfs", "-w", "-R", script, perm).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %q: %v\n%s", script, err, out)
	}
	b, _ := os.ReadFile(perm)
	w, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(b, int64(appliance.PermStart)*appliance.SectorSize); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return string(out)
}

func permCat(t *testing.T, img, path string) string {
	t.Helper()
	d, err := appliance.OpenDisk(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	perm := filepath.Join(t.TempDir(), "perm.img")
	f, _ := os.Create(perm)
	io.Copy(f, d.Section(4))
	f.Close()
	out, err := exec.Command("debugfs", "-R", "cat "+path, perm).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

func permWrite(t *testing.T, img, path, content string) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	os.WriteFile(src, []byte(content), 0o600)
	permEdit(t, img, "rm "+path)
	permEdit(t, img, "write "+src+" "+path)
	if got := permCat(t, img, path); got != content {
		t.Fatalf("wrote %s into /perm, read back %q", path, got)
	}
}

const customConfig = `
[[dummy]]
listen = "127.0.0.1:8081"
body = "custom config from /perm\nconfig: {{config}}\n"

[[service]]
name = "custom"
listen = "0.0.0.0:80"
protocol = "tcp"

[[service.backend]]
address = "127.0.0.1:8081"
`

func TestApplianceVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU: skipped with -short")
	}
	needs.Tools(t, "qemu-system-aarch64", "mksquashfs", "mkfs.fat", "mcopy", "mke2fs", "debugfs", "e2fsck", "unsquashfs")
	inst := instance(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "nib-vm.img")
	res := buildVM(t, inst, img, 1700000000)
	password := vmPassword(t, inst)

	t.Run("rootfs", func(t *testing.T) { checkRootFS(t, img) })

	// Boot 1: first boot serves the welcome page; killing lbd gets it
	// restarted by gokrazy's supervisor.
	v := startVM(t, img, password)
	v.waitPage("welcome page", 4*time.Minute)
	st, err := v.status()
	if err != nil || st.BuildTimestamp != res.BuildTimestamp {
		t.Fatalf("web UI build %q (%v), want %q", st.BuildTimestamp, err, res.BuildTimestamp)
	}
	pid := v.lbdPid()
	if pid == 0 {
		t.Fatal("lbd is not running according to gokrazy")
	}
	// penctl reaches the control API with the secrets make image
	// pre-created: the certificate is pinned from the first contact.
	var out, errOut bytes.Buffer
	pc := filepath.Join(inst, "penctl-vm.json")
	if code := penctl.Main([]string{"-config", pc, "-s", v.api, "status"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "welcome") {
		t.Errorf("penctl status: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := penctl.Main([]string{"-config", pc, "-s", v.api, "servers"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "127.0.0.1") {
		t.Errorf("penctl servers: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	if err := v.post("/restart", url.Values{"path": {"/user/lbd"}, "signal": {"kill"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for v.lbdPid() == pid || v.lbdPid() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("lbd (pid %d) was not restarted after SIGKILL", pid)
		}
		time.Sleep(500 * time.Millisecond)
	}
	v.waitPage("welcome page", time.Minute)
	v.stop()

	// Boot 2 and 3: a config put on /perm is served, and still after a
	// reboot; lbd's own writes to /perm persist.
	permWrite(t, img, "/lbd/config.toml", customConfig)
	v = startVM(t, img, password)
	v.waitPage("custom config from /perm", 4*time.Minute)
	if err := v.post("/reboot", url.Values{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	v.waitPage("custom config from /perm", 4*time.Minute)

	// Update over the air with a new build: root partitions switch, the new
	// build answers, /perm is kept.
	img2 := filepath.Join(dir, "nib-vm-update.img")
	res2 := buildVM(t, inst, img2, 1700000100)
	if res2.BuildTimestamp == res.BuildTimestamp {
		t.Fatal("two different builds have the same timestamp")
	}
	err = appliance.Update(context.Background(), appliance.UpdateOptions{
		Image: img2, Host: v.ui, Password: password, BuildTimestamp: res2.BuildTimestamp,
		Timeout: 5 * time.Minute, Log: testWriter{t},
	})
	if err != nil {
		t.Fatalf("update: %v\nconsole:\n%s", err, v.console.String())
	}
	v.waitPage("custom config from /perm", 2*time.Minute)
	v.stop()
	d, err := appliance.OpenDisk(img)
	if err != nil {
		t.Fatal(err)
	}
	_, root, err := d.Cmdline()
	d.Close()
	if err != nil || root != 3 {
		t.Fatalf("after the update cmdline.txt boots root %d (%v), want 3", root, err)
	}
	if got := permCat(t, img, "/lbd/config.toml"); got != customConfig {
		t.Errorf("/perm/lbd/config.toml after the update: %q", got)
	}
	// lbd's own writes to /perm persist: it kept the config as last good.
	if got := permCat(t, img, "/lbd/last-good.toml"); got != customConfig {
		t.Errorf("/perm/lbd/last-good.toml: %q, want the custom config", got)
	}

	// A broken config on /perm: the last good one keeps serving, and lbd is
	// not crash-looping (gokrazy keeps one process).
	permWrite(t, img, "/lbd/config.toml", "[[service]\nname = broken\n")
	v = startVM(t, img, password)
	body := v.waitPage("custom config from /perm", 4*time.Minute)
	pid = v.lbdPid()
	time.Sleep(3 * time.Second)
	if p := v.lbdPid(); p != pid || p == 0 {
		t.Errorf("lbd restarted (pid %d, then %d) with a broken config", pid, p)
	}
	if !strings.Contains(body, "/perm/lbd/last-good.toml, the last good config") || !strings.Contains(body, "config.toml:1:") {
		t.Errorf("the page does not say that the last good config serves, and why:\n%s", body)
	}
	v.stop()
}

// checkRootFS lists the root squashfs with unsquashfs: the programs are
// linux/arm64 executables, gokr-pw.txt is root's alone.
func checkRootFS(t *testing.T, img string) {
	d, err := appliance.OpenDisk(img)
	if err != nil {
		t.Fatal(err)
	}
	root, err := d.Root(2)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sq := filepath.Join(dir, "root.sqfs")
	f, _ := os.Create(sq)
	io.Copy(f, root)
	f.Close()
	d.Close()
	out, err := exec.Command("unsquashfs", "-lln", sq).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	listing := string(out)
	for _, want := range []string{
		"-r-------- 0/0", // gokr-pw.txt
		"squashfs-root/etc/resolv.conf -> /tmp/resolv.conf",
		"squashfs-root/var -> /perm/var",
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("root file system lacks %q:\n%s", want, listing)
		}
	}
	for _, line := range strings.Split(listing, "\n") {
		if strings.HasSuffix(line, "/etc/gokr-pw.txt") && !strings.HasPrefix(line, "-r-------- 0/0") {
			t.Errorf("gokr-pw.txt: %s", line)
		}
		if strings.Contains(line, " 1000/") {
			t.Errorf("a file not owned by root: %s", line)
		}
	}
	ex := filepath.Join(dir, "x")
	if out, err := exec.Command("unsquashfs", "-d", ex, sq, "gokrazy", "user").CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs -d: %v\n%s", err, out)
	}
	for _, p := range []string{"gokrazy/init", "gokrazy/dhcp", "gokrazy/ntp", "gokrazy/randomd", "user/lbd"} {
		f, err := elf.Open(filepath.Join(ex, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if f.Machine != elf.EM_AARCH64 || f.Type != elf.ET_EXEC {
			t.Errorf("%s: %v %v, want an arm64 executable", p, f.Machine, f.Type)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked", p)
			}
		}
		f.Close()
	}
}

// vmPassword is the web UI password of the instance in dir.
func vmPassword(t *testing.T, dir string) string {
	t.Helper()
	in, err := appliance.LoadInstance(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	pw, err := appliance.HTTPPassword(in, dir)
	if err != nil {
		t.Fatal(err)
	}
	return pw
}
