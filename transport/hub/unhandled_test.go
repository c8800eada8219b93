package hub

import (
	"context"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// TestUnhandledCounts: a client counts, per event, the publishes the hub
// answered "unhandled", and not those a group consumed; another client
// reads them from the hub (the publisher's announcement).
func TestUnhandledCounts(t *testing.T) {
	t.Parallel()
	_, addr := startHub(t)
	url := "tcp://" + addr
	con := openClient(t, url, core.Options{Identity: core.Identity{Group: "c", Client: "1"}})
	brokertest.StartConsume(t, con, []string{"HANDLED"}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) })
	pub := openClient(t, url, core.Options{Identity: core.Identity{Group: "p", Client: "1"}})
	ctx := brokertest.Context(t)
	for range 2 {
		for _, ev := range []string{"LONELY", "HANDLED"} {
			if _, err := pub.Publish(ctx, ev, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	for deadline := time.Now().Add(brokertest.Wait); ; time.Sleep(20 * time.Millisecond) {
		got := pub.UnhandledCounts()
		if got["LONELY"] == 2 && len(got) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("UnhandledCounts %v, want LONELY: 2", got)
		}
	}
	brokertest.WaitUnhandledReport(t, ctx, con, "LONELY", "HANDLED", 2, "p/1")
}
