package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spectacles-go/spectacles/gateway/discord"
	"github.com/spectacles-go/spectacles/internal/retry"
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
	Latency           time.Duration `json:"latency_ns"` // last heartbeat → ACK round trip
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
	conn    *liveConn     // current connection, nil between connections

	events     atomic.Uint64
	reconnectC chan struct{}
}

// liveConn is an open connection and what it needs to write.
type liveConn struct {
	shard     int
	metrics   *Metrics
	ws        *websocket.Conn
	writeMu   sync.Mutex
	limiter   *sendLimiter
	closeOnce sync.Once
	// goroutines are the connection's own (heartbeat, closer): joined
	// before the shard leaves the connection.
	goroutines sync.WaitGroup
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
		reconnectC: make(chan struct{}, 1),
	}
	s.status.ID, s.status.Count = cfg.ID, cfg.Count
	return s, nil
}

// ID returns the shard id.
func (s *Shard) ID() int { return s.cfg.ID }

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

// Run connects and keeps the shard connected until ctx is cancelled, when
// it saves the session and closes with a resumable code so that a new
// process can resume. It returns nil then, or a *FatalError when Discord
// closed with a fatal code.
func (s *Shard) Run(ctx context.Context) error {
	sess, err := s.cfg.Store.Load(ctx, s.cfg.ID)
	if err != nil {
		s.log.Warn("could not load the saved session; identifying anew", "err", err)
	}
	s.mu.Lock()
	s.session, s.baseSeq = sess, sess.Seq
	s.mu.Unlock()

	// The first reconnect after a healthy connection may be quick; the
	// others back off (retry.Backoff from MinBackoff to MaxBackoff).
	bo := retry.Backoff{Min: s.cfg.MinBackoff, Max: s.cfg.MaxBackoff}
	fresh := true
	for {
		if ctx.Err() != nil {
			return s.stop()
		}
		out := s.connect(ctx)
		s.mu.Lock()
		s.status.LastCloseCode, s.status.LastCloseReason = out.code, out.reason
		s.mu.Unlock()
		if ctx.Err() != nil {
			return s.stop()
		}
		s.saveSession()
		switch out.action {
		case discord.Fatal:
			s.mu.Lock()
			s.status.Err = fmt.Sprintf("closed with %d (%s)", out.code, out.reason)
			s.setStateLocked(Failed)
			s.mu.Unlock()
			s.log.Error("gateway closed with a fatal code; not reconnecting", "code", out.code, "reason", out.reason)
			return &FatalError{Shard: s.cfg.ID, Code: out.code, Reason: out.reason}
		case discord.Reidentify:
			s.resetSession()
		}
		if out.wasReady {
			bo.Reset()
			fresh = true
		}
		if out.shed {
			s.setState(Reconnecting)
			select {
			case <-s.cfg.Dispatches.Room():
			case <-ctx.Done():
				return s.stop()
			}
		}
		s.mu.Lock()
		s.status.Reconnects++
		s.setStateLocked(Reconnecting)
		s.mu.Unlock()
		delay := reconnectDelay(&bo, s.cfg.MinBackoff, fresh && out.quick)
		fresh = false
		s.log.Info("reconnecting", "in", delay.Round(time.Millisecond), "code", out.code, "reason", out.reason, "resume", s.Session().Resumable())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return s.stop()
		case <-t.C:
		}
	}
}

// reconnectDelay returns the delay before the next reconnect. A quick
// one (Discord asked for it, or a healthy connection just dropped) waits a
// full-jittered [0, floor/4] (floor is MinBackoff); the others take bo's next delay (equal jitter:
// [step/2, step], the step doubling from MinBackoff to MaxBackoff).
func reconnectDelay(bo *retry.Backoff, floor time.Duration, quick bool) time.Duration {
	if quick {
		return retry.Jitter(floor / 4)
	}
	return bo.Next()
}

func (s *Shard) stop() error {
	if !s.cfg.ownerSaves {
		s.saveSession()
	}
	s.setState(Stopped)
	s.log.Info("shard stopped; its session stays resumable")
	return nil
}

func (s *Shard) resetSession() {
	s.mu.Lock()
	s.session, s.baseSeq = Session{}, 0
	s.guilds = map[string]bool{}
	s.mu.Unlock()
	s.saveSession()
}

// deliveredSession is the session to save: the current one, at the seq
// of the last dispatch Dispatches delivered, so that a process resuming it
// gets every undelivered dispatch replayed.
func (s *Shard) deliveredSession() Session {
	s.mu.Lock()
	sess, seq := s.session, s.baseSeq
	s.mu.Unlock()
	if id, delivered := s.cfg.Dispatches.Delivered(s.cfg.ID); id == sess.ID && delivered > seq {
		seq = delivered
	}
	sess.Seq = min(seq, sess.Seq)
	return sess
}

func (s *Shard) saveSession() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.cfg.Store.Save(ctx, s.cfg.ID, s.deliveredSession()); err != nil {
		s.log.Warn("could not save the session", "err", err)
	}
}

// outcome is how a connection ended.
type outcome struct {
	action   discord.CloseAction
	code     int
	reason   string
	wasReady bool // the connection reached Ready: reset the backoff
	quick    bool // reconnect at once
	shed     bool // shed for back-pressure: wait for room first
}

func (s *Shard) gatewayURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("gateway URL: %w", err)
	}
	if u.Path == "" {
		u.Path = "/"
	}
	q := url.Values{}
	q.Set("v", fmt.Sprint(s.cfg.Version))
	q.Set("encoding", "json")
	if c := s.cfg.Compress.query(); c != "" {
		q.Set("compress", c)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// connect runs one connection from dial to close.
func (s *Shard) connect(ctx context.Context) outcome {
	sess := s.Session()
	resume := sess.Resumable()
	base := s.cfg.URL
	if resume && sess.ResumeURL != "" {
		base = sess.ResumeURL
	}
	if !resume {
		// Wait for an identify slot before connecting, so that the wait
		// never stalls a live connection.
		s.setState(WaitingIdentify)
		if err := s.cfg.Identify.Wait(ctx, s.cfg.ID); err != nil {
			return outcome{action: discord.Resume, reason: "identify wait: " + err.Error()}
		}
	}
	target, err := s.gatewayURL(base)
	if err != nil {
		return outcome{action: discord.Fatal, reason: err.Error()}
	}
	s.setState(Connecting)
	ws, _, err := s.cfg.Dialer.DialContext(ctx, target, nil)
	if err != nil {
		return outcome{action: discord.Resume, reason: "dial: " + err.Error()}
	}
	// The connection's limiter keeps room for about two heartbeats per
	// window besides ordinary sends.
	lc := &liveConn{shard: s.cfg.ID, metrics: s.cfg.Metrics, ws: ws, limiter: newSendLimiter(s.cfg.SendLimit, 3, s.cfg.SendWindow)}
	s.mu.Lock()
	s.conn = lc
	s.mu.Unlock()
	connCtx, cancel := context.WithCancel(ctx)
	// The connection is left only once its goroutines (heartbeat, closer)
	// have returned: cancelling stops their waits and closing the socket
	// ends a write in progress.
	defer func() {
		cancel()
		s.mu.Lock()
		s.conn = nil
		s.mu.Unlock()
		_ = ws.Close()
		lc.goroutines.Wait()
	}()

	reader, err := newPayloadReader(ws, s.cfg.Compress, MaxInboundPayload)
	if err != nil {
		return outcome{action: discord.Fatal, reason: err.Error()}
	}
	defer reader.close()

	// Closing from outside: shutdown or a requested reconnect.
	var shutdown atomic.Bool
	lc.goroutines.Go(func() {
		select {
		case <-connCtx.Done():
			if ctx.Err() != nil {
				shutdown.Store(true)
				lc.close(discord.CloseResumable, "shutting down")
			}
		case <-s.reconnectC:
			lc.close(discord.CloseResumable, "reconnect requested")
		}
	})

	return s.readLoop(connCtx, lc, reader, resume, sess, &shutdown)
}

// close sends a close frame with code and closes the socket.
func (lc *liveConn) close(code int, reason string) {
	lc.closeOnce.Do(func() {
		msg := websocket.FormatCloseMessage(code, reason)
		_ = lc.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		_ = lc.ws.Close()
	})
}

// write sends one payload with opcode op, within the send limit.
func (lc *liveConn) write(ctx context.Context, op int, payload []byte, priority bool) error {
	token, err := lc.limiter.wait(ctx, priority)
	if err != nil {
		return err
	}
	lc.writeMu.Lock()
	defer lc.writeMu.Unlock()
	_ = lc.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err = lc.ws.WriteMessage(websocket.TextMessage, payload)
	lc.limiter.sentAt(token, time.Now())
	if err != nil {
		return err
	}
	lc.metrics.sent(lc.shard, op, "")
	return nil
}

func (s *Shard) readLoop(ctx context.Context, lc *liveConn, r *payloadReader, resume bool, sess Session, shutdown *atomic.Bool) outcome {
	ended := func(err error, wasReady bool) outcome {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			action, text := discord.ClassifyClose(ce.Code)
			if ce.Text != "" {
				text += ": " + ce.Text
			}
			return outcome{action: action, code: ce.Code, reason: text, wasReady: wasReady, quick: wasReady}
		}
		if shutdown.Load() {
			return outcome{action: discord.Resume, code: discord.CloseResumable, reason: "shutting down"}
		}
		return outcome{action: discord.Resume, code: 1006, reason: "connection lost: " + err.Error(), wasReady: wasReady, quick: wasReady}
	}

	// Hello, or an early op 7.
	raw, err := r.next()
	if err != nil {
		return ended(err, false)
	}
	var p discord.Payload
	if err := json.Unmarshal(raw, &p); err != nil {
		lc.close(discord.CloseResumable, "undecodable payload")
		return outcome{action: discord.Resume, reason: "undecodable first payload"}
	}
	switch p.Op {
	case discord.OpReconnect:
		lc.close(discord.CloseResumable, "reconnect requested")
		return outcome{action: discord.Resume, code: discord.CloseResumable, reason: "op 7 before hello", quick: true}
	case discord.OpHello:
	default:
		lc.close(discord.CloseResumable, "expected hello")
		return outcome{action: discord.Resume, reason: fmt.Sprintf("op %d before hello", p.Op)}
	}
	var hello struct {
		HeartbeatInterval int64 `json:"heartbeat_interval"`
	}
	if err := json.Unmarshal(p.D, &hello); err != nil || hello.HeartbeatInterval <= 0 {
		lc.close(discord.CloseResumable, "bad hello")
		return outcome{action: discord.Resume, reason: "hello without a heartbeat interval"}
	}
	hb := newHeartbeater(s, lc, time.Duration(hello.HeartbeatInterval)*time.Millisecond)
	lc.goroutines.Go(func() { hb.run(ctx) })

	if resume {
		s.setState(Resuming)
		err = lc.write(ctx, discord.OpResume, mustJSON(map[string]any{"op": discord.OpResume, "d": map[string]any{
			"token": s.cfg.Token, "session_id": sess.ID, "seq": sess.Seq,
		}}), true)
	} else {
		s.setState(Identifying)
		err = lc.write(ctx, discord.OpIdentify, s.identifyPayload(), true)
	}
	if err != nil {
		return ended(err, false)
	}

	flush := time.NewTicker(s.cfg.SessionFlush)
	defer flush.Stop()
	savedSeq := s.deliveredSession().Seq
	wasReady := false
	for {
		select {
		case <-flush.C:
			if cur := s.deliveredSession(); cur.Seq != savedSeq {
				s.saveSession()
				savedSeq = cur.Seq
			}
		default:
		}
		raw, err := r.next()
		if err != nil {
			return ended(err, wasReady)
		}
		var p discord.Payload
		if err := json.Unmarshal(raw, &p); err != nil {
			s.log.Warn("undecodable gateway payload", "err", err, "bytes", len(raw))
			continue
		}
		s.cfg.Metrics.received(s.cfg.ID, p.Op, p.T)
		switch p.Op {
		case discord.OpDispatch:
			ready, accepted := s.handleDispatch(&p)
			if ready {
				wasReady = true
			}
			if !accepted {
				lc.close(discord.CloseResumable, "back-pressure")
				return outcome{action: discord.Resume, code: discord.CloseResumable, reason: "the broker is behind: resuming once the dispatch queue drains",
					wasReady: wasReady, quick: true, shed: true}
			}
		case discord.OpHeartbeat:
			hb.now()
		case discord.OpHeartbeatACK:
			hb.acked()
		case discord.OpReconnect:
			lc.close(discord.CloseResumable, "reconnect requested")
			return outcome{action: discord.Resume, code: discord.CloseResumable, reason: "discord asked to reconnect (op 7)", wasReady: wasReady, quick: true}
		case discord.OpInvalidSession:
			resumable := string(p.D) == "true"
			lc.close(discord.CloseResumable, "invalid session")
			if resumable {
				return outcome{action: discord.Resume, reason: "invalid session (resumable)", wasReady: wasReady}
			}
			// Discord asks for a 1-5 s wait before identifying again; the
			// backoff of a non-quick reconnect provides it.
			return outcome{action: discord.Reidentify, reason: "invalid session", wasReady: wasReady}
		}
	}
}

// handleDispatch offers the event to Dispatches and, when it was taken,
// counts it: seq, guild availability, readiness. It reports whether the
// session became ready and whether the dispatch was taken. READY's session
// is kept even when it was not taken, so that the shard can resume it.
func (s *Shard) handleDispatch(p *discord.Payload) (ready, accepted bool) {
	s.mu.Lock()
	switch p.T {
	case "READY":
		var r discord.ReadyData
		if err := json.Unmarshal(p.D, &r); err == nil {
			if r.SessionID != s.session.ID {
				s.session.Seq, s.baseSeq = 0, 0
			}
			s.session.ID = r.SessionID
			s.session.ResumeURL = r.ResumeGatewayURL
			s.guilds = make(map[string]bool, len(r.Guilds))
			for _, g := range r.Guilds {
				s.guilds[g.ID] = false
			}
		}
		s.setStateLocked(Ready)
		ready = true
	case "RESUMED":
		s.setStateLocked(Ready)
		ready = true
	}
	seq := s.session.Seq
	if p.S != nil && *p.S > seq {
		seq = *p.S
	}
	session := s.session.ID
	guilds := len(s.guilds)
	s.mu.Unlock()
	// Once per connection at info, never per dispatch.
	switch p.T {
	case "READY":
		s.log.Info("shard ready", "guilds", guilds)
	case "RESUMED":
		s.log.Info("shard resumed", "seq", seq)
	}
	accepted = s.cfg.Dispatches.Offer(Dispatch{Shard: s.cfg.ID, Session: session, Seq: seq, Event: p.T, Data: p.D, Received: time.Now()})

	s.mu.Lock()
	if accepted {
		s.events.Add(1)
		s.session.Seq = seq
		if p.T == "GUILD_CREATE" || p.T == "GUILD_DELETE" {
			var g guildRef
			if err := json.Unmarshal(p.D, &g); err == nil && g.ID != "" {
				switch {
				case p.T == "GUILD_CREATE":
					s.guilds[g.ID] = true
				case g.Unavailable:
					s.guilds[g.ID] = false
				default:
					delete(s.guilds, g.ID) // the bot left the guild
				}
			}
		}
	}
	s.mu.Unlock()
	if ready {
		s.saveSession()
	}
	return ready, accepted
}

func (s *Shard) identifyPayload() []byte {
	d := map[string]any{
		"token":   s.cfg.Token,
		"intents": uint64(s.cfg.Intents),
		"properties": map[string]string{
			"os": runtime.GOOS, "browser": "spectacles", "device": "spectacles",
		},
		"shard": []int{s.cfg.ID, s.cfg.Count},
	}
	if len(s.cfg.Presence) > 0 {
		d["presence"] = s.cfg.Presence
	}
	if s.cfg.LargeThreshold > 0 {
		d["large_threshold"] = s.cfg.LargeThreshold
	}
	return mustJSON(map[string]any{"op": discord.OpIdentify, "d": d})
}

// Send writes a worker's packet ({"op":…,"d":…}) to the gateway once the
// shard is ready, within the send limit. It refuses packets a worker may
// not send (see discord.ValidatePacket).
func (s *Shard) Send(ctx context.Context, packet []byte) error {
	op, err := discord.ValidatePacket(packet)
	if err != nil {
		return err
	}
	for {
		s.mu.Lock()
		ready, lc, st := s.ready, s.conn, s.state
		s.mu.Unlock()
		if st == Failed || st == Stopped {
			return fmt.Errorf("shard %d is %s: %w", s.cfg.ID, st, ErrNotReady)
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return fmt.Errorf("shard %d: waiting to be ready: %w", s.cfg.ID, ctx.Err())
		}
		if lc == nil {
			// Ready was observed with an older snapshot; look again.
			s.mu.Lock()
			lc = s.conn
			s.mu.Unlock()
			if lc == nil {
				continue
			}
		}
		return lc.write(ctx, op, packet, false)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("gateway: encoding a fixed payload: %v", err)) // only plain maps reach here
	}
	return b
}
