package redis

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// testLogger sends the driver's logs to the test log, shown on failure.
func testLogger(t testing.TB) *slog.Logger { return brokertest.Logger(t, slog.LevelDebug) }

func opts(t testing.TB, group, client string) core.Options {
	return core.Options{
		Identity:       core.Identity{Group: group, Client: client},
		MessageTimeout: 300 * time.Millisecond,
		CallTimeout:    5 * time.Second,
		Logger:         testLogger(t),
	}
}

// blockFor keeps stops quick on servers without CLIENT UNBLOCK.
func blockFor(real bool) time.Duration {
	if real {
		return 0
	}
	return 100 * time.Millisecond
}

// collect returns a handler that sends each message on a channel and acks.
func collect(t testing.TB, ack bool) (core.Handler, chan *core.Message) {
	return brokertest.Collect(t, ack)
}

func next(t testing.TB, ch chan *core.Message) *core.Message {
	t.Helper()
	return brokertest.Next(t, ch)
}

func startConsume(t testing.TB, b *Broker, events []string, h core.Handler) {
	t.Helper()
	brokertest.StartConsume(t, b, events, h)
}

// TestWirePublish: XADD {event} * data {payload}, and Publish returns the
// entry id.
func TestWirePublish(t *testing.T) {
	t.Parallel()
	url, _, raw, ev := testStream(t)
	b := openBroker(t, url, Config{Options: opts(t, "", "")})

	id, err := b.Publish(ctxT(t), ev, map[string]any{"content": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := raw.XRange(ctxT(t), ev, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].ID != id {
		t.Fatalf("stream holds %v, want one entry %s", entries, id)
	}
	want, _ := core.Msgpack{}.Marshal(map[string]any{"content": "hi"})
	if !reflect.DeepEqual(entries[0].Values, map[string]any{"data": string(want)}) {
		t.Fatalf("entry fields %q, want only data=%q", entries[0].Values, want)
	}
	// core.Raw passes through untouched.
	id2, err := b.Publish(ctxT(t), ev, core.Raw("\x01raw"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := raw.XRange(ctxT(t), ev, id2, id2).Result()
	if err != nil || len(e) != 1 || e[0].Values["data"] != "\x01raw" {
		t.Fatalf("raw entry %v, %v", e, err)
	}
}

// TestWireReply: a reply is PUBLISH {event}:{id} {payload}, checked with a
// plain SUBSCRIBE; and a caller in the style of @discordjs/brokers
// (SUBSCRIBE to the exact channel after its XADD) receives it.
func TestWireReply(t *testing.T) {
	t.Parallel()
	url, real, raw, ev := testStream(t)
	b := openBroker(t, url, Config{Options: opts(t, unique("responder"), "r"), Block: blockFor(real)})
	startConsume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) {
		// A peer's caller subscribes only after its XADD returned: give
		// it time, as a real responder doing work would.
		time.Sleep(200 * time.Millisecond)
		data, _ := m.Data()
		if err := m.Reply(ctx, map[string]any{"echo": data}); err != nil {
			t.Errorf("reply: %v", err)
		}
		_ = m.Ack(ctx)
	})

	// The peer's way: XADD, then SUBSCRIBE {event}:{id}.
	payload, _ := msgpack.Marshal(map[string]any{"n": 1})
	id, err := raw.XAdd(ctxT(t), &goredis.XAddArgs{Stream: ev, Values: []any{"data", payload}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	sub := subscribeReply(t, raw, ev, id)
	msg, err := sub.ReceiveMessage(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Channel != ev+":"+id {
		t.Fatalf("reply on %q, want %q", msg.Channel, ev+":"+id)
	}
	got := decodeReply(t, msg.Payload)
	if !reflect.DeepEqual(got, map[string]any{"echo": map[string]any{"n": int64(1)}}) {
		t.Fatalf("reply %#v", got)
	}
}

// TestWireDeadLetter: Reject XADDs to {event}:dlq the original data and
// the header fields, and XACKs the source.
func TestWireDeadLetter(t *testing.T) {
	t.Parallel()
	url, real, raw, ev := testStream(t)
	group := unique("g")
	b := openBroker(t, url, Config{Options: opts(t, group, "c1"), Block: blockFor(real)})
	done := make(chan error, 1)
	startConsume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) {
		done <- m.Reject(ctx, "bad packet")
	})
	id, err := b.Publish(ctxT(t), ev, core.Raw("\x91\x01"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
	entries, err := raw.XRange(ctxT(t), core.DeadLetterEvent(ev), "-", "+").Result()
	if err != nil || len(entries) != 1 {
		t.Fatalf("dead letters %v, %v", entries, err)
	}
	v := entries[0].Values
	want := map[string]string{
		"data": "\x91\x01", core.HeaderEvent: ev, core.HeaderID: id, core.HeaderGroup: group,
		core.HeaderClient: "c1", core.HeaderReason: "bad packet", core.HeaderDeliveries: "1",
	}
	for k, w := range want {
		if v[k] != w {
			t.Errorf("dead letter field %s = %q, want %q", k, v[k], w)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, v[core.HeaderFailedAt].(string)); err != nil {
		t.Errorf("failed_at: %v", err)
	}
	if len(v) != len(want)+1 {
		t.Errorf("dead letter has fields %v", v)
	}
	pending, err := raw.XPending(ctxT(t), ev, group).Result()
	if err != nil || pending.Count != 0 {
		t.Fatalf("source still pending: %+v, %v", pending, err)
	}
}

// TestInteropPayloads: what spec-tacles/gateway publishes (a msgpack str
// holding JSON) and what a JS peer publishes (a msgpack map) both decode
// into maps; extra entry fields become headers.
func TestInteropPayloads(t *testing.T) {
	t.Parallel()
	url, real, raw, ev := testStream(t)
	b := openBroker(t, url, Config{Options: opts(t, unique("g"), "c"), Block: blockFor(real)})
	h, ch := collect(t, true)
	startConsume(t, b, []string{ev}, h)

	gateway := core.MsgpackJSONString([]byte(`{"guild_id":"81384788765712384","content":"hello from the gateway","n":3}`))
	js, err := msgpack.Marshal(map[string]any{"guild_id": "81384788765712384", "n": 3})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, values := range [][]any{{"data", gateway}, {"data", js, "trace", "abc"}} {
		id, err := raw.XAdd(ctxT(t), &goredis.XAddArgs{Stream: ev, Values: values}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	got := map[string]*core.Message{}
	for range 2 {
		m := next(t, ch)
		got[m.ID] = m
	}
	data, err := got[ids[0]].Data()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"guild_id": "81384788765712384", "content": "hello from the gateway", "n": int64(3)}
	if !reflect.DeepEqual(data, want) {
		t.Errorf("gateway payload decoded to %#v, want %#v", data, want)
	}
	if got[ids[0]].Headers != nil {
		t.Errorf("headers %v, want none", got[ids[0]].Headers)
	}
	m := got[ids[1]]
	data, err = m.Data()
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := data.(map[string]any); !ok || d["guild_id"] != "81384788765712384" || d["n"] != int64(3) {
		t.Errorf("JS payload decoded to %#v", data)
	}
	if m.Headers["trace"] != "abc" || len(m.Headers) != 1 {
		t.Errorf("headers %v, want trace=abc", m.Headers)
	}
}

// TestReclaimCursorPerStream: messages a dead client left pending on
// several streams are all taken over, each stream scanned with its own
// XAUTOCLAIM cursor over several rounds (spec-tacles/go shares one cursor
// and skips the streams whose ids are below it).
func TestReclaimCursorPerStream(t *testing.T) {
	t.Parallel()
	url, real := serverURL(t)
	raw := rawClient(t, url)
	group := unique("g")
	// Stream "old" gets entries with ids far below those of "new".
	evOld, evNew, evMid := testEvent(t, raw), testEvent(t, raw), testEvent(t, raw)
	ctx := ctxT(t)
	want := map[string]bool{}
	add := func(ev, id string) {
		got, err := raw.XAdd(ctx, &goredis.XAddArgs{Stream: ev, ID: id, Values: []any{"data", "\xa1x"}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		want[ev+"/"+got] = true
	}
	for i := range 5 {
		add(evOld, "1000-"+strconv.Itoa(i+1))
		add(evMid, "5000-"+strconv.Itoa(i+1))
		add(evNew, "*")
	}
	for _, ev := range []string{evOld, evMid, evNew} {
		if err := raw.XGroupCreate(ctx, ev, group, "0").Err(); err != nil {
			t.Fatal(err)
		}
		// A client that reads and dies without acking.
		if err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: "dead", Streams: []string{ev, ">"}, Count: 100, Block: -1}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(350 * time.Millisecond) // idle past MessageTimeout

	o := opts(t, group, "heir")
	o.MaxDeliveries = -1
	b := openBroker(t, url, Config{Options: o, ReadCount: 2, Block: blockFor(real)})
	h, ch := collect(t, true)
	// "new" first: a shared cursor would end past every id of the others.
	startConsume(t, b, []string{evNew, evMid, evOld}, h)
	for len(want) > 0 {
		m := next(t, ch)
		key := m.Event + "/" + m.ID
		if !want[key] {
			t.Fatalf("unexpected or repeated delivery %s", key)
		}
		if m.Deliveries != 2 {
			t.Errorf("%s: deliveries %d, want 2", key, m.Deliveries)
		}
		delete(want, key)
	}
}

// TestMaxDeliveriesDeadLetter: a message never acked is delivered
// MaxDeliveries times, then moved to the dead-letter stream by the
// reclaimer, with the count and reason.
func TestMaxDeliveriesDeadLetter(t *testing.T) {
	t.Parallel()
	url, real, raw, ev := testStream(t)
	o := opts(t, unique("g"), "c")
	o.MaxDeliveries = 3
	o.MessageTimeout = 100 * time.Millisecond
	b := openBroker(t, url, Config{Options: o, Block: blockFor(real)})
	var mu sync.Mutex
	var counts []int
	startConsume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) {
		mu.Lock()
		counts = append(counts, m.Deliveries)
		mu.Unlock()
	})
	id, err := b.Publish(ctxT(t), ev, "poison")
	if err != nil {
		t.Fatal(err)
	}
	var entries []goredis.XMessage
	deadline := time.Now().Add(10 * time.Second)
	for len(entries) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		entries, err = raw.XRange(ctxT(t), core.DeadLetterEvent(ev), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(entries) != 1 {
		t.Fatalf("dead letters: %v", entries)
	}
	v := entries[0].Values
	if v[core.HeaderID] != id || v[core.HeaderDeliveries] != "4" || v[core.HeaderReason] != "exceeded max deliveries (3)" {
		t.Errorf("dead letter %v", v)
	}
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(counts, []int{1, 2, 3}) {
		t.Errorf("handler saw deliveries %v, want [1 2 3]", counts)
	}
}

// TestGroupRecreatedAfterDelete: when the stream disappears (NOGROUP),
// the consumer creates its group again and keeps consuming.
func TestGroupRecreatedAfterDelete(t *testing.T) {
	t.Parallel()
	url, real, raw, ev := testStream(t)
	b := openBroker(t, url, Config{Options: opts(t, unique("g"), "c"), Block: blockFor(real)})
	h, ch := collect(t, true)
	startConsume(t, b, []string{ev}, h)
	if _, err := b.Publish(ctxT(t), ev, 1); err != nil {
		t.Fatal(err)
	}
	next(t, ch)
	if err := raw.Del(ctxT(t), ev).Err(); err != nil {
		t.Fatal(err)
	}
	// Until the reader notices, publishes land in a stream without the
	// group; it is created at id 0, so they are read all the same.
	id, err := b.Publish(ctxT(t), ev, 2)
	if err != nil {
		t.Fatal(err)
	}
	if m := next(t, ch); m.ID != id {
		t.Fatalf("got %s, want %s", m.ID, id)
	}
}

// TestTrimming: MaxLen and MinIDAge trim published streams (approximately,
// as with ~ Redis removes whole nodes of 100 entries).
func TestTrimming(t *testing.T) {
	t.Parallel()
	url, _ := serverURL(t)
	raw := rawClient(t, url)
	ctx := ctxT(t)

	t.Run("MaxLen", func(t *testing.T) {
		ev := testEvent(t, raw)
		b := openBroker(t, url, Config{Options: opts(t, "", ""), MaxLen: 100})
		for i := range 1000 {
			if _, err := b.Publish(ctx, ev, i); err != nil {
				t.Fatal(err)
			}
		}
		n, err := raw.XLen(ctx, ev).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n < 100 || n > 300 {
			t.Errorf("stream has %d entries, want about 100", n)
		}
	})
	t.Run("MinIDAge", func(t *testing.T) {
		ev := testEvent(t, raw)
		// 250 entries from 1970, then one publish with a one-hour age.
		for i := range 250 {
			if err := raw.XAdd(ctx, &goredis.XAddArgs{Stream: ev, ID: "1-" + strconv.Itoa(i+1), Values: []any{"data", "x"}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
		b := openBroker(t, url, Config{Options: opts(t, "", ""), MinIDAge: time.Hour})
		if _, err := b.Publish(ctx, ev, "now"); err != nil {
			t.Fatal(err)
		}
		n, err := raw.XLen(ctx, ev).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n > 101 {
			t.Errorf("stream has %d entries; old ones were not trimmed", n)
		}
	})
	t.Run("Exclusive", func(t *testing.T) {
		_, err := NewWithClient(raw, Config{MaxLen: 10, MinIDAge: time.Hour})
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("err = %v, want ErrInvalidConfig", err)
		}
	})
}

// TestCallEventWithGlobCharacters: reply patterns escape glob characters,
// so calls on such events work and see only their own replies.
func TestCallEventWithGlobCharacters(t *testing.T) {
	t.Parallel()
	url, real := serverURL(t)
	raw := rawClient(t, url)
	ev := testEvent(t, raw) + `.a*b?[c]\d`
	deleteKeys(t, raw, ev)
	b := openBroker(t, url, Config{Options: opts(t, unique("g"), "c"), Block: blockFor(real)})
	startConsume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) {
		var n int
		_ = m.Decode(&n)
		_ = m.Reply(ctx, n*2)
		_ = m.Ack(ctx)
	})
	for i := range 20 {
		p, err := b.Call(ctxT(t), ev, i)
		if err != nil {
			t.Fatal(err)
		}
		var got int
		if err := p.Decode(&got); err != nil || got != 2*i {
			t.Fatalf("reply %d, %v; want %d", got, err, 2*i)
		}
	}
	if got := replyPattern(`a*b?[c]\d`); got != `a\*b\?\[c\]\\d:*` {
		t.Errorf("pattern %q", got)
	}
}

// TestEarlyReplyIsStashed: a reply that arrives between the XADD and the
// caller's registration is kept for it.
func TestEarlyReplyIsStashed(t *testing.T) {
	t.Parallel()
	url, _, _, ev := testStream(t)
	b := openBroker(t, url, Config{Options: opts(t, "", "")})
	r := b.replies
	sub, err := r.acquire(ctxT(t), ev)
	if err != nil {
		t.Fatal(err)
	}
	// Simulate the race: the reply comes before register.
	r.deliver(sub.pattern, replyChannel(ev, "1-1"), "early")
	r.deliver(sub.pattern, replyChannel(ev, "1-2"), "someone else's")
	ch := r.register(sub, replyChannel(ev, "1-1"))
	select {
	case p := <-ch:
		if string(p) != "early" {
			t.Fatalf("got %q", p)
		}
	default:
		t.Fatal("the early reply was not kept")
	}
	r.unregister(replyChannel(ev, "1-1"), ch)
	r.release(sub, true)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(sub.stash) != 0 || len(r.waiters) != 0 {
		t.Errorf("left behind: stash %v, waiters %v", sub.stash, r.waiters)
	}
}

// TestAckBatching: many concurrent acks all reach Redis before Ack returns.
func TestAckBatching(t *testing.T) {
	t.Parallel()
	url, real, raw, ev := testStream(t)
	group := unique("g")
	b := openBroker(t, url, Config{Options: opts(t, group, "c"), Block: blockFor(real)})
	const n = 2000
	// Delivery is at least once: count distinct ids, so that a redelivery
	// under load (MessageTimeout is short here) cannot end the wait early
	// or twice.
	var mu sync.Mutex
	acked := make(map[string]bool, n)
	all := make(chan struct{})
	startConsume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) {
		if err := m.Ack(ctx); err != nil {
			t.Errorf("ack: %v", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !acked[m.ID] {
			acked[m.ID] = true
			if len(acked) == n {
				close(all)
			}
		}
	})
	var pubs sync.WaitGroup
	for i := range n {
		pubs.Go(func() {
			if _, err := b.Publish(ctxT(t), ev, i); err != nil {
				t.Errorf("publish: %v", err)
			}
		})
	}
	pubs.Wait()
	select {
	case <-all:
	case <-time.After(time.Minute):
		mu.Lock()
		t.Fatalf("%d of %d messages acked within a minute", len(acked), n)
	}
	p, err := raw.XPending(ctxT(t), ev, group).Result()
	if err != nil || p.Count != 0 {
		t.Fatalf("pending after all acks returned: %+v, %v", p, err)
	}
}

func TestPublishBatchKeepsOrder(t *testing.T) {
	url, _, raw, ev := testStream(t)
	other := testEvent(t, raw)
	b := openBroker(t, url, Config{})
	msgs := make([]core.Outgoing, 0, 300)
	for i := range 300 {
		e := ev
		if i%3 == 0 {
			e = other
		}
		msgs = append(msgs, core.Outgoing{Event: e, Data: map[string]any{"i": int64(i)}})
	}
	ids, err := b.PublishBatch(context.Background(), msgs)
	if err != nil || len(ids) != len(msgs) {
		t.Fatalf("publish batch: %d ids, %v", len(ids), err)
	}
	entries := raw.XRange(context.Background(), ev, "-", "+").Val()
	if len(entries) != 200 {
		t.Fatalf("%d entries in %s", len(entries), ev)
	}
	last := int64(-1)
	for _, e := range entries {
		var v struct {
			I int64 `json:"i"`
		}
		if err := (core.Msgpack{}).Unmarshal([]byte(e.Values["data"].(string)), &v); err != nil {
			t.Fatal(err)
		}
		i := v.I
		if i <= last {
			t.Fatalf("entry %d after %d: order lost", i, last)
		}
		last = i
	}
	if _, err := b.PublishBatch(context.Background(), []core.Outgoing{{Event: "", Data: 1}}); err == nil {
		t.Error("empty event accepted")
	}
}
