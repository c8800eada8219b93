package tui

import (
	"context"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// presenceBroker is a broker that reports presence.
type presenceBroker struct {
	*fakeBroker
	instances []core.Instance
	history   []core.PresenceEvent
}

func (p *presenceBroker) Instances(context.Context) ([]core.Instance, error) { return p.instances, nil }
func (p *presenceBroker) PresenceHistory(_ context.Context, n int) ([]core.PresenceEvent, error) {
	return p.history[:min(n, len(p.history))], nil
}

func TestServicesViewListsInstances(t *testing.T) {
	ins, b, gw := fixture()
	live := fixedNow.Add(-2 * time.Second)
	pb := &presenceBroker{fakeBroker: b, instances: []core.Instance{
		{Group: "audit", Client: "w1", Version: "1.2.0", Events: []string{"MESSAGE_CREATE"}, Session: "s1", LastSeen: live, TTLMs: 12000},
		{Group: "audit", Client: "w2\x1b[31m", Version: "1.2.0", Events: []string{"MESSAGE_CREATE"}, Session: "s2", LastSeen: fixedNow.Add(-time.Minute), TTLMs: 12000},
		{Group: "proxy", Client: "p1", Events: []string{"REQUEST"}, Calls: []string{"REQUEST"}, Session: "s3", LastSeen: live},
	}, history: []core.PresenceEvent{
		{Event: core.EventInstanceDisconnected, Instance: core.Instance{Group: "audit", Client: "w3"}, Reason: "expired", At: fixedNow.Add(-30 * time.Second)},
	}}
	d := newDriver(t, testNode(ins, pb, gw), plainOptions(), 120, 30)
	d.keys("9")
	d.mustContain("Services", "3 instances of 2 groups · 1 stale", "GROUP", "CLIENT", "audit", "w1", "1.2.0", "online", "2.0s ago",
		"stale", "proxy", "REQUEST", "Latest presence events", "instance.disconnected", "audit/w3 (expired)")
	// A name from the broker is escaped before it reaches the terminal.
	d.mustNotContain("\x1b[31m")
	d.mustContain(`$'w2\x1b[31m'`)
	// The filter keeps the instances that match.
	d.keys("/")
	d.typeText("proxy")
	d.keys("enter")
	d.mustContain("p1")
	d.mustNotContain("w1")
	// :services gets there too.
	d.keys("esc", "1")
	d.command("services")
	d.mustContain("Latest presence events")
}

func TestServicesViewWithoutPresence(t *testing.T) {
	ins, b, gw := fixture()
	d := newDriver(t, testNode(ins, b, gw), plainOptions(), 120, 30)
	d.keys("9")
	d.mustContain("This broker reports no presence")
}

// Presence event streams are informational: the overview does not warn
// that nobody consumes them, as it does for other events.
func TestOverviewDoesNotWarnAboutPresenceStreams(t *testing.T) {
	ins, b, gw := fixture()
	ev := &fakeStream{name: core.EventInstanceConnected, entries: []core.Entry{{ID: "1-0", Raw: mustMsgpack(map[string]any{"event": "x"})}}}
	ins.streams[ev.name] = ev
	d := newDriver(t, testNode(ins, b, gw), plainOptions(), 160, 40)
	d.mustContain("TYPING_START: 1,000,000 entries published, but no group consumes them")
	d.mustNotContain("spectacles.instance.connected: 1 entries")
}
