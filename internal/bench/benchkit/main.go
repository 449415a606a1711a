package benchkit

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Main runs a benchmark program: run, then cleanup, also when a signal
// interrupts it (children are stopped, cleanup runs, exit 130). A run error
// is printed with the program's name and exits 1.
func Main(name string, run func() error, cleanup func()) {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigc
		fmt.Fprintf(os.Stderr, "\n%v: stopping all child processes and cleaning up\n", s)
		cleanup()
		os.Exit(130)
	}()
	err := run()
	if Stopping() {
		select {} // interrupted: the signal handler cleans up and exits
	}
	cleanup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

var removeOnce sync.Once

// RemoveTemp removes a benchmark's scratch directory once (cleanup may run
// from the signal handler and from Main), or says where it was kept.
func RemoveTemp(dir string, keep bool) {
	removeOnce.Do(func() {
		switch {
		case dir == "":
		case keep:
			fmt.Fprintf(os.Stderr, "kept %s\n", dir)
		default:
			os.RemoveAll(dir)
		}
	})
}

// Logf prints a timestamped progress line to stderr, unless the program is
// shutting down.
func Logf(format string, args ...any) {
	if Stopping() {
		return
	}
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
