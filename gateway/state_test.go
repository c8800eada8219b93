package gateway

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

// transitionLog records the shard state changes a shard logs, and the
// records logged as bugs.
type transitionLog struct {
	mu    sync.Mutex
	steps []string
	bugs  []string
}

func (h *transitionLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *transitionLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *transitionLog) WithGroup(string) slog.Handler            { return h }

func (h *transitionLog) Handle(_ context.Context, r slog.Record) error {
	var from, to string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "from":
			from = a.Value.String()
		case "to":
			to = a.Value.String()
		}
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case r.Level >= slog.LevelError && len(r.Message) >= 4 && r.Message[:4] == "bug:":
		h.bugs = append(h.bugs, from+"→"+to)
	case r.Message == "shard state":
		if len(h.steps) == 0 {
			h.steps = append(h.steps, from)
		}
		h.steps = append(h.steps, to)
	}
	return nil
}

func (h *transitionLog) snapshot() (steps, bugs []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.steps), slices.Clone(h.bugs)
}

func newStateShard(t *testing.T, from State, log slog.Handler) *Shard {
	t.Helper()
	s, err := NewShard(ShardConfig{ID: 0, Count: 1, Token: "t", URL: "ws://127.0.0.1:1", Logger: slog.New(log)})
	if err != nil {
		t.Fatal(err)
	}
	s.state = from
	if from == Ready {
		close(s.ready)
	}
	return s
}

func TestShardStateTransitionsFollowTheTable(t *testing.T) {
	allowed := 0
	for from := Idle; from < numStates; from++ {
		for to := Idle; to < numStates; to++ {
			if from == to {
				continue
			}
			log := &transitionLog{}
			s := newStateShard(t, from, log)
			ok := s.setState(to)
			_, bugs := log.snapshot()
			if allowedTransition(from, to) {
				allowed++
				if !ok || s.state != to || len(bugs) != 0 {
					t.Errorf("%s → %s: allowed, but setState = %v, state %s, bugs %v", from, to, ok, s.state, bugs)
				}
				if isClosed(s.ready) != (to == Ready) {
					t.Errorf("%s → %s: ready channel closed = %v", from, to, isClosed(s.ready))
				}
				continue
			}
			if ok || s.state != from {
				t.Errorf("%s → %s: not allowed, but setState = %v and the state is %s", from, to, ok, s.state)
			}
			if want := []string{from.String() + "→" + to.String()}; !slices.Equal(bugs, want) {
				t.Errorf("%s → %s: logged bugs %v, want %v", from, to, bugs, want)
			}
			if isClosed(s.ready) != (from == Ready) {
				t.Errorf("%s → %s (refused): ready channel closed = %v", from, to, isClosed(s.ready))
			}
		}
	}
	if allowed == 0 {
		t.Fatal("the table allows no transition")
	}
	for _, final := range []State{Stopped, Failed} {
		for to := Idle; to < numStates; to++ {
			if to != final && allowedTransition(final, to) {
				t.Errorf("%s is final, but %s → %s is allowed", final, final, to)
			}
		}
	}
}

func TestStateNamesRoundTrip(t *testing.T) {
	for st := Idle; st < numStates; st++ {
		b, _ := st.MarshalText()
		var back State
		if err := back.UnmarshalText(b); err != nil || back != st {
			t.Errorf("%d: %q → %v, %v", st, b, back, err)
		}
	}
	if WaitingIdentify.String() != "waiting_identify" || Identifying.String() != "identifying" {
		t.Errorf("names %q %q", WaitingIdentify, Identifying)
	}
}

// gateLimiter holds every identify until released.
type gateLimiter struct{ open chan struct{} }

func (g gateLimiter) Wait(ctx context.Context, _ int) error {
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestShardWaitsForAnIdentifySlotInItsOwnState(t *testing.T) {
	sim := startSim(t, nil)
	gate := gateLimiter{open: make(chan struct{})}
	log := &transitionLog{}
	r := runShard(t, sim, func(c *ShardConfig) { c.Identify = gate; c.Logger = slog.New(log) })
	waitState(t, r.shard, WaitingIdentify)
	// Waiting for the slot, the shard has neither connected nor identified.
	time.Sleep(50 * time.Millisecond)
	if st := r.shard.Status().State; st != WaitingIdentify {
		t.Fatalf("state %s while the identify slot is held", st)
	}
	if n := len(sim.Snapshot().Identifies); n != 0 {
		t.Fatalf("%d identifies before the slot was given", n)
	}
	close(gate.open)
	waitState(t, r.shard, Ready)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	steps, bugs := log.snapshot()
	want := []string{"idle", "waiting_identify", "connecting", "identifying", "ready", "stopped"}
	if !slices.Equal(steps, want) || len(bugs) != 0 {
		t.Errorf("states %v (bugs %v), want %v", steps, bugs, want)
	}
}
