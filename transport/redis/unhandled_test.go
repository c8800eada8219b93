package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// TestUnhandledCounted: entries published to a stream no group reads are
// counted (UnhandledCounts) at the next check, reported once as a
// core.EventUnhandled entry that another broker reads (UnhandledReports,
// and its consumers of the event), and carried in the publisher's
// presence announcement; entries of a consumed event, of dead letters
// and of presence events are not.
func TestUnhandledCounted(t *testing.T) {
	t.Parallel()
	url, real, raw, handled := testStream(t)
	lonely := testEvent(t, raw)
	ctx := ctxT(t)

	// The other process: it consumes handled, and the unhandled reports.
	o := opts(t, unique("reader"), "r")
	o.Announce.Disabled = true
	other := openBroker(t, url, Config{Options: o, Block: blockFor(real)})
	brokertest.StartConsume(t, other, []string{handled}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) })
	reports := make(chan core.PresenceEvent, 16)
	brokertest.StartConsume(t, other, []string{core.EventUnhandled}, func(ctx context.Context, m *core.Message) {
		var pe core.PresenceEvent
		if err := m.Decode(&pe); err != nil {
			t.Error(err)
		}
		_ = m.Ack(ctx)
		if pe.Unhandled == lonely || pe.Unhandled == handled {
			reports <- pe
		}
	})

	po := opts(t, unique("pub"), "p")
	po.Announce.Heartbeat = 100 * time.Millisecond
	pub := openBroker(t, url, Config{Options: po, Block: blockFor(real), UnhandledInterval: 200 * time.Millisecond})
	// It consumes something, so that it announces itself.
	mine := testEvent(t, raw)
	brokertest.StartConsume(t, pub, []string{mine}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) })
	for range 3 {
		if _, err := pub.Publish(ctx, lonely, "nobody reads this"); err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Publish(ctx, handled, "read"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pub.PublishBatch(ctx, []core.Outgoing{{Event: lonely, Data: 1}, {Event: lonely, Data: 2},
		{Event: core.DeadLetterEvent(lonely), Data: 3}}); err != nil {
		t.Fatal(err)
	}

	select {
	case pe := <-reports:
		if pe.Unhandled != lonely || pe.Count != 5 || pe.Total != 5 || pe.Instance.Group != po.Identity.Group ||
			pe.Instance.Client != "p" || pe.Instance.Session == "" {
			t.Fatalf("report %+v, want %s counted 5 by %s/p", pe, lonely, po.Identity.Group)
		}
	case <-time.After(brokertest.Wait):
		t.Fatal("no core.EventUnhandled")
	}
	if got := pub.UnhandledCounts(); got[lonely] != 5 || got[handled] != 0 || got[core.DeadLetterEvent(lonely)] != 0 {
		t.Errorf("UnhandledCounts %v, want %s: 5 only", got, lonely)
	}
	// Reported once per interval, and only when it grew.
	select {
	case pe := <-reports:
		t.Fatalf("reported again without new publishes: %+v", pe)
	case <-time.After(600 * time.Millisecond):
	}

	// The other broker reads the report, and the announcement.
	brokertest.WaitUnhandledReport(t, ctx, other, lonely, handled, 5, po.Identity.Group+"/p")
	for deadline := time.Now().Add(brokertest.Wait); ; time.Sleep(100 * time.Millisecond) {
		list, err := other.Instances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := uint64(0)
		for _, in := range list {
			if in.Group == po.Identity.Group {
				n = in.Unhandled[lonely]
			}
		}
		if n == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the publisher's announcement counts %d unhandled, want 5", n)
		}
	}

	// More publishes: one more report, with the new count.
	if _, err := pub.Publish(ctx, lonely, "again"); err != nil {
		t.Fatal(err)
	}
	select {
	case pe := <-reports:
		if pe.Count != 1 || pe.Total != 6 {
			t.Fatalf("second report %+v, want count 1, total 6", pe)
		}
	case <-time.After(brokertest.Wait):
		t.Fatal("no second core.EventUnhandled")
	}
}

// TestUnhandledAtClose: what a short-lived publisher published since its
// last check is checked when it closes; a call nobody reads is not counted
// (it fails with core.ErrUnhandled).
func TestUnhandledAtClose(t *testing.T) {
	t.Parallel()
	url, real, raw, lonely := testStream(t)
	unread := testEvent(t, raw)
	ctx := ctxT(t)
	pub := openBroker(t, url, Config{Options: opts(t, unique("pub"), "p"), Block: blockFor(real)})
	if _, err := pub.Publish(ctx, lonely, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Call(ctx, unread, "x"); !errors.Is(err, core.ErrUnhandled) {
		t.Fatalf("call: %v, want core.ErrUnhandled", err)
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	if got := pub.UnhandledCounts(); got[lonely] != 1 || len(got) != 1 {
		t.Fatalf("UnhandledCounts after Close %v, want %s: 1 only", got, lonely)
	}
}
