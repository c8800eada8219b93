package redis

import (
	"context"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/spectacles-go/spectacles/core"
)

// TestReplyReachesLateSubscriber: @discordjs/brokers and @spectacles/brokers
// SUBSCRIBE to {event}:{id} only after their XADD returned, so a responder
// that answers at once published to nobody and the reply was lost. A
// PUBLISH that reached no subscriber is now repeated for a while: a caller
// that subscribes 100 ms after the responder replied still gets the reply.
func TestReplyReachesLateSubscriber(t *testing.T) {
	t.Parallel()
	url, real, raw, ev := testStream(t)
	replying := make(chan struct{})
	_, replied := openResponder(t, url, real, ev, func(*core.Message) any {
		close(replying)
		return map[string]any{"ok": true}
	})

	payload, _ := msgpack.Marshal(map[string]any{"n": 1})
	id, err := raw.XAdd(ctxT(t), &goredis.XAddArgs{Stream: ev, Values: []any{"data", payload}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-replying:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not run within 10s")
	}
	time.Sleep(100 * time.Millisecond) // the late caller
	sub := subscribeReply(t, raw, ev, id)
	rctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	msg, err := sub.ReceiveMessage(rctx)
	if err != nil {
		t.Fatalf("no reply for the caller that subscribed 100 ms late: %v", err)
	}
	got := decodeReply(t, msg.Payload)
	if m, ok := got.(map[string]any); !ok || m["ok"] != true {
		t.Fatalf("reply %#v", got)
	}
	if err := <-replied; err != nil {
		t.Fatalf("Reply: %v", err)
	}
}

// TestReplyToNobodyGivesUp: a reply nobody subscribes to (a message that
// was published, not called) is repeated only for a bounded time: Reply
// returns nil, and a single PUBLISH reached the one subscriber that came
// at last (no duplicates once someone received it).
func TestReplyToNobodyGivesUp(t *testing.T) {
	t.Parallel()
	url, real, _, ev := testStream(t)
	b, replied := openResponder(t, url, real, ev, replyOf("x"))
	if _, err := b.Publish(ctxT(t), ev, "not a call"); err != nil {
		t.Fatal(err)
	}
	waitReplied(t, replied, "Reply to nobody")
}

// TestReplyStopsOnceReceived: once a PUBLISH reached a subscriber the reply
// is not published again: the subscriber gets exactly one copy.
func TestReplyStopsOnceReceived(t *testing.T) {
	t.Parallel()
	url, real, raw, ev := testStream(t)
	sub := raw.PSubscribe(ctxT(t), replyPattern(ev))
	defer sub.Close()
	if _, err := sub.Receive(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	b, replied := openResponder(t, url, real, ev, replyOf("once"))
	if _, err := b.Publish(ctxT(t), ev, "call"); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.ReceiveMessage(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := <-replied; err != nil {
		t.Fatal(err)
	}
	// Anything published after the first copy would be in flight by now;
	// a marker published after Reply returned comes next if there was none.
	if err := raw.Publish(ctxT(t), replyChannel(ev, "marker"), "marker").Err(); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.ReceiveMessage(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Payload != "marker" {
		t.Fatalf("a second copy of the reply came (%q on %s)", msg.Payload, msg.Channel)
	}
}

// TestReplyRepeatedWhileCallerStaysSubscribed: a peer's caller that
// subscribed just before the reply came, but had not yet processed its
// subscription's confirmation, drops the reply (seen with both
// @discordjs/brokers and @spectacles/brokers: the reply arrives in the same
// read as the confirmation, before the caller registered its waiter) and
// stays subscribed until its timeout. Such a caller unsubscribes as soon as
// it has its reply; one still subscribed to the exact channel gets the
// reply again.
func TestReplyRepeatedWhileCallerStaysSubscribed(t *testing.T) {
	t.Parallel()
	url, real, raw, ev := testStream(t)
	_, replied := openResponder(t, url, real, ev, replyOf("again"))
	// Subscribe to the channel of the next entry before publishing it: the
	// id is chosen here (XADD with an explicit id).
	id := strconv.FormatInt(time.Now().UnixMilli(), 10) + "-1"
	sub := subscribeReply(t, raw, ev, id)
	if err := raw.XAdd(ctxT(t), &goredis.XAddArgs{Stream: ev, ID: id, Values: []any{"data", "\xa1x"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.ReceiveMessage(ctxT(t)); err != nil { // dropped, as the peers do
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := sub.ReceiveMessage(rctx); err != nil {
		t.Fatalf("no second copy for a caller still subscribed: %v", err)
	}
	if err := sub.Unsubscribe(ctxT(t), replyChannel(ev, id)); err != nil {
		t.Fatal(err)
	}
	waitReplied(t, replied, "Reply after the caller unsubscribed")
}

// openResponder is the set-up of the reply tests: on the test's server, a
// broker of a group of its own answers every message of ev with
// reply(m), sending what Reply returned on the channel.
func openResponder(t testing.TB, url string, real bool, ev string, reply func(*core.Message) any) (*Broker, chan error) {
	t.Helper()
	b := openBroker(t, url, Config{Options: opts(t, unique("responder"), "r"), Block: blockFor(real)})
	replied := make(chan error, 1)
	startConsume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) {
		replied <- m.Reply(ctx, reply(m))
		_ = m.Ack(ctx)
	})
	return b, replied
}

// replyOf returns a reply function that always answers v.
func replyOf(v any) func(*core.Message) any { return func(*core.Message) any { return v } }

// waitReplied waits up to 10s for Reply to return nil.
func waitReplied(t testing.TB, replied <-chan error, what string) {
	t.Helper()
	select {
	case err := <-replied:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return within 10s", what)
	}
}

// subscribeReply subscribes to the reply channel of the entry id of ev, as
// a peer's caller does, and waits for the subscription.
func subscribeReply(t testing.TB, raw goredis.UniversalClient, ev, id string) *goredis.PubSub {
	t.Helper()
	sub := raw.Subscribe(ctxT(t), replyChannel(ev, id))
	t.Cleanup(func() { _ = sub.Close() })
	if _, err := sub.Receive(ctxT(t)); err != nil { // the subscription
		t.Fatal(err)
	}
	return sub
}

// decodeReply decodes a reply's msgpack payload.
func decodeReply(t testing.TB, payload string) any {
	t.Helper()
	var got any
	if err := (core.Msgpack{}).Unmarshal([]byte(payload), &got); err != nil {
		t.Fatal(err)
	}
	return got
}
