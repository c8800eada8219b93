package redis

import (
	"context"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// TestNewGroupsAtEnd: a group created under core.WithNewGroupsAtEnd gets
// only what is published after it exists; one created without it gets the
// history; an existing group keeps its position either way.
func TestNewGroupsAtEnd(t *testing.T) {
	url, _, _, ev := testStream(t)
	pub := openBroker(t, url, Config{Options: core.Options{Logger: testLogger(t)}})
	if _, err := pub.Publish(ctxT(t), ev, "old"); err != nil {
		t.Fatal(err)
	}
	consume := func(ctx context.Context, group string) chan string {
		got := make(chan string, 16)
		// Concurrency 1: messages are handled one at a time, in stream order.
		b := openBroker(t, url, Config{Options: core.Options{Identity: core.Identity{Group: group, Client: "c"}, Concurrency: 1, Logger: testLogger(t)}})
		cctx, cancel := context.WithCancel(ctx)
		t.Cleanup(cancel)
		if err := b.Consume(cctx, []string{ev}, func(ctx context.Context, m *core.Message) {
			var s string
			_ = m.Decode(&s)
			_ = m.Ack(ctx)
			got <- s
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	atEnd := consume(core.WithNewGroupsAtEnd(context.Background()), unique("end"))
	history := consume(context.Background(), unique("start"))
	if _, err := pub.Publish(ctxT(t), ev, "new"); err != nil {
		t.Fatal(err)
	}
	recv := func(ch chan string) string {
		select {
		case s := <-ch:
			return s
		case <-time.After(10 * time.Second):
			t.Fatal("nothing delivered")
			return ""
		}
	}
	if s := recv(atEnd); s != "new" {
		t.Errorf("group made at the end got %q first, want new", s)
	}
	if a, b := recv(history), recv(history); a != "old" || b != "new" {
		t.Errorf("group made at 0 got %q, %q", a, b)
	}
}
