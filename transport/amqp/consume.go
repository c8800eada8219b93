package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/retry"
)

// settleTimeout bounds the driver's own settling: dead letters and
// hand-overs.
const settleTimeout = 10 * time.Second

// Consume declares, for each event, the exchange, the queue
// <exchange>:[<subgroup>:]<event> bound with routing key event, and the
// queue of its dead letters (none for an event that holds dead letters,
// EVENT:dlq), subscribes to the event queues, and returns. In the
// background it runs h on up to Options.Concurrency goroutines for each
// message, hands back to the queue the messages a handler left unsettled
// for MessageTimeout and the prefetched ones that waited MessageTimeout
// for a free handler (see the package doc), dead-letters those delivered
// more than MaxDeliveries times (never a dead letter), and subscribes
// again after a lost connection, until ctx is cancelled or the broker
// closes. Handlers get a context that is never cancelled, so that a
// draining handler can still settle its message; Close waits for them. Consume needs a valid Options.Identity;
// while RabbitMQ is unreachable it waits up to Config.ConnectTimeout.
func (b *Broker) Consume(ctx context.Context, events []string, h core.Handler) error {
	if b.closed.Load() {
		return core.ErrClosed
	}
	if h == nil {
		return errors.New("amqp: consume: nil handler")
	}
	if err := b.cfg.Identity.Validate(); err != nil {
		return fmt.Errorf("amqp: consume: %w", err)
	}
	evs, err := core.ConsumeEvents(events)
	if err != nil {
		return fmt.Errorf("amqp: consume: %w", err)
	}
	if !b.beginConsumer() {
		return core.ErrClosed
	}
	c := &consumer{
		b:      b,
		events: evs,
		h:      h,
		hctx:   context.WithoutCancel(ctx),
		tag:    consumerTagPrefix(b.cfg.Identity.Client),
	}
	c.work.cond = sync.NewCond(&c.work.mu)
	for _, ev := range evs {
		c.queues = append(c.queues, b.QueueName(ev))
	}
	runCtx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(b.closeCtx, cancel)
	c.runCtx = runCtx

	setupCtx, setupCancel := context.WithTimeout(runCtx, b.cfg.ConnectTimeout)
	s, err := c.open(setupCtx)
	setupCancel()
	if err != nil {
		stopOnClose()
		cancel()
		b.consumers.Done()
		if b.closed.Load() {
			return core.ErrClosed
		}
		return fmt.Errorf("amqp: consume %v: %w", evs, err)
	}
	b.noteDeclared(evs)
	for range b.cfg.Concurrency {
		c.workers.Go(c.work1)
	}
	go func() {
		defer b.consumers.Done()
		defer cancel()
		defer stopOnClose()
		c.run(s)
	}()
	b.presence.consumed(ctx, evs)
	return nil
}

// consumerTagPrefix starts the consumer tags of one Consume call: the
// client name, for operators, and a random part, for uniqueness.
func consumerTagPrefix(client string) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	if len(client) > 200 {
		client = client[:200]
	}
	return client + "." + hex.EncodeToString(r[:])
}

// consumer is one Consume call's background machinery. It lives across
// sessions: one AMQP channel each, replaced when the connection is lost.
type consumer struct {
	b       *Broker
	events  []string
	queues  []string // the queue of each event
	h       core.Handler
	hctx    context.Context // handlers' context: never cancelled
	runCtx  context.Context // ends when Consume's ctx ends or the broker closes
	tag     string
	work    workQueue
	workers sync.WaitGroup
	// giving is held while prefetched deliveries are given back, so that
	// they go back in the order they came.
	giving sync.Mutex
}

// workQueue holds the deliveries waiting for a worker, in the order they
// came. Each waits at most MessageTimeout: then the consumer is stalled
// (every worker is busy), and it stops its subscriptions and gives every
// waiting delivery back to its queue (see giveBackWaiting).
type workQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond // signalled on push and close
	items  []*delivery
	timer  *time.Timer // MessageTimeout of the oldest waiting delivery, if armed
	closed bool
	paused *session // the session whose subscriptions giveBackWaiting cancelled
}

// session is a consumer's subscription on one AMQP channel.
type session struct {
	c       *consumer
	ch      *amqp091.Channel
	tags    []string
	closed  chan *amqp091.Error
	reason  func() *amqp091.Error // RabbitMQ's reason for closing ch, once closed
	cancels chan string
	ctx     context.Context // ends when the session stops forwarding
	cancel  context.CancelFunc
	fwd     sync.WaitGroup

	// sub guards the subscriptions (tags, paused, starting forwarders):
	// a stalled consumer cancels them and subscribes again once a worker
	// is free.
	sub    sync.Mutex
	paused bool
	gen    int // subscription generation, for unique consumer tags

	mu      sync.Mutex
	closing atomic.Bool            // no more timers, no more hand-overs; set under mu
	armed   map[*delivery]struct{} // deliveries with a MessageTimeout timer
	ops     sync.WaitGroup         // hand-overs in progress
}

// declareQueue declares a queue exactly as the other Spectacles clients
// do (durable, no arguments) and binds it to exchange with routing key.
func declareQueue(ch *amqp091.Channel, exchange, queue, key string) error {
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %q: %w", queue, err)
	}
	if err := ch.QueueBind(queue, key, exchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %q to exchange %q with key %q: %w", queue, exchange, key, err)
	}
	return nil
}

// open starts a session: a channel with the prefetch limit, the exchange,
// the queues and their dead-letter queues declared and bound, and one
// subscription per queue. A connection lost meanwhile is waited out,
// within ctx.
func (c *consumer) open(ctx context.Context) (*session, error) {
	for {
		conn, err := c.b.subLink.get(ctx, nil)
		if err != nil {
			return nil, err
		}
		s, err := c.openOn(conn)
		if err == nil || !conn.IsClosed() {
			return s, err
		}
		if !retry.Sleep(ctx, 10*time.Millisecond) {
			return nil, fmt.Errorf("%w (connection lost: %w)", context.Cause(ctx), err)
		}
	}
}

// openOn opens a session on conn.
func (c *consumer) openOn(conn *amqp091.Connection) (s *session, err error) {
	b := c.b
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	defer func() {
		if err != nil {
			_ = ch.Close()
		}
	}()
	s = &session{
		c:       c,
		ch:      ch,
		closed:  ch.NotifyClose(make(chan *amqp091.Error, 1)),
		reason:  closeReasonOf(ch),
		cancels: ch.NotifyCancel(make(chan string, len(c.queues))),
		armed:   make(map[*delivery]struct{}),
	}
	if err := ch.Qos(b.cfg.Prefetch, 0, false); err != nil {
		return nil, fmt.Errorf("set prefetch: %w", err)
	}
	if err := declareExchange(ch, b.cfg.Exchange); err != nil {
		return nil, err
	}
	for i, ev := range c.events {
		if err := declareQueue(ch, b.cfg.Exchange, c.queues[i], ev); err != nil {
			return nil, err
		}
		if _, dead := core.IsDeadLetterEvent(ev); dead {
			continue // dead letters are never dead-lettered again
		}
		// The dead letters' queue, so that none is dropped for want of a
		// queue bound to their routing key.
		dl := core.DeadLetterEvent(ev)
		if err := declareQueue(ch, b.cfg.Exchange, b.QueueName(dl), dl); err != nil {
			return nil, err
		}
	}
	s.ctx, s.cancel = context.WithCancel(c.runCtx)
	if err := s.subscribe(); err != nil {
		s.cancel()
		return nil, err
	}
	return s, nil
}

// subscribe subscribes to every queue and forwards the deliveries. The
// caller holds s.sub, or is the only user of s.
func (s *session) subscribe() error {
	c := s.c
	s.gen++
	tags := make([]string, 0, len(c.queues))
	dels := make([]<-chan amqp091.Delivery, 0, len(c.queues))
	for i, q := range c.queues {
		tag := c.tag + "." + strconv.Itoa(i)
		if s.gen > 1 {
			tag += "." + strconv.Itoa(s.gen)
		}
		d, err := s.ch.Consume(q, tag, false, false, false, false, nil)
		if err != nil {
			for _, t := range tags {
				_ = s.ch.Cancel(t, false)
			}
			return fmt.Errorf("consume queue %q: %w", q, err)
		}
		tags, dels = append(tags, tag), append(dels, d)
	}
	s.tags = tags
	for i, d := range dels {
		s.fwd.Go(func() { c.forward(s, i, d) })
	}
	return nil
}

// pause cancels the subscriptions: RabbitMQ sends nothing more to this
// stalled consumer, and the deliveries it sent before arrive in the work
// queue before pause returns.
func (s *session) pause() {
	s.sub.Lock()
	if s.paused || s.ctx.Err() != nil {
		s.sub.Unlock()
		return
	}
	s.paused = true
	for _, tag := range s.tags {
		if err := s.ch.Cancel(tag, false); err != nil {
			break // the channel is gone: nothing more comes anyway
		}
	}
	s.tags = nil
	s.sub.Unlock()
	// The forwarders end once amqp091 handed over what it had buffered.
	// (A session ending meanwhile waits for them too, which is fine.)
	s.fwd.Wait()
}

// resume subscribes again after pause, unless the session is ending.
func (s *session) resume() {
	s.sub.Lock()
	defer s.sub.Unlock()
	if !s.paused || s.ctx.Err() != nil || s.isClosing() {
		return
	}
	if err := s.subscribe(); err != nil {
		// The channel is probably gone: the consumer opens a new session.
		s.c.b.log.Warn("subscribing again after a stall failed", "err", err)
		return
	}
	s.paused = false
	s.c.b.log.Debug("a worker is free: subscribed again", "events", s.c.events)
}

// endForwarding stops forwarding and waits for the forwarders; no
// subscription starts afterwards.
func (s *session) endForwarding() {
	s.sub.Lock()
	s.cancel()
	s.sub.Unlock()
	s.fwd.Wait()
}

// run serves sessions until the consumer stops, opening a new one after
// each loss.
func (c *consumer) run(s *session) {
	log := c.b.log.With("events", c.events)
	var bo retry.Backoff
	for {
		if !c.serve(s, log) {
			c.stop(s)
			return
		}
		s.close()
		for {
			if !retry.Sleep(c.runCtx, bo.Next()) {
				c.drain()
				return
			}
			next, err := c.open(c.runCtx)
			if err == nil {
				log.Info("subscribed again")
				bo.Reset()
				s = next
				break
			}
			if c.runCtx.Err() != nil {
				c.drain()
				return
			}
			log.Warn("subscribing again failed; retrying", "err", err)
		}
	}
}

// serve waits until the consumer stops (false) or the session is lost
// (true); a lost session has stopped forwarding when serve returns.
func (c *consumer) serve(s *session, log *slog.Logger) bool {
	select {
	case <-c.runCtx.Done():
		return false
	case err, ok := <-s.closed:
		if ok && err != nil {
			log.Warn("consumer channel lost; subscribing again", "err", err)
		} else {
			log.Warn("consumer channel closed; subscribing again")
		}
	case tag := <-s.cancels:
		// RabbitMQ cancels a consumer whose queue was deleted.
		log.Warn("RabbitMQ cancelled a subscription (queue deleted?); subscribing again", "consumer_tag", tag)
	}
	s.endForwarding()
	return true
}

// stop ends the consumer: no new deliveries, running handlers finish (and
// can still settle), then the channel closes and RabbitMQ requeues what
// was not settled.
func (c *consumer) stop(s *session) {
	s.sub.Lock()
	for _, tag := range s.tags {
		if err := s.ch.Cancel(tag, false); err != nil {
			break // the channel is gone: nothing more comes anyway
		}
	}
	s.tags = nil
	s.cancel()
	s.sub.Unlock()
	s.fwd.Wait()
	c.drain()
	s.close()
}

// drain stops the workers once their running handlers returned; queued
// deliveries are left to RabbitMQ, which requeues them.
func (c *consumer) drain() {
	c.work.close()
	c.workers.Wait()
}

// forward turns a subscription's deliveries into work.
func (c *consumer) forward(s *session, i int, dels <-chan amqp091.Delivery) {
	for {
		select {
		case d, ok := <-dels:
			if !ok {
				return
			}
			c.push(c.delivery(s, i, d))
		case <-s.ctx.Done():
			return
		}
	}
}

// delivery wraps an AMQP delivery of queue i.
func (c *consumer) delivery(s *session, i int, d amqp091.Delivery) *delivery {
	cfg := &c.b.cfg
	id := d.MessageId
	if id == "" {
		// A peer's message without an id gets one, kept if it is handed
		// back to the queue.
		id = newID()
	}
	n := priorDeliveries(d.Headers) + 1
	if d.Redelivered {
		n++
	}
	_, dead := core.IsDeadLetterEvent(c.events[i])
	dl := &delivery{s: s, queue: c.queues[i], d: d, dead: dead, arrived: time.Now()}
	dl.m = core.NewMessage(c.events[i], id, d.Body, n, cfg.Codec, dl)
	dl.m.Headers = stringHeaders(d.Headers)
	dl.over = !dead && cfg.MaxDeliveries > 0 && n > cfg.MaxDeliveries
	return dl
}

// work1 is one worker: it runs the handler of each delivery, unless the
// consumer stopped or the delivery's session is over (RabbitMQ requeued
// the message).
func (c *consumer) work1() {
	for {
		dl := c.pop()
		if dl == nil {
			return
		}
		if c.runCtx.Err() != nil || dl.s.isClosing() {
			continue
		}
		if dl.over {
			c.deadLetterOver(dl)
			continue
		}
		if dl.d.Redelivered && !dl.dead && dl.recount() {
			continue
		}
		dl.s.arm(dl, true)
		core.RunHandler(c.hctx, c.b.log, c.h, dl.m)
		dl.s.returned(dl)
	}
}

// deadLetterOver dead-letters a message delivered more than MaxDeliveries
// times, without running the handler.
func (c *consumer) deadLetterOver(dl *delivery) {
	reason := fmt.Sprintf("%s (%d)", core.ReasonMaxDeliveries, c.b.cfg.MaxDeliveries)
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	if err := dl.DeadLetter(ctx, dl.m, reason); err != nil {
		c.b.log.Warn("dead-lettering failed; the message will be delivered again",
			"event", dl.m.Event, "id", dl.m.ID, "err", err)
	}
}

func (s *session) isClosing() bool { return s.closing.Load() }

// arm starts dl's MessageTimeout; running says its handler starts now.
func (s *session) arm(dl *delivery, running bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return
	}
	dl.running = running
	dl.due = false
	dl.timer = time.AfterFunc(s.c.b.cfg.MessageTimeout, func() { s.expire(dl) })
	s.armed[dl] = struct{}{}
}

// disarm stops dl's MessageTimeout: it was settled.
func (s *session) disarm(dl *delivery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dl.timer != nil {
		dl.timer.Stop()
		dl.timer = nil
	}
	dl.due = false
	delete(s.armed, dl)
}

// expire runs when dl stayed unsettled for MessageTimeout. A message whose
// handler still runs stays with it: handing it over would deliver it twice
// and make the handler's Ack fail. It is handed over when the handler
// returns without settling it.
func (s *session) expire(dl *delivery) {
	s.mu.Lock()
	if dl.running && dl.timer != nil {
		dl.due = true
		s.mu.Unlock()
		return
	}
	s.handOverLocked(dl)
}

// returned runs when dl's handler returned; a message it left unsettled
// past MessageTimeout is handed over now.
func (s *session) returned(dl *delivery) {
	s.mu.Lock()
	dl.running = false
	if !dl.due {
		s.mu.Unlock()
		return
	}
	s.handOverLocked(dl)
}

// handOverLocked hands dl over unless it was settled or the session or
// consumer is ending; it is called with s.mu held and releases it.
func (s *session) handOverLocked(dl *delivery) {
	if s.closing.Load() || dl.timer == nil || s.c.runCtx.Err() != nil {
		// Settled, or ending: Close waits for the running handlers, whose
		// Acks must still work, and then closes the channel, which
		// requeues whatever was not settled.
		s.mu.Unlock()
		return
	}
	dl.timer = nil
	dl.due = false
	delete(s.armed, dl)
	s.ops.Add(1)
	s.mu.Unlock()
	defer s.ops.Done()
	dl.handOver()
}

// close ends the session's timers, waits for hand-overs in progress and
// closes the channel: RabbitMQ requeues what was not settled.
func (s *session) close() {
	s.mu.Lock()
	s.closing.Store(true)
	for dl := range s.armed {
		dl.timer.Stop()
		dl.timer = nil
	}
	s.armed = nil
	s.mu.Unlock()
	s.ops.Wait()
	s.cancel()
	if err := s.ch.Close(); err != nil && !errors.Is(err, amqp091.ErrClosed) {
		s.c.b.log.Debug("closing consumer channel failed", "err", err)
	}
}

type settleState uint8

const (
	pending    settleState = iota
	settled                // acknowledged or dead-lettered
	handedOver             // published again to its queue after MessageTimeout
)

// delivery is one message delivered to a consumer, and its core.Settler.
type delivery struct {
	s     *session
	queue string
	d     amqp091.Delivery
	m     *core.Message
	over  bool // delivered more than MaxDeliveries times
	// dead: a message of a dead-letter event (EVENT:dlq). It is never
	// dead-lettered, counted or published again: it goes back to its
	// queue, in place and unchanged, with basic.nack (requeue).
	dead bool

	arrived time.Time // when it came, for the work queue's MessageTimeout

	mu    sync.Mutex // held while settling
	state settleState

	// Guarded by s.mu:
	timer   *time.Timer // MessageTimeout; nil once settled or handed over
	running bool        // the handler runs
	due     bool        // MessageTimeout passed while the handler ran
}

var _ core.Settler = (*delivery)(nil)

// settleError describes a failed settlement.
func (dl *delivery) settleError(what string, err error) error {
	if dl.s.c.b.finished.Load() {
		return core.ErrClosed
	}
	if errors.Is(err, amqp091.ErrClosed) {
		if reason := dl.s.reason(); reason != nil {
			return fmt.Errorf("amqp: %s %s %s: the channel it came on was closed (%w), so RabbitMQ delivers it again: %w", what, dl.m.Event, dl.m.ID, reason, err)
		}
		return fmt.Errorf("amqp: %s %s %s: the channel it came on is closed, so RabbitMQ delivers it again: %w", what, dl.m.Event, dl.m.ID, err)
	}
	return fmt.Errorf("amqp: %s %s %s: %w", what, dl.m.Event, dl.m.ID, err)
}

// check reports whether dl can still be settled: (true, nil) when it is
// pending, (false, nil) when it is settled already.
func (dl *delivery) check(what string) (bool, error) {
	switch dl.state {
	case settled:
		return false, nil
	case handedOver:
		return false, fmt.Errorf("amqp: %s %s %s: %w", what, dl.m.Event, dl.m.ID, ErrHandedOver)
	}
	if dl.s.c.b.finished.Load() {
		return false, core.ErrClosed
	}
	return true, nil
}

// Ack acknowledges the message (basic.ack). AMQP does not confirm
// acknowledgements: Close flushes them by closing the channel cleanly.
func (dl *delivery) Ack(_ context.Context, _ *core.Message) error {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if ok, err := dl.check("ack"); !ok {
		return err
	}
	if err := dl.s.ch.Ack(dl.d.DeliveryTag, false); err != nil {
		return dl.settleError("ack", err)
	}
	dl.state = settled
	dl.s.disarm(dl)
	return nil
}

// Reply publishes payload to the caller's reply_to queue through the
// default exchange, with the caller's correlation_id.
func (dl *delivery) Reply(ctx context.Context, _ *core.Message, payload []byte) error {
	b := dl.s.c.b
	if dl.d.ReplyTo == "" {
		return fmt.Errorf("amqp: reply to %s %s: %w", dl.m.Event, dl.m.ID, ErrNoReplyTo)
	}
	if b.finished.Load() {
		return core.ErrClosed
	}
	msg := amqp091.Publishing{
		ContentType:   b.contentType,
		CorrelationId: dl.d.CorrelationId,
		MessageId:     newID(),
		Timestamp:     time.Now(),
		Body:          payload,
	}
	if err := b.pub.publish(ctx, b.closeCtx.Done(), "", dl.d.ReplyTo, &msg); err != nil {
		return fmt.Errorf("amqp: reply to %s %s: %w", dl.m.Event, dl.m.ID, err)
	}
	return nil
}

// DeadLetter publishes the message with the core.Header* headers to the
// exchange with routing key core.DeadLetterEvent(event) and, once
// RabbitMQ confirmed it, acknowledges the original.
func (dl *delivery) DeadLetter(ctx context.Context, _ *core.Message, reason string) error {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if ok, err := dl.check("dead-letter"); !ok {
		return err
	}
	if dl.dead {
		return fmt.Errorf("amqp: dead-letter %s %s: %w", dl.m.Event, dl.m.ID, core.ErrRejectDeadLetter)
	}
	if dl.s.ch.IsClosed() {
		return dl.settleError("dead-letter", amqp091.ErrClosed)
	}
	b := dl.s.c.b
	id := b.cfg.Identity
	headers := copyHeaders(dl.d.Headers, 7)
	headers[core.HeaderEvent] = dl.m.Event
	headers[core.HeaderID] = dl.m.ID
	headers[core.HeaderGroup] = id.Group
	headers[core.HeaderClient] = id.Client
	headers[core.HeaderReason] = reason
	headers[core.HeaderDeliveries] = strconv.Itoa(dl.m.Deliveries)
	headers[core.HeaderFailedAt] = time.Now().UTC().Format(time.RFC3339Nano)
	msg := amqp091.Publishing{
		Headers:         headers,
		ContentType:     dl.d.ContentType,
		ContentEncoding: dl.d.ContentEncoding,
		DeliveryMode:    amqp091.Persistent,
		MessageId:       newID(),
		Timestamp:       time.Now(),
		Type:            dl.d.Type,
		AppId:           dl.d.AppId,
		Body:            dl.d.Body,
	}
	if err := b.pub.publish(ctx, b.closeCtx.Done(), b.cfg.Exchange, core.DeadLetterEvent(dl.m.Event), &msg); err != nil {
		return dl.settleError("dead-letter", err)
	}
	if err := dl.s.ch.Ack(dl.d.DeliveryTag, false); err != nil {
		return dl.settleError("dead-letter (dead letter published, but acknowledging the original failed)", err)
	}
	dl.state = settled
	dl.s.disarm(dl)
	return nil
}

// handOver publishes the message again to its own queue, counting this
// delivery, and acknowledges the original: the message left unsettled for
// MessageTimeout goes back to its group.
func (dl *delivery) handOver() {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.state != pending || dl.s.ch.IsClosed() {
		return // settled meanwhile, or the channel closed: RabbitMQ requeues it
	}
	b := dl.s.c.b
	log := b.log.With("event", dl.m.Event, "id", dl.m.ID, "deliveries", dl.m.Deliveries)
	if dl.dead {
		// A dead letter goes back in place, unchanged: reading dead
		// letters without settling them leaves them as they were.
		if err := dl.s.ch.Nack(dl.d.DeliveryTag, false, true); err != nil {
			log.Debug("giving a dead letter back to its queue failed; closing the channel will", "err", err)
			return
		}
		dl.state = handedOver
		log.Debug("gave an unsettled dead letter back to its queue", "timeout", b.cfg.MessageTimeout)
		return
	}
	if err := dl.republish(dl.m.Deliveries); err != nil {
		log.Warn("handing an unsettled message back to its queue failed; will retry", "err", err)
		dl.s.arm(dl, false)
		return
	}
	log.Debug("handed an unsettled message back to its queue", "timeout", b.cfg.MessageTimeout)
}

// recount handles a message RabbitMQ redelivered (its client died, or
// closed, before settling it): the redelivered flag says only that it was
// delivered before, and would say so again however often clients die on
// it. So the message is published again, before any handler sees it,
// with the lost delivery counted in its header, and the original
// acknowledged. A message that crashes every client that takes it thus
// reaches MaxDeliveries and is dead-lettered. It reports false when that
// failed: the message is then handled as it is.
func (dl *delivery) recount() bool {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.state != pending {
		return true
	}
	if err := dl.republish(dl.m.Deliveries - 1); err != nil {
		dl.s.c.b.log.Warn("counting a redelivery failed; handling the message as it is",
			"event", dl.m.Event, "id", dl.m.ID, "err", err)
		return false
	}
	return true
}

// republish publishes a copy of the message to its own queue (through the
// default exchange, so that no other queue gets it) with prior deliveries
// counted, and acknowledges the original once RabbitMQ confirmed the copy.
// The caller holds dl.mu; dl is then handed over.
func (dl *delivery) republish(prior int) error {
	b := dl.s.c.b
	d := &dl.d
	headers := copyHeaders(d.Headers, 1)
	headers[deliveriesHeader] = int64(prior)
	msg := amqp091.Publishing{
		Headers:         headers,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    amqp091.Persistent,
		Priority:        d.Priority,
		CorrelationId:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		Expiration:      d.Expiration,
		MessageId:       dl.m.ID,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		AppId:           d.AppId,
		Body:            d.Body,
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	if err := b.pub.publish(ctx, b.closeCtx.Done(), "", dl.queue, &msg); err != nil {
		return err
	}
	if err := dl.s.ch.Ack(d.DeliveryTag, false); err != nil {
		b.log.Warn("published a message again to its queue, but acknowledging the original failed: it will be delivered twice",
			"event", dl.m.Event, "id", dl.m.ID, "err", err)
	}
	dl.state = handedOver
	return nil
}

// copyHeaders copies an AMQP header table without the driver's own
// bookkeeping, with room for extra more.
func copyHeaders(h amqp091.Table, extra int) amqp091.Table {
	out := make(amqp091.Table, len(h)+extra)
	for k, v := range h {
		if k != deliveriesHeader {
			out[k] = v
		}
	}
	return out
}
