package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

// ErrFatalClose is wrapped by the error Run returns when Discord closed
// with a code that forbids reconnecting (4004, 4010-4014).
var ErrFatalClose = errors.New("fatal gateway close")

// ErrNotReady is returned by Send when the shard stopped before it could send.
var ErrNotReady = errors.New("shard not ready")

// FatalError describes a close that stopped a shard for good.
type FatalError struct {
	Shard  int
	Code   int
	Reason string
}

func (e *FatalError) Error() string {
	return fmt.Sprintf("shard %d: gateway closed with %d (%s): not reconnecting", e.Shard, e.Code, e.Reason)
}

// Unwrap lets errors.Is(err, ErrFatalClose) match.
func (e *FatalError) Unwrap() error { return ErrFatalClose }

// Dispatch is one op 0 event a shard received.
type Dispatch struct {
	Shard int
	// Session is the id of the session the dispatch belongs to.
	Session  string
	Seq      int64
	Event    string
	Data     json.RawMessage
	Received time.Time
}

// ShardConfig configures one shard.
type ShardConfig struct {
	// ID and Count place the shard: it receives the guilds with
	// (guild_id >> 22) % Count == ID.
	ID, Count int
	// Token is the bot token. It is sent in Identify and Resume only.
	Token string
	// Intents for Identify.
	Intents discord.Intent
	// Presence is the initial presence (Identify's presence), optional.
	Presence json.RawMessage
	// LargeThreshold (50-250) for Identify; 0 leaves Discord's default.
	LargeThreshold int
	// URL is the gateway URL from /gateway/bot, e.g. wss://gateway.discord.gg.
	URL string
	// Version is the gateway API version. Default 10.
	Version int
	// Compress selects transport compression. Default none.
	Compress Compression
	// Identify spaces identifies. Default: one per 5 s.
	Identify IdentifyLimiter
	// Store keeps the session across connections and restarts. Default:
	// a MemoryStore.
	Store SessionStore
	// Dispatches receives every dispatch in order (see DispatchSink). The
	// session seq the shard saves is the one Dispatches says it delivered.
	// Default: a sink that drops them.
	Dispatches DispatchSink
	// Dialer opens websocket connections. Default: websocket.DefaultDialer
	// with a 30 s handshake timeout.
	Dialer *websocket.Dialer
	// MinBackoff and MaxBackoff bound the reconnect delay: a retry.Backoff
	// whose step starts at MinBackoff and doubles with each failed attempt
	// up to MaxBackoff, each delay drawn from [step/2, step]. The first
	// reconnect after a connection that was ready, when quick (op 7, a
	// drop), waits at most MinBackoff/4. Defaults 1 s and 2 min.
	MinBackoff, MaxBackoff time.Duration
	// SendLimit payloads per SendWindow (Discord: 120 per 60 s).
	SendLimit  int
	SendWindow time.Duration
	// SessionFlush is how often a changed seq is saved to Store while
	// connected. Default 5 s. Sessions are also saved on READY, RESUMED,
	// every disconnect and at shutdown. The saved seq is that of the last
	// dispatch Dispatches delivered, not the last one received.
	SessionFlush time.Duration
	// Logger receives diagnostics. Default slog.Default().
	Logger *slog.Logger
	// Metrics records packets, liveness and ping; nil records nothing.
	Metrics *Metrics

	// ownerSaves leaves the save at shutdown to the Manager, which saves
	// once its queue has delivered what it could.
	ownerSaves bool
}

func (c *ShardConfig) setDefaults() error {
	if c.Count < 1 || c.ID < 0 || c.ID >= c.Count {
		return fmt.Errorf("shard %d of %d: %w", c.ID, c.Count, ErrInvalidShardIDs)
	}
	if c.Token == "" {
		return errors.New("a bot token is required")
	}
	if c.URL == "" {
		return errors.New("a gateway URL is required")
	}
	if c.Version == 0 {
		c.Version = 10
	}
	if c.Compress == "" {
		c.Compress = CompressNone
	}
	if c.Identify == nil {
		c.Identify = NewLocalIdentifyLimiter(1, 5*time.Second, -1, 0)
	}
	if c.Store == nil {
		c.Store = &MemoryStore{}
	}
	if c.Dispatches == nil {
		c.Dispatches = newFuncSink(func(Dispatch) bool { return true })
	}
	if c.Dialer == nil {
		d := *websocket.DefaultDialer
		d.HandshakeTimeout = 30 * time.Second
		c.Dialer = &d
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(2*time.Minute, c.MinBackoff)
	}
	if c.SendLimit <= 0 {
		c.SendLimit = 120
	}
	if c.SendWindow <= 0 {
		c.SendWindow = 60 * time.Second
	}
	if c.SessionFlush <= 0 {
		c.SessionFlush = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Status is a snapshot of a shard's health.
type Status struct {
	ID                int           `json:"id"`
	Count             int           `json:"count"`
	State             State         `json:"state"`
	SessionID         string        `json:"session_id,omitempty"`
	Seq               int64         `json:"seq"`
	Latency           time.Duration `json:"latency_ns"` // last heartbeat → ACK round trip; 0 without a connection
	LastHeartbeatACK  time.Time     `json:"last_heartbeat_ack,omitzero"`
	GuildsAvailable   int           `json:"guilds_available"`
	GuildsUnavailable int           `json:"guilds_unavailable"`
	Reconnects        int           `json:"reconnects"`
	Events            uint64        `json:"events"` // dispatches received
	LastCloseCode     int           `json:"last_close_code,omitempty"`
	LastCloseReason   string        `json:"last_close_reason,omitempty"`
	Err               string        `json:"error,omitempty"` // why the shard failed, if it did
}

// Shard is one gateway connection and its session, run as a state machine
// by Run.
type Shard struct {
	cfg ShardConfig
	log *slog.Logger

	mu      sync.Mutex
	state   State
	session Session
	// baseSeq is what the session is known delivered up to when Dispatches
	// has delivered none of it: the seq it was loaded with, 0 for a new one.
	baseSeq int64
	guilds  map[string]bool // guild id → available
	status  Status
	ready   chan struct{} // closed while Ready
	started chan struct{} // closed once the shard left Idle
	conn    *liveConn     // current connection, nil between connections

	events     atomic.Uint64
	reconnectC chan struct{}
}

// NewShard validates cfg and makes a shard; Run starts it.
func NewShard(cfg ShardConfig) (*Shard, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Shard{
		cfg:        cfg,
		log:        cfg.Logger.With("shard", cfg.ID),
		guilds:     map[string]bool{},
		ready:      make(chan struct{}),
		started:    make(chan struct{}),
		reconnectC: make(chan struct{}, 1),
	}
	s.status.ID, s.status.Count = cfg.ID, cfg.Count
	return s, nil
}

// ID returns the shard id.
func (s *Shard) ID() int { return s.cfg.ID }

// Started returns a channel closed once the shard has left Idle: it is
// waiting for its identify slot, or further on.
func (s *Shard) Started() <-chan struct{} { return s.started }

// Status returns a snapshot of the shard's health.
func (s *Shard) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.State = s.state
	st.SessionID = s.session.ID
	st.Seq = s.session.Seq
	st.GuildsAvailable, st.GuildsUnavailable = 0, 0
	for _, ok := range s.guilds {
		if ok {
			st.GuildsAvailable++
		} else {
			st.GuildsUnavailable++
		}
	}
	st.Events = s.events.Load()
	if s.conn == nil {
		st.Latency = 0 // stopped, failed or between connections: none now
	}
	return st
}

// Session returns the shard's current session.
func (s *Shard) Session() Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.session
}

// Reconnect closes the current connection with a resumable code; the shard
// reconnects and resumes.
func (s *Shard) Reconnect() {
	select {
	case s.reconnectC <- struct{}{}:
	default:
	}
}

func (s *Shard) setState(st State) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setStateLocked(st)
}

// setStateLocked is the one place a shard's state changes. A change the
// state machine does not allow (allowedTransition) is a bug: it is logged
// and the state stays as it was; it returns whether the state is st.
func (s *Shard) setStateLocked(st State) bool {
	if s.state == st {
		return true
	}
	if !allowedTransition(s.state, st) {
		s.log.Error("bug: shard state change not allowed; keeping the state", "from", s.state, "to", st)
		return false
	}
	s.cfg.Metrics.state(s.cfg.ID, s.state, st)
	if s.state == Idle {
		close(s.started)
	}
	if st == Ready {
		close(s.ready)
		s.cfg.Metrics.alive(s.cfg.ID, true)
	} else if s.state == Ready {
		s.ready = make(chan struct{})
		s.cfg.Metrics.alive(s.cfg.ID, false)
	}
	s.log.Debug("shard state", "from", s.state, "to", st)
	s.state = st
	return true
}
