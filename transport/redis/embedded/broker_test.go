package embedded_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/embedded"
)

// TestEmbeddedBrokerCloseInterruptsRead: a broker whose consumer is
// blocked in XREADGROUP (BLOCK 2 s by default) closes without waiting out
// the BLOCK, as on Redis.
func TestEmbeddedBrokerCloseInterruptsRead(t *testing.T) {
	t.Parallel()
	e, err := embedded.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	b, err := redis.Open(ctx, redis.Config{URL: e.URL(), Options: core.Options{
		Identity:       core.Identity{Group: "g", Client: "c"},
		MessageTimeout: 300 * time.Millisecond,
		CallTimeout:    5 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	h := func(ctx context.Context, m *core.Message) {
		if err := m.Ack(ctx); err != nil {
			t.Errorf("ack %s: %v", m.ID, err)
		}
	}
	if err := b.Consume(context.Background(), []string{"ev"}, h); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.BlockedClients() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("not within 5s: the consumer blocks in XREADGROUP")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= time.Second {
		t.Errorf("Close took %s with a read blocked for %s: it waited for BLOCK", d, redis.DefaultBlock)
	}
}
