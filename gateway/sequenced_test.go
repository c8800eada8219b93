package gateway

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway/simulator"
)

// TestDispatchQueueSequencesNewSeqsOnly: a dispatch goes to the broker's
// mark check only when its seq is newer than the one its shard offered
// before in the same session; one that repeats the seq (a dispatch
// without "s") is published unconditionally, not skipped as published.
func TestDispatchQueueSequencesNewSeqsOnly(t *testing.T) {
	var mu sync.Mutex
	var got []string
	publish := func(_ context.Context, batch []pending) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range batch {
			got = append(got, fmt.Sprintf("%d/%s/%d/%v", p.Shard, p.Session, p.Seq, p.Sequenced))
		}
		return len(batch), nil
	}
	skip := func(d Dispatch) bool { return d.Event == "TYPING_START" }
	q := newDispatchQueue(16, skip, publish, testLogger(t), nil)
	go q.run()
	for _, d := range []Dispatch{
		{Shard: 0, Session: "a", Seq: 1, Event: "READY"},
		{Shard: 1, Session: "b", Seq: 1, Event: "READY"},
		{Shard: 0, Session: "a", Seq: 2, Event: "MESSAGE_CREATE"},
		{Shard: 0, Session: "a", Seq: 2, Event: "MESSAGE_CREATE"}, // no "s"
		{Shard: 0, Session: "a", Seq: 3, Event: "TYPING_START"},   // filtered out
		{Shard: 0, Session: "a", Seq: 3, Event: "MESSAGE_CREATE"}, // no "s" after it
		{Shard: 0, Session: "a", Seq: 4, Event: "MESSAGE_CREATE"},
		{Shard: 0, Session: "c", Seq: 1, Event: "READY"}, // a new session
		{Shard: 1, Session: "b", Seq: 2, Event: "MESSAGE_CREATE"},
	} {
		if !q.Offer(d) {
			t.Fatalf("Offer(%+v) refused", d)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if left := q.Drain(ctx); left != 0 {
		t.Fatalf("%d left", left)
	}
	want := []string{"0/a/1/true", "1/b/1/true", "0/a/2/true", "0/a/2/false", "0/a/3/false", "0/a/4/true", "0/c/1/true", "1/b/2/true"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("published %v, want %v", got, want)
	}
}

// unsupportedSequenced is a broker that implements core.SequencedPublisher
// but says it cannot, as the Redis driver does on a cluster; Publish works.
type unsupportedSequenced struct {
	core.Broker
	mu    sync.Mutex
	tries int
}

func (u *unsupportedSequenced) PublishSequenced(context.Context, []core.SequencedOutgoing) ([]string, error) {
	u.mu.Lock()
	u.tries++
	u.mu.Unlock()
	return nil, fmt.Errorf("test: %w", core.ErrUnsupported)
}

// TestManagerFallsBackWhenSequencingIsUnsupported: a broker that cannot
// publish sequenced gets every dispatch published the plain way, once it
// said so, and is not asked again.
func TestManagerFallsBackWhenSequencingIsUnsupported(t *testing.T) {
	env := newManagerEnv(t, 1, func(c *simulator.Config) {
		c.TrafficRate = 200
		c.TrafficEvents = []string{"MESSAGE_CREATE"}
	})
	broker := &unsupportedSequenced{Broker: env.broker}
	m, stop := env.run(t, func(c *ManagerConfig) { c.Broker, c.Events = broker, []string{"MESSAGE_CREATE"} })
	waitFor(t, "100 dispatches in the stream", func() bool {
		return env.raw.XLen(context.Background(), "MESSAGE_CREATE").Val() >= 100
	})
	env.sim.SetTrafficRate(0)
	n := checkStreamExact(t, env, m, stop)
	broker.mu.Lock()
	defer broker.mu.Unlock()
	if broker.tries != 1 {
		t.Errorf("PublishSequenced was tried %d times, want once", broker.tries)
	}
	t.Logf("%d dispatches published without sequencing", n)
}
