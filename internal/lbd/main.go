package lbd

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/atomicfile"
	"github.com/nib-lb/nib/internal/dsrpath"
	"github.com/nib-lb/nib/internal/pen"
)

// shutdownGrace is how long SIGTERM waits for open connections.
const shutdownGrace = 5 * time.Second

// childEnv marks the background process of a Pen-style (no -f) start.
const childEnv = "LBD_DAEMON_CHILD"

// invocation is what the command line asked for, in either syntax.
type invocation struct {
	cfg        *config.Config
	tomlFile   string // -config: re-read on SIGHUP
	stateDir   string // -state: appliance mode, cfg is chosen at start
	debug      int    // -d count (appliance mode adds it to the config chosen)
	dsrPath    string // -dsr-path: packet, xdp or auto
	native     bool   // lbd's own flags, not Pen's command line
	penFile    string // Pen -F: re-applied on SIGHUP
	foreground bool
	pidFile    string
	user       string
	chroot     string
	notices    []string
}

// Main runs lbd with the given arguments (without the program name) and
// returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	dsrPath := os.Getenv(dsrPathEnv)
	if dsrPath == "" {
		dsrPath = dsrpath.Auto
	}
	if err := dsrpath.Check(dsrPath); err != nil {
		fmt.Fprintf(stderr, "lbd: %s=%v\n", dsrPathEnv, err)
		return 2
	}
	if native(args) {
		return mainNative(args, dsrPath, stdout, stderr)
	}
	if len(args) == 1 && args[0] == "-h" {
		usage(stdout)
		return 0
	}
	inv, err := pen.ParseArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "lbd: %v\n", err)
		return 2
	}
	return run(&invocation{
		cfg:        inv.Config,
		penFile:    inv.ConfigFile,
		foreground: inv.Foreground,
		pidFile:    inv.PidFile,
		user:       inv.User,
		chroot:     inv.Chroot,
		notices:    inv.Notices,
		dsrPath:    dsrPath,
	}, args, stderr)
}

// native reports whether args use lbd's own flags rather than Pen's.
func native(args []string) bool {
	if len(args) == 0 {
		return true
	}
	for _, a := range args {
		switch strings.TrimPrefix(strings.SplitN(a, "=", 2)[0], "-") {
		case "config", "-config", "state", "-state", "check", "-check", "print-toml", "-print-toml", "version", "-version", "help", "-help":
			return true
		}
	}
	return false
}

func usage(w io.Writer) {
	fmt.Fprint(w, `lbd: the nib load balancer

Usage:
  lbd                      serve the embedded default config (127.0.0.1:8080)
  lbd -config FILE [-d]    serve a TOML config (SIGHUP re-reads it)
  lbd -config FILE -state DIR [-d]
                           appliance mode: serve FILE, or else the last good
                           config or a built-in one, never refusing to start
  lbd -config FILE -dsr-path auto|xdp|xdp-generic|packet ...
                           the DSR data path: auto (the default: the XDP
                           program, else lbd's AF_PACKET forwarder with the
                           reason logged), xdp (an error if XDP cannot
                           attach), xdp-generic (xdp in generic mode only,
                           the hook the Pis' NICs have) or packet
                           (AF_PACKET only); the environment's LBD_DSR_PATH
                           sets it too, also for Pen's command line
  lbd -check FILE          validate a TOML config; exit 0 if valid, 1 if not
  lbd -print-toml ARGS...  print the TOML equivalent of a Pen command line
  lbd -version             print the version
  lbd PEN-ARGS...          run with Pen's command line, as Pen would

Appliance mode (-config FILE -state DIR; the gokrazy image runs
-config=/perm/lbd/config.toml -state=/perm/lbd). DIR is created 0700.
  - FILE missing: lbd writes the appliance default there (0600) and serves it.
  - Every config loaded from FILE that applies is copied to DIR/last-good.toml.
  - FILE unreadable, invalid or not applicable at start: lbd logs why (errors
    as file:line:col) and serves DIR/last-good.toml, else the built-in
    appliance default from memory. A FILE that only failed to apply (a port
    in use, an address not configured yet) is tried again every 5s.
  - FILE missing and not writable (/perm not mounted): the built-in default
    from memory. DIR not writable: no last-good is kept. Both are logged.
  - SIGHUP re-reads FILE; a bad one is logged and the running config stays.
  - [network] with mode = "static" sets this host's address, default route
    and name servers (netlink) before the services start, and on every
    reload; only in this mode, never with -config alone.
  - [control] listen serves the HTTPS control API (penctl over the network;
    only in this mode). DIR keeps its TLS key, self-signed certificate and
    bearer token (control.key, control.crt, control.token, 0600), created
    when missing; the log shows the certificate's SHA-256 fingerprint and
    the token file's path. When they can be neither read nor created, the
    API stays off (logged) and everything else is served.
A dummy's body may show live facts: {{addresses}} (this host's addresses),
{{config}} (the config served, and why when it is not FILE), {{hostname}},
{{version}}; the appliance's welcome page does.

Exit status: 0 after SIGTERM, SIGINT or the control "exit" verb (and for
-help, -version and a valid -check); 1 when lbd cannot start (a bad config
without -state; with -state only when not even the built-in default can be
served, e.g. its port is taken) or -check finds errors; 2 for usage errors.

`)
	pen.Usage(w)
}

func mainNative(args []string, dsrPathDefault string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "-print-toml" || args[0] == "--print-toml") {
		// Everything after it is Pen's command line.
		if err := pen.PrintTOML(args[1:], stdout); err != nil {
			fmt.Fprintf(stderr, "lbd: %v\n", err)
			return 1
		}
		return 0
	}
	fs, f := nativeFlags(dsrPathDefault)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch {
	case f.help:
		usage(stdout)
		return 0
	case f.version:
		fmt.Fprintln(stdout, "lbd", Version())
		return 0
	case f.check != "":
		if _, err := config.Load(f.check); err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: ok\n", f.check)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "lbd: unexpected arguments %q (Pen-style arguments cannot be mixed with -config)\n", fs.Args())
		return 2
	}
	if f.stateDir != "" && f.configFile == "" {
		fmt.Fprintln(stderr, "lbd: -state needs -config")
		return 2
	}
	if err := dsrpath.Check(f.dsrPath); err != nil {
		fmt.Fprintf(stderr, "lbd: -dsr-path %v\n", err)
		return 2
	}
	inv := &invocation{foreground: f.foreground, native: true, debug: f.debug, dsrPath: f.dsrPath}
	switch {
	case f.stateDir != "":
		inv.tomlFile, inv.stateDir = f.configFile, f.stateDir
	case f.configFile != "":
		cfg, err := config.Load(f.configFile)
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return 1
		}
		inv.cfg, inv.tomlFile = cfg, f.configFile
	default:
		inv.cfg = config.Default()
	}
	if inv.cfg != nil {
		inv.cfg.Debug = min(inv.cfg.Debug+f.debug, maxDebug)
	}
	return run(inv, args, stderr)
}

// nativeOpts are the values of lbd's native flags.
type nativeOpts struct {
	configFile, stateDir, check, dsrPath string
	version, help, foreground            bool
	debug                                int
}

// nativeFlags defines lbd's native flags. netconfig reads the appliance's
// lbd arguments without them: TestNetconfigKnowsLbdFlags keeps its list of
// flags that take no value in step.
func nativeFlags(dsrPathDefault string) (*flag.FlagSet, *nativeOpts) {
	fs := flag.NewFlagSet("lbd", flag.ContinueOnError)
	f := &nativeOpts{}
	fs.StringVar(&f.configFile, "config", "", "TOML configuration `file`")
	fs.StringVar(&f.stateDir, "state", "", "state `dir`ectory; with -config, appliance mode (above)")
	fs.StringVar(&f.check, "check", "", "validate a TOML configuration `file` and exit")
	fs.BoolVar(&f.version, "version", false, "print the version")
	fs.BoolVar(&f.help, "help", false, "show help")
	fs.Func("d", "more debug output (repeatable)", func(string) error { f.debug++; return nil })
	fs.Lookup("d").DefValue = ""
	boolFlag(fs, "d")
	fs.BoolVar(&f.foreground, "f", true, "stay in the foreground (always true with -config)")
	fs.StringVar(&f.dsrPath, "dsr-path", dsrPathDefault, "DSR data path (default from $LBD_DSR_PATH, else auto): `auto` (XDP, else AF_PACKET with the reason logged), xdp (an XDP program in the kernel; fails if it cannot attach), xdp-generic (xdp in generic mode only) or packet (AF_PACKET, in lbd)")
	return fs, f
}

// boolFlag makes a flag.Func flag take no value.
func boolFlag(fs *flag.FlagSet, name string) {
	f := fs.Lookup(name)
	f.Value = countFlag{f.Value}
}

type countFlag struct{ flag.Value }

func (countFlag) IsBoolFlag() bool { return true }

// run starts the daemon and serves until a signal or exit verb stops it.
func run(inv *invocation, args []string, stderr io.Writer) int {
	if !inv.foreground && os.Getenv(childEnv) == "" {
		return background(args, stderr)
	}
	logger := log.New(stderr, "lbd: ", log.LstdFlags|log.Lmicroseconds)
	raiseFileLimit(logger)
	for _, n := range inv.notices {
		logger.Print(n)
	}
	d := New(logger)
	d.SetRoot(inv.chroot) // Pen opens its log inside the jail
	d.PenFile = inv.penFile
	d.TOMLFile = inv.tomlFile
	d.DSRPath = inv.dsrPath
	d.DebugBoost = inv.debug
	st := &status{}
	d.Facts = st.fact
	// One TCP loop per usable CPU, plus a P for everything else (UDP, TLS,
	// control, timers) so busy loops never have to make room for it.
	if os.Getenv("GOMAXPROCS") == "" {
		d.Loops = runtime.GOMAXPROCS(0)
		runtime.GOMAXPROCS(d.Loops + 1)
	}
	var app *appliance
	if inv.stateDir != "" {
		app = &appliance{file: inv.tomlFile, dir: inv.stateDir, log: logger, status: st}
		d.StateDir = inv.stateDir
		d.api.reloads = make(chan chan error)
		d.saved = make(chan []byte, 1)
		if err := app.boot(d); err != nil {
			logger.Printf("%v", err)
			ready(fmt.Sprintf("error: %v", err))
			return 1
		}
	} else {
		st.setConfig(describeSource(inv))
		if err := d.Apply(inv.cfg); err != nil {
			logger.Printf("%v", err)
			ready(fmt.Sprintf("error: %v", err))
			return 1
		}
	}
	if err := dropPrivileges(inv.chroot, inv.user); err != nil {
		logger.Printf("%v", err)
		ready(fmt.Sprintf("error: %v", err))
		d.Close()
		return 1
	}
	d.SetRoot("") // inside the jail now: paths are as given
	// As in Pen, the pid file is written after the chroot and the user
	// switch: its path is inside the jail. An init script needs it to stop
	// lbd, so failing to write it is a startup error, not a log line.
	if inv.pidFile != "" {
		if err := os.WriteFile(inv.pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			err = fmt.Errorf("pid file (-p, written after -j and -u): %w", err)
			logger.Printf("%v", err)
			ready(fmt.Sprintf("error: %v", err))
			d.Close()
			return 1
		}
		defer os.Remove(inv.pidFile)
	}
	ready("ok")
	logger.Printf("started (version %s, pid %d)", Version(), os.Getpid())

	return serve(d, inv, app, logger)
}

// serve runs until a signal or the exit verb stops lbd and returns the exit
// code: 0 only for those deliberate stops (gokrazy does not restart a
// program that exits 0).
func serve(d *Daemon, inv *invocation, app *appliance, logger *log.Logger) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	for {
		select {
		case <-d.Exited():
			logger.Print("exit requested by control client")
			d.Shutdown(0)
			return 0
		case <-app.retryC():
			app.retryFile(d)
		case done := <-d.api.reloads: // only in appliance mode
			done <- app.reloadErr(d)
		case data := <-d.saved: // only in appliance mode
			app.applied(data)
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				if err := d.ReopenLogs(); err != nil {
					logger.Printf("%v", err)
				}
				if app != nil {
					app.reload(d)
				} else {
					reload(d, inv, logger)
				}
			case syscall.SIGUSR1:
				d.writeWebStats(logger)
			default:
				logger.Printf("%v: stopping", sig)
				d.Shutdown(shutdownGrace)
				return 0
			}
		}
	}
}

// reload re-reads the configuration source; a bad one is reported and the
// running configuration stays.
func reload(d *Daemon, inv *invocation, logger *log.Logger) {
	switch {
	case inv.tomlFile != "":
		cfg, err := config.Load(inv.tomlFile)
		if err == nil {
			err = d.applyLoaded(inv.tomlFile, cfg)
		}
		d.reloads.note(err)
		if err != nil {
			logger.Printf("reload %s failed, keeping the running config: %v", inv.tomlFile, err)
			return
		}
		logger.Printf("reloaded %s", inv.tomlFile)
	case inv.penFile != "":
		err := d.ReloadPenFile(inv.penFile)
		d.reloads.note(err) // a Pen file's errors are its lines: rejected
		if err != nil {
			logger.Printf("reload %s failed, keeping the running config: %v", inv.penFile, err)
			return
		}
		logger.Printf("reloaded %s", inv.penFile)
	default:
		logger.Print("SIGHUP: no config file to re-read")
	}
}

// ReloadPenFile applies a Pen -F file on top of the running configuration,
// as Pen does on SIGHUP: all of it, or (on any error) none of it.
func (d *Daemon) ReloadPenFile(path string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	in := &pen.Interp{Cfg: d.cfg.Clone(), RT: runtimeView{d}, ConfigFile: path, Startup: true, Validate: true}
	var out bytes.Buffer
	changed, err := in.ExecFile(path, &out)
	if out.Len() > 0 {
		d.log.Printf("%s: %s", path, strings.TrimSpace(out.String()))
	}
	if err != nil {
		return err
	}
	if !changed {
		return nil
	}
	return d.applyLocked(in.Cfg)
}

// background re-executes lbd detached, like Pen without -f, and returns once
// the child has either started serving (0) or failed (1, with its error).
func background(args []string, stderr io.Writer) int {
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "lbd: %v\n", err)
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "lbd: %v\n", err)
		return 1
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), childEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if logw, err := syslogWriter(); err == nil {
		cmd.Stderr = logw
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "lbd: %v\n", err)
		return 1
	}
	w.Close()
	msg, _ := io.ReadAll(io.LimitReader(r, 4096))
	r.Close()
	if s := string(msg); s != "ok" {
		if s == "" {
			s = "background process exited during startup"
		}
		fmt.Fprintf(stderr, "lbd: %s\n", strings.TrimPrefix(s, "error: "))
		return 1
	}
	cmd.Process.Release()
	return 0
}

// ready tells a waiting parent (background start) how startup went.
func ready(msg string) {
	if os.Getenv(childEnv) == "" {
		return
	}
	os.Unsetenv(childEnv)
	f := os.NewFile(3, "ready")
	if f == nil {
		return
	}
	io.WriteString(f, msg)
	f.Close()
}

// dropPrivileges chroots and switches user after the listeners are open.
// Unlike Pen it also drops root's supplementary groups.
func dropPrivileges(chroot, name string) error {
	var uid, gid int
	var groups []int
	if name != "" {
		u, err := user.Lookup(name)
		if err != nil {
			return fmt.Errorf("user %q: %w", name, err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		gids, _ := u.GroupIds()
		for _, g := range gids {
			if n, err := strconv.Atoi(g); err == nil {
				groups = append(groups, n)
			}
		}
	}
	if chroot != "" {
		if err := syscall.Chroot(chroot); err != nil {
			return fmt.Errorf("chroot %s: %w", chroot, err)
		}
		if err := os.Chdir("/"); err != nil {
			return err
		}
	}
	if name == "" {
		return nil
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	return nil
}

// raiseFileLimit lifts the soft descriptor limit to the hard one: every
// proxied connection needs two.
func raiseFileLimit(logger *log.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			logger.Printf("raising the open-file limit: %v", err)
		}
	}
}

// writeWebStats writes the -w status file of each service that has one
// (Pen's SIGUSR1). The pages are rendered under the daemon lock and written
// after it is released.
func (d *Daemon) writeWebStats(logger *log.Logger) {
	type page struct {
		path string
		body []byte
	}
	var pages []page
	d.mu.Lock()
	if d.cfg != nil {
		for _, sc := range d.cfg.Services {
			if sc.WebStats == "" {
				continue
			}
			var b bytes.Buffer
			if err := (runtimeView{d}).StatusHTML(sc.Name, &b); err != nil {
				continue
			}
			pages = append(pages, page{sc.WebStats, b.Bytes()})
		}
	}
	d.mu.Unlock()
	for _, p := range pages {
		if err := atomicfile.Write(p.path, p.body, 0o644); err != nil {
			logger.Printf("web stats %s: %v", p.path, err)
		}
	}
}

// dsrPathEnv sets lbd's DSR data path in both modes (Pen's command line has
// no flag for it); -dsr-path overrides it.
const dsrPathEnv = "LBD_DSR_PATH"
