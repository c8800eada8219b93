package amqp

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// TestUnhandledCounted: messages published to an event no queue is bound
// to are returned by RabbitMQ and counted (UnhandledCounts), reported once
// as a core.EventUnhandled on the exchange, which another broker
// consumes, and carried in the publisher's announcement, which another
// broker reads (UnhandledReports); messages of a consumed event, and dead
// letters, are not counted. The management API is off.
func TestUnhandledCounted(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	adm, exchange, _ := testExchange(t, url, "spectacles-unhandled", "")
	handled, lonely, mine := unique("HANDLED"), unique("LONELY"), unique("MINE")
	var queues []string
	for _, sub := range []string{"reader", "pub"} {
		queues = append(queues, spectaclesQueues(exchange, sub, handled, mine, core.EventUnhandled)...)
	}
	t.Cleanup(func() { adm.deleteQueues(queues...) })
	ctx := ctxT(t)

	ro := opts(unique("reader"), "r")
	ro.Announce.Disabled = true
	reader := openBroker(t, Config{Options: ro, URL: url, Exchange: exchange, Subgroup: "reader", ManagementURL: ManagementOff})
	brokertest.StartConsume(t, reader, []string{handled}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) })
	reports := make(chan core.PresenceEvent, 16)
	brokertest.StartConsume(t, reader, []string{core.EventUnhandled}, func(ctx context.Context, m *core.Message) {
		var pe core.PresenceEvent
		if err := m.Decode(&pe); err != nil {
			t.Error(err)
		}
		_ = m.Ack(ctx)
		reports <- pe
	})

	po := opts(unique("pub"), "p")
	po.Announce.Heartbeat = 200 * time.Millisecond
	pub := openBroker(t, Config{Options: po, URL: url, Exchange: exchange, Subgroup: "pub", ManagementURL: ManagementOff,
		UnhandledInterval: 200 * time.Millisecond})
	brokertest.StartConsume(t, pub, []string{mine}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) })
	for range 3 {
		if _, err := pub.Publish(ctx, lonely, "nobody takes this"); err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Publish(ctx, handled, "taken"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pub.PublishBatch(ctx, []core.Outgoing{{Event: lonely, Data: 1}, {Event: lonely, Data: 2},
		{Event: core.DeadLetterEvent(lonely), Data: 3}, {Event: handled, Data: 4}}); err != nil {
		t.Fatal(err)
	}
	// A call nobody can take fails instead of counting.
	if _, err := pub.Call(ctx, unique("NOBODY"), 1); !errors.Is(err, core.ErrUnhandled) {
		t.Fatalf("call: %v, want core.ErrUnhandled", err)
	}
	if got := pub.UnhandledCounts(); got[lonely] != 5 || len(got) != 1 {
		t.Errorf("UnhandledCounts %v, want %s: 5 only", got, lonely)
	}
	select {
	case pe := <-reports:
		if pe.Unhandled != lonely || pe.Count != 5 || pe.Total != 5 || pe.Instance.Group != po.Identity.Group || pe.Instance.Session == "" {
			t.Fatalf("report %+v, want %s counted 5 by %s", pe, lonely, po.Identity.Group)
		}
	case <-time.After(brokertest.Wait):
		t.Fatal("no core.EventUnhandled")
	}
	select {
	case pe := <-reports:
		t.Fatalf("reported again without new publishes: %+v", pe)
	case <-time.After(600 * time.Millisecond):
	}
	brokertest.WaitUnhandledReport(t, ctx, reader, lonely, handled, 5, po.Identity.Group+"/p")
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

	// A publisher that consumes nothing answers queries with its counts
	// once it has some: seen in UnhandledReports, not listed an instance.
	pureGroup, lonely2 := unique("pure"), unique("LONELY2")
	pure := openBroker(t, Config{Options: opts(pureGroup, "only-publishes"), URL: url, Exchange: exchange, ManagementURL: ManagementOff,
		UnhandledInterval: 100 * time.Millisecond})
	for range 2 {
		if _, err := pure.Publish(ctx, lonely2, 1); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(brokertest.Wait); ; time.Sleep(100 * time.Millisecond) {
		list, err := reader.UnhandledReports(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(list, func(r core.UnhandledReport) bool {
			return r.Event == lonely2 && r.Count == 2 && slices.Equal(r.Publishers, []string{pureGroup + "/only-publishes"})
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reports %+v, want %s: 2 by %s/only-publishes", list, lonely2, pureGroup)
		}
	}
	list, err := reader.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(list, func(in core.Instance) bool { return in.Group == pureGroup }) {
		t.Errorf("a publisher that consumes nothing is listed an instance: %+v", list)
	}
}

// TestUnhandledAfterTheQueueGoes: publishes of a routed event are not
// mandatory but for a probe per interval; once its only queue is deleted,
// a probe comes back within the interval and from then every publish is
// counted, until a queue is bound again.
func TestUnhandledAfterTheQueueGoes(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	adm, exchange, track := testExchange(t, url, "spectacles-unhandled-goes", "")
	ev := unique("EV")
	queue := QueueName(exchange, "peer", ev)
	track(queue)
	ch := adm.channel()
	if err := peerDeclareExchange(ch, exchange); err != nil {
		t.Fatal(err)
	}
	if err := peerDeclareQueue(ch, exchange, queue, ev); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	pub := openBroker(t, Config{Options: opts(unique("pub"), "p"), URL: url, Exchange: exchange, ManagementURL: ManagementOff,
		UnhandledInterval: 100 * time.Millisecond})
	for range 20 {
		if _, err := pub.Publish(ctx, ev, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := pub.UnhandledCounts()[ev]; n != 0 {
		t.Fatalf("%d unhandled while a queue takes them", n)
	}
	adm.deleteQueues(queue)
	// The next probe (within 100 ms) finds it unrouted; then each counts.
	deadline := time.Now().Add(brokertest.Wait)
	for pub.UnhandledCounts()[ev] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("never counted after its queue went")
		}
		if _, err := pub.Publish(ctx, ev, 1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := pub.UnhandledCounts()[ev]
	for range 10 {
		if _, err := pub.Publish(ctx, ev, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := pub.UnhandledCounts()[ev]; n != before+10 {
		t.Fatalf("%d unhandled after 10 more publishes, want %d: every one counts once it is known unrouted", n, before+10)
	}
	if err := peerDeclareQueue(adm.channel(), exchange, queue, ev); err != nil {
		t.Fatal(err)
	}
	// The first routed publish ends the counting.
	if _, err := pub.Publish(ctx, ev, 1); err != nil {
		t.Fatal(err)
	}
	before = pub.UnhandledCounts()[ev]
	for range 10 {
		if _, err := pub.Publish(ctx, ev, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := pub.UnhandledCounts()[ev]; n != before {
		t.Fatalf("%d unhandled, want %d: a queue takes them again", n, before)
	}
}
