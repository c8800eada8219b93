package gateway

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway/simulator"
)

// stallingBroker publishes like its Broker until stalled; stalled, a
// publish waits for its context and fails without publishing anything.
type stallingBroker struct {
	core.Broker
	stalled atomic.Bool
}

func (s *stallingBroker) PublishBatch(ctx context.Context, msgs []core.Outgoing) ([]string, error) {
	if s.stalled.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return core.PublishAll(ctx, s.Broker, msgs)
}

// TestManagerStalledBrokerSavesConfirmedSeq: stopping while the broker is
// stalled ends after the drain timeout with an error that says how many
// dispatches are left, and the saved session is at the last dispatch the
// broker confirmed, not the last one received: the next manager resumes
// there, and the stream ends up with every dispatch once, in order.
func TestManagerStalledBrokerSavesConfirmedSeq(t *testing.T) {
	env := newManagerEnv(t, 1, func(c *simulator.Config) {
		c.TrafficRate = 300
		c.TrafficEvents = []string{"MESSAGE_CREATE"}
	})
	broker := &stallingBroker{Broker: env.broker}
	store := &MemoryStore{}
	m1, err := NewManager(ManagerConfig{
		Token: env.sim.Token(), Intents: 1<<0 | 1<<9, APIBase: env.sim.URL() + "/api/v10",
		Broker: broker, Store: store, Events: []string{"MESSAGE_CREATE"}, DrainTimeout: 200 * time.Millisecond,
		Identify: NewLocalIdentifyLimiter(1, 20*time.Millisecond, -1, 0), Logger: testLogger(t),
		Tune: func(c *ShardConfig) {
			c.MinBackoff, c.MaxBackoff, c.SessionFlush = 10*time.Millisecond, 200*time.Millisecond, 50*time.Millisecond
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m1.Run(ctx) }()
	waitFor(t, "50 dispatches published", func() bool {
		return env.raw.XLen(context.Background(), "MESSAGE_CREATE").Val() >= 50
	})
	broker.stalled.Store(true)
	waitFor(t, "100 dispatches waiting for the broker", func() bool { return m1.QueueLength() >= 100 })
	cancel()
	var runErr error
	select {
	case runErr = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return: the drain is not bounded")
	}
	if !errors.Is(runErr, ErrNotDrained) {
		t.Fatalf("Run returned %v, want ErrNotDrained", runErr)
	}
	t.Logf("Run: %v", runErr)
	saved, _ := store.Load(context.Background(), 0)
	received := m1.Shards()[0].Seq
	published := env.raw.XLen(context.Background(), "MESSAGE_CREATE").Val()
	events, err := env.sim.Events(saved.ID)
	if err != nil {
		t.Fatal(err)
	}
	var upToSaved int64
	for _, e := range events {
		if e.T == "MESSAGE_CREATE" && e.Seq <= saved.Seq {
			upToSaved++
		}
	}
	if upToSaved != published || saved.Seq >= received {
		t.Fatalf("saved seq %d (%d messages up to it), received %d, the stream holds %d: the saved seq must be the last published", saved.Seq, upToSaved, received, published)
	}

	broker.stalled.Store(false)
	m2, stop := env.run(t, func(c *ManagerConfig) {
		c.Broker, c.Store, c.Events = broker, store, []string{"MESSAGE_CREATE"}
	})
	if id := m2.Shards()[0].SessionID; id != saved.ID {
		t.Fatalf("the second manager is on session %s, want the saved %s resumed", id, saved.ID)
	}
	env.sim.SetTrafficRate(0)
	n := checkStreamExact(t, env, m2, stop)
	t.Logf("%d dispatches, %d published by the first manager, the rest by the second from the saved seq on; none lost or duplicated", n, published)
}
