package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Errors callers branch on.
var (
	// ErrTimeout is returned by Call when no reply came before the deadline.
	ErrTimeout = errors.New("timed out waiting for a reply")
	// ErrClosed is returned by a broker that has been closed.
	ErrClosed = errors.New("broker closed")
	// ErrUnsupported is returned for an operation a driver cannot perform.
	ErrUnsupported = errors.New("not supported by this broker")
	// ErrPublishUncertain marks a failed Publish (or Call) whose message
	// may still have reached the broker: the connection failed after the
	// request was written, or the broker did not say whether it routed it.
	// A caller that retries may publish the message twice.
	ErrPublishUncertain = errors.New("the message may still have been published")
	// ErrStatsUnavailable marks an inspector's statistics (queue depths,
	// consumers, bindings) that cannot be read now while the broker itself
	// works: RabbitMQ's management API is off or does not answer. The
	// figures an Inspector returns meanwhile are partial; a caller shows
	// them as unknown, not as zero. See StatsChecker.
	ErrStatsUnavailable = errors.New("statistics unavailable")
)

// Broker is what every Spectacles broker driver offers.
type Broker interface {
	// Publish sends data under event to every group that consumes it and
	// returns the message id.
	Publish(ctx context.Context, event string, data any) (string, error)
	// Call publishes data and waits for one reply. Without a deadline in
	// ctx it waits Options.CallTimeout. A missing reply is an error that
	// wraps ErrTimeout.
	Call(ctx context.Context, event string, data any) (*Payload, error)
	// Consume declares this client's interest in events for its group
	// (creating the groups or queues) and returns once messages can flow,
	// or with an error when it cannot start. It does not block: in the
	// background it runs h for each message until ctx is cancelled or the
	// broker closes. Handlers get a context that outlives that
	// cancellation, so that a draining handler can still Ack; Close waits
	// for them.
	Consume(ctx context.Context, events []string, h Handler) error
	// Close stops every consumer, waits for in-flight handlers and pending
	// acknowledgements, and releases connections.
	Close() error
}

// Options are the settings every driver shares.
type Options struct {
	// Identity names this client and its group. Publishing needs no group;
	// consuming does.
	Identity Identity
	// Codec encodes and decodes payloads. Default: Msgpack.
	Codec Codec
	// MessageTimeout is how long a delivered message may stay unacknowledged
	// before another client of the group may take it over. Default 2m, the
	// default of spec-tacles/gateway's BROKER_MESSAGE_TIMEOUT. A driver may
	// wait for a handler that is still running (the AMQP driver does).
	MessageTimeout time.Duration
	// MaxDeliveries is how many deliveries a message gets before it is moved
	// to the dead-letter place. 0 means the default (5); negative disables
	// dead-lettering.
	MaxDeliveries int
	// CallTimeout bounds Call when ctx has no deadline. Default 5s.
	CallTimeout time.Duration
	// Concurrency is how many handlers one Consume runs at once. Default
	// 256: an Ack returns once the broker confirmed it, so Concurrency also
	// bounds how many acks can share one round trip.
	Concurrency int
	// Logger receives the driver's diagnostics. Default: slog.Default().
	Logger *slog.Logger
	// Announce is what a consuming client says about itself besides its
	// identity, for presence (see PresenceEvent).
	Announce Announcement
}

// Defaults for Options.
const (
	DefaultMessageTimeout = 2 * time.Minute
	DefaultMaxDeliveries  = 5
	DefaultCallTimeout    = 5 * time.Second
	DefaultConcurrency    = 256
)

// WithDefaults returns o with every unset field given its default.
func (o Options) WithDefaults() Options {
	if o.Codec == nil {
		o.Codec = Msgpack{}
	}
	if o.MessageTimeout <= 0 {
		o.MessageTimeout = DefaultMessageTimeout
	}
	if o.MaxDeliveries == 0 {
		o.MaxDeliveries = DefaultMaxDeliveries
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// CallContext applies the call timeout when ctx has no deadline. The
// returned cancel must be called.
func (o Options) CallContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, o.CallTimeout)
}

// TimeoutError builds the error Call returns when no reply came: it wraps
// ErrTimeout and, when the cause was a deadline, context.DeadlineExceeded.
func TimeoutError(event string, ctx context.Context, started time.Time) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, context.DeadlineExceeded) {
		return fmt.Errorf("call %s: %w after %s: %w", event, ErrTimeout, time.Since(started).Round(time.Millisecond), context.DeadlineExceeded)
	}
	return fmt.Errorf("call %s: %w", event, cause)
}

// RunHandler runs h for m, turning a panic into a logged error so that one
// bad message cannot bring the consumer down. The message stays unsettled.
func RunHandler(ctx context.Context, log *slog.Logger, h Handler, m *Message) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("handler panicked; message left unacknowledged",
				"event", m.Event, "id", m.ID, "panic", fmt.Sprint(r))
		}
	}()
	h(ctx, m)
}

// Outgoing is one message of a batch publish.
type Outgoing struct {
	Event string
	Data  any
}

// BatchPublisher is implemented by brokers that can publish many messages
// in one round trip, keeping their order. PublishBatch returns the ids in
// the order of msgs; on error, ids holds those published before it.
type BatchPublisher interface {
	PublishBatch(ctx context.Context, msgs []Outgoing) (ids []string, err error)
}

// SequencedOutgoing is one message of a sequenced publish: a message that
// has a position (Session, Seq) in a numbered source, such as a Discord
// shard's dispatches.
type SequencedOutgoing struct {
	Outgoing
	// Mark names the broker-side record of the newest position published
	// from the source: one per source (per shard), shared by every process
	// that publishes for it. A message without a Mark is published
	// unconditionally (at least once), its mark untouched.
	Mark string
	// Session and Seq are the message's position: within a session, Seq
	// grows with every message.
	Session string
	Seq     int64
}

// SequencedPublisher is implemented by brokers that can publish a numbered
// source's messages exactly once, even when a publish is retried after an
// uncertain failure or a later process publishes the same positions again.
//
// PublishSequenced publishes msgs in order. For each message it reads the
// message's Mark: when the mark holds the same Session and a Seq at least
// the message's, the message was published before and is skipped;
// otherwise it is published and the mark set to its Session and Seq,
// atomically with the publish. A mark holding another session is replaced
// (a new session numbers from 1 again; callers publish a source in order,
// so an older session never follows a newer one). It returns, in the order
// of msgs, the id of each published message and "" for each skipped one;
// on error, ids holds the outcome of the messages before the failure. An
// error wrapping ErrPublishUncertain may have come after later messages
// were published too: a retry skips them. A broker that cannot do this
// where it is connected (a Redis Cluster) returns an error wrapping
// ErrUnsupported having published nothing; the caller then publishes with
// PublishAll, at least once.
type SequencedPublisher interface {
	PublishSequenced(ctx context.Context, msgs []SequencedOutgoing) (ids []string, err error)
}

// PublishAll publishes msgs in order, in one batch when b supports it.
func PublishAll(ctx context.Context, b Broker, msgs []Outgoing) ([]string, error) {
	if bp, ok := b.(BatchPublisher); ok {
		return bp.PublishBatch(ctx, msgs)
	}
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		id, err := b.Publish(ctx, m.Event, m.Data)
		if err != nil {
			return ids, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// ConsumeEvents checks the events given to Consume: at least one, none
// empty. It returns them without duplicates, in order.
func ConsumeEvents(events []string) ([]string, error) {
	if len(events) == 0 {
		return nil, errors.New("no events given")
	}
	seen := make(map[string]bool, len(events))
	out := make([]string, 0, len(events))
	for _, ev := range events {
		if ev == "" {
			return nil, errors.New("empty event name")
		}
		if !seen[ev] {
			seen[ev] = true
			out = append(out, ev)
		}
	}
	return out, nil
}
