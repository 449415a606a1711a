package main

import (
	"github.com/nib-lb/nib/internal/bench/benchkit"

	"context"
	"fmt"
	"os"
	"sync"
	"testing"
)

// benchTB is the testing.TB that netnstest gets: netnstest registers the
// topology's removal with Cleanup, and those functions run (last registered
// first) when the benchmark ends, also on Ctrl-C. Fatal and Skip end the
// calling goroutine's work by panicking with fatalError, which run recovers.
//
// Only the methods netnstest calls are implemented; the embedded nil
// interface makes any other call panic, which would be a bug here.
type benchTB struct {
	testing.TB // nil: satisfies the unexported method of testing.TB

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	done     bool
}

// fatalError is the panic value of benchTB.Fatal and Skip.
type fatalError struct{ msg string }

func (f fatalError) Error() string { return f.msg }

func (t *benchTB) Helper()      {}
func (t *benchTB) Name() string { return "bench-dsr" }

func (t *benchTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *benchTB) Context() context.Context { return context.Background() }

func (t *benchTB) Log(args ...any) { benchkit.Logf("%s", fmt.Sprint(args...)) }
func (t *benchTB) Logf(format string, args ...any) {
	benchkit.Logf(format, args...)
}

func (t *benchTB) Error(args ...any) { t.Errorf("%s", fmt.Sprint(args...)) }
func (t *benchTB) Errorf(format string, args ...any) {
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
	fmt.Fprintf(os.Stderr, "error: "+format+"\n", args...)
}

func (t *benchTB) Fatal(args ...any) { t.Fatalf("%s", fmt.Sprint(args...)) }
func (t *benchTB) Fatalf(format string, args ...any) {
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
	panic(fatalError{fmt.Sprintf(format, args...)})
}
func (t *benchTB) FailNow() { t.Fatalf("FailNow") }
func (t *benchTB) Fail() {
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
}

func (t *benchTB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

func (t *benchTB) Skip(args ...any) { t.Skipf("%s", fmt.Sprint(args...)) }
func (t *benchTB) Skipf(format string, args ...any) {
	panic(fatalError{"skipped: " + fmt.Sprintf(format, args...)})
}
func (t *benchTB) SkipNow() { t.Skipf("SkipNow") }

// runCleanups runs the registered cleanups once, last first.
func (t *benchTB) runCleanups() {
	t.mu.Lock()
	if t.done {
		t.mu.Unlock()
		return
	}
	t.done = true
	list := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		func() {
			defer func() {
				if r := recover(); r != nil {
					fmt.Fprintf(os.Stderr, "cleanup: %v\n", r)
				}
			}()
			list[i]()
		}()
	}
}

// try runs f and turns a benchTB.Fatal inside it into an error.
func try(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fe, ok := r.(fatalError)
			if !ok {
				panic(r)
			}
			err = fe
		}
	}()
	f()
	return nil
}
