package appliance

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nib-lb/nib/internal/lbd"
)

// The appliance's own config.json is a valid gok instance config and the
// builder derives from it exactly what init runs.
func TestNibInstanceConfig(t *testing.T) {
	in, err := LoadInstance(filepath.Join("..", "..", "gokrazy", "nib", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if in.Hostname != "nib" || in.HTTPPort() == "80" {
		t.Errorf("hostname %q, web UI port %q: the UI must move off port 80", in.Hostname, in.HTTPPort())
	}
	if in.Kernel() != "github.com/gokrazy/kernel.rpi" || in.Firmware() == "" || in.EEPROM() == "" {
		t.Errorf("kernel %q firmware %q eeprom %q", in.Kernel(), in.Firmware(), in.EEPROM())
	}
	svcs := in.Services()
	var paths []string
	for _, s := range svcs {
		paths = append(paths, s.Path)
	}
	want := []string{"/gokrazy/dhcp", "/gokrazy/ntp", "/gokrazy/randomd", "/user/lbd"}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("services %v, want %v", paths, want)
	}
	args := svcs[3].Args
	if !contains(args, "-config=/perm/lbd/config.toml") {
		t.Errorf("lbd flags %v lack -config=/perm/lbd/config.toml", args)
	}
	// lbd's own flag set accepts them: -version stops lbd right after
	// parsing, and an unknown or malformed flag is a usage error (2).
	var stdout, stderr bytes.Buffer
	if code := lbd.Main(append(append([]string{}, args...), "-version"), &stdout, &stderr); code != 0 {
		msg, _, _ := strings.Cut(stderr.String(), "\n")
		t.Errorf("lbd %v -version: exit %d, %s", args, code, msg)
	}
}

func TestParseInstance(t *testing.T) {
	ok := `{"Hostname":"lb","Packages":["github.com/nib-lb/nib/lbd"]}`
	in, err := ParseInstance([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	// gok's defaults.
	if in.Kernel() != DefaultKernel || in.Firmware() != DefaultFirmware || in.EEPROM() != DefaultEEPROM || in.HTTPPort() != "80" {
		t.Errorf("defaults: %q %q %q %q", in.Kernel(), in.Firmware(), in.EEPROM(), in.HTTPPort())
	}
	if !reflect.DeepEqual(in.SystemPackages(), DefaultGokrazyPackages) {
		t.Errorf("system packages %v", in.SystemPackages())
	}
	// An explicit "" disables a package, as in gok.
	in, err = ParseInstance([]byte(`{"Hostname":"lb","Packages":["x/lbd"],"FirmwarePackage":"","EEPROMPackage":""}`))
	if err != nil || in.Firmware() != "" || in.EEPROM() != "" {
		t.Errorf("empty firmware: %v %q %q", err, in.Firmware(), in.EEPROM())
	}
	for _, c := range []struct{ json, want string }{
		{`{"Packages":["a/b"]}`, "Hostname is required"},
		{`{"Hostname":"a b","Packages":["a/b"]}`, "single DNS label"},
		{`{"Hostname":"lb"}`, "Packages is empty"},
		{`{"Hostname":"lb","Packages":["a/lbd","b/lbd"]}`, "both install as"},
		{`{"Hostname":"lb","Packages":["a/lbd","b/lbd/v2"],"PackageConfig":{"b/lbd/v2":{}}}`, "both install as"},
		{`{"Hostname":"lb","Packages":["a/b"],"PackageConfig":{"c/d":{}}}`, "not in Packages"},
		{`{"Hostname":"lb","Packages":["a/b"],"Update":{"HTTPPort":"http"}}`, "want a port number"},
		{`{"Hostname":"lb","Packages":["a/b"],"MountDevices":[]}`, "unknown field"},
	} {
		if _, err := ParseInstance([]byte(c.json)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseInstance(%s) = %v, want %q", c.json, err, c.want)
		}
	}
}

func TestBasename(t *testing.T) {
	in := &Instance{PackageConfig: map[string]PackageConfig{"x/y": {Basename: "z"}}}
	for pkg, want := range map[string]string{
		"github.com/nib-lb/nib/lbd":           "lbd",
		"github.com/gokrazy/gokrazy/cmd/dhcp": "dhcp",
		"example.com/tool/v2":                 "tool",
		"x/y":                                 "z",
	} {
		if got := in.Basename(pkg); got != want {
			t.Errorf("Basename(%q) = %q, want %q", pkg, got, want)
		}
	}
}

func TestHTTPPassword(t *testing.T) {
	dir := t.TempDir()
	in := &Instance{}
	pw, err := HTTPPassword(in, dir)
	if err != nil || len(pw) < 20 {
		t.Fatalf("first password %q, %v", pw, err)
	}
	st, err := os.Stat(filepath.Join(dir, "http-password.txt"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v, want mode 0600", st.Mode(), err)
	}
	again, err := HTTPPassword(in, dir)
	if err != nil || again != pw {
		t.Errorf("second call %q, %v; want the same password", again, err)
	}
	in.Update = &UpdateConfig{HTTPPassword: "fromconfig"}
	if p, _ := HTTPPassword(in, dir); p != "fromconfig" {
		t.Errorf("config.json's password not used: %q", p)
	}
}
