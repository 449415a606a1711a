package health

// State is one backend's health: a pure state machine fed with check
// results. The zero State is down; set Up for a backend that starts up.
type State struct {
	Up bool
	// Run counts the consecutive results against the current state:
	// failures while up, successes while down.
	Run int
}

// Observe records one check result. An up backend goes down after fall
// consecutive failures, a down one comes up after rise consecutive
// successes; a result that agrees with the state resets Run, so flapping
// results never add up. It reports whether the state changed. rise and
// fall below 1 count as 1.
func (s *State) Observe(ok bool, rise, fall int) (changed bool) {
	if ok == s.Up {
		s.Run = 0
		return false
	}
	need := max(fall, 1)
	if !s.Up {
		need = max(rise, 1)
	}
	s.Run++
	if s.Run < need {
		return false
	}
	s.Up, s.Run = ok, 0
	return true
}
