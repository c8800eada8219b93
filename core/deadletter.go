package core

import (
	"fmt"
	"strings"
)

// ErrRejectDeadLetter is wrapped by the error of Reject (and of moving a
// message to the dead letters by hand) on a message of a dead-letter event:
// a dead letter is never dead-lettered again (that would hide it under
// EVENT:dlq:dlq) nor dropped. It stays unsettled and is delivered again
// after Options.MessageTimeout; Ack removes it, and requeueing it publishes
// it again under its event. MaxDeliveries does not apply to dead letters.
// It wraps ErrUnsupported.
var ErrRejectDeadLetter = fmt.Errorf("a dead letter is never dead-lettered again; it stays where it is: %w", ErrUnsupported)

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
