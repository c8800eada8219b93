package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
)

// twoPublishedOneAtATime publishes two messages to a new event, then opens
// a consumer broker of a new group with Concurrency 1 and a BLOCK of an
// hour: an Ack that waited for a blocking read to end would hang the test.
// The consumer reads both messages at once (room for 2×1), so the first
// Ack is made while its reader waits for room, not blocking: it is queued
// on the reader.
func twoPublishedOneAtATime(t *testing.T) (pub, b *Broker, raw goredis.UniversalClient, ev, group string) {
	t.Helper()
	url, _, raw, ev := testStream(t)
	pub = openBroker(t, url, Config{Options: core.Options{Logger: testLogger(t)}})
	for i := range 2 {
		if _, err := pub.Publish(ctxT(t), ev, i); err != nil {
			t.Fatal(err)
		}
	}
	group = unique("g")
	b = openBroker(t, url, Config{Block: time.Hour, Options: core.Options{
		Identity: core.Identity{Group: group, Client: "c"}, Concurrency: 1, Logger: testLogger(t),
	}})
	return pub, b, raw, ev, group
}

// An Ack made while the reader is not blocking rides on its next read; one
// made while it blocks goes through the batcher at once; both are
// confirmed when Ack returns, and nothing stays pending.
func TestAcksRideOnReadsAndNeverWaitForABlockingRead(t *testing.T) {
	t.Parallel()
	pub, b, raw, ev, group := twoPublishedOneAtATime(t)
	got := make(chan string, 4)
	errs := make(chan error, 4)
	if err := b.Consume(ctxT(t), []string{ev}, func(ctx context.Context, m *core.Message) {
		errs <- m.Ack(ctx)
		got <- m.ID
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("ack: %v", err)
		}
		<-got
	}
	// Now the reader blocks for an hour on an empty stream. A third
	// message arrives in that read; its Ack is made while the reader
	// blocks again, and must not wait for it.
	if _, err := pub.Publish(ctxT(t), ev, 2); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("ack during a blocking read: %v", err)
	}
	<-got
	pending, err := raw.XPending(ctxT(t), ev, group).Result()
	if err != nil {
		t.Fatal(err)
	}
	if pending.Count != 0 {
		t.Errorf("%d messages still pending after their Acks returned", pending.Count)
	}
}

// An Ack whose context has ended fails with the context's error and leaves
// the message pending; a later Ack settles it.
func TestAckWithEndedContextLeavesTheMessagePending(t *testing.T) {
	t.Parallel()
	_, b, raw, ev, group := twoPublishedOneAtATime(t)
	type result struct {
		id           string
		early, later error
		pendingAfter int64
	}
	results := make(chan result, 2)
	if err := b.Consume(ctxT(t), []string{ev}, func(ctx context.Context, m *core.Message) {
		ended, cancel := context.WithCancel(ctx)
		cancel()
		r := result{id: m.ID, early: m.Ack(ended)}
		if p, err := raw.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: ev, Group: group, Start: m.ID, End: m.ID, Count: 1}).Result(); err == nil {
			r.pendingAfter = int64(len(p))
		}
		r.later = m.Ack(ctx)
		results <- r
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r := <-results
		if !errors.Is(r.early, context.Canceled) {
			t.Errorf("%s: Ack with an ended context: %v, want context.Canceled", r.id, r.early)
		}
		if r.pendingAfter != 1 {
			t.Errorf("%s: %d pending entries after the failed Ack, want 1", r.id, r.pendingAfter)
		}
		if r.later != nil {
			t.Errorf("%s: second Ack: %v", r.id, r.later)
		}
	}
	pending, err := raw.XPending(ctxT(t), ev, group).Result()
	if err != nil {
		t.Fatal(err)
	}
	if pending.Count != 0 {
		t.Errorf("%d messages pending at the end", pending.Count)
	}
}

// A handler that acks after its consumer stopped (the reader is gone) is
// still confirmed.
func TestAckAfterTheReaderStopped(t *testing.T) {
	t.Parallel()
	url, _, raw, ev := testStream(t)
	pub := openBroker(t, url, Config{Options: core.Options{Logger: testLogger(t)}})
	if _, err := pub.Publish(ctxT(t), ev, 1); err != nil {
		t.Fatal(err)
	}
	group := unique("g")
	b := openBroker(t, url, Config{Options: core.Options{
		Identity: core.Identity{Group: group, Client: "c"}, Concurrency: 1, Logger: testLogger(t),
	}})
	ctx, stop := context.WithCancel(ctxT(t))
	started, acked := make(chan struct{}), make(chan error, 1)
	if err := b.Consume(ctx, []string{ev}, func(hctx context.Context, m *core.Message) {
		close(started)
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // let the reader finish stopping
		acked <- m.Ack(hctx)
	}); err != nil {
		t.Fatal(err)
	}
	<-started
	stop()
	if err := <-acked; err != nil {
		t.Fatalf("ack after stop: %v", err)
	}
	pending, err := raw.XPending(ctxT(t), ev, group).Result()
	if err != nil {
		t.Fatal(err)
	}
	if pending.Count != 0 {
		t.Errorf("%d messages pending after the Ack returned", pending.Count)
	}
}
