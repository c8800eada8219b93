package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/core/bench"
	"github.com/spectacles-go/spectacles/internal/redact"
	amqptransport "github.com/spectacles-go/spectacles/transport/amqp"
)

func (a *app) benchCommand() *cobra.Command {
	var (
		cfg                      bench.Config
		publishOnly, consumeOnly bool
		cpuProfile               string
		concurrency              int
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure publish -> consume -> ack throughput and latency; print one JSON line",
		Long: `Publish --messages payloads of --size bytes from --publishers goroutines to a
new event, consume them with --consumers clients of a new group that
acknowledge each, and print one JSON line:

  {"broker", "phase", "message_count", "payload_bytes", "consumer_count",
   "publisher_count", "batch_size", "publish_per_s", "consume_per_s", "end_to_end_per_s",
   "publish_ms", "consume_ms", "end_to_end_ms", "latency_p50_ms",
   "latency_p90_ms", "latency_p99_ms", "latency_max_ms", "cpu_us_per_msg",
   "server_cpu_us_per_msg"}

Latency runs from each Publish call to the handler receiving the message.
--batch N makes each publisher publish N messages per PublishBatch call,
the way the gateway publishes (Redis pipelines them; AMQP and IPC too).
--publish-only times publishing alone (no consumer runs); --consume-only
publishes every message first, untimed, then times the consumers draining
them. A figure the phase does not measure is left out. cpu_us_per_msg is
this process's CPU time (user and system) in the timed part per message, an
embedded server's included; server_cpu_us_per_msg is the Redis server's
(INFO cpu), left out when it cannot be read.
The event is named spectacles-bench-<random>; its stream is deleted at the
end. Without REDIS_URL it measures the local node when one runs, else a
private embedded server of its own (not advertised, gone at the end).`,
		Example: `  spectacles bench --messages 200000 --size 1024
  spectacles bench --messages 200000 --publishers 4 --batch 256
  spectacles bench --messages 200000 --publish-only
  spectacles bench --messages 200000 --consume-only`,
		Args: argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := benchFlagsError(cfg); err != nil {
				return err
			}
			if concurrency < 1 {
				return usageErrorf("--concurrency must be at least 1, got %d", concurrency)
			}
			switch {
			case publishOnly && consumeOnly:
				return usageErrorf("--publish-only and --consume-only exclude each other: leave both out to time both sides at once")
			case publishOnly:
				cfg.Phase = bench.PhasePublish
			case consumeOnly:
				cfg.Phase = bench.PhaseConsume
			}
			var suffix [6]byte
			if _, err := rand.Read(suffix[:]); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			cfg.Event = "spectacles-bench-" + hex.EncodeToString(suffix[:])
			cfg.Group = cfg.Event
			ctx := cmd.Context()
			a.log.Debug("bench starting", "event", cfg.Event, "messages", cfg.Messages, "size", cfg.PayloadBytes,
				"consumers", cfg.Consumers, "publishers", cfg.Publishers)
			connected := false
			defer func() {
				if connected {
					a.deleteEvents(ctx, cfg.Event, core.DeadLetterEvent(cfg.Event))
				}
			}()
			if cpuProfile != "" {
				profile, err := newCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer profile.close()
				cfg.Timed = profile.timed
			}
			cpu := &serverCPU{a: a}
			defer cpu.close()
			cfg.ServerCPU = cpu.read
			res, err := bench.Run(ctx, func(id core.Identity) (core.Broker, error) {
				opts := a.options(id)
				opts.Concurrency = concurrency
				b, err := a.open(ctx, opts)
				if err != nil {
					return nil, err // not a typed nil in the interface
				}
				connected = true
				return b, nil
			}, cfg)
			if err != nil {
				return err
			}
			res.Broker = a.brokerName()
			if res.Redeliveries > 0 {
				a.log.Warn("some messages were delivered more than once", "redeliveries", res.Redeliveries)
			}
			return (&lineWriter{w: a.stdout}).write(newBenchJSON(res))
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Messages, "messages", bench.DefaultMessages, "messages to publish and consume")
	f.IntVar(&cfg.PayloadBytes, "size", bench.DefaultPayloadBytes, fmt.Sprintf("payload size in bytes (at least %d)", bench.MinPayloadBytes))
	f.IntVar(&cfg.Consumers, "consumers", bench.DefaultConsumers, "consuming clients, each with its own connection pool")
	f.IntVar(&cfg.Publishers, "publishers", bench.DefaultPublishers, "concurrent publishing goroutines sharing one client")
	f.DurationVar(&cfg.StallTimeout, "stall-timeout", bench.DefaultStallTimeout, "fail when no message arrives for this long")
	f.IntVar(&cfg.Batch, "batch", 0, "publish this many messages per PublishBatch call, as the gateway does (0: one Publish call per message)")
	f.BoolVar(&publishOnly, "publish-only", false, "time publishing alone: no consumer runs")
	f.BoolVar(&consumeOnly, "consume-only", false, "publish first, untimed, then time the consumers alone")
	f.IntVar(&concurrency, "concurrency", core.DefaultConcurrency, "handlers each consumer runs at once (Options.Concurrency)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the timed part (go tool pprof) to this file")
	return cmd
}

// cpuProfile writes a CPU profile of the bench's timed part to a file.
type cpuProfile struct {
	f       *os.File
	running bool
}

func newCPUProfile(path string) (*cpuProfile, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("bench: --cpuprofile: %w", err)
	}
	return &cpuProfile{f: f}, nil
}

// timed starts the profile when the timed part begins and stops it when
// it ends.
func (p *cpuProfile) timed(begin bool) {
	switch {
	case begin && !p.running:
		p.running = pprof.StartCPUProfile(p.f) == nil
	case !begin && p.running:
		pprof.StopCPUProfile()
		p.running = false
	}
}

func (p *cpuProfile) close() {
	p.timed(false)
	_ = p.f.Close()
}

// errNoServerCPU: the broker's server CPU cannot be read (not a Redis
// server of its own).
var errNoServerCPU = errors.New("no server CPU figure for this broker")

// serverCPU reads a Redis server's CPU time (INFO cpu) through a client of
// its own, opened on first use once the bench knows which server it runs
// on.
type serverCPU struct {
	a      *app
	broker core.Broker
}

func (s *serverCPU) read(ctx context.Context) (time.Duration, error) {
	if s.broker == nil {
		if s.a.cfg.BrokerType != "redis" || s.a.brokerName() != "redis" {
			return 0, errNoServerCPU
		}
		b, err := s.a.open(ctx, s.a.options(s.a.cfg.Identity()))
		if err != nil {
			return 0, err
		}
		s.broker = b
	}
	rc, ok := s.broker.(redisClienter)
	if !ok {
		return 0, errNoServerCPU
	}
	info, err := rc.Client().Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	return parseRedisCPU(info)
}

func (s *serverCPU) close() {
	if s.broker != nil {
		_ = s.broker.Close()
	}
}

// parseRedisCPU adds used_cpu_sys and used_cpu_user (seconds) of an INFO
// cpu reply.
func parseRedisCPU(info string) (time.Duration, error) {
	var total float64
	found := 0
	for line := range strings.Lines(info) {
		key, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (key != "used_cpu_sys" && key != "used_cpu_user") {
			continue
		}
		secs, err := strconv.ParseFloat(value, 64)
		if err != nil || secs < 0 || math.IsInf(secs, 0) || math.IsNaN(secs) {
			return 0, fmt.Errorf("INFO cpu: %s is not a number of seconds", key)
		}
		total += secs
		found++
	}
	if found != 2 {
		return 0, errNoServerCPU
	}
	return time.Duration(total * float64(time.Second)), nil
}

// deleteEvents removes the streams of events from a Redis server this
// process does not own (REDIS_URL's, or the local node); a private
// embedded server vanishes on its own. Failures are logged, not returned:
// the measurement stands.
func (a *app) deleteEvents(ctx context.Context, events ...string) {
	if a.cfg.BrokerType == "amqp" {
		a.deleteAMQPBench(events[0])
		return
	}
	if a.cfg.BrokerType == "hub" {
		return // the hub keeps its queues in memory, with nothing left to delete once read
	}
	if a.privateEmbedded() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	b, err := a.open(ctx, a.options(a.cfg.Identity()))
	if err != nil {
		a.log.Warn("bench streams not deleted", "events", events, "err", err)
		return
	}
	defer b.Close()
	rc, ok := any(b).(redisClienter)
	if !ok {
		a.log.Warn("bench streams not deleted: the broker does not expose its Redis client", "events", events)
		return
	}
	if err := rc.Client().Del(ctx, events...).Err(); err != nil {
		a.log.Warn("bench streams not deleted", "events", events, "err", err)
	}
}

// deleteAMQPBench removes the exchange and queues of a bench run on
// RabbitMQ: the bench's group (the exchange) is named after its event.
func (a *app) deleteAMQPBench(event string) {
	conn, err := amqp091.DialConfig(a.cfg.AMQPURL, amqp091.Config{Dial: amqp091.DefaultDial(5 * time.Second)})
	if err != nil {
		a.log.Warn("bench queues not deleted", "event", event, "err", redact.Text(err.Error(), a.cfg.AMQPURL))
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		a.log.Warn("bench queues not deleted", "event", event, "err", err)
		return
	}
	queue := amqptransport.QueueName(event, a.cfg.Subgroup, event)
	for _, q := range []string{queue, queue + core.DeadLetterSuffix} {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			a.log.Warn("bench queue not deleted", "queue", q, "err", err)
			return
		}
	}
	if err := ch.ExchangeDelete(event, false, false); err != nil {
		a.log.Warn("bench exchange not deleted", "exchange", event, "err", err)
	}
}
