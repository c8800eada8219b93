package redis

import (
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
	conformance.BenchPublish(b, br, ev, core.Raw(make([]byte, benchPayload)), benchPublishers)
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
