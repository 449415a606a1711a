package dsrsetup

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var (
	vipA = netip.MustParseAddr("198.51.100.100")
	vipB = netip.MustParseAddr("198.51.100.101")
)

// script is Script(o), failing the test on error.
func script(t *testing.T, o ScriptOptions) string {
	t.Helper()
	s, err := Script(o)
	if err != nil {
		t.Fatalf("Script(%+v): %v", o, err)
	}
	return s
}

// allVariants is every OS, forward and undo, with two VIPs.
func allVariants() []ScriptOptions {
	var os []ScriptOptions
	for _, name := range OSes {
		for _, undo := range []bool{false, true} {
			os = append(os, ScriptOptions{VIPs: []netip.Addr{vipA, vipB}, OS: name, Undo: undo})
		}
	}
	os = append(os,
		ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinux, Interfaces: []string{"eth0", "eth1.100"}},
		ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinuxPersistent, Net: NetNetworkd},
		ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinuxPersistent, Net: NetIfupdown, Undo: true})
	return os
}

// TestScriptSyntax: every variant parses as sh (and as dash, Debian's sh,
// and as bash in POSIX mode where they exist), and uses none of the
// bashisms that dash would only reject when the line runs.
func TestScriptSyntax(t *testing.T) {
	var shells [][]string
	for _, sh := range [][]string{{"sh", "-n"}, {"dash", "-n"}, {"bash", "--posix", "-n"}, {"busybox", "sh", "-n"}} {
		if _, err := exec.LookPath(sh[0]); err == nil {
			shells = append(shells, sh)
		}
	}
	if len(shells) == 0 {
		t.Skip("no sh")
	}
	bashisms := []string{"[[ ", "<<<", "local ", "function ", "echo -e", "$'", "${!", "source ", "pushd", "$RANDOM", "&>"}
	for _, o := range allVariants() {
		s := script(t, o)
		for _, sh := range shells {
			cmd := exec.Command(sh[0], sh[1:]...)
			cmd.Stdin = strings.NewReader(s)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s: %s: %v\n%s", o.commandLine(), strings.Join(sh, " "), err, out)
			}
		}
		for _, line := range strings.Split(s, "\n") {
			code := strings.TrimSpace(line)
			if strings.HasPrefix(code, "#") {
				continue
			}
			for _, b := range bashisms {
				if strings.Contains(code, b) && !strings.Contains(code, "source(-directory)") && !strings.Contains(code, "source /etc/network") {
					t.Errorf("%s: %q in %q", o.commandLine(), b, code)
				}
			}
		}
		for _, want := range []string{"#!/bin/sh\n", "\nset -eu\n", `[ "$(id -u)" = 0 ] || die`} {
			if !strings.Contains(s, want) {
				t.Errorf("%s: no %q", o.commandLine(), want)
			}
		}
	}
}

// TestScriptContent checks each script against the facts it comes from:
// Pen's blog for Linux (VIP /32 on lo, arp_announce 2 and arp_ignore 1 on
// all), relayd's DSR article for OpenBSD (lo0 alias, /etc/hostname.*),
// FreeBSD's rc.conf aliases, and the files linux-persistent promises.
func TestScriptContent(t *testing.T) {
	one := []netip.Addr{vipA, vipB}
	for _, tc := range []struct {
		o         ScriptOptions
		want, not []string
	}{
		{ScriptOptions{VIPs: one, OS: OSLinux}, []string{
			"VIPS='198.51.100.100 198.51.100.101'\n",
			"IFACES='' ",
			"STATE=$ROOT/var/lib/nib-dsr/state\n",
			`ip addr add "$vip/32" dev lo`,
			"for i in all $LB_IFACES; do\n\t\tset_conf \"$i\" arp_ignore 1\n\t\tset_conf \"$i\" arp_announce 2\n",
			"printf '/proc/sys/net/ipv4/conf/%s/%s'",
			"ip -o link show up",
			`[ "$old" = "$3" ]`, // idempotent: a sysctl with the value is not written
			"if on_lo \"$vip\"; then\n\t\t\tsay \"$vip is on lo already\"",
			"$2 != \"lo\"", // the VIP on another interface is refused
			"rp_filter (reverse path filtering) is left alone",
			"\npreflight\nlinux_up\nrp_note\n",
			"# Written by `setup script -vip 198.51.100.100,198.51.100.101 -os linux`;\n# undo with `setup script -vip 198.51.100.100,198.51.100.101 -os linux -undo`.\n",
			"lost at reboot",
		}, []string{`ip addr del "$vip/32"`, "/etc/", "sysrc", "lo0"}},
		{ScriptOptions{VIPs: one, OS: OSLinux, Interfaces: []string{"eth1", "eth0", "eth1"}}, []string{
			"IFACES='eth1 eth0' ",
			"-os linux -iface eth1,eth0`",
			"#   eth1, eth0 (-iface).",
		}, nil},
		{ScriptOptions{VIPs: one, OS: OSLinux, Undo: true}, []string{
			`ip addr del "$vip/32" dev lo`,
			`if on_lo "$vip" 32; then`,
			`kept) say "$vip was on lo before setup: left there"`,
			`echo "$old" >"$f"`,
			`rm -f "$STATE"`,
			"\nlinux_down\n",
		}, []string{"ip addr add", "set_conf"}},
		{ScriptOptions{VIPs: one, OS: OSLinuxPersistent}, []string{
			"NET='auto' ",
			"SYSCTL_CONF=$ROOT/etc/sysctl.d/90-nib-dsr.conf\n",
			"NETWORKD_LO=$ROOT/etc/systemd/network/10-nib-dsr-lo.network\n",
			"IFUPDOWN_DIR=$ROOT/etc/network/interfaces.d\n",
			"net/ipv4/conf/$i/arp_ignore = 1\nnet/ipv4/conf/$i/arp_announce = 2",
			"[Match]\nName=lo\n",
			"[Address]\nAddress=$vip/32\"",
			"iface lo inet static\n\taddress $vip/32\"",
			"systemctl is-active --quiet systemd-networkd",
			`"$ROOT/etc/network/interfaces"`,
			"source /etc/network/interfaces.d/*",
			`ip addr add "$vip/32" dev lo`,
			"\npreflight\nKIND=$(net_kind)\npersist_up\nlinux_up\nrp_note\n",
		}, nil},
		{ScriptOptions{VIPs: one, OS: OSLinuxPersistent, Net: NetIfupdown}, []string{"NET='ifupdown' ", "-net ifupdown`"}, nil},
		{ScriptOptions{VIPs: one, OS: OSLinuxPersistent, Undo: true}, []string{
			`remove_file "$SYSCTL_CONF"`,
			`remove_file "$IFUPDOWN_DIR/nib-dsr-$(dashed "$vip")"`,
			`"$ROOT"/etc/systemd/network/*.network.d/nib-dsr-"$(dashed "$vip")".conf`,
			"\npersist_down\nlinux_down\n",
		}, []string{"ip addr add", "persist_up"}},
		{ScriptOptions{VIPs: one, OS: OSFreeBSD}, []string{
			`ifconfig lo0 alias "$1/32"`,
			`sysrc "ifconfig_lo0_alias$n=inet $vip/32"`,
			"FreeBSD does not answer ARP for addresses on lo0",
			"no sysctl is needed",
		}, []string{"arp_ignore", "arp_announce", "/proc/sys", "ROOT", " lo "}},
		{ScriptOptions{VIPs: one, OS: OSFreeBSD, Undo: true}, []string{
			`ifconfig lo0 inet "$1" -alias`,
			`sysrc -x "ifconfig_lo0_alias$i"`,
		}, []string{"arp_ignore", `ifconfig lo0 alias "$1/32"`}},
		{ScriptOptions{VIPs: one, OS: OSOpenBSD}, []string{
			"HOSTNAME_LO0=$ROOT/etc/hostname.lo0\n",
			`ifconfig lo0 alias "$1/32"`,
			`line="inet alias $vip 255.255.255.255"`,
			`"!ifconfig lo0 alias $vip/32"`, // the seed's form, in /etc/hostname.vr0
			"umask 027",
			"OpenBSD does not answer ARP for addresses on lo0",
			"no sysctl is needed",
		}, []string{"arp_ignore", "arp_announce", "/proc/sys", "sysrc"}},
		{ScriptOptions{VIPs: one, OS: OSOpenBSD, Undo: true}, []string{
			`ifconfig lo0 inet "$1" -alias`,
			`grep -vxF "$line" "$HOSTNAME_LO0"`,
		}, []string{`ifconfig lo0 alias "$1/32"`}},
	} {
		s := script(t, tc.o)
		for _, w := range tc.want {
			if !strings.Contains(s, w) {
				t.Errorf("%s: no %q", tc.o.commandLine(), w)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(s, n) {
				t.Errorf("%s: has %q", tc.o.commandLine(), n)
			}
		}
	}
}

// TestScriptRefuses: IPv6 and other impossible VIPs, and options that do
// not fit the OS, are errors of Script.
func TestScriptRefuses(t *testing.T) {
	for _, tc := range []struct {
		o    ScriptOptions
		want string
	}{
		{ScriptOptions{VIPs: []netip.Addr{vipA, netip.MustParseAddr("2001:db8::1")}, OS: OSLinux}, "VIP 2001:db8::1 is IPv6: lbd's Direct Server Return is IPv4 only for now"},
		{ScriptOptions{VIPs: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, OS: OSOpenBSD}, "IPv6 DSR does not exist yet"},
		{ScriptOptions{VIPs: []netip.Addr{netip.MustParseAddr("::ffff:198.51.100.100")}, OS: OSLinux}, "write it as 198.51.100.100"},
		{ScriptOptions{VIPs: []netip.Addr{netip.MustParseAddr("127.0.0.2")}, OS: OSLinux}, "not a unicast address"},
		{ScriptOptions{VIPs: []netip.Addr{netip.MustParseAddr("0.0.0.0")}, OS: OSLinux}, "not a unicast address"},
		{ScriptOptions{VIPs: []netip.Addr{netip.MustParseAddr("224.0.0.1")}, OS: OSLinux}, "not a unicast address"},
		{ScriptOptions{VIPs: []netip.Addr{{}}, OS: OSLinux}, "invalid VIP"},
		{ScriptOptions{OS: OSLinux}, "no VIP"},
		{ScriptOptions{VIPs: []netip.Addr{vipA}, OS: "windows"}, `unknown OS "windows"`},
		{ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSFreeBSD, Interfaces: []string{"em0"}}, "interfaces are for Linux only"},
		{ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinux, Interfaces: []string{"eth0; reboot"}}, `bad interface name "eth0; reboot"`},
		{ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinux, Interfaces: []string{"averyveryverylongname"}}, "bad interface name"},
		{ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinux, Interfaces: []string{"lo"}}, `interface "lo"`},
		{ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinux, Net: NetNetworkd}, "for linux-persistent only"},
		{ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSLinuxPersistent, Net: "netplan"}, `unknown network configuration "netplan"`},
	} {
		s, err := Script(tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Script(%+v) = %v, want an error with %q", tc.o, err, tc.want)
		}
		if s != "" {
			t.Errorf("Script(%+v) wrote a script with its error", tc.o)
		}
	}
}

// TestScriptMain: the command line, its errors and exit statuses.
func TestScriptMain(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		code       int
		out, errIn string
	}{
		{[]string{"-vip", "198.51.100.100", "-os", "linux"}, ExitOK, "VIPS='198.51.100.100'\n", ""},
		// Duplicates collapse; spaces after commas are fine.
		{[]string{"-vip", "198.51.100.100, 198.51.100.101,198.51.100.100", "-os", "freebsd"}, ExitOK, "VIPS='198.51.100.100 198.51.100.101'\n", ""},
		{[]string{"-vip", "198.51.100.100", "-os", "linux", "-undo"}, ExitOK, "linux_down", ""},
		{[]string{"-vip", "198.51.100.100", "-os", "linux", "-iface", "eth0,eth1"}, ExitOK, "IFACES='eth0 eth1' ", ""},
		{[]string{"-vip", "198.51.100.100", "-os", "linux-persistent", "-net", "networkd"}, ExitOK, "NET='networkd' ", ""},
		{[]string{"-h"}, ExitOK, "usage: setup script -vip ADDR[,ADDR...] -os linux|linux-persistent|freebsd|openbsd", ""},
		{[]string{"-vip", "2001:db8::1", "-os", "linux"}, ExitUsage, "", "setup script: VIP 2001:db8::1 is IPv6: lbd's Direct Server Return is IPv4 only for now"},
		{[]string{"-vip", "198.51.100.100,2001:db8::1", "-os", "openbsd"}, ExitUsage, "", "is IPv6"},
		{[]string{"-vip", "198.51.100.300", "-os", "linux"}, ExitUsage, "", `-vip "198.51.100.300" is not an IP address`},
		{[]string{"-vip", "198.51.100.100/32", "-os", "linux"}, ExitUsage, "", "without a prefix length"},
		{[]string{"-vip", "198.51.100.100,", "-os", "linux"}, ExitUsage, "", `-vip "" is not an IP address`},
		{[]string{"-os", "linux"}, ExitUsage, "", "-vip is required"},
		{[]string{"-vip", "198.51.100.100"}, ExitUsage, "", "-os is required (linux, linux-persistent, freebsd, openbsd)"},
		{[]string{"-vip", "198.51.100.100", "-os", "solaris"}, ExitUsage, "", `unknown OS "solaris"`},
		{[]string{"-vip", "198.51.100.100", "-os", "linux", "extra"}, ExitUsage, "", `unexpected argument "extra"`},
		{[]string{"-vip", "198.51.100.100", "-os", "linux", "-bogus"}, ExitUsage, "", "flag provided but not defined: -bogus"},
		{[]string{"-vip", "198.51.100.100", "-os", "openbsd", "-iface", "em0"}, ExitUsage, "", "interfaces are for Linux only"},
	} {
		var out, errOut bytes.Buffer
		code := Main(append([]string{"script"}, tc.args...), &out, &errOut)
		if code != tc.code {
			t.Errorf("setup script %q: exit %d, want %d\nstderr: %s", tc.args, code, tc.code, errOut.String())
		}
		if !strings.Contains(out.String(), tc.out) {
			t.Errorf("setup script %q: stdout lacks %q:\n%s", tc.args, tc.out, out.String())
		}
		if tc.errIn != "" && !strings.Contains(errOut.String(), tc.errIn) {
			t.Errorf("setup script %q: stderr lacks %q:\n%s", tc.args, tc.errIn, errOut.String())
		}
		if tc.code != ExitOK && out.Len() > 0 {
			t.Errorf("setup script %q: failed but printed a script", tc.args)
		}
	}
}

// fakeBSD is a directory of stand-ins for the BSD tools the scripts run
// (ifconfig, sysrc, id), keeping lo0's aliases and rc.conf in files and
// logging the changes they are asked for.
type fakeBSD struct {
	dir, root string
}

const fakeIfconfig = `#!/bin/sh
db=$FAKE/lo0
[ "$1" = lo0 ] || { echo "fake ifconfig: $*" >&2; exit 1; }
shift
case "$*" in
"") echo "lo0: flags=8049<UP,LOOPBACK,RUNNING,MULTICAST> mtu 16384"
	printf '\tinet 127.0.0.1 netmask 0xff000000\n'
	while read -r a; do printf '\tinet %s netmask 0xffffffff\n' "$a"; done <"$db" ;;
"alias "*/32) echo "ifconfig lo0 $*" >>"$FAKE/log"
	a=${2%/32}; if grep -qx "$a" "$db"; then echo "ifconfig: $a: File exists" >&2; exit 1; fi
	echo "$a" >>"$db" ;;
"inet "*" -alias") echo "ifconfig lo0 $*" >>"$FAKE/log"
	grep -qx "$2" "$db" || { echo "ifconfig: $2: not found" >&2; exit 1; }
	grep -vx "$2" "$db" >"$db.new" || true; mv "$db.new" "$db" ;;
*) echo "fake ifconfig: unexpected lo0 $*" >&2; exit 1 ;;
esac
`

const fakeSysrc = `#!/bin/sh
rc=$FAKE/rc.conf
case $1 in
-n) awk -v k="$2" 'index($0, k "=") == 1 { v = substr($0, length(k) + 2); gsub(/"/, "", v); print v; f = 1 } END { exit !f }' "$rc" ||
	{ echo "sysrc: unknown variable '$2'" >&2; exit 1; } ;;
-x) echo "sysrc $*" >>"$FAKE/log"
	grep -v "^$2=" "$rc" >"$rc.new" || true; mv "$rc.new" "$rc" ;;
*=*) echo "sysrc $*" >>"$FAKE/log"
	k=${1%%=*}; grep -v "^$k=" "$rc" >"$rc.new" || true; echo "$k=\"${1#*=}\"" >>"$rc.new"; mv "$rc.new" "$rc"
	echo "$k: -> ${1#*=}" ;;
*) echo "fake sysrc: unexpected $*" >&2; exit 1 ;;
esac
`

func newFakeBSD(t *testing.T, uid int) *fakeBSD {
	t.Helper()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	f := &fakeBSD{dir: t.TempDir(), root: t.TempDir()}
	for name, text := range map[string]string{
		"bin/ifconfig": fakeIfconfig,
		"bin/sysrc":    fakeSysrc,
		"bin/id":       "#!/bin/sh\necho " + strconv.Itoa(uid) + "\n",
		"lo0":          "",
		"rc.conf":      "",
		"log":          "",
	} {
		p := filepath.Join(f.dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(f.root, "etc"), 0o755)
	return f
}

// run runs the script for o with the fakes first in PATH, and returns its
// output; it fails the test if the exit status is not code.
func (f *fakeBSD) run(t *testing.T, o ScriptOptions, code int) string {
	t.Helper()
	cmd := exec.Command("sh", "-s")
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(f.dir, "bin")+":"+os.Getenv("PATH"), "FAKE="+f.dir, "NIB_DSR_ROOT="+f.root)
	return runScript(t, cmd, o, code)
}

// runScript runs cmd (a shell reading its script from stdin) on the script
// for o and returns its output; it fails the test unless the exit status
// is code.
func runScript(t *testing.T, cmd *exec.Cmd, o ScriptOptions, code int) string {
	t.Helper()
	cmd.Stdin = strings.NewReader(script(t, o))
	out, err := cmd.CombinedOutput()
	got := 0
	if ee, ok := err.(*exec.ExitError); ok {
		got = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if got != code {
		t.Fatalf("%s: exit %d, want %d\n%s", o.commandLine(), got, code, out)
	}
	return string(out)
}

func (f *fakeBSD) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, name))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

func (f *fakeBSD) write(t *testing.T, name, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFreeBSDScriptRuns runs the FreeBSD scripts against stand-ins for
// ifconfig and sysrc: the exact commands, idempotence, and an undo that
// renumbers the aliases it leaves (rc.conf stops at the first gap).
func TestFreeBSDScriptRuns(t *testing.T) {
	f := newFakeBSD(t, 0)
	f.write(t, "rc.conf", "hostname=\"be1\"\nifconfig_lo0_alias0=\"inet 192.0.2.9/32\"\n")
	f.write(t, "lo0", "192.0.2.9\n")
	up := ScriptOptions{VIPs: []netip.Addr{vipA, vipB}, OS: OSFreeBSD}
	out := f.run(t, up, 0)
	wantLog := "ifconfig lo0 alias 198.51.100.100/32\n" +
		"sysrc ifconfig_lo0_alias1=inet 198.51.100.100/32\n" +
		"ifconfig lo0 alias 198.51.100.101/32\n" +
		"sysrc ifconfig_lo0_alias2=inet 198.51.100.101/32\n"
	if got := f.read(t, "log"); got != wantLog {
		t.Fatalf("commands:\n%s\nwant:\n%s\noutput:\n%s", got, wantLog, out)
	}
	wantRC := "hostname=\"be1\"\nifconfig_lo0_alias0=\"inet 192.0.2.9/32\"\nifconfig_lo0_alias1=\"inet 198.51.100.100/32\"\nifconfig_lo0_alias2=\"inet 198.51.100.101/32\"\n"
	if got := f.read(t, "rc.conf"); got != wantRC {
		t.Fatalf("rc.conf:\n%s\nwant:\n%s", got, wantRC)
	}
	if !strings.Contains(out, "no sysctl needed: FreeBSD does not answer ARP for addresses on lo0") {
		t.Errorf("output does not say why no sysctl:\n%s", out)
	}

	// Again: nothing to do.
	f.write(t, "log", "")
	out = f.run(t, up, 0)
	if got := f.read(t, "log"); got != "" || f.read(t, "rc.conf") != wantRC {
		t.Fatalf("second run changed something:\n%s\nrc.conf:\n%s", got, f.read(t, "rc.conf"))
	}
	if !strings.Contains(out, "198.51.100.100 is on lo0 already") || !strings.Contains(out, "/etc/rc.conf has 198.51.100.101 on lo0 already") {
		t.Errorf("second run's output:\n%s", out)
	}

	// Undo the first VIP: the others are renumbered without a gap.
	f.write(t, "log", "")
	f.run(t, ScriptOptions{VIPs: []netip.Addr{vipA}, OS: OSFreeBSD, Undo: true}, 0)
	if got := f.read(t, "lo0"); got != "192.0.2.9\n198.51.100.101\n" {
		t.Fatalf("lo0 after undo: %q", got)
	}
	wantRC = "hostname=\"be1\"\nifconfig_lo0_alias0=\"inet 192.0.2.9/32\"\nifconfig_lo0_alias1=\"inet 198.51.100.101/32\"\n"
	if got := f.read(t, "rc.conf"); got != wantRC {
		t.Fatalf("rc.conf after undo:\n%s\nwant:\n%s", got, wantRC)
	}
	if !strings.Contains(f.read(t, "log"), "ifconfig lo0 inet 198.51.100.100 -alias\n") {
		t.Fatalf("undo commands:\n%s", f.read(t, "log"))
	}
	// Undo everything, twice.
	down := ScriptOptions{VIPs: []netip.Addr{vipA, vipB}, OS: OSFreeBSD, Undo: true}
	f.run(t, down, 0)
	f.write(t, "log", "")
	f.run(t, down, 0)
	if got := f.read(t, "log"); got != "" {
		t.Fatalf("second undo changed something:\n%s", got)
	}
	if got := f.read(t, "rc.conf"); got != "hostname=\"be1\"\nifconfig_lo0_alias0=\"inet 192.0.2.9/32\"\n" {
		t.Fatalf("rc.conf after full undo:\n%s", got)
	}
	if got := f.read(t, "lo0"); got != "192.0.2.9\n" {
		t.Fatalf("lo0 after full undo: %q", got)
	}
}

// TestOpenBSDScriptRuns runs the OpenBSD scripts against a stand-in for
// ifconfig, with /etc under a temporary directory.
func TestOpenBSDScriptRuns(t *testing.T) {
	f := newFakeBSD(t, 0)
	lo0 := filepath.Join(f.root, "etc", "hostname.lo0")
	// vipB is already persistent the way relayd's DSR article does it.
	os.WriteFile(filepath.Join(f.root, "etc", "hostname.vr0"), []byte("inet 10.0.0.10 255.255.255.0 10.0.0.255\n!ifconfig lo0 alias 198.51.100.101/32\n"), 0o640)
	up := ScriptOptions{VIPs: []netip.Addr{vipA, vipB}, OS: OSOpenBSD}
	out := f.run(t, up, 0)
	if got := f.read(t, "log"); got != "ifconfig lo0 alias 198.51.100.100/32\nifconfig lo0 alias 198.51.100.101/32\n" {
		t.Fatalf("commands:\n%s\noutput:\n%s", got, out)
	}
	b, err := os.ReadFile(lo0)
	if err != nil || string(b) != "inet alias 198.51.100.100 255.255.255.255\n" {
		t.Fatalf("hostname.lo0: %q, %v\n%s", b, err, out)
	}
	if fi, _ := os.Stat(lo0); fi.Mode().Perm() != 0o640 {
		t.Errorf("hostname.lo0 mode %v, want 0640", fi.Mode().Perm())
	}
	for _, want := range []string{"hostname.vr0 has 198.51.100.101 on lo0 already", "no sysctl needed: OpenBSD does not answer ARP for addresses on lo0"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	f.write(t, "log", "")
	f.run(t, up, 0)
	if b2, _ := os.ReadFile(lo0); f.read(t, "log") != "" || string(b2) != string(b) {
		t.Fatalf("second run changed something: %s / %q", f.read(t, "log"), b2)
	}

	out = f.run(t, ScriptOptions{VIPs: []netip.Addr{vipA, vipB}, OS: OSOpenBSD, Undo: true}, 0)
	if got := f.read(t, "lo0"); got != "" {
		t.Fatalf("lo0 after undo: %q", got)
	}
	if _, err := os.Stat(lo0); !os.IsNotExist(err) {
		t.Fatalf("the emptied hostname.lo0 is still there: %v", err)
	}
	if !strings.Contains(out, "hostname.vr0 still adds 198.51.100.101 to lo0 at boot") {
		t.Errorf("undo does not warn about hostname.vr0:\n%s", out)
	}
}

// TestBSDScriptNeedsRoot: the scripts stop before changing anything when
// not run as root.
func TestBSDScriptNeedsRoot(t *testing.T) {
	f := newFakeBSD(t, 7)
	for _, name := range []string{OSFreeBSD, OSOpenBSD} {
		out := f.run(t, ScriptOptions{VIPs: []netip.Addr{vipA}, OS: name}, 1)
		if !strings.Contains(out, "nib-dsr: error: run this as root") || f.read(t, "log") != "" {
			t.Errorf("%s as uid 7: %s\nlog: %s", name, out, f.read(t, "log"))
		}
	}
}
