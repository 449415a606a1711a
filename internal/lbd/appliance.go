package lbd

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nib-lb/nib/config"
	"github.com/nib-lb/nib/internal/atomicfile"
)

// lastGoodName is the last good config's file name in the state directory.
const lastGoodName = "last-good.toml"

// builtinName names the built-in appliance default in errors and messages.
const builtinName = "the built-in appliance default"

// maxDebug is the highest debug level a config accepts.
const maxDebug = 3

// applianceDefault returns the config written to a missing FILE and served
// when nothing else can be: config.ApplianceTOML(). Tests replace it, as its
// welcome page listens on 0.0.0.0:80.
var applianceDefault = config.ApplianceTOML

// applyRetry is how often a FILE that failed to apply at start is retried.
var applyRetry = 5 * time.Second

// appliance is lbd's config handling in appliance mode.
//
// Appliance mode is lbd -config FILE -state DIR, as the gokrazy image runs
// it (-config=/perm/lbd/config.toml -state=/perm/lbd). There lbd must keep
// serving whatever happens to its files, because gokrazy restarts it every
// second when it fails and never when it exits 0:
//
//   - FILE missing: lbd writes the appliance default there and serves it.
//   - Every config that loads from FILE and applies is copied to
//     DIR/last-good.toml.
//   - FILE unreadable, invalid or not applicable at start: lbd reports why and
//     serves DIR/last-good.toml, else the built-in appliance default from
//     memory. A FILE that parsed but failed to apply (a port in use, an
//     address DHCP has not configured yet) is tried again every applyRetry.
//   - FILE missing and its directory not writable (/perm not mounted): the
//     built-in appliance default from memory. DIR not writable but FILE
//     good: FILE serves, and no last-good is kept.
//   - SIGHUP re-reads FILE; a bad one is rejected and the running config
//     stays (as without -state); last-good changes only on success.
//   - A static [network] (the appliance's own address) is applied, only in
//     this mode, before the services of the config; see netState.
//
// What is served, and why, is logged and shown by {{config}} in dummy
// bodies (the welcome page). lbd exits non-zero (and is restarted) only when
// not even the built-in default can be served.
type appliance struct {
	file   string // -config
	dir    string // -state
	log    *log.Logger
	status *status

	stateErr error        // why DIR cannot keep last-good; nil if it can
	retry    *time.Ticker // non-nil while FILE waits to be applied again
	net      *netState    // [network]: see network.go
}

// applyError is a config that parsed but could not be applied: a port in
// use, an address not (yet) configured, a certificate file missing.
type applyError struct {
	name string
	err  error
}

func (e *applyError) Error() string { return e.name + ": " + e.err.Error() }
func (e *applyError) Unwrap() error { return e.err }

// lastGood is the path of the last good config.
func (a *appliance) lastGood() string { return filepath.Join(a.dir, lastGoodName) }

// boot chooses and applies the first config: FILE, else last-good, else the
// built-in default. It fails only when not even the built-in default can be
// applied.
func (a *appliance) boot(d *Daemon) error {
	if a.stateErr = prepareDir(a.dir); a.stateErr != nil {
		a.log.Printf("state directory %s is not usable, so no last good config is kept: %v", a.dir, a.stateErr)
	}
	data, err := os.ReadFile(a.file)
	if errors.Is(err, fs.ErrNotExist) {
		data = applianceDefault()
		if werr := writeConfig(a.file, data); werr != nil {
			why := fmt.Sprintf("%s is missing and cannot be written: %v", a.file, werr)
			return a.serveBuiltin(d, why, why)
		}
		a.log.Printf("%s was missing: wrote the appliance default there", a.file)
		err = nil
	}
	readErr := err
	if err == nil {
		if err = a.load(d, a.file, data); err == nil {
			a.saveLastGood(data)
			a.status.setConfig(a.file + a.stateNote())
			return nil
		}
	}
	var why string // for the log; the page also gets the errors
	switch ae := (*applyError)(nil); {
	case errors.As(err, &ae):
		why = a.file + " cannot be applied"
		a.retry = time.NewTicker(applyRetry)
	case readErr != nil:
		why = "cannot read " + a.file
	default:
		why = a.file + " is invalid"
	}
	a.log.Printf("%s:", why)
	a.logLines(err.Error())
	if a.retry != nil {
		a.log.Printf("trying %s again every %v", a.file, applyRetry)
	}
	detail := why + ":\n" + err.Error()

	lg := a.lastGood()
	lgData, lgErr := os.ReadFile(lg)
	switch {
	case lgErr == nil:
		if lgErr = a.load(d, lg, lgData); lgErr == nil {
			a.log.Printf("serving %s, the last good config, because %s", lg, why)
			a.status.setConfig(indent(lg + ", the last good config,\nbecause " + detail))
			return nil
		}
		a.log.Printf("the last good config is no good either:")
		a.logLines(lgErr.Error())
	case errors.Is(lgErr, fs.ErrNotExist):
		a.log.Printf("there is no last good config (%s)", lg)
	default:
		a.log.Printf("cannot read the last good config: %v", lgErr)
	}
	return a.serveBuiltin(d, why, detail)
}

// serveBuiltin applies the built-in appliance default from memory: why is
// the reason in one line for the log, detail the reason with any errors for
// the welcome page.
func (a *appliance) serveBuiltin(d *Daemon, why, detail string) error {
	if err := a.load(d, builtinName, applianceDefault()); err != nil {
		return fmt.Errorf("cannot serve even %s: %w", builtinName, err)
	}
	a.log.Printf("serving %s from memory, because %s", builtinName, why)
	a.status.setConfig(indent(builtinName + ", from memory,\nbecause " + detail))
	return nil
}

// load parses data (named name in errors) and applies it. Errors that come
// from applying rather than parsing are *applyError.
func (a *appliance) load(d *Daemon, name string, data []byte) error {
	cfg, err := config.Parse(name, data)
	a.network(name, cfg, err)
	if err != nil {
		return err
	}
	return d.applyLoaded(name, cfg)
}

// reload re-reads FILE (SIGHUP): applied and kept as last-good if it is
// good, else rejected with the running config left as it is.
func (a *appliance) reload(d *Daemon) { a.reloadErr(d) }

// reloadErr is reload, returning its error (the control API's reload).
func (a *appliance) reloadErr(d *Daemon) error {
	data, err := os.ReadFile(a.file)
	if err == nil {
		err = a.load(d, a.file, data)
	}
	if err != nil {
		d.reloads.note(err)
		a.logLines(fmt.Sprintf("reload %s failed, keeping the running config: %v", a.file, err))
		return err
	}
	d.reloads.note(nil)
	a.applied(data)
	a.log.Printf("reloaded %s", a.file)
	return nil
}

// retryC ticks while FILE waits to be applied again; nil otherwise.
func (a *appliance) retryC() <-chan time.Time {
	if a == nil || a.retry == nil {
		return nil
	}
	return a.retry.C
}

// retryFile tries again a FILE that failed to apply. It keeps trying while
// the failure is one of applying; a FILE that no longer parses (someone is
// editing it) waits for SIGHUP.
func (a *appliance) retryFile(d *Daemon) {
	data, err := os.ReadFile(a.file)
	if err == nil {
		err = a.load(d, a.file, data)
	}
	if ae := (*applyError)(nil); errors.As(err, &ae) {
		d.debugf(1, "retrying %v", err)
		return
	}
	if err != nil {
		a.stopRetry()
		a.logLines(fmt.Sprintf("stopped trying %s again (SIGHUP reloads it): %v", a.file, err))
		return
	}
	d.reloads.note(nil)
	a.applied(data)
	a.log.Printf("applied %s (tried again)", a.file)
}

// applied records that FILE, holding data, now runs.
func (a *appliance) applied(data []byte) {
	a.stopRetry()
	a.saveLastGood(data)
	a.status.setConfig(a.file + a.stateNote())
}

func (a *appliance) stopRetry() {
	if a.retry != nil {
		a.retry.Stop()
		a.retry = nil
	}
}

// stateNote is what {{config}} adds when no last-good can be kept.
func (a *appliance) stateNote() string {
	if a.stateErr == nil {
		return ""
	}
	return indent("\n(no last good config is kept: " + a.stateErr.Error() + ")")
}

// saveLastGood keeps data, a config that loaded and applied, as last-good.
// An unchanged copy is not rewritten (the appliance's storage is flash).
func (a *appliance) saveLastGood(data []byte) {
	if a.stateErr != nil {
		return
	}
	lg := a.lastGood()
	if old, err := os.ReadFile(lg); err == nil && bytes.Equal(old, data) {
		return
	}
	if err := atomicfile.Write(lg, data, 0o600); err != nil {
		a.log.Printf("cannot keep the last good config: %v", err)
	}
}

// logLines logs a possibly multi-line message (a config's errors, one per
// line) with the log prefix on every line.
func (a *appliance) logLines(msg string) {
	for line := range strings.SplitSeq(strings.TrimRight(msg, "\n"), "\n") {
		a.log.Print(line)
	}
}

// prepareDir makes sure dir exists (created 0700) and can be written.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// access(2) reports a read-only file system (EROFS) even to root,
	// without writing anything.
	if err := syscall.Access(dir, 2|1); err != nil { // W_OK|X_OK
		return &fs.PathError{Op: "access", Path: dir, Err: err}
	}
	return nil
}

// writeConfig writes a first config file atomically, owner-only, creating
// its directory (0700) if needed.
func writeConfig(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// indent indents the lines after the first of a multi-line message, for
// {{config}} on a text page.
func indent(s string) string {
	return strings.ReplaceAll(s, "\n", "\n    ")
}

// reloadCounts count re-reads of the config file (SIGHUP, the control
// API's reload) by outcome, for the status and the metrics.
type reloadCounts struct {
	applied  atomic.Uint64 // the file was applied
	rejected atomic.Uint64 // the file is invalid: the old config stays
	failed   atomic.Uint64 // valid, but applying it failed (a port in use)
}

// note counts one reload that ended with err (an *applyError: failed).
func (r *reloadCounts) note(err error) {
	var ae *applyError
	switch {
	case err == nil:
		r.applied.Add(1)
	case errors.As(err, &ae):
		r.failed.Add(1)
	default:
		r.rejected.Add(1)
	}
}

// counts returns the counters by outcome name.
func (r *reloadCounts) counts() map[string]uint64 {
	return map[string]uint64{"applied": r.applied.Load(), "rejected": r.rejected.Load(), "failed": r.failed.Load()}
}
