// Package bench is a broker-neutral benchmark workload over core.Broker:
// publishers publish fixed-size messages to one event, consumers of one
// group receive and acknowledge them, and the run reports publish rate,
// end-to-end rate and the latency from each Publish call to the handler
// that received the message.
//
// Payloads are core.Raw, so codecs pass them through untouched: the numbers
// measure the broker and its driver, not encoding. Each payload carries its
// message index and send time in its first 16 bytes.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// Defaults for Config fields left zero.
const (
	DefaultMessages     = 10000
	DefaultPayloadBytes = 1024
	DefaultConsumers    = 1
	DefaultPublishers   = 64
	DefaultStallTimeout = 30 * time.Second
)

// MinPayloadBytes is the smallest payload: the message index and the send
// time take 8 bytes each.
const MinPayloadBytes = 16

// warmupIndex marks the message that proves a consumer is reading before
// the timed part of the run starts.
const warmupIndex = math.MaxUint64

// Config describes one benchmark run. Zero fields take the Default* values.
type Config struct {
	// Messages is how many messages are published and must be received.
	Messages int
	// PayloadBytes is the size of each payload, at least MinPayloadBytes.
	PayloadBytes int
	// Consumers is how many clients of the group consume, each with its
	// own broker.
	Consumers int
	// Publishers is how many goroutines publish concurrently through one
	// shared broker.
	Publishers int
	// Event is the event published to. Default: a new unique name, so
	// that runs never see each other's messages.
	Event string
	// Group is the consumers' group. Default: a new unique name.
	Group string
	// StallTimeout fails the run when no message arrives for this long
	// while messages are still missing.
	StallTimeout time.Duration
	// Phase is what the run times: both sides at once (PhaseEndToEnd, the
	// default), publishing alone, or consuming alone.
	Phase Phase
	// Batch, when above 0, makes each publisher publish Batch messages at a
	// time with core.BatchPublisher.PublishBatch (as the gateway does),
	// instead of one Publish call per message. Run fails with
	// ErrNoBatchPublisher when the broker cannot.
	Batch int
	// ServerCPU, when set, reads the CPU time a broker server has used
	// (Redis's INFO cpu): Run reads it when the timed part starts and ends,
	// and reports the difference per message. An error leaves the figure
	// out.
	ServerCPU func(ctx context.Context) (time.Duration, error)
	// Timed, when set, is called with true when the timed part begins and
	// with false when it ends (a run that fails may not call it with
	// false), for example to profile just that part.
	Timed func(begin bool)
}

// ErrNoBatchPublisher is returned by Run for a Config.Batch above 0 when
// the broker does not implement core.BatchPublisher.
var ErrNoBatchPublisher = errors.New("the broker does not publish in batches (core.BatchPublisher)")

// Phase selects what a run times.
type Phase string

// The phases a run can time.
const (
	// PhaseEndToEnd publishes while the consumers consume, and times both
	// rates and the latency from each Publish call to its handler.
	PhaseEndToEnd Phase = ""
	// PhasePublish only publishes: no consumer runs, nothing is received.
	PhasePublish Phase = "publish"
	// PhaseConsume publishes every message first, untimed, while the
	// consumers hold back; then it times the consumers draining them.
	PhaseConsume Phase = "consume"
)

// ParsePhase reads a phase name: "end-to-end" (or ""), "publish" or
// "consume".
func ParsePhase(s string) (Phase, error) {
	switch s {
	case "", "end-to-end":
		return PhaseEndToEnd, nil
	case string(PhasePublish), string(PhaseConsume):
		return Phase(s), nil
	}
	return "", fmt.Errorf("unknown phase %q (want end-to-end, publish or consume)", s)
}

// Result is what a run measured. Its JSON form holds the rates and the
// latency; the bench command prints its own line (internal/cli's schema).
type Result struct {
	// Broker names the broker measured. Run leaves it empty: the caller,
	// who chose the broker, fills it in.
	Broker string `json:"broker"`
	// Messages is how many messages were published and received.
	Messages int `json:"messages"`
	// PayloadBytes is the size of each payload.
	PayloadBytes int `json:"payload_bytes"`
	// Consumers is how many consuming clients ran.
	Consumers int `json:"consumers"`
	// Publishers is how many publishing goroutines ran.
	Publishers int `json:"publishers"`
	// Batch is how many messages each PublishBatch call carried; 0 when
	// every message had its own Publish call.
	Batch int `json:"-"`
	// PublishPerSec is Messages divided by the time from the first Publish
	// call to the return of the last.
	PublishPerSec float64 `json:"publish_per_s"`
	// EndToEndPerSec is Messages divided by the time from the first Publish
	// call to the acknowledgement of the last message received.
	EndToEndPerSec float64 `json:"end_to_end_per_s"`
	// ConsumePerSec is Messages divided by the time from the consumers'
	// start to the acknowledgement of the last message (PhaseConsume only).
	ConsumePerSec float64 `json:"consume_per_s"`
	// Latency summarises, in milliseconds, the time from each Publish call
	// to the moment a handler received the message (PhaseEndToEnd only).
	Latency Latency `json:"latency_ms"`
	// CPUPerMessage is the CPU time (user and system) this process spent
	// in the timed part of the run, divided by Messages; zero where the
	// platform does not report it. An embedded broker's share is included;
	// a broker server's is not.
	CPUPerMessage time.Duration `json:"-"`

	// ServerCPUPerMessage is the broker server's CPU time in the timed
	// part, divided by Messages, when Config.ServerCPU could read it.
	ServerCPUPerMessage time.Duration `json:"-"`
	// ServerCPUKnown reports that ServerCPUPerMessage was measured.
	ServerCPUKnown bool `json:"-"`

	// Phase is the phase the run timed.
	Phase Phase `json:"-"`

	// Event is the event the run published to; the caller may delete it.
	Event string `json:"-"`
	// Group is the group the consumers used.
	Group string `json:"-"`
	// Redeliveries counts deliveries of messages already received (the
	// broker delivered them again); they are not counted twice.
	Redeliveries int64 `json:"-"`
	// PublishDuration is the publishing phase's length (zero in
	// PhaseConsume, where publishing is not timed).
	PublishDuration time.Duration `json:"-"`
	// ConsumeDuration is the consuming phase's length in PhaseConsume.
	ConsumeDuration time.Duration `json:"-"`
	// EndToEndDuration is the time from the first Publish call to the last
	// acknowledgement.
	EndToEndDuration time.Duration `json:"-"`
}

// Latency holds latency percentiles in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// NewBroker opens a broker client for id. Run calls it once per consumer and
// once for the publishers, and closes what it returns.
type NewBroker func(id core.Identity) (core.Broker, error)

func (c Config) withDefaults() (Config, error) {
	if c.Messages == 0 {
		c.Messages = DefaultMessages
	}
	if c.PayloadBytes == 0 {
		c.PayloadBytes = DefaultPayloadBytes
	}
	if c.Consumers == 0 {
		c.Consumers = DefaultConsumers
	}
	if c.Publishers == 0 {
		c.Publishers = DefaultPublishers
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = DefaultStallTimeout
	}
	switch {
	case c.Messages < 0:
		return c, fmt.Errorf("messages must be positive, got %d", c.Messages)
	case c.PayloadBytes < MinPayloadBytes:
		return c, fmt.Errorf("payload size must be at least %d bytes, got %d", MinPayloadBytes, c.PayloadBytes)
	case c.Consumers < 0:
		return c, fmt.Errorf("consumers must be positive, got %d", c.Consumers)
	case c.Publishers < 0:
		return c, fmt.Errorf("publishers must be positive, got %d", c.Publishers)
	case c.StallTimeout < 0:
		return c, fmt.Errorf("stall timeout must be positive, got %s", c.StallTimeout)
	case c.Batch < 0:
		return c, fmt.Errorf("batch must be positive, got %d", c.Batch)
	case c.Phase != PhaseEndToEnd && c.Phase != PhasePublish && c.Phase != PhaseConsume:
		return c, fmt.Errorf("unknown phase %q", c.Phase)
	}
	if c.Event == "" || c.Group == "" {
		suffix, err := uniqueSuffix()
		if err != nil {
			return c, err
		}
		if c.Event == "" {
			c.Event = "spectacles-bench-" + suffix
		}
		if c.Group == "" {
			c.Group = "spectacles-bench-" + suffix
		}
	}
	return c, nil
}

func uniqueSuffix() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("unique name: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Run publishes cfg.Messages messages and waits until the consumers have
// received and acknowledged every one, then closes every broker it opened.
// It fails when ctx ends, a broker fails, or no message arrives for
// cfg.StallTimeout. It deletes nothing: the caller may remove
// Result.Event.
func Run(ctx context.Context, newBroker NewBroker, cfg Config) (res Result, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return Result{}, fmt.Errorf("bench: %w", err)
	}
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)

	rec := newRecorder(cfg.Messages, fail)
	if cfg.Phase == PhaseConsume {
		rec.gate = make(chan struct{})
	}

	var brokers []core.Broker
	defer func() {
		var errs []error
		for _, b := range brokers {
			errs = append(errs, b.Close())
		}
		if cerr := errors.Join(errs...); cerr != nil && err == nil {
			err = fmt.Errorf("bench: closing brokers: %w", cerr)
		}
	}()

	// Consume returns once messages can flow; cancelling consumeCtx stops
	// the consumers and Close (above) waits for their handlers.
	consumeCtx, stopConsuming := context.WithCancel(ctx)
	defer stopConsuming()
	consumers := cfg.Consumers
	if cfg.Phase == PhasePublish {
		consumers = 0
	}
	for i := range consumers {
		b, err := newBroker(core.Identity{Group: cfg.Group, Client: fmt.Sprintf("bench-consumer-%d", i)})
		if err != nil {
			return Result{}, fmt.Errorf("bench: open consumer %d: %w", i, err)
		}
		brokers = append(brokers, b)
		if err := b.Consume(consumeCtx, []string{cfg.Event}, rec.handle); err != nil {
			return Result{}, fmt.Errorf("bench: consumer %d: %w", i, err)
		}
	}
	pub, err := newBroker(core.Identity{Group: cfg.Group, Client: "bench-publisher"})
	if err != nil {
		return Result{}, fmt.Errorf("bench: open publisher: %w", err)
	}
	brokers = append(brokers, pub)
	var batcher core.BatchPublisher
	if cfg.Batch > 0 {
		var ok bool
		if batcher, ok = pub.(core.BatchPublisher); !ok {
			return Result{}, fmt.Errorf("bench: %w", ErrNoBatchPublisher)
		}
	}

	if consumers > 0 {
		// Warm up: one message proves the group exists and a consumer reads.
		if _, err := pub.Publish(ctx, cfg.Event, core.Raw(rec.payload(warmupIndex, cfg.PayloadBytes))); err != nil {
			return Result{}, fmt.Errorf("bench: publish warm-up message: %w", err)
		}
		if err := waitFor(ctx, rec.warm, cfg.StallTimeout, "the warm-up message"); err != nil {
			return Result{}, fmt.Errorf("bench: %w", err)
		}
	}

	timed := cfg.Timed
	if timed == nil {
		timed = func(bool) {}
	}
	if cfg.Phase != PhaseConsume {
		timed(true)
	}
	server := serverClock{read: cfg.ServerCPU}
	server.start(ctx)
	start, cpu0 := rec.now(), processCPU()
	var next atomic.Int64
	var publishers sync.WaitGroup
	step := int64(max(cfg.Batch, 1))
	for range cfg.Publishers {
		publishers.Go(func() {
			var msgs []core.Outgoing
			for {
				first := next.Add(step) - step
				if first >= int64(cfg.Messages) || ctx.Err() != nil {
					return
				}
				if batcher == nil {
					if _, err := pub.Publish(ctx, cfg.Event, core.Raw(rec.payload(uint64(first), cfg.PayloadBytes))); err != nil {
						fail(fmt.Errorf("publish message %d: %w", first, err))
						return
					}
					continue
				}
				msgs = msgs[:0]
				for i := first; i < min(first+step, int64(cfg.Messages)); i++ {
					msgs = append(msgs, core.Outgoing{Event: cfg.Event, Data: core.Raw(rec.payload(uint64(i), cfg.PayloadBytes))})
				}
				if _, err := batcher.PublishBatch(ctx, msgs); err != nil {
					fail(fmt.Errorf("publish messages %d to %d: %w", first, first+int64(len(msgs))-1, err))
					return
				}
			}
		})
	}
	publishers.Wait()
	published := rec.now()
	if ctx.Err() != nil {
		return Result{}, fmt.Errorf("bench: %w", context.Cause(ctx))
	}

	res = Result{
		Phase:        cfg.Phase,
		Messages:     cfg.Messages,
		PayloadBytes: cfg.PayloadBytes,
		Consumers:    consumers,
		Publishers:   cfg.Publishers,
		Batch:        cfg.Batch,
		Event:        cfg.Event,
		Group:        cfg.Group,
	}
	switch cfg.Phase {
	case PhasePublish:
		timed(false)
		res.PublishDuration = published - start
		res.PublishPerSec = rate(cfg.Messages, res.PublishDuration)
		res.CPUPerMessage = perMessage(processCPU()-cpu0, cfg.Messages)
		res.ServerCPUPerMessage, res.ServerCPUKnown = server.perMessage(ctx, cfg.Messages)
		return res, nil
	case PhaseConsume:
		// Everything is published; the consumers start now.
		timed(true)
		server.start(ctx)
		start, cpu0 = rec.now(), processCPU()
		close(rec.gate)
	}

	if err := rec.waitAll(ctx, cfg.StallTimeout); err != nil {
		return Result{}, fmt.Errorf("bench: %w", err)
	}
	timed(false)
	finished := time.Duration(rec.finished.Load())
	res.CPUPerMessage = perMessage(processCPU()-cpu0, cfg.Messages)
	res.ServerCPUPerMessage, res.ServerCPUKnown = server.perMessage(ctx, cfg.Messages)
	res.Redeliveries = rec.duplicates.Load()
	if cfg.Phase == PhaseConsume {
		res.ConsumeDuration = finished - start
		res.ConsumePerSec = rate(cfg.Messages, res.ConsumeDuration)
		return res, nil
	}
	res.PublishDuration = published - start
	res.EndToEndDuration = finished - start
	res.Latency = summarize(rec.latencies)
	res.PublishPerSec = rate(cfg.Messages, res.PublishDuration)
	res.EndToEndPerSec = rate(cfg.Messages, res.EndToEndDuration)
	return res, nil
}

// serverClock samples Config.ServerCPU around the timed part.
type serverClock struct {
	read  func(ctx context.Context) (time.Duration, error)
	at    time.Duration
	known bool
}

func (c *serverClock) start(ctx context.Context) {
	if c.read == nil {
		return
	}
	at, err := c.read(ctx)
	c.at, c.known = at, err == nil
}

func (c *serverClock) perMessage(ctx context.Context, n int) (time.Duration, bool) {
	if !c.known {
		return 0, false
	}
	now, err := c.read(ctx)
	if err != nil {
		return 0, false
	}
	return perMessage(now-c.at, n), true
}

// perMessage divides a CPU time among n messages.
func perMessage(cpu time.Duration, n int) time.Duration {
	if cpu <= 0 || n <= 0 {
		return 0
	}
	return cpu / time.Duration(n)
}

// waitFor waits until ch is closed, ctx ends or timeout passes.
func waitFor(ctx context.Context, ch <-chan struct{}, timeout time.Duration, what string) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return fmt.Errorf("no consumer received %s within %s", what, timeout)
	}
}

// recorder is the consumers' shared state. Offsets are durations since
// base, read from the monotonic clock.
type recorder struct {
	base       time.Time
	fail       context.CancelCauseFunc
	latencies  []time.Duration // by message index; written once per index
	seen       []atomic.Bool
	received   atomic.Int64
	duplicates atomic.Int64
	finished   atomic.Int64 // offset of the last acknowledgement
	done       chan struct{}
	warm       chan struct{}
	warmOnce   sync.Once
	// gate, when set, holds every handler of a message other than the
	// warm-up one until it is closed (PhaseConsume).
	gate chan struct{}
}

func newRecorder(n int, fail context.CancelCauseFunc) *recorder {
	return &recorder{
		base:      time.Now(),
		fail:      fail,
		latencies: make([]time.Duration, n),
		seen:      make([]atomic.Bool, n),
		done:      make(chan struct{}),
		warm:      make(chan struct{}),
	}
}

func (r *recorder) now() time.Duration { return time.Since(r.base) }

// payload builds message i: index, send offset, then zero padding.
func (r *recorder) payload(i uint64, size int) []byte {
	p := make([]byte, size)
	binary.BigEndian.PutUint64(p, i)
	binary.BigEndian.PutUint64(p[8:], uint64(r.now()))
	return p
}

func (r *recorder) handle(ctx context.Context, m *core.Message) {
	received := r.now()
	if len(m.Raw) < MinPayloadBytes {
		r.fail(fmt.Errorf("message %s: payload of %d bytes is not a bench message", m.ID, len(m.Raw)))
		return
	}
	i := binary.BigEndian.Uint64(m.Raw)
	sent := time.Duration(binary.BigEndian.Uint64(m.Raw[8:]))
	if r.gate != nil && i != warmupIndex {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return
		}
	}
	if err := m.Ack(ctx); err != nil {
		if ctx.Err() == nil {
			r.fail(fmt.Errorf("ack message %s: %w", m.ID, err))
		}
		return
	}
	if i == warmupIndex {
		r.warmOnce.Do(func() { close(r.warm) })
		return
	}
	if i >= uint64(len(r.seen)) {
		r.fail(fmt.Errorf("message %s: index %d out of range", m.ID, i))
		return
	}
	if !r.seen[i].CompareAndSwap(false, true) {
		r.duplicates.Add(1)
		return
	}
	r.latencies[i] = received - sent
	if r.received.Add(1) == int64(len(r.seen)) {
		r.finished.Store(int64(r.now()))
		close(r.done)
	}
}

// waitAll waits until every message was received, failing when none
// arrives for stall.
func (r *recorder) waitAll(ctx context.Context, stall time.Duration) error {
	tick := time.NewTicker(min(stall/10, 250*time.Millisecond))
	defer tick.Stop()
	last, lastChange := r.received.Load(), time.Now()
	for {
		select {
		case <-r.done:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
			n := r.received.Load()
			if n != last {
				last, lastChange = n, time.Now()
				continue
			}
			if time.Since(lastChange) >= stall {
				return fmt.Errorf("stalled: received %d of %d messages, none in the last %s", n, len(r.seen), stall)
			}
		}
	}
}

func summarize(lat []time.Duration) Latency {
	if len(lat) == 0 {
		return Latency{}
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return Latency{
		P50: ms(percentile(s, 0.50)),
		P90: ms(percentile(s, 0.90)),
		P99: ms(percentile(s, 0.99)),
		Max: ms(s[len(s)-1]),
	}
}

// percentile returns the nearest-rank percentile p of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Millisecond)*1000) / 1000
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return math.Round(float64(n)/d.Seconds()*10) / 10
}
