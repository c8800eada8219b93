package ipc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// route is the consumers of one event; deliver takes them in turn.
type route struct {
	cs   []*consumer
	next uint64 // guarded by Broker.mu
}

// consumer is one Consume call's background machinery.
type consumer struct {
	b       *Broker
	events  []string
	h       core.Handler
	hctx    context.Context // handlers' context: never cancelled
	runCtx  context.Context // ends when Consume's ctx ends or the broker closes
	cancel  context.CancelFunc
	stop    func() bool // releases the AfterFunc tying runCtx to Close
	queue   chan *core.Message
	dropped atomic.Int64
	done    chan struct{} // closed once the consumer has ended
}

// Consume asks for events, starts reading the input if nothing did yet, and
// returns at once; in the background it runs
// h for each message of those events read from the input, on up to
// Options.Concurrency goroutines (so handlers may run out of order; set
// Concurrency to 1 to keep the input's order), until ctx is cancelled,
// the broker closes, or the input ends. At the end of the input the
// messages already received are handled first. Handlers get a context that
// is never cancelled. When several Consume calls of one broker ask for the
// same event, each message goes to one of them, in turn (one broker is one
// client of one group).
//
// Consume needs a valid Options.Identity, although IPC has no groups: the
// identity names the client in dead letters.
func (b *Broker) Consume(ctx context.Context, events []string, h core.Handler) error {
	if b.closed.Load() {
		return core.ErrClosed
	}
	if h == nil {
		return errors.New("ipc: consume: nil handler")
	}
	if err := b.cfg.Identity.Validate(); err != nil {
		return fmt.Errorf("ipc: consume: %w", err)
	}
	evs, err := core.ConsumeEvents(events)
	if err != nil {
		return fmt.Errorf("ipc: consume: %w", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	c := &consumer{
		b:      b,
		events: evs,
		h:      h,
		hctx:   context.WithoutCancel(ctx),
		runCtx: runCtx,
		cancel: cancel,
		stop:   context.AfterFunc(b.closeCtx, cancel),
		queue:  make(chan *core.Message, b.cfg.QueueSize),
		done:   make(chan struct{}),
	}
	if !b.beginConsumer(c) {
		c.stop()
		cancel()
		return core.ErrClosed
	}
	c.start()
	b.startReading()
	return nil
}

func (c *consumer) start() {
	var workers sync.WaitGroup
	for range c.b.cfg.Concurrency {
		workers.Go(c.work)
	}
	go func() {
		defer c.b.consumers.Done()
		defer close(c.done)
		workers.Wait()
		c.b.endConsumer(c)
		c.stop()
		c.cancel()
		if n := c.dropped.Load() + int64(len(c.queue)); n > 0 {
			c.b.log.Warn("consumer stopped with received messages not handled; IPC cannot redeliver them",
				"events", c.events, "dropped", n)
		}
	}()
}

// work runs handlers until the consumer stops or its queue is closed and
// empty.
func (c *consumer) work() {
	for {
		select {
		case <-c.runCtx.Done():
			return
		case m, ok := <-c.queue:
			if !ok {
				return
			}
			if c.runCtx.Err() != nil {
				c.dropped.Add(1)
				return
			}
			core.RunHandler(c.hctx, c.b.log, c.h, m)
		}
	}
}

// settler settles the messages of a broker's consumers.
type settler struct{ b *Broker }

// Ack does nothing: IPC keeps no pending state to clear.
func (s *settler) Ack(context.Context, *core.Message) error { return nil }

// Reply writes {"event": "{event}:{id}", "reply_to": "{id}", "data": …}.
func (s *settler) Reply(ctx context.Context, m *core.Message, payload []byte) error {
	b := s.b
	if b.finished.Load() {
		return core.ErrClosed
	}
	data, opaque, _ := b.classify(payload)
	e := &envelope{event: m.Event + ":" + m.ID, replyTo: m.ID, data: data, opaque: opaque}
	if err := b.send(ctx, e); err != nil {
		return fmt.Errorf("ipc: reply to %s %s: %w", m.Event, m.ID, err)
	}
	return nil
}

// DeadLetter writes the message, with the core.Header* metadata, under
// core.DeadLetterEvent(event) with a new id, for whoever consumes it. A
// message of a dead-letter event is not written again: the error wraps
// core.ErrRejectDeadLetter.
func (s *settler) DeadLetter(ctx context.Context, m *core.Message, reason string) error {
	b := s.b
	if b.finished.Load() {
		return core.ErrClosed
	}
	if _, ok := core.IsDeadLetterEvent(m.Event); ok {
		return fmt.Errorf("ipc: dead-letter %s %s: %w", m.Event, m.ID, core.ErrRejectDeadLetter)
	}
	id := b.cfg.Identity
	data, opaque, _ := b.classify(m.Raw)
	e := &envelope{
		event: core.DeadLetterEvent(m.Event),
		id:    b.newID(),
		headers: map[string]string{
			core.HeaderEvent:      m.Event,
			core.HeaderID:         m.ID,
			core.HeaderGroup:      id.Group,
			core.HeaderClient:     id.Client,
			core.HeaderReason:     reason,
			core.HeaderDeliveries: strconv.Itoa(m.Deliveries),
			core.HeaderFailedAt:   time.Now().UTC().Format(time.RFC3339Nano),
		},
		data:   data,
		opaque: opaque,
	}
	if err := b.send(ctx, e); err != nil {
		return fmt.Errorf("ipc: dead-letter %s %s: %w", m.Event, m.ID, err)
	}
	return nil
}
