// Command watermill-bench measures the publish -> consume -> ack rate of
// Watermill's Redis Streams driver (github.com/ThreeDotsLabs/watermill-redisstream)
// for the side-by-side comparison in ../side-by-side.sh.
//
// It publishes -n payloads of -size bytes from -pubs goroutines calling
// Publisher.Publish once per message (64 by default, as `spectacles bench`
// runs 64 publishers), consumes them in the same process with one
// Subscriber of a consumer group whose handler calls Ack on every message,
// and prints one JSON line:
//
//	{"prog":"watermill-redisstream","n","bytes","pubs","publish_per_s","end_to_end_per_s","client_cpu_us_per_msg"}
//
// Publisher and subscriber run with the driver's defaults (its marshaller:
// uuid, metadata and payload fields per entry; XREADGROUP COUNT 1 with a
// 100 ms block; one XACK per message, sent before the next message is
// handed out), each with its own go-redis client with go-redis's default
// pool. End to end runs from the first Publish until Redis reports no
// pending message for the group after the last Ack (the driver sends the
// XACK after Ack returns, so the program asks Redis). The stream is named
// per run and deleted at the end.
//
// This directory has its own go.mod so that the spectacles module does not
// depend on Watermill; build it with `go build` here.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// cpu returns the CPU time (user and system) this process has used.
func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "watermill-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	n := flag.Int("n", 100000, "messages")
	size := flag.Int("size", 1024, "payload bytes")
	pubs := flag.Int("pubs", 64, "publishing goroutines, each calling Publish once per message")
	url := flag.String("url", "redis://127.0.0.1:6379/0", "redis server")
	stallTimeout := flag.Duration("stall-timeout", 30*time.Second, "fail when no message is acked for this long")
	flag.Parse()
	if *n < 1 || *size < 1 || *pubs < 1 {
		return errors.New("-n, -size and -pubs must be positive")
	}
	opt, err := redis.ParseURL(*url)
	if err != nil {
		return fmt.Errorf("parse -url: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	suffix := fmt.Sprintf("%d_%d", os.Getpid(), time.Now().UnixNano())
	stream := "watermillbench_" + suffix
	group := "g_" + suffix
	admin := redis.NewClient(opt)
	defer admin.Close()
	defer admin.Del(context.Background(), stream)

	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: redis.NewClient(opt)}, nil)
	if err != nil {
		return fmt.Errorf("publisher: %w", err)
	}
	defer pub.Close()
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:        redis.NewClient(opt),
		ConsumerGroup: group,
		// The default first read blocks without a timeout, which would keep
		// Close waiting if nothing arrived; it changes nothing once messages flow.
		DisableIndefiniteInitialBlock: true,
	}, nil)
	if err != nil {
		return fmt.Errorf("subscriber: %w", err)
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, stream) // creates the group (MKSTREAM) and starts reading
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}

	var acked, bad atomic.Int64
	lastAcked := make(chan struct{})
	go func() {
		for m := range msgs {
			if len(m.Payload) != *size {
				bad.Add(1)
			}
			m.Ack()
			if acked.Add(1) == int64(*n) {
				close(lastAcked)
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)

	payload := make([]byte, *size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	cpu0 := cpu()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, *pubs)
	for range min(*pubs, *n) {
		wg.Go(func() {
			for next.Add(1) <= int64(*n) {
				if err := pub.Publish(stream, message.NewMessage(watermill.NewUUID(), payload)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	publishTime := time.Since(start)
	select {
	case err := <-errs:
		return fmt.Errorf("publish: %w", err)
	default:
	}

	// Wait for the last Ack, failing when acks stop coming.
	last, lastAt := acked.Load(), time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-lastAcked:
			break wait
		case <-tick.C:
			if a := acked.Load(); a != last {
				last, lastAt = a, time.Now()
			} else if time.Since(lastAt) > *stallTimeout {
				return fmt.Errorf("stalled: %d of %d messages acked", a, *n)
			}
		}
	}
	// Ack only marks the message; the driver's XACK follows. Count the
	// messages as acked once Redis has no pending entry left for the group.
	for {
		p, err := admin.XPending(ctx, stream, group).Result()
		if err != nil {
			return fmt.Errorf("xpending: %w", err)
		}
		if p.Count == 0 {
			break
		}
		if time.Since(lastAt) > *stallTimeout {
			return fmt.Errorf("stalled: %d messages still pending", p.Count)
		}
		time.Sleep(100 * time.Microsecond)
	}
	e2e := time.Since(start)
	cpuUsed := cpu() - cpu0

	out, err := json.Marshal(map[string]any{
		"prog": "watermill-redisstream", "n": *n, "bytes": *size, "pubs": *pubs,
		"publish_per_s":         float64(*n) / publishTime.Seconds(),
		"end_to_end_per_s":      float64(*n) / e2e.Seconds(),
		"client_cpu_us_per_msg": float64(cpuUsed.Microseconds()) / float64(*n),
	})
	if err != nil {
		return fmt.Errorf("encode the result: %w", err)
	}
	fmt.Println(string(out))
	if b := bad.Load(); b > 0 {
		return fmt.Errorf("%d payloads of the wrong size", b)
	}
	return nil
}
