// Package penctl is the logic of the penctl command: a client of lbd's
// authenticated HTTPS control API, and of Pen's plain-text control protocol
// for `penctl HOST:PORT VERB` and `penctl /path/to/socket VERB`.
//
// Command line:
//
//	penctl [-s HOST[:PORT]] [-token-file FILE] [-fingerprint SHA256]
//	       [-config FILE] [-trust] [-json] VERB [ARGS...]
//	penctl HOST:PORT|/path/to/socket COMMAND [ARGS...]
//
// The second form (first argument contains ':' or '/', no flags) is Pen's
// penctl: the command goes over Pen's plain protocol (internal/pen.Send).
//
// Verbs: status (a table; -json prints the server's JSON), backend OP
// SERVICE ADDR [N] (POST /api/v1/backend: add, remove, drain, undrain,
// weight, blacklist), config (the running TOML; -json as JSON), write,
// reload, url (the status page's address; no connection), help, pen ARGS
// (ARGS as a Pen command even when named like a penctl verb, e.g. Pen's own
// status); any other word starts a Pen command line sent to POST
// /api/v1/pen (penctl -s lb server 1 weight 3); an unknown one is refused
// with the list of Pen's verbs.
//
// Settings, first found wins:
//   - server: -s, NIB_HOST, the config file's address (port 9443 by default);
//   - token: -token-file, NIB_TOKEN (the token itself), the config file's
//     token_file;
//   - fingerprint: -fingerprint, the config file's fingerprint;
//   - config file: -config, NIB_PENCTL_CONFIG (see File for the format).
//
// Without a fingerprint penctl refuses to talk to the server and prints the
// server's fingerprint; -trust accepts it, prints it and, with a config file,
// saves it there (explicit trust on first use). -trust without a verb only
// does that.
//
// Exit statuses: 0 success; 1 the command failed (the server refused or
// failed it, e.g. a rejected reload; or a plain-protocol error); 2 usage
// (flags, arguments, config or token file); 3 connection, authentication
// (401), ACL (403), rate limit (429) or certificate problem.
package penctl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nib-lb/nib/internal/control"
	"github.com/nib-lb/nib/internal/pen"
)

// localVerb is a verb penctl handles itself; any other word is a Pen
// command sent to /api/v1/pen.
type localVerb struct {
	help      string
	takesArgs bool
}

var localVerbs = map[string]localVerb{
	"status": {help: "services and backends with state and counters (-json: the server's JSON)"},
	"config": {help: "print the running configuration as TOML (-json: as JSON)"},
	"write":  {help: "save the running configuration to lbd's -config file (atomically)"},
	"reload": {help: "re-read lbd's -config file; a broken file is rejected with its file:line:col errors and the old config stays"},
	"help":   {help: "list the verbs"},
	"url":    {help: "print the address of lbd's status page for a browser (no connection is made)"},
	"pen":    {help: "send ARGS as a Pen command line, even one named like a penctl verb (penctl pen status)", takesArgs: true},
	"check": {help: "check a DSR service's backends from lbd's interface (ARP leak, VIP bound and listening, reachable); exit 1 when one is not ready",
		takesArgs: true},
	"backend": {help: "change a backend by name: backend add|remove|drain|undrain SERVICE ADDR, backend add SERVICE ADDR [WEIGHT], " +
		"backend weight SERVICE ADDR N, backend blacklist SERVICE ADDR SECONDS (0 clears); ADDR is ip:port, or ip when unique", takesArgs: true},
}

var verbOrder = []string{"status", "backend", "check", "config", "write", "reload", "url", "help", "pen"}

func writeVerbs(w io.Writer) {
	for _, v := range verbOrder {
		fmt.Fprintf(w, "  %-9s %s\n", v, localVerbs[v].help)
	}
	fmt.Fprintf(w, "  %-9s %s\n", "OTHER...", "any other word is a Pen command line, run by lbd with Pen's output (penctl -s lb servers; penctl -s lb server 1 weight 3)")
}

// Main runs penctl with args (without the program name) and returns the
// exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	return run(args, stdout, stderr, os.Getenv)
}

func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	err := runErr(args, stdout, stderr, getenv)
	if err == nil {
		return ExitOK
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(stderr, strings.TrimRight(msg, "\n"))
	}
	var ue *usageError
	var ce *connectError
	switch {
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &ce):
		return ExitConnect
	}
	return ExitFailed
}

func runErr(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	o, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	if o.plainAddr != "" {
		if err := pen.Send(o.plainAddr, o.args, stdout); err != nil {
			return fmt.Errorf("penctl: %w", err)
		}
		return nil
	}
	if o.help {
		return nil // the flag package printed the usage
	}
	if o.verb == "url" {
		return printURL(o, stdout, getenv)
	}
	if o.verb == "help" {
		fmt.Fprintln(stdout, "penctl verbs:")
		writeVerbs(stdout)
		return nil
	}

	cfgPath, file, addr, err := target(o, getenv)
	if err != nil {
		return err
	}
	pin := ""
	if f := firstOf(o.fingerprint, file.Fingerprint); f != "" {
		var perr error
		if pin, perr = normFingerprint(f); perr != nil && !o.trust {
			return perr // with -trust, a broken pin is replaced
		}
	}
	oldPin := pin
	if o.trust {
		pin = "" // explicit trust on first use: take what the server shows
	}

	token := ""
	switch {
	case o.verb == "":
		// -trust alone sends nothing and needs no token.
	case o.tokenFile != "":
		token, err = readToken(o.tokenFile)
	case getenv("NIB_TOKEN") != "":
		token = strings.TrimSpace(getenv("NIB_TOKEN"))
	case file.TokenFile != "":
		token, err = readToken(file.TokenFile)
	}
	if err != nil {
		return err
	}
	if !validToken(token) {
		return usagef("penctl: the token has characters a bearer token cannot have (spaces, control characters or non-ASCII)")
	}
	if token == "" && o.verb != "" {
		return usagef("penctl: no token: give -token-file FILE, NIB_TOKEN or a config file's token_file")
	}

	c := newClient(addr, token, pin, o.trust)
	// Close the connection when done: lbd bounds each source's connections,
	// and a program that runs penctl in-process would otherwise hold one
	// per call.
	defer func() { c.http.CloseIdleConnections() }()
	if o.trust {
		if err := trust(c, o, cfgPath, oldPin, stdout, stderr); err != nil {
			return err
		}
		if o.verb == "" {
			return nil
		}
		c.http.CloseIdleConnections()
		c = newClient(addr, token, c.seenFingerprint(), false)
	}
	return runVerb(c, o, stdout)
}

// target merges the flags, the environment and the config file into the
// config file's path (or ""), its contents and the server's HOST:PORT.
func target(o *options, getenv func(string) string) (cfgPath string, file *File, addr string, err error) {
	cfgPath = firstOf(o.configFile, getenv("NIB_PENCTL_CONFIG"))
	file = &File{}
	if cfgPath != "" {
		if file, err = loadFile(cfgPath, o.trust); err != nil {
			return "", nil, "", err
		}
	}
	server := firstOf(o.server, getenv("NIB_HOST"), file.Address)
	if server == "" {
		return "", nil, "", usagef("penctl: no server: give -s HOST[:PORT], NIB_HOST or a config file's address")
	}
	addr, err = hostPort(server)
	return cfgPath, file, addr, err
}

// printURL prints the status page's URL, and the fingerprint to compare
// with the browser's certificate warning when one is pinned.
func printURL(o *options, stdout io.Writer, getenv func(string) string) error {
	_, file, addr, err := target(o, getenv)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "https://%s/\n", addr)
	if f := firstOf(o.fingerprint, file.Fingerprint); f != "" {
		if f, err = normFingerprint(f); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "certificate SHA-256 fingerprint (self-signed; compare with the browser's): %s\n", f)
	}
	return nil
}

// trust connects without a pin, prints the server's fingerprint and saves
// it to the config file when there is one.
func trust(c *client, o *options, cfgPath, oldPin string, stdout, stderr io.Writer) error {
	// A handshake only: nothing, not even the token, is sent to a server
	// that is not trusted yet (and no failed attempt is counted).
	fp, err := c.handshake()
	if err != nil {
		return err
	}
	out := stdout
	if o.verb != "" {
		out = stderr // keep the verb's output clean
	}
	fmt.Fprintf(out, "%s SHA-256 fingerprint: %s\n", c.addr, fp)
	if oldPin != "" && oldPin != fp {
		fmt.Fprintf(stderr, "penctl: warning: this replaces the previously pinned fingerprint %s\n", oldPin)
	}
	if cfgPath != "" {
		if err := saveFingerprint(cfgPath, c.addr, fp); err != nil {
			return fmt.Errorf("penctl: saving the fingerprint: %w", err)
		}
		fmt.Fprintf(out, "saved to %s\n", cfgPath)
	} else {
		fmt.Fprintf(out, "not saved (no -config FILE); pass -fingerprint %s from now on\n", fp)
	}
	return nil
}

func runVerb(c *client, o *options, stdout io.Writer) error {
	switch o.verb {
	case "status":
		b, err := c.do("GET", "/api/v1/status", nil)
		if err != nil {
			return withVerb("status", err)
		}
		if o.json {
			return writeJSON(stdout, b)
		}
		var st Status
		if err := json.Unmarshal(b, &st); err != nil {
			return &serverError{fmt.Sprintf("penctl: status: the server's reply is not status JSON: %v", err)}
		}
		return writeStatus(stdout, &st)
	case "config":
		path := "/api/v1/config"
		if o.json {
			path += "?format=json"
		}
		b, err := c.do("GET", path, nil)
		if err != nil {
			return withVerb("config", err)
		}
		if o.json {
			return writeJSON(stdout, b)
		}
		_, err = stdout.Write(b)
		return err
	case "backend":
		req := o.backend
		b, err := c.do("POST", "/api/v1/backend", req)
		if err != nil {
			return withVerb("backend "+req.Op, err)
		}
		if o.json {
			return writeJSON(stdout, b)
		}
		var r control.BackendReply
		if err := json.Unmarshal(b, &r); err != nil || !r.OK {
			return &serverError{fmt.Sprintf("penctl: backend: the server's reply is not ok: %q", truncate(b))}
		}
		fmt.Fprintf(stdout, "%s: %s backend %s of service %s (index %d); penctl write saves it\n", req.Op, backendDone[req.Op], req.Backend, req.Service, r.Index)
		if req.Op == control.OpBlacklist {
			fmt.Fprintf(stdout, "(blacklists are not saved by write)\n")
		}
		return nil
	case "check":
		b, err := c.do("POST", "/api/v1/check", control.CheckRequest{Service: o.args[0]})
		if err != nil {
			return withVerb("check", err)
		}
		if o.json {
			if err := writeJSON(stdout, b); err != nil {
				return err
			}
		}
		var r control.CheckReply
		if err := json.Unmarshal(b, &r); err != nil {
			return &serverError{fmt.Sprintf("penctl: check: the server's reply is not a check report: %q", truncate(b))}
		}
		if !o.json {
			for _, l := range r.Lines {
				fmt.Fprintln(stdout, l)
			}
		}
		if !r.OK {
			return &serverError{fmt.Sprintf("penctl: check: some backends of %s are not ready", o.args[0])}
		}
		return nil
	case "write", "reload":
		b, err := c.do("POST", "/api/v1/"+o.verb, nil)
		if err != nil {
			var se *serverError
			if o.verb == "reload" && errors.As(err, &se) {
				return &serverError{"penctl: reload rejected; the running configuration is unchanged:\n" + se.msg}
			}
			return withVerb(o.verb, err)
		}
		if o.json {
			return writeJSON(stdout, b)
		}
		fmt.Fprintf(stdout, "%s: ok\n", o.verb)
		return nil
	}
	words := append([]string{o.verb}, o.args...)
	if o.verb == "pen" {
		words = o.args
	}
	b, err := c.do("POST", "/api/v1/pen", map[string]string{"command": strings.Join(words, " ")})
	if err != nil {
		var se *serverError
		if errors.As(err, &se) && strings.HasPrefix(se.msg, "400 ") {
			err = &serverError{se.msg + "\n(penctl help lists penctl's verbs; any other word is sent to lbd as a Pen command)"}
		}
		return withVerb(words[0], err)
	}
	if o.json {
		return writeJSON(stdout, b)
	}
	var r struct {
		Output *string `json:"output"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Output == nil {
		return &serverError{fmt.Sprintf("penctl: %s: the server's reply has no output: %q", words[0], truncate(b))}
	}
	_, err = io.WriteString(stdout, *r.Output)
	return err
}

// withVerb prefixes a server error with the verb; connection errors already
// name the server.
func withVerb(verb string, err error) error {
	var se *serverError
	if errors.As(err, &se) {
		return &serverError{fmt.Sprintf("penctl: %s: %s", verb, se.msg)}
	}
	return err
}

func writeJSON(w io.Writer, b []byte) error {
	var buf bytes.Buffer
	if json.Indent(&buf, b, "", "  ") != nil {
		return &serverError{fmt.Sprintf("penctl: the server's reply is not JSON: %q", truncate(b))}
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// validToken reports whether t can be sent as a bearer token: printable
// ASCII without spaces (the empty token is checked separately).
func validToken(t string) bool {
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return false
		}
	}
	return true
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
