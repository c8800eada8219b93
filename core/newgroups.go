package core

import "context"

// newGroupsAtEndKey is the context key of WithNewGroupsAtEnd.
type newGroupsAtEndKey struct{}

// WithNewGroupsAtEnd returns a context that asks Consume to create the
// groups that do not exist yet at the end of their streams, so that a new
// group gets only the messages published from then on, not the stream's
// history (the default, as every peer creates groups at id 0). A group
// that already exists keeps its position: a consumer that restarts still
// gets what was published while it was away. The gateway consumes SEND and
// its shard ids this way, so that a new gateway never replays old packets
// to Discord.
//
// The Redis driver honours it (XGROUP CREATE ... $ MKSTREAM). It means
// nothing to the AMQP driver, whose new queues start empty anyway, nor to
// IPC, which keeps no history; they ignore it.
func WithNewGroupsAtEnd(ctx context.Context) context.Context {
	return context.WithValue(ctx, newGroupsAtEndKey{}, true)
}

// NewGroupsAtEnd reports whether ctx carries WithNewGroupsAtEnd.
func NewGroupsAtEnd(ctx context.Context) bool {
	at, _ := ctx.Value(newGroupsAtEndKey{}).(bool)
	return at
}
