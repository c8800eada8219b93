package redis

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/core/conformance"
)

// Benchmarks run against the same server as the tests (a real Redis when
// one answers). Payloads are 1 KiB of core.Raw, so that the codec is not
// measured. Publishers are many goroutines, as in a gateway with many
// shards: batching needs concurrent callers.
//
//	go test -bench . -run '^$' ./transport/redis
const (
	benchPayload    = 1024
	benchPublishers = 256
)

func benchBroker(b *testing.B, url string, o core.Options) *Broker {
	o.Logger = testLogger(b)
	return openBroker(b, url, Config{Options: o})
}

func BenchmarkPublish(b *testing.B) {
	url, _ := serverURL(b)
	raw := rawClient(b, url)
	ev := testEvent(b, raw)
	br := benchBroker(b, url, core.Options{})
	payload := core.Raw(make([]byte, benchPayload))
	ctx := context.Background()
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	b.SetParallelism(benchPublishers / max(1, testingProcs()))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := br.Publish(ctx, ev, payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkEndToEnd publishes b.N messages from concurrent publishers and
// waits until one consuming client has received and acknowledged all.
func BenchmarkEndToEnd(b *testing.B) {
	url, _ := serverURL(b)
	raw := rawClient(b, url)
	ev := testEvent(b, raw)
	pub := benchBroker(b, url, core.Options{})
	con := benchBroker(b, url, core.Options{Identity: core.Identity{Group: unique("bench"), Client: "c"}})

	conformance.BenchEndToEnd(b, pub, con, ev, core.Raw(make([]byte, benchPayload)), benchPublishers, 60*time.Second)
}

func testingProcs() int { return runtime.GOMAXPROCS(0) }
