package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/retry"
)

// Calls: the caller consumes an exclusive callback queue (one per broker,
// declared on the first call and shared by all calls) and publishes each
// call with reply_to = that queue and correlation_id = the message id;
// responders reply through the default exchange. The callback queue is
// subscribed before any call is published and each caller registers
// before publishing, so no fast reply is lost. The queue keeps its name
// across reconnections, so that a reply sent after the consuming
// connection came back still finds it.

// replies is a broker's callback queue and the calls waiting on it.
type replies struct {
	b     *Broker
	queue string

	mu      sync.Mutex
	started bool
	closed  bool
	ready   chan struct{} // closed while the callback queue is consumed
	waiters map[string]chan []byte
	done    chan struct{} // closed when loop returns
}

func newReplies(b *Broker) *replies {
	var r [6]byte
	_, _ = rand.Read(r[:])
	client := b.cfg.Identity.Client
	if client == "" {
		client = "anonymous"
	}
	name := "spectacles.reply." + b.cfg.Exchange + "." + client
	if len(name) > 200 {
		name = name[:200]
	}
	return &replies{
		b:       b,
		queue:   name + "." + hex.EncodeToString(r[:]),
		ready:   make(chan struct{}),
		waiters: make(map[string]chan []byte),
		done:    make(chan struct{}),
	}
}

// Call publishes data under event with reply_to and correlation_id set,
// and waits for the reply, until ctx's deadline or, without one,
// Options.CallTimeout. A missing reply is an error wrapping
// core.ErrTimeout (and context.DeadlineExceeded).
func (b *Broker) Call(ctx context.Context, event string, data any) (*core.Payload, error) {
	if event == "" {
		return nil, errors.New("amqp: call: event name is empty")
	}
	if !b.beginPublish() {
		return nil, core.ErrClosed
	}
	defer b.publishing.Done()
	raw, err := b.cfg.Codec.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("amqp: call %s: %w", event, err)
	}
	started := time.Now()
	ctx, cancel := b.cfg.CallContext(ctx)
	defer cancel()

	r := b.replies
	if err := r.acquire(ctx); err != nil {
		return nil, callError(ctx, event, started, err)
	}
	msg := b.message(raw)
	msg.ReplyTo = r.queue
	msg.CorrelationId = msg.MessageId
	ch := r.register(msg.CorrelationId)
	defer r.unregister(msg.CorrelationId)
	// Mandatory: a call no queue takes comes back, and fails at once
	// instead of at its timeout.
	if err := b.pub.publishRoutable(ctx, b.closeCtx.Done(), b.cfg.Exchange, event, &msg); err != nil {
		if errors.Is(err, errUnroutable) {
			return nil, fmt.Errorf("amqp: call %s: %w: %w", event, core.ErrUnhandled, err)
		}
		return nil, callError(ctx, event, started, err)
	}
	select {
	case payload := <-ch:
		return core.NewPayload(payload, b.cfg.Codec), nil
	case <-ctx.Done():
		return nil, core.TimeoutError(event, ctx, started)
	case <-b.closeCtx.Done():
		return nil, core.ErrClosed
	}
}

func callError(ctx context.Context, event string, started time.Time, err error) error {
	switch {
	case errors.Is(err, core.ErrClosed):
		return core.ErrClosed
	case ctx.Err() != nil && errors.Is(err, core.ErrPublishUncertain):
		// Written, unconfirmed: a responder may still get the request.
		return fmt.Errorf("%w (%w)", core.TimeoutError(event, ctx, started), core.ErrPublishUncertain)
	case ctx.Err() != nil:
		return core.TimeoutError(event, ctx, started)
	}
	return fmt.Errorf("amqp: call %s: %w", event, err)
}

// acquire returns once the callback queue is consumed, starting it on the
// first call.
func (r *replies) acquire(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return core.ErrClosed
	}
	if !r.started {
		r.started = true
		go r.loop()
	}
	ready := r.ready
	r.mu.Unlock()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-r.b.closeCtx.Done():
		return core.ErrClosed
	}
}

// register starts waiting for the reply with correlation id.
func (r *replies) register(id string) chan []byte {
	ch := make(chan []byte, 1)
	r.mu.Lock()
	r.waiters[id] = ch
	r.mu.Unlock()
	return ch
}

func (r *replies) unregister(id string) {
	r.mu.Lock()
	delete(r.waiters, id)
	r.mu.Unlock()
}

// deliver hands a reply to its caller; a reply nobody waits for (its call
// timed out) is dropped.
func (r *replies) deliver(d *amqp091.Delivery) {
	r.mu.Lock()
	ch, ok := r.waiters[d.CorrelationId]
	if ok {
		delete(r.waiters, d.CorrelationId)
	}
	r.mu.Unlock()
	if ok {
		ch <- d.Body
		return
	}
	r.b.log.Debug("dropping a reply nobody waits for", "correlation_id", d.CorrelationId)
}

func (r *replies) setReady(ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.ready:
		if !ok {
			r.ready = make(chan struct{})
		}
	default:
		if ok {
			close(r.ready)
		}
	}
}

// loop consumes the callback queue, declaring and subscribing it again
// after a lost connection, until the broker closes.
func (r *replies) loop() {
	defer close(r.done)
	b := r.b
	log := b.log.With("queue", r.queue)
	var bo retry.Backoff
	for {
		conn, err := b.subLink.get(b.closeCtx, nil)
		if err != nil {
			return
		}
		ch, dels, err := r.open(conn)
		if err != nil {
			if b.closeCtx.Err() != nil {
				return
			}
			d := bo.Next()
			log.Warn("subscribing to the callback queue failed; retrying", "err", err, "retry_in", d)
			if !retry.Sleep(b.closeCtx, d) {
				return
			}
			continue
		}
		bo.Reset()
		r.setReady(true)
		lost := r.receive(dels)
		r.setReady(false)
		if !lost {
			_ = ch.Close()
			return
		}
		log.Warn("callback queue subscription lost; subscribing again")
		_ = ch.Close()
		if !retry.Sleep(b.closeCtx, bo.Next()) {
			return
		}
	}
}

// open declares the callback queue (exclusive: RabbitMQ deletes it with
// the connection) and consumes it without acknowledgements.
func (r *replies) open(conn *amqp091.Connection) (*amqp091.Channel, <-chan amqp091.Delivery, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, nil, fmt.Errorf("open channel: %w", err)
	}
	if _, err := ch.QueueDeclare(r.queue, false, true, true, false, nil); err != nil {
		_ = ch.Close()
		return nil, nil, fmt.Errorf("declare callback queue: %w", err)
	}
	dels, err := ch.Consume(r.queue, r.queue, true, true, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return nil, nil, fmt.Errorf("consume callback queue: %w", err)
	}
	return ch, dels, nil
}

// receive delivers replies until the subscription ends (true) or the
// broker closes (false).
func (r *replies) receive(dels <-chan amqp091.Delivery) bool {
	for {
		select {
		case d, ok := <-dels:
			if !ok {
				return true
			}
			r.deliver(&d)
		case <-r.b.closeCtx.Done():
			return false
		}
	}
}

// close ends the loop. Waiting calls return core.ErrClosed (they watch the
// broker's close context).
func (r *replies) close() {
	r.mu.Lock()
	r.closed = true
	started := r.started
	r.mu.Unlock()
	if started {
		<-r.done
	}
}
