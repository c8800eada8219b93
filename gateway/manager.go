package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
)

// DispatchFormat is how a dispatch's d is encoded on the broker.
type DispatchFormat int

// Dispatch formats.
const (
	// FormatLegacy publishes d the way spec-tacles/gateway does: with the
	// msgpack codec, a msgpack str holding the JSON text; with the JSON
	// codec, the JSON text. Existing bots keep working.
	FormatLegacy DispatchFormat = iota
	// FormatNative publishes d as a native value of the broker's codec (a
	// msgpack map).
	FormatNative
)

// SendEvent is the event under which workers publish packets with only a
// guild id; the gateway routes them to the owning shard.
const SendEvent = "SEND"

// ManagerConfig configures a Manager.
type ManagerConfig struct {
	// Token is the bot token (DISCORD_TOKEN). Never logged.
	Token string
	// Intents, Presence and LargeThreshold go into every Identify.
	Intents        Intent
	Presence       json.RawMessage
	LargeThreshold int
	// ShardCount is the bot's total shard count; 0 asks /gateway/bot.
	ShardCount int
	// ShardIDs are the shards this process runs; nil means all.
	ShardIDs []int
	// APIBase is the REST base, e.g. https://discord.com/api/v10 (APIBase()).
	APIBase string
	// HTTPClient for /gateway/bot. Default: 15 s timeout.
	HTTPClient *http.Client
	// Version is the gateway version. Default 10.
	Version int
	// Compress selects transport compression.
	Compress Compression
	// Events are the dispatch events to publish (DISCORD_EVENTS); empty
	// publishes all.
	Events []string
	// Broker receives dispatches and carries worker packets. Required.
	Broker core.Broker
	// Codec is the broker's codec, used to encode dispatches. Default msgpack.
	Codec core.Codec
	// Format of published dispatches. Default FormatLegacy.
	Format DispatchFormat
	// Store keeps sessions (SHARD_STORE_*). Default: memory.
	Store SessionStore
	// Identify spaces identifies. Default: a LocalIdentifyLimiter built
	// from /gateway/bot's session_start_limit.
	Identify IdentifyLimiter
	// QueueSize bounds the dispatches waiting for the broker. Default 8192.
	QueueSize int
	// ConsumePackets makes the manager consume the shard-id events of its
	// shards and SEND. Default true (set DisableSend to turn off).
	DisableSend bool
	// IdentifyRedis, when set and Identify is nil, coordinates identifies
	// with the other processes of the same bot through this Redis (a
	// RedisIdentifyLimiter keyed by a hash of the token, sized by
	// max_concurrency).
	IdentifyRedis goredis.UniversalClient
	// KeepRunningOnFatal keeps Run going when a shard stops on a fatal
	// close code; by default Run stops every shard and returns that error,
	// since fatal codes mean the configuration is wrong.
	KeepRunningOnFatal bool
	// Metrics, optional.
	Metrics *Metrics
	// Logger, default slog.Default().
	Logger *slog.Logger
	// Tune adjusts each shard's configuration (tests shorten backoffs).
	Tune func(*ShardConfig)
}

// Manager runs a process's shards and connects them to the broker.
type Manager struct {
	cfg    ManagerConfig
	log    *slog.Logger
	events map[string]bool
	queue  chan Dispatch

	published atomic.Uint64
	shed      atomic.Uint64

	mu       sync.Mutex
	count    int
	url      string
	identify IdentifyLimiter
	shards   map[int]*managedShard
	ctx      context.Context
	wg       sync.WaitGroup
	started  chan struct{}
	fatal    chan error
}

type managedShard struct {
	shard  *Shard
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// ErrUnknownShard is returned for a shard id this manager does not run.
var ErrUnknownShard = errors.New("unknown shard")

// NewManager checks cfg and makes a manager; Run starts it.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.Token == "" {
		return nil, errors.New("gateway: DISCORD_TOKEN is required")
	}
	if cfg.Broker == nil {
		return nil, errors.New("gateway: a broker is required")
	}
	if cfg.APIBase == "" {
		cfg.APIBase = APIBase("", "", cfg.Version)
	}
	if cfg.Codec == nil {
		cfg.Codec = core.Msgpack{}
	}
	if cfg.Store == nil {
		cfg.Store = &MemoryStore{}
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 8192
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, queue: make(chan Dispatch, cfg.QueueSize), shards: map[int]*managedShard{}, started: make(chan struct{}), fatal: make(chan error, 1)}
	if len(cfg.Events) > 0 {
		m.events = map[string]bool{}
		for _, e := range cfg.Events {
			m.events[e] = true
		}
	}
	return m, nil
}

// Run asks Discord where and how to connect, starts the shards in order,
// publishes their dispatches and routes worker packets, until ctx ends.
// Shards then save their sessions and close resumably; queued dispatches
// are published before Run returns.
func (m *Manager) Run(ctx context.Context) error {
	gb, err := FetchGatewayBot(ctx, m.cfg.HTTPClient, m.cfg.APIBase, m.cfg.Token)
	if err != nil {
		return err
	}
	count := m.cfg.ShardCount
	if count == 0 {
		count = gb.Shards
	}
	ids, err := ResolveShardIDs(m.cfg.ShardIDs, count)
	if err != nil {
		return err
	}
	identify := m.cfg.Identify
	if identify == nil && m.cfg.IdentifyRedis != nil {
		host, _ := os.Hostname()
		sum := sha256.Sum256([]byte(m.cfg.Token))
		identify = NewRedisIdentifyLimiter(m.cfg.IdentifyRedis, "spectacles:identify:"+hex.EncodeToString(sum[:8])+":",
			gb.SessionStartLimit.MaxConcurrency, 5*time.Second, fmt.Sprintf("%s/%d", host, os.Getpid()))
	}
	if identify == nil {
		limit := gb.SessionStartLimit
		identify = NewLocalIdentifyLimiter(limit.MaxConcurrency, 5*time.Second, limit.Remaining, time.Duration(limit.ResetAfter)*time.Millisecond)
	}
	m.mu.Lock()
	m.count, m.url, m.identify = count, gb.URL, identify
	m.mu.Unlock()
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.totalShards.Set(float64(len(ids)))
	}
	m.log.Info("starting shards", "count", count, "ids", ids, "url", gb.URL, "compress", m.cfg.Compress)

	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		m.publishLoop()
	}()
	shardCtx, stopShards := context.WithCancel(ctx)
	defer stopShards()
	m.mu.Lock()
	m.ctx = shardCtx
	m.mu.Unlock()
	for _, id := range ids {
		if err := m.StartShard(id); err != nil {
			m.log.Error("could not start shard", "shard", id, "err", err)
			continue
		}
		// Start shards in order: each queues for its identify before the
		// next one starts, so that buckets identify lowest shard first.
		for s := m.shard(id); s != nil && s.Status().State == Idle && shardCtx.Err() == nil; {
			time.Sleep(time.Millisecond)
		}
	}
	if !m.cfg.DisableSend {
		events := []string{SendEvent}
		for _, id := range ids {
			events = append(events, strconv.Itoa(id))
		}
		if err := m.cfg.Broker.Consume(shardCtx, events, m.handlePacket); err != nil {
			stopShards()
			m.wg.Wait()
			close(m.queue)
			<-pubDone
			return fmt.Errorf("gateway: consuming worker packets: %w", err)
		}
	}
	close(m.started)
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-m.fatal:
		m.log.Error("stopping every shard: a fatal close means the configuration is wrong", "err", runErr)
		stopShards()
	}
	m.wg.Wait() // shards have saved their sessions and closed
	close(m.queue)
	<-pubDone
	return runErr
}

// ShardCount returns the total shard count once Run has started.
func (m *Manager) ShardCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.count
}

// Started is closed once Run has started every shard it was asked to.
func (m *Manager) Started() <-chan struct{} { return m.started }

// StartShard starts (or restarts) one shard of this bot.
func (m *Manager) StartShard(id int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil {
		return errors.New("gateway: manager not running")
	}
	if id < 0 || id >= m.count {
		return fmt.Errorf("%w %d (shard count %d)", ErrUnknownShard, id, m.count)
	}
	if ms := m.shards[id]; ms != nil {
		select {
		case <-ms.done:
		default:
			return nil // already running
		}
	}
	cfg := ShardConfig{
		ID: id, Count: m.count, Token: m.cfg.Token, Intents: m.cfg.Intents, Presence: m.cfg.Presence,
		LargeThreshold: m.cfg.LargeThreshold, URL: m.url, Version: m.cfg.Version, Compress: m.cfg.Compress,
		Identify: m.identify, Store: m.cfg.Store, OnDispatch: m.enqueue, WaitForRoom: m.waitForRoom, Logger: m.log, Metrics: m.cfg.Metrics,
	}
	if m.cfg.Tune != nil {
		m.cfg.Tune(&cfg)
	}
	s, err := NewShard(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(m.ctx)
	ms := &managedShard{shard: s, cancel: cancel, done: make(chan struct{})}
	m.shards[id] = ms
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(ms.done)
		ms.err = s.Run(ctx)
		if errors.Is(ms.err, ErrFatalClose) && !m.cfg.KeepRunningOnFatal {
			select {
			case m.fatal <- ms.err:
			default:
			}
		}
	}()
	return nil
}

// StopShard stops one shard, keeping its session resumable.
func (m *Manager) StopShard(id int) error {
	m.mu.Lock()
	ms := m.shards[id]
	m.mu.Unlock()
	if ms == nil {
		return fmt.Errorf("%w %d", ErrUnknownShard, id)
	}
	ms.cancel()
	<-ms.done
	return nil
}

// ReconnectShard makes one shard reconnect and resume.
func (m *Manager) ReconnectShard(id int) error {
	s := m.shard(id)
	if s == nil {
		return fmt.Errorf("%w %d", ErrUnknownShard, id)
	}
	s.Reconnect()
	return nil
}

// Shards returns the status of every shard this manager started, by id.
func (m *Manager) Shards() []Status {
	m.mu.Lock()
	list := make([]*Shard, 0, len(m.shards))
	for _, ms := range m.shards {
		list = append(list, ms.shard)
	}
	m.mu.Unlock()
	out := make([]Status, len(list))
	for i, s := range list {
		out[i] = s.Status()
	}
	slices.SortFunc(out, func(a, b Status) int { return a.ID - b.ID })
	return out
}

// Published returns how many dispatches have been published so far.
func (m *Manager) Published() uint64 { return m.published.Load() }

// QueueLength returns how many dispatches wait for the broker.
func (m *Manager) QueueLength() int { return len(m.queue) }

func (m *Manager) shard(id int) *Shard {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ms := m.shards[id]; ms != nil {
		return ms.shard
	}
	return nil
}

// enqueue runs on a shard's reading goroutine and never blocks: when the
// queue is full it refuses the dispatch, and the shard sheds its connection
// and resumes once there is room (see ShardConfig.OnDispatch).
func (m *Manager) enqueue(d Dispatch) bool {
	if d.Event == "" || (m.events != nil && !m.events[d.Event]) {
		return true
	}
	select {
	case m.queue <- d:
	default:
		if m.cfg.Metrics != nil {
			m.cfg.Metrics.queueFull.Inc()
		}
		m.shed.Add(1)
		m.log.Warn("dispatch queue full: the broker is behind; the shard will resume once it drains", "shard", d.Shard, "seq", d.Seq)
		return false
	}
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.queueLength.Set(float64(len(m.queue)))
	}
	return true
}

// waitForRoom blocks until the dispatch queue is at most half full.
func (m *Manager) waitForRoom(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for len(m.queue) > cap(m.queue)/2 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Shed returns how many times a shard found the dispatch queue full and
// shed its connection to resume later.
func (m *Manager) Shed() uint64 { return m.shed.Load() }

// publishLoop publishes queued dispatches in order, in batches, retrying
// failures with backoff until they succeed; it ends when the queue is
// closed and drained.
func (m *Manager) publishLoop() {
	const maxBatch = 512
	batch := make([]core.Outgoing, 0, maxBatch)
	for d := range m.queue {
		batch = append(batch[:0], m.outgoing(d))
	fill:
		for len(batch) < maxBatch {
			select {
			case d, ok := <-m.queue:
				if !ok {
					break fill
				}
				batch = append(batch, m.outgoing(d))
			default:
				break fill
			}
		}
		m.publishBatch(batch)
		if m.cfg.Metrics != nil {
			m.cfg.Metrics.queueLength.Set(float64(len(m.queue)))
		}
	}
}

func (m *Manager) publishBatch(batch []core.Outgoing) {
	delay := 50 * time.Millisecond
	for len(batch) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ids, err := core.PublishAll(ctx, m.cfg.Broker, batch)
		cancel()
		m.published.Add(uint64(len(ids)))
		if m.cfg.Metrics != nil {
			m.cfg.Metrics.published.Add(float64(len(ids)))
		}
		batch = batch[len(ids):]
		if err == nil {
			return
		}
		if errors.Is(err, core.ErrClosed) {
			m.log.Error("broker closed; dispatches not published", "lost", len(batch))
			return
		}
		if m.cfg.Metrics != nil {
			m.cfg.Metrics.publishErrs.Inc()
		}
		m.log.Warn("publishing dispatches failed; retrying", "err", err, "waiting", len(batch), "in", delay)
		time.Sleep(delay)
		delay = min(2*delay, 5*time.Second)
	}
}

func (m *Manager) outgoing(d Dispatch) core.Outgoing {
	var data any
	switch {
	case m.cfg.Format == FormatNative:
		v, err := core.DecodeJSON(d.Data)
		if err != nil {
			data = core.Raw(core.MsgpackJSONString(d.Data))
		} else {
			data = v
		}
	case m.cfg.Codec.Name() == "msgpack":
		data = core.Raw(core.MsgpackJSONString(d.Data))
	default:
		data = core.Raw(d.Data)
	}
	return core.Outgoing{Event: d.Event, Data: data}
}

// handlePacket routes a worker's packet: SEND by guild id, or a shard-id
// event straight to that shard. Invalid packets are dead-lettered with the
// reason; a packet is acked once written to Discord or re-published.
func (m *Manager) handlePacket(ctx context.Context, msg *core.Message) {
	var packet []byte
	target := -1
	if msg.Event == SendEvent {
		shard, p, err := m.parseSend(msg)
		if err != nil {
			m.reject(ctx, msg, err.Error())
			return
		}
		target, packet = shard, p
	} else {
		id, err := strconv.Atoi(msg.Event)
		if err != nil || m.shard(id) == nil {
			m.reject(ctx, msg, fmt.Sprintf("no shard %q in this process", msg.Event))
			return
		}
		p, err := packetJSON(msg.Payload)
		if err != nil {
			m.reject(ctx, msg, err.Error())
			return
		}
		target, packet = id, p
	}
	if _, err := ValidatePacket(packet); err != nil {
		m.reject(ctx, msg, err.Error())
		return
	}
	s := m.shard(target)
	if s == nil {
		// Another process owns the shard: hand it over by shard id.
		if _, err := m.cfg.Broker.Publish(ctx, strconv.Itoa(target), core.Raw(m.encodePacket(packet))); err != nil {
			m.log.Warn("re-publishing a packet failed; it will be retried", "shard", target, "err", err)
			return
		}
		m.routed("republished")
		_ = msg.Ack(ctx)
		return
	}
	sendCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.Send(sendCtx, packet); err != nil {
		if errors.Is(err, ErrInvalidPacket) {
			m.reject(ctx, msg, err.Error())
			return
		}
		m.log.Warn("sending a packet failed; it stays pending and will be retried", "shard", target, "err", err)
		return
	}
	m.routed("local")
	if err := msg.Ack(ctx); err != nil {
		m.log.Warn("ack of a sent packet failed", "id", msg.ID, "err", err)
	}
}

func (m *Manager) routed(to string) {
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.routed.WithLabelValues(to).Inc()
	}
}

func (m *Manager) reject(ctx context.Context, msg *core.Message, reason string) {
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.deadLettered.WithLabelValues(msg.Event).Inc()
	}
	m.log.Warn("dead-lettering an invalid worker packet", "event", msg.Event, "id", msg.ID, "reason", reason)
	if err := msg.Reject(ctx, reason); err != nil {
		m.log.Error("dead-lettering failed; the packet stays pending", "id", msg.ID, "err", err)
	}
}

// encodePacket encodes a packet for re-publishing under a shard id, as a
// native value of the broker's codec.
func (m *Manager) encodePacket(packet []byte) []byte {
	v, err := core.DecodeJSON(packet)
	if err == nil {
		if b, err := m.cfg.Codec.Marshal(v); err == nil {
			return b
		}
	}
	return packet
}

// parseSend reads a SEND payload ({guild_id, packet}, as a map or as a
// string holding JSON) and returns the owning shard and the packet JSON.
func (m *Manager) parseSend(msg *core.Message) (int, []byte, error) {
	data, err := msg.Data()
	if err != nil {
		return 0, nil, fmt.Errorf("SEND payload: %w", err)
	}
	obj, ok := data.(map[string]any)
	if !ok {
		return 0, nil, fmt.Errorf("SEND payload is %T, want an object {guild_id, packet}", data)
	}
	var gid uint64
	switch g := obj["guild_id"].(type) {
	case string:
		gid, err = core.ParseSnowflake(g)
	case int64:
		if g <= 0 {
			err = fmt.Errorf("%w: %d", core.ErrInvalidSnowflake, g)
		}
		gid = uint64(g)
	case uint64:
		gid = g
	default:
		err = fmt.Errorf("%w: guild_id is %T", core.ErrInvalidSnowflake, g)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("SEND guild_id: %w", err)
	}
	packet, ok := obj["packet"]
	if !ok || packet == nil {
		return 0, nil, errors.New("SEND has no packet")
	}
	if s, isString := packet.(string); isString {
		packet, err = core.DecodeJSON([]byte(s))
		if err != nil {
			return 0, nil, fmt.Errorf("SEND packet: %w", err)
		}
	}
	raw, err := json.Marshal(core.JSONValue(packet))
	if err != nil {
		return 0, nil, fmt.Errorf("SEND packet: %w", err)
	}
	return core.ShardID(gid, m.ShardCount()), raw, nil
}

// packetJSON turns a shard-id event's payload into the packet's JSON text.
func packetJSON(p *core.Payload) ([]byte, error) {
	data, err := p.Data()
	if err != nil {
		return nil, fmt.Errorf("packet: %w", err)
	}
	if s, ok := data.(string); ok {
		if data, err = core.DecodeJSON([]byte(s)); err != nil {
			return nil, fmt.Errorf("packet: %w", err)
		}
	}
	raw, err := json.Marshal(core.JSONValue(data))
	if err != nil {
		return nil, fmt.Errorf("packet: %w", err)
	}
	return raw, nil
}
