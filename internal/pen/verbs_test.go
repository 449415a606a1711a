package pen

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/nib-lb/nib/config"
)

// forms returns every entry of the table: the verbs and their no forms.
func forms() []*verb {
	var all []*verb
	for i := range verbTable {
		v := &verbTable[i]
		all = append(all, v)
		if v.no != nil {
			all = append(all, v.no)
		}
	}
	return all
}

// TestVerbTable checks the table's entries against each other.
func TestVerbTable(t *testing.T) {
	seen := map[string]bool{}
	for _, v := range forms() {
		name := v.name
		if v.run == nil {
			t.Errorf("%s: no handler", name)
		}
		if seen[name] {
			t.Errorf("%s: twice in the table", name)
		}
		seen[name] = true
		if base, ok := strings.CutPrefix(name, "no "); ok {
			if verbs[base] == nil || verbs[base].no != v {
				t.Errorf("%s: not the no form of %s", name, base)
			}
			if v.namesPath || v.startupOnly || v.needTLS {
				t.Errorf("%s: a no form names no path and needs nothing", name)
			}
		} else if name == "" || name == "no" || name == "service" || strings.ContainsAny(name, " \t#") || verbs[name] != v {
			t.Errorf("%q: not a verb name the dispatch can find", name)
		}
		if v.max >= 0 && v.min > v.max {
			t.Errorf("%s: min %d > max %d", name, v.min, v.max)
		}
		if (v.min > 0) != (v.missing != "") {
			t.Errorf("%s: min %d with missing %q", name, v.min, v.missing)
		}
		if v.why != "" && !v.namesPath && !v.startupOnly {
			t.Errorf("%s: a reason for a refusal that never happens", name)
		}
		if (v.namesPath || v.startupOnly) && v.max == 0 {
			t.Errorf("%s: startup only, but takes no argument", name)
		}
	}
}

// samples are, for each verb and no form, max arguments (server and acl,
// which read them all: a full line), valid where the verb applies. Every
// verb needs one; a no form missing here takes none.
var samples = map[string]string{
	"roundrobin": "", "hash": "", "weight": "", "prio": "", "stubborn": "", "mode": "",
	"tracking": "5", "clients_max": "100", "conn_max": "100", "blacklist": "5", "timeout": "5",
	"idle_timeout": "5", "debug": "2",
	"server": "1 address 127.0.0.5 port 99 weight 3", "servers": "",
	"acl": "1 permit 10.0.0.0 255.0.0.0", "no acl": "1",
	"client_acl": "1", "control_acl": "1", "tarpit_acl": "1", "no tarpit_acl": "",
	"http": "", "tcp_nodelay": "", "keepalive": "", "source": "127.0.0.2",
	"log": "{dir}/log", "web_stats": "{dir}/status.html", "status": "", "recent": "10", "pid": "",
	"control": "", "listen": "127.0.0.1:9999", "dsr_if": "eth1", "write": "{dir}/out.cfg",
	"include": "{dir}/inc.cfg", "exit": "",
	"epoll": "", "kqueue": "", "poll": "", "select": "", "multi_accept": "4", "pending_max": "4",
	"idlers": "2", "ascii": "", "abort_on_error": "", "dsr_ip": "10.0.0.1", "tcp_fastclose": "off",
	"ssl_client_renegotiation_interval": "60", "ssl_option": "no_tlsv1.2", "ssl_ciphers": "HIGH",
	"ssl_ocsp_response": "{dir}/ocsp.der", "ssl_sni_path": "{dir}",
	"peek": "", "dummy": "", "transparent": "", "connection": "0", "close": "0", "socket": "0",
}

// sample is the command line of v with its sample arguments.
func sample(t *testing.T, v *verb, dir string) string {
	t.Helper()
	a, ok := samples[v.name]
	if !ok && strings.HasPrefix(v.name, "no ") {
		a, ok = "", true
	}
	if !ok {
		t.Fatalf("%s: no sample arguments in samples", v.name)
	}
	if a == "" {
		return v.name
	}
	return v.name + " " + strings.ReplaceAll(a, "{dir}", dir)
}

// verbInterps returns fresh interpreters for a TLS proxy service and a DSR
// service with a tarpit, with a runtime and exit enabled, whose files are
// in dir; between them every verb has a service it applies to.
func verbInterps(t *testing.T, dir string, startup bool) []*Interp {
	t.Helper()
	var ins []*Interp
	for _, args := range [][]string{
		{"-C", "127.0.0.1:18888", "-E", filepath.Join(dir, "cert.pem"), "-w", filepath.Join(dir, "web.html"), "127.0.0.1:18080", ":18100:0:0:0", ":18101:10:20:2:1"},
		dsrArgs,
	} {
		in := newInterp(t, args...)
		in.Startup = startup
		in.ConfigFile = filepath.Join(dir, "pen.cfg")
		in.RT = &fakeRT{servers: []ServerStat{{Conns: 1}}}
		in.Cfg.Control.AllowExit = true
		ins = append(ins, in)
	}
	return ins
}

// result is what one Exec did.
type result struct {
	out     string
	err     string
	changed bool
	cfg     *config.Config
	rt      fakeRT
	files   []string
}

func execResult(t *testing.T, in *Interp, line, dir string) result {
	t.Helper()
	var out bytes.Buffer
	changed, err := in.Exec(line, &out)
	r := result{out: out.String(), changed: changed, cfg: in.Cfg, rt: *in.RT.(*fakeRT)}
	if err != nil {
		r.err = err.Error()
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		r.files = append(r.files, e.Name())
	}
	return r
}

// verbFiles makes a directory with the files the samples name.
func verbFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	resetFiles(t, dir)
	return dir
}

// resetFiles empties dir and writes the files the samples name.
func resetFiles(t *testing.T, dir string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"cert.pem": "", "inc.cfg": "tracking 9\nhash\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVerbArity checks the argument counts of every verb: too few are
// refused with the verb's text (Pen prints nothing and often crashes), and
// arguments beyond max are ignored, as Pen's strtok ignores them ("tracking
// 5 6" sets 5 in Pen 0.34.1), except for server and acl, which read the
// whole line and refuse what they do not expect.
func TestVerbArity(t *testing.T) {
	tooFew := map[string]string{
		"server":            "server: missing slot number",
		"acl":               "acl: usage is acl N permit|deny [address [mask]]",
		"acl 1":             "acl: usage is acl N permit|deny [address [mask]]",
		"no acl":            "no acl: missing list number",
		"dsr_if":            "dsr_if: missing interface name",
		"include":           "include: missing file name",
		"ssl_option":        "ssl_option: missing option",
		"ssl_ocsp_response": "ssl_ocsp_response: missing file name",
		"ssl_sni_path":      "ssl_sni_path: missing directory",
	}
	tooMany := map[string]string{
		"server 1 address 127.0.0.5 port 99 weight 3 extra":         "server: 'extra' needs a value",
		"server 1 address 127.0.0.5 port 99 weight 3 extra 1":       "server: unknown keyword 'extra'",
		"acl 1 permit 10.0.0.0 255.0.0.0 extra":                     `acl "permit 10.0.0.0 255.0.0.0 extra": unexpected "extra" after the mask`,
		"acl 1 permit ::1/64 extra":                                 `acl "permit ::1/64 extra": unexpected "extra" after the IPv6 address`,
		"service pen server 1 address 127.0.0.5 port 99 weight 3 x": "server: 'x' needs a value",
	}
	tested := map[string]bool{}
	for _, startup := range []bool{false, true} {
		dir := verbFiles(t)
		for _, v := range forms() {
			for n := 0; n < v.min; n++ {
				line := strings.Join(append([]string{v.name}, strings.Fields(samples[v.name])[:n]...), " ")
				want, ok := tooFew[line]
				if !ok {
					t.Errorf("%q: no expected error in tooFew", line)
					continue
				}
				for _, in := range verbInterps(t, dir, startup) {
					want := want
					if v.needTLS && in.Cfg.Services[0].TLS == nil {
						// TLS is checked first.
						want = v.name + ": TLS is not enabled; start with -E CERT"
					}
					before := in.Cfg.Clone()
					r := execResult(t, in, line, dir)
					if r.err != want || r.out != "" || r.changed || !reflect.DeepEqual(before, in.Cfg) {
						t.Errorf("startup %v: %q = %q, wrote %q, changed %v; want %q", startup, line, r.err, r.out, r.changed, want)
					}
				}
				tested[line] = true
			}
			line := sample(t, v, dir)
			if v.max < 0 {
				if !tooManyTested(tooMany, v.name) {
					t.Errorf("%s reads all its arguments, but tooMany has no line for it", v.name)
				}
				continue
			}
			if got := len(strings.Fields(line)) - len(strings.Fields(v.name)); got != v.max {
				t.Errorf("%s: the sample has %d arguments, max is %d", v.name, got, v.max)
			}
			// The same line with arguments beyond max does the same, on
			// fresh interpreters and files.
			for _, extra := range []string{" extra", " 1 2 3"} {
				d := t.TempDir()
				for i := range 2 { // verbInterps' services
					resetFiles(t, d)
					want := execResult(t, verbInterps(t, d, startup)[i], sample(t, v, d), d)
					resetFiles(t, d)
					got := execResult(t, verbInterps(t, d, startup)[i], sample(t, v, d)+extra, d)
					if !reflect.DeepEqual(got, want) {
						t.Errorf("startup %v, service %d: %q differs from %q:\n got %+v\nwant %+v",
							startup, i, line+extra, line, got, want)
					}
				}
			}
		}
	}
	for line, want := range tooMany {
		in := verbInterps(t, verbFiles(t), true)[0]
		before := in.Cfg.Clone()
		if _, err := in.Exec(line, io.Discard); err == nil || err.Error() != want || !reflect.DeepEqual(before, in.Cfg) {
			t.Errorf("%q = %v, want %q", line, err, want)
		}
	}
	for line := range tooFew {
		if !tested[line] {
			t.Errorf("%q in tooFew is not a verb with too few arguments", line)
		}
	}
}

// tooManyTested reports whether tooMany has a line for the verb.
func tooManyTested(tooMany map[string]string, name string) bool {
	for line := range tooMany {
		if strings.HasPrefix(line, name+" ") {
			return true
		}
	}
	return false
}

// TestVerbGate checks the one permission gate: over control (Startup
// false) every verb that names a path or is startup only is refused with
// its argument, before anything else is checked (here on a service without
// TLS, and for dsr_if on a proxy service), with Pen-style text, nothing
// read, written or changed; also after a service prefix and with arguments
// beyond max. From the startup configuration the gate lets them through.
func TestVerbGate(t *testing.T) {
	why := map[string]string{
		"include":           "file names are accepted only in the startup configuration (TOML, -F, -o, -O)",
		"log":               "file names are accepted only in the startup configuration (TOML, -F, -o, -O)",
		"web_stats":         "file names are accepted only in the startup configuration (TOML, -F, -o, -O)",
		"write":             "file names are accepted only in the startup configuration (TOML, -F, -o, -O); write alone saves only the -F file",
		"ssl_ocsp_response": "file names are accepted only in the startup configuration (TOML, -F, -o, -O)",
		"ssl_sni_path":      "directories are accepted only in the startup configuration (TOML, -F, -o, -O)",
		"listen":            "the listener is set only in the startup configuration (TOML, -F, -o, -O); edit it and reload",
		"dsr_if":            "DSR is set up only in the startup configuration (-o/-O); it needs a restart",
	}
	for _, v := range forms() {
		dir := verbFiles(t)
		gated := v.namesPath || v.startupOnly
		w, ok := why[v.name]
		if gated != ok {
			t.Errorf("%s: gated %v, but the test expects %v", v.name, gated, ok)
			continue
		}
		delete(why, v.name)
		if !gated {
			continue
		}
		want := v.name + ": refused over the control socket: " + w
		line := sample(t, v, dir)
		for _, l := range []string{line, "service pen " + line, line + " extra", "\t" + line + "\r\n"} {
			// A plain proxy service: no TLS, not DSR.
			ctl := newInterp(t)
			ctl.ConfigFile = filepath.Join(dir, "pen.cfg")
			ctl.RT = &fakeRT{}
			before := ctl.Cfg.Clone()
			r := execResult(t, ctl, l, dir)
			if r.err != want || r.out != "" || r.changed || !reflect.DeepEqual(before, ctl.Cfg) || len(r.files) != 2 {
				t.Errorf("control %q = %q, wrote %q, changed %v, files %v; want %q", l, r.err, r.out, r.changed, r.files, want)
			}
		}
		for _, in := range verbInterps(t, dir, true) {
			if _, err := in.Exec(line, io.Discard); err != nil && strings.Contains(err.Error(), "refused over the control socket") {
				t.Errorf("startup %q: %v", line, err)
			}
		}
	}
	for v := range why {
		t.Errorf("%s: expected to be gated, not in the table", v)
	}
}

// TestVerbChanges checks that verbs not marked changes leave the config
// alone, over control and at startup, on a proxy and a DSR service.
func TestVerbChanges(t *testing.T) {
	old := lookupHost
	lookupHost = func(string) (netip.Addr, error) { return netip.Addr{}, errors.New("no DNS in this test") }
	t.Cleanup(func() { lookupHost = old })
	for _, startup := range []bool{false, true} {
		dir := verbFiles(t)
		for _, v := range forms() {
			if v.changes {
				continue
			}
			line := sample(t, v, dir)
			for _, l := range []string{v.name, line} {
				for _, in := range verbInterps(t, dir, startup) {
					before := in.Cfg.Clone()
					if changed, _ := in.Exec(l, io.Discard); changed || !reflect.DeepEqual(before, in.Cfg) {
						t.Errorf("startup %v: %q (not marked changes) changed the config", startup, l)
					}
				}
			}
		}
	}
}

// TestVerbsDocumented checks VERBS.md against the table: every verb and
// no form is listed, every verb its tables list is in the table, and its
// "Startup only" table lists exactly the verbs the gate refuses.
func TestVerbsDocumented(t *testing.T) {
	b, err := os.ReadFile("VERBS.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, v := range forms() {
		if !strings.Contains(doc, "`"+v.name+"`") && !strings.Contains(doc, "`"+v.name+" ") {
			t.Errorf("VERBS.md does not list %s", v.name)
		}
	}
	code := regexp.MustCompile("`([^`]*)`")
	gated := map[string]bool{}
	section := ""
	for _, l := range strings.Split(doc, "\n") {
		if h, ok := strings.CutPrefix(l, "## "); ok {
			section = h
		}
		if !strings.HasPrefix(l, "| `") {
			continue
		}
		cell, _, _ := strings.Cut(strings.ReplaceAll(l[2:], `\|`, ""), "|")
		for _, m := range code.FindAllStringSubmatch(cell, -1) {
			w := strings.Fields(m[1])
			if len(w) > 0 && w[0] == "no" {
				w = w[1:]
			}
			if len(w) == 0 {
				continue
			}
			if verbs[w[0]] == nil {
				t.Errorf("VERBS.md lists %q, which is not in the table", m[1])
			}
			if section == "Startup only" {
				gated[w[0]] = true
			}
		}
	}
	for _, v := range verbTable {
		if g := v.namesPath || v.startupOnly; g != gated[v.name] {
			t.Errorf("%s: gated %v, but VERBS.md's \"Startup only\" says %v", v.name, g, gated[v.name])
		}
	}
}
