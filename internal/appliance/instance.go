package appliance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/nib-lb/nib/internal/initspec"
)

// Instance is the part of a gok instance config (config.json) that nib's
// builder reads. The field names and JSON form are gok's, so one file
// describes the appliance for both; fields gok has and nib does not use are
// refused rather than silently ignored, so the two never disagree unseen.
type Instance struct {
	Hostname string
	Update   *UpdateConfig `json:",omitempty"`

	Packages      []string
	PackageConfig map[string]PackageConfig `json:",omitempty"`

	SerialConsole string `json:",omitempty"`

	GokrazyPackages *[]string `json:",omitempty"`
	KernelPackage   *string   `json:",omitempty"`
	FirmwarePackage *string   `json:",omitempty"`
	EEPROMPackage   *string   `json:",omitempty"`

	BootloaderExtraLines []string `json:",omitempty"`
}

// UpdateConfig is gok's Update section: where the web UI and update API listen.
type UpdateConfig struct {
	HTTPPort     string `json:",omitempty"`
	HTTPPassword string `json:",omitempty"`
}

// PackageConfig is gok's per-package settings.
type PackageConfig struct {
	Basename         string   `json:",omitempty"`
	GoBuildTags      []string `json:",omitempty"`
	Environment      []string `json:",omitempty"`
	CommandLineFlags []string `json:",omitempty"`
	DontStart        bool     `json:",omitempty"`
	WaitForClock     bool     `json:",omitempty"`
}

// gok's defaults for the pointer fields.
const (
	DefaultKernel   = "github.com/gokrazy/kernel.rpi"
	DefaultFirmware = "github.com/gokrazy/firmware"
	DefaultEEPROM   = "github.com/gokrazy/rpi-eeprom"
	DefaultHTTPPort = "80"
)

// DefaultGokrazyPackages are the system programs gok installs by default,
// less heartbeat (it exits 125 without a gus server).
var DefaultGokrazyPackages = []string{
	"github.com/gokrazy/gokrazy/cmd/dhcp",
	"github.com/gokrazy/gokrazy/cmd/ntp",
	"github.com/gokrazy/gokrazy/cmd/randomd",
}

// LoadInstance reads and checks a config.json.
func LoadInstance(file string) (*Instance, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	in, err := ParseInstance(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return in, nil
}

// ParseInstance decodes config.json strictly and validates it.
func ParseInstance(b []byte) (*Instance, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var in Instance
	if err := dec.Decode(&in); err != nil {
		return nil, err
	}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	return &in, nil
}

// Validate checks what the runtime and the builder depend on.
func (in *Instance) Validate() error {
	if in.Hostname == "" {
		return fmt.Errorf("config.json: Hostname is required")
	}
	if len(in.Hostname) > 63 || strings.ContainsAny(in.Hostname, " \t\n/.") {
		return fmt.Errorf("config.json: Hostname %q: want a single DNS label", in.Hostname)
	}
	if len(in.Packages) == 0 {
		return fmt.Errorf("config.json: Packages is empty: nothing to run")
	}
	seen := map[string]string{}
	for _, p := range append(in.SystemPackages(), in.Packages...) {
		b := in.Basename(p)
		if other, ok := seen[b]; ok {
			return fmt.Errorf("packages %s and %s both install as %q", other, p, b)
		}
		seen[b] = p
	}
	for p := range in.PackageConfig {
		if !contains(in.Packages, p) && !contains(in.SystemPackages(), p) {
			return fmt.Errorf("PackageConfig names %s, which is not in Packages", p)
		}
	}
	if port := in.HTTPPort(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("Update.HTTPPort %q: want a port number", port)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// SystemPackages are the gokrazy programs installed under /gokrazy.
func (in *Instance) SystemPackages() []string {
	if in.GokrazyPackages == nil {
		return DefaultGokrazyPackages
	}
	return *in.GokrazyPackages
}

// Kernel, Firmware and EEPROM return the data packages; "" means none.
func (in *Instance) Kernel() string   { return orDefault(in.KernelPackage, DefaultKernel) }
func (in *Instance) Firmware() string { return orDefault(in.FirmwarePackage, DefaultFirmware) }
func (in *Instance) EEPROM() string   { return orDefault(in.EEPROMPackage, DefaultEEPROM) }

func orDefault(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}

// HTTPPort is the gokrazy web UI and update port.
func (in *Instance) HTTPPort() string {
	if in.Update == nil || in.Update.HTTPPort == "" {
		return DefaultHTTPPort
	}
	return in.Update.HTTPPort
}

// Basename is the file name a package's binary gets: gok's rule (the last
// path element, skipping a major-version element like v2).
func (in *Instance) Basename(pkg string) string {
	if pc, ok := in.PackageConfig[pkg]; ok && pc.Basename != "" {
		return pc.Basename
	}
	b := path.Base(pkg)
	if len(b) > 1 && b[0] == 'v' && isDigits(b[1:]) {
		b = path.Base(path.Dir(pkg))
	}
	return b
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// Service is one program init supervises.
type Service = initspec.Service

// Services lists the programs init starts, system programs (/gokrazy) first,
// then the packages (/user), each with its compiled-in flags and environment.
func (in *Instance) Services() []Service {
	var out []Service
	add := func(dir string, pkgs []string) {
		sorted := append([]string(nil), pkgs...)
		sort.Strings(sorted)
		for _, p := range sorted {
			pc := in.PackageConfig[p]
			out = append(out, Service{
				Path:         dir + "/" + in.Basename(p),
				Args:         pc.CommandLineFlags,
				Env:          pc.Environment,
				DontStart:    pc.DontStart,
				WaitForClock: pc.WaitForClock,
			})
		}
	}
	add("/gokrazy", in.SystemPackages())
	add("/user", in.Packages)
	return out
}
