// Package amqp is the RabbitMQ driver of Spectacles: a core.Broker over
// AMQP 0-9-1 (github.com/rabbitmq/amqp091-go) that speaks the wire protocol
// of the other Spectacles clients (@spectacles/brokers, spec-tacles/go,
// spec-tacles/gateway).
//
// # Mapping
//
// The Spectacles AMQP protocol names things so:
//
//   - A group is a durable direct exchange, Config.Exchange (by default
//     Options.Identity.Group). Publish sends to it with routing key =
//     event; so does Call.
//   - A consumer's queue for an event is <exchange>:[<subgroup>:]<event>,
//     durable, without arguments, bound to the exchange with routing key =
//     event. Config.Subgroup is the optional middle part.
//
// So the core notion "group" (each message at most once to one client of
// each group, and every group its own copy) is, in AMQP, one queue per
// event: clients with the same exchange and subgroup share the queue and
// each message goes to one of them; every other subgroup (or a peer that
// declared its own queue) gets its own copy. Services that consume another
// service's events set Exchange to that group and Subgroup to their own
// name; a service consuming its own exchange may leave Subgroup empty, as
// the other clients do. Publishing needs no subgroup, and a message
// published before any queue is bound to its event is dropped by RabbitMQ.
// The core conformance suite, for one, runs with a single exchange shared
// by all its clients and each of its groups as a subgroup.
//
// Exchange and queues are declared exactly as the other clients declare
// them (durable, no x- arguments): RabbitMQ refuses a second declaration
// whose arguments differ, so anything else would break every peer sharing
// them. Everything below therefore works on plain queues.
//
// # Delivery
//
// Messages are published persistent, with publisher confirms: Publish
// returns the id it gave the message (the message_id property, a UUIDv7)
// once RabbitMQ confirmed it. Publishes are pipelined: many wait for their
// confirms at once on each channel, and PublishBatch keeps its messages'
// order. A publish that fails after its message was written (no confirm
// before its context ended or the connection was lost, or a basic.nack)
// wraps core.ErrPublishUncertain: the message may have been routed; one
// that fails before does not. Errors carry RabbitMQ's own reason (code and
// text, as in "NOT_FOUND - no exchange 'x' in vhost '/'") and never the
// password. Consumers acknowledge manually, with Config.Prefetch messages
// in flight per queue; a client that dies leaves its unacknowledged
// messages to RabbitMQ, which gives them to another client of the queue
// marked redelivered.
//
// Delivery counting, Options.MessageTimeout and dead-lettering work on the
// messages themselves, since the queues carry no arguments. A message
// counts its deliveries in its "spectacles-deliveries" header: how many it
// had before it was last published (none when absent). These events publish
// a message again to its own queue, through the default exchange so that
// no other queue gets the copy, and acknowledge the original once RabbitMQ
// confirmed the copy (which goes to the back of the queue):
//
//   - A message RabbitMQ redelivers (its client died or closed before
//     settling it) is first published again with the lost delivery
//     counted, before any handler sees it: the redelivered flag alone
//     cannot tell how often clients died on a message, and a message that
//     crashes every client would otherwise never reach MaxDeliveries.
//   - A message a handler left unsettled for MessageTimeout (counted from
//     the handler's start) is published again with that delivery counted;
//     a later Ack or Reject of the original fails with ErrHandedOver. A
//     handler still running at MessageTimeout keeps its message until it
//     returns (taking it over would deliver it twice and fail the
//     handler's Ack): the message is handed over then, if still unsettled.
//     AMQP cannot take back one message without closing its channel,
//     which would requeue the messages of every other handler of the
//     consumer and fail their Acks; so for a hung handler the backstop is
//     RabbitMQ's consumer_timeout (30 minutes by default), which closes
//     the channel and so requeues its messages (counted as a lost
//     delivery each).
//   - A message RabbitMQ prefetched that waited MessageTimeout for a
//     handler slot (every handler of the Consume call is busy: the client
//     is stalled) is given back: the client cancels its subscriptions, so
//     that RabbitMQ sends it nothing more, and publishes every message
//     still waiting again to its queue, in the order they came, with its
//     delivery count unchanged (no handler saw it), acknowledging the
//     originals. The other clients of the queue get them; the stalled
//     client subscribes again once a handler slot is free and nothing
//     waits. So, as on Redis, no message waits behind a stuck handler for
//     longer than MessageTimeout; only the stuck handler's own message
//     stays with it.
//
// A hand-over or give-back puts the message at the back of its queue: a
// client that stalls with more messages queued than it prefetched sees
// those first.
//
// A message delivered more than Options.MaxDeliveries times (it is not
// given to the handler), or rejected with Message.Reject, is published to
// the exchange with routing key core.DeadLetterEvent(event), carrying its
// payload and the core.Header* headers, then acknowledged.
//
// Dead letters themselves (a consumed event for which core.IsDeadLetterEvent
// holds) are never dead-lettered, counted or published again: Reject
// fails with core.ErrRejectDeadLetter, MaxDeliveries does not apply, and a
// dead letter left unsettled for MessageTimeout (or waiting that long
// behind busy handlers) goes back to its queue with basic.nack (requeue),
// in place and unchanged, marked redelivered; a consumer that stops
// without settling it leaves it in place too. So reading dead letters
// without acknowledging them leaves their queue as it was (each is
// delivered again every MessageTimeout meanwhile, and at most Prefetch of
// them are delivered at once); only Ack removes one. No queue is declared
// for the dead letters of dead letters. Consume
// declares, next to each event's queue, the queue of its dead letters
// (<exchange>:[<subgroup>:]<event>:dlq) so that none is dropped; consuming
// core.DeadLetterEvent(event) with the same subgroup reads it, and any
// other subgroup that consumes it gets a copy of the dead letters
// published after it declared its queue. The count errs on the high side:
// prefetched messages a closing client never handled come back marked
// redelivered and count one delivery more than they had.
//
// AMQP does not confirm acknowledgements: Ack returns once basic.ack is
// written. Close closes the channels cleanly, which RabbitMQ answers only
// after it processed the acknowledgements written before.
//
// # Calls
//
// Call publishes with reply_to set to the client's exclusive callback
// queue (one per broker, shared by its calls) and correlation_id set to
// the message id, and waits for the reply with that correlation id. A
// consumer's Message.Reply publishes to the default exchange with routing
// key = reply_to and the caller's correlation_id, as @spectacles/brokers
// does, so calls work both ways with it.
//
// # Connections
//
// A broker keeps two connections, one for publishing and one for
// consuming, and dials again with capped, jittered backoff when one is
// lost; consumers then declare and subscribe again, pending calls keep
// waiting on a callback queue of the same name, and publishing resumes.
// Acknowledgements of messages delivered on a lost connection fail: those
// messages go back to their queue. Config.Expire, off by default, gives
// messages an AMQP expiration of MessageTimeout as spec-tacles/gateway
// does, at the price of losing the messages that expire.
//
// # Inspection
//
// Broker implements core.Inspector with what AMQP offers and, when it
// answers, the RabbitMQ management API (the rabbitmq_management plugin)
// at Config.ManagementURL: by default the AMQP URL's host on port 15672
// (15671 and https for amqps://), with the AMQP URL's credentials and
// virtual host; "off" disables it. A failing API (no answer, a refused
// login, a server error) is left alone for ten seconds, during which the
// Inspector answers from AMQP alone. Everything is scoped to the broker's
// exchange (Config.Exchange) and bounded: no method reads a whole queue.
// The API's counts are RabbitMQ's statistics, refreshed every few seconds
// (collect_statistics_interval, 5 s by default), so they lag that much.
//
//   - Server: kind "amqp", the URL without credentials or query, the
//     version RabbitMQ announces in the AMQP handshake (else the API's
//     rabbitmq_version), and the round trip of opening a channel.
//   - Streams: with the API, one stream per routing key bound on the
//     exchange (each event, and EVENT:dlq for its dead letters), Length
//     the messages (ready and unacknowledged) of all its queues, Groups
//     the number of those queues; AMQP has no message ids in order, so
//     FirstID and LastID are empty. Without it, the events this broker
//     consumed (and their dead letters), each with Groups 1 and Length the
//     ready messages of this broker's own queue (a passive declare, which
//     counts neither unacknowledged messages nor other subgroups' queues).
//   - Groups(stream): one group per queue bound with routing key stream,
//     named by the queue name (<exchange>:[<subgroup>:]<event>, or a
//     peer's own name): Consumers, Pending = unacknowledged messages, Lag
//     = ready messages (not yet delivered to any consumer), -1 when not
//     reported yet; LastDeliveredID is empty. Without the API, this
//     broker's own queue alone, with a passive declare's consumers and
//     ready messages (Lag), and Pending -1 (unknown).
//   - Consumers(stream, group), API only: group is a queue name as Groups
//     gives it (one not named <exchange>:… only when bound to the exchange
//     with routing key stream), or a subgroup of this exchange. Each
//     consumer is named by its consumer tag (this driver's begin with the
//     client name) and, when its connection has a name, " @ " and that
//     name (this driver names its connections
//     "spectacles <group>/<client> (consume)").
//     Pending is its channel's unacknowledged messages when it is the
//     channel's only consumer (as this driver's are, for one event), else
//     -1: RabbitMQ does not count them per consumer. Idle is unknown (0).
//   - Pending, Ack, Claim, DeadLetter: absent, the Broker is no
//     core.PendingInspector. AMQP cannot list the messages delivered to
//     other consumers, and only the channel a message was delivered on
//     can settle it; the driver hands a message back after MessageTimeout
//     and dead-letters it after MaxDeliveries by itself.
//   - Entries, API only, for dead letters (EVENT:dlq) only: it reads from
//     the head of this exchange's and subgroup's dead-letter queue with
//     the API's "get" (ackmode ack_requeue_true), which puts the messages
//     back in place, unchanged, but marks them redelivered (which this
//     driver does not count for dead letters: listing them never gets
//     them dead-lettered again).
//     Entry ids are message ids; Raw is the payload and Headers all
//     headers as text. After and Before are looked up among the first
//     2000 messages (an id not among them is compared as text: this
//     driver's ids are UUIDv7, in time order), and Reverse needs the whole
//     queue within those 2000. Messages a consumer of the dead-letter
//     queue holds unacknowledged are not seen. A live event is
//     unsupported: reading it would mark its messages redelivered, which
//     the driver counts as a delivery.
//   - Requeue, AMQP alone: on a channel of its own it takes messages from
//     the head of this exchange's and subgroup's dead-letter queue of the
//     event (basic.get, at most 10000), publishes each wanted one again to
//     the exchange with routing key = event (persistent, confirmed, a new
//     message id, the dead-letter headers and delivery count removed, so
//     every queue of the event gets it as new), acknowledges it once
//     confirmed, and gives every other message back in place (basic.nack
//     with requeue). Copies of the dead letter in other subgroups'
//     dead-letter queues stay. A failure between the publish and the
//     acknowledgement leaves the dead letter in place too.
package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/unhandled"
)

// ErrHandedOver is wrapped by the errors of Ack and Reject for a message
// the driver already handed back to its queue because its handler returned
// without settling it and Options.MessageTimeout passed: another delivery
// of it is under way. Only a message settled after its handler returned
// (from another goroutine) can meet it.
var ErrHandedOver = errors.New("message already handed back to its queue after MessageTimeout")

// ErrNoReplyTo is wrapped by the error of Reply for a message that carries
// no reply_to: it was published, not sent by a call, so nobody waits for a
// reply.
var ErrNoReplyTo = errors.New("message has no reply_to: it is not a call")

// Broker is a Spectacles broker over RabbitMQ. It is safe for concurrent
// use. Make one with Open.
type Broker struct {
	cfg         Config
	log         *slog.Logger
	contentType string

	pubLink *link // publishing, replies, dead letters
	subLink *link // consuming, the callback queue
	pub     *publisher
	replies *replies
	insp    inspectState // the Inspector's management API client and declared events
	// presence announces the client once it consumes (presence.go).
	presence *presence
	// unhandled counts the messages RabbitMQ returned (unhandled.go);
	// unhandledDone is closed when its reporting loop ends.
	unhandled     unhandled.Tally
	unhandledDone chan struct{}
	// routes says which publishes are mandatory (publish.go).
	routes routes

	// closeCtx is cancelled when Close starts: consumers stop, calls end,
	// publishes waiting for a connection give up.
	closeCtx    context.Context
	closeCancel context.CancelFunc
	closed      atomic.Bool
	// finished is set once the consumers have drained: settling is over.
	finished atomic.Bool

	mu         sync.RWMutex // guards the wait groups' Add against Close
	consumers  sync.WaitGroup
	publishing sync.WaitGroup

	closeOnce sync.Once
}

var _ core.Broker = (*Broker)(nil)

// Open connects to cfg.URL (both connections; one attempt each, within ctx
// and Config.ConnectTimeout), declares the exchange (unless Config.Passive),
// and returns the broker, which from then on reconnects by itself. Its
// errors never contain the URL's password.
func Open(ctx context.Context, cfg Config) (*Broker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &Broker{
		cfg:         cfg,
		log:         cfg.Logger.With("broker", "amqp", "exchange", cfg.Exchange),
		contentType: contentType(cfg.Codec.Name()),
	}
	b.closeCtx, b.closeCancel = context.WithCancel(context.Background())
	b.presence = newPresence(b)
	b.routes.every = b.unhandledEvery()
	if b.routes.every <= 0 {
		b.routes.every = core.UnhandledInterval
	}
	b.pubLink = newLink(&b.cfg, b.log, "publish")
	b.subLink = newLink(&b.cfg, b.log, "consume")
	b.subLink.presence = b.presence.property()
	b.pub = newPublisher(b)
	b.replies = newReplies(b)
	if b.insp.m, err = newMgmt(&b.cfg, b.log); err != nil {
		b.closeCancel()
		return nil, err
	}

	if err := b.pubLink.connect(ctx); err != nil {
		b.closeCancel()
		return nil, fmt.Errorf("amqp: %w", err)
	}
	if err := b.subLink.connect(ctx); err != nil {
		b.closeCancel()
		b.pubLink.stop()
		return nil, fmt.Errorf("amqp: %w", err)
	}
	// Open the first publishing channel now: it declares the exchange, so
	// that a refused declaration fails here rather than at each publish
	// (unless Passive: inspection changes nothing).
	if !cfg.Passive {
		if _, err := b.pub.chans[0].channel(ctx, nil); err != nil {
			b.closeCancel()
			b.pub.close()
			b.pubLink.stop()
			b.subLink.stop()
			return nil, fmt.Errorf("amqp: %w", err)
		}
	}
	b.unhandledDone = make(chan struct{})
	go b.unhandledLoop()
	return b, nil
}

// Config returns the broker's configuration, defaults filled in.
func (b *Broker) Config() Config { return b.cfg }

// QueueName returns the queue this client consumes event from:
// <exchange>:[<subgroup>:]<event>.
func (b *Broker) QueueName(event string) string {
	return QueueName(b.cfg.Exchange, b.cfg.Subgroup, event)
}

// Close stops every consumer, waits for their running handlers (whose
// Acks, Replies and Rejects still work) and for publishes awaiting their
// confirms, then closes the connections: RabbitMQ requeues whatever was
// delivered and not acknowledged. It is idempotent; afterwards every
// method returns core.ErrClosed. Calls in progress, and publishes waiting
// for a connection, return core.ErrClosed. A handler must not call Close:
// Close waits for the handler.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.presence.leave()
		b.mu.Lock()
		b.closed.Store(true)
		b.mu.Unlock()
		b.closeCancel()
		b.consumers.Wait()
		b.finished.Store(true)
		b.replies.close()
		b.publishing.Wait()
		<-b.unhandledDone
		if b.unhandledEvery() >= 0 {
			// What was returned since the last report is reported now.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			b.reportUnhandled(ctx)
			cancel()
		}
		b.presence.stopReport()
		b.pub.close()
		b.pubLink.stop()
		b.subLink.stop()
		b.insp.m.close()
	})
	return nil
}

// beginConsumer registers a consumer goroutine unless the broker is
// closed.
func (b *Broker) beginConsumer() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed.Load() {
		return false
	}
	b.consumers.Add(1)
	return true
}
