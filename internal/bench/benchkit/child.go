package benchkit

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Child is a process a benchmark started. Every child gets its own process
// group, so killing the group also ends what it forked (nginx's worker) or
// exec'd (taskset, prlimit).
type Child struct {
	Name string
	cmd  *exec.Cmd
	log  string // path of the file holding its stdout and stderr

	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
}

var children struct {
	sync.Mutex
	set     map[*Child]struct{}
	stopped bool // set once shutdown began: no new children
}

// StartChild starts argv with stdout and stderr going to logPath.
func StartChild(name, logPath string, argv ...string) (*Child, error) {
	children.Lock()
	defer children.Unlock()
	if children.stopped {
		return nil, fmt.Errorf("%s: shutting down", name)
	}
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c := &Child{Name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	if children.set == nil {
		children.set = make(map[*Child]struct{})
	}
	children.set[c] = struct{}{}
	return c, nil
}

// pid is the process id; with taskset or prlimit in front it is the pid of the
// program they exec.
func (c *Child) PID() int { return c.cmd.Process.Pid }

func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// exitError describes how the child ended, with the tail of its log.
func (c *Child) ExitError() error {
	<-c.done
	msg := "exited"
	if c.err != nil {
		msg = c.err.Error()
	}
	if tail := c.LogTail(5); tail != "" {
		msg += ": " + tail
	}
	return fmt.Errorf("%s %s", c.Name, msg)
}

// logTail returns the last n non-empty lines of the child's log, joined by " | ".
func (c *Child) LogTail(n int) string {
	b, err := os.ReadFile(c.log)
	if err != nil {
		return ""
	}
	var lines []string
	for _, l := range bytes.Split(b, []byte("\n")) {
		if s := strings.TrimSpace(string(l)); s != "" {
			lines = append(lines, s)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// stop kills the child's process group and waits for the child to be reaped.
func (c *Child) Stop() {
	_ = syscall.Kill(-c.PID(), syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		fmt.Fprintf(os.Stderr, "warning: %s (pid %d) did not exit after SIGKILL\n", c.Name, c.PID())
	}
	children.Lock()
	delete(children.set, c)
	children.Unlock()
}

// Stopping reports whether shutdown (Ctrl-C) began.
func Stopping() bool {
	children.Lock()
	defer children.Unlock()
	return children.stopped
}

// KillAll stops every child still running; no child can be started afterwards.
func KillAll() {
	children.Lock()
	children.stopped = true
	list := make([]*Child, 0, len(children.set))
	for c := range children.set {
		list = append(list, c)
	}
	children.Unlock()
	for _, c := range list {
		c.Stop()
	}
}

// RunChild runs argv to completion as a registered child (so Ctrl-C kills it)
// and returns its combined output.
func RunChild(name, logPath string, argv ...string) (string, error) {
	c, err := StartChild(name, logPath, argv...)
	if err != nil {
		return "", err
	}
	<-c.done
	children.Lock()
	delete(children.set, c)
	children.Unlock()
	out, _ := os.ReadFile(logPath)
	if c.err != nil {
		return string(out), fmt.Errorf("%s: %v", name, c.err)
	}
	return string(out), nil
}

// waitLog waits until the child's log contains what, or it exits, or d passes.
func (c *Child) WaitLog(what string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		b, _ := os.ReadFile(c.log)
		if strings.Contains(string(b), what) {
			return nil
		}
		if c.Exited() {
			return c.ExitError()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not log %q within %v (log: %s)", c.Name, what, d, c.LogTail(5))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Done is closed when the process has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// LogPath is the file holding the process's stdout and stderr.
func (c *Child) LogPath() string { return c.log }

// Err is Wait's result, once Done is closed.
func (c *Child) Err() error { return c.err }

// ProcessState is the exited process's state (nil while it runs).
func (c *Child) ProcessState() *os.ProcessState { return c.cmd.ProcessState }
