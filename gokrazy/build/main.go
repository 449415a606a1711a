// Command build is nib's appliance tool (make image, make vm, make update):
// it builds the gokrazy SD-card image described by nib/config.json, boots it
// in QEMU, and updates a running appliance over the air. The logic lives in
// github.com/nib-lb/nib/internal/appliance.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/appliance"
)

const usage = `usage: go run ./build COMMAND [flags]   (from gokrazy/; the Makefile does this)

commands:
  image    build nib.img for the Raspberry Pi 4/5 (kernel.rpi); -dev /dev/sdX writes a card
  vm       build nib-vm.img (kernel.arm64) and boot it in QEMU until interrupted
  update   build, then update a running appliance over the air (-host ADDR[:PORT])
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "image":
		err = image(ctx, os.Args[2:])
	case "vm":
		err = vm(ctx, os.Args[2:])
	case "update":
		err = update(ctx, os.Args[2:])
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	default:
		err = fmt.Errorf("unknown command %q\n%s", os.Args[1], usage)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nib:", err)
		os.Exit(1)
	}
}

// common flags: where things are.
type common struct {
	instance string
	output   string
	permMiB  int64
	epoch    string
}

func (c *common) register(fs *flag.FlagSet, defOut string) {
	fs.StringVar(&c.instance, "instance", "nib", "gok instance `directory` (config.json, http-password.txt)")
	fs.StringVar(&c.output, "o", defOut, "image `file` to write")
	fs.Int64Var(&c.permMiB, "perm", appliance.DefaultPermSize/appliance.MiB, "/perm size in `MiB`")
	fs.StringVar(&c.epoch, "epoch", os.Getenv("SOURCE_DATE_EPOCH"), "timestamp (Unix seconds) for every file; default: SOURCE_DATE_EPOCH, else the last commit's time")
}

func (c *common) options(vm bool) (appliance.Options, error) {
	moduleDir, err := os.Getwd()
	if err != nil {
		return appliance.Options{}, err
	}
	epoch, err := appliance.Epoch(c.epoch, filepath.Dir(moduleDir))
	if err != nil {
		return appliance.Options{}, err
	}
	in, err := appliance.LoadInstance(filepath.Join(c.instance, "config.json"))
	if err != nil {
		return appliance.Options{}, err
	}
	// The control API's secrets, pre-created so penctl pins the appliance's
	// certificate from the first contact; penctl's config file next to
	// config.json (the VM's reaches it through the forwarded port).
	address, pcFile := in.Hostname+":9443", filepath.Join(c.instance, "penctl.json")
	if vm {
		address, pcFile = "127.0.0.1:9443", filepath.Join(c.instance, "penctl-vm.json")
	}
	perm, fp, err := appliance.ControlSecrets(c.instance, in.Hostname, address, pcFile)
	if err != nil {
		return appliance.Options{}, err
	}
	perm["lbd/config.toml"] = config.ApplianceTOML()
	abs, _ := filepath.Abs(pcFile)
	fmt.Printf("control API: https://%s (certificate SHA-256 %s); penctl -config %s status\n", address, fp, abs)
	o := appliance.Options{
		ModuleDir:   moduleDir,
		InstanceDir: c.instance,
		Output:      c.output,
		PermSize:    c.permMiB * appliance.MiB,
		PermFiles:   perm,
		Epoch:       epoch,
		Log:         os.Stdout,
		VM:          vm,
	}
	return o, nil
}

func image(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("image", flag.ExitOnError)
	var c common
	c.register(fs, "../nib.img")
	dev := fs.String("dev", "", "also write the image to this block `device` (refuses mounted devices and the system disk)")
	fs.Parse(args)
	if *dev != "" {
		// Refuse before spending minutes on a build.
		if err := appliance.CheckTargetDevice(*dev); err != nil {
			return err
		}
	}
	o, err := c.options(false)
	if err != nil {
		return err
	}
	res, err := appliance.Build(o)
	if err != nil {
		return err
	}
	pw, _ := filepath.Abs(filepath.Join(c.instance, "http-password.txt"))
	fmt.Printf("web UI and updates: port %s, user gokrazy, password in %s\n", mustPort(c.instance), pw)
	if *dev != "" {
		return appliance.WriteDevice(ctx, res.Image, *dev, os.Stdout)
	}
	return nil
}

func mustPort(instance string) string {
	in, err := appliance.LoadInstance(filepath.Join(instance, "config.json"))
	if err != nil {
		return "?"
	}
	return in.HTTPPort()
}

func vm(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("vm", flag.ExitOnError)
	var c common
	c.register(fs, "../nib-vm.img")
	httpFwd := fs.String("http", "127.0.0.1:8080", "host `address` forwarded to the appliance's port 80")
	uiFwd := fs.String("ui", "127.0.0.1:8088", "host `address` forwarded to the gokrazy web UI / update port")
	extra := fs.String("forward", "127.0.0.1:9443=9443", "more forwards, HOST:PORT=GUESTPORT[,...]")
	noBuild := fs.Bool("nobuild", false, "boot the existing image without building")
	fs.Parse(args)
	o, err := c.options(true)
	if err != nil {
		return err
	}
	if !*noBuild {
		if _, err := appliance.Build(o); err != nil {
			return err
		}
	}
	in, err := appliance.LoadInstance(filepath.Join(c.instance, "config.json"))
	if err != nil {
		return err
	}
	uiPort, _ := strconv.Atoi(in.HTTPPort())
	fwd, err := appliance.ParseForwards(*extra)
	if err != nil {
		return err
	}
	fwd = append([]appliance.Forward{{Host: *httpFwd, Guest: 80}, {Host: *uiFwd, Guest: uiPort}}, fwd...)
	return appliance.RunVM(ctx, appliance.VMOptions{Image: o.Output, Forwards: fwd, Console: os.Stdout, Log: os.Stderr})
}

func update(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("update", flag.ExitOnError)
	var c common
	c.register(fs, "../nib.img")
	host := fs.String("host", "", "appliance `address` (ADDR[:PORT]; the port defaults to Update.HTTPPort)")
	vmImage := fs.Bool("vm", false, "build for the VM (kernel.arm64), as make vm does")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the new build to answer")
	fs.Parse(args)
	if *host == "" {
		return errors.New("update: -host ADDR[:PORT] is required (make update HOST=...)")
	}
	o, err := c.options(*vmImage)
	if err != nil {
		return err
	}
	res, err := appliance.Build(o)
	if err != nil {
		return err
	}
	in, err := appliance.LoadInstance(filepath.Join(c.instance, "config.json"))
	if err != nil {
		return err
	}
	pw, err := appliance.HTTPPassword(in, c.instance)
	if err != nil {
		return err
	}
	return appliance.Update(ctx, appliance.UpdateOptions{
		Image: res.Image, Host: *host, DefaultPort: in.HTTPPort(), Password: pw,
		BuildTimestamp: res.BuildTimestamp, Timeout: *timeout, Log: os.Stdout,
	})
}
