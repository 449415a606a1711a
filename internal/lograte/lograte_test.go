package lograte

import (
	"fmt"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := New(time.Second)
	t0 := time.Unix(1000, 0)
	now := t0
	l.now = func() time.Time { return now }
	var lines []string
	logf := func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) }

	l.Logf(logf, "accept: %s", "EMFILE") // first: through
	now = t0.Add(300 * time.Millisecond)
	l.Logf(logf, "accept: %s", "EMFILE") // suppressed
	l.Logf(logf, "accept: %s", "EMFILE") // suppressed
	now = t0.Add(time.Second)
	l.Logf(logf, "accept: %s", "ENFILE") // through, reports 2
	now = t0.Add(2500 * time.Millisecond)
	l.Logf(logf, "accept: %s", "EMFILE") // through, none suppressed

	want := []string{
		"accept: EMFILE",
		"accept: ENFILE (2 similar suppressed)",
		"accept: EMFILE",
	}
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Fatalf("lines = %q, want %q", lines, want)
	}
}
