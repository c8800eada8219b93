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
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway/discord"
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
	Intents        discord.Intent
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
	// DrainTimeout bounds how long Run, once its context ends, keeps
	// publishing the queued dispatches (GATEWAY_DRAIN_TIMEOUT). Default 30 s.
	DrainTimeout time.Duration
	// DisableSend stops the manager from consuming worker packets: by
	// default (false) it consumes the shard-id events of its shards and
	// SEND, and writes them to Discord.
	DisableSend bool
	// SharedIdentify, when set and Identify is nil, makes the limiter that
	// coordinates identifies with the other processes of the same bot, once
	// /gateway/bot has given max_concurrency (redisgw.IdentifyLimiters
	// makes one over Redis).
	SharedIdentify func(maxConcurrency int) IdentifyLimiter
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
	queue  *dispatchQueue
	// markPrefix + shard id is a shard's publish mark (PublishMarkKey).
	markPrefix string
	// unsequenced: the broker said it cannot publish sequenced.
	unsequenced atomic.Bool

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
	cancel context.CancelCauseFunc
	done   chan struct{}
	err    error
}

// ErrStoppedByOperator is why a shard stopped by StopShard ended: its
// Status says "stopped by operator" as its last close, rather than the
// resumable close code it sent.
var ErrStoppedByOperator = errors.New("stopped by operator")

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
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, shards: map[int]*managedShard{}, started: make(chan struct{}), fatal: make(chan error, 1)}
	if len(cfg.Events) > 0 {
		m.events = map[string]bool{}
		for _, e := range cfg.Events {
			m.events[e] = true
		}
	}
	m.markPrefix = publishMarkPrefix(sha256.Sum256([]byte(cfg.Token)))
	m.queue = newDispatchQueue(cfg.QueueSize, m.skip, m.publish, m.log, cfg.Metrics)
	return m, nil
}

// Run asks Discord where and how to connect, starts the shards in order,
// publishes their dispatches and routes worker packets, until ctx ends.
// Shards then close resumably, the queued dispatches are published for at
// most DrainTimeout, and each shard's session is saved at the last
// dispatch the broker confirmed. When some were left unpublished, Run
// returns an error wrapping ErrNotDrained that says how many: the next
// process resuming the sessions gets them replayed by Discord.
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
	if identify == nil && m.cfg.SharedIdentify != nil {
		identify = m.cfg.SharedIdentify(gb.SessionStartLimit.MaxConcurrency)
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

	go m.queue.run()
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
		if s := m.shard(id); s != nil {
			select {
			case <-s.Started():
			case <-shardCtx.Done():
			}
		}
	}
	if !m.cfg.DisableSend {
		events := []string{SendEvent}
		for _, id := range ids {
			events = append(events, strconv.Itoa(id))
		}
		// A new group starts at the streams' end: a new gateway never
		// replays old packets to Discord.
		if err := m.cfg.Broker.Consume(core.WithNewGroupsAtEnd(shardCtx), events, m.handlePacket); err != nil {
			stopShards()
			err = fmt.Errorf("gateway: consuming worker packets: %w", err)
			if derr := m.drain(); derr != nil {
				m.log.Error(derr.Error())
			}
			return err
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
	stopShards()
	drainErr := m.drain()
	if runErr != nil {
		if drainErr != nil {
			m.log.Error(drainErr.Error())
		}
		return runErr
	}
	return drainErr
}

// ErrNotDrained is wrapped by the error Run returns when dispatches were
// still unpublished at the end of the drain timeout.
var ErrNotDrained = errors.New("dispatches left unpublished")

// sessionSaveWait bounds how long shutdown waits for the final session
// saves: a stalled store must not hold the process past its drain.
const sessionSaveWait = 3 * time.Second

// drain runs once the shards are told to stop: it gives the dispatch queue
// DrainTimeout to publish what it holds (the queue refuses new dispatches,
// which the shards, stopping, do not count as received), waits for the
// shards, and saves every shard's session at the last dispatch the broker
// confirmed, so that Discord replays the rest to the next process.
func (m *Manager) drain() error {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.DrainTimeout)
	defer cancel()
	left := m.queue.Drain(ctx)
	stopped := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		// A shard blocked (saving to a stalled store, say) must not hold
		// the final save: every save is of delivered dispatches only.
		m.log.Warn("shards still stopping at the end of the drain timeout; saving their sessions anyway")
	}
	m.mu.Lock()
	shards := make([]*Shard, 0, len(m.shards))
	for _, ms := range m.shards {
		shards = append(shards, ms.shard)
	}
	m.mu.Unlock()
	saved := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, s := range shards {
			wg.Go(s.saveSession)
		}
		wg.Wait()
		<-stopped
		close(saved)
	}()
	select {
	case <-saved:
	case <-time.After(sessionSaveWait):
		m.log.Error("the session store did not answer; the sessions saved last may be older (Discord then replays more)")
	}
	if left > 0 {
		return fmt.Errorf("gateway: %w: %d dispatches were not published within the drain timeout (%s); the saved sessions resume before them, so Discord replays them to the next process", ErrNotDrained, left, m.cfg.DrainTimeout)
	}
	return nil
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
	prev := m.shards[id]
	if prev != nil {
		select {
		case <-prev.done:
		default:
			return nil // already running
		}
	}
	cfg := ShardConfig{
		ID: id, Count: m.count, Token: m.cfg.Token, Intents: m.cfg.Intents, Presence: m.cfg.Presence,
		LargeThreshold: m.cfg.LargeThreshold, URL: m.url, Version: m.cfg.Version, Compress: m.cfg.Compress,
		Identify: m.identify, Store: m.cfg.Store, Dispatches: m.queue, Logger: m.log, Metrics: m.cfg.Metrics,
	}
	if m.cfg.Tune != nil {
		m.cfg.Tune(&cfg)
	}
	cfg.ownerSaves = true
	s, err := NewShard(cfg)
	if err != nil {
		return err
	}
	if prev != nil {
		// A resumed session gets no GUILD_CREATE again: its guilds are
		// those the stopped shard knew (a new session's READY replaces
		// them).
		s.inheritGuilds(prev.shard)
	}
	ctx, cancel := context.WithCancelCause(m.ctx)
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
	ms.cancel(ErrStoppedByOperator)
	<-ms.done
	ms.shard.saveSession()
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
func (m *Manager) Published() uint64 { return m.queue.Published() }

// QueueLength returns how many dispatches wait for the broker.
func (m *Manager) QueueLength() int { return m.queue.Len() }

// skip reports whether a dispatch is not published (DISCORD_EVENTS).
func (m *Manager) skip(d Dispatch) bool {
	return d.Event == "" || (m.events != nil && !m.events[d.Event])
}

func (m *Manager) shard(id int) *Shard {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ms := m.shards[id]; ms != nil {
		return ms.shard
	}
	return nil
}

// Shed returns how many times a shard found the dispatch queue full and
// shed its connection to resume later.
func (m *Manager) Shed() uint64 { return m.queue.Shed() }

// PublishMarkKey is the key of the publish mark of shard for the bot
// whose token is token: "spectacles:published:" + the first 8 bytes of
// the token's SHA-256 in hex + ":" + the shard id. It holds
// "session:seq", the newest dispatch of the shard published to the
// broker, and expires a day after its last update. Every process of the
// bot shares it, so a process that resumes a session publishes nothing
// that another one already did.
func PublishMarkKey(token string, shard int) string {
	sum := sha256.Sum256([]byte(token))
	return publishMarkPrefix(sum) + strconv.Itoa(shard)
}

func publishMarkPrefix(tokenSum [sha256.Size]byte) string {
	return "spectacles:published:" + hex.EncodeToString(tokenSum[:8]) + ":"
}

// publish publishes a batch of dispatches in order; it returns how many of
// the first ones the broker confirmed. A broker that implements
// core.SequencedPublisher publishes each dispatch exactly once: under its
// shard's mark (PublishMarkKey), a dispatch it already published (a retry
// after an uncertain error, or a replay of what a previous process
// published but could not confirm) is skipped and counts as confirmed.
// Other brokers, and one that says it cannot (a Redis Cluster), publish
// at least once.
func (m *Manager) publish(ctx context.Context, batch []pending) (int, error) {
	if sp, ok := m.cfg.Broker.(core.SequencedPublisher); ok && !m.unsequenced.Load() {
		out := make([]core.SequencedOutgoing, len(batch))
		for i, p := range batch {
			out[i].Outgoing = m.outgoing(p.Dispatch)
			if p.Sequenced {
				out[i].Mark, out[i].Session, out[i].Seq = m.markPrefix+strconv.Itoa(p.Shard), p.Session, p.Seq
			}
		}
		ids, err := sp.PublishSequenced(ctx, out)
		if !errors.Is(err, core.ErrUnsupported) || len(ids) > 0 {
			if skipped := countSkipped(ids); skipped > 0 {
				m.log.Info("dispatches were already published; not publishing them again", "skipped", skipped)
			}
			return len(ids), err
		}
		m.unsequenced.Store(true)
		m.log.Info("the broker cannot publish dispatches exactly once; publishing them at least once", "reason", err)
	}
	out := make([]core.Outgoing, len(batch))
	for i, p := range batch {
		out[i] = m.outgoing(p.Dispatch)
	}
	ids, err := core.PublishAll(ctx, m.cfg.Broker, out)
	return len(ids), err
}

// countSkipped counts the ids of dispatches found already published.
func countSkipped(ids []string) int {
	n := 0
	for _, id := range ids {
		if id == "" {
			n++
		}
	}
	return n
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
	if _, err := discord.ValidatePacket(packet); err != nil {
		m.reject(ctx, msg, err.Error())
		return
	}
	s := m.shard(target)
	if s == nil {
		// Another process owns the shard: hand it over by shard id.
		if _, err := m.cfg.Broker.Publish(ctx, strconv.Itoa(target), core.LegacyJSON(packet)); err != nil {
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
		if errors.Is(err, discord.ErrInvalidPacket) {
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
