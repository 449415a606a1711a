package main

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

// child is a process the benchmark started. Every child gets its own process
// group, so killing the group also ends what it forked (nginx's worker) or
// exec'd (taskset, prlimit).
type child struct {
	name string
	cmd  *exec.Cmd
	log  string // path of the file holding its stdout and stderr

	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
}

var children struct {
	sync.Mutex
	set     map[*child]struct{}
	stopped bool // set once shutdown began: no new children
}

// startChild starts argv with stdout and stderr going to logPath.
func startChild(name, logPath string, argv ...string) (*child, error) {
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
	c := &child{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	if children.set == nil {
		children.set = make(map[*child]struct{})
	}
	children.set[c] = struct{}{}
	return c, nil
}

// pid is the process id; with taskset or prlimit in front it is the pid of the
// program they exec.
func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// exitError describes how the child ended, with the tail of its log.
func (c *child) exitError() error {
	<-c.done
	msg := "exited"
	if c.err != nil {
		msg = c.err.Error()
	}
	if tail := c.logTail(5); tail != "" {
		msg += ": " + tail
	}
	return fmt.Errorf("%s %s", c.name, msg)
}

// logTail returns the last n non-empty lines of the child's log, joined by " | ".
func (c *child) logTail(n int) string {
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
func (c *child) stop() {
	_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		fmt.Fprintf(os.Stderr, "warning: %s (pid %d) did not exit after SIGKILL\n", c.name, c.pid())
	}
	children.Lock()
	delete(children.set, c)
	children.Unlock()
}

// stopping reports whether shutdown (Ctrl-C) began.
func stopping() bool {
	children.Lock()
	defer children.Unlock()
	return children.stopped
}

// killAll stops every child still running; no child can be started afterwards.
func killAll() {
	children.Lock()
	children.stopped = true
	list := make([]*child, 0, len(children.set))
	for c := range children.set {
		list = append(list, c)
	}
	children.Unlock()
	for _, c := range list {
		c.stop()
	}
}

// runChild runs argv to completion as a registered child (so Ctrl-C kills it)
// and returns its combined output.
func runChild(name, logPath string, argv ...string) (string, error) {
	c, err := startChild(name, logPath, argv...)
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
func (c *child) waitLog(what string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		b, _ := os.ReadFile(c.log)
		if strings.Contains(string(b), what) {
			return nil
		}
		if c.exited() {
			return c.exitError()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not log %q within %v (log: %s)", c.name, what, d, c.logTail(5))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
