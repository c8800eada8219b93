package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/spectacles-go/spectacles/core"
)

// consumer is one Consume call: a subscription on the hub and its workers.
type consumer struct {
	b            *Broker
	sub          string       // guarded by Broker.mu
	subscription Subscription // sent again after a reconnection
	events       []string
	h            core.Handler
	queue        chan *core.Message
	hctx         context.Context
	runCtx       context.Context
	cancel       context.CancelFunc
}

// Consume subscribes this client's group to events with a prefetch of
// Options.Concurrency and returns once the hub confirmed; in the background
// it runs h for each delivery on up to Concurrency goroutines until ctx is
// cancelled or the broker closes. The hub gives a delivery not
// acknowledged within Options.MessageTimeout, or left by a client that
// disconnected, to another instance of the group.
func (b *Broker) Consume(ctx context.Context, events []string, h core.Handler) error {
	if b.closed.Load() {
		return core.ErrClosed
	}
	if h == nil {
		return errors.New("hub: consume: nil handler")
	}
	if err := b.cfg.Identity.Validate(); err != nil {
		return fmt.Errorf("hub: consume: %w", err)
	}
	evs, err := core.ConsumeEvents(events)
	if err != nil {
		return fmt.Errorf("hub: consume: %w", err)
	}
	n := b.cfg.Concurrency
	runCtx, cancel := context.WithCancel(ctx)
	c := &consumer{b: b, events: evs, h: h, queue: make(chan *core.Message, 2*n+16),
		hctx: context.WithoutCancel(ctx), runCtx: runCtx, cancel: cancel}
	var calls []string
	for _, ev := range evs {
		if slices.Contains(b.cfg.Announce.Calls, ev) {
			calls = append(calls, ev)
		}
	}
	sub := Subscription{Actions: evs, Prefetch: n, MessageTimeoutMs: b.cfg.MessageTimeout.Milliseconds(),
		MaxDeliveries: b.cfg.MaxDeliveries, Calls: calls}
	c.subscription = sub
	b.handlers.Add(1)
	// The consumer is registered on the reading goroutine as soon as the
	// hub confirms, before the deliveries that follow are read.
	_, err = b.request(ctx, ActionSubscribe, sub, func(r Command) {
		if r.Action != ActionResponse {
			return
		}
		id := subID(r)
		b.mu.Lock()
		c.sub = id
		b.consumers[id] = c
		b.mu.Unlock()
	})
	if err != nil {
		b.handlers.Done()
		cancel()
		if b.closed.Load() {
			return core.ErrClosed
		}
		return fmt.Errorf("hub: consume %v: %w", evs, err)
	}
	stop := context.AfterFunc(b.closeCtx, cancel)
	var workers sync.WaitGroup
	for range n {
		workers.Go(c.work)
	}
	go func() {
		defer b.handlers.Done()
		workers.Wait()
		stop()
		b.mu.Lock()
		sub := c.sub
		delete(b.consumers, sub)
		b.mu.Unlock()
		if !b.closed.Load() {
			_ = b.write(&Command{Action: ActionUnsubscribe, Body: bodyOf(map[string]string{"sub": sub})})
		}
	}()
	return nil
}

func subID(r Command) string {
	var s struct {
		Sub string `json:"sub"`
	}
	_ = json.Unmarshal(r.Body, &s)
	return s.Sub
}

func (c *consumer) work() {
	for {
		select {
		case <-c.runCtx.Done():
			return
		case m := <-c.queue:
			if c.runCtx.Err() != nil {
				return
			}
			core.RunHandler(c.hctx, c.b.log, c.h, m)
		}
	}
}

// settler settles one delivery, named by its tag.
type settler struct {
	b   *Broker
	tag string
}

// Ack sends drs.ack. The hub handles a connection's commands in order, so
// an ack written before the connection closes is applied.
func (s *settler) Ack(_ context.Context, m *core.Message) error {
	if err := s.b.write(&Command{Action: ActionAck, Key: s.tag}); err != nil {
		return fmt.Errorf("hub: ack %s %s: %w", m.Event, m.ID, err)
	}
	return nil
}

// Reply sends drs.reply with payload, for the hub to hand to the caller.
func (s *settler) Reply(_ context.Context, m *core.Message, payload []byte) error {
	cmd := Command{Action: ActionReply, Key: s.tag}
	cmd.SetPayload(payload)
	if err := s.b.write(&cmd); err != nil {
		return fmt.Errorf("hub: reply to %s %s: %w", m.Event, m.ID, err)
	}
	return nil
}

// DeadLetter sends drs.reject with the reason; the hub publishes the
// message under core.DeadLetterEvent(event). A dead letter is never
// dead-lettered again: the error wraps core.ErrRejectDeadLetter.
func (s *settler) DeadLetter(_ context.Context, m *core.Message, reason string) error {
	if _, ok := core.IsDeadLetterEvent(m.Event); ok {
		return fmt.Errorf("hub: dead-letter %s %s: %w", m.Event, m.ID, core.ErrRejectDeadLetter)
	}
	if err := s.b.write(&Command{Action: ActionReject, Key: s.tag, Body: bodyOf(map[string]string{"reason": reason})}); err != nil {
		return fmt.Errorf("hub: dead-letter %s %s: %w", m.Event, m.ID, err)
	}
	return nil
}

// broadcastSettler settles a broadcast, which nothing acknowledges.
type broadcastSettler struct{}

func (broadcastSettler) Ack(context.Context, *core.Message) error { return nil }
func (broadcastSettler) Reply(context.Context, *core.Message, []byte) error {
	return fmt.Errorf("hub: a broadcast cannot be replied to: %w", core.ErrUnsupported)
}
func (broadcastSettler) DeadLetter(context.Context, *core.Message, string) error {
	return fmt.Errorf("hub: a broadcast cannot be dead-lettered: %w", core.ErrUnsupported)
}
