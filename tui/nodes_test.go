package tui

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/golden"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
)

// fakeNodes are two gateway nodes of 4 shards reporting to Redis:
// gateway/host-a now (a shard failed), gateway/host-b 30 s ago (STALE).
func fakeNodes() []gateway.NodeStatus {
	ack := fixedNow.Add(-time.Second)
	return []gateway.NodeStatus{
		{Group: "gateway", Client: "host-a", ShardCount: 4, Published: 5000, UpdatedAt: fixedNow.Add(-time.Second), Shards: []gateway.Status{
			{ID: 0, Count: 4, State: gateway.Ready, Seq: 310, Latency: 38 * time.Millisecond, GuildsAvailable: 6, Events: 310, LastHeartbeatACK: ack},
			{ID: 1, Count: 4, State: gateway.Failed, Reconnects: 1, LastCloseCode: 4014, LastCloseReason: "disallowed intents",
				Err: "closed 4014: disallowed intents (token hunter2-password)"},
		}},
		{Group: "gateway", Client: "host-b", ShardCount: 4, UpdatedAt: fixedNow.Add(-30 * time.Second), Shards: []gateway.Status{
			{ID: 2, Count: 4, State: gateway.Ready, Seq: 290, Latency: 40 * time.Millisecond, GuildsAvailable: 6, Events: 290, LastHeartbeatACK: ack},
			{ID: 3, Count: 4, State: gateway.Ready, Seq: 301, Latency: 44 * time.Millisecond, GuildsAvailable: 5, Events: 301, LastHeartbeatACK: ack},
		}},
	}
}

// remoteNode is the fixture's node with gateway nodes reporting, and
// the local gateway when withLocal; reads counts the reads.
func remoteNode(withLocal bool, nodes func() ([]gateway.NodeStatus, error)) (*Node, *fakeGateway, *atomic.Int32) {
	ins, b, gw := fixture()
	var local Gateway
	if withLocal {
		local = gw
	}
	n := testNode(ins, b, local)
	if !withLocal {
		n.Info.Simulated = false
	}
	reads := new(atomic.Int32)
	n.ReadNodes = func(context.Context) ([]gateway.NodeStatus, error) {
		reads.Add(1)
		return nodes()
	}
	return n, gw, reads
}

func fixedNodes() ([]gateway.NodeStatus, error) { return fakeNodes(), nil }

func TestShardsListRemoteNodesAfterLocalShards(t *testing.T) {
	node, gw, _ := remoteNode(true, fixedNodes)
	d := newDriver(t, node, plainOptions(), 100, 30)
	d.keys("8")
	d.mustContain("NODE", "this console", "gateway/host-a", "STALE gateway/h", "0/4", "3/4", "failed", "closed 4014",
		"2 gateway nodes report to Redis: 4 shards: 1 ready, 0 resuming, 1 failed, 2 STALE", "STALE, no report for over 10s: gateway/host-b")
	d.mustNotContain("hunter2-password")
	v := d.m.views[kShards].(*shardsView)
	if len(v.rows) != 6 || v.rows[0].node != "" || v.rows[2].node != "gateway/host-a" || !v.rows[5].stale || v.rows[2].stale {
		t.Fatalf("rows %+v", v.rows)
	}
	// Local shards: controlled here.
	d.mustContain("x stop shard")
	// A remote shard: the keys are unavailable, and say why.
	d.keys("down", "down")
	d.mustNotContain("x stop shard", "s start shard")
	for _, k := range []string{"s", "x", "R"} {
		d.keys(k)
		d.mustContain("is unavailable: runs in another process: use that node (gateway/host-a)")
		d.mustNotContain("(y/N)")
	}
	d.keys("?")
	d.mustContain("Unavailable on shard 0 of gateway node gateway/host-a:", "stop shard", "✗ runs in another process: use that node")
	d.keys("esc")
	if len(gw.actions()) != 0 {
		t.Fatalf("a remote row's key acted on the local gateway: %v", gw.actions())
	}
	// Back on a local shard, the keys work again.
	d.keys("up", "x")
	d.mustContain("Stop shard 1?")
	d.keys("y")
	if got := strings.Join(gw.actions(), ","); got != "stop 1" {
		t.Fatalf("actions %s", got)
	}
}

func TestShardsRemoteOnlyWithoutALocalGateway(t *testing.T) {
	node, _, _ := remoteNode(false, fixedNodes)
	d := newDriver(t, node, plainOptions(), 100, 30)
	d.keys("8")
	d.mustContain("No gateway runs in this console.", "gateway/host-a", "0/4", "ready")
	d.mustNotContain("this console  ") // no local rows
	d.keys("x")
	d.mustContain("stop shard is unavailable: runs in another process: use that node (gateway/host-a)")
	// No node reports: the view says so, without a table.
	none, _, _ := remoteNode(false, func() ([]gateway.NodeStatus, error) { return nil, nil })
	e := newDriver(t, none, plainOptions(), 100, 30)
	e.keys("8")
	e.mustContain("No gateway runs in this console.", "No gateway node in another process reports its shards to this Redis.")
	e.mustNotContain("SHARD")
}

func TestShardsWideTerminalKeepsTheTrend(t *testing.T) {
	node, _, _ := remoteNode(true, fixedNodes)
	d := newDriver(t, node, plainOptions(), 100, 30)
	d.keys("8")
	d.mustNotContain("TREND")
	d.send(tea.WindowSizeMsg{Width: 130, Height: 30})
	d.mustContain("NODE", "TREND", "gateway/host-a")
}

func TestRemoteReadErrorIsShownRedacted(t *testing.T) {
	node, _, _ := remoteNode(true, func() ([]gateway.NodeStatus, error) {
		return nil, errors.New("dial redis://:hunter2-password@10.0.0.5:6379: connection refused")
	})
	d := newDriver(t, node, plainOptions(), 100, 30)
	d.mustContain("✗ gateway nodes: dial redis://:xxxxx@10.0.0.5:6379")
	d.keys("8")
	d.mustContain("✗ gateway nodes: dial redis://:xxxxx@10.0.0.5:6379", "0/2", "1/2")
	d.mustNotContain("hunter2-password")
}

func TestOverviewCountsLocalAndRemoteShards(t *testing.T) {
	node, _, _ := remoteNode(true, fixedNodes)
	d := newDriver(t, node, plainOptions(), 120, 30)
	d.mustContain("2 shards: 1 ready, 1 resuming, 0 failed", // the local gateway, as before
		"6 shards: 2 ready, 1 resuming, 1 failed, 2 STALE · 2 here, 4 on 2 nodes (1 STALE)",
		"⚠ shard 1 of gateway/host-a failed: closed 4014: disallowed intents (token xxxxx)",
		"⚠ gateway node gateway/host-b is STALE: no report for 30.0s")
	// Without a local gateway, the remote shards alone.
	r, _, _ := remoteNode(false, fixedNodes)
	e := newDriver(t, r, plainOptions(), 120, 30)
	e.mustContain("none in this console", "4 shards: 1 ready, 0 resuming, 1 failed, 2 STALE · 4 on 2 nodes (1 STALE)")
	// No source of remote statuses: no Shards line, as before.
	ins, b, gw := fixture()
	f := newDriver(t, testNode(ins, b, gw), plainOptions(), 120, 30)
	f.mustNotContain("gateway nodes", " Shards       ")
}

func TestSendUsesARemoteNodesShardCount(t *testing.T) {
	node, _, _ := remoteNode(false, fixedNodes)
	d := newDriver(t, node, plainOptions(), 100, 30)
	d.keys("7")
	const guild = "81384788765712384"
	d.typeText(guild)
	want := core.ShardID(81384788765712384, 4)
	d.mustContain("4 from the gateway node gateway/host-a", "routes to shard "+string(rune('0'+want))+" of 4")
	d.keys("ctrl+s")
	d.mustContain("The gateway routes it to shard " + string(rune('0'+want)) + " of 4")

	// Nodes that disagree: no guess.
	split, _, _ := remoteNode(false, func() ([]gateway.NodeStatus, error) {
		n := fakeNodes()
		n[1].UpdatedAt = fixedNow
		n[1].ShardCount = 8
		return n, nil
	})
	e := newDriver(t, split, plainOptions(), 100, 30)
	e.keys("7")
	e.typeText(guild)
	e.mustContain("gateway nodes report different shard counts (4, 8): type the bot's shard count")

	// Only stale nodes: their count, marked.
	stale, _, _ := remoteNode(false, func() ([]gateway.NodeStatus, error) { return fakeNodes()[1:], nil })
	s := newDriver(t, stale, plainOptions(), 100, 30)
	s.keys("7")
	s.mustContain("4 from the gateway node gateway/host-b (STALE)")

	// A local gateway's count wins, and the nodes are not read for it.
	local, _, reads := remoteNode(true, fixedNodes)
	l := newDriver(t, local, plainOptions(), 100, 30)
	before := reads.Load()
	l.keys("7")
	l.send(tickMsg{gen: l.m.tickGen})
	l.mustContain("2 from the local gateway")
	if reads.Load() != before {
		t.Fatal("the send view read the gateway nodes with a local gateway")
	}
}

func TestRemoteNodesAreReadInCommandsOnly(t *testing.T) {
	gate := make(chan struct{})
	node, _, reads := remoteNode(true, func() ([]gateway.NodeStatus, error) {
		<-gate
		return fakeNodes(), nil
	})
	m := idleModel(node, plainOptions())
	v := m.views[kShards].(*shardsView)
	first := firstLoad(t, v.refresh)
	for range 3 {
		_ = m.View()
	}
	if reads.Load() != 0 {
		t.Fatal("the nodes were read outside a command")
	}
	// Stale (the view's parameters changed meanwhile): dropped, loaded again.
	again := dropStale[shardsResult](t, first, gate, &v.load, v.update, func() bool { return len(v.rows) != 0 })
	v.update(again())
	if len(v.rows) != 6 || reads.Load() != 2 {
		t.Fatalf("fresh result: %d rows, %d reads", len(v.rows), reads.Load())
	}
}

func TestNodeWithoutSourceNeverReads(t *testing.T) {
	ins, b, gw := fixture()
	n := testNode(ins, b, gw)
	if n.Node().GatewayNodes {
		t.Fatal("a node without ReadNodes reports a source")
	}
	got, err := n.GatewayNodes(t.Context())
	if got != nil || err != nil {
		t.Fatalf("GatewayNodes without a source: %v %v", got, err)
	}
	n.ReadNodes = func(context.Context) ([]gateway.NodeStatus, error) { return fakeNodes(), nil }
	if !n.Node().GatewayNodes {
		t.Fatal("a node with ReadNodes reports no source")
	}
}

// TestGoldenRemote renders the views that show gateway nodes' shards
// (testdata/TestGoldenRemote; -update rewrites them).
func TestGoldenRemote(t *testing.T) {
	cases := []struct {
		name  string
		local bool
		steps func(d *driver)
	}{
		{"overview", true, func(d *driver) {}},
		{"overview-remote-only", false, func(d *driver) {}},
		{"shards", true, func(d *driver) { d.keys("8") }},
		{"shards-remote-only", false, func(d *driver) { d.keys("8", "down") }},
		{"shards-help-remote", true, func(d *driver) { d.keys("8", "down", "down", "?") }},
		{"send", false, func(d *driver) { d.keys("7"); d.typeText("81384788765712384"); d.keys("esc") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			node, _, _ := remoteNode(c.local, fixedNodes)
			d := newDriver(t, node, plainOptions(), 100, 30)
			c.steps(d)
			golden.RequireEqual(t, d.view())
		})
	}
}
