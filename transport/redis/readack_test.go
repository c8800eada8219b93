package redis

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
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

// Draining a backlog with many handlers, every message is acknowledged
// exactly once, whether its ack rode on the reader's connection (with a
// read) or went through the broker's pool while the reader blocked: a
// proxy records every command the consumer sent.
func TestEveryAckOfABacklogIsSentOnce(t *testing.T) {
	t.Parallel()
	url, _, raw, ev := testStream(t)
	const total, concurrency = 1000, 50
	pub := openBroker(t, url, Config{Options: core.Options{Logger: testLogger(t)}})
	for i := 0; i < total; i += 250 {
		out := make([]core.Outgoing, 250)
		for j := range out {
			out[j] = core.Outgoing{Event: ev, Data: i + j}
		}
		if _, err := pub.PublishBatch(ctxT(t), out); err != nil {
			t.Fatal(err)
		}
	}
	log, proxied := startCommandLog(t, url)
	group := unique("g")
	b := openBroker(t, proxied, Config{ReadCount: 2 * concurrency, Options: core.Options{
		Identity: core.Identity{Group: group, Client: "c"}, Concurrency: concurrency, Logger: testLogger(t),
	}})
	acked := make(chan error, total)
	if err := b.Consume(ctxT(t), []string{ev}, func(ctx context.Context, m *core.Message) {
		acked <- m.Ack(ctx)
	}); err != nil {
		t.Fatal(err)
	}
	for range total {
		select {
		case err := <-acked:
			if err != nil {
				t.Fatalf("ack: %v", err)
			}
		case <-time.After(brokertest.Wait):
			t.Fatal("the acks stalled")
		}
	}
	waitNoPending(t, raw, ev, group)

	cmds := log.commands()
	readerConn := 0
	for _, c := range cmds {
		if c.args[0] == "XREADGROUP" {
			readerConn = c.conn
			break
		}
	}
	if readerConn == 0 {
		t.Fatal("no XREADGROUP went through the proxy")
	}
	seen := make(map[string]int)
	var reads, readerAcks, otherAcks int
	for _, c := range cmds {
		switch {
		case c.args[0] == "XREADGROUP" && c.conn == readerConn:
			reads++
		case c.args[0] == "XACK":
			for _, id := range c.args[3:] {
				seen[id]++
			}
			if c.conn == readerConn {
				readerAcks++
			} else {
				otherAcks++
			}
		}
	}
	if len(seen) != total {
		t.Errorf("%d messages acknowledged, want %d", len(seen), total)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s acknowledged %d times, want once", id, n)
		}
	}
	t.Logf("%d reads and %d XACKs on the reader's connection, %d XACKs on others, for %d messages", reads, readerAcks, otherAcks, total)
}

// A handler that runs on while the others ack does not hold their acks
// back, and the consumer goes on with the rest of the stream meanwhile.
func TestSlowHandlerDoesNotHoldBackTheOthersAcks(t *testing.T) {
	t.Parallel()
	url, _, raw, ev := testStream(t)
	const total, concurrency = 8, 4
	pub := openBroker(t, url, Config{Options: core.Options{Logger: testLogger(t)}})
	for i := range total {
		if _, err := pub.Publish(ctxT(t), ev, i); err != nil {
			t.Fatal(err)
		}
	}
	group := unique("g")
	b := openBroker(t, url, Config{ReadCount: 2 * concurrency, Options: core.Options{
		Identity: core.Identity{Group: group, Client: "c"}, Concurrency: concurrency, Logger: testLogger(t),
	}})
	release := make(chan struct{})
	acked := make(chan error, total)
	var slow sync.Once
	if err := b.Consume(ctxT(t), []string{ev}, func(ctx context.Context, m *core.Message) {
		first := false
		slow.Do(func() { first = true })
		if first {
			<-release // runs until every other message is acknowledged
		}
		acked <- m.Ack(ctx)
	}); err != nil {
		t.Fatal(err)
	}
	for i := range total - 1 {
		select {
		case err := <-acked:
			if err != nil {
				t.Fatalf("ack: %v", err)
			}
		case <-time.After(brokertest.Wait):
			close(release)
			t.Fatalf("only %d of the %d other messages were acknowledged while one handler ran on", i, total-1)
		}
	}
	close(release)
	if err := <-acked; err != nil {
		t.Fatalf("the slow handler's ack: %v", err)
	}
	waitNoPending(t, raw, ev, group)
}
