package core

import (
	"context"
	"time"
)

// Inspector is implemented by brokers that let an operator look inside:
// the server, the events (Redis streams, AMQP queues), their groups and
// consumers and their entries; and requeue dead letters by hand. Every
// inspectable broker can do all of it, though a method may refuse some
// arguments with an error wrapping ErrUnsupported (the AMQP driver lists
// the entries of dead letters only).
//
// A broker that can also list and settle the messages delivered to other
// consumers implements PendingInspector too; a caller finds out with a
// type assertion.
type Inspector interface {
	// Server describes the broker server and measures one round trip.
	Server(ctx context.Context) (ServerInfo, error)
	// Streams lists every event stream (queue) with its size.
	Streams(ctx context.Context) ([]StreamInfo, error)
	// Groups lists the consumer groups of a stream.
	Groups(ctx context.Context, stream string) ([]GroupInfo, error)
	// Consumers lists the consumers of a group.
	Consumers(ctx context.Context, stream, group string) ([]ConsumerInfo, error)
	// Entries returns up to q.Count entries of a stream: oldest first
	// after q.After, or with q.Reverse newest first before q.Before. A live
	// tail polls it with After set to the last id seen.
	Entries(ctx context.Context, stream string, q RangeQuery) ([]Entry, error)
	// Requeue publishes dead letters (ids in DeadLetterEvent(event)) again
	// under their original event and removes them from the dead-letter
	// event. It returns the new message ids.
	Requeue(ctx context.Context, event string, ids ...string) ([]string, error)
}

// PendingInspector is implemented, besides Inspector, by brokers that
// list the messages delivered to a group and not yet acknowledged, and
// let anyone settle them: acknowledge them, give them to another consumer
// or move them to the dead letters. The Redis driver does; the AMQP
// driver does not, since only the channel a message was delivered on can
// settle it. Find it with a type assertion on an Inspector:
//
//	if p, ok := in.(core.PendingInspector); ok { … }
type PendingInspector interface {
	// Pending returns one page of a group's delivered, unacknowledged
	// messages, in id order, starting after q.After.
	Pending(ctx context.Context, stream, group string, q PendingQuery) ([]PendingEntry, error)
	// Ack acknowledges ids for group by hand and returns how many were
	// pending.
	Ack(ctx context.Context, stream, group string, ids ...string) (int, error)
	// Claim gives pending ids of group to consumer (idle at least minIdle)
	// and returns the ids it now owns.
	Claim(ctx context.Context, stream, group, consumer string, minIdle time.Duration, ids ...string) ([]string, error)
	// DeadLetter moves pending ids of group to the dead-letter event with a
	// reason, acknowledging them in the source.
	DeadLetter(ctx context.Context, stream, group, reason string, ids ...string) (int, error)
}

// StatsChecker is implemented, besides Inspector, by brokers whose
// statistics come from a source that can fail while the broker works (the
// AMQP driver's management API). StatsErr returns nil while the figures
// are complete, else an error wrapping ErrStatsUnavailable that says why
// (without any password): Streams and Groups then answer with what the
// broker alone tells (the events this client consumed, no bound queues of
// others), which must not be shown as "none". It reports the outcome of
// the latest request: call it after Streams or Groups.
type StatsChecker interface {
	StatsErr() error
}

// ServerInfo describes a broker server.
type ServerInfo struct {
	Kind      string        // "redis", "redis-cluster", "amqp", …
	Address   string        // with any password removed
	Version   string        // server version
	RoundTrip time.Duration // one request's round trip
	Embedded  bool          // an in-process server that keeps nothing
}

// StreamInfo describes one event stream.
type StreamInfo struct {
	Name    string
	Length  int64
	Groups  int
	FirstID string
	LastID  string
}

// GroupInfo describes one consumer group of a stream.
type GroupInfo struct {
	Name            string
	Consumers       int
	Pending         int64
	LastDeliveredID string
	// Lag is how many entries the group has not been delivered yet; -1
	// when the server cannot tell.
	Lag int64
}

// ConsumerInfo describes one consumer (client) of a group.
type ConsumerInfo struct {
	Name    string
	Pending int64
	// Idle is the time since the consumer last read or was handed a
	// message.
	Idle time.Duration
}

// PendingQuery selects a page of pending messages.
type PendingQuery struct {
	After    string        // exclusive start id; "" for the first page
	Count    int           // page size
	Consumer string        // only this consumer's, when set
	MinIdle  time.Duration // only messages idle at least this long
}

// PendingEntry is one delivered, unacknowledged message.
type PendingEntry struct {
	ID         string
	Consumer   string
	Idle       time.Duration
	Deliveries int64
}

// RangeQuery selects entries of a stream.
type RangeQuery struct {
	After   string // exclusive start id; "" for the oldest
	Before  string // exclusive end id for Reverse; "" for the newest
	Count   int
	Reverse bool // newest first
}

// Entry is one message of a stream, with its payload.
type Entry struct {
	ID      string
	Raw     []byte
	Headers map[string]string
}
