package appliance

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nib-lb/nib/internal/hosttool"
)

// Forward is a QEMU user-network port forward: host ADDR:PORT → guest port.
type Forward struct {
	Host  string
	Guest int
}

// ParseForwards parses "HOST:PORT=GUEST[,...]".
func ParseForwards(s string) ([]Forward, error) {
	var out []Forward
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		host, guest, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("forward %q: want HOST:PORT=GUESTPORT", f)
		}
		if _, _, err := net.SplitHostPort(host); err != nil {
			return nil, fmt.Errorf("forward %q: %v", f, err)
		}
		g, err := strconv.Atoi(guest)
		if err != nil || g < 1 || g > 65535 {
			return nil, fmt.Errorf("forward %q: bad guest port", f)
		}
		out = append(out, Forward{Host: host, Guest: g})
	}
	return out, nil
}

// VMOptions describe a QEMU run of an appliance image.
type VMOptions struct {
	Image    string
	Forwards []Forward
	Console  io.Writer // the guest's serial console
	Log      io.Writer // the runner's own messages
	MemoryMB int       // default 1024
	CPUs     int       // default 2
	// Taps are further network cards, eth1, eth2, ... in the guest (eth0
	// is the user-network card with Forwards). None by default.
	Taps []TapNIC
}

// TapNIC is a virtio-net card of the VM on a host tap device.
//
// QEMU opens the tap by name in its own network namespace and creates it
// there if it does not exist; a tap QEMU created goes away when QEMU
// exits, and RunVM runs QEMU again at every guest reboot, so a caller that
// moves the tap elsewhere (into a test's network namespace) must do so
// after each start. QEMU does not configure the host side (script=no).
type TapNIC struct {
	Name string           // the host device, 1 to 15 bytes
	MAC  net.HardwareAddr // the guest's MAC on it; nil lets QEMU choose
}

// RunVM boots the image in qemu-system-aarch64 (TCG, virt machine) the way
// the Pi firmware boots a card: at every boot it reads cmdline.txt and the
// kernel from the image's boot partition, so the A/B switch of an update
// takes effect. A guest reboot restarts QEMU with the new command line; a
// guest power-off or ctx's end stops the VM.
func RunVM(ctx context.Context, o VMOptions) error {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Console == nil {
		o.Console = io.Discard
	}
	if o.MemoryMB == 0 {
		o.MemoryMB = 1024
	}
	if o.CPUs == 0 {
		o.CPUs = 2
	}
	if err := hosttool.Missing("qemu-system-aarch64"); err != nil {
		return err
	}
	for _, t := range o.Taps {
		if t.Name == "" || len(t.Name) > 15 || strings.ContainsAny(t.Name, ",=/ \t\n") {
			return fmt.Errorf("vm: tap name %q: want 1 to 15 bytes without , = / or spaces", t.Name)
		}
		if t.MAC != nil && len(t.MAC) != 6 {
			return fmt.Errorf("vm: tap %s: MAC %v is not an Ethernet address", t.Name, t.MAC)
		}
	}
	dir, err := os.MkdirTemp("", "nib-vm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for boot := 1; ; boot++ {
		reason, err := bootOnce(ctx, o, dir, boot)
		if err != nil {
			return err
		}
		switch {
		case ctx.Err() != nil:
			fmt.Fprintf(o.Log, "vm: stopped\n")
			return nil
		case reason == "guest-reset" || reason == "watchdog":
			fmt.Fprintf(o.Log, "vm: the appliance rebooted (%s); booting again from cmdline.txt\n", reason)
		case reason == "guest-shutdown":
			fmt.Fprintf(o.Log, "vm: the appliance powered off\n")
			return nil
		default:
			return fmt.Errorf("vm: qemu exited (%s)", reason)
		}
	}
}

// bootOnce runs QEMU for one boot and returns why it ended.
func bootOnce(ctx context.Context, o VMOptions, dir string, boot int) (string, error) {
	d, err := OpenDisk(o.Image)
	if err != nil {
		return "", err
	}
	cmdline, root, err := d.Cmdline()
	if err != nil {
		d.Close()
		return "", err
	}
	fat, err := d.Boot()
	if err != nil {
		d.Close()
		return "", err
	}
	kernel, err := fat.ReadFile("/vmlinuz")
	d.Close()
	if err != nil {
		return "", err
	}
	kfile := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kfile, kernel, 0o644); err != nil {
		return "", err
	}
	qmpSock := filepath.Join(dir, "qmp.sock")
	os.Remove(qmpSock)
	var fwd strings.Builder
	for _, f := range o.Forwards {
		fmt.Fprintf(&fwd, ",hostfwd=tcp:%s-:%d", f.Host, f.Guest)
	}
	args := []string{
		"-M", "virt,highmem=off", "-cpu", "cortex-a72",
		"-m", strconv.Itoa(o.MemoryMB), "-smp", strconv.Itoa(o.CPUs),
		"-display", "none", "-monitor", "none", "-serial", "stdio",
		"-no-reboot",
		"-kernel", kfile, "-append", strings.TrimSpace(cmdline),
		"-drive", "file=" + o.Image + ",format=raw,if=virtio",
		"-device", "virtio-net-pci,netdev=net0,romfile=",
		"-netdev", "user,id=net0" + fwd.String(),
	}
	for i, t := range o.Taps {
		dev := fmt.Sprintf("virtio-net-pci,netdev=tap%d,romfile=", i)
		if t.MAC != nil {
			dev += ",mac=" + t.MAC.String()
		}
		args = append(args, "-device", dev,
			"-netdev", fmt.Sprintf("tap,id=tap%d,ifname=%s,script=no,downscript=no", i, t.Name))
	}
	args = append(args,
		"-device", "i6300esb", "-action", "watchdog=reset",
		"-qmp", "unix:"+qmpSock+",server=on,wait=off",
	)
	fmt.Fprintf(o.Log, "vm: boot %d from root partition %d", boot, root)
	for _, f := range o.Forwards {
		fmt.Fprintf(o.Log, "; %s -> guest :%d", f.Host, f.Guest)
	}
	for i, t := range o.Taps {
		fmt.Fprintf(o.Log, "; tap %s -> guest eth%d", t.Name, i+1)
	}
	fmt.Fprintln(o.Log)
	cmd := exec.Command("qemu-system-aarch64", args...)
	cmd.Stdout = o.Console
	cmd.Stderr = o.Log
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	reasons := make(chan string, 4)
	q := &qmp{}
	go q.watch(qmpSock, reasons)
	select {
	case <-ctx.Done():
		// Power the guest off as its power button would, so gokrazy stops
		// the services and unmounts /perm cleanly; force it if it hangs.
		if q.powerdown() {
			fmt.Fprintf(o.Log, "vm: powering the appliance off (up to 60s)\n")
			select {
			case <-exited:
				return "stopped", nil
			case <-time.After(60 * time.Second):
			}
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		return "stopped", nil
	case werr := <-exited:
		select {
		case r := <-reasons:
			return r, nil
		case <-time.After(time.Second):
		}
		if werr != nil {
			return "", fmt.Errorf("vm: qemu: %v", werr)
		}
		return "exit", nil
	}
}

// qmp is a QEMU machine protocol connection: it reports the reason of the
// SHUTDOWN event and can press the guest's power button.
type qmp struct {
	mu sync.Mutex
	c  net.Conn
}

func (q *qmp) powerdown() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.c == nil {
		return false
	}
	_, err := fmt.Fprintf(q.c, `{"execute":"system_powerdown"}`+"\n")
	return err == nil
}

// watch connects and reports the reason of QEMU's SHUTDOWN event.
func (q *qmp) watch(sock string, reasons chan<- string) {
	var c net.Conn
	for i := 0; i < 100; i++ {
		var err error
		if c, err = net.Dial("unix", sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c == nil {
		return
	}
	defer c.Close()
	q.mu.Lock()
	fmt.Fprintf(c, `{"execute":"qmp_capabilities"}`+"\n")
	q.c = c
	q.mu.Unlock()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev struct {
			Event string
			Data  struct {
				Reason string
				Action string
			}
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		switch ev.Event {
		case "SHUTDOWN":
			reasons <- ev.Data.Reason
			return
		case "WATCHDOG":
			reasons <- "watchdog"
			return
		}
	}
}
