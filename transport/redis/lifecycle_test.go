package redis

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// TestCloseLeavesNoGoroutines: after Close nothing of the broker runs
// (consumers, reclaimers, flushers, the reply subscription), a pending call
// ends with ErrClosed, and a client the caller owns stays open. Not
// parallel, so that goleak sees only this test's goroutines.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	// Registered first, so that it runs after every other cleanup.
	brokertest.NoLeaks(t)
	url, real := serverURL(t)
	raw := rawClient(t, url)
	ev, silent := testEvent(t, raw), testEvent(t, raw)

	o, err := goredis.ParseURL(normalizeURL(url))
	if err != nil {
		t.Fatal(err)
	}
	client := goredis.NewClient(o)
	defer client.Close()
	b, err := NewWithClient(client, Config{Options: opts(t, unique("g"), "c"), Block: blockFor(real)})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.CheckClose(t, b, ev, silent, nil)
	if err := client.Ping(ctxT(t)).Err(); err != nil {
		t.Errorf("the caller's client was closed: %v", err)
	}
}

// normalizeURL gives url a scheme, for goredis.ParseURL.
func normalizeURL(url string) string {
	if len(url) > 8 && (url[:8] == "redis://" || url[:9] == "rediss://") {
		return url
	}
	return "redis://" + url
}

// TestConsumeStopsWithItsContext: once Consume's context is cancelled, no
// more messages are read, and the group's next client gets them.
func TestConsumeStopsWithItsContext(t *testing.T) {
	t.Parallel()
	url, real, _, ev := testStream(t)
	group := unique("g")
	b := openBroker(t, url, Config{Options: opts(t, group, "a"), Block: blockFor(real)})
	ctx, cancel := context.WithCancel(context.Background())
	var got atomic.Int32
	if err := b.Consume(ctx, []string{ev}, func(ctx context.Context, m *core.Message) {
		got.Add(1)
		_ = m.Ack(ctx)
	}); err != nil {
		t.Fatal(err)
	}
	cancel()
	time.Sleep(300 * time.Millisecond) // the reader notices (not a timing assertion)
	id, err := b.Publish(ctxT(t), ev, 1)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := got.Load(); n != 0 {
		t.Fatalf("a stopped consumer handled %d messages", n)
	}
	b2 := openBroker(t, url, Config{Options: opts(t, group, "b"), Block: blockFor(real)})
	h, ch := collect(t, true)
	startConsume(t, b2, []string{ev}, h)
	if m := next(t, ch); m.ID != id {
		t.Fatalf("got %s, want %s", m.ID, id)
	}
}

// TestConsumeRejectsBadArguments: identity, events and handler are checked
// before anything starts.
func TestConsumeRejectsBadArguments(t *testing.T) {
	t.Parallel()
	url, _ := serverURL(t)
	h := func(context.Context, *core.Message) {}
	noID := openBroker(t, url, Config{Options: opts(t, "", "")})
	if err := noID.Consume(ctxT(t), []string{"x"}, h); !errors.Is(err, core.ErrInvalidIdentity) {
		t.Errorf("no identity: %v", err)
	}
	b := openBroker(t, url, Config{Options: opts(t, "g", "c")})
	if err := b.Consume(ctxT(t), []string{"x", ""}, h); err == nil {
		t.Error("empty event name accepted")
	}
	if err := b.Consume(ctxT(t), nil, h); err == nil {
		t.Error("no events accepted")
	}
	if err := b.Consume(ctxT(t), []string{"x"}, nil); err == nil {
		t.Error("nil handler accepted")
	}
	if _, err := b.Publish(ctxT(t), "", 1); err == nil {
		t.Error("publish to an empty event name accepted")
	}
}

// TestEmbeddedRestartKeepsData: Restart comes back at the same address
// with the data, and blocking reads work after it.
func TestEmbeddedRestartKeepsData(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t)
	if e.URL() != "redis://"+e.Addr() {
		t.Fatalf("URL %q, Addr %q", e.URL(), e.Addr())
	}
	b := openBroker(t, e.URL(), Config{Options: opts(t, unique("g"), "c"), Block: 50 * time.Millisecond})
	id, err := b.Publish(ctxT(t), "ev", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Restart(); err != nil {
		t.Fatal(err)
	}
	h, ch := collect(t, true)
	var consumeErr error
	for range 50 { // the pool's connections died with the restart
		if consumeErr = b.Consume(context.Background(), []string{"ev"}, h); consumeErr == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if consumeErr != nil {
		t.Fatal(consumeErr)
	}
	if m := next(t, ch); m.ID != id {
		t.Fatalf("got %s, want %s", m.ID, id)
	}
	id2, err := b.Publish(ctxT(t), "ev", 2)
	if err != nil {
		t.Fatal(err)
	}
	if m := next(t, ch); m.ID != id2 {
		t.Fatalf("got %s, want %s", m.ID, id2)
	}
}
