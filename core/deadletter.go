package core

import "strings"

// DeadLetterSuffix ends the event name under which dead-lettered messages
// of an event are kept.
const DeadLetterSuffix = ":dlq"

// Headers that a dead-lettered message carries besides its original payload.
const (
	HeaderEvent      = "event"      // the event it was published under
	HeaderID         = "id"         // its id in the source event
	HeaderGroup      = "group"      // the group that gave up on it
	HeaderClient     = "client"     // the client that dead-lettered it
	HeaderReason     = "reason"     // why it was dead-lettered
	HeaderDeliveries = "deliveries" // deliveries before it was dead-lettered
	HeaderFailedAt   = "failed_at"  // RFC 3339 time it was dead-lettered
)

// DeadLetterEvent names the event that holds event's dead letters. Consuming
// it (with any group) reads them; each carries the original payload and the
// Header* metadata.
func DeadLetterEvent(event string) string { return event + DeadLetterSuffix }

// IsDeadLetterEvent reports whether event holds dead letters, and of which
// event.
func IsDeadLetterEvent(event string) (source string, ok bool) {
	return strings.CutSuffix(event, DeadLetterSuffix)
}

// ReasonMaxDeliveries is the reason given to a message dead-lettered for
// exceeding Options.MaxDeliveries.
const ReasonMaxDeliveries = "exceeded max deliveries"
