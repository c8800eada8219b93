package core

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// PendingRule selects a group's pending messages by what they are rather
// than by id: an operator's "everything stuck on consumer X for over five
// minutes". The zero rule matches every pending message. Every condition
// set must hold.
type PendingRule struct {
	// Consumer matches the messages this consumer owns, exactly.
	Consumer string
	// ConsumerContains matches the messages of every consumer whose name
	// contains this text.
	ConsumerContains string
	// MinIdle matches messages idle at least this long.
	MinIdle time.Duration
	// MinDeliveries matches messages delivered at least this many times.
	MinDeliveries int64
	// IDs, when set, restricts the rule to these message ids (an undo
	// claims back exactly what a claim took).
	IDs []string
}

// Matches reports whether p satisfies every condition of r.
func (r PendingRule) Matches(p PendingEntry) bool {
	switch {
	case r.Consumer != "" && p.Consumer != r.Consumer:
		return false
	case r.ConsumerContains != "" && !strings.Contains(p.Consumer, r.ConsumerContains):
		return false
	case p.Idle < r.MinIdle:
		return false
	case p.Deliveries < r.MinDeliveries:
		return false
	case len(r.IDs) > 0 && !slices.Contains(r.IDs, p.ID):
		return false
	}
	return true
}

// IsAll reports whether r matches every pending message of a group.
func (r PendingRule) IsAll() bool {
	return r.Consumer == "" && r.ConsumerContains == "" && r.MinIdle <= 0 && r.MinDeliveries <= 0 && len(r.IDs) == 0
}

// String describes r for a person: "all pending", or its conditions
// joined by " and " ("consumer w1 and idle ≥ 5m0s").
func (r PendingRule) String() string {
	var parts []string
	if r.Consumer != "" {
		parts = append(parts, "consumer "+r.Consumer)
	}
	if r.ConsumerContains != "" {
		parts = append(parts, fmt.Sprintf("consumer containing %q", r.ConsumerContains))
	}
	if r.MinIdle > 0 {
		parts = append(parts, "idle ≥ "+r.MinIdle.String())
	}
	if r.MinDeliveries > 0 {
		parts = append(parts, fmt.Sprintf("deliveries ≥ %d", r.MinDeliveries))
	}
	if len(r.IDs) > 0 {
		parts = append(parts, fmt.Sprintf("%d chosen ids", len(r.IDs)))
	}
	if len(parts) == 0 {
		return "all pending"
	}
	return strings.Join(parts, " and ")
}

// BulkProgress is how far a bulk action has come.
type BulkProgress struct {
	// Done is how many messages it acted on so far.
	Done int
	// Scanned is how many pending messages it looked at so far.
	Scanned int
	// Total is how many pending messages it will look at, as counted when
	// it started; -1 when unknown. Live consumers change the list
	// meanwhile, so Scanned may end below or above it.
	Total int64
}

// BulkResult is what a bulk action did.
type BulkResult struct {
	// Count is how many messages it acted on.
	Count int
	// Previous holds, for a claim, every message claimed as it was
	// before (its previous owner in Consumer), in id order: what undoing
	// the claim needs. Nil for acks and dead letters.
	Previous []PendingEntry
}

// BulkPendingInspector is implemented, besides PendingInspector, by
// brokers that settle every pending message matching a rule in batches.
// Each method walks the group's pending list once in id order, in pages,
// checks each message against the rule at the moment it acts on it (a
// message that a live consumer acknowledged or claimed meanwhile, so that
// it no longer matches, is left alone), reports progress after each page
// (progress may be nil) and stops when ctx ends, returning what it did
// so far with ctx's error. Find it with a type assertion:
//
//	if b, ok := in.(core.BulkPendingInspector); ok { … }
type BulkPendingInspector interface {
	// CountPending counts the pending messages of group that match rule.
	CountPending(ctx context.Context, stream, group string, rule PendingRule) (int64, error)
	// ClaimPending gives every message matching rule to consumer, without
	// counting a delivery.
	ClaimPending(ctx context.Context, stream, group, consumer string, rule PendingRule, progress func(BulkProgress)) (BulkResult, error)
	// AckPending acknowledges every message matching rule.
	AckPending(ctx context.Context, stream, group string, rule PendingRule, progress func(BulkProgress)) (BulkResult, error)
	// DeadLetterPending moves every message matching rule to the
	// dead-letter event with reason, as PendingInspector.DeadLetter does.
	DeadLetterPending(ctx context.Context, stream, group, reason string, rule PendingRule, progress func(BulkProgress)) (BulkResult, error)
}
