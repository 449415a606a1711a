package penctl

import (
	"io"
	"strings"
	"testing"

	"github.com/nib-lb/nib/internal/control"
)

// FuzzParseArgs: the command-line reader never panics, and what it accepts
// is consistent. Arguments are separated by NUL bytes in the input.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"", "status", "-s\x00lb\x00status", "-json\x00status", "status\x00-json",
		"lb:10080\x00servers", "/run/pen.ctl\x00server\x001\x00weight\x003",
		"-trust", "-fingerprint\x00AB:CD\x00pen\x00status", "-s\x00[::1]\x00help",
		"-s", "--", "-h", "pen", "-s=\x00x", "-json=maybe\x00status",
		"backend\x00add\x00web\x0010.0.0.5:80\x003", "backend\x00blacklist\x00web\x0010.0.0.5\x0060",
		"backend\x00weight\x00web\x00::1\x00-1", "-json\x00backend\x00drain\x00web\x0010.0.0.5",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var args []string
		if s != "" {
			args = strings.Split(s, "\x00")
		}
		o, err := parseArgs(args, io.Discard)
		if err != nil {
			if o != nil {
				t.Fatalf("options and error: %+v %v", o, err)
			}
			return
		}
		switch {
		case o.plainAddr != "":
			if len(o.args) == 0 || !isPlainAddr(o.plainAddr) {
				t.Fatalf("plain form without a command: %+v", o)
			}
		case o.help, o.verb == "" && o.trust:
		case o.verb == "":
			t.Fatalf("no verb: %+v", o)
		}
		if o.verb == "backend" {
			// Accepted backend commands are what the API accepts.
			if err := control.CheckBackendRequest(o.backend); err != nil {
				t.Fatalf("%q makes a request the API refuses: %v", args, err)
			}
		}
		if o.server != "" {
			if hp, err := hostPort(o.server); err == nil {
				if _, err := hostPort(hp); err != nil {
					t.Fatalf("hostPort(%q) = %q, which it refuses: %v", o.server, hp, err)
				}
			}
		}
		if fp, err := normFingerprint(o.fingerprint); err == nil && len(fp) != 64 {
			t.Fatalf("normFingerprint(%q) = %q", o.fingerprint, fp)
		}
	})
}
