package conformance

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// BenchEndToEnd is the publish → consume → ack benchmark every driver
// runs: publishers goroutines publish b.N copies of payload under event on
// pub while con consumes and acknowledges them. It reports msgs/s and
// fails when not every message was acknowledged within wait.
func BenchEndToEnd(b *testing.B, pub, con core.Broker, event string, payload core.Raw, publishers int, wait time.Duration) {
	b.Helper()
	var acked atomic.Int64
	all := make(chan struct{})
	target := int64(b.N)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := con.Consume(ctx, []string{event}, func(ctx context.Context, m *core.Message) {
		if err := m.Ack(ctx); err != nil {
			b.Error(err)
		}
		if acked.Add(1) == target {
			close(all)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for next.Add(1) <= target {
				if _, err := pub.Publish(ctx, event, payload); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-all:
	case <-time.After(wait):
		b.Fatalf("only %d of %d messages acknowledged", acked.Load(), target)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}

// BenchPublish is the publish benchmark every driver runs: about
// publishers goroutines call Publish of payload under event on br until
// b.N messages are out. It reports msgs/s and stops the timer.
func BenchPublish(b *testing.B, br core.Broker, event string, payload core.Raw, publishers int) {
	b.Helper()
	ctx := context.Background()
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.SetParallelism(max(1, publishers/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := br.Publish(ctx, event, payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	b.StopTimer()
}
