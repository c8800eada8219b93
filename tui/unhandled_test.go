package tui

import (
	"context"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// unhandledBroker is a broker that reports presence and unhandled events.
type unhandledBroker struct {
	presenceBroker
	reports []core.UnhandledReport
}

func (u *unhandledBroker) UnhandledReports(context.Context) ([]core.UnhandledReport, error) {
	return u.reports, nil
}

var testReports = []core.UnhandledReport{
	{Event: "GHOST_EVENT", Count: 1234, Publishers: []string{"audit/w1"}, LastAt: fixedNow.Add(-3 * time.Second)},
	{Event: "TYPING_START", Count: 5, Publishers: []string{"gateway/g1", "gateway/g2"}, LastAt: fixedNow},
	{Event: "BAD\x1b[31m", Count: 1, Publishers: []string{"x/\x1b[2J"}, LastAt: fixedNow},
}

// TestOverviewWarnsOfUnhandled: on Redis, the events publishers reported
// published with no group consuming them are warned of, merged into the
// warning of a stream without groups when there is one; names from the
// broker are escaped; enter on one opens Services.
func TestOverviewWarnsOfUnhandled(t *testing.T) {
	ins, b, gw := fixture()
	ub := &unhandledBroker{presenceBroker: presenceBroker{fakeBroker: b}, reports: testReports}
	d := newDriver(t, testNode(ins, ub, gw), plainOptions(), 200, 40)
	d.mustContain("TYPING_START: 1,000,000 entries published, but no group consumes them (5 messages reported unhandled by 2 publishers)",
		"GHOST_EVENT: 1,234 messages published that no group consumes (by audit/w1)",
		`$'BAD\x1b[31m': 1 message published that no group consumes (by $'x/\x1b[2J')`)
	d.mustNotContain("\x1b[31m", "\x1b[2J")
	d.mustNotContain("TYPING_START: 5 messages")
	// The second warning, GHOST_EVENT's, opens Services.
	d.keys("down", "enter")
	d.mustContain("0 instances")
}

// TestOverviewWithoutUnhandledReports: a broker that reports none shows
// the stream warning alone.
func TestOverviewWithoutUnhandledReports(t *testing.T) {
	ins, b, gw := fixture()
	ub := &unhandledBroker{presenceBroker: presenceBroker{fakeBroker: b}}
	d := newDriver(t, testNode(ins, ub, gw), plainOptions(), 200, 40)
	d.mustContain("TYPING_START: 1,000,000 entries published, but no group consumes them")
	d.mustNotContain("reported unhandled", "published that no group consumes")
}

// TestAMQPOverviewWarnsOfUnhandled: on RabbitMQ, where a message no queue
// takes leaves no trace but the publishers' counts, each reported event
// is warned of.
func TestAMQPOverviewWarnsOfUnhandled(t *testing.T) {
	ins := amqpFixture()
	ub := &unhandledBroker{presenceBroker: presenceBroker{fakeBroker: &fakeBroker{}}, reports: testReports[:2]}
	n := &Node{
		Info:    NodeInfo{Name: "ops-box/4242", Client: "spectacles-console@ops-box", Group: "bot", BrokerKind: "amqp", BrokerAddress: "amqp://guest:xxxxx@127.0.0.1:5672/", StaleAfter: 2 * time.Minute},
		Inspect: amqpOnly{ins}, Publisher: ub,
	}
	d := newDriver(t, n, plainOptions(), 160, 40)
	d.mustContain("queue bot:analytics:MESSAGE_CREATE: 5 ready and no consumers",
		"GHOST_EVENT: 1,234 messages published that no group consumes (by audit/w1)",
		"TYPING_START: 5 messages published that no group consumes (by gateway/g1, gateway/g2)")
}
