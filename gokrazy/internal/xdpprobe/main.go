// Command xdpprobe reports the BPF state of the machine it runs on, one
// "key: value" line each on stdout: the kernel release, the BPF JIT sysctl,
// and for each interface named on the command line the XDP program attached
// to it (attach mode, program name, whether the kernel JIT-compiled it).
//
// The appliance's end-to-end test (gokrazy/vm_xdp_test.go) runs it inside
// the VM through gokrazy's web UI, as `gok run` does (upload to /tmp,
// /divert), because the appliance has no shell; it is not part of the image.
// It exits 0, which gokrazy's supervisor takes as "done".
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func main() {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		fmt.Printf("kernel: error: %v\n", err)
	} else {
		fmt.Printf("kernel: %s %s\n", unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Machine[:]))
	}
	for _, sysctl := range []string{"net/core/bpf_jit_enable", "net/core/bpf_jit_harden", "kernel/unprivileged_bpf_disabled"} {
		b, err := os.ReadFile("/proc/sys/" + sysctl)
		v := strings.TrimSpace(string(b))
		if err != nil {
			v = "error: " + err.Error()
		}
		fmt.Printf("%s: %s\n", strings.ReplaceAll(sysctl, "/", "."), v)
	}
	for _, iface := range os.Args[1:] {
		fmt.Printf("xdp %s: %s\n", iface, describe(iface))
	}
	fmt.Println("xdpprobe: done")
}

// attachModes are the kernel's XDP_ATTACHED_* values.
var attachModes = map[uint32]string{0: "none", 1: "native", 2: "generic", 3: "offload", 4: "multi"}

// describe says which XDP program iface runs, how, and whether it is JITed.
func describe(iface string) string {
	l, err := netlink.LinkByName(iface)
	if err != nil {
		return "error: " + err.Error()
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		return "mode=none"
	}
	mode, ok := attachModes[x.AttachMode]
	if !ok {
		mode = fmt.Sprint(x.AttachMode)
	}
	s := fmt.Sprintf("mode=%s prog_id=%d", mode, x.ProgId)
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId))
	if err != nil {
		return s + " info_error=" + strings.ReplaceAll(err.Error(), " ", "_")
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return s + " info_error=" + strings.ReplaceAll(err.Error(), " ", "_")
	}
	s += fmt.Sprintf(" name=%s type=%s", info.Name, info.Type)
	if n, err := info.TranslatedSize(); err == nil {
		s += fmt.Sprintf(" xlated_bytes=%d", n)
	}
	if n, ok := info.VerifiedInstructions(); ok {
		s += fmt.Sprintf(" verified_insns=%d", n)
	}
	if n, err := info.JitedSize(); err == nil {
		s += fmt.Sprintf(" jited=true jited_bytes=%d", n)
	} else {
		s += " jited=false"
	}
	return s
}
