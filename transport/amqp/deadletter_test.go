package amqp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
)

// queuedMessage is what a snapshot keeps of a message in a queue.
type queuedMessage struct {
	ID      string
	Body    string
	Headers string // the Spectacles headers (core.Header*), sorted
}

// snapshot reads every message of queue without removing it: basic.get
// without acknowledgement on a channel of its own, then closing the
// channel, which puts them back in place.
func snapshot(t *testing.T, adm *admin, queue string) []queuedMessage {
	t.Helper()
	ch := adm.newChannel()
	defer func() { _ = ch.Close() }()
	var out []queuedMessage
	for range 1000 {
		d, ok, err := ch.Get(queue, false)
		if err != nil {
			t.Fatalf("get from %s: %v", queue, err)
		}
		if !ok {
			return out
		}
		var hs []string
		for _, k := range []string{core.HeaderEvent, core.HeaderID, core.HeaderGroup, core.HeaderClient, core.HeaderReason, core.HeaderDeliveries, core.HeaderFailedAt} {
			hs = append(hs, k+"="+headerString(d.Headers[k]))
		}
		out = append(out, queuedMessage{ID: d.MessageId, Body: string(d.Body), Headers: strings.Join(hs, " ")})
	}
	t.Fatalf("%s holds more than 1000 messages", queue)
	return nil
}

// queueMessages returns the ready messages of queue, or -1 when it does
// not exist.
func queueMessages(t *testing.T, adm *admin, queue string) int {
	t.Helper()
	q, err := adm.channel().QueueDeclarePassive(queue, true, false, false, false, nil)
	var ae *amqp091.Error
	if errors.As(err, &ae) && ae.Code == amqp091.NotFound {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}

// dlqSetup is the set-up of the dead-letter tests: on a new exchange
// named from prefix, n messages of EV dead-lettered to EV:dlq, and the
// queues of both (and of EV:dlq:dlq) deleted when the test ends.
type dlqSetup struct {
	adm      *admin
	exchange string
	ev, dl   string
	dlq      string   // the queue of dl
	payloads []string // of the dead letters, in order
}

func newDLQSetup(t *testing.T, url, prefix string, n int) *dlqSetup {
	t.Helper()
	const ev = "EV"
	adm, exchange, track := testExchange(t, url, prefix, "", ev)
	dl := core.DeadLetterEvent(ev)
	track(QueueName(exchange, "", core.DeadLetterEvent(dl)))
	_, _, payloads, _ := deadLetters(t, url, exchange, "", ev, n)
	return &dlqSetup{adm: adm, exchange: exchange, ev: ev, dl: dl, dlq: QueueName(exchange, "", dl), payloads: payloads}
}

// checkNotDeadLetteredAgain fails the test when a dead letter went on to
// EV:dlq:dlq.
func (s *dlqSetup) checkNotDeadLetteredAgain(t *testing.T) {
	t.Helper()
	if n := queueMessages(t, s.adm, QueueName(s.exchange, "", core.DeadLetterEvent(s.dl))); n > 0 {
		t.Errorf("%d dead letters were dead-lettered again to %s", n, core.DeadLetterEvent(s.dl))
	}
}

// consumeDeadLetters consumes s.dl with a client of o at url, handling
// each delivery with h. The returned stop cancels the consumer, closes the
// client, and checks that no dead letter was dead-lettered again and that
// their queue still holds before (what names the consumer's doing).
func (s *dlqSetup) consumeDeadLetters(t *testing.T, url string, o core.Options, h core.Handler, before []queuedMessage) (stop func(what string)) {
	t.Helper()
	reader := openBroker(t, Config{Options: o, URL: url, Exchange: s.exchange})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := reader.Consume(ctx, []string{s.dl}, h); err != nil {
		t.Fatal(err)
	}
	return func(what string) {
		t.Helper()
		cancel()
		if err := reader.Close(); err != nil {
			t.Fatal(err)
		}
		s.checkNotDeadLetteredAgain(t)
		s.checkUnchanged(t, before, what)
	}
}

// checkUnchanged fails the test when the dead-letter queue no longer
// holds before, the same messages in the same order.
func (s *dlqSetup) checkUnchanged(t *testing.T, before []queuedMessage, what string) {
	t.Helper()
	if after := snapshot(t, s.adm, s.dlq); !slices.Equal(before, after) {
		t.Errorf("%s changed the dead-letter queue:\nbefore %+v\nafter  %+v", what, before, after)
	}
}

// TestReadingDeadLettersLeavesThem: a consumer of EVENT:dlq that never
// settles (spectacles consume --no-ack EVENT:dlq) sees the dead letters
// again after each MessageTimeout, never dead-letters them once more
// (EVENT:dlq:dlq), whatever MaxDeliveries says, and leaves them in their
// queue as they were, in order, when it stops.
func TestReadingDeadLettersLeavesThem(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	s := newDLQSetup(t, url, "spectacles-dlq-read", 3)
	before := snapshot(t, s.adm, s.dlq)
	if len(before) != 3 {
		t.Fatalf("%d dead letters, want 3", len(before))
	}

	o := opts("svc", "inspect")
	o.MessageTimeout = 300 * time.Millisecond
	o.MaxDeliveries = 2
	var (
		mu   sync.Mutex
		seen = map[string]int{}
	)
	stop := s.consumeDeadLetters(t, url, o, func(_ context.Context, m *core.Message) {
		mu.Lock()
		seen[m.ID]++
		mu.Unlock()
	}, before)
	// Each dead letter comes back after each MessageTimeout: well past
	// MaxDeliveries, and it is still there.
	eventually(t, 20*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range before {
			if seen[m.ID] < o.MaxDeliveries+3 {
				return false, fmt.Sprintf("seen %v; want each of the 3 at least %d times", seen, o.MaxDeliveries+3)
			}
		}
		return len(seen) == 3, fmt.Sprintf("seen %v", seen)
	})
	stop("reading")
}

// TestRejectDeadLetter: rejecting a dead letter fails with
// core.ErrRejectDeadLetter and leaves it in place; nothing goes to
// EVENT:dlq:dlq.
func TestRejectDeadLetter(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	s := newDLQSetup(t, url, "spectacles-dlq-reject", 1)
	dl := s.dl
	before := snapshot(t, s.adm, s.dlq)

	o := opts("svc", "rejecter2")
	o.MessageTimeout = 200 * time.Millisecond
	errs := make(chan error, 16)
	stop := s.consumeDeadLetters(t, url, o, func(ctx context.Context, m *core.Message) {
		errs <- m.Reject(ctx, "again")
	}, before)
	for range 2 { // the first delivery and the one after MessageTimeout
		select {
		case err := <-errs:
			if !errors.Is(err, core.ErrRejectDeadLetter) || !strings.Contains(err.Error(), dl) {
				t.Errorf("reject of a dead letter: %v, want core.ErrRejectDeadLetter", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the dead letter was not delivered (again)")
		}
	}
	stop("rejecting")
}

// TestListingDeadLettersLeavesThem: listing dead letters (Entries, what
// `spectacles dlq list EVENT` does) leaves their queue as it was: the same
// messages, unchanged, in order; and a consumer of the dead letters gets
// them afterwards, still not dead-lettered again.
func TestListingDeadLettersLeavesThem(t *testing.T) {
	t.Parallel()
	url := mgmtTestURL(t)
	s := newDLQSetup(t, url, "spectacles-dlq-list", 3)
	adm, exchange, dl, dlq, payloads := s.adm, s.exchange, s.dl, s.dlq, s.payloads
	before := snapshot(t, adm, dlq)

	lister := openBroker(t, Config{Options: opts("svc", "lister"), URL: url, Exchange: exchange})
	for range 3 {
		es, err := lister.Entries(ctxT(t), dl, core.RangeQuery{Count: 10})
		if err != nil || len(es) != 3 {
			t.Fatalf("entries = %v, %v", entryIDs(es), err)
		}
		for i, e := range es {
			if e.ID != before[i].ID || string(e.Raw) != payloads[i] {
				t.Errorf("entry %d = %s %q, want %s %q", i, e.ID, e.Raw, before[i].ID, payloads[i])
			}
		}
	}
	waitReady(t, adm, dlq, 3)
	s.checkUnchanged(t, before, "listing")

	// A reader that acknowledges gets them all, in order, and empties
	// the queue; nothing is dead-lettered again.
	o := opts("svc", "reader")
	o.MaxDeliveries = 1
	o.Concurrency = 1 // in order: one handler at a time
	reader := openBroker(t, Config{Options: o, URL: url, Exchange: exchange})
	h, got := collect(t, true)
	startConsume(t, reader, []string{dl}, h)
	for i := range before {
		if m := next(t, got); m.ID != before[i].ID || string(m.Raw) != payloads[i] {
			t.Errorf("dead letter %d = %s %q, want %s %q", i, m.ID, m.Raw, before[i].ID, payloads[i])
		}
	}
	waitReady(t, adm, dlq, 0)
	s.checkNotDeadLetteredAgain(t)
}
