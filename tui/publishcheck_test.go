package tui

import (
	"context"
	"testing"
)

func TestPublishAndCallAskWhenGroupsConsume(t *testing.T) {
	d, _, b, _ := newFixtureDriver(t, plainOptions())
	d.keys("6")
	d.typeText("MESSAGE_CREATE")
	d.keys("tab", "tab") // Event, Timeout, Data
	d.typeText(`{"content": "hi"}`)
	d.keys("ctrl+s")
	d.mustContain("Publish to MESSAGE_CREATE? 2 groups consume it (sim-bot, audit): each handles it.", "(y/N)")
	d.keys("n")
	if len(b.events()) != 0 {
		t.Fatal("published without a yes")
	}
	d.mustNotContain("calling")
	d.keys("ctrl+o")
	d.mustContain("Call MESSAGE_CREATE? 2 groups consume it (sim-bot, audit); the first reply wins.")
	d.keys("n", "ctrl+s", "y")
	if ev := b.events(); len(ev) != 1 || ev[0] != "MESSAGE_CREATE" {
		t.Fatalf("published %v", ev)
	}
	d.mustContain("published MESSAGE_CREATE → id")
}

func TestPublishChecksPacketsAsTheSendView(t *testing.T) {
	d, _, b, _ := newFixtureDriver(t, plainOptions())
	d.keys("6")
	d.typeText("SEND")
	d.keys("tab", "tab") // Event, Timeout, Data
	d.typeText(`{"guild_id": "81384788765712384", "packet": {"op": 2, "d": {}}}`)
	d.mustContain("✗ SEND packet: invalid packet")
	d.keys("ctrl+s")
	d.mustNotContain("(y/N)")
	d.send(keyMsg("ctrl+a"))
	d.keys("shift+tab", "shift+tab") // back to Event
	for range len("SEND") {
		d.keys("backspace")
	}
	d.typeText("nope")
	d.keys("tab")
	// A shard id past the local gateway's two shards.
	d.keys("shift+tab")
	for range len("nope") {
		d.keys("backspace")
	}
	d.typeText("5")
	d.keys("tab")
	d.mustContain("✗ shard 5 is not in 0..1")
	d.keys("ctrl+s")
	if len(b.events()) != 0 {
		t.Fatalf("published %v", b.events())
	}
}

func TestCtrlSWithNoFocusDoesNothing(t *testing.T) {
	d, _, b, _ := newFixtureDriver(t, plainOptions())
	d.keys("6")
	d.typeText("echo")
	d.keys("tab", "tab") // Event, Timeout, Data: the screen's order
	d.typeText(`{"a": 1}`)
	d.keys("esc", "ctrl+s", "ctrl+o")
	d.mustNotContain("(y/N)", "calling", "published echo")
	d.keys("7")
	d.typeText("81384788765712384")
	d.keys("esc", "ctrl+s", "ctrl+d")
	d.mustNotContain("(y/N)")
	if len(b.events()) != 0 {
		t.Fatalf("published %v", b.events())
	}
	// Focused again, ctrl+s publishes.
	d.keys("6", "i", "ctrl+s")
	if len(b.events()) != 1 {
		t.Fatalf("published %v", b.events())
	}
}

func TestStartingAGatewayAsks(t *testing.T) {
	ins, b, _ := fixture()
	node := testNode(ins, b, nil)
	node.Info.EnvToken = true
	started := 0
	node.Start = func(context.Context, string) (GatewayInfo, error) {
		started++
		return GatewayInfo{}, nil
	}
	d := newDriver(t, node, plainOptions(), 100, 30)
	d.keys("8", "g", "enter")
	d.mustContain("Start a local gateway with DISCORD_TOKEN from the environment?", "(y/N)")
	d.keys("n")
	if started != 0 {
		t.Fatal("started without a yes")
	}
	d.keys("g", "enter", "y")
	if started != 1 {
		t.Fatalf("started %d times", started)
	}
}
