package cli

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/redisgw"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
	"github.com/spectacles-go/spectacles/tui"
)

func TestConsoleNeedsATerminal(t *testing.T) {
	r := invocation{}.run(t.Context(), "console")
	if r.code != exitUsage || !strings.Contains(r.stderr, "the console needs a terminal") {
		t.Fatalf("console without a terminal: %d %q", r.code, r.stderr)
	}
	// With no arguments and no terminal, the help (which lists the console).
	r = invocation{}.run(t.Context())
	if r.code != 0 || !strings.Contains(r.stdout, "console") || !strings.Contains(r.stdout, "Usage:") {
		t.Fatalf("no arguments without a terminal: %d %q %q", r.code, r.stdout, r.stderr)
	}
}

// TestConsoleDemo starts what "spectacles" shows on a fresh machine (the
// embedded broker, the simulator, a gateway and the simulated bot) and
// checks that it is live: shards ready, a group with pending entries; that
// the stuck worker-2 is seen as such (the embedded server reports its idle
// time, past the demo's stale threshold, while it holds messages); and
// that the streams stay trimmed (--sim-max-len) however long it runs.
func TestConsoleDemo(t *testing.T) {
	// The console starts the local node, here in the test's own runtime
	// directory.
	a := &app{stdin: strings.NewReader(""), stdout: &syncBuffer{}, stderr: &syncBuffer{},
		env: mapLookup(map[string]string{"XDG_RUNTIME_DIR": t.TempDir()}), log: slog.New(slog.DiscardHandler), nodeMode: nodeStart}
	cfg, err := loadConfig(a.env, mapLookup(nil))
	if err != nil {
		t.Fatal(err)
	}
	a.cfg = cfg
	defer a.closeEmbedded()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	b, err := a.openRedis(ctx, a.options(core.Identity{Group: "console", Client: consoleClient()}))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	node := &tui.Node{Inspect: b, Publisher: b}
	const maxLen = 40
	f := consoleFlags{simRate: 300, simShards: 2, simMaxLen: maxLen, simHold: 300 * time.Millisecond, simStale: time.Second}
	info, err := a.startDemo(ctx, &wg, node, f, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !info.Simulated || info.Gateway == nil || !strings.Contains(info.Target, "SIMULATED") {
		t.Fatalf("gateway info %+v", info)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ready := 0
		for _, s := range info.Gateway.Shards() {
			if s.State.String() == "ready" {
				ready++
			}
		}
		groups, _ := b.Groups(ctx, "MESSAGE_CREATE")
		var pending int64
		for _, g := range groups {
			if g.Name == "sim-bot" {
				pending = g.Pending
			}
		}
		if ready == 2 && pending > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo not live: %d shards ready, sim-bot pending %d", ready, pending)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if node.Info.StaleAfter != f.simStale {
		t.Fatalf("the demo's stale threshold is %s, want %s", node.Info.StaleAfter, f.simStale)
	}
	// worker-2 stops reading after simHold and keeps what it holds: the
	// console shows it STALE (idle ≥ StaleAfter with pending entries).
	var stuck core.ConsumerInfo
	for stuck.Idle < f.simStale || stuck.Pending == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("worker-2 never seen stuck: %+v", stuck)
		}
		time.Sleep(50 * time.Millisecond)
		cs, _ := b.Consumers(ctx, "MESSAGE_CREATE", "sim-bot")
		for _, c := range cs {
			if c.Name == "worker-2" {
				stuck = c
			}
		}
	}
	// Trimmed: several times maxLen published, no stream much longer.
	pc := info.Gateway.(interface{ Published() uint64 })
	for pc.Published() < 20*maxLen {
		if time.Now().After(deadline) {
			t.Fatalf("only %d published", pc.Published())
		}
		time.Sleep(50 * time.Millisecond)
	}
	streams, err := b.Streams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range streams {
		if s.Length > 2*maxLen {
			t.Errorf("stream %s holds %d entries after %d published: not trimmed to about %d", s.Name, s.Length, pc.Published(), maxLen)
		}
	}
}

// TestConsoleReadsGatewayNodes checks where the console reads the shards
// of gateway nodes in other processes: nowhere without Redis, else the
// Redis they report to (here REDIS_URL beside a non-Redis broker).
func TestConsoleReadsGatewayNodes(t *testing.T) {
	if nodeReader(nil) != nil {
		t.Fatal("a node reader without Redis")
	}
	a := &app{env: mapLookup(nil), log: slog.New(slog.DiscardHandler)}
	cfg, err := loadConfig(a.env, mapLookup(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RedisURL = testRedisURL
	a.cfg = cfg
	rc, done, err := a.redisClient(nil) // a broker that is not Redis: REDIS_URL
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	group := redistest.Unique("console")
	key := redisgw.StatusKeyPrefix + group + ":node-1"
	status := gateway.NodeStatus{Group: group, Client: "node-1", ShardCount: 2, UpdatedAt: time.Now().UTC(),
		Shards: []gateway.Status{{ID: 0, Count: 2, State: gateway.Ready}, {ID: 1, Count: 2, State: gateway.Resuming}}}
	b, _ := json.Marshal(status)
	ctx := t.Context()
	if err := rc.Set(ctx, key, b, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	defer rc.Del(context.Background(), key)
	nodes, err := nodeReader(rc)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Group == group {
			if n.Client != "node-1" || len(n.Shards) != 2 || n.Shards[1].State != gateway.Resuming {
				t.Fatalf("read %+v", n)
			}
			return
		}
	}
	t.Fatalf("%s not among %d nodes read", key, len(nodes))
}
