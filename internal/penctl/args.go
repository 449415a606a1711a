package penctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/nib-lb/nib/internal/control"
)

// DefaultPort is the control API's port when -s, NIB_HOST or the config
// file's address has none.
const DefaultPort = "9443"

// Exit statuses of Main.
const (
	ExitOK      = 0 // the command succeeded
	ExitFailed  = 1 // the server ran the request and refused or failed it
	ExitUsage   = 2 // bad flags, arguments or config file; nothing was sent
	ExitConnect = 3 // connection, authentication, rate limit or certificate problem
)

// options is the parsed command line, before the environment and the
// config file are merged in.
type options struct {
	plainAddr string // Pen's plain protocol: penctl HOST:PORT|/path VERB...

	server      string
	tokenFile   string
	fingerprint string
	configFile  string
	json        bool
	trust       bool
	help        bool

	verb string
	args []string
	// backend is the backend verb's request, read from args and checked
	// by parseArgs.
	backend control.BackendRequest
}

// usageError is a command-line problem: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return &usageError{fmt.Sprintf(format, a...)}
}

// isPlainAddr reports whether the first argument is Pen's positional control
// address (HOST:PORT, or a Unix socket path), as Pen's penctl takes it. No
// verb contains ':' or '/', so the old form is never ambiguous.
func isPlainAddr(s string) bool {
	return s != "" && !strings.HasPrefix(s, "-") && strings.ContainsAny(s, ":/")
}

func newFlagSet(o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("penctl", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.server, "s", "", "lbd's control API `HOST[:PORT]` (default port "+DefaultPort+"; or NIB_HOST, or the config file's address)")
	fs.StringVar(&o.tokenFile, "token-file", "", "read the bearer token from `FILE` (or NIB_TOKEN holds the token, or the config file's token_file)")
	fs.StringVar(&o.fingerprint, "fingerprint", "", "pin the server certificate's `SHA256` fingerprint (hex, colons allowed; or the config file's fingerprint)")
	fs.StringVar(&o.configFile, "config", "", "per-appliance config `FILE` (JSON: address, token_file, fingerprint; or NIB_PENCTL_CONFIG)")
	fs.BoolVar(&o.json, "json", false, "print the server's JSON instead of text")
	fs.BoolVar(&o.trust, "trust", false, "accept the server's certificate, print its fingerprint and, with -config, save it (trust on first use)")
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: penctl [-s HOST[:PORT]] [-token-file FILE] [-fingerprint SHA256] [-config FILE] [-trust] [-json] VERB [ARGS...]\n")
		fmt.Fprintf(out, "       penctl HOST:PORT|/path/to/socket COMMAND [ARGS...]   (Pen's plain control protocol)\n\n")
		fs.PrintDefaults()
		fmt.Fprintf(out, "\nverbs (penctl help):\n")
		writeVerbs(out)
		fmt.Fprintf(out, "\nexit status: 0 ok, 1 the command failed, 2 usage (flags, arguments, config or token file),\n"+
			"3 connection, token (401), ACL (403), rate limit (429) or certificate problem\n")
	}
	return fs
}

// parseArgs reads the command line. It never touches the environment, the
// file system or the network.
func parseArgs(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	if len(args) > 0 && isPlainAddr(args[0]) {
		if len(args) < 2 {
			return nil, usagef("usage: penctl host:port|/path/to/socket command [args...]")
		}
		o.plainAddr = args[0]
		o.args = args[1:]
		return o, nil
	}
	fs := newFlagSet(o, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			o.help = true
			return o, nil
		}
		return nil, &usageError{} // the flag package has printed the message
	}
	rest := fs.Args()
	if len(rest) == 0 {
		if o.trust {
			return o, nil // -trust alone: fetch, print and save the fingerprint
		}
		return nil, usagef("penctl: missing verb; penctl help lists them")
	}
	o.verb, o.args = rest[0], rest[1:]
	if strings.TrimSpace(o.verb) == "" {
		return nil, usagef("penctl: empty verb; penctl help lists them")
	}
	if v, ok := localVerbs[o.verb]; ok && !v.takesArgs {
		// Allow "penctl status -json" as well as "penctl -json status".
		for _, a := range o.args {
			switch a {
			case "-json", "--json":
				o.json = true
			default:
				return nil, usagef("penctl: %s takes no arguments (got %q)", o.verb, a)
			}
		}
		o.args = nil
	}
	for _, a := range rest {
		if strings.ContainsAny(a, "\n\r\x00") {
			return nil, usagef("penctl: a command is one line: %q has a line break or NUL", a)
		}
	}
	if o.verb == "check" && len(o.args) != 1 {
		return nil, usagef("penctl: check takes one DSR service name: penctl check SERVICE")
	}
	if o.verb == "backend" {
		var err error
		if o.backend, err = backendRequest(o.args); err != nil {
			return nil, err
		}
	}
	if o.verb == "pen" && len(o.args) == 0 {
		return nil, usagef("penctl: pen needs a Pen command, e.g. penctl pen status")
	}
	return o, nil
}

// hostPort adds DefaultPort to a HOST without one; IPv6 literals may be
// given with or without brackets.
func hostPort(s string) (string, error) {
	if s == "" {
		return "", usagef("penctl: empty server address")
	}
	if h, p, err := net.SplitHostPort(s); err == nil {
		if h == "" || p == "" {
			return "", usagef("penctl: invalid server address %q (HOST[:PORT])", s)
		}
		return net.JoinHostPort(h, p), nil
	}
	bad := usagef("penctl: invalid server address %q (HOST[:PORT])", s)
	h := s
	if strings.HasPrefix(s, "[") || strings.HasSuffix(s, "]") {
		// [IPv6] without a port.
		if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
			return "", bad
		}
		h = s[1 : len(s)-1]
		if !strings.Contains(h, ":") {
			return "", bad
		}
	}
	if h == "" || strings.ContainsAny(h, "[]/ ") || strings.Contains(h, ":") && net.ParseIP(h) == nil {
		return "", bad
	}
	return net.JoinHostPort(h, DefaultPort), nil
}

// normFingerprint accepts a SHA-256 fingerprint in hex, upper or lower case,
// with or without colons, and returns it as 64 lower-case hex digits.
func normFingerprint(s string) (string, error) {
	f := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if len(f) != 64 {
		return "", usagef("penctl: fingerprint %q is not a SHA-256 (64 hex digits)", s)
	}
	for _, c := range f {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", usagef("penctl: fingerprint %q is not hex", s)
		}
	}
	return f, nil
}
