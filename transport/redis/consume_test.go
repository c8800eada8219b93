package redis

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// TestSlowHandlerIsNotReclaimedBySelf: with Concurrency 1 and a handler
// slower than a quarter of MessageTimeout, messages read ahead used to wait
// in the client until this client's own XAUTOCLAIM took them again,
// queueing second copies, raising their delivery counts until they were
// dead-lettered. Every message must be handled once, in order.
func TestSlowHandlerIsNotReclaimedBySelf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		n              int
		timeout, sleep time.Duration
	}{
		{"Reported", 20, time.Second, 300 * time.Millisecond},
		// Longer than MessageTimeout: the running message and the one
		// queued behind it are refreshed.
		{"LongerThanTimeout", 5, 400 * time.Millisecond, 600 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testSlowHandler(t, tc.n, tc.timeout, tc.sleep)
		})
	}
}

func testSlowHandler(t *testing.T, n int, timeout, sleep time.Duration) {
	url, _, raw, ev := testStream(t)
	pub := openBroker(t, url, Config{Options: core.Options{Logger: testLogger(t)}})
	var want []string
	for i := range n {
		id, err := pub.Publish(ctxT(t), ev, i)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}

	b := openBroker(t, url, Config{Options: core.Options{
		Identity:       core.Identity{Group: unique("g"), Client: "c"},
		MessageTimeout: timeout,
		Concurrency:    1,
		Logger:         testLogger(t),
	}})
	var (
		mu       sync.Mutex
		got      []string
		maxCount int
		all      = make(chan struct{})
	)
	err := b.Consume(ctxT(t), []string{ev}, func(ctx context.Context, m *core.Message) {
		time.Sleep(sleep)
		if err := m.Ack(ctx); err != nil {
			t.Errorf("ack: %v", err)
		}
		mu.Lock()
		got = append(got, m.ID)
		maxCount = max(maxCount, m.Deliveries)
		if len(got) == n {
			close(all)
		}
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-all:
	case <-time.After(60 * time.Second):
		mu.Lock()
		t.Fatalf("only %d of %d messages handled", len(got), n)
	}
	// Anything reclaimed twice would show up within a reclaim interval.
	time.Sleep(timeout)
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("handled %d times, in this order:\n%v\nwant each once, in publish order:\n%v", len(got), got, want)
	}
	if maxCount != 1 {
		t.Errorf("a message was delivered %d times, want 1", maxCount)
	}
	if dl := raw.XLen(ctxT(t), core.DeadLetterEvent(ev)).Val(); dl != 0 {
		t.Errorf("%d messages dead-lettered, want none", dl)
	}
}

// TestHandlerLongerThanTimeoutKeepsItsMessage: a running handler's message
// stays this client's past MessageTimeout (its idle time is refreshed):
// another client of the group does not take it, and its delivery count is
// not raised.
func TestHandlerLongerThanTimeoutKeepsItsMessage(t *testing.T) {
	t.Parallel()
	url, _, _, ev := testStream(t)
	grp := unique("g")
	opts := func(client string) Config {
		return Config{Options: core.Options{
			Identity:       core.Identity{Group: grp, Client: client},
			MessageTimeout: 400 * time.Millisecond,
			Logger:         testLogger(t),
		}}
	}
	var runs atomic.Int32
	done := make(chan struct{})
	slow := func(ctx context.Context, m *core.Message) {
		runs.Add(1)
		time.Sleep(1500 * time.Millisecond)
		if err := m.Ack(ctx); err != nil {
			t.Errorf("ack: %v", err)
		}
		close(done)
	}
	a := openBroker(t, url, opts("a"))
	if err := a.Consume(ctxT(t), []string{ev}, slow); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Publish(ctxT(t), ev, "slow"); err != nil {
		t.Fatal(err)
	}
	// Start b only once a holds the message.
	deadline := time.Now().Add(15 * time.Second)
	for runs.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("handler never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b := openBroker(t, url, opts("b"))
	if err := b.Consume(ctxT(t), []string{ev}, func(ctx context.Context, m *core.Message) {
		t.Errorf("client b got %s (deliveries %d) while a was handling it", m.ID, m.Deliveries)
		_ = m.Ack(ctx)
	}); err != nil {
		t.Fatal(err)
	}
	<-done
	if r := runs.Load(); r != 1 {
		t.Errorf("handler ran %d times, want 1", r)
	}
}

// TestManyConsumeCallsLeaveThePool: each Consume call's reader used to pin
// a connection of the client's pool; with as many calls as the default
// pool has connections, publishes, acks and reclaims found none left.
func TestManyConsumeCallsLeaveThePool(t *testing.T) {
	t.Parallel()
	url, _ := serverURL(t)
	raw := rawClient(t, url)
	n := max(30, 10*runtime.GOMAXPROCS(0)+10) // above go-redis's default pool
	b := openBroker(t, url, Config{Options: core.Options{
		Identity: core.Identity{Group: unique("g"), Client: "c"},
		Logger:   testLogger(t),
	}})
	events := make([]string, n)
	got := make(chan string, n)
	for i := range events {
		events[i] = testEvent(t, raw)
		err := b.Consume(ctxT(t), []string{events[i]}, func(ctx context.Context, m *core.Message) {
			if err := m.Reply(ctx, "pong"); err != nil {
				t.Errorf("reply: %v", err)
			}
			if err := m.Ack(ctx); err != nil {
				t.Errorf("ack %s: %v", m.Event, err)
			}
			got <- m.Event
		})
		if err != nil {
			t.Fatalf("consume %d: %v", i, err)
		}
	}
	for _, ev := range events {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := b.Publish(ctx, ev, "ping")
		cancel()
		if err != nil {
			t.Fatalf("publish with %d Consume calls: %v", n, err)
		}
	}
	for range n {
		select {
		case <-got:
		case <-time.After(30 * time.Second):
			t.Fatal("not every consumer got its message")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := b.Call(ctx, events[0], "ping")
	if err != nil {
		t.Fatalf("call with %d Consume calls: %v", n, err)
	}
	if v, _ := p.Data(); v != "pong" {
		t.Errorf("reply %v, want pong", v)
	}
	<-got
	if pending := raw.XPending(ctxT(t), events[0], b.cfg.Identity.Group).Val(); pending.Count != 0 {
		t.Errorf("%d messages still pending after their acks", pending.Count)
	}
}

// TestDeadLetterStreamIsNeverDeadLettered: consuming EV:dlq without
// acknowledging (spectacles consume --no-ack EV:dlq) used to move its
// messages to EV:dlq:dlq after MaxDeliveries. Reject on a dead letter
// fails and leaves it pending.
func TestDeadLetterStreamIsNeverDeadLettered(t *testing.T) {
	t.Parallel()
	url, _, raw, ev := testStream(t)
	dlq := core.DeadLetterEvent(ev)
	deleteKeys(t, raw, core.DeadLetterEvent(dlq))

	src := openBroker(t, url, Config{Options: core.Options{Identity: core.Identity{Group: unique("g"), Client: "c"}, Logger: testLogger(t)}})
	if err := src.Consume(ctxT(t), []string{ev}, func(ctx context.Context, m *core.Message) {
		if err := m.Reject(ctx, "poison"); err != nil {
			t.Errorf("reject: %v", err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Publish(ctxT(t), ev, "poison"); err != nil {
		t.Fatal(err)
	}

	grp := unique("inspect")
	b := openBroker(t, url, Config{Options: core.Options{
		Identity:       core.Identity{Group: grp, Client: "c"},
		MessageTimeout: 200 * time.Millisecond,
		MaxDeliveries:  1,
		Logger:         testLogger(t),
	}})
	deliveries := make(chan int, 100)
	rejectErrs := make(chan error, 100)
	if err := b.Consume(ctxT(t), []string{dlq}, func(ctx context.Context, m *core.Message) {
		if m.Deliveries%2 == 0 {
			err := m.Reject(ctx, "again")
			if m.Settled() {
				t.Error("a rejected dead letter counts as settled")
			}
			rejectErrs <- err
		}
		deliveries <- m.Deliveries
	}); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case n := <-deliveries:
			if n < 4 {
				continue
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the dead letter was not redelivered past MaxDeliveries")
		}
		break
	}
	if err := <-rejectErrs; !errors.Is(err, core.ErrRejectDeadLetter) || !errors.Is(err, core.ErrUnsupported) {
		t.Errorf("reject of a dead letter: err = %v, want core.ErrRejectDeadLetter", err)
	}
	if n := raw.Exists(ctxT(t), core.DeadLetterEvent(dlq)).Val(); n != 0 {
		t.Errorf("%s exists: a dead letter was dead-lettered again", core.DeadLetterEvent(dlq))
	}
	if p := raw.XPending(ctxT(t), dlq, grp).Val(); p.Count != 1 {
		t.Errorf("%d dead letters pending for the inspecting group, want 1", p.Count)
	}
}

// TestReclaimSkipsHeldMessages: when this client's XAUTOCLAIM takes a
// message it holds (its refresh came late), the message is not delivered
// again and its delivery count is put back.
func TestReclaimSkipsHeldMessages(t *testing.T) {
	t.Parallel()
	url, _, raw, ev := testStream(t)
	grp := unique("g")
	b := openBroker(t, url, Config{Options: core.Options{
		Identity:       core.Identity{Group: grp, Client: "c"},
		MessageTimeout: 200 * time.Millisecond,
		Concurrency:    1,
		Logger:         testLogger(t),
	}})
	if err := b.createGroups(ctxT(t), []string{ev}, "0"); err != nil {
		t.Fatal(err)
	}
	id, err := b.Publish(ctxT(t), ev, "held")
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.XReadGroup(ctxT(t), &goredis.XReadGroupArgs{Group: grp, Consumer: "c", Streams: []string{ev, ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	c := &consumer{b: b, streams: []string{ev}, work: make(chan *core.Message, 2), settler: &settler{b: b}, hold: newHoldLimit(1, b.cfg.ReadCount)}
	if !b.held.add(ev, id, c, 1) {
		t.Fatal("not held")
	}
	time.Sleep(300 * time.Millisecond) // idle beyond MessageTimeout
	if err := c.reclaimPass(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-c.work:
		t.Fatalf("held message %s delivered again (deliveries %d)", m.ID, m.Deliveries)
	default:
	}
	p, err := raw.XPendingExt(ctxT(t), &goredis.XPendingExtArgs{Stream: ev, Group: grp, Start: "-", End: "+", Count: 10}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 1 || p[0].RetryCount != 1 || p[0].Consumer != "c" {
		t.Errorf("pending %+v, want %s held by c with its 1 delivery", p, id)
	}

	// Once no longer held, it is reclaimed as a redelivery.
	b.held.remove(ev, id)
	time.Sleep(300 * time.Millisecond)
	if err := c.reclaimPass(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-c.work:
		if m.ID != id || m.Deliveries != 2 {
			t.Errorf("reclaimed %s with %d deliveries, want %s with 2", m.ID, m.Deliveries, id)
		}
	default:
		t.Error("the message, no longer held, was not reclaimed")
	}
}

// The hold limit follows the handlers' rate: 2×Concurrency for slow
// handlers, what they finish in holdBudget for fast ones, up to the
// maximum; it falls by half at most per measure.
func TestHoldLimitAdapts(t *testing.T) {
	h := newHoldLimit(4, 1000)
	now := time.Unix(0, 0)
	h.adapt(now)
	step := func(finished int64) int {
		now = now.Add(holdBudget)
		h.finished += finished
		h.adapt(now)
		return h.limit
	}
	if got := step(1); got != 8 {
		t.Errorf("slow handlers: limit %d, want 2×Concurrency = 8", got)
	}
	if got := step(300); got != 300 {
		t.Errorf("300 finished in holdBudget: limit %d, want 300", got)
	}
	if got := step(50000); got != 1000 {
		t.Errorf("beyond the maximum: limit %d, want 1000", got)
	}
	if got := step(0); got != 500 {
		t.Errorf("a pause: limit %d, want half of 1000", got)
	}
	for range 20 {
		step(0)
	}
	if h.limit != 8 {
		t.Errorf("after a long pause: limit %d, want 8", h.limit)
	}
	// Measures closer together than holdBudget change nothing.
	h.finished += 10000
	h.adapt(now.Add(holdBudget / 2))
	if h.limit != 8 {
		t.Errorf("within holdBudget: limit %d, want 8", h.limit)
	}
	if low := newHoldLimit(600, 1000); low.max != 1200 || low.limit != 1200 {
		t.Errorf("2×Concurrency above ReadCount: limit %d, max %d; want both 1200", low.limit, low.max)
	}
}

// With Concurrency 1 the reader runs the handler itself (consumer.inline):
// messages come in stream order, an Ack inside the handler, an Ack from a
// goroutine after the handler returned and a message reclaimed from a
// dead client all settle, and nothing stays pending.
func TestConcurrencyOneInline(t *testing.T) {
	t.Parallel()
	url, _, raw, ev := testStream(t)
	grp := unique("g")
	// A dead client's message, idle beyond the timeout: reclaimed.
	if err := raw.XGroupCreateMkStream(ctxT(t), ev, grp, "0").Err(); err != nil {
		t.Fatal(err)
	}
	dead, err := raw.XAdd(ctxT(t), &goredis.XAddArgs{Stream: ev, Values: []any{"data", `"dead"`}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.XReadGroup(ctxT(t), &goredis.XReadGroupArgs{Group: grp, Consumer: "dead", Streams: []string{ev, ">"}, Count: 1, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	b := openBroker(t, url, Config{Options: core.Options{
		Identity:       core.Identity{Group: grp, Client: "c"},
		MessageTimeout: 300 * time.Millisecond,
		Concurrency:    1,
		Logger:         testLogger(t),
	}})
	const n = 200
	var ids []string
	for i := range n {
		id, err := b.Publish(ctxT(t), ev, i)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	got := make(chan string, 2*n)
	var running atomic.Int32
	err = b.Consume(ctxT(t), []string{ev}, func(ctx context.Context, m *core.Message) {
		if running.Add(1) != 1 {
			t.Error("two handlers at once with Concurrency 1")
		}
		defer running.Add(-1)
		got <- m.ID
		if m.ID > ids[0] && len(m.ID)%2 == 0 {
			go func() { // acked after the handler returned
				time.Sleep(time.Millisecond)
				if err := m.Ack(ctx); err != nil {
					t.Errorf("late ack: %v", err)
				}
			}()
			return
		}
		if err := m.Ack(ctx); err != nil {
			t.Errorf("ack: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	sawDead := false
	for len(order) < n || !sawDead {
		select {
		case id := <-got:
			if id == dead {
				sawDead = true
				continue
			}
			order = append(order, id)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d messages, dead one reclaimed: %v", len(order), n, sawDead)
		}
	}
	for i := range order {
		if order[i] != ids[i] {
			t.Fatalf("message %d is %s, want %s: out of stream order", i, order[i], ids[i])
		}
	}
	waitNoPending(t, raw, ev, grp)
}

// With Concurrency 1 a consumer that starts with more reclaimable
// messages than it may hold handles them all: the reclaim pass runs at
// once, before the reader has a connection, and can fill the room the
// reader then never waits for (it finishes what it holds itself).
func TestConcurrencyOneReclaimsAtStart(t *testing.T) {
	t.Parallel()
	url, _, raw, _ := testStream(t)
	for round := range 3 { // the race is at start: a few times
		ev := unique("reclaim-at-start")
		grp := unique("g")
		t.Cleanup(func() { raw.Del(context.Background(), ev) })
		if err := raw.XGroupCreateMkStream(ctxT(t), ev, grp, "0").Err(); err != nil {
			t.Fatal(err)
		}
		const n = 6
		for i := range n {
			if err := raw.XAdd(ctxT(t), &goredis.XAddArgs{Stream: ev, Values: []any{"data", strconv.Itoa(i)}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := raw.XReadGroup(ctxT(t), &goredis.XReadGroupArgs{Group: grp, Consumer: "dead", Streams: []string{ev, ">"}, Count: n, Block: -1}).Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond) // idle beyond the message timeout
		b := openBroker(t, url, Config{Options: core.Options{
			Identity:       core.Identity{Group: grp, Client: "c"},
			MessageTimeout: 200 * time.Millisecond,
			Concurrency:    1,
			Logger:         testLogger(t),
		}})
		h, got := brokertest.Collect(t, true)
		if err := b.Consume(ctxT(t), []string{ev}, h); err != nil {
			t.Fatal(err)
		}
		for range n {
			brokertest.Next(t, got)
		}
		waitNoPending(t, raw, ev, grp)
		if err := b.Close(); err != nil {
			t.Fatalf("round %d: close: %v", round, err)
		}
	}
}
