package tui

import (
	"testing"

	"github.com/spectacles-go/spectacles/core"
)

// TestPendingCapabilityFromType: what the Pending view offers follows the
// type of the inspector (core.PendingInspector or not), not the broker's
// kind; the escaping wrapper keeps the type.
func TestPendingCapabilityFromType(t *testing.T) {
	full, _, _ := fixture()
	if _, ok := (shownBackend{testNode(full, nil, nil)}).Inspector().(core.PendingInspector); !ok {
		t.Fatal("the shown inspector of a core.PendingInspector is none")
	}
	if _, ok := (shownBackend{testNode(amqpOnly{full}, nil, nil)}).Inspector().(core.PendingInspector); ok {
		t.Fatal("the shown inspector of a plain core.Inspector is a core.PendingInspector")
	}

	// A broker of kind "redis" that is no core.PendingInspector.
	ins, b, gw := fixture()
	d := newDriver(t, testNode(amqpOnly{ins}, b, gw), plainOptions(), 100, 30)
	d.command("pending MESSAGE_CREATE sim-bot")
	if d.m.active() != kPending {
		t.Fatalf("palette opened %v", d.m.active())
	}
	d.mustContain(noPendingWhy, "pending in sim-bot")
	d.mustNotContain("1700000030000-0", "RabbitMQ")
	for _, k := range []string{"A", "c", "D"} {
		d.keys(k)
		d.mustContain("is unavailable: " + noPendingWhy)
		if d.m.mode != modeNormal {
			t.Fatalf("%s opened mode %v", k, d.m.mode)
		}
	}
	for _, op := range []string{"Pending", "Ack", "Claim", "DeadLetter"} {
		if n := ins.count(op); n != 0 {
			t.Errorf("%s called %d times", op, n)
		}
	}

	// The same data as a core.PendingInspector lists the pending entries.
	ins, b, gw = fixture()
	d = newDriver(t, testNode(ins, b, gw), plainOptions(), 100, 30)
	d.command("pending MESSAGE_CREATE sim-bot")
	d.mustContain("5 pending in sim-bot", "1700000030000-0")
	d.mustNotContain(noPendingWhy)
	if ins.count("Pending") == 0 {
		t.Error("Pending was not called")
	}
}
