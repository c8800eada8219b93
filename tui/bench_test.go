package tui

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

// benchViews opens each view on the big dataset (palette commands).
var benchViews = []struct{ name, cmd string }{
	{"overview", "overview"},
	{"streams", "streams"},
	{"groups", "groups BIG"},
	{"pending", "pending BIG g"},
	{"tail", "tail BIG"},
	{"publish", "publish BIG"},
	{"send", "send 81384788765712384"},
	{"shards", "shards"},
}

// bigFixture adds BIG: a virtual stream of 1,000,000 entries whose group g
// has 100,000 pending entries.
func bigFixture() (*fakeInspector, *fakeBroker, *fakeGateway) {
	ins, b, gw := fixture()
	big := &fakeStream{name: "BIG", virtual: 1_000_000}
	big.groups = []*fakeGroup{{info: core.GroupInfo{Name: "g", Lag: 900_000, LastDeliveredID: virtualID(99_999)}, virtual: 100_000,
		consumers: []core.ConsumerInfo{{Name: "worker-0", Pending: 33_334}, {Name: "worker-1", Pending: 33_333}, {Name: "worker-2", Pending: 33_333}}}}
	ins.streams["BIG"] = big
	return ins, b, gw
}

// bigDriver opens cmd at 120×36 over bigFixture, then reports allocations
// and resets the benchmark's timer: what follows is measured.
func bigDriver(b *testing.B, cmd string) *driver {
	ins, br, gw := bigFixture()
	d := newDriver(b, testNode(ins, br, gw), plainOptions(), 120, 36)
	d.command(cmd)
	b.ReportAllocs()
	b.ResetTimer()
	return d
}

// BenchmarkView measures rendering (View) of each view at 120×36 over a
// 1,000,000-entry stream with 100,000 pending entries: only a page is ever
// held, so the cost does not depend on the data's size.
func BenchmarkView(b *testing.B) {
	for _, v := range benchViews {
		b.Run(v.name, func(b *testing.B) {
			d := bigDriver(b, v.cmd)
			if strings.Contains(d.view(), "loading") {
				b.Fatalf("%s did not load:\n%s", v.name, d.view())
			}
			for b.Loop() {
				_ = d.m.View()
			}
		})
	}
}

// BenchmarkRefreshFake measures one refresh (the command and applying its
// result) of each view against the virtual dataset: the console's own cost.
func BenchmarkRefreshFake(b *testing.B) {
	for _, v := range benchViews {
		b.Run(v.name, func(b *testing.B) {
			d := bigDriver(b, v.cmd)
			view := d.m.views[d.m.active()]
			for b.Loop() {
				if cmd := view.refresh(); cmd != nil {
					d.run(cmd)
				}
			}
		})
	}
}

// BenchmarkRefreshRedis measures one refresh of each stream view against a
// real Redis holding a stream of 1,000,000 entries and a group with
// 100,000 pending entries, built with pipelined XADD and XREADGROUP and
// deleted afterwards. It also reports the console's heap with that data
// loaded in every view.
func BenchmarkRefreshRedis(b *testing.B) {
	url, real := redistest.ExclusiveDB(b)
	if !real {
		b.Log("no Redis at 127.0.0.1:6379: using the embedded server (slow to fill)")
	}
	raw := redistest.Client(b, url)
	stream := redistest.Unique("bench-big")
	redistest.DeleteKeys(b, raw, stream)
	const entries, pending = 1_000_000, 100_000
	ctx := context.Background()
	start := time.Now()
	payload, _ := core.Msgpack{}.Marshal(map[string]any{"content": "benchmark entry", "guild_id": "81384788765712384"})
	for i := 0; i < entries; i += 10_000 {
		pipe := raw.Pipeline()
		for range 10_000 {
			pipe.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: []any{"data", payload}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if err := raw.XGroupCreate(ctx, stream, "g", "0").Err(); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < pending; i += 10_000 {
		if err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: fmt.Sprintf("worker-%d", i/10_000%3),
			Streams: []string{stream, ">"}, Count: 10_000}).Err(); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("filled %d entries, %d pending in %s", entries, pending, time.Since(start).Round(time.Millisecond))

	br, err := redis.Open(ctx, redis.Config{URL: url, Options: core.Options{Identity: core.Identity{Group: "bench", Client: "console"}, Logger: quiet()}})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	node := &Node{Info: NodeInfo{Name: "bench", Client: "console", BrokerKind: "redis", StaleAfter: time.Minute}, Inspect: br, Publisher: br}
	views := []struct{ name, cmd string }{
		{"overview", "overview"}, {"streams", "streams"}, {"groups", "groups " + stream},
		{"pending", "pending " + stream + " g"}, {"tail", "tail " + stream},
	}
	d := newDriver(b, node, plainOptions(), 120, 36)
	for _, v := range views {
		b.Run(v.name, func(b *testing.B) {
			d.command(v.cmd)
			view := d.m.views[d.m.active()]
			b.ResetTimer()
			for b.Loop() {
				if cmd := view.refresh(); cmd != nil {
					d.run(cmd)
				}
			}
			b.StopTimer()
			if strings.Contains(d.view(), "✗") {
				b.Fatalf("%s:\n%s", v.name, d.view())
			}
		})
	}
	b.Run("pending-page-down", func(b *testing.B) {
		d.command("pending " + stream + " g")
		b.ResetTimer()
		for b.Loop() {
			d.send(keyMsg("pgdown"))
		}
		b.StopTimer()
		if !strings.Contains(d.view(), "100,000 pending") {
			b.Fatalf("pending view:\n%s", d.view())
		}
	})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.Logf("console heap with every view loaded: %.1f MiB in use", float64(ms.HeapInuse)/(1<<20))
}
