package dsrsetup

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// The systems `setup script -os` writes for.
const (
	OSLinux           = "linux"            // run-time changes: ip and /proc/sys
	OSLinuxPersistent = "linux-persistent" // the same, plus files that survive reboots
	OSFreeBSD         = "freebsd"          // ifconfig and /etc/rc.conf (sysrc)
	OSOpenBSD         = "openbsd"          // ifconfig and /etc/hostname.lo0
)

// OSes lists the values of -os.
var OSes = []string{OSLinux, OSLinuxPersistent, OSFreeBSD, OSOpenBSD}

// How linux-persistent keeps the VIPs on lo across reboots.
const (
	NetAuto     = ""         // decided by the script at run time
	NetNetworkd = "networkd" // a drop-in of the .network file that matches lo
	NetIfupdown = "ifupdown" // a stanza in /etc/network/interfaces.d/
)

// Files the scripts write (below $NIB_DSR_ROOT, which is empty on a real
// backend and a temporary directory in tests).
const (
	// StatePath records what the Linux scripts changed, for -undo: the
	// previous value of every sysctl they wrote and, per VIP, whether they
	// added it to lo or found it there. It is in /var/lib rather than /run
	// so that linux and linux-persistent share one record.
	StatePath = "/var/lib/nib-dsr/state"
	// SysctlConfPath holds linux-persistent's ARP settings.
	SysctlConfPath = "/etc/sysctl.d/90-nib-dsr.conf"
	// NetworkdLoFile is the .network file for lo that linux-persistent
	// creates when no other .network file matches lo; the VIPs go into
	// drop-ins named nib-dsr-<VIP with dashes>.conf in its .d directory
	// (or in that of the file that matches lo).
	NetworkdLoFile = "/etc/systemd/network/10-nib-dsr-lo.network"
	// IfupdownDir holds linux-persistent's stanzas, one file per VIP named
	// nib-dsr-<VIP with dashes> (dashes: source-directory runs run-parts,
	// which skips names with dots).
	IfupdownDir = "/etc/network/interfaces.d"
	// OpenBSDHostnameLo0 is where the OpenBSD script persists the aliases.
	OpenBSDHostnameLo0 = "/etc/hostname.lo0"
)

// ScriptOptions say which script Script writes.
type ScriptOptions struct {
	// VIPs go on the loopback, as /32. IPv4 only (lbd's DSR is IPv4 only).
	VIPs []netip.Addr
	// OS is one of OSes.
	OS string
	// Undo writes the script that reverts the one written without it.
	Undo bool
	// Interfaces (Linux) get arp_ignore and arp_announce besides `all`. Empty
	// means every non-loopback interface that is up when the script runs.
	Interfaces []string
	// Net (linux-persistent) is NetNetworkd, NetIfupdown or NetAuto.
	Net string
}

// ifaceName is what -iface accepts: a Linux interface name (at most 15
// bytes) made of characters that need no quoting in sh.
var ifaceName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$`)

// errIPv6 is the refusal of an IPv6 VIP.
func errIPv6(a netip.Addr) error {
	return fmt.Errorf("VIP %s is IPv6: lbd's Direct Server Return is IPv4 only for now, so there is nothing to prepare a backend for (IPv6 DSR does not exist yet)", a)
}

// checkVIP refuses what cannot be a DSR VIP.
func checkVIP(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("invalid VIP")
	case a.Is4In6():
		return fmt.Errorf("VIP %s is an IPv4-mapped IPv6 address: write it as %s", a, a.Unmap())
	case a.Is6():
		return errIPv6(a)
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("VIP %s is not a unicast address a service can be reached at", a)
	}
	return nil
}

// normalize checks o and returns it with duplicate VIPs and interfaces
// dropped (first occurrence kept).
func (o ScriptOptions) normalize() (ScriptOptions, error) {
	if !slices.Contains(OSes, o.OS) {
		return o, fmt.Errorf("unknown OS %q (want one of %s)", o.OS, strings.Join(OSes, ", "))
	}
	if len(o.VIPs) == 0 {
		return o, errors.New("no VIP")
	}
	var vips []netip.Addr
	for _, a := range o.VIPs {
		if err := checkVIP(a); err != nil {
			return o, err
		}
		if !slices.Contains(vips, a) {
			vips = append(vips, a)
		}
	}
	o.VIPs = vips
	linux := o.OS == OSLinux || o.OS == OSLinuxPersistent
	if len(o.Interfaces) > 0 && !linux {
		return o, fmt.Errorf("interfaces are for Linux only: %s does not answer ARP for loopback aliases, so it needs no ARP settings", o.OS)
	}
	var ifs []string
	for _, i := range o.Interfaces {
		switch {
		case !ifaceName.MatchString(i):
			return o, fmt.Errorf("bad interface name %q", i)
		case i == "lo" || i == "all" || i == "default":
			return o, fmt.Errorf("interface %q: name the interfaces that face the load balancer (all is always set)", i)
		}
		if !slices.Contains(ifs, i) {
			ifs = append(ifs, i)
		}
	}
	o.Interfaces = ifs
	switch o.Net {
	case NetAuto, NetNetworkd, NetIfupdown:
	default:
		return o, fmt.Errorf("unknown network configuration %q (want %s or %s)", o.Net, NetNetworkd, NetIfupdown)
	}
	if o.Net != NetAuto && o.OS != OSLinuxPersistent {
		return o, fmt.Errorf("the network configuration (%s) is for %s only", o.Net, OSLinuxPersistent)
	}
	return o, nil
}

// vipList is o's VIPs joined by sep.
func (o ScriptOptions) vipList(sep string) string {
	vips := make([]string, len(o.VIPs))
	for i, a := range o.VIPs {
		vips[i] = a.String()
	}
	return strings.Join(vips, sep)
}

// commandLine is the setup command that writes the script for o.
func (o ScriptOptions) commandLine() string {
	s := "setup script -vip " + o.vipList(",") + " -os " + o.OS
	if len(o.Interfaces) > 0 {
		s += " -iface " + strings.Join(o.Interfaces, ",")
	}
	if o.Net != NetAuto {
		s += " -net " + o.Net
	}
	if o.Undo {
		s += " -undo"
	}
	return s
}

// Script returns the POSIX sh script that prepares a backend for DSR as o
// says (or, with o.Undo, reverts that). It refuses IPv6 VIPs and bad
// options. Every value it puts into the script has been checked to need no
// quoting.
func Script(o ScriptOptions) (string, error) {
	o, err := o.normalize()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	b.WriteString(header(o))
	b.WriteString("set -eu\n\n")
	fmt.Fprintf(&b, "VIPS='%s'\n", o.vipList(" "))
	if o.OS != OSFreeBSD { // FreeBSD's files are sysrc's business
		b.WriteString("ROOT=${NIB_DSR_ROOT:-} # prefix of every file path; empty on a backend (tests set it)\n")
	}
	switch o.OS {
	case OSLinux, OSLinuxPersistent:
		fmt.Fprintf(&b, "IFACES='%s' # -iface; empty: every non-loopback interface that is up\n", strings.Join(o.Interfaces, " "))
		fmt.Fprintf(&b, "STATE=$ROOT%s\n", StatePath)
		if o.OS == OSLinuxPersistent {
			net := o.Net
			if net == NetAuto {
				net = "auto"
			}
			fmt.Fprintf(&b, "NET='%s' # -net: networkd, ifupdown or auto (networkd if it runs, else ifupdown if /etc/network/interfaces exists)\n", net)
			fmt.Fprintf(&b, "SYSCTL_CONF=$ROOT%s\n", SysctlConfPath)
			fmt.Fprintf(&b, "NETWORKD_LO=$ROOT%s\n", NetworkdLoFile)
			fmt.Fprintf(&b, "IFUPDOWN_DIR=$ROOT%s\n", IfupdownDir)
		}
		b.WriteString(shCommon)
		b.WriteString(linuxCommon)
		if o.OS == OSLinuxPersistent {
			b.WriteString(persistCommon)
		}
		switch {
		case o.OS == OSLinux && !o.Undo:
			b.WriteString(linuxUp + "\npreflight\nlinux_up\nrp_note\nsay \"done: ready for DSR to $VIPS (until the next reboot: see -os linux-persistent)\"\n")
		case o.OS == OSLinux:
			b.WriteString(linuxDown + "\nlinux_down\nsay \"done\"\n")
		case !o.Undo:
			b.WriteString(linuxUp + persistUp + "\npreflight\nKIND=$(net_kind)\npersist_up\nlinux_up\nrp_note\nsay \"done: ready for DSR to $VIPS, also after a reboot\"\n")
		default:
			b.WriteString(linuxDown + persistDown + "\npersist_down\nlinux_down\nsay \"done\"\n")
		}
	case OSFreeBSD:
		b.WriteString(shCommon + bsdCommon + freebsdCommon)
		if o.Undo {
			b.WriteString(bsdDown + freebsdDown)
		} else {
			b.WriteString(bsdUp + freebsdUp)
		}
	case OSOpenBSD:
		fmt.Fprintf(&b, "HOSTNAME_LO0=$ROOT%s\n", OpenBSDHostnameLo0)
		b.WriteString(shCommon + bsdCommon)
		if o.Undo {
			b.WriteString(bsdDown + openbsdDown)
		} else {
			b.WriteString(bsdUp + openbsdUp)
		}
	}
	return b.String(), nil
}

// header is the script's opening comment: what it is for, what it does,
// what it leaves alone and how to undo it.
func header(o ScriptOptions) string {
	var b strings.Builder
	p := func(lines ...string) {
		for _, l := range lines {
			if l == "" {
				b.WriteString("#\n")
			} else {
				b.WriteString("# " + l + "\n")
			}
		}
	}
	undo := strings.TrimSuffix(o.commandLine(), " -undo") + " -undo"
	if o.Undo {
		p("nib: undo the Direct Server Return (DSR) preparation of this backend.",
			"Written by `"+o.commandLine()+"`.", "")
	} else {
		p("nib: prepare this backend for Direct Server Return (DSR).",
			"Written by `"+o.commandLine()+"`;",
			"undo with `"+undo+"`.",
			"",
			"With DSR the load balancer passes each request to a backend unchanged,",
			"still addressed to the VIP, and the backend answers the client itself.",
			"So every backend must hold the VIP on its loopback interface (or it drops",
			"the requests: connections hang) and must never answer ARP for it (or it",
			"takes the VIP's traffic away from the load balancer: an \"ARP leak\").",
			"")
	}
	switch o.OS {
	case OSLinux, OSLinuxPersistent:
		ifs := "every non-loopback interface that is up when it runs"
		if len(o.Interfaces) > 0 {
			ifs = strings.Join(o.Interfaces, ", ") + " (-iface)"
		}
		if o.Undo {
			p("It reads "+StatePath+", which the forward script wrote, and:",
				"- removes each VIP from lo if the forward script added it (a VIP that",
				"  was on lo before is left there);",
				"- when no other VIP set up by the forward script remains, writes back the",
				"  arp_ignore and arp_announce values the forward script found, and",
				"  removes the state file.")
			if o.OS == OSLinuxPersistent {
				p("- removes the files the forward script wrote: the VIPs' systemd-networkd",
					"  drop-ins (nib-dsr-*.conf next to the .network file of lo, and",
					"  "+NetworkdLoFile+" when it was the forward script's",
					"  and no VIP is left in it) or ifupdown stanzas ("+IfupdownDir+"/nib-dsr-*),",
					"  and "+SysctlConfPath+" with the last VIP.")
			}
			p("Running it again changes nothing.")
			break
		}
		p("It does, in this order (so that the VIP is never on lo while ARP is open):",
			"- net.ipv4.conf.all.arp_ignore=1 (answer ARP only for addresses of the",
			"  interface the request came in on: never for the VIPs on lo) and",
			"  net.ipv4.conf.all.arp_announce=2 (use the outgoing interface's own",
			"  address, never a VIP, as the source of this host's ARP requests);",
			"- the same two for the interfaces that face the load balancer:",
			"  "+ifs+".",
			"  The kernel uses the larger of `all` and the interface's value, so `all`",
			"  alone covers every interface, also ones that appear later; the",
			"  per-interface values keep the setting if `all` is reset. A sysctl that",
			"  already has the value is not written;",
			"- each VIP as /32 on lo, unless it is on lo already.",
			"It refuses to change anything if a VIP is on an interface other than lo",
			"(there it would answer ARP for the VIP), and it records what it changed",
			"(previous sysctl values, VIPs it added) in "+StatePath+" for -undo.",
			"Running it again changes nothing.",
			"",
			"rp_filter (reverse path filtering) is left alone and only reported: with",
			"DSR, requests come in on the interface that faces the load balancer from",
			"client addresses, and replies leave by the route to the client. Strict",
			"mode (1) is fine when that route uses the same interface (one interface,",
			"or the default route on it); on a backend whose route to the clients",
			"leaves by another interface, strict mode drops the requests and loose",
			"mode (2) is needed. That is a security trade-off for you to make, not",
			"for this script. The kernel uses the larger of `all` and the interface's",
			"value.")
		if o.OS == OSLinux {
			p("", "The changes are lost at reboot: use -os linux-persistent to keep them.")
		} else {
			p("",
				"To survive reboots it also writes:",
				"- "+SysctlConfPath+": the same ARP settings (read at boot by",
				"  systemd-sysctl or procps);",
				"- the VIPs on lo, for whichever configures this system's network",
				"  (-net, or at run time: systemd-networkd if it is running, else ifupdown",
				"  if /etc/network/interfaces exists, else it stops and says so):",
				"  systemd-networkd: a drop-in [Address] file nib-dsr-<VIP>.conf in the",
				"    .d directory of the .network file that matches lo (Name=lo), or of",
				"    "+NetworkdLoFile+",",
				"    which it creates when none does;",
				"    networkd reads it at the next boot or `networkctl reload`;",
				"  ifupdown: a stanza `iface lo inet static` with `address VIP/32` in",
				"    "+IfupdownDir+"/nib-dsr-<VIP> (read where",
				"    /etc/network/interfaces has `source "+IfupdownDir+"/*`, as",
				"    Debian's has by default).",
				"(<VIP> with dashes for dots.) It applies everything at once with ip and",
				"/proc/sys: no service is restarted.")
		}
		p("", "Set NIB_DSR_ROOT to put every file it reads or writes under a directory",
			"(for tests); /proc/sys and the addresses are always this host's.")
	case OSFreeBSD, OSOpenBSD:
		p("FreeBSD and OpenBSD answer ARP on an interface only for that interface's",
			"own addresses, never for aliases on lo0, so no sysctl is needed: the VIPs",
			"only go on lo0.", "")
		switch {
		case o.OS == OSFreeBSD && !o.Undo:
			p("For each VIP it runs `ifconfig lo0 alias VIP/32` (unless lo0 has it) and",
				"keeps it for the next boot in /etc/rc.conf, as",
				"ifconfig_lo0_aliasN=\"inet VIP/32\" (set with sysrc; N is the next free",
				"number, as rc.conf stops at the first gap), unless rc.conf has it.")
		case o.OS == OSFreeBSD:
			p("For each VIP it runs `ifconfig lo0 inet VIP -alias` and removes its",
				"ifconfig_lo0_aliasN from /etc/rc.conf, renumbering the aliases that stay",
				"(rc.conf stops at the first gap). It removes the VIPs whoever added them.")
		case !o.Undo:
			p("For each VIP it runs `ifconfig lo0 alias VIP/32` (unless lo0 has it) and",
				"keeps it for the next boot with a line `inet alias VIP 255.255.255.255` in",
				OpenBSDHostnameLo0+" (created mode 0640, as netstart wants), unless a",
				"line `!ifconfig lo0 alias VIP/32` in an /etc/hostname.IF (the form of",
				"relayd's DSR example) or "+OpenBSDHostnameLo0+" has it already.")
		default:
			p("For each VIP it runs `ifconfig lo0 inet VIP -alias` and removes its line",
				"`inet alias VIP 255.255.255.255` from "+OpenBSDHostnameLo0+" (and the",
				"file, if that leaves it empty); it warns about a `!ifconfig lo0 alias`",
				"line in another /etc/hostname.IF. It removes the VIPs whoever added them.")
		}
		p("Running it again changes nothing.")
	}
	b.WriteString("\n")
	return b.String()
}

// shCommon: messages and the root check, for every script.
const shCommon = `
say() { printf 'nib-dsr: %s\n' "$*"; }
die() { printf 'nib-dsr: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run this as root: it changes addresses and system settings"
`

// linuxCommon: the Linux scripts' view of addresses, sysctls and the state
// file. The state file has one line per change: "sysctl IF/KEY OLDVALUE" or
// "addr VIP added|kept".
const linuxCommon = `command -v ip >/dev/null 2>&1 || die "ip (iproute2) is needed"

# conf IF KEY: the /proc/sys file of net.ipv4.conf.IF.KEY.
conf() { printf '/proc/sys/net/ipv4/conf/%s/%s' "$1" "$2"; }

# on_lo VIP [PREFIXLEN]: whether lo has VIP (with that prefix length).
on_lo() {
	ip -4 -o addr show dev lo | awk -v a="$1" -v l="${2:-}" '
		{ split($4, p, "/"); if (p[1] == a && (l == "" || p[2] == l)) f = 1 }
		END { exit !f }'
}

# elsewhere VIP: the interface other than lo that has VIP, if any.
elsewhere() {
	ip -4 -o addr show | awk -v a="$1" '
		$2 != "lo" { split($4, p, "/"); if (p[1] == a) { print $2; exit } }'
}

# state_get KIND NAME: the value recorded for NAME, if any.
state_get() {
	[ -f "$STATE" ] || return 0
	awk -v k="$1" -v n="$2" '$1 == k && $2 == n { print $3; exit }' "$STATE"
}

# state_set KIND NAME VALUE: record VALUE for NAME, replacing the old one.
state_set() {
	mkdir -p "${STATE%/*}"
	{
		if [ -f "$STATE" ]; then
			awk -v k="$1" -v n="$2" '!($1 == k && $2 == n)' "$STATE"
		else
			echo "# nib-dsr: what setup script changed, for its -undo. Do not edit."
		fi
		printf '%s %s %s\n' "$1" "$2" "$3"
	} >"$STATE.new"
	mv "$STATE.new" "$STATE"
}

# state_del KIND NAME: forget NAME.
state_del() {
	[ -f "$STATE" ] || return 0
	awk -v k="$1" -v n="$2" '!($1 == k && $2 == n)' "$STATE" >"$STATE.new"
	mv "$STATE.new" "$STATE"
}

# others_left: the VIPs recorded in the state file that are not in $VIPS.
others_left() {
	[ -f "$STATE" ] || return 0
	awk -v vips="$VIPS" '
		BEGIN { n = split(vips, v, " "); for (i = 1; i <= n; i++) mine[v[i]] = 1 }
		$1 == "addr" && !($2 in mine) { printf "%s%s", s, $2; s = " " }' "$STATE"
}

# lb_ifaces: the interfaces that face the load balancer: -iface, or every
# non-loopback interface that is up and has IPv4 settings.
lb_ifaces() {
	if [ -n "$IFACES" ]; then
		echo "$IFACES"
		return
	fi
	found=
	for i in $(ip -o link show up | awk -F': ' '{ sub(/@.*/, "", $2); if ($2 != "lo") print $2 }'); do
		[ ! -d "/proc/sys/net/ipv4/conf/$i" ] || found="$found${found:+ }$i"
	done
	echo "$found"
}

# preflight: refuse before changing anything if a VIP is on another
# interface than lo, or an interface of -iface does not exist.
preflight() {
	for vip in $VIPS; do
		dev=$(elsewhere "$vip")
		[ -z "$dev" ] || die "$vip is on $dev: a DSR backend must hold the VIP on lo only (on $dev it answers ARP for the VIP and takes its traffic from the load balancer); remove it there first: ip addr del $vip/PREFIXLEN dev $dev"
	done
	LB_IFACES=$(lb_ifaces)
	for i in $LB_IFACES; do
		[ -d "/proc/sys/net/ipv4/conf/$i" ] || die "no interface $i (no /proc/sys/net/ipv4/conf/$i)"
	done
}

# rp_note: report rp_filter, which the script does not change (see the top).
rp_note() {
	all=$(cat "$(conf all rp_filter)")
	for i in $LB_IFACES; do
		v=$(cat "$(conf "$i" rp_filter)")
		[ "$v" -ge "$all" ] || v=$all
		case $v in
		0) say "rp_filter on $i: off (0), not changed" ;;
		1) say "rp_filter on $i: strict (1), not changed: fine while the route to the clients leaves by $i; set 2 (loose) if it does not" ;;
		*) say "rp_filter on $i: loose ($v), not changed" ;;
		esac
	done
}
`

// linuxUp: the forward Linux changes.
const linuxUp = `
# set_conf IF KEY VALUE: set net.ipv4.conf.IF.KEY, recording the value it
# had the first time the script changed it.
set_conf() {
	f=$(conf "$1" "$2")
	old=$(cat "$f")
	if [ "$old" = "$3" ]; then
		say "net.ipv4.conf.$1.$2 is $3 already"
		return
	fi
	[ -n "$(state_get sysctl "$1/$2")" ] || state_set sysctl "$1/$2" "$old"
	echo "$3" >"$f"
	say "net.ipv4.conf.$1.$2: $old -> $3"
}

linux_up() {
	say "ARP settings for all and the interfaces that face the load balancer: ${LB_IFACES:-none up}"
	for i in all $LB_IFACES; do
		set_conf "$i" arp_ignore 1
		set_conf "$i" arp_announce 2
	done
	for vip in $VIPS; do
		if on_lo "$vip"; then
			say "$vip is on lo already"
			[ -n "$(state_get addr "$vip")" ] || state_set addr "$vip" kept
		else
			[ "$(state_get addr "$vip")" = added ] || state_set addr "$vip" added
			ip addr add "$vip/32" dev lo
			say "added $vip/32 to lo"
		fi
	done
}
`

// linuxDown: the Linux undo of the run-time changes.
const linuxDown = `
linux_down() {
	for vip in $VIPS; do
		case $(state_get addr "$vip") in
		added)
			if on_lo "$vip" 32; then
				ip addr del "$vip/32" dev lo
				say "removed $vip/32 from lo"
			else
				say "$vip is not on lo"
			fi
			;;
		kept) say "$vip was on lo before setup: left there" ;;
		*) say "$vip: not set up by setup script (nothing in $STATE): left alone" ;;
		esac
		state_del addr "$vip"
	done
	others=$(others_left)
	if [ -n "$others" ]; then
		say "ARP settings kept: still needed for $others"
		return
	fi
	if [ -f "$STATE" ]; then
		awk '$1 == "sysctl" { print $2, $3 }' "$STATE" | while read -r key old; do
			f=/proc/sys/net/ipv4/conf/$key
			if [ ! -f "$f" ]; then
				say "net.ipv4.conf.${key%/*} is gone: nothing to restore"
			elif [ "$(cat "$f")" = "$old" ]; then
				say "net.ipv4.conf.${key%/*}.${key##*/} is $old already"
			else
				echo "$old" >"$f"
				say "net.ipv4.conf.${key%/*}.${key##*/} restored to $old"
			fi
		done
		rm -f "$STATE"
		rmdir "${STATE%/*}" 2>/dev/null || true
	fi
}
`

// persistCommon: where linux-persistent keeps the VIPs.
const persistCommon = `
# dashed VIP: the VIP with dashes for dots, for file names.
dashed() { echo "$1" | tr . -; }

# net_kind: networkd or ifupdown, from -net or what this system runs.
net_kind() {
	case $NET in
	networkd | ifupdown) echo "$NET" ;;
	*)
		if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet systemd-networkd 2>/dev/null; then
			echo networkd
		elif [ -f "$ROOT/etc/network/interfaces" ]; then
			echo ifupdown
		else
			die "cannot tell what configures the network here (systemd-networkd is not running and there is no /etc/network/interfaces): write the script with -net networkd or -net ifupdown, or add the VIPs to lo in your network configuration and use -os linux"
		fi
		;;
	esac
}

# networkd_lo: the .network file whose drop-ins get the VIPs: the first (by
# name, as networkd picks) that matches Name=lo other than ours, else ours.
networkd_lo() {
	found=$(
		for d in /etc/systemd/network /run/systemd/network /usr/local/lib/systemd/network /usr/lib/systemd/network /lib/systemd/network; do
			for f in "$ROOT$d"/*.network; do
				[ -f "$f" ] && [ "$f" != "$NETWORKD_LO" ] || continue
				if grep -Eq '^[[:space:]]*Name=(.*[[:space:]])?lo([[:space:]]|$)' "$f"; then
					echo "${f##*/} $f"
				fi
			done
		done | sort | awk 'NR == 1 { print $2 }'
	)
	echo "${found:-$NETWORKD_LO}"
}

# write_file FILE CONTENT: write FILE unless it holds CONTENT already.
write_file() {
	if [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; then
		say "$1 is up to date"
		return
	fi
	mkdir -p "${1%/*}"
	printf '%s\n' "$2" >"$1.new"
	mv "$1.new" "$1"
	say "wrote $1"
}
`

// persistUp: linux-persistent's files.
const persistUp = `
persist_up() {
	conf_text="# nib DSR: never answer ARP for the VIPs on lo, nor announce them.
# Written by setup script -os linux-persistent; its -undo removes this file."
	for i in all $LB_IFACES; do
		conf_text="$conf_text
net/ipv4/conf/$i/arp_ignore = 1
net/ipv4/conf/$i/arp_announce = 2"
	done
	write_file "$SYSCTL_CONF" "$conf_text"

	say "VIPs on lo at boot: $KIND"
	for vip in $VIPS; do
		case $KIND in
		networkd)
			lo_file=$(networkd_lo)
			if [ "$lo_file" = "$NETWORKD_LO" ]; then
				write_file "$NETWORKD_LO" "# nib DSR: lo for systemd-networkd, as no other .network file matches lo.
# Written by setup script -os linux-persistent; its -undo removes it with the last VIP.
# The VIPs are in the drop-ins of ${NETWORKD_LO##*/}.d/.
[Match]
Name=lo

[Network]
KeepConfiguration=yes"
			fi
			write_file "$ROOT/etc/systemd/network/${lo_file##*/}.d/nib-dsr-$(dashed "$vip").conf" "# nib DSR: VIP $vip on lo.
# Written by setup script -os linux-persistent; its -undo removes this file.
[Address]
Address=$vip/32"
			;;
		ifupdown)
			if ! grep -Eqs '^[[:space:]]*source(-directory)?[[:space:]]+(/etc/network/)?interfaces\.d' "$ROOT/etc/network/interfaces"; then
				say "warning: /etc/network/interfaces does not read $IFUPDOWN_DIR: add the line: source /etc/network/interfaces.d/*"
			fi
			write_file "$IFUPDOWN_DIR/nib-dsr-$(dashed "$vip")" "# nib DSR: VIP $vip on lo.
# Written by setup script -os linux-persistent; its -undo removes this file.
iface lo inet static
	address $vip/32"
			;;
		esac
	done
}
`

// persistDown: linux-persistent's undo of its files.
const persistDown = `
# remove_file FILE: remove FILE if it exists.
remove_file() {
	if [ -f "$1" ]; then
		rm -f "$1"
		say "removed $1"
	fi
}

persist_down() {
	for vip in $VIPS; do
		for f in "$ROOT"/etc/systemd/network/*.network.d/nib-dsr-"$(dashed "$vip")".conf; do
			remove_file "$f"
			rmdir "${f%/*}" 2>/dev/null || true
		done
		remove_file "$IFUPDOWN_DIR/nib-dsr-$(dashed "$vip")"
	done
	if [ ! -d "$NETWORKD_LO.d" ]; then
		remove_file "$NETWORKD_LO"
	fi
	if [ -z "$(others_left)" ]; then
		remove_file "$SYSCTL_CONF"
	fi
}
`

// bsdCommon: lo0's addresses, for both BSDs.
const bsdCommon = `command -v ifconfig >/dev/null 2>&1 || die "ifconfig is needed"

# on_lo0 VIP: whether lo0 has VIP.
on_lo0() { ifconfig lo0 | awk -v a="$1" '$1 == "inet" && $2 == a { f = 1 } END { exit !f }'; }
`

// bsdUp: lo0_add, for both BSDs' forward scripts.
const bsdUp = `
# lo0_add VIP: add VIP/32 to lo0 unless it has it.
lo0_add() {
	if on_lo0 "$1"; then
		say "$1 is on lo0 already"
	else
		ifconfig lo0 alias "$1/32"
		say "added $1/32 to lo0"
	fi
}
`

// bsdDown: lo0_del, for both BSDs' undo scripts.
const bsdDown = `
# lo0_del VIP: remove VIP from lo0 if it has it.
lo0_del() {
	if on_lo0 "$1"; then
		ifconfig lo0 inet "$1" -alias
		say "removed $1 from lo0"
	else
		say "$1 is not on lo0"
	fi
}
`

// freebsdCommon: rc.conf's aliases of lo0.
const freebsdCommon = `
command -v sysrc >/dev/null 2>&1 || die "sysrc is needed"

# rc_aliases: the values of ifconfig_lo0_alias0, 1, ... up to the first gap.
rc_aliases() {
	n=0
	while v=$(sysrc -n "ifconfig_lo0_alias$n" 2>/dev/null); do
		printf '%s\n' "$v"
		n=$((n + 1))
	done
}
`

// freebsdUp: the FreeBSD aliases, now and in rc.conf.
const freebsdUp = `
for vip in $VIPS; do
	lo0_add "$vip"
	if rc_aliases | awk -v a="$vip" '{ split($2, p, "/"); if ($1 == "inet" && p[1] == a) f = 1 } END { exit !f }'; then
		say "/etc/rc.conf has $vip on lo0 already"
	else
		n=$(rc_aliases | awk 'END { print NR }')
		sysrc "ifconfig_lo0_alias$n=inet $vip/32" >/dev/null
		say "/etc/rc.conf: ifconfig_lo0_alias$n=\"inet $vip/32\""
	fi
done
say "no sysctl needed: FreeBSD does not answer ARP for addresses on lo0"
say "done: ready for DSR to $VIPS, also after a reboot"
`

// freebsdDown: the FreeBSD undo.
const freebsdDown = `
for vip in $VIPS; do
	lo0_del "$vip"
done
old=$(rc_aliases)
keep=$(printf '%s\n' "$old" | awk -v vips="$VIPS" '
	BEGIN { n = split(vips, v, " "); for (i = 1; i <= n; i++) drop[v[i]] = 1 }
	NF { split($2, p, "/"); if (!($1 == "inet" && (p[1] in drop))) print }')
if [ "$old" = "$keep" ]; then
	say "/etc/rc.conf has none of $VIPS on lo0"
else
	# rc.conf stops at the first missing number: renumber what stays.
	n=$(printf '%s\n' "$old" | awk 'END { print NR }')
	i=0
	while [ "$i" -lt "$n" ]; do
		sysrc -x "ifconfig_lo0_alias$i"
		i=$((i + 1))
	done
	printf '%s\n' "$keep" | awk 'NF' | {
		i=0
		while IFS= read -r v; do
			sysrc "ifconfig_lo0_alias$i=$v" >/dev/null
			i=$((i + 1))
		done
	}
	say "/etc/rc.conf: removed $VIPS from the ifconfig_lo0_aliasN"
fi
say "done"
`

// openbsdUp: the OpenBSD aliases, now and in /etc/hostname.lo0.
const openbsdUp = `
for vip in $VIPS; do
	lo0_add "$vip"
	line="inet alias $vip 255.255.255.255"
	if grep -qxF "$line" "$HOSTNAME_LO0" 2>/dev/null; then
		say "$HOSTNAME_LO0 has $vip already"
	elif other=$(grep -lF "!ifconfig lo0 alias $vip/32" "$ROOT"/etc/hostname.* 2>/dev/null); then
		say "$other has $vip on lo0 already (!ifconfig lo0 alias $vip/32)"
	else
		# netstart wants hostname.if files readable by root only.
		(umask 027 && echo "$line" >>"$HOSTNAME_LO0")
		say "$HOSTNAME_LO0: $line"
	fi
done
say "no sysctl needed: OpenBSD does not answer ARP for addresses on lo0"
say "done: ready for DSR to $VIPS, also after a reboot"
`

// openbsdDown: the OpenBSD undo.
const openbsdDown = `
for vip in $VIPS; do
	lo0_del "$vip"
	line="inet alias $vip 255.255.255.255"
	if grep -qxF "$line" "$HOSTNAME_LO0" 2>/dev/null; then
		# Rewritten in place, to keep the file's owner and mode.
		grep -vxF "$line" "$HOSTNAME_LO0" >"$HOSTNAME_LO0.new" || true
		cat "$HOSTNAME_LO0.new" >"$HOSTNAME_LO0"
		rm -f "$HOSTNAME_LO0.new"
		say "$HOSTNAME_LO0: removed $line"
	fi
	if other=$(grep -lF "!ifconfig lo0 alias $vip/32" "$ROOT"/etc/hostname.* 2>/dev/null); then
		say "warning: $other still adds $vip to lo0 at boot (not written by setup script): remove that line too"
	fi
done
if [ -f "$HOSTNAME_LO0" ] && [ ! -s "$HOSTNAME_LO0" ]; then
	rm -f "$HOSTNAME_LO0"
	say "removed the empty $HOSTNAME_LO0"
fi
say "done"
`

// scriptSynopsis is setup script's command line, for the usage messages.
const scriptSynopsis = "setup script -vip ADDR[,ADDR...] -os linux|linux-persistent|freebsd|openbsd [-iface IF[,IF...]] [-net networkd|ifupdown] [-undo]"

// scriptUsage is `setup script -h`.
const scriptUsage = "usage: " + scriptSynopsis + `

Prints the POSIX sh script that prepares a backend for Direct Server Return:
the VIPs on the loopback interface, and (Linux) no ARP answers for them.
Run it on the backend as root; run the -undo script to revert it.

  -os linux             now (ip, /proc/sys); records what it changed in
                        ` + StatePath + ` for -undo
  -os linux-persistent  the same, plus ` + SysctlConfPath + ` and a
                        systemd-networkd drop-in or ifupdown stanza for lo
  -os freebsd           ifconfig lo0 alias, and ifconfig_lo0_aliasN in /etc/rc.conf
  -os openbsd           ifconfig lo0 alias, and ` + OpenBSDHostnameLo0 + `

`

// scriptMain is `setup script`.
func scriptMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("setup script", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), scriptUsage)
		fs.PrintDefaults()
	}
	vipFlag := fs.String("vip", "", "the VIPs, IPv4, comma-separated")
	osFlag := fs.String("os", "", "the backend's system: "+strings.Join(OSes, ", "))
	undo := fs.Bool("undo", false, "print the script that reverts the one printed without -undo")
	ifaceFlag := fs.String("iface", "", "Linux: the interfaces that face the load balancer, comma-separated (default: every non-loopback interface that is up when the script runs)")
	netFlag := fs.String("net", "", "linux-persistent: what keeps the VIPs on lo at boot, networkd or ifupdown (default: decided when the script runs)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return ExitOK
		}
		return ExitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "setup script: "+format+"\n", a...)
		fmt.Fprintln(stderr, "usage: "+scriptSynopsis)
		return ExitUsage
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q", fs.Arg(0))
	}
	if *vipFlag == "" {
		return fail("-vip is required")
	}
	if *osFlag == "" {
		return fail("-os is required (%s)", strings.Join(OSes, ", "))
	}
	o := ScriptOptions{OS: *osFlag, Undo: *undo, Net: *netFlag}
	for _, s := range strings.Split(*vipFlag, ",") {
		s = strings.TrimSpace(s)
		a, err := netip.ParseAddr(s)
		if err != nil {
			if _, perr := netip.ParsePrefix(s); perr == nil {
				return fail("-vip %q: give the address without a prefix length (it goes on lo as /32)", s)
			}
			return fail("-vip %q is not an IP address", s)
		}
		o.VIPs = append(o.VIPs, a)
	}
	if *ifaceFlag != "" {
		for _, s := range strings.Split(*ifaceFlag, ",") {
			o.Interfaces = append(o.Interfaces, strings.TrimSpace(s))
		}
	}
	script, err := Script(o)
	if err != nil {
		return fail("%v", err)
	}
	if _, err := io.WriteString(stdout, script); err != nil {
		fmt.Fprintf(stderr, "setup script: %v\n", err)
		return ExitFailed
	}
	return ExitOK
}
