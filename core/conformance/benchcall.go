package conformance

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// BenchCall is the call round-trip benchmark: responder answers every
// call on event with its data while callers goroutines make b.N calls of
// payload on caller. It reports calls/s and the round trip's p50 and p99
// in microseconds.
func BenchCall(b *testing.B, caller, responder core.Broker, event string, payload core.Raw, callers int) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := responder.Consume(ctx, []string{event}, func(ctx context.Context, m *core.Message) {
		if err := m.Reply(ctx, core.Raw(m.Raw)); err != nil {
			b.Error(err)
		}
		_ = m.Ack(ctx)
	})
	if err != nil {
		b.Fatal(err)
	}
	// One call first, so that the responder is ready and connections open.
	if _, err := caller.Call(ctx, event, payload); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				if _, err := caller.Call(ctx, event, payload); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}
