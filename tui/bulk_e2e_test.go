package tui

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"
	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

// stuckGroup fills a new stream on a Redis database of t's own with n
// entries that consumer "dead" of group "workers" read and never acked;
// consumer "alive" read one entry just now, and acked it. It returns the
// client, the stream and a console node on that Redis.
func stuckGroup(t testing.TB, n int) (raw goredis.UniversalClient, stream string, node *Node) {
	t.Helper()
	url, _ := redistest.ExclusiveDB(t)
	raw = redistest.Client(t, url)
	stream = redistest.Unique("stuck")
	redistest.DeleteKeys(t, raw, stream)
	ctx := context.Background()
	for i := 0; i < n+1; i += 10_000 {
		pipe := raw.Pipeline()
		for j := i; j < min(i+10_000, n+1); j++ {
			pipe.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: []any{"data", fmt.Sprint(j)}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := raw.XGroupCreate(ctx, stream, "workers", "0").Err(); err != nil {
		t.Fatal(err)
	}
	for read := 0; read < n; read += 10_000 {
		if err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "workers", Consumer: "dead", Streams: []string{stream, ">"},
			Count: int64(min(10_000, n-read))}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	res, err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "workers", Consumer: "alive", Streams: []string{stream, ">"}, Count: 1}).Result()
	if err != nil {
		t.Fatal(err)
	}
	raw.XAck(ctx, stream, "workers", res[0].Messages[0].ID)
	b, err := redis.Open(ctx, redis.Config{URL: url, Options: core.Options{Identity: core.Identity{Group: "console", Client: "console-e2e"}, Logger: quiet()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	node = &Node{Info: NodeInfo{Name: "e2e", Client: "console-e2e", BrokerKind: "redis", StaleAfter: time.Minute}, Inspect: b, Publisher: b}
	return raw, stream, node
}

// TestEndToEndBulkClaimAndUndo reclaims every entry of a dead consumer to
// the live one on a real Redis, from the keyboard, then undoes it.
func TestEndToEndBulkClaimAndUndo(t *testing.T) {
	const n = 2500 // several batches
	raw, stream, node := stuckGroup(t, n)
	ctx := context.Background()
	opts := plainOptions()
	opts.Now = time.Now
	opts.Refresh = 300 * time.Millisecond
	tm := teatest.NewTestModel(t, New(node, opts), teatest.WithInitialTermSize(140, 36))
	waitOutput(t, tm, "Overview")
	tm.Send(keyMsg(":"))
	tm.Type("pending " + stream + " workers")
	typeKeys(tm, "enter")
	waitOutput(t, tm, fmt.Sprintf("%s pending in workers", fmtInt(n)))
	typeKeys(tm, "/")
	tm.Type("consumer=dead")
	typeKeys(tm, "enter")
	waitOutput(t, tm, "filtered: consumer dead")
	typeKeys(tm, "B", "c")
	waitOutput(t, tm, fmt.Sprintf("Claim %d entries (consumer dead) to consumer: alive", n))
	typeKeys(tm, "enter")
	waitOutput(t, tm, fmt.Sprintf(`Claim %d pending entries matching consumer dead to "alive"?`, n), "(y/N)")
	typeKeys(tm, "y")
	waitOutput(t, tm, fmt.Sprintf(`"alive" now owns %d entries (consumer dead) · u undoes (back to dead)`, n))
	if c := raw.XPending(ctx, stream, "workers").Val().Consumers; c["alive"] != n || c["dead"] != 0 {
		t.Fatalf("after the bulk claim XPENDING says %v", c)
	}
	typeKeys(tm, "u")
	waitOutput(t, tm, fmt.Sprintf(`Claim back %d entries that "alive" still holds to dead?`, n))
	typeKeys(tm, "y")
	waitOutput(t, tm, fmt.Sprintf("undone: %d entries back to dead", n))
	if c := raw.XPending(ctx, stream, "workers").Val().Consumers; c["dead"] != n || c["alive"] != 0 {
		t.Fatalf("after the undo XPENDING says %v", c)
	}
	typeKeys(tm, "q")
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
}

// BenchmarkBulkClaimRedis claims 100,000 pending entries of a dead
// consumer on a real Redis, through the console: B, c, enter, y, then the
// job runs while the benchmark keeps sending the model what a terminal
// would (a key, the progress messages, a render) and measures how long
// each Update+View takes. It reports the claim's time (claim-ms) and that
// latency (p50/p99/max-ms).
func BenchmarkBulkClaimRedis(b *testing.B) {
	const n = 100_000
	raw, stream, node := stuckGroup(b, n)
	ctx := context.Background()
	var lat []time.Duration
	var total time.Duration
	rounds := 0
	for b.Loop() {
		b.StopTimer()
		// Every round claims from dead to alive: give them back first.
		if rounds > 0 {
			if err := redisClaimAll(ctx, raw, stream, "alive", "dead"); err != nil {
				b.Fatal(err)
			}
		}
		rounds++
		d := newDriver(b, node, plainOptions(), 120, 36)
		d.command("pending " + stream + " workers")
		d.keys("/")
		d.typeText("consumer=dead")
		d.keys("enter", "B", "c", "enter")
		start := confirmBulk(b, d)
		b.StartTimer()
		began := time.Now()
		got := make(chan tea.Msg, 1)
		next := start
		for {
			go func(c tea.Cmd) { got <- c() }(next)
			var msg tea.Msg
		wait:
			for {
				select {
				case msg = <-got:
					break wait
				case <-time.After(5 * time.Millisecond):
					// A key and a frame while the job runs.
					t0 := time.Now()
					d.m.Update(keyMsg("down"))
					_ = d.m.View()
					lat = append(lat, time.Since(t0))
				}
			}
			t0 := time.Now()
			_, next = d.m.Update(msg)
			_ = d.m.View()
			lat = append(lat, time.Since(t0))
			if done, ok := msg.(bulkDoneMsg); ok {
				if done.err != nil || done.res.Count != n {
					b.Fatalf("claimed %d, %v", done.res.Count, done.err)
				}
				break
			}
		}
		total += time.Since(began)
		b.StopTimer()
		d.run(next) // the status message
		b.StartTimer()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(total)/float64(rounds), "claim-ms")
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(float64(len(lat))/float64(rounds), "frames/op")
}

// redisClaimAll gives every entry of from back to to, without the code
// under test.
func redisClaimAll(ctx context.Context, raw goredis.UniversalClient, stream, from, to string) error {
	for {
		ps, err := raw.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: stream, Group: "workers", Consumer: from, Start: "-", End: "+", Count: 10_000}).Result()
		if err != nil || len(ps) == 0 {
			return err
		}
		ids := make([]string, len(ps))
		for i, p := range ps {
			ids[i] = p.ID
		}
		if err := raw.XClaimJustID(ctx, &goredis.XClaimArgs{Stream: stream, Group: "workers", Consumer: to, Messages: ids}).Err(); err != nil {
			return err
		}
	}
}
