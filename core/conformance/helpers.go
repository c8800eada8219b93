package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// wait is how long the suite waits for something that should happen. It is
// generous: the suite asserts outcomes, never speed.
const wait = 15 * time.Second

type suite struct {
	Setup
}

// event returns an event name unique to this test run and registers its
// cleanup, dead-letter event included.
func (s *suite) event(t *testing.T) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	ev := "conformance." + name + "." + hex.EncodeToString(b[:])
	if s.Cleanup != nil {
		t.Cleanup(func() { s.Cleanup(t, []string{ev, core.DeadLetterEvent(ev)}) })
	}
	return ev
}

// group returns a group name unique to this test run.
func group(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// client makes a broker for group/client with the suite's short timeouts;
// dead-lettering is off unless mod turns it on.
func (s *suite) client(t *testing.T, grp, name string, mod ...func(*core.Options)) core.Broker {
	t.Helper()
	opts := core.Options{
		Identity:       core.Identity{Group: grp, Client: name},
		MessageTimeout: s.MessageTimeout,
		MaxDeliveries:  -1,
		CallTimeout:    5 * time.Second,
	}
	for _, m := range mod {
		m(&opts)
	}
	b := s.New(t, opts)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// delivery is what a handler saw.
type delivery struct {
	client     string
	event      string
	id         string
	deliveries int
	raw        []byte
	data       any
	err        error
	headers    map[string]string
}

// sink collects deliveries from handlers.
type sink struct {
	ch chan delivery
}

func newSink() *sink { return &sink{ch: make(chan delivery, 4096)} }

func (k *sink) record(client string, m *core.Message) {
	data, err := m.Data()
	k.ch <- delivery{client: client, event: m.Event, id: m.ID, deliveries: m.Deliveries,
		raw: append([]byte(nil), m.Raw...), data: data, err: err, headers: m.Headers}
}

// next waits for one delivery.
func (k *sink) next(t *testing.T) delivery {
	t.Helper()
	select {
	case d := <-k.ch:
		return d
	case <-time.After(wait):
		t.Fatalf("no message arrived within %s", wait)
		return delivery{}
	}
}

// none asserts that nothing arrives for d.
func (k *sink) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case got := <-k.ch:
		t.Fatalf("unexpected delivery: event %s id %s (deliveries %d, client %s)", got.event, got.id, got.deliveries, got.client)
	case <-time.After(d):
	}
}

// consume starts a consumer and fails the test when it cannot start.
func consume(t *testing.T, b core.Broker, events []string, h core.Handler) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := b.Consume(ctx, events, h); err != nil {
		t.Fatalf("consume %v: %v", events, err)
	}
	return cancel
}

// ackAll is a handler that records and acknowledges.
func ackAll(t *testing.T, k *sink, client string) core.Handler {
	return func(ctx context.Context, m *core.Message) {
		k.record(client, m)
		if err := m.Ack(ctx); err != nil {
			t.Errorf("ack %s: %v", m.ID, err)
		}
	}
}

func publish(t *testing.T, b core.Broker, event string, data any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	id, err := b.Publish(ctx, event, data)
	if err != nil {
		t.Fatalf("publish %s: %v", event, err)
	}
	if id == "" {
		t.Fatalf("publish %s returned an empty id", event)
	}
	return id
}

// publishMany publishes n messages {"n": i} concurrently and returns their ids.
func publishMany(t *testing.T, b core.Broker, event string, n int) map[string]int {
	t.Helper()
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		ids = make(map[string]int, n)
		sem = make(chan struct{}, 32)
	)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			id, err := b.Publish(ctx, event, map[string]any{"n": int64(i)})
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			mu.Lock()
			if prev, dup := ids[id]; dup {
				t.Errorf("publish %d returned id %s already returned for %d", i, id, prev)
			}
			ids[id] = i
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return ids
}

func field(t *testing.T, data any, key string) any {
	t.Helper()
	m, ok := data.(map[string]any)
	if !ok {
		t.Fatalf("payload is %T (%v), want a map", data, data)
	}
	return m[key]
}
