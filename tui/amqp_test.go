package tui

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/x/exp/golden"

	"github.com/spectacles-go/spectacles/core"
)

// fakeAMQP is a fakeInspector that answers as the AMQP driver does: kind
// "amqp", no ids in order, queues as groups (Pending = unacked, Lag =
// ready), Entries of dead letters only, with message ids (UUIDv7). The
// console gets it as an amqpOnly: no core.PendingInspector.
type fakeAMQP struct {
	*fakeInspector
}

// amqpOnly has only the core.Inspector methods of what it holds, as the
// AMQP driver: it is no core.PendingInspector.
type amqpOnly struct{ core.Inspector }

func amqpUnsupported(op, why string) error {
	return fmt.Errorf("amqp: %s: %w: %s", op, core.ErrUnsupported, why)
}

func (f *fakeAMQP) Streams(ctx context.Context) ([]core.StreamInfo, error) {
	list, err := f.fakeInspector.Streams(ctx)
	for i := range list {
		list[i].FirstID, list[i].LastID = "", ""
	}
	return list, err
}

func (f *fakeAMQP) Groups(ctx context.Context, stream string) ([]core.GroupInfo, error) {
	list, err := f.fakeInspector.Groups(ctx, stream)
	for i := range list {
		list[i].LastDeliveredID = ""
	}
	return list, err
}

// Entries reads dead letters from the head of their queue as the driver
// does: After and Before are looked up by id, else compared as text.
func (f *fakeAMQP) Entries(ctx context.Context, stream string, q core.RangeQuery) ([]core.Entry, error) {
	f.call("Entries")
	if _, ok := core.IsDeadLetterEvent(stream); !ok {
		return nil, amqpUnsupported("entries "+stream, "AMQP queues cannot be read without consuming them; only dead letters (EVENT:dlq) can be listed")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maxCount = max(f.maxCount, q.Count)
	s, err := f.stream(stream)
	if err != nil {
		return nil, err
	}
	msgs := s.entries
	find := func(id string, after bool) int {
		if i := slices.IndexFunc(msgs, func(e core.Entry) bool { return e.ID == id }); i >= 0 {
			return i
		}
		for i, e := range msgs {
			if e.ID > id {
				if after {
					return i - 1
				}
				return i
			}
		}
		return len(msgs)
	}
	if q.Reverse {
		end := len(msgs)
		if q.Before != "" {
			end = find(q.Before, false)
		}
		page := slices.Clone(msgs[max(0, end-q.Count):end])
		slices.Reverse(page)
		return page, nil
	}
	start := 0
	if q.After != "" {
		start = find(q.After, true) + 1
	}
	start = min(start, len(msgs))
	return slices.Clone(msgs[start:min(start+q.Count, len(msgs))]), nil
}

func (f *fakeAMQP) Requeue(ctx context.Context, event string, ids ...string) ([]string, error) {
	f.call("Requeue")
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := f.stream(core.DeadLetterEvent(event))
	if err != nil {
		return nil, err
	}
	f.requeue = append(f.requeue, ids...)
	var out []string
	s.entries = slices.DeleteFunc(s.entries, func(e core.Entry) bool {
		if slices.Contains(ids, e.ID) {
			out = append(out, "01900000-0000-7000-8000-0000000000"+fmt.Sprintf("%02d", len(out)))
			return true
		}
		return false
	})
	return out, nil
}

// amqpID is a UUIDv7 text id at baseMS+ms.
func amqpID(ms int64, n int) string {
	h := fmt.Sprintf("%012x", baseMS+ms)
	return fmt.Sprintf("%s-%s-7abc-8def-%012x", h[:8], h[8:], n)
}

// amqpFixture is the fixed system on RabbitMQ: exchange "bot", two queues
// of MESSAGE_CREATE (the bot's, holding unacked messages, and an
// analytics subgroup's with no consumer), dead letters with message ids.
func amqpFixture() *fakeAMQP {
	ins := newFakeInspector()
	ins.server = core.ServerInfo{Kind: "amqp", Address: "amqp://guest@127.0.0.1:5672/", Version: "3.10.8", RoundTrip: 640 * time.Microsecond}
	mc := &fakeStream{name: "MESSAGE_CREATE", virtual: 42}
	botQ := &fakeGroup{info: core.GroupInfo{Name: "bot:MESSAGE_CREATE", Lag: 30}, virtual: 7}
	botQ.consumers = []core.ConsumerInfo{
		{Name: "worker-1.ctag-1 @ spectacles bot/worker-1 (consume)", Pending: 4},
		{Name: "worker-2.ctag-1 @ spectacles bot/worker-2 (consume)", Pending: -1},
	}
	analytics := &fakeGroup{info: core.GroupInfo{Name: "bot:analytics:MESSAGE_CREATE", Lag: 5}}
	mc.groups = []*fakeGroup{botQ, analytics}
	ins.streams[mc.name] = mc
	dlq := &fakeStream{name: "MESSAGE_CREATE:dlq"}
	for i := range 3 {
		dlq.entries = append(dlq.entries, core.Entry{ID: amqpID(int64(i)*1000, i), Raw: mustMsgpack(map[string]any{"content": fmt.Sprintf("poison %d", i)}),
			Headers: map[string]string{core.HeaderReason: core.ReasonMaxDeliveries, core.HeaderEvent: "MESSAGE_CREATE"}})
	}
	dlq.groups = []*fakeGroup{{info: core.GroupInfo{Name: "bot:MESSAGE_CREATE:dlq", Lag: 3}}}
	ins.streams[dlq.name] = dlq
	return &fakeAMQP{ins}
}

func newAMQPDriver(t *testing.T, opts Options) (*driver, *fakeAMQP) {
	t.Helper()
	ins := amqpFixture()
	n := &Node{
		Info:    NodeInfo{Name: "ops-box/4242", Client: "spectacles-console@ops-box", Group: "bot", BrokerKind: "amqp", BrokerAddress: "amqp://guest:xxxxx@127.0.0.1:5672/", StaleAfter: 2 * time.Minute},
		Inspect: amqpOnly{ins}, Publisher: &fakeBroker{}, Secrets: []string{"hunter2-password"},
	}
	if _, ok := n.Inspect.(core.PendingInspector); ok {
		t.Fatal("the fake AMQP inspector is a core.PendingInspector")
	}
	return newDriver(t, n, opts, 100, 30), ins
}

// TestGoldenAMQP renders the views of the RabbitMQ system.
func TestGoldenAMQP(t *testing.T) {
	cases := []struct {
		name  string
		steps func(d *driver)
	}{
		{"overview", func(d *driver) {}},
		{"streams", func(d *driver) { d.keys("2") }},
		{"groups", func(d *driver) { d.keys("2", "enter") }},
		{"pending", func(d *driver) { d.command("pending MESSAGE_CREATE") }},
		{"pending-help", func(d *driver) { d.command("pending MESSAGE_CREATE"); d.keys("?") }},
		{"dead-letters", func(d *driver) { d.command("dlq MESSAGE_CREATE") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, _ := newAMQPDriver(t, plainOptions())
			c.steps(d)
			golden.RequireEqual(t, d.view())
		})
	}
}

func TestAMQPViews(t *testing.T) {
	d, ins := newAMQPDriver(t, plainOptions())
	d.mustContain("amqp amqp://guest@127.0.0.1:5672/", "version 3.10.8", "round trip", "Queues", "35 ready · 7 unacked · 2 consumers",
		"queue bot:analytics:MESSAGE_CREATE: 5 ready and no consumers")
	d.mustNotContain("hunter2", "in - · out -")

	d.keys("2")
	d.mustContain("EVENT", "MESSAGES", "QUEUES", "READY", "UNACKED", "CONSUMERS", "2 events")
	d.mustNotContain("FIRST ID", "LAST ID", "IN ", "/s")
	// Tail of a live event: unavailable, and says why.
	d.keys("t")
	if d.m.active() != kStreams {
		t.Fatalf("t on a live AMQP event opened %v", d.m.active())
	}
	d.mustContain("tail is unavailable: RabbitMQ queues cannot be read without consuming them")

	d.keys("enter")
	d.mustContain("QUEUE", "UNACKED", "READY", "bot:MESSAGE_CREATE", "bot:analytics:MESSAGE_CREATE",
		"worker-1.ctag-1 @ spectacles bot/worker-1 (consume)", "working: holds 4", "consuming (? not counted)")
	d.mustNotContain("LAST DELIVERED", "LAG", "OUT ")

	d.keys("enter")
	if d.m.active() != kPending {
		t.Fatalf("enter in Groups opened %v", d.m.active())
	}
	d.mustContain("RabbitMQ does not let another client list or take unacknowledged messages; unacked per queue: 7",
		"Pending › MESSAGE_CREATE › queue bot:MESSAGE_CREATE", "7 unacked · 30 ready · 2 consumers", "holds 4 unacked", ":dlq MESSAGE_CREATE")
	d.mustNotContain("amqp: pending", "cannot list pending entries")
	for k, why := range map[string]string{"A": "only the channel a message was delivered on", "c": "RabbitMQ cannot take a message from the consumer", "D": "RabbitMQ cannot take a message from its consumer"} {
		d.keys(k)
		d.mustContain("is unavailable: " + why)
		if d.m.mode != modeNormal {
			t.Fatalf("%s on AMQP opened mode %v", k, d.m.mode)
		}
	}
	d.keys("?")
	d.mustContain("Unavailable on this broker (amqp):", "ack", "claim to", "move to dead letters", "only the channel a message")
	d.keys("x")
	for _, op := range []string{"Ack", "Claim", "DeadLetter"} {
		if n := ins.count(op); n != 0 {
			t.Errorf("%s called %d times", op, n)
		}
	}
}

func TestAMQPDeadLettersPayloadAndRequeue(t *testing.T) {
	d, ins := newAMQPDriver(t, plainOptions())
	d.command("dlq MESSAGE_CREATE")
	dl := slices.Clone(ins.streams["MESSAGE_CREATE:dlq"].entries)
	d.mustContain(dl[0].ID, dl[2].ID, "["+core.ReasonMaxDeliveries[:10])
	// The cursor follows the newest; open the middle one's payload.
	d.keys("up", "enter")
	if d.m.mode != modePayload {
		t.Fatalf("payload did not open: %q", d.m.status)
	}
	d.mustContain("MESSAGE_CREATE:dlq  "+dl[1].ID, "poison 1")
	d.keys("esc", "home", "enter")
	d.mustContain("poison 0")
	d.keys("esc")

	d.keys("down")
	if c := d.m.views[kTail].(*tailView).tbl.cursor; c != 1 {
		t.Fatalf("cursor %d\n%s", c, d.view())
	}
	d.keys("R")
	d.mustContain("Requeue 1 dead letter to their original events?")
	d.keys("y")
	d.mustContain("requeued 1 of 1 to MESSAGE_CREATE as 01900000-")
	if want := dl[1].ID; len(ins.requeue) != 1 || ins.requeue[0] != want {
		t.Fatalf("requeued %v, want %s", ins.requeue, want)
	}
	// The requeued dead letter leaves the tail.
	d.mustNotContain(ins.requeue[0])
	if n := ins.count("Ack"); n != 0 {
		t.Fatalf("requeue from the tail acknowledged %d times", n)
	}
	v := d.view()
	if strings.Contains(v, "✗") {
		t.Fatalf("an error after the requeue:\n%s", v)
	}
}

func TestIDTimeAndCompareOfMessageIDs(t *testing.T) {
	id := amqpID(1500, 1)
	if got := idTime(id); !got.Equal(time.UnixMilli(baseMS + 1500)) {
		t.Fatalf("idTime(%s) = %v", id, got)
	}
	if !idTime("0190abcd-1234-4abc-8def-000000000001").IsZero() {
		t.Fatal("a UUIDv4 has no time")
	}
	if compareIDs(amqpID(1, 0), amqpID(2, 0)) >= 0 || compareIDs("2-0", "10-0") >= 0 {
		t.Fatal("compareIDs")
	}
	if isStreamID(id) || !isStreamID("1700000000000-0") {
		t.Fatal("isStreamID")
	}
}
