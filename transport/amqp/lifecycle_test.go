package amqp

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// TestCloseLeavesNoGoroutines: after Close nothing of the broker runs
// (connections, consumers, timers, the callback queue), and a pending call
// ends with ErrClosed. Not parallel, so that goleak sees only this test's
// goroutines.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	// Registered first, so that it runs after every other cleanup.
	brokertest.NoLeaks(t)
	ev, silent, unsettled := "PING", "SILENT", "UNSETTLED"
	url := serverURL(t)
	adm, exchange, _ := testExchange(t, url, "spectacles-close", "", ev, silent, unsettled)

	o := opts("g", "c")
	o.MessageTimeout = time.Minute
	o.Logger = testLogger(t)
	b, err := Open(ctxT(t), Config{Options: o, URL: url, Exchange: exchange})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.CheckClose(t, b, ev, silent, func() {
		// A message left unsettled: its MessageTimeout timer is pending at Close.
		got := make(chan struct{}, 16)
		if err := b.Consume(context.Background(), []string{unsettled}, func(context.Context, *core.Message) { got <- struct{}{} }); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Publish(ctxT(t), unsettled, 1); err != nil {
			t.Fatal(err)
		}
		<-got
	})
	if _, err := b.PublishBatch(ctxT(t), []core.Outgoing{{Event: ev, Data: 1}}); !errors.Is(err, core.ErrClosed) {
		t.Errorf("batch after close: %v", err)
	}
	// The unsettled message went back to its queue, marked redelivered.
	waitQueueLen(t, adm, QueueName(exchange, "", unsettled), 1)
}

// TestReconnect cuts the driver's connections (a proxy between it and
// RabbitMQ): a message in a handler at that moment cannot be acknowledged
// and comes back, counted as a redelivery; publishing waits out the outage;
// calls work again.
func TestReconnect(t *testing.T) {
	t.Parallel()
	url, proxy, proxied := proxyServer(t)
	_, exchange, track := testExchange(t, url, "spectacles-reconnect", "")
	ev, callEv := "HOLD", "CALL"
	track(spectaclesQueues(exchange, "g", ev, callEv)...)

	logs := &logBuffer{t: t}
	o := opts("g", "c")
	o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := openBroker(t, Config{Options: o, URL: proxied, Exchange: exchange, Subgroup: "g"})
	holding := make(chan *core.Message, 1)
	release := make(chan struct{})
	ackErr := make(chan error, 1)
	h, got := collect(t, true)
	var first atomic.Bool
	startConsume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) {
		if first.CompareAndSwap(false, true) {
			holding <- m
			<-release
			ackErr <- m.Ack(ctx)
			return
		}
		h(ctx, m)
	})
	startConsume(t, b, []string{callEv}, func(ctx context.Context, m *core.Message) {
		_ = m.Reply(ctx, "pong")
		_ = m.Ack(ctx)
	})
	pub := openBroker(t, Config{Options: opts("p", "p"), URL: proxied, Exchange: exchange})
	id, err := pub.Publish(ctxT(t), ev, "held")
	if err != nil {
		t.Fatal(err)
	}
	if m := <-holding; m.ID != id {
		t.Fatalf("holding %s, want %s", m.ID, id)
	}

	// The outage: connections cut, new ones refused for a while.
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		proxy.restart(time.Second)
	}()
	time.Sleep(100 * time.Millisecond)
	close(release)
	if err := <-ackErr; err == nil || !errors.Is(err, amqp091.ErrClosed) {
		t.Errorf("ack across a lost connection: err = %v, want one wrapping amqp091.ErrClosed", err)
	}
	// Published during the outage: waits for the connection.
	after, err := pub.Publish(ctxT(t), ev, "after")
	if err != nil {
		t.Fatalf("publish across the outage: %v", err)
	}
	<-restarted
	seen := map[string]*core.Message{}
	for len(seen) < 2 {
		m := next(t, got)
		seen[m.ID] = m
	}
	if m := seen[id]; m == nil || m.Deliveries != 2 {
		t.Errorf("held message: %+v, want it back with 2 deliveries", m)
	}
	if m := seen[after]; m == nil || m.Deliveries != 1 {
		t.Errorf("message published during the outage: %+v", m)
	}
	none(t, got, 500*time.Millisecond)
	if _, err := pub.Call(ctxT(t), callEv, "ping"); err != nil {
		t.Errorf("call after the outage: %v", err)
	}
	u, _ := parseURL(url)
	text := logs.String()
	if !strings.Contains(text, "reconnected to RabbitMQ") || !strings.Contains(text, "subscribed again") {
		t.Errorf("the logs do not tell the reconnection:\n%s", text)
	}
	if u.Password != "" && strings.Contains(text, ":"+u.Password+"@") || strings.Contains(text, url) {
		t.Errorf("the logs show the password:\n%s", text)
	}
}

// logBuffer keeps what a logger wrote, and shows it in the test log.
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	sb strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.sb.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sb.String()
}

// TestConsumeWhileUnreachable: Consume gives up after ConnectTimeout while
// RabbitMQ is unreachable, and works once it is back.
func TestConsumeWhileUnreachable(t *testing.T) {
	t.Parallel()
	url, proxy, proxied := proxyServer(t)
	_, exchange, _ := testExchange(t, url, "spectacles-unreachable", "", "E")
	b := openBroker(t, Config{Options: opts("g", "c"), URL: proxied, Exchange: exchange, ConnectTimeout: 300 * time.Millisecond})
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		proxy.restart(1500 * time.Millisecond)
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	err := b.Consume(context.Background(), []string{"E"}, func(context.Context, *core.Message) {})
	if err == nil {
		t.Fatal("consume succeeded while RabbitMQ was unreachable")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("consume took %s to fail", d)
	}
	<-restarted
	h, got := collect(t, true)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		if err = b.Consume(ctx, []string{"E"}, h); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("consume after the outage: %v", err)
	}
	if _, err := b.Publish(ctxT(t), "E", 1); err != nil {
		t.Fatal(err)
	}
	next(t, got)
}

// TestSlowHandlerKeepsItsMessage: a handler slower than MessageTimeout
// keeps its message (no second delivery, and its Ack works); a handler
// that returns without settling, after MessageTimeout, hands the message
// over at once.
func TestSlowHandlerKeepsItsMessage(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	_, exchange, _ := testExchange(t, url, "spectacles-slow", "", "SLOW", "LEFT")
	o := opts("g", "c")
	o.MessageTimeout = 200 * time.Millisecond
	b := openBroker(t, Config{Options: o, Exchange: exchange})

	type result struct {
		m   *core.Message
		err error
		at  time.Time
	}
	slow := make(chan result, 4)
	startConsume(t, b, []string{"SLOW"}, func(ctx context.Context, m *core.Message) {
		time.Sleep(700 * time.Millisecond)
		slow <- result{m, m.Ack(ctx), time.Now()}
	})
	if _, err := b.Publish(ctxT(t), "SLOW", "work"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-slow:
		if r.err != nil || r.m.Deliveries != 1 {
			t.Errorf("slow handler: deliveries %d, ack err %v", r.m.Deliveries, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
	select {
	case r := <-slow:
		t.Errorf("delivered again: %+v", r.m)
	case <-time.After(time.Second):
	}

	// Returns unsettled after 500ms: handed over when it returns; an Ack
	// from elsewhere after that fails.
	left := make(chan result, 4)
	lateAck := make(chan error, 1)
	startConsume(t, b, []string{"LEFT"}, func(ctx context.Context, m *core.Message) {
		if m.Deliveries == 1 {
			time.Sleep(500 * time.Millisecond)
			go func() {
				time.Sleep(300 * time.Millisecond)
				lateAck <- m.Ack(ctx)
			}()
			left <- result{m: m, at: time.Now()}
			return
		}
		left <- result{m, m.Ack(ctx), time.Now()}
	})
	id, err := b.Publish(ctxT(t), "LEFT", "work")
	if err != nil {
		t.Fatal(err)
	}
	var got []result
	for len(got) < 2 {
		select {
		case r := <-left:
			got = append(got, r)
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d deliveries", len(got))
		}
	}
	if got[0].m.ID != id || got[1].m.ID != id || got[1].m.Deliveries != 2 || got[1].err != nil {
		t.Errorf("deliveries %+v %+v", got[0].m, got[1].m)
	}
	if d := got[1].at.Sub(got[0].at); d > 250*time.Millisecond {
		t.Errorf("handed over %s after the handler returned, want at once", d)
	}
	if err := <-lateAck; !errors.Is(err, ErrHandedOver) {
		t.Errorf("late ack: err = %v, want ErrHandedOver", err)
	}
}

// TestPublishBatchKeepsOrder: a batch arrives in order.
func TestPublishBatchKeepsOrder(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	_, exchange, _ := testExchange(t, url, "spectacles-batch", "", "A", "B")
	o := opts("g", "c")
	o.Concurrency = 1
	b := openBroker(t, Config{Options: o, Exchange: exchange})
	h, got := collect(t, true)
	startConsume(t, b, []string{"A"}, h)
	hb, gotB := collect(t, true)
	startConsume(t, b, []string{"B"}, hb)
	const n = 300
	msgs := make([]core.Outgoing, n)
	for i := range msgs {
		ev := "A"
		if i%10 == 9 {
			ev = "B"
		}
		msgs[i] = core.Outgoing{Event: ev, Data: map[string]any{"i": int64(i)}}
	}
	ids, err := b.PublishBatch(ctxT(t), msgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != n {
		t.Fatalf("%d ids for %d messages", len(ids), n)
	}
	var wantA, wantB []string
	for i, id := range ids {
		if msgs[i].Event == "A" {
			wantA = append(wantA, id)
		} else {
			wantB = append(wantB, id)
		}
	}
	for i, id := range wantA {
		if m := next(t, got); m.ID != id {
			t.Fatalf("A message %d is %s, want %s", i, m.ID, id)
		}
	}
	for i, id := range wantB {
		if m := next(t, gotB); m.ID != id {
			t.Fatalf("B message %d is %s, want %s", i, m.ID, id)
		}
	}
	if ids, err := b.PublishBatch(ctxT(t), []core.Outgoing{{Event: "A", Data: 1}, {Event: "", Data: 2}}); err == nil || len(ids) != 0 {
		t.Errorf("batch with an empty event: ids %v err %v", ids, err)
	}
}

// TestDeadLetterKeptWithoutReader: a message rejected while nobody reads
// the dead letters waits in the dead-letter queue Consume declared, for a
// reader of the same subgroup, with its headers.
func TestDeadLetterKeptWithoutReader(t *testing.T) {
	t.Parallel()
	ev := "SEND"
	url := serverURL(t)
	adm, exchange, _ := testExchange(t, url, "spectacles-dlq", "workers", ev, core.DeadLetterEvent(ev))
	b := openBroker(t, Config{Options: opts("workers", "w1"), Exchange: exchange, Subgroup: "workers"})
	rejected := make(chan string, 1)
	startConsume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) {
		if err := m.Reject(ctx, "bad packet"); err != nil {
			t.Errorf("reject: %v", err)
		}
		rejected <- m.ID
	})
	raw, _ := core.Msgpack{}.Marshal(map[string]any{"op": int64(2)})
	id, err := b.Publish(ctxT(t), ev, core.Raw(raw))
	if err != nil {
		t.Fatal(err)
	}
	<-rejected
	waitQueueLen(t, adm, b.QueueName(core.DeadLetterEvent(ev)), 1)

	reader := openBroker(t, Config{Options: opts("workers", "r"), Exchange: exchange, Subgroup: "workers"})
	h, got := collect(t, true)
	startConsume(t, reader, []string{core.DeadLetterEvent(ev)}, h)
	m := next(t, got)
	hd := m.Headers
	if string(m.Raw) != string(raw) || hd[core.HeaderEvent] != ev || hd[core.HeaderID] != id || hd[core.HeaderGroup] != "workers" ||
		hd[core.HeaderClient] != "w1" || hd[core.HeaderReason] != "bad packet" || hd[core.HeaderDeliveries] != "1" || m.Deliveries != 1 {
		t.Errorf("dead letter %q headers %v deliveries %d", m.Raw, hd, m.Deliveries)
	}
	if _, err := time.Parse(time.RFC3339Nano, hd[core.HeaderFailedAt]); err != nil {
		t.Errorf("failed_at: %v", err)
	}
	if _, ok := hd[deliveriesHeader]; ok {
		t.Errorf("the driver's bookkeeping header leaked into Headers: %v", hd)
	}
}

// TestReplyWithoutReplyTo: replying to a published (not called) message
// is an error.
func TestReplyWithoutReplyTo(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	_, exchange, _ := testExchange(t, url, "spectacles-noreply", "", "E")
	b := openBroker(t, Config{Options: opts("g", "c"), Exchange: exchange})
	errs := make(chan error, 1)
	startConsume(t, b, []string{"E"}, func(ctx context.Context, m *core.Message) {
		errs <- m.Reply(ctx, "nobody listens")
		_ = m.Ack(ctx)
	})
	if _, err := b.Publish(ctxT(t), "E", 1); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; !errors.Is(err, ErrNoReplyTo) {
		t.Errorf("reply: err = %v, want ErrNoReplyTo", err)
	}
}

// TestQueueDeletedResubscribes: when the queue is deleted under a
// consumer, RabbitMQ cancels the subscription; the driver declares the
// queue again and goes on.
func TestQueueDeletedResubscribes(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	adm, exchange, _ := testExchange(t, url, "spectacles-deleted", "", "E")
	b := openBroker(t, Config{Options: opts("g", "c"), Exchange: exchange})
	h, got := collect(t, true)
	startConsume(t, b, []string{"E"}, h)
	adm.deleteQueues(b.QueueName("E"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := b.Publish(ctxT(t), "E", 1); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
			return
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no delivery after the queue was deleted and declared again")
		}
	}
}

// TestConsumeCancel: cancelling Consume's context stops that consumer; its
// unsettled message goes to the other client of the group.
func TestConsumeCancel(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	_, exchange, _ := testExchange(t, url, "spectacles-cancel", "", "E")
	o := opts("g", "a")
	o.MessageTimeout = time.Minute
	a := openBroker(t, Config{Options: o, Exchange: exchange})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held := make(chan string, 1)
	if err := a.Consume(ctx, []string{"E"}, func(_ context.Context, m *core.Message) { held <- m.ID }); err != nil {
		t.Fatal(err)
	}
	id, err := a.Publish(ctxT(t), "E", 1)
	if err != nil {
		t.Fatal(err)
	}
	<-held
	cancel()
	b := openBroker(t, Config{Options: opts("g", "b"), Exchange: exchange})
	h, got := collect(t, true)
	startConsume(t, b, []string{"E"}, h)
	if m := next(t, got); m.ID != id || m.Deliveries != 2 {
		t.Errorf("got %s with %d deliveries, want %s with 2", m.ID, m.Deliveries, id)
	}
}

// TestManyConsumersShareAQueue: several clients of one subgroup, and
// several Consume calls of one client, share the messages.
func TestManyConsumersShareAQueue(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	_, exchange, _ := testExchange(t, url, "spectacles-share", "", "E")
	var (
		mu   sync.Mutex
		seen = map[string]string{}
		all  = make(chan struct{})
	)
	const n = 500
	for i := range 3 {
		name := "c" + strconv.Itoa(i)
		b := openBroker(t, Config{Options: opts("g", name), Exchange: exchange, Prefetch: 16})
		startConsume(t, b, []string{"E"}, func(ctx context.Context, m *core.Message) {
			if err := m.Ack(ctx); err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if prev, dup := seen[m.ID]; dup {
				t.Errorf("%s delivered to %s and %s", m.ID, prev, name)
			}
			seen[m.ID] = name
			if len(seen) == n {
				close(all)
			}
		})
	}
	pub := openBroker(t, Config{Options: opts("p", "p"), Exchange: exchange})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range n / 16 {
				if _, err := pub.Publish(ctxT(t), "E", "x"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range n % 16 {
		if _, err := pub.Publish(ctxT(t), "E", "x"); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	select {
	case <-all:
	case <-time.After(15 * time.Second):
		mu.Lock()
		t.Fatalf("%d of %d delivered", len(seen), n)
	}
}

// TestCrashLoopDeadLetters: a message whose clients die before settling
// it (here: close without settling) is counted on each redelivery, though
// RabbitMQ's redelivered flag is only a flag, and so reaches MaxDeliveries
// and is dead-lettered rather than taking clients down forever.
func TestCrashLoopDeadLetters(t *testing.T) {
	t.Parallel()
	ev := "POISON"
	url := serverURL(t)
	adm, exchange, _ := testExchange(t, url, "spectacles-crashloop", "g", ev, core.DeadLetterEvent(ev))
	o := opts("g", "c")
	o.MaxDeliveries = 2
	o.MessageTimeout = time.Minute
	cfg := Config{Options: o, Exchange: exchange, Subgroup: "g"}

	var seen []int
	var id string
	for cycle := range 3 {
		b := openBroker(t, cfg)
		got := make(chan *core.Message, 8)
		startConsume(t, b, []string{ev}, func(_ context.Context, m *core.Message) { got <- m })
		if cycle == 0 {
			var err error
			if id, err = b.Publish(ctxT(t), ev, "poison"); err != nil {
				t.Fatal(err)
			}
		}
		if cycle < 2 {
			m := next(t, got)
			if m.ID != id {
				t.Fatalf("got %s, want %s", m.ID, id)
			}
			seen = append(seen, m.Deliveries)
		} else {
			// Dead-lettered without running the handler.
			waitQueueLen(t, adm, b.QueueName(core.DeadLetterEvent(ev)), 1)
			none(t, got, 300*time.Millisecond)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 2 || seen[0] != 1 || seen[1] != 2 {
		t.Errorf("handlers saw deliveries %v, want [1 2]", seen)
	}
	reader := openBroker(t, Config{Options: opts("g", "r"), Exchange: exchange, Subgroup: "g"})
	h, got := collect(t, true)
	startConsume(t, reader, []string{core.DeadLetterEvent(ev)}, h)
	m := next(t, got)
	if m.Headers[core.HeaderID] != id || m.Headers[core.HeaderDeliveries] != "3" || !strings.Contains(m.Headers[core.HeaderReason], core.ReasonMaxDeliveries) {
		t.Errorf("dead letter headers %v", m.Headers)
	}
	waitQueueLen(t, adm, QueueName(exchange, "g", ev), 0)
}
