package xdp

import (
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/nib-lb/nib/internal/dsr"
	"github.com/nib-lb/nib/internal/netnstest"
)

// HTTP through the VIP with the program on the LB's eth0 (a veth): in
// generic mode, and in native mode, where veth needs NAPI on the peer for
// XDP_TX (an XDP program there; without, the frames are lost).
func TestLinuxXDPHTTP(t *testing.T) {
	netnstest.SkipUnprivileged(t)
	for _, tc := range []struct {
		name string
		mode link.XDPAttachFlags
		off  map[string]netnstest.Offloads
	}{
		{"generic", link.XDPGenericMode, map[string]netnstest.Offloads{"*": {}}},
		{"generic, client csum offload, lb GRO", link.XDPGenericMode, map[string]netnstest.Offloads{
			"client": {TxChecksum: true, TSO: true, GSO: true},
			"lb":     {TxChecksum: true, GRO: true},
			"*":      {TxChecksum: true, TSO: true, GSO: true},
		}},
		{"native, XDP on the peer", link.XDPDriverMode, map[string]netnstest.Offloads{"*": {}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			tp := netnstest.New(t, netnstest.Options{Offloads: tc.off})
			nb := newNeighbors()
			var bs []dsr.BackendConfig
			for _, be := range tp.Backends() {
				name := be.Name()
				netnstest.ServeHTTP(t, be, tp.VIP().String()+":80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.WriteString(w, name)
				}))
				nb.add(be.Addr())
				bs = append(bs, dsr.BackendConfig{Addr: be.Addr(), Weight: 1})
			}
			// The neighbours of the topology: 02:00 + the address, as macOf.
			for _, be := range tp.Backends() {
				if [6]byte(be.MAC()) != macOf(be.Addr()) {
					t.Fatalf("%s has MAC %s", be, be.MAC())
				}
			}
			if tc.mode == link.XDPDriverMode {
				// veth delivers XDP_TX frames only to a peer with NAPI: an
				// XDP program there (GRO on the peer should do, but did
				// not on 6.18).
				passOn(t, tp.SwitchNS(), "lb")
			}
			lb := tp.LB()
			var f *Forwarder
			err := lb.Do(func() error {
				ifi, err := net.InterfaceByName("eth0")
				if err != nil {
					return err
				}
				f, err = load(dsr.Config{Interface: ifi}, []dsr.ServiceConfig{{Name: "web", VIP: tp.VIP(), Port: 80, Proto: dsr.ProtoTCP, PerFlow: true, Backends: bs}}, dsr.Tarpit{}, nb, nil, t.Logf)
				if err != nil {
					return err
				}
				if err := f.attach(tc.mode); err != nil {
					f.Close()
					return err
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("mode: %s", f.Mode())
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- f.Run(ctx) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			})
			// No ARP for the VIP in this test (arpd's job): the client
			// is told where it is.
			tp.Client().Run(t, "ip", "neigh", "replace", tp.VIP().String(), "lladdr", lb.MAC().String(), "dev", "eth0", "nud", "permanent")
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
// network namespace ns (named, as `ip netns` knows it) until the test ends.
func passOn(t *testing.T, ns, dev string) {
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
	errc := make(chan error, 1)
	go func() {
		// The thread stays locked (and so ends with the goroutine) unless
		// it is back in its own namespace.
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		ifi, err := net.InterfaceByName(dev)
		var l link.Link
		if err == nil {
			l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index, Flags: link.XDPDriverMode})
		}
		if err == nil {
			t.Cleanup(func() { l.Close() })
		}
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("XDP program on %s in %s: %v", dev, ns, err)
	}
}
