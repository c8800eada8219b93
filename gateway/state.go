package gateway

import "fmt"

// State is where a shard is in its life.
type State int32

// Shard states. A shard moves Idle → WaitingIdentify (for a new session)
// → Connecting → Identifying or Resuming → Ready, and from a connection's
// states to Reconnecting (then WaitingIdentify or Connecting again),
// Stopped (asked to stop) or Failed (a fatal close: no retry). Every
// change goes through one function that refuses (and logs as a bug) a
// change that allowedTransition does not list.
const (
	// Idle: made, not yet run.
	Idle State = iota
	// WaitingIdentify: waiting for an identify slot (IdentifyLimiter),
	// before connecting.
	WaitingIdentify
	// Connecting: dialling, waiting for Hello.
	Connecting
	// Identifying: Identify sent, waiting for READY.
	Identifying
	// Resuming: Resume sent, waiting for RESUMED.
	Resuming
	// Ready: READY or RESUMED received.
	Ready
	// Reconnecting: the connection ended; waiting before the next one.
	Reconnecting
	// Stopped: asked to stop; the session stays resumable.
	Stopped
	// Failed: closed with a fatal code; not reconnecting.
	Failed

	numStates
)

var stateNames = [...]string{"idle", "waiting_identify", "connecting", "identifying", "resuming", "ready", "reconnecting", "stopped", "failed"}

// String names the state.
func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return "unknown"
	}
	return stateNames[s]
}

// MarshalText writes the state's name.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state's name.
func (s *State) UnmarshalText(b []byte) error {
	for i, name := range stateNames {
		if name == string(b) {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("unknown shard state %q", b)
}

// stateSet is a set of states, one bit each.
type stateSet uint16

func states(list ...State) stateSet {
	var set stateSet
	for _, s := range list {
		set |= 1 << s
	}
	return set
}

func (set stateSet) has(s State) bool { return s >= 0 && s < numStates && set&(1<<s) != 0 }

// allowedTransition reports whether a shard may go from one state to
// another: the table of the shard's state machine. Stopped and Failed are
// final. Staying in a state is not a transition (and always allowed).
func allowedTransition(from, to State) bool {
	table := [numStates]stateSet{
		Idle:            states(WaitingIdentify, Connecting, Stopped, Failed),
		WaitingIdentify: states(Connecting, Reconnecting, Stopped, Failed),
		Connecting:      states(Identifying, Resuming, Reconnecting, Stopped, Failed),
		Identifying:     states(Ready, Reconnecting, Stopped, Failed),
		Resuming:        states(Ready, Reconnecting, Stopped, Failed),
		Ready:           states(Reconnecting, Stopped, Failed),
		Reconnecting:    states(WaitingIdentify, Connecting, Stopped, Failed),
	}
	if from < 0 || from >= numStates {
		return false
	}
	return table[from].has(to)
}
