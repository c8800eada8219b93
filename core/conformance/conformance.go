// Package conformance is the universal test suite every Spectacles broker
// driver passes, in the manner of Watermill's pub/sub tests: one suite,
// switched by feature flags for what a broker cannot do.
//
// Contract reminders the suite checks: Consume returns as soon as the
// subscription is in place (it does not block) and messages then flow in
// the background; Close drains running handlers, whose Acks still work.
//
// A driver's test calls Run with a Setup that makes clients connected to a
// real server:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, conformance.Setup{New: newBroker, Features: conformance.Features{...}})
//	}
package conformance

import (
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// Features says what the broker under test supports; tests of a feature it
// lacks are not run (and the suite logs which).
type Features struct {
	// Groups: several clients of one group share the messages (each once),
	// and every group gets its own copy.
	Groups bool
	// Fanout: every group (every client, for a broker without groups) gets
	// its own copy, without Groups' sharing within a group.
	Fanout bool
	// Redelivery: a message left unacknowledged by a client that died is
	// delivered again to another client of the group after MessageTimeout,
	// with its delivery count raised.
	Redelivery bool
	// DeadLetter: a message delivered more than MaxDeliveries times, or
	// rejected, moves to core.DeadLetterEvent(event) with its reason.
	DeadLetter bool
	// Restart: Setup.Restart restarts the broker server, and the driver
	// recovers by itself.
	Restart bool
	// UnhandledCalls: a call that nobody can ever read (no group consumes
	// its event) fails at once with an error wrapping core.ErrUnhandled,
	// instead of at its timeout.
	UnhandledCalls bool
}

// Setup connects the suite to the broker under test.
type Setup struct {
	// New returns a client with the given options, connected to the server
	// under test. The suite sets Identity, MessageTimeout, MaxDeliveries
	// and CallTimeout; New may add driver settings. The suite closes it.
	New func(t *testing.T, opts core.Options) core.Broker
	// Features selects the tests that apply.
	Features Features
	// Restart stops the server and starts it again at the same address.
	// Required when Features.Restart is set.
	Restart func(t *testing.T)
	// Cleanup removes what the suite created for these events (streams,
	// queues); optional. It runs when the test ends.
	Cleanup func(t *testing.T, events []string)
	// MessageTimeout is the short message timeout the redelivery tests use.
	// Default 400ms.
	MessageTimeout time.Duration
}
