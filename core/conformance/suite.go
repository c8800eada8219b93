package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

type testCase struct {
	name string
	need func(Features) bool
	run  func(*testing.T, *suite)
	// parallel cases run together, after the others (which include
	// ServerRestart); each uses its own events, groups and clients.
	parallel bool
}

func always(Features) bool { return true }

var cases = []testCase{
	{"PublishConsume", always, testPublishConsume, false},
	{"PublishReturnsUniqueIDs", always, testUniqueIDs, false},
	{"DecodeIntoStruct", always, testDecodeIntoStruct, false},
	{"ConsumeValidates", always, testConsumeValidates, false},
	{"AtMostOncePerGroup", func(f Features) bool { return f.Groups }, testAtMostOncePerGroup, false},
	{"EveryGroupGetsACopy", func(f Features) bool { return f.Groups || f.Fanout }, testEveryGroupGetsACopy, false},
	{"AckedNotRedeliveredUnackedRedelivered", func(f Features) bool { return f.Redelivery }, testAckAndRedelivery, false},
	{"DeadLetterAfterMaxDeliveries", func(f Features) bool { return f.Redelivery && f.DeadLetter }, testDeadLetterAfterMax, false},
	{"RejectDeadLetters", func(f Features) bool { return f.DeadLetter }, testReject, false},
	{"CallReply", always, testCallReply, false},
	{"CallFastReplies", always, testFastReplies, false},
	{"CallConcurrent", always, testConcurrentCalls, false},
	{"CallTimeout", always, testCallTimeout, false},
	{"CallUnhandledFailsFast", func(f Features) bool { return f.UnhandledCalls }, testCallUnhandled, true},
	{"CloseDrainsInFlight", always, testCloseDrains, false},
	{"UndecodablePayloadIsNotLost", always, testUndecodable, false},
	{"HandlerPanicIsContained", always, testHandlerPanic, false},
	{"ServerRestart", func(f Features) bool { return f.Restart }, testServerRestart, false},
	{"SlowHandlerInOrderOnce", always, testSlowHandler, true},
	{"ManyConsumeCalls", always, testManyConsumeCalls, true},
	{"DeadLettersAreNeverDeadLettered", func(f Features) bool { return f.DeadLetter }, testDeadLetterOfDeadLetter, true},
}

// Run runs every test that applies to the broker described by s.
func Run(t *testing.T, s Setup) {
	t.Helper()
	if s.New == nil {
		t.Fatal("conformance: Setup.New is required")
	}
	if s.Features.Restart && s.Restart == nil {
		t.Fatal("conformance: Features.Restart needs Setup.Restart")
	}
	if s.MessageTimeout <= 0 {
		s.MessageTimeout = 400 * time.Millisecond
	}
	st := &suite{Setup: s}
	var notApplicable []string
	for _, c := range cases {
		if !c.need(s.Features) {
			notApplicable = append(notApplicable, c.name)
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			if c.parallel {
				t.Parallel()
			}
			c.run(t, st)
		})
	}
	if len(notApplicable) > 0 {
		t.Logf("conformance: not applicable to this broker (by its features): %s", strings.Join(notApplicable, ", "))
	}
}

func testPublishConsume(t *testing.T, s *suite) {
	ev := s.event(t)
	grp := group("g")
	k := newSink()
	consume(t, s.client(t, grp, "c1"), []string{ev}, ackAll(t, k, "c1"))

	pub := s.client(t, group("publisher"), "p")
	want := map[string]any{
		"content": "spectacles is awesome",
		"n":       int64(42),
		"neg":     int64(-7),
		"ratio":   0.5,
		"nested":  map[string]any{"ok": true, "none": nil},
		"list":    []any{"a", int64(1)},
	}
	id := publish(t, pub, ev, want)
	got := k.next(t)
	if got.event != ev || got.id != id {
		t.Fatalf("got event %q id %q, want %q %q", got.event, got.id, ev, id)
	}
	if got.deliveries != 1 {
		t.Errorf("first delivery counted %d, want 1", got.deliveries)
	}
	if got.err != nil {
		t.Fatalf("decode: %v", got.err)
	}
	if !reflect.DeepEqual(got.data, want) {
		t.Errorf("data = %#v\nwant   %#v", got.data, want)
	}
	k.none(t, 2*s.MessageTimeout)
}

func testUniqueIDs(t *testing.T, s *suite) {
	ev := s.event(t)
	ids := publishMany(t, s.client(t, group("publisher"), "p"), ev, 200)
	if len(ids) != 200 {
		t.Fatalf("got %d distinct ids for 200 publishes", len(ids))
	}
}

func testDecodeIntoStruct(t *testing.T, s *suite) {
	type member struct {
		GuildID string   `json:"guild_id"`
		Roles   []string `json:"roles"`
		Count   int      `json:"count"`
	}
	ev := s.event(t)
	got := make(chan member, 1)
	consume(t, s.client(t, group("g"), "c"), []string{ev}, func(ctx context.Context, m *core.Message) {
		var v member
		if err := m.Decode(&v); err != nil {
			t.Errorf("decode: %v", err)
		}
		_ = m.Ack(ctx)
		got <- v
	})
	want := member{GuildID: "81384788765712384", Roles: []string{"a", "b"}, Count: 3}
	publish(t, s.client(t, group("publisher"), "p"), ev, want)
	select {
	case v := <-got:
		if !reflect.DeepEqual(v, want) {
			t.Errorf("decoded %+v, want %+v", v, want)
		}
	case <-time.After(wait):
		t.Fatal("no message")
	}
}

func testConsumeValidates(t *testing.T, s *suite) {
	ev := s.event(t)
	noGroup := s.client(t, "", "c")
	err := noGroup.Consume(context.Background(), []string{ev}, func(context.Context, *core.Message) {})
	if !errors.Is(err, core.ErrInvalidIdentity) {
		t.Errorf("consume without a group: err = %v, want ErrInvalidIdentity", err)
	}
	b := s.client(t, group("g"), "c")
	if err := b.Consume(context.Background(), nil, func(context.Context, *core.Message) {}); err == nil {
		t.Error("consume with no events succeeded")
	}
	if err := b.Consume(context.Background(), []string{ev}, nil); err == nil {
		t.Error("consume with a nil handler succeeded")
	}
}

func testAtMostOncePerGroup(t *testing.T, s *suite) {
	ev := s.event(t)
	grp := group("g")
	k := newSink()
	for i := range 3 {
		name := fmt.Sprintf("c%d", i)
		consume(t, s.client(t, grp, name), []string{ev}, ackAll(t, k, name))
	}
	const n = 300
	ids := publishMany(t, s.client(t, group("publisher"), "p"), ev, n)
	seen := map[string]string{}
	for len(seen) < n {
		d := k.next(t)
		if prev, dup := seen[d.id]; dup {
			t.Fatalf("message %s delivered twice in one group (to %s and %s)", d.id, prev, d.client)
		}
		if _, ok := ids[d.id]; !ok {
			t.Fatalf("unknown message id %s", d.id)
		}
		seen[d.id] = d.client
	}
	k.none(t, 2*s.MessageTimeout)
}

func testEveryGroupGetsACopy(t *testing.T, s *suite) {
	ev := s.event(t)
	sinks := map[string]*sink{}
	for _, prefix := range []string{"ga", "gb"} {
		grp := group(prefix)
		k := newSink()
		sinks[grp] = k
		consume(t, s.client(t, grp, "c"), []string{ev}, ackAll(t, k, grp))
	}
	const n = 50
	ids := publishMany(t, s.client(t, group("publisher"), "p"), ev, n)
	for grp, k := range sinks {
		seen := map[string]bool{}
		for len(seen) < n {
			d := k.next(t)
			if seen[d.id] {
				t.Fatalf("group %s got %s twice", grp, d.id)
			}
			if _, ok := ids[d.id]; !ok {
				t.Fatalf("group %s got unknown id %s", grp, d.id)
			}
			seen[d.id] = true
		}
	}
	for _, k := range sinks {
		k.none(t, s.MessageTimeout)
	}
}

// testAckAndRedelivery: a client acks some messages and leaves one
// unacknowledged, then dies. Another client of the group gets exactly the
// unacknowledged one, marked as a redelivery.
func testAckAndRedelivery(t *testing.T, s *suite) {
	ev := s.event(t)
	grp := group("g")
	first := newSink()
	a := s.client(t, grp, "a")
	consume(t, a, []string{ev}, func(ctx context.Context, m *core.Message) {
		first.record("a", m)
		if data, _ := m.Data(); field(t, data, "ack") == true {
			if err := m.Ack(ctx); err != nil {
				t.Errorf("ack: %v", err)
			}
		}
	})
	pub := s.client(t, group("publisher"), "p")
	acked := map[string]bool{}
	for range 5 {
		acked[publish(t, pub, ev, map[string]any{"ack": true})] = true
	}
	unacked := publish(t, pub, ev, map[string]any{"ack": false})
	for range 6 {
		first.next(t)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	second := newSink()
	consume(t, s.client(t, grp, "b"), []string{ev}, ackAll(t, second, "b"))
	d := second.next(t)
	if d.id != unacked {
		if acked[d.id] {
			t.Fatalf("acknowledged message %s was delivered again", d.id)
		}
		t.Fatalf("got %s, want the unacknowledged %s", d.id, unacked)
	}
	if d.deliveries < 2 {
		t.Errorf("redelivery counted %d deliveries, want at least 2", d.deliveries)
	}
	second.none(t, 3*s.MessageTimeout)
}

// deadLetters starts a consumer of ev's dead-letter event.
func (s *suite) deadLetters(t *testing.T, ev string) *sink {
	k := newSink()
	consume(t, s.client(t, group("dlq-reader"), "r"), []string{core.DeadLetterEvent(ev)}, ackAll(t, k, "dlq"))
	return k
}

func checkDeadLetter(t *testing.T, d delivery, ev, id, grp string, raw []byte, reason string) {
	t.Helper()
	if !bytes.Equal(d.raw, raw) {
		t.Errorf("dead letter payload %x, want the original %x", d.raw, raw)
	}
	h := d.headers
	if h[core.HeaderEvent] != ev || h[core.HeaderID] != id || h[core.HeaderGroup] != grp {
		t.Errorf("dead letter headers %v: want event %s id %s group %s", h, ev, id, grp)
	}
	if !strings.Contains(h[core.HeaderReason], reason) {
		t.Errorf("dead letter reason %q, want it to contain %q", h[core.HeaderReason], reason)
	}
	if _, err := time.Parse(time.RFC3339Nano, h[core.HeaderFailedAt]); err != nil {
		t.Errorf("dead letter %s %q: %v", core.HeaderFailedAt, h[core.HeaderFailedAt], err)
	}
}

func testDeadLetterAfterMax(t *testing.T, s *suite) {
	const maxDeliveries = 2
	ev := s.event(t)
	grp := group("g")
	dlq := s.deadLetters(t, ev)
	var mu sync.Mutex
	var counts []int
	consume(t, s.client(t, grp, "a", func(o *core.Options) { o.MaxDeliveries = maxDeliveries }), []string{ev},
		func(ctx context.Context, m *core.Message) {
			mu.Lock()
			counts = append(counts, m.Deliveries)
			mu.Unlock()
			// Never acknowledged: a poison message.
		})
	payload := map[string]any{"poison": true}
	raw, _ := core.Msgpack{}.Marshal(payload)
	id := publish(t, s.client(t, group("publisher"), "p"), ev, core.Raw(raw))

	d := dlq.next(t)
	checkDeadLetter(t, d, ev, id, grp, raw, core.ReasonMaxDeliveries)
	if n, err := strconv.Atoi(d.headers[core.HeaderDeliveries]); err != nil || n <= maxDeliveries {
		t.Errorf("dead letter %s = %q, want a count above %d", core.HeaderDeliveries, d.headers[core.HeaderDeliveries], maxDeliveries)
	}
	if !reflect.DeepEqual(d.data, payload) {
		t.Errorf("dead letter data %v, want %v", d.data, payload)
	}
	time.Sleep(3 * s.MessageTimeout)
	mu.Lock()
	defer mu.Unlock()
	if len(counts) != maxDeliveries {
		t.Errorf("handler saw deliveries %v, want exactly %d deliveries before dead-lettering", counts, maxDeliveries)
	}
	dlq.none(t, s.MessageTimeout)
}

func testReject(t *testing.T, s *suite) {
	ev := s.event(t)
	grp := group("g")
	dlq := s.deadLetters(t, ev)
	k := newSink()
	consume(t, s.client(t, grp, "a"), []string{ev}, func(ctx context.Context, m *core.Message) {
		k.record("a", m)
		if err := m.Reject(ctx, "invalid packet: opcode 2 may not be sent"); err != nil {
			t.Errorf("reject: %v", err)
		}
		if !m.Settled() {
			t.Error("rejected message not settled")
		}
	})
	raw, _ := core.Msgpack{}.Marshal(map[string]any{"op": int64(2)})
	id := publish(t, s.client(t, group("publisher"), "p"), ev, core.Raw(raw))
	if d := k.next(t); d.id != id {
		t.Fatalf("got %s, want %s", d.id, id)
	}
	checkDeadLetter(t, dlq.next(t), ev, id, grp, raw, "invalid packet: opcode 2 may not be sent")
	k.none(t, 3*s.MessageTimeout)
}

// responder answers every call on ev with {"echo": data}. A failed Ack is
// an error, except across a server restart (restarting), where a message
// whose channel or connection was cut is delivered again and answered then.
func (s *suite) responder(t *testing.T, ev string, restarting ...bool) {
	tolerateAckErrors := len(restarting) > 0 && restarting[0]
	consume(t, s.client(t, group("responder"), "r"), []string{ev}, func(ctx context.Context, m *core.Message) {
		data, err := m.Data()
		if err != nil {
			t.Errorf("responder decode: %v", err)
			return
		}
		if err := m.Reply(ctx, map[string]any{"echo": data}); err != nil {
			t.Errorf("reply: %v", err)
		}
		if err := m.Ack(ctx); err != nil {
			if tolerateAckErrors {
				t.Logf("ack across the restart (delivered again): %v", err)
				return
			}
			t.Errorf("ack: %v", err)
		}
	})
}

func call(t *testing.T, b core.Broker, ev string, n int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := b.Call(ctx, ev, map[string]any{"n": n})
	if err != nil {
		return fmt.Errorf("call %d: %w", n, err)
	}
	data, err := p.Data()
	if err != nil {
		return fmt.Errorf("call %d: decode reply: %w", n, err)
	}
	want := map[string]any{"echo": map[string]any{"n": n}}
	if !reflect.DeepEqual(data, want) {
		return fmt.Errorf("call %d: reply %v, want %v", n, data, want)
	}
	return nil
}

func testCallReply(t *testing.T, s *suite) {
	ev := s.event(t)
	s.responder(t, ev)
	if err := call(t, s.client(t, group("caller"), "c"), ev, 7); err != nil {
		t.Fatal(err)
	}
}

// testFastReplies: a responder already waiting answers within microseconds,
// often before a caller that subscribes after publishing would be listening.
// No reply may be lost.
func testFastReplies(t *testing.T, s *suite) {
	ev := s.event(t)
	s.responder(t, ev)
	c := s.client(t, group("caller"), "c")
	for i := range 200 {
		if err := call(t, c, ev, int64(i)); err != nil {
			t.Fatal(err)
		}
	}
}

func testConcurrentCalls(t *testing.T, s *suite) {
	ev := s.event(t)
	s.responder(t, ev)
	c := s.client(t, group("caller"), "c")
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := call(t, c, ev, int64(i)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func testCallTimeout(t *testing.T, s *suite) {
	ev := s.event(t)
	// A consumer that never replies.
	consume(t, s.client(t, group("mute"), "m"), []string{ev}, func(ctx context.Context, m *core.Message) { _ = m.Ack(ctx) })
	c := s.client(t, group("caller"), "c", func(o *core.Options) { o.CallTimeout = 300 * time.Millisecond })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Call(ctx, ev, map[string]any{"n": 1})
	if !errors.Is(err, core.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("call with a deadline: err = %v, want ErrTimeout and DeadlineExceeded", err)
	}
	// Without a deadline, Options.CallTimeout applies.
	_, err = c.Call(context.Background(), ev, map[string]any{"n": 2})
	if !errors.Is(err, core.ErrTimeout) {
		t.Errorf("call without a deadline: err = %v, want ErrTimeout", err)
	}
	// A cancelled call is not a timeout.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err = c.Call(ctx, ev, map[string]any{"n": 3}); err == nil || errors.Is(err, core.ErrTimeout) {
		t.Errorf("cancelled call: err = %v, want a cancellation error", err)
	}
}

// testCallUnhandled: with no consumer of the event at all, a call fails
// with core.ErrUnhandled long before its timeout (a minute here: the test
// would hang past go test's deadline, not pass, if it waited).
func testCallUnhandled(t *testing.T, s *suite) {
	ev := s.event(t)
	c := s.client(t, group("caller"), "c", func(o *core.Options) { o.CallTimeout = time.Minute })
	_, err := c.Call(context.Background(), ev, map[string]any{"n": 1})
	if !errors.Is(err, core.ErrUnhandled) {
		t.Fatalf("call nobody can read: err = %v, want core.ErrUnhandled", err)
	}
	if errors.Is(err, core.ErrTimeout) {
		t.Errorf("call nobody can read: err = %v is a timeout", err)
	}
}

func testCloseDrains(t *testing.T, s *suite) {
	ev := s.event(t)
	grp := group("g")
	a := s.client(t, grp, "a")
	var started, finished, ackErrs atomic.Int32
	startedCh := make(chan struct{}, 16)
	consume(t, a, []string{ev}, func(ctx context.Context, m *core.Message) {
		started.Add(1)
		startedCh <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		if err := m.Ack(ctx); err != nil {
			ackErrs.Add(1)
			t.Errorf("ack during drain: %v", err)
		}
		finished.Add(1)
	})
	pub := s.client(t, group("publisher"), "p")
	for range 3 {
		publish(t, pub, ev, map[string]any{"slow": true})
	}
	select {
	case <-startedCh:
	case <-time.After(wait):
		t.Fatal("handler never started")
	}
	if err := a.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if f, st := finished.Load(), started.Load(); f != st {
		t.Fatalf("Close returned with %d of %d handlers still running", st-f, st)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := a.Publish(context.Background(), ev, 1); !errors.Is(err, core.ErrClosed) {
		t.Errorf("publish after close: err = %v, want ErrClosed", err)
	}
	if err := a.Consume(context.Background(), []string{ev}, func(context.Context, *core.Message) {}); !errors.Is(err, core.ErrClosed) {
		t.Errorf("consume after close: err = %v, want ErrClosed", err)
	}
	if !s.Features.Redelivery {
		return
	}
	// What was acked during the drain stays acked; what was never started
	// goes to the next client.
	k := newSink()
	consume(t, s.client(t, grp, "b"), []string{ev}, ackAll(t, k, "b"))
	for range 3 - int(finished.Load()) {
		k.next(t)
	}
	k.none(t, 3*s.MessageTimeout)
}

func testUndecodable(t *testing.T, s *suite) {
	ev := s.event(t)
	bad := []byte{0xc1, 0xff, 0x00, '{'} // neither msgpack nor JSON
	k := newSink()
	var reject atomic.Bool
	consume(t, s.client(t, group("g"), "a"), []string{ev}, func(ctx context.Context, m *core.Message) {
		// Read before recording: a first delivery whose handler is slow
		// to go on after record must not see the flag set meanwhile (and
		// reject the message before any redelivery).
		rejecting := reject.Load()
		k.record("a", m)
		if _, err := m.Data(); err != nil {
			if rejecting {
				_ = m.Reject(ctx, "undecodable: "+err.Error())
			}
			return // left pending: not lost
		}
		_ = m.Ack(ctx)
	})
	pub := s.client(t, group("publisher"), "p")
	badID := publish(t, pub, ev, core.Raw(bad))
	goodID := publish(t, pub, ev, map[string]any{"ok": true})
	got := map[string]delivery{}
	for range 2 {
		d := k.next(t)
		got[d.id] = d
	}
	b, g := got[badID], got[goodID]
	if !errors.Is(b.err, core.ErrUndecodable) {
		t.Errorf("undecodable payload: err = %v, want ErrUndecodable", b.err)
	}
	if !bytes.Equal(b.raw, bad) {
		t.Errorf("raw = %x, want %x", b.raw, bad)
	}
	if g.err != nil || field(t, g.data, "ok") != true {
		t.Errorf("the message after it: data %v err %v", g.data, g.err)
	}
	if !s.Features.Redelivery {
		return
	}
	reject.Store(true)
	d := k.next(t)
	if d.id != badID || d.deliveries < 2 {
		t.Fatalf("got %s (deliveries %d), want %s redelivered", d.id, d.deliveries, badID)
	}
}

func testHandlerPanic(t *testing.T, s *suite) {
	ev := s.event(t)
	k := newSink()
	var panicked atomic.Bool
	consume(t, s.client(t, group("g"), "a"), []string{ev}, func(ctx context.Context, m *core.Message) {
		// The first message panics once, whichever message a handler
		// starts first.
		if data, _ := m.Data(); field(t, data, "i") == int64(1) && panicked.CompareAndSwap(false, true) {
			panic("handler bug")
		}
		k.record("a", m)
		_ = m.Ack(ctx)
	})
	pub := s.client(t, group("publisher"), "p")
	first := publish(t, pub, ev, map[string]any{"i": 1})
	second := publish(t, pub, ev, map[string]any{"i": 2})
	want := map[string]bool{second: true}
	if s.Features.Redelivery {
		want[first] = true // the panicked message comes back
	}
	for len(want) > 0 {
		d := k.next(t)
		if !want[d.id] {
			t.Fatalf("unexpected delivery %s", d.id)
		}
		delete(want, d.id)
	}
}

func testServerRestart(t *testing.T, s *suite) {
	ev := s.event(t)
	callEv := s.event(t)
	k := newSink()
	consume(t, s.client(t, group("g"), "a"), []string{ev}, ackAll(t, k, "a"))
	s.responder(t, callEv, true)
	pub := s.client(t, group("publisher"), "p")
	before := publish(t, pub, ev, map[string]any{"when": "before"})
	if d := k.next(t); d.id != before {
		t.Fatalf("got %s, want %s", d.id, before)
	}
	if err := call(t, pub, callEv, 1); err != nil {
		t.Fatal(err)
	}

	s.Restart(t)

	// The driver must recover by itself; publishing may fail while it
	// reconnects, so retry until it works.
	deadline := time.Now().Add(30 * time.Second)
	var after string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		id, err := pub.Publish(ctx, ev, map[string]any{"when": "after"})
		cancel()
		if err == nil {
			after = id
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish still failing 30s after the restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for {
		d := k.next(t)
		if d.id == after {
			break
		}
		if d.id != before {
			t.Fatalf("unexpected delivery %s", d.id)
		}
	}
	var err error
	for i := range 30 {
		if err = call(t, pub, callEv, int64(100+i)); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("call after restart: %v", err)
	}
}

// testSlowHandler: a consumer with Concurrency 1 whose handler takes more
// than half of MessageTimeout handles every message exactly once, in the
// order published, and dead-letters none: what a driver reads ahead, or
// holds while the handler runs, must not be taken over again by itself.
func testSlowHandler(t *testing.T, s *suite) {
	const n = 8
	ev := s.event(t)
	var dlq *sink
	if s.Features.DeadLetter && s.Features.Redelivery {
		dlq = s.deadLetters(t, ev)
	}
	slow := s.MessageTimeout * 6 / 10
	k := newSink()
	consume(t, s.client(t, group("g"), "a", func(o *core.Options) {
		o.Concurrency = 1
		o.MaxDeliveries = 2
	}), []string{ev}, func(ctx context.Context, m *core.Message) {
		time.Sleep(slow)
		k.record("a", m)
		if err := m.Ack(ctx); err != nil {
			t.Errorf("ack %s: %v", m.ID, err)
		}
	})
	pub := s.client(t, group("publisher"), "p")
	want := make([]string, n)
	for i := range want {
		want[i] = publish(t, pub, ev, map[string]any{"i": int64(i)})
	}
	for i, id := range want {
		d := k.next(t)
		if d.id != id {
			t.Fatalf("delivery %d is %s (deliveries %d), want %s: not once each in publish order", i, d.id, d.deliveries, id)
		}
		if d.deliveries != 1 {
			t.Errorf("message %s counted %d deliveries, want 1", d.id, d.deliveries)
		}
	}
	k.none(t, 3*s.MessageTimeout)
	if dlq != nil {
		dlq.none(t, s.MessageTimeout)
	}
}

// testManyConsumeCalls: many Consume calls on one client (more than a
// connection pool's default size) leave it able to acknowledge, publish
// and reply.
func testManyConsumeCalls(t *testing.T, s *suite) {
	const n = 30
	b := s.client(t, group("g"), "many")
	events := make([]string, n)
	k := newSink()
	for i := range events {
		events[i] = s.event(t)
		consume(t, b, []string{events[i]}, func(ctx context.Context, m *core.Message) {
			if data := mustData(t, m); field(t, data, "n") == int64(9) { // the call
				if err := m.Reply(ctx, map[string]any{"echo": data}); err != nil {
					t.Errorf("reply from consumer %d: %v", i, err)
				}
			}
			if err := m.Ack(ctx); err != nil {
				t.Errorf("ack on consumer %d: %v", i, err)
			}
			k.record(m.Event, m)
		})
	}
	pub := s.client(t, group("publisher"), "p")
	want := map[string]string{} // id by event: ids are unique per event only
	for _, ev := range events {
		want[ev] = publish(t, pub, ev, map[string]any{"n": int64(1)})
	}
	for range n {
		d := k.next(t)
		if want[d.event] != d.id {
			t.Fatalf("unexpected delivery %s on %s", d.id, d.event)
		}
		delete(want, d.event)
	}
	// The client itself can still publish and call.
	publish(t, b, s.event(t), map[string]any{"from": "many"})
	if err := call(t, s.client(t, group("caller"), "c"), events[n-1], 9); err != nil {
		t.Fatal(err)
	}
	k.next(t)
	k.none(t, 2*s.MessageTimeout)
}

func mustData(t *testing.T, m *core.Message) any {
	data, err := m.Data()
	if err != nil {
		t.Errorf("decode %s: %v", m.ID, err)
	}
	return data
}

// testDeadLetterOfDeadLetter: consuming EV:dlq with a handler that does
// not acknowledge, past MaxDeliveries, and that rejects, never puts
// anything in EV:dlq:dlq.
func testDeadLetterOfDeadLetter(t *testing.T, s *suite) {
	ev := s.event(t)
	dlqEv := core.DeadLetterEvent(ev)
	if s.Cleanup != nil {
		t.Cleanup(func() { s.Cleanup(t, []string{core.DeadLetterEvent(dlqEv)}) })
	}
	again := s.deadLetters(t, dlqEv)

	consume(t, s.client(t, group("g"), "a"), []string{ev}, func(ctx context.Context, m *core.Message) {
		if err := m.Reject(ctx, "poison"); err != nil {
			t.Errorf("reject: %v", err)
		}
	})
	k := newSink()
	redelivery := s.Features.Redelivery
	consume(t, s.client(t, group("inspect"), "i", func(o *core.Options) { o.MaxDeliveries = 1 }), []string{dlqEv},
		func(ctx context.Context, m *core.Message) {
			k.record("i", m)
			if !redelivery || m.Deliveries > 1 {
				// Whether Reject fails or not is the driver's; it must not
				// dead-letter a dead letter.
				_ = m.Reject(ctx, "still poison")
			}
			// Otherwise not acknowledged: redelivered past MaxDeliveries.
		})
	id := publish(t, s.client(t, group("publisher"), "p"), ev, map[string]any{"poison": true})
	d := k.next(t)
	if d.headers[core.HeaderID] != id {
		t.Fatalf("dead letter %v, want the one of %s", d.headers, id)
	}
	if redelivery {
		if d := k.next(t); d.deliveries < 2 {
			t.Errorf("dead letter redelivered with count %d, want at least 2", d.deliveries)
		}
	}
	again.none(t, 3*s.MessageTimeout)
}
