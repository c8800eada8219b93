package tui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/simulator"
	"github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

// TestMain checks that no test leaves a goroutine behind. teatest parks one
// goroutine per test model on SIGINT by design; it is the only exception.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/charmbracelet/x/exp/teatest.NewTestModel.func2"))
}

// liveSystem is a real broker with a simulated Discord gateway behind it.
type liveSystem struct {
	url     string
	raw     goredis.UniversalClient
	broker  *redis.Broker
	sim     *simulator.Server
	manager *gateway.Manager
	node    *Node
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func startLiveSystem(t *testing.T, shards int) *liveSystem {
	t.Helper()
	// SEND and the shard events are fixed names: each test leases a
	// database of its own, and deletes them before and after, never
	// flushing it.
	url, _ := redistest.ExclusiveDB(t)
	raw := redistest.Client(t, url)
	keys := []string{gateway.SendEvent, core.DeadLetterEvent(gateway.SendEvent), "GUILD_CREATE", "READY", "RESUMED", "GUILD_MEMBERS_CHUNK"}
	keys = append(keys, simulator.SyntheticEvents()...)
	for i := range shards {
		keys = append(keys, fmt.Sprint(i), core.DeadLetterEvent(fmt.Sprint(i)))
	}
	raw.Del(context.Background(), keys...)
	redistest.DeleteKeys(t, raw, keys...)

	sim, err := simulator.New(simulator.Config{Shards: shards, Guilds: 4 * shards, IdentifyInterval: 10 * time.Millisecond,
		HeartbeatInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })

	open := func(group, client string) *redis.Broker {
		b, err := redis.Open(context.Background(), redis.Config{URL: url, Options: core.Options{
			Identity: core.Identity{Group: group, Client: client}, MessageTimeout: time.Minute, Logger: quiet()}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	console := open("console", "console-e2e")
	gwBroker := open(redistest.Unique("gateway"), "gw")
	m, err := gateway.NewManager(gateway.ManagerConfig{
		Token: sim.Token(), APIBase: sim.URL() + "/api/v10", Broker: gwBroker, Intents: 1<<0 | 1<<9,
		Identify: gateway.NewLocalIdentifyLimiter(1, 10*time.Millisecond, -1, 0), Logger: quiet(),
		Tune: func(c *gateway.ShardConfig) { c.MinBackoff, c.MaxBackoff = 10*time.Millisecond, 100*time.Millisecond },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-m.Started():
	case err := <-done:
		t.Fatalf("manager: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("manager did not start")
	}
	node := &Node{
		Info:    NodeInfo{Name: "e2e", Client: "console-e2e", BrokerKind: "redis", BrokerAddress: url, Simulated: true, StaleAfter: time.Minute},
		Inspect: console, Publisher: console,
	}
	node.SetGateway(GatewayInfo{Gateway: m, Simulated: true, Target: sim.GatewayURL()})
	return &liveSystem{url: url, raw: raw, broker: console, sim: sim, manager: m, node: node}
}

// waitOutput waits until the program's output shows every part.
func waitOutput(t *testing.T, tm *teatest.TestModel, parts ...string) {
	t.Helper()
	var seen []byte
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
		seen = b
		for _, p := range parts {
			if !bytes.Contains(b, []byte(p)) {
				return false
			}
		}
		return true
	}, teatest.WithDuration(15*time.Second), teatest.WithCheckInterval(20*time.Millisecond))
	_ = seen
}

func typeKeys(tm *teatest.TestModel, keys ...string) {
	for _, k := range keys {
		tm.Send(keyMsg(k))
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEndToEndClaimAckSend drives the console like an operator, against a
// real Redis and the simulated Discord gateway: a claim and an ack change
// Redis's pending list (checked with XPENDING), and a SEND reaches the
// simulated shard that owns the guild.
func TestEndToEndClaimAckSend(t *testing.T) {
	sys := startLiveSystem(t, 2)
	ctx := context.Background()
	stream, group := redistest.Unique("e2e"), "workers"
	redistest.DeleteKeys(t, sys.raw, stream)
	for i := range 5 {
		if _, err := sys.broker.Publish(ctx, stream, map[string]any{"n": i, "content": fmt.Sprintf("message %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sys.raw.XGroupCreate(ctx, stream, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := sys.raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: "w1", Streams: []string{stream, ">"}, Count: 10}).Err(); err != nil {
		t.Fatal(err)
	}

	opts := plainOptions()
	opts.Refresh = 300 * time.Millisecond
	baseCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts.Context = baseCtx
	opts.Now = time.Now
	tm := teatest.NewTestModel(t, New(sys.node, opts), teatest.WithInitialTermSize(120, 36))
	waitOutput(t, tm, "Overview", "2 ready")

	tm.Send(keyMsg(":"))
	tm.Type("pending " + stream + " " + group)
	typeKeys(tm, "enter")
	waitOutput(t, tm, "5 pending in workers")

	// Claim the first entry to the console.
	first := sys.raw.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: stream, Group: group, Start: "-", End: "+", Count: 1}).Val()[0]
	typeKeys(tm, "c")
	waitOutput(t, tm, "Claim 1 entry to consumer")
	typeKeys(tm, "enter")
	waitOutput(t, tm, "(y/N)")
	typeKeys(tm, "y")
	waitOutput(t, tm, `"console-e2e" now owns 1 of 1`)
	p := sys.raw.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: stream, Group: group, Start: first.ID, End: first.ID, Count: 1}).Val()
	if len(p) != 1 || p[0].Consumer != "console-e2e" {
		t.Fatalf("after the claim XPENDING says %+v", p)
	}

	// Acknowledge it.
	typeKeys(tm, "A")
	waitOutput(t, tm, "Acknowledge 1 entry")
	typeKeys(tm, "y")
	waitOutput(t, tm, "acknowledged 1 of 1")
	if n := sys.raw.XPending(ctx, stream, group).Val().Count; n != 4 {
		t.Fatalf("after the ack XPENDING counts %d, want 4", n)
	}

	// SEND-route a packet to the guild's shard.
	guild := sys.sim.GuildsForShard(1, 2)[0]
	typeKeys(tm, "7")
	tm.Type(guild)
	waitOutput(t, tm, "routes to shard 1 of 2")
	typeKeys(tm, "ctrl+s")
	waitOutput(t, tm, "(y/N)")
	typeKeys(tm, "y")
	waitOutput(t, tm, "published SEND")
	eventually(t, "op 8 at simulated shard 1", func() bool {
		for _, r := range sys.sim.Snapshot().Received {
			if r.Op == 8 && r.ShardID == 1 && strings.Contains(string(r.D), guild) {
				return true
			}
		}
		return false
	})
	// In the stream, as spec-tacles/gateway reads SEND: a msgpack str of JSON.
	if e := sys.raw.XRange(ctx, gateway.SendEvent, "-", "+").Val(); len(e) != 1 || !isMsgpackStrOfJSON([]byte(e[0].Values["data"].(string))) {
		t.Fatalf("SEND stream holds %v, want one msgpack str of JSON", e)
	}

	// The Publish view, straight to shard 0.
	typeKeys(tm, "esc", "6")
	tm.Type("0")
	typeKeys(tm, "tab", "tab")
	tm.Type(`{"op": 8, "d": {"guild_id": "` + sys.sim.GuildsForShard(0, 2)[0] + `", "query": "pv", "limit": 0}}`)
	typeKeys(tm, "ctrl+s")
	// The gateway's group consumes shard 0's event: the console asks.
	waitOutput(t, tm, "Publish to 0? group", "consumes it", "(y/N)")
	typeKeys(tm, "y")
	waitOutput(t, tm, "published 0")
	eventually(t, "op 8 at simulated shard 0", func() bool {
		for _, r := range sys.sim.Snapshot().Received {
			if r.Op == 8 && r.ShardID == 0 && strings.Contains(string(r.D), `"pv"`) {
				return true
			}
		}
		return false
	})
	if e := sys.raw.XRange(ctx, "0", "-", "+").Val(); len(e) != 1 || !isMsgpackStrOfJSON([]byte(e[0].Values["data"].(string))) {
		t.Fatalf("stream 0 holds %v, want one msgpack str of JSON", e)
	}
	typeKeys(tm, "esc", "q")
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
	final := tm.FinalModel(t).(*Model)
	if final.active() != kPublish {
		t.Fatalf("final view %v", final.active())
	}
}

// TestEndToEndShardsAndTail watches the shards, stops and restarts one,
// and tails a stream while entries arrive.
func TestEndToEndShardsAndTail(t *testing.T) {
	sys := startLiveSystem(t, 2)
	ctx := context.Background()
	stream := redistest.Unique("tail")
	redistest.DeleteKeys(t, sys.raw, stream)
	opts := plainOptions()
	opts.Refresh = 200 * time.Millisecond
	opts.Context = ctx
	opts.Now = time.Now
	opts.View = "tail " + stream
	tm := teatest.NewTestModel(t, New(sys.node, opts), teatest.WithInitialTermSize(120, 36))
	waitOutput(t, tm, "Tail", "waiting for entries")
	for i := range 3 {
		if _, err := sys.broker.Publish(ctx, stream, map[string]any{"content": fmt.Sprintf("live %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitOutput(t, tm, `"live 2"`)

	typeKeys(tm, "8")
	waitOutput(t, tm, "0/2", "1/2", "ready")
	typeKeys(tm, "x")
	waitOutput(t, tm, "Stop shard 0?")
	typeKeys(tm, "y")
	eventually(t, "shard 0 stopped", func() bool { return sys.manager.Shards()[0].State == gateway.Stopped })
	waitOutput(t, tm, "stopped")
	typeKeys(tm, "s")
	eventually(t, "shard 0 ready again", func() bool { return sys.manager.Shards()[0].State == gateway.Ready })
	tm.Send(tea.Quit())
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
	_, _ = io.Copy(io.Discard, tm.FinalOutput(t))
}

// isMsgpackStrOfJSON reports whether raw is one msgpack str, in the legacy
// headers spec-tacles/gateway reads, holding JSON.
func isMsgpackStrOfJSON(raw []byte) bool {
	switch c := raw[0]; {
	case c&0xe0 == 0xa0:
		return json.Valid(raw[1:])
	case c == 0xda:
		return len(raw) >= 3 && json.Valid(raw[3:])
	case c == 0xdb:
		return len(raw) >= 5 && json.Valid(raw[5:])
	}
	return false
}
