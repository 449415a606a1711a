package health

import "testing"

func TestStateObserve(t *testing.T) {
	// Each case feeds results ('+' success, '-' failure) and expects the
	// state after each one ('U' up, 'D' down).
	tests := []struct {
		name       string
		up         bool
		rise, fall int
		results    string
		want       string
	}{
		{"up stays up", true, 2, 3, "++++", "UUUU"},
		{"down stays down", false, 2, 3, "----", "DDDD"},
		{"fall 3", true, 2, 3, "---", "UUD"},
		{"fall 1", true, 2, 1, "-", "D"},
		{"rise 2", false, 2, 3, "++", "DU"},
		{"rise 1", false, 1, 3, "+", "U"},
		{"down then up", true, 2, 2, "--++", "UDDU"},
		{"failures interrupted", true, 2, 3, "--+--+--", "UUUUUUUU"},
		{"successes interrupted", false, 3, 2, "++-++-++", "DDDDDDDD"},
		{"flapping from up", true, 2, 2, "-+-+-+-+-+", "UUUUUUUUUU"},
		{"flapping from down", false, 2, 2, "+-+-+-+-+-", "DDDDDDDDDD"},
		{"flapping then settles", true, 2, 2, "-+-+--", "UUUUUD"},
		{"zero counts as 1", true, 0, 0, "-+", "DU"},
		{"negative counts as 1", false, -1, -5, "+-", "UD"},
		{"run restarts after transition", true, 2, 2, "---+", "UDDD"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := State{Up: tc.up}
			got := make([]byte, 0, len(tc.results))
			transitions := 0
			for _, r := range []byte(tc.results) {
				was := s.Up
				changed := s.Observe(r == '+', tc.rise, tc.fall)
				if changed != (s.Up != was) {
					t.Fatalf("changed %v but Up %v -> %v", changed, was, s.Up)
				}
				if changed {
					transitions++
					if s.Run != 0 {
						t.Fatalf("Run %d after a transition", s.Run)
					}
				}
				if s.Up {
					got = append(got, 'U')
				} else {
					got = append(got, 'D')
				}
			}
			if string(got) != tc.want {
				t.Errorf("results %s: states %s, want %s", tc.results, got, tc.want)
			}
		})
	}
}

func TestStateRun(t *testing.T) {
	s := State{Up: true}
	for i := 1; i < 5; i++ {
		s.Observe(false, 2, 5)
		if s.Run != i || !s.Up {
			t.Fatalf("after %d failures: %+v", i, s)
		}
	}
	s.Observe(true, 2, 5)
	if s.Run != 0 || !s.Up {
		t.Fatalf("after a success: %+v", s)
	}
}
