package tui

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/redisgw"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

// TestEndToEndRemoteShards runs a gateway node (the simulator and a
// gateway.Manager reporting its status to a real Redis, as `spectacles
// gateway` does) and a console with no gateway of its own on that Redis:
// the Shards view lists the node's shards as ready, and stops listing
// them once the node stops reporting.
func TestEndToEndRemoteShards(t *testing.T) {
	sys := startLiveSystem(t, 2)
	// Ready, and with its guilds: they arrive after READY (lazy
	// GUILD_CREATE), and the rows below are checked for them.
	eventually(t, "every shard ready with its guilds", func() bool {
		sts := sys.manager.Shards()
		for _, s := range sts {
			if s.State != gateway.Ready || s.GuildsAvailable == 0 {
				return false
			}
		}
		return len(sts) == 2
	})
	// A group of its own, short enough that the NODE column shows it whole.
	group, client := redistest.Unique("g")[:8], "node-1"
	name := group + "/" + client
	key := redisgw.StatusKeyPrefix + group + ":" + client
	redistest.DeleteKeys(t, sys.raw, key)
	reportCtx, stopReport := context.WithCancel(context.Background())
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		sys.manager.ReportStatus(reportCtx, redisgw.NewStatusReporter(sys.raw), group, client, 200*time.Millisecond)
	}()
	stop := func() {
		stopReport()
		<-reported
	}
	t.Cleanup(stop)

	// The console: the same broker, no local gateway, the node statuses
	// read from Redis.
	node := &Node{
		Info:    NodeInfo{Name: "e2e-remote", Client: "console-e2e", BrokerKind: "redis", StaleAfter: time.Minute},
		Inspect: sys.broker, Publisher: sys.broker,
		ReadNodes: func(ctx context.Context) ([]gateway.NodeStatus, error) {
			return redisgw.ReadNodeStatuses(ctx, sys.raw)
		},
	}
	opts := plainOptions()
	opts.Refresh = 200 * time.Millisecond
	opts.Context = context.Background()
	opts.Now = time.Now
	opts.View = "shards"
	tm := teatest.NewTestModel(t, New(node, opts), teatest.WithInitialTermSize(120, 36))
	waitOutput(t, tm, "No gateway runs in this console.", name, "0/2", "1/2", "ready")

	// Shard control is for the node itself.
	typeKeys(tm, "x")
	waitOutput(t, tm, "stop shard is unavailable: runs in another process: use that node")
	tm.Send(tea.Quit())
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
	_, _ = io.Copy(io.Discard, tm.FinalOutput(t))
	v := tm.FinalModel(t).(*Model).views[kShards].(*shardsView)
	var mine []shardRow
	for _, r := range v.rows {
		if r.node == "" {
			t.Fatalf("a local row without a local gateway: %+v", r)
		}
		if r.node == name {
			mine = append(mine, r)
		}
	}
	if len(mine) != 2 {
		t.Fatalf("rows of %s: %+v", name, mine)
	}
	for i, r := range mine {
		if r.s.ID != i || r.s.Count != 2 || r.s.State != gateway.Ready || r.stale || r.s.GuildsAvailable == 0 {
			t.Fatalf("row %d of %s: %+v", i, name, r)
		}
	}

	// A node that stops deletes its status: the console stops listing it.
	stop()
	if n, err := sys.raw.Exists(context.Background(), key).Result(); err != nil || n != 0 {
		t.Fatalf("the node's status key after it stopped: %d %v", n, err)
	}
	nodes, err := node.GatewayNodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if nodeName(n) == name {
			t.Fatalf("%s still listed after it stopped", name)
		}
	}
}

// deadReporter is a gateway.StatusReporter in a process that can be
// killed (kill -9): once killed, it neither reports nor removes anything,
// as a dead process does not.
type deadReporter struct {
	r      gateway.StatusReporter
	killed atomic.Bool
}

func (d *deadReporter) Report(ctx context.Context, s gateway.NodeStatus, ttl time.Duration) error {
	if d.killed.Load() {
		return errors.New("killed")
	}
	return d.r.Report(ctx, s, ttl)
}

func (d *deadReporter) Remove(ctx context.Context, group, client string) error {
	if d.killed.Load() {
		return errors.New("killed")
	}
	return d.r.Remove(ctx, group, client)
}

// TestEndToEndKilledNodeStale: a gateway node that dies without removing
// its status (kill -9) leaves its last report in Redis for longer than the
// stale threshold, so the console shows its shards STALE with their last
// state, and the overview warns, instead of the node vanishing (its key
// once lived 6 s, shorter than the 10 s threshold).
func TestEndToEndKilledNodeStale(t *testing.T) {
	sys := startLiveSystem(t, 2)
	eventually(t, "every shard ready", func() bool {
		sts := sys.manager.Shards()
		return len(sts) == 2 && sts[0].State == gateway.Ready && sts[1].State == gateway.Ready
	})
	group, client := redistest.Unique("k")[:8], "node-9"
	key := redisgw.StatusKeyPrefix + group + ":" + client
	redistest.DeleteKeys(t, sys.raw, key)
	rep := &deadReporter{r: redisgw.NewStatusReporter(sys.raw)}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sys.manager.ReportStatus(ctx, rep, group, client, 100*time.Millisecond)
	}()
	eventually(t, "the node's report", func() bool {
		n, _ := sys.raw.Exists(context.Background(), key).Result()
		return n == 1
	})
	rep.killed.Store(true) // kill -9: no more reports, and no removal
	stop()
	<-done
	if n, _ := sys.raw.Exists(context.Background(), key).Result(); n != 1 {
		t.Fatal("the killed node's status key is gone at once")
	}
	// Redis keeps the last report well past the stale threshold.
	ttl, err := sys.raw.PTTL(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl < 2*gateway.NodeStaleAfter {
		t.Fatalf("the status key lives %s: it would vanish before the node shows STALE (after %s)", ttl, gateway.NodeStaleAfter)
	}
	nodes, err := redisgw.ReadNodeStatuses(context.Background(), sys.raw)
	if err != nil {
		t.Fatal(err)
	}
	var last time.Time
	for _, n := range nodes {
		if n.Group == group {
			last = n.UpdatedAt
		}
	}
	if last.IsZero() {
		t.Fatal("the killed node is not listed")
	}

	// The console reads it 11 s after the last report.
	node := &Node{
		Info:    NodeInfo{Name: "e2e-killed", Client: "console-e2e", BrokerKind: "redis", StaleAfter: time.Minute},
		Inspect: sys.broker, Publisher: sys.broker,
		ReadNodes: func(ctx context.Context) ([]gateway.NodeStatus, error) {
			all, err := redisgw.ReadNodeStatuses(ctx, sys.raw)
			var mine []gateway.NodeStatus
			for _, n := range all {
				if n.Group == group {
					mine = append(mine, n)
				}
			}
			return mine, err
		},
	}
	opts := plainOptions()
	opts.Now = func() time.Time { return last.Add(gateway.NodeStaleAfter + time.Second) }
	d := newDriver(t, node, opts, 120, 36)
	d.mustContain("gateway node "+group+"/"+client+" is STALE: no report for 11", "2 STALE")
	d.keys("8")
	d.mustContain("STALE "+group+"/"+client, "0/2", "1/2", "ready", "STALE, no report for over 10s: "+group+"/"+client)
	v := d.m.views[kShards].(*shardsView)
	if len(v.rows) != 2 || !v.rows[0].stale || v.rows[0].s.State != gateway.Ready {
		t.Fatalf("rows of the killed node: %+v", v.rows)
	}
}

// TestEndToEndShardStopResume stops and starts a local shard from the
// Shards view, on the simulator: the stop reads "stopped by operator" (not
// the resumable close code 4000 the shard sends), the stopped shard shows
// no latency, and once it resumed (RESUMED replays no GUILD_CREATE) it
// still counts its guilds.
func TestEndToEndShardStopResume(t *testing.T) {
	sys := startLiveSystem(t, 2)
	want := len(sys.sim.GuildsForShard(1, 2))
	eventually(t, "shard 1 ready with its guilds and a latency", func() bool {
		s := sys.manager.Shards()
		return len(s) == 2 && s[1].State == gateway.Ready && s[1].GuildsAvailable == want && s[1].Latency > 0
	})
	opts := plainOptions()
	opts.Now = time.Now
	d := newDriver(t, sys.node, opts, 120, 36)
	d.keys("8", "down", "x")
	d.mustContain("Stop shard 1?")
	d.keys("y")
	d.keys("r")
	v := d.m.views[kShards].(*shardsView)
	row := func() []string { return strings.Fields(v.tbl.rows[1][0] + " " + strings.Join(v.tbl.rows[1][1:], " ")) }
	d.mustContain("stopped by operator")
	d.mustNotContain("4000")
	if r := row(); r[1] != "stopped" || r[2] != "-" {
		t.Fatalf("the stopped shard's row: %q (want state stopped, latency -)", r)
	}
	d.keys("s")
	eventually(t, "shard 1 resumed", func() bool { return sys.manager.Shards()[1].State == gateway.Ready })
	d.keys("r")
	if got := sys.manager.Shards()[1].GuildsAvailable; got != want {
		t.Fatalf("after the resume shard 1 counts %d guilds, want %d", got, want)
	}
	if r := row(); r[1] != "ready" || !slices.Contains(r, strconv.Itoa(want)) {
		t.Fatalf("the resumed shard's row: %q (want ready, %d guilds)", r, want)
	}
}
