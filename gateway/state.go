package gateway

import "fmt"

// State is where a shard is in its life.
type State int32

// Shard states. A shard moves Idle → Connecting → Identifying or Resuming →
// Ready, and from any state to Reconnecting (then Connecting again),
// Stopped (asked to stop) or Failed (a fatal close: no retry).
const (
	Idle State = iota
	Connecting
	Identifying
	Resuming
	Ready
	Reconnecting
	Stopped
	Failed
)

var stateNames = [...]string{"idle", "connecting", "identifying", "resuming", "ready", "reconnecting", "stopped", "failed"}

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
