package amqp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/retry"
	"github.com/spectacles-go/spectacles/internal/unhandled"
)

// Publishing is pipelined: each publish is written to a confirm-mode
// channel at once and its caller waits for that message's confirm alone,
// so that many publishes are in flight on a channel and concurrent callers
// never wait for one another's round trips. Publishes are spread over
// Config.PublishChannels channels of the publishing connection.

// errNacked is wrapped by publish errors when RabbitMQ answered a message
// with basic.nack, which it does when it could not handle it: the message
// may or may not have been routed (the errors wrap core.ErrPublishUncertain
// too).
var errNacked = errors.New("RabbitMQ refused the message (basic.nack)")

// errUnconfirmed is wrapped by publish errors when the channel closed
// after the message was written and before RabbitMQ confirmed it: it may
// or may not have been routed (the errors wrap core.ErrPublishUncertain
// too, and RabbitMQ's reason for the close when it gave one).
var errUnconfirmed = errors.New("the channel closed before RabbitMQ confirmed the message")

// maxResend bounds the attempts of a publish that found its channel closed
// before writing (nothing was sent, so it is safe to write again).
const maxResend = 3

type publisher struct {
	b     *Broker
	chans []*pubChannel
	next  atomic.Uint32
}

// pubChannel is one confirm-mode channel, opened again after it is lost.
type pubChannel struct {
	p  *publisher
	mu sync.Mutex // guards ch and serialises opening
	ch *confirmChannel
}

// confirmChannel is an open confirm-mode channel and why it closed.
type confirmChannel struct {
	*amqp091.Channel
	closeReason func() *amqp091.Error
	returns     *returnedSet
}

// maxReturns bounds the basic.returns a channel holds for their callers,
// and those waiting to be counted.
const maxReturns = 4096

// returnedSet holds the ids of mandatory messages RabbitMQ returned
// (basic.return: no queue was bound to their routing key), and counts
// every returned message of the exchange as unhandled (Publish and
// PublishBatch publish mandatory too). amqp091's reader hands a return
// over before it reads the message's confirm, so a caller whose confirm
// came finds its return, if any, here or in the channel once it drains it;
// every publisher drains after its confirm, so that amqp091's reader,
// which waits for room in the channel, never waits long.
type returnedSet struct {
	ch       chan amqp091.Return
	exchange string
	tally    *unhandled.Tally
	mu       sync.Mutex
	ids      map[string]struct{}
}

func newReturnedSet(ch *amqp091.Channel, exchange string, tally *unhandled.Tally) *returnedSet {
	r := &returnedSet{ch: make(chan amqp091.Return, maxReturns), exchange: exchange, tally: tally, ids: map[string]struct{}{}}
	ch.NotifyReturn(r.ch)
	return r
}

// drainLocked moves the returns waiting in the channel into the set (the
// calls) and the tally; mu is held.
func (r *returnedSet) drainLocked() {
	for {
		select {
		case ret, ok := <-r.ch:
			if !ok {
				return
			}
			if len(r.ids) >= maxReturns {
				// Left by callers that stopped waiting: forget them.
				clear(r.ids)
			}
			r.ids[ret.MessageId] = struct{}{}
			// A call's (reply_to set) fails with core.ErrUnhandled instead.
			if r.tally != nil && ret.ReplyTo == "" && ret.Exchange == r.exchange && core.CountsAsUnhandled(ret.RoutingKey) {
				r.tally.Add(ret.RoutingKey, 1)
			}
		default:
			return
		}
	}
}

// drain counts the returns waiting, if any.
func (r *returnedSet) drain() {
	if len(r.ch) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drainLocked()
}

// take reports whether the message with id was returned, forgetting it.
// It first moves the returns waiting in the channel into the set.
func (r *returnedSet) take(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drainLocked()
	_, ok := r.ids[id]
	delete(r.ids, id)
	return ok
}

// closeReasonOf returns a function that gives RabbitMQ's reason for
// closing ch (or its connection): nil while ch is open, or when it was
// closed without one (by this client). amqp091 sends the reason before it
// fails the channel's pending confirms and acknowledgements.
func closeReasonOf(ch *amqp091.Channel) func() *amqp091.Error {
	var (
		mu     sync.Mutex
		reason *amqp091.Error
		closes = ch.NotifyClose(make(chan *amqp091.Error, 1))
	)
	return func() *amqp091.Error {
		mu.Lock()
		defer mu.Unlock()
		if reason == nil {
			select {
			case e, ok := <-closes:
				if ok && e != nil {
					reason = e
				}
			default:
			}
		}
		return reason
	}
}

// closedError describes a publish that found the channel closed before it
// was written, with RabbitMQ's reason when it gave one.
func (c *confirmChannel) closedError(err error) error {
	if reason := c.closeReason(); reason != nil {
		return fmt.Errorf("%w (the channel was closed: %w)", err, reason)
	}
	return err
}

func newPublisher(b *Broker) *publisher {
	p := &publisher{b: b}
	for range b.cfg.PublishChannels {
		p.chans = append(p.chans, &pubChannel{p: p})
	}
	return p
}

// pick returns the channel for the next publish, round-robin.
func (p *publisher) pick() *pubChannel {
	return p.chans[int(p.next.Add(1))%len(p.chans)]
}

// channel returns the open channel, opening it (and declaring the
// exchange on it) when it is missing or was lost.
// A wait for the connection also ends, with core.ErrClosed, when abort is
// closed.
func (pc *pubChannel) channel(ctx context.Context, abort <-chan struct{}) (*confirmChannel, error) {
	pc.mu.Lock()
	ch := pc.ch
	pc.mu.Unlock()
	if ch != nil && !ch.IsClosed() {
		return ch, nil
	}
	b := pc.p.b
	for {
		conn, err := b.pubLink.get(ctx, abort)
		if err != nil {
			return nil, err
		}
		pc.mu.Lock()
		if ch := pc.ch; ch != nil && !ch.IsClosed() {
			pc.mu.Unlock()
			return ch, nil
		}
		ch, err := openConfirmChannel(conn, b.cfg.Exchange, &b.unhandled)
		if err == nil {
			pc.ch = ch
		}
		pc.mu.Unlock()
		if err == nil {
			return ch, nil
		}
		if !conn.IsClosed() {
			return nil, err
		}
		// The connection died under us: wait for the next one.
		if !retry.Sleep(ctx, 10*time.Millisecond) {
			return nil, context.Cause(ctx)
		}
	}
}

// openConfirmChannel opens a channel in confirm mode and declares exchange
// on it, so that a publish never meets a missing exchange (which would
// close the channel).
func openConfirmChannel(conn *amqp091.Connection, exchange string, tally *unhandled.Tally) (*confirmChannel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	cc := &confirmChannel{Channel: ch, closeReason: closeReasonOf(ch), returns: newReturnedSet(ch, exchange, tally)}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("enable publisher confirms: %w", err)
	}
	if err := declareExchange(ch, exchange); err != nil {
		_ = ch.Close()
		return nil, err
	}
	return cc, nil
}

// declareExchange declares the group's exchange exactly as the other
// Spectacles clients do: direct, durable, no arguments.
func declareExchange(ch *amqp091.Channel, exchange string) error {
	if err := ch.ExchangeDeclare(exchange, amqp091.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", exchange, err)
	}
	return nil
}

// send writes msg on pc and returns its pending confirm, opening pc again
// when it had closed before anything was written. Its errors come before
// the message was written: they do not wrap core.ErrPublishUncertain.
func (p *publisher) send(ctx context.Context, abort <-chan struct{}, pc *pubChannel, exchange, key string, mandatory bool, msg *amqp091.Publishing) (*confirmChannel, *amqp091.DeferredConfirmation, error) {
	for attempt := 1; ; attempt++ {
		ch, err := pc.channel(ctx, abort)
		if err != nil {
			return nil, nil, err
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, mandatory, false, *msg)
		if err == nil {
			return ch, dc, nil
		}
		if !errors.Is(err, amqp091.ErrClosed) || attempt >= maxResend || ctx.Err() != nil {
			if errors.Is(err, amqp091.ErrClosed) {
				err = ch.closedError(err)
			}
			return nil, nil, err
		}
	}
}

// wait waits for the confirm of a message written on ch. Once written, a
// message whose confirm does not come (ctx ends first, the channel closes,
// or RabbitMQ nacks it) may or may not have been routed: those errors wrap
// core.ErrPublishUncertain, and RabbitMQ's reason when it gave one.
func wait(ctx context.Context, ch *confirmChannel, dc *amqp091.DeferredConfirmation) error {
	select {
	case <-dc.Done():
	case <-ctx.Done():
		return fmt.Errorf("waiting for RabbitMQ to confirm the message: %w (%w)", context.Cause(ctx), core.ErrPublishUncertain)
	}
	if dc.Acked() {
		return nil
	}
	if ch.IsClosed() {
		if reason := ch.closeReason(); reason != nil {
			return fmt.Errorf("%w: %w (%w)", errUnconfirmed, reason, core.ErrPublishUncertain)
		}
		return fmt.Errorf("%w (%w)", errUnconfirmed, core.ErrPublishUncertain)
	}
	return fmt.Errorf("%w (%w)", errNacked, core.ErrPublishUncertain)
}

// publish sends msg and returns once RabbitMQ confirmed it. A wait for
// the connection ends, with core.ErrClosed, when abort is closed.
func (p *publisher) publish(ctx context.Context, abort <-chan struct{}, exchange, key string, msg *amqp091.Publishing) error {
	ch, dc, err := p.send(ctx, abort, p.pick(), exchange, key, false, msg)
	if err != nil {
		return err
	}
	return wait(ctx, ch, dc)
}

// The mandatory flag costs RabbitMQ some throughput (about a tenth, on
// 3.10 with persistent messages), so Publish sets it only when it must
// learn whether an event is routed: on the first publish of an event and
// then once per Config.UnhandledInterval (a probe), and on every publish
// while the latest mandatory one came back, until one is routed again.
// So every message of an event known to be unrouted is counted, and an
// event that loses its last queue is noticed within an interval.

// maxRoutes bounds the events whose routing the broker remembers; others
// are always published mandatory.
const maxRoutes = 10000

// routeState is what the broker knows of an event's routing.
type routeState struct {
	probeAt  atomic.Int64 // Unix nanoseconds: the first publish after it is a probe
	unrouted atomic.Bool  // the latest mandatory publish came back
}

// routes keeps a routeState per event.
type routes struct {
	m     sync.Map // event → *routeState
	n     atomic.Int64
	every time.Duration
}

// mandatory reports whether a publish of event is to be mandatory, and
// the state to update with its outcome (nil: none).
func (r *routes) mandatory(event string) (bool, *routeState) {
	v, ok := r.m.Load(event)
	if !ok {
		if r.n.Load() >= maxRoutes {
			return true, nil
		}
		var loaded bool
		if v, loaded = r.m.LoadOrStore(event, &routeState{}); !loaded {
			r.n.Add(1)
		}
	}
	st := v.(*routeState)
	if st.unrouted.Load() {
		return true, st
	}
	now := time.Now().UnixNano()
	at := st.probeAt.Load()
	return now >= at && st.probeAt.CompareAndSwap(at, now+int64(r.every)), st
}

// note records the outcome of a mandatory publish.
func (st *routeState) note(returned bool) {
	if st != nil {
		st.unrouted.Store(returned)
	}
}

// publishCounted publishes msg, with the mandatory flag when routes says
// so: a message no queue takes then comes back (basic.return) and is
// counted as unhandled, and the publish succeeds all the same.
func (p *publisher) publishCounted(ctx context.Context, abort <-chan struct{}, exchange, key string, msg *amqp091.Publishing) error {
	mandatory, st := p.b.routes.mandatory(key)
	ch, dc, err := p.send(ctx, abort, p.pick(), exchange, key, mandatory, msg)
	if err != nil {
		return err
	}
	err = wait(ctx, ch, dc)
	if mandatory && err == nil {
		st.note(ch.returns.take(msg.MessageId))
	} else {
		ch.returns.drain()
	}
	return err
}

// drainReturns counts the returns waiting on every channel.
func (p *publisher) drainReturns() {
	for _, pc := range p.chans {
		pc.mu.Lock()
		ch := pc.ch
		pc.mu.Unlock()
		if ch != nil {
			ch.returns.drain()
		}
	}
}

// errUnroutable is wrapped by publishRoutable's error for a message that
// RabbitMQ returned: no queue is bound to its routing key on the exchange,
// so nobody can ever read it.
var errUnroutable = errors.New("no queue is bound to it")

// publishRoutable is publish with the mandatory flag: a message no queue
// takes comes back (basic.return), and the error wraps errUnroutable.
func (p *publisher) publishRoutable(ctx context.Context, abort <-chan struct{}, exchange, key string, msg *amqp091.Publishing) error {
	ch, dc, err := p.send(ctx, abort, p.pick(), exchange, key, true, msg)
	if err != nil {
		return err
	}
	err = wait(ctx, ch, dc)
	if ch.returns.take(msg.MessageId) && err == nil {
		return fmt.Errorf("%w (exchange %q, routing key %q)", errUnroutable, exchange, key)
	}
	return err
}

// close closes the channels; pending confirms fail.
func (p *publisher) close() {
	for _, pc := range p.chans {
		pc.mu.Lock()
		if pc.ch != nil {
			_ = pc.ch.Close()
			pc.ch = nil
		}
		pc.mu.Unlock()
	}
}

// message builds the AMQP message of a publish: persistent, with a new id.
func (b *Broker) message(raw []byte) amqp091.Publishing {
	msg := amqp091.Publishing{
		ContentType:  b.contentType,
		DeliveryMode: amqp091.Persistent,
		MessageId:    newID(),
		Timestamp:    time.Now(),
		Body:         raw,
	}
	if b.cfg.Expire {
		msg.Expiration = strconv.FormatInt(max(b.cfg.MessageTimeout.Milliseconds(), 1), 10)
	}
	return msg
}

// beginPublish registers a publish unless the broker is closed.
func (b *Broker) beginPublish() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed.Load() {
		return false
	}
	b.publishing.Add(1)
	return true
}

// Publish sends data, encoded with the codec (core.Raw passes through), to
// the exchange with routing key event, as a persistent message, and
// returns its id (the AMQP message_id, a UUIDv7) once RabbitMQ confirmed
// it. Every queue bound to event gets a copy; without any, RabbitMQ drops
// it, and the broker counts it as unhandled (UnhandledCounts; see
// unhandled.go for when it learns so). While the connection is down Publish waits for it, until ctx ends.
// An error after the message was written (no confirm before ctx ended or
// the connection was lost, or a basic.nack) wraps core.ErrPublishUncertain:
// the message may have been routed, and publishing it again may deliver
// it twice. Errors carry RabbitMQ's reason (its code and text, as in
// "NOT_FOUND - no exchange ...") when it closed the channel.
func (b *Broker) Publish(ctx context.Context, event string, data any) (string, error) {
	if event == "" {
		return "", errors.New("amqp: publish: event name is empty")
	}
	if !b.beginPublish() {
		return "", core.ErrClosed
	}
	defer b.publishing.Done()
	raw, err := b.cfg.Codec.Marshal(data)
	if err != nil {
		return "", fmt.Errorf("amqp: publish %s: %w", event, err)
	}
	msg := b.message(raw)
	if err := b.pub.publishCounted(ctx, b.closeCtx.Done(), b.cfg.Exchange, event, &msg); err != nil {
		return "", b.publishError(event, err)
	}
	return msg.MessageId, nil
}

func (b *Broker) publishError(event string, err error) error {
	if errors.Is(err, core.ErrClosed) {
		return core.ErrClosed
	}
	return fmt.Errorf("amqp: publish %s: %w", event, err)
}

var _ core.BatchPublisher = (*Broker)(nil)

// PublishBatch publishes msgs in order on one channel, so that they reach
// each queue in that order, with all of them in flight at once, and
// returns their ids once RabbitMQ confirmed them. On error it returns the
// ids of the messages confirmed before the first failure, in order; as
// with Publish, that failure wraps core.ErrPublishUncertain when the
// message was written.
func (b *Broker) PublishBatch(ctx context.Context, msgs []core.Outgoing) ([]string, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	if !b.beginPublish() {
		return nil, core.ErrClosed
	}
	defer b.publishing.Done()
	out := make([]amqp091.Publishing, len(msgs))
	for i, m := range msgs {
		if m.Event == "" {
			return nil, errors.New("amqp: publish: event name is empty")
		}
		raw, err := b.cfg.Codec.Marshal(m.Data)
		if err != nil {
			return nil, fmt.Errorf("amqp: publish %s: %w", m.Event, err)
		}
		out[i] = b.message(raw)
	}
	var (
		ch      *confirmChannel
		pending = make([]*amqp091.DeferredConfirmation, 0, len(msgs))
		sendErr error
		probes  = make([]*routeState, len(msgs))
		probed  = make([]bool, len(msgs))
	)
	for i, m := range msgs {
		probed[i], probes[i] = b.routes.mandatory(m.Event)
	}
	pc := b.pub.pick()
	for attempt := 1; ; attempt++ {
		ch, sendErr = pc.channel(ctx, b.closeCtx.Done())
		if sendErr != nil {
			break
		}
		// All on this one channel: should it close midway, the rest is
		// not sent elsewhere, where it could overtake what was sent.
		for i := len(pending); i < len(out); i++ {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, b.cfg.Exchange, msgs[i].Event, probed[i], false, out[i])
			if err != nil {
				sendErr = err
				break
			}
			pending = append(pending, dc)
		}
		// Nothing written yet and the channel had closed: safe to retry.
		if len(pending) > 0 || !errors.Is(sendErr, amqp091.ErrClosed) || attempt >= maxResend || ctx.Err() != nil {
			if ch != nil && errors.Is(sendErr, amqp091.ErrClosed) {
				sendErr = ch.closedError(sendErr)
			}
			break
		}
	}
	ids := make([]string, 0, len(msgs))
	for i, dc := range pending {
		err := wait(ctx, ch, dc)
		if probed[i] && err == nil {
			probes[i].note(ch.returns.take(out[i].MessageId))
		} else {
			ch.returns.drain()
		}
		if err != nil {
			return ids, b.publishError(msgs[i].Event, err)
		}
		ids = append(ids, out[i].MessageId)
	}
	if sendErr != nil {
		return ids, b.publishError(msgs[len(pending)].Event, sendErr)
	}
	return ids, nil
}
