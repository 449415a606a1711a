package xdp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/nib-lb/nib/internal/dsr"
	"github.com/nib-lb/nib/internal/needs"
	"github.com/nib-lb/nib/internal/netnstest"
)

// startLab builds the topology with offloads off, HTTP servers on the
// backends' VIP:80 that name themselves, and the forwarder on the LB's eth0
// attached in mode (0: as New does, natively if it can). The client is told
// the VIP's MAC (arpd's job in lbd).
func startLab(t *testing.T, off map[string]netnstest.Offloads, mode link.XDPAttachFlags, peerXDP bool) (*netnstest.Topology, *Forwarder) {
	t.Helper()
	tp := netnstest.New(t, netnstest.Options{Offloads: off})
	nb := newNeighbors()
	var bs []dsr.BackendConfig
	for _, be := range tp.Backends() {
		// The topology's MACs are 02:00 + the address, as macOf's.
		if [6]byte(be.MAC()) != macOf(be.Addr()) {
			t.Fatalf("%s has MAC %s", be, be.MAC())
		}
		name := be.Name()
		netnstest.ServeHTTP(t, be, tp.VIP().String()+":80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name)
		}))
		nb.add(be.Addr())
		bs = append(bs, dsr.BackendConfig{Addr: be.Addr(), Weight: 1})
	}
	if peerXDP {
		passOn(t, tp, "lb")
	}
	lb := tp.LB()
	var f *Forwarder
	err := lb.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if err := Supported("eth0"); err != nil {
			return err
		}
		if Supported("lo") == nil || Supported("nosuch0") == nil {
			return errors.New("Supported accepts lo (not Ethernet) or an interface that does not exist")
		}
		svcs := []dsr.ServiceConfig{
			{Name: "web", VIP: tp.VIP(), Port: 80, Proto: dsr.ProtoTCP, PerFlow: true, Backends: bs},
			{Name: "upload", VIP: tp.VIP(), Port: 81, Proto: dsr.ProtoTCP, PerFlow: true, Backends: bs},
		}
		switch mode {
		case 0:
			f, err = New(dsr.Config{Interface: ifi}, svcs, dsr.Tarpit{}, nb, nil, t.Logf)
			return err
		case link.XDPGenericMode:
			f, err = NewGeneric(dsr.Config{Interface: ifi}, svcs, dsr.Tarpit{}, nb, nil, t.Logf)
			return err
		}
		f, err = load(dsr.Config{Interface: ifi}, svcs, dsr.Tarpit{}, nb, nil, t.Logf)
		if err != nil {
			return err
		}
		if err := f.attach(mode); err != nil {
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mode: %s; %s", f.Mode(), f.Compiled())
	// Compiled agrees with the kernel's own account of the program in its
	// descriptor's fdinfo ("prog_jited:").
	info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", f.objs.XdpDsr.FD()))
	if err != nil {
		t.Fatal(err)
	}
	jited := ""
	for _, line := range strings.Split(string(info), "\n") {
		if v, ok := strings.CutPrefix(line, "prog_jited:"); ok {
			jited = strings.TrimSpace(v)
		}
	}
	if got := strings.HasPrefix(f.Compiled(), "JIT-compiled, "); jited == "" || got != (jited == "1") {
		t.Errorf("fdinfo prog_jited %q, but Compiled says %q", jited, f.Compiled())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	tp.Client().Run(t, "ip", "neigh", "replace", tp.VIP().String(), "lladdr", lb.MAC().String(), "dev", "eth0", "nud", "permanent")
	return tp, f
}

// HTTP through the VIP with the program on the LB's eth0 (a veth), for what
// internal/dsr's suite (which runs on both data paths) does not see: New's
// choice of generic mode on veth and its mode string, the LB's own traffic
// passing, the program's counters, and native mode, where veth
// delivers XDP_TX frames only to a peer with NAPI: an XDP program there
// (without, the frames are lost; GRO on the peer did not do on 6.18).
func TestLinuxXDPHTTP(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	needs.Tool(t, "ping")
	for _, tc := range []struct {
		name    string
		mode    link.XDPAttachFlags
		peerXDP bool
		off     map[string]netnstest.Offloads
	}{
		{"New (generic on veth)", 0, false, map[string]netnstest.Offloads{"*": {}}},
		{"native, XDP on the peer", link.XDPDriverMode, true, map[string]netnstest.Offloads{"*": {}}},
		{"NewGeneric", link.XDPGenericMode, false, map[string]netnstest.Offloads{"*": {}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			tp, f := startLab(t, tc.off, tc.mode, tc.peerXDP)
			if tc.mode == 0 && !strings.HasPrefix(f.Mode(), "generic (native mode: not tried: veth") {
				t.Errorf("New's mode on veth: %q", f.Mode())
			}
			if tc.mode == link.XDPGenericMode && f.Mode() != "generic" {
				t.Errorf("NewGeneric's mode: %q, want generic (native not tried)", f.Mode())
			}
			seen := map[string]int{}
			for i := range 40 {
				c := tp.Client().HTTPClient(t)
				c.Timeout = 5 * time.Second
				c.Transport.(*http.Transport).DisableKeepAlives = true
				resp, err := c.Get("http://" + tp.VIP().String() + "/")
				if err != nil {
					t.Fatalf("request %d: %v (stats %+v)", i, err, f.Stats())
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				seen[string(b)]++
			}
			if len(seen) != 2 || seen["be1"] == 0 || seen["be2"] == 0 {
				t.Errorf("answers by backend: %v", seen)
			}
			// The LB's own traffic (ARP, ICMP to its address) passes.
			tp.Client().Run(t, "ping", "-c", "1", "-W", "2", tp.LB().Addr().String())
			st := f.Stats()
			web := st.Services[0]
			if st.Forwarded == 0 || st.Received < st.Forwarded || web.NewFlows != 40 || web.Backends[0].Packets == 0 || web.Backends[1].Packets == 0 {
				t.Errorf("stats %+v", st)
			}
			t.Logf("stats: %+v (%v)", st, time.Since(start).Round(time.Millisecond))
		})
	}
}

// passOn attaches an XDP program that passes every frame to dev in the
// switch's namespace until the test ends.
func passOn(t *testing.T, tp *netnstest.Topology, dev string) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
		License:      "MIT",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	err = tp.SwitchDo(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index, Flags: link.XDPDriverMode})
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		return nil
	})
	if err != nil {
		t.Fatalf("XDP program on %s in %s: %v", dev, tp.SwitchNS(), err)
	}
}
