package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// hub is an in-memory broker server: every group of an event gets each
// message once, and a group created late sees the event's history, as a
// Redis consumer group created at id 0 does.
type hub struct {
	mu      sync.Mutex
	log     map[string][][]byte
	groups  map[string]map[string]chan *core.Message
	nextID  int
	acks    atomic.Int64
	dropped atomic.Int64

	// drop, when set, loses every message whose number (from 1) it
	// returns true for.
	drop func(n int) bool
	// redeliver, when set, delivers every message twice.
	redeliver bool
}

func newHub() *hub {
	return &hub{log: map[string][][]byte{}, groups: map[string]map[string]chan *core.Message{}}
}

func (h *hub) Ack(context.Context, *core.Message) error                { h.acks.Add(1); return nil }
func (h *hub) Reply(context.Context, *core.Message, []byte) error      { return nil }
func (h *hub) DeadLetter(context.Context, *core.Message, string) error { return nil }
func (h *hub) deliver(ch chan *core.Message, event string, raw []byte, id string) {
	ch <- core.NewMessage(event, id, raw, 1, core.Msgpack{}, h)
	if h.redeliver {
		ch <- core.NewMessage(event, id, raw, 2, core.Msgpack{}, h)
	}
}

// group returns the channel of group for event, creating it with the
// event's history.
func (h *hub) group(event, group string) chan *core.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	gs := h.groups[event]
	if gs == nil {
		gs = map[string]chan *core.Message{}
		h.groups[event] = gs
	}
	ch := gs[group]
	if ch == nil {
		ch = make(chan *core.Message, 1<<16)
		gs[group] = ch
		for i, raw := range h.log[event] {
			h.deliver(ch, event, raw, fmt.Sprint(i))
		}
	}
	return ch
}

// fake is one client of the hub; it implements core.Broker.
type fake struct {
	hub        *hub
	id         core.Identity
	closed     atomic.Bool
	consumeErr error

	stop    context.CancelFunc // ends the consumer
	running sync.WaitGroup     // the consumer loop and handlers
}

func (f *fake) Publish(_ context.Context, event string, data any) (string, error) {
	if f.closed.Load() {
		return "", core.ErrClosed
	}
	raw, err := core.Msgpack{}.Marshal(data)
	if err != nil {
		return "", err
	}
	raw = append([]byte(nil), raw...)
	h := f.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nextID++
	if h.drop != nil && h.drop(h.nextID) {
		h.dropped.Add(1)
		return fmt.Sprint(h.nextID), nil
	}
	id := fmt.Sprint(len(h.log[event]))
	h.log[event] = append(h.log[event], raw)
	for _, ch := range h.groups[event] {
		h.deliver(ch, event, raw, id)
	}
	return id, nil
}

func (f *fake) Call(context.Context, string, any) (*core.Payload, error) {
	return nil, core.ErrUnsupported
}

// Consume follows core.Broker: it returns once the group exists and
// handles messages in the background until ctx ends or Close.
func (f *fake) Consume(ctx context.Context, events []string, handler core.Handler) error {
	if f.consumeErr != nil {
		return f.consumeErr
	}
	if err := f.id.Validate(); err != nil {
		return err
	}
	ch := f.hub.group(events[0], f.id.Group)
	ctx, f.stop = context.WithCancel(ctx)
	hctx := context.WithoutCancel(ctx)
	f.running.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-ch:
				f.running.Go(func() { core.RunHandler(hctx, slog.Default(), handler, m) })
			}
		}
	})
	return nil
}

// Close stops the consumer and waits for its handlers.
func (f *fake) Close() error {
	f.closed.Store(true)
	if f.stop != nil {
		f.stop()
	}
	f.running.Wait()
	return nil
}

func (h *hub) newBroker(id core.Identity) (core.Broker, error) {
	return &fake{hub: h, id: id}, nil
}

func TestRunReceivesEveryMessage(t *testing.T) {
	h := newHub()
	res, err := Run(t.Context(), h.newBroker, Config{Messages: 500, PayloadBytes: 64, Consumers: 3, Publishers: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Messages != 500 || res.PayloadBytes != 64 || res.Consumers != 3 || res.Publishers != 4 {
		t.Errorf("result echoes config wrongly: %+v", res)
	}
	if got := h.acks.Load(); got != 501 { // 500 plus the warm-up message
		t.Errorf("acks = %d, want 501", got)
	}
	if res.PublishPerSec <= 0 || res.EndToEndPerSec <= 0 {
		t.Errorf("rates must be positive: %+v", res)
	}
	l := res.Latency
	if l.P50 < 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.Max {
		t.Errorf("latency percentiles out of order: %+v", l)
	}
	if !strings.HasPrefix(res.Event, "spectacles-bench-") || res.Group == "" {
		t.Errorf("event %q group %q: want unique generated names", res.Event, res.Group)
	}
	for _, raw := range h.log[res.Event] {
		if len(raw) != 64 {
			t.Fatalf("payload of %d bytes, want 64", len(raw))
		}
	}
}

func TestRunJSONShape(t *testing.T) {
	res, err := Run(t.Context(), newHub().newBroker, Config{Messages: 10, PayloadBytes: MinPayloadBytes})
	if err != nil {
		t.Fatal(err)
	}
	res.Broker = "fake"
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"broker", "messages", "payload_bytes", "consumers", "publishers", "publish_per_s", "end_to_end_per_s", "consume_per_s", "latency_ms"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON %s lacks %q", b, k)
		}
	}
	if len(m) != 9 {
		t.Errorf("JSON %s has extra keys", b)
	}
	lat, _ := m["latency_ms"].(map[string]any)
	for _, k := range []string{"p50", "p90", "p99", "max"} {
		if _, ok := lat[k]; !ok {
			t.Errorf("latency_ms lacks %q in %s", k, b)
		}
	}
}

func TestRunDefaultsAndUniqueNames(t *testing.T) {
	a, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Config{}.withDefaults()
	if a.Event == b.Event || a.Group == b.Group {
		t.Errorf("two runs share names: %q %q", a.Event, b.Event)
	}
	if a.Messages != DefaultMessages || a.PayloadBytes != DefaultPayloadBytes || a.Consumers != DefaultConsumers ||
		a.Publishers != DefaultPublishers || a.StallTimeout != DefaultStallTimeout {
		t.Errorf("defaults not applied: %+v", a)
	}
	c, _ := Config{Event: "e", Group: "g"}.withDefaults()
	if c.Event != "e" || c.Group != "g" {
		t.Errorf("given names replaced: %+v", c)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Messages: -1}, "messages"},
		{Config{PayloadBytes: 15}, "at least 16"},
		{Config{Consumers: -2}, "consumers"},
		{Config{Publishers: -3}, "publishers"},
		{Config{StallTimeout: -time.Second}, "stall"},
	} {
		_, err := Run(t.Context(), newHub().newBroker, c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want one mentioning %q", c.cfg, err, c.want)
		}
	}
}

func TestRunCountsRedeliveriesOnce(t *testing.T) {
	h := newHub()
	h.redeliver = true
	res, err := Run(t.Context(), h.newBroker, Config{Messages: 100, PayloadBytes: 32, Consumers: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Copies still queued when the last new message arrives go uncounted.
	if res.Redeliveries < 1 || res.Redeliveries > 100 {
		t.Errorf("redeliveries = %d, want 1 to 100", res.Redeliveries)
	}
	if res.Messages != 100 {
		t.Errorf("messages = %d", res.Messages)
	}
}

func TestRunFailsWhenMessagesAreLost(t *testing.T) {
	h := newHub()
	h.drop = func(n int) bool { return n == 5 }
	start := time.Now()
	_, err := Run(t.Context(), h.newBroker, Config{Messages: 20, PayloadBytes: 16, StallTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "received 19 of 20") {
		t.Fatalf("err = %v, want a stall naming 19 of 20", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("stall detection took %s", time.Since(start))
	}
}

func TestRunFailsWhenConsumeCannotStart(t *testing.T) {
	boom := errors.New("boom")
	h := newHub()
	newBroker := func(id core.Identity) (core.Broker, error) {
		return &fake{hub: h, id: id, consumeErr: boom}, nil
	}
	_, err := Run(t.Context(), newBroker, Config{Messages: 5, StallTimeout: 5 * time.Second})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}

func TestRunFailsWhenBrokerCannotOpen(t *testing.T) {
	boom := errors.New("no server")
	var opened []*fake
	h := newHub()
	newBroker := func(id core.Identity) (core.Broker, error) {
		if len(opened) == 2 {
			return nil, boom
		}
		f := &fake{hub: h, id: id}
		opened = append(opened, f)
		return f, nil
	}
	_, err := Run(t.Context(), newBroker, Config{Messages: 5, Consumers: 3})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the open error", err)
	}
	for i, f := range opened {
		if !f.closed.Load() {
			t.Errorf("broker %d left open", i)
		}
	}
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	h := newHub()
	h.drop = func(n int) bool { return n > 1 } // only the warm-up arrives
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := Run(ctx, h.newBroker, Config{Messages: 10})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestPercentile(t *testing.T) {
	s := make([]time.Duration, 100)
	for i := range s {
		s[i] = time.Duration(i+1) * time.Millisecond
	}
	l := summarize(s)
	if l.P50 != 50 || l.P90 != 90 || l.P99 != 99 || l.Max != 100 {
		t.Errorf("summarize = %+v", l)
	}
	if got := summarize([]time.Duration{1500 * time.Microsecond}); got.P50 != 1.5 || got.Max != 1.5 {
		t.Errorf("single sample: %+v", got)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunPublishPhaseStartsNoConsumer(t *testing.T) {
	h := newHub()
	res, err := Run(t.Context(), h.newBroker, Config{Messages: 200, PayloadBytes: 32, Consumers: 3, Phase: PhasePublish})
	if err != nil {
		t.Fatal(err)
	}
	if res.Consumers != 0 || h.acks.Load() != 0 || len(h.groups[res.Event]) != 0 {
		t.Errorf("publish phase consumed: %d consumers reported, %d acks, %d groups", res.Consumers, h.acks.Load(), len(h.groups[res.Event]))
	}
	if got := len(h.log[res.Event]); got != 200 { // no warm-up message either
		t.Errorf("%d messages published, want 200", got)
	}
	if res.PublishPerSec <= 0 || res.EndToEndPerSec != 0 || res.ConsumePerSec != 0 || res.Latency != (Latency{}) {
		t.Errorf("publish phase reports more than publishing: %+v", res)
	}
}

// In the consume phase nothing is acknowledged before every message is
// published: the consumers hold back until then.
func TestRunConsumePhaseConsumesAfterPublishing(t *testing.T) {
	h := newHub()
	var ackedWhilePublishing atomic.Int64
	publishing := atomic.Bool{}
	newBroker := func(id core.Identity) (core.Broker, error) {
		b, _ := h.newBroker(id)
		return &watchedPublisher{Broker: b, before: func() {
			if publishing.CompareAndSwap(false, true) {
				return
			}
			ackedWhilePublishing.Store(h.acks.Load())
		}}, nil
	}
	res, err := Run(t.Context(), newBroker, Config{Messages: 300, PayloadBytes: 32, Consumers: 2, Publishers: 3, Phase: PhaseConsume})
	if err != nil {
		t.Fatal(err)
	}
	if got := ackedWhilePublishing.Load(); got > 1 { // the warm-up message only
		t.Errorf("%d acks while publishing, want at most the warm-up's", got)
	}
	if got := h.acks.Load(); got != 301 {
		t.Errorf("acks = %d, want 301", got)
	}
	if res.ConsumePerSec <= 0 || res.PublishPerSec != 0 || res.EndToEndPerSec != 0 || res.Phase != PhaseConsume {
		t.Errorf("consume phase rates: %+v", res)
	}
}

// watchedPublisher calls before ahead of every Publish.
type watchedPublisher struct {
	core.Broker
	before func()
}

func (w *watchedPublisher) Publish(ctx context.Context, event string, data any) (string, error) {
	w.before()
	return w.Broker.Publish(ctx, event, data)
}

func TestRunReportsCPU(t *testing.T) {
	res, err := Run(t.Context(), newHub().newBroker, Config{Messages: 2000, PayloadBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	if res.CPUPerMessage <= 0 {
		t.Errorf("CPU per message %s, want a positive figure on this platform", res.CPUPerMessage)
	}
}

func TestParsePhase(t *testing.T) {
	for in, want := range map[string]Phase{"": PhaseEndToEnd, "end-to-end": PhaseEndToEnd, "publish": PhasePublish, "consume": PhaseConsume} {
		if got, err := ParsePhase(in); err != nil || got != want {
			t.Errorf("ParsePhase(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParsePhase("both"); err == nil {
		t.Error("ParsePhase(both) accepted")
	}
}

// batchFake publishes batches through the hub, counting the calls.
type batchFake struct {
	*fake
	calls atomic.Int64
}

func (f *batchFake) PublishBatch(ctx context.Context, msgs []core.Outgoing) ([]string, error) {
	f.calls.Add(1)
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		id, err := f.Publish(ctx, m.Event, m.Data)
		if err != nil {
			return ids, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func TestRunPublishesInBatches(t *testing.T) {
	h := newHub()
	var pub *batchFake
	newBroker := func(id core.Identity) (core.Broker, error) {
		if id.Client == "bench-publisher" {
			pub = &batchFake{fake: &fake{hub: h, id: id}}
			return pub, nil
		}
		return h.newBroker(id)
	}
	res, err := Run(t.Context(), newBroker, Config{Messages: 1000, PayloadBytes: 32, Publishers: 3, Batch: 64})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pub.calls.Load(), int64((1000+63)/64); got != want {
		t.Errorf("%d PublishBatch calls, want %d", got, want)
	}
	if res.Batch != 64 || h.acks.Load() != 1001 {
		t.Errorf("batch %d, acks %d; want 64 and 1001", res.Batch, h.acks.Load())
	}
}

func TestRunBatchNeedsABatchPublisher(t *testing.T) {
	_, err := Run(t.Context(), newHub().newBroker, Config{Messages: 10, Batch: 8})
	if !errors.Is(err, ErrNoBatchPublisher) {
		t.Errorf("Run with Batch on a broker without PublishBatch: %v, want ErrNoBatchPublisher", err)
	}
}
