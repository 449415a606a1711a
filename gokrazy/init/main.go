// Command init is nib's gokrazy init (/gokrazy/init on the appliance): it
// boots the gokrazy runtime and supervises the programs the image builder
// compiled in. The builder sets both variables below with -ldflags -X; the
// list comes from gokrazy/nib/config.json, the same file gok reads. One
// decision is made at boot: when lbd's config (/perm/lbd/config.toml, or its
// last good config) has a static [network] on the DHCP client's interface,
// /gokrazy/dhcp starts stopped (netconfig.InitServices).
package main

import (
	"log"
	"os"
	"os/exec"

	"github.com/gokrazy/gokrazy"

	"github.com/nib-lb/nib/internal/initspec"
	"github.com/nib-lb/nib/internal/netconfig"
)

var (
	buildTimestamp = "uninitialized"
	services       string // initspec.Encode of the programs to supervise
)

func main() {
	log.SetFlags(log.LstdFlags | log.Lshortfile)
	log.Printf("nib gokrazy build timestamp %s", buildTimestamp)
	specs, err := initspec.Decode(services)
	if err != nil {
		log.Fatal(err)
	}
	if err := gokrazy.Boot(buildTimestamp); err != nil {
		log.Fatal(err)
	}
	host, _ := os.Hostname()
	log.Printf("hostname %q, model %q", host, gokrazy.Model())

	// /perm is mounted now: a static [network] in lbd's config keeps
	// gokrazy's DHCP client off its interface (lbd sets the address).
	specs, notes := netconfig.InitServices(specs, os.ReadFile)
	for _, n := range notes {
		log.Print(n)
	}

	var svcs []*gokrazy.Service
	for _, s := range specs {
		cmd := exec.Command(s.Path, s.Args...)
		cmd.Env = append(os.Environ(), s.Env...)
		switch {
		case s.DontStart:
			svcs = append(svcs, gokrazy.NewStoppedService(cmd))
		case s.WaitForClock:
			svcs = append(svcs, gokrazy.NewWaitForClockService(cmd))
		default:
			svcs = append(svcs, gokrazy.NewService(cmd))
		}
	}
	if err := gokrazy.SuperviseServices(svcs); err != nil {
		log.Fatal(err)
	}
	select {}
}
