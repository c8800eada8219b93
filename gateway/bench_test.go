package gateway

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway/simulator"
	"github.com/spectacles-go/spectacles/transport/redis"
)

// BenchmarkIdleShards reports the memory and goroutines that idle, ready
// shards cost in one process: go test -run ^$ -bench IdleShards ./gateway/
func BenchmarkIdleShards(b *testing.B) {
	for _, c := range []Compression{CompressNone, CompressZlib, CompressZstd} {
		b.Run(string(c), func(b *testing.B) { benchIdleShards(b, c, 1000) })
	}
}

func benchIdleShards(b *testing.B, compress Compression, n int) {
	for range b.N {
		sim, err := simulator.New(simulator.Config{
			Shards: n, Guilds: n, HeartbeatInterval: 40 * time.Second,
			IdentifyInterval: time.Microsecond, MaxConcurrency: 16, SessionStartLimit: 1 << 20,
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := sim.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		goroutinesBefore := runtime.NumGoroutine()

		ctx, cancel := context.WithCancel(context.Background())
		limiter := NewLocalIdentifyLimiter(16, time.Microsecond, -1, 0)
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		var wg sync.WaitGroup
		shards := make([]*Shard, n)
		for i := range shards {
			s, err := NewShard(ShardConfig{ID: i, Count: n, Token: sim.Token(), URL: sim.GatewayURL(),
				Intents: 1, Compress: compress, Identify: limiter, Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			shards[i] = s
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = s.Run(ctx)
			}()
		}
		deadline := time.Now().Add(2 * time.Minute)
		for _, s := range shards {
			for s.Status().State != Ready || s.Status().GuildsUnavailable > 0 {
				if time.Now().After(deadline) {
					b.Fatalf("shard %d not ready: %+v", s.ID(), s.Status())
				}
				time.Sleep(time.Millisecond)
			}
		}
		// Let the simulator's side settle, then measure this process. The
		// simulator runs in the same process: its share is measured alone
		// below and subtracted.
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		goroutines := runtime.NumGoroutine() - goroutinesBefore
		cancel()
		wg.Wait()
		runtime.GC()
		var simOnly runtime.MemStats
		runtime.ReadMemStats(&simOnly)
		_ = sim.Close()

		heap := float64(after.HeapInuse) - float64(before.HeapInuse)
		simHeap := float64(simOnly.HeapInuse) - float64(before.HeapInuse)
		b.ReportMetric(heap/float64(n), "heap-B/shard(incl-sim)")
		b.ReportMetric((heap-simHeap)/float64(n), "heap-B/shard")
		b.ReportMetric(float64(goroutines)/float64(n), "goroutines/shard(incl-sim)")
	}
}

// BenchmarkShardThroughput measures how many dispatches per second one
// shard takes from the simulator into Redis (publish included), and the
// CPU each costs. The simulator runs in the same process, so the CPU
// figure includes generating and compressing the traffic too:
// go test -run ^$ -bench ShardThroughput ./gateway/
func BenchmarkShardThroughput(b *testing.B) {
	for _, c := range []Compression{CompressZstd, CompressZlib, CompressNone} {
		b.Run(string(c), func(b *testing.B) { benchThroughput(b, c) })
	}
}

func benchThroughput(b *testing.B, compress Compression) {
	env := newManagerEnv(b, 1, func(c *simulator.Config) {
		c.TrafficEvents = []string{"MESSAGE_CREATE"}
		c.HeartbeatInterval = 10 * time.Second
		c.Logger = nil
	})
	broker, err := redis.Open(context.Background(), redis.Config{URL: env.url, MaxLen: 20000, Options: core.Options{
		Identity: core.Identity{Group: env.group, Client: "bench"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = broker.Close() })
	env.broker = broker
	m, _ := env.run(b, func(c *ManagerConfig) {
		c.Compress = compress
		c.Events = []string{"MESSAGE_CREATE"}
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	})
	published := func() float64 { return float64(m.Published()) }
	base := published()
	cpu0 := cpuTime()
	b.ResetTimer()
	start := time.Now()
	env.sim.SetTrafficRate(-1)
	for published()-base < float64(b.N) {
		time.Sleep(time.Millisecond)
	}
	env.sim.SetTrafficRate(0)
	elapsed := time.Since(start)
	b.StopTimer()
	n := published() - base
	b.ReportMetric(n/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/n, "cpu-µs/event(incl-sim)")
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
