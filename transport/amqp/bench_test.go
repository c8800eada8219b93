package amqp

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/core/conformance"
)

// Benchmarks run against the same RabbitMQ as the tests. Payloads are
// 1 KiB of core.Raw, so that the codec is not measured; messages are
// persistent and routed to a durable queue (so RabbitMQ writes them to
// disk, as in production). Publishers are many goroutines, as in a gateway
// with many shards: pipelining needs concurrent callers.
//
//	go test -run '^$' -bench . -benchtime 20000x ./transport/amqp
//
// BenchmarkRabbitMQ measures the server's own limit on this machine with a
// bare amqp091 client, for comparison.
const (
	benchPayload    = 1024
	benchPublishers = 256
)

// benchQueue declares, as a peer would, a queue bound to event on
// exchange, deleted (with the exchange) when the benchmark ends.
func benchQueue(b *testing.B, adm *admin, prefix, event string) (exchange, queue string) {
	exchange, track := adm.exchange(prefix)
	queue = QueueName(exchange, "bench", event)
	track(queue)
	ch := adm.channel()
	if err := peerDeclareExchange(ch, exchange); err != nil {
		b.Fatal(err)
	}
	if err := peerDeclareQueue(ch, exchange, queue, event); err != nil {
		b.Fatal(err)
	}
	return exchange, queue
}

func BenchmarkPublish(b *testing.B) {
	url := serverURL(b)
	adm := newAdmin(b, url)
	exchange, _ := benchQueue(b, adm, "spectacles-bench", "E")
	br := openBroker(b, Config{Options: core.Options{Logger: testLogger(b)}, URL: url, Exchange: exchange})
	conformance.BenchPublish(b, br, "E", core.Raw(make([]byte, benchPayload)), benchPublishers)
}

// BenchmarkPublishBatch publishes batches of 100 from 8 goroutines.
func BenchmarkPublishBatch(b *testing.B) {
	url := serverURL(b)
	adm := newAdmin(b, url)
	exchange, _ := benchQueue(b, adm, "spectacles-bench", "E")
	br := openBroker(b, Config{Options: core.Options{Logger: testLogger(b)}, URL: url, Exchange: exchange})
	const batch = 100
	msgs := make([]core.Outgoing, batch)
	for i := range msgs {
		msgs[i] = core.Outgoing{Event: "E", Data: core.Raw(make([]byte, benchPayload))}
	}
	ctx := context.Background()
	b.SetBytes(benchPayload)
	b.ResetTimer()
	start := time.Now()
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				n := min(left.Add(-batch)+batch, batch)
				if n <= 0 {
					return
				}
				if _, err := br.PublishBatch(ctx, msgs[:n]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkEndToEnd publishes b.N messages from concurrent publishers and
// waits until one consuming client has received and acknowledged all.
func BenchmarkEndToEnd(b *testing.B) {
	url := serverURL(b)
	adm := newAdmin(b, url)
	exchange, track := adm.exchange("spectacles-bench")
	track(spectaclesQueues(exchange, "bench", "E")...)
	pub := openBroker(b, Config{Options: core.Options{Logger: testLogger(b)}, URL: url, Exchange: exchange})
	con := openBroker(b, Config{
		Options:  core.Options{Identity: core.Identity{Group: "bench", Client: "c"}, Logger: testLogger(b)},
		URL:      url,
		Exchange: exchange,
		Subgroup: "bench",
	})
	conformance.BenchEndToEnd(b, pub, con, "E", core.Raw(make([]byte, benchPayload)), benchPublishers, 120*time.Second)
}

// BenchmarkRabbitMQ is the baseline: a bare amqp091 client, one channel,
// the same 1 KiB persistent messages to the same kind of queue.
func BenchmarkRabbitMQ(b *testing.B) {
	url := serverURL(b)
	payload := make([]byte, benchPayload)
	msg := amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: payload}

	// NoConfirms: publish as fast as the client writes; done when the
	// queue holds every message (what RabbitMQ can take in).
	b.Run("PublishNoConfirms", func(b *testing.B) {
		adm := newAdmin(b, url)
		exchange, queue := benchQueue(b, adm, "spectacles-baseline", "E")
		ch := adm.newChannel()
		b.SetBytes(benchPayload)
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if err := ch.Publish(exchange, "E", false, false, msg); err != nil {
				b.Fatal(err)
			}
		}
		waitQueueLen(b, adm, queue, b.N)
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})

	// Confirms: every message in flight at once, all confirms awaited.
	b.Run("PublishConfirms", func(b *testing.B) {
		adm := newAdmin(b, url)
		exchange, _ := benchQueue(b, adm, "spectacles-baseline", "E")
		ch := adm.newChannel()
		if err := ch.Confirm(false); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(benchPayload)
		b.ResetTimer()
		start := time.Now()
		var last *amqp091.DeferredConfirmation
		for range b.N {
			dc, err := ch.PublishWithDeferredConfirm(exchange, "E", false, false, msg)
			if err != nil {
				b.Fatal(err)
			}
			last = dc
		}
		if last != nil && !last.Wait() {
			b.Fatal("nacked")
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})

	// EndToEnd: publishing without confirms, one consumer acknowledging
	// each message (prefetch 256).
	b.Run("EndToEnd", func(b *testing.B) {
		adm := newAdmin(b, url)
		exchange, queue := benchQueue(b, adm, "spectacles-baseline", "E")
		cch := adm.newChannel()
		if err := cch.Qos(DefaultPrefetch, 0, false); err != nil {
			b.Fatal(err)
		}
		dels, err := cch.Consume(queue, "", false, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			n := 0
			for d := range dels {
				_ = d.Ack(false)
				if n++; n == b.N {
					return
				}
			}
		}()
		pch := adm.newChannel()
		b.SetBytes(benchPayload)
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if err := pch.Publish(exchange, "E", false, false, msg); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-done:
		case <-time.After(120 * time.Second):
			b.Fatal("consumer did not finish")
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		b.StopTimer()
		_ = cch.Close()
	})
}
