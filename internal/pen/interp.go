package pen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/nib-lb/nib/config"
)

// ServerStat is the live state of one server slot.
type ServerStat struct {
	// Conns is the number of open connections.
	Conns int
	// Sent is bytes sent to the server, Recv bytes received from it.
	Sent, Recv uint64
	// Health is "up" or "down" when the service has an active health
	// check (nib only: servers appends " health WORD"), else "".
	Health string
}

// ClientStat is the live state of one recent client.
type ClientStat struct {
	Addr     netip.Addr
	Connects int
	// Sent is bytes sent to the client, Recv bytes received from it.
	Sent, Recv uint64
}

// Runtime is lbd's live state; an Interp's RT is nil before lbd runs.
type Runtime interface {
	// ServerStats returns one entry per server slot of the service.
	ServerStats(service string) []ServerStat
	// Recent returns the clients seen within the given time.
	Recent(service string, within time.Duration) []ClientStat
	// Blacklist skips a server slot for d (0 clears the blacklist).
	Blacklist(service string, server int, d time.Duration) error
	// StatusHTML writes Pen's status page.
	StatusHTML(service string, w io.Writer) error
	// Pid is the process id.
	Pid() int
	// Exit stops lbd cleanly.
	Exit() error
}

// Interp runs Pen's config and control verbs against a config.
// It is not safe for concurrent use.
type Interp struct {
	// Cfg is the config the verbs act on. Exec replaces *Cfg as a whole
	// when a command succeeds and changes it, and leaves it untouched when a
	// command fails.
	Cfg *config.Config
	// Service is the index of the service Pen's verbs act on (default 0);
	// a line may start with "service NAME" to pick another one.
	Service int
	// RT is lbd's live state, nil before lbd runs.
	RT Runtime
	// ControlAddr is what the control verb prints; "" prints
	// Cfg.Control.PenListen.
	ControlAddr string
	// ConfigFile is the -F file: what write without a file name writes,
	// the only file a control client can have written.
	ConfigFile string
	// Startup says the commands come from the startup configuration
	// (-o/-O, the -F file, include), which may name files and directories
	// and set the listener: the verbs of verbTable marked namesPath or
	// startupOnly, with an argument. Leave it false for the control
	// socket: its clients must not choose files lbd reads or writes (see
	// permit).
	Startup bool
	// Root, when set, is the directory the files named by the commands
	// (the -F file, include) are relative to: Pen's -j jail, before lbd
	// has chrooted into it. Pen opens them after its chroot.
	Root string
	// SaveTOML, when set, is what write without a file name does: lbd
	// serving a TOML file saves the running config there (atomically)
	// instead of writing Pen's format.
	SaveTOML func(*config.Config) error
	// Hosts, when set, answers for the host names of "server N address
	// HOST", and Exec does no DNS lookup itself: a name missing from Hosts
	// is an error. Set it from LookupHosts on the same line, called before
	// taking any lock, so a slow resolver never holds one (the control
	// socket). When nil, names are looked up as they are met.
	Hosts *Hosts
	// Validate runs config.Validate on the result of every command that
	// changes the config and refuses the command when it fails. Set it for
	// the control socket so the running config is always valid.
	Validate bool
}

// maxSlots bounds the server table (server N creates slots up to N).
const maxSlots = 1024

// maxIncludeDepth bounds nested include.
const maxIncludeDepth = 8

// maxLine bounds a command line, like Pen's 4095-byte control read.
const maxLine = 4095

// exitDisabled is the exit reply without -X.
const exitDisabled = "Exit is not enabled; restart with -X flag\n"

// Exec runs one command line. It reads up to the first \r or \n; tokens are
// separated by spaces or tabs; empty lines and lines starting with # do
// nothing. Replies are written to out in Pen's formats. changed reports
// whether Cfg was modified. On error Cfg is unchanged, nothing is written,
// and the error text is Pen-like free text fit for a control client.
func (in *Interp) Exec(line string, out io.Writer) (changed bool, err error) {
	if in.Cfg == nil {
		return false, errors.New("no configuration")
	}
	before, c := in.Cfg.Clone(), in.Cfg.Clone()
	var buf bytes.Buffer
	var post []func() error
	st := &state{in: in, c: c, svc: in.Service, out: &buf, post: &post}
	if err := st.line(line); err != nil {
		return false, err
	}
	changed = !reflect.DeepEqual(before, c)
	if changed && in.Validate {
		if err := config.Validate(c); err != nil {
			return false, fmt.Errorf("refused, the result would be invalid: %v", err)
		}
	}
	for _, f := range post {
		if err := f(); err != nil {
			return false, err
		}
	}
	if changed {
		*in.Cfg = *c
	}
	_, err = out.Write(buf.Bytes())
	return changed, err
}

// ExecFile runs every line of a Pen config file (as read at startup with -F
// and on SIGHUP). It is all or nothing: on an error, reported as
// FILE:LINE: text, Cfg is unchanged.
func (in *Interp) ExecFile(path string, out io.Writer) (changed bool, err error) {
	if in.Cfg == nil {
		return false, errors.New("no configuration")
	}
	before := in.Cfg.Clone()
	tmp := *in
	tmp.Cfg = in.Cfg.Clone()
	tmp.Validate = false
	var buf bytes.Buffer
	if err := tmp.execFile(path, &buf, 0); err != nil {
		return false, err
	}
	changed = !reflect.DeepEqual(before, tmp.Cfg)
	if changed && in.Validate {
		if err := config.Validate(tmp.Cfg); err != nil {
			return false, fmt.Errorf("%s: refused, the result would be invalid: %v", path, err)
		}
	}
	if changed {
		*in.Cfg = *tmp.Cfg
	}
	_, err = out.Write(buf.Bytes())
	return changed, err
}

func (in *Interp) execFile(path string, out io.Writer, depth int) error {
	if depth >= maxIncludeDepth {
		return fmt.Errorf("include %s: nested too deeply", path)
	}
	open := path
	if in.Root != "" {
		open = filepath.Join(in.Root, filepath.Join("/", path))
	}
	f, err := os.Open(open)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		st := &state{in: in, c: in.Cfg, svc: in.Service, out: out, depth: depth}
		var post []func() error
		st.post = &post
		if err := st.line(sc.Text()); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
		for _, f := range post {
			if err := f(); err != nil {
				return fmt.Errorf("%s:%d: %w", path, n, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// state is one command's working copy.
type state struct {
	in    *Interp
	c     *config.Config // the copy being changed
	svc   int
	out   io.Writer
	post  *[]func() error // side effects run after the change is accepted
	depth int
	name  string // the verb being run, for error texts (see call)
}

func (st *state) s() *config.Service { return &st.c.Services[st.svc] }

func (st *state) printf(format string, a ...any) { fmt.Fprintf(st.out, format, a...) }

// tokens truncates a line at the first \r or \n and splits it.
func tokens(line string) []string {
	if i := strings.IndexAny(line, "\r\n"); i >= 0 {
		line = line[:i]
	}
	if len(line) > maxLine {
		line = line[:maxLine]
	}
	return strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' })
}

// line runs one command line: an optional "service NAME" prefix picks the
// service, and the rest is a verb of verbTable (see do).
func (st *state) line(line string) error {
	t := tokens(line)
	if len(t) == 0 || strings.HasPrefix(t[0], "#") {
		return nil
	}
	if t[0] == "service" {
		if len(t) == 1 {
			if err := st.checkService(); err != nil {
				return err
			}
			st.printf("%s\n", st.s().Name)
			return nil
		}
		i := st.findService(t[1])
		if i < 0 {
			return fmt.Errorf("service: no service named '%s'", t[1])
		}
		st.svc = i
		t = t[2:]
		if len(t) == 0 {
			return nil
		}
	}
	if err := st.checkService(); err != nil {
		return err
	}
	return st.do(t[0], t[1:])
}

func (st *state) findService(name string) int {
	for i, s := range st.c.Services {
		if s.Name == name {
			return i
		}
	}
	return -1
}

func (st *state) checkService() error {
	if st.svc < 0 || st.svc >= len(st.c.Services) {
		return fmt.Errorf("no service %d", st.svc)
	}
	return nil
}
