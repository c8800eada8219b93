package amqp

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// TestStalledHandlerReleasesPrefetched: client A's only handler blocks
// forever on its first message; the messages RabbitMQ prefetched to A
// behind it reach client B of the same group once they waited
// MessageTimeout, as pending messages of a stalled Redis consumer are
// claimed. Only A's running message stays with A.
func TestStalledHandlerReleasesPrefetched(t *testing.T) {
	t.Parallel()
	const ev, n = "EV", 50
	url := serverURL(t)
	_, exchange, _ := testExchange(t, url, "spectacles-stall", "", ev)
	o := opts("svc", "a")
	o.MessageTimeout = time.Second
	o.Concurrency = 1
	a := openBroker(t, Config{Options: o, URL: url, Exchange: exchange})
	o.Identity.Client = "b"
	b := openBroker(t, Config{Options: o, URL: url, Exchange: exchange})

	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before the brokers close
	held := make(chan string, n)
	startConsume(t, a, []string{ev}, func(ctx context.Context, m *core.Message) {
		held <- m.ID
		<-release
	})
	var (
		mu      sync.Mutex
		handled = map[string]int{}
	)
	startConsume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) {
		if err := m.Ack(ctx); err != nil {
			t.Errorf("ack: %v", err)
		}
		mu.Lock()
		handled[m.ID]++
		mu.Unlock()
	})
	var ids []string
	for i := range n {
		id, err := a.Publish(ctxT(t), ev, i)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	var stuck string
	select {
	case stuck = <-held:
	case <-time.After(15 * time.Second):
		t.Fatal("A got no message")
	}
	// An upper bound on the wait (MessageTimeout and slack for a loaded
	// machine): without the fix the messages stay with A until its
	// connection dies.
	eventually(t, o.MessageTimeout+15*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		var missing []string
		for _, id := range ids {
			if id != stuck && handled[id] == 0 {
				missing = append(missing, id)
			}
		}
		return len(missing) == 0, fmt.Sprintf("%d of the %d messages behind A's stalled handler did not reach B", len(missing), n-1)
	})
	mu.Lock()
	defer mu.Unlock()
	for id, k := range handled {
		if k != 1 || id == stuck {
			t.Errorf("B handled %s %d times (A holds %s)", id, k, stuck)
		}
	}
	select {
	case id := <-held:
		t.Errorf("A's stalled consumer got another message: %s", id)
	default:
	}
}

// TestSlowHandlerInOrder is the conformance suite's slow handler on
// AMQP: one client, concurrency 1, a handler slower than half the
// MessageTimeout (so that the prefetched messages behind it wait longer
// than MessageTimeout): every message is handled exactly once, in order,
// and none is dead-lettered.
func TestSlowHandlerInOrder(t *testing.T) {
	t.Parallel()
	const ev, n = "EV", 8
	url := serverURL(t)
	_, exchange, _ := testExchange(t, url, "spectacles-slow-order", "", ev)
	o := opts("svc", "slow")
	o.MessageTimeout = 500 * time.Millisecond
	o.Concurrency = 1
	o.MaxDeliveries = 2
	b := openBroker(t, Config{Options: o, URL: url, Exchange: exchange})
	got := make(chan *core.Message, 4*n)
	startConsume(t, b, []string{ev}, func(ctx context.Context, m *core.Message) {
		time.Sleep(o.MessageTimeout*6/10 + 10*time.Millisecond)
		if err := m.Ack(ctx); err != nil {
			t.Errorf("ack %s: %v", m.ID, err)
		}
		got <- m
	})
	dead := make(chan *core.Message, n)
	reader := openBroker(t, Config{Options: opts("svc", "dlq"), URL: url, Exchange: exchange})
	startConsume(t, reader, []string{core.DeadLetterEvent(ev)}, func(ctx context.Context, m *core.Message) {
		_ = m.Ack(ctx)
		dead <- m
	})
	msgs := make([]core.Outgoing, n)
	for i := range msgs {
		msgs[i] = core.Outgoing{Event: ev, Data: i}
	}
	ids, err := b.PublishBatch(ctxT(t), msgs)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	deadline := time.After(time.Duration(n)*o.MessageTimeout + 20*time.Second)
	for len(order) < n {
		select {
		case m := <-got:
			order = append(order, m.ID)
		case m := <-dead:
			t.Fatalf("dead-lettered: %s %v", m.ID, m.Headers)
		case <-deadline:
			t.Fatalf("handled %d of %d", len(order), n)
		}
	}
	if !slices.Equal(order, ids) {
		t.Errorf("handled in the order %v, want %v", order, ids)
	}
	select {
	case m := <-got:
		t.Errorf("handled twice: %s (deliveries %d)", m.ID, m.Deliveries)
	case m := <-dead:
		t.Errorf("dead-lettered: %s", m.ID)
	case <-time.After(2 * o.MessageTimeout):
	}
}
