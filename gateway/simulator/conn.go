package simulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

// Transport compression values of the compress query parameter.
const (
	compressZlib = "zlib-stream"
	compressZstd = "zstd-stream"
)

// outMsg is something for the writer to send: a payload, or a close frame
// when closeCode is set.
type outMsg struct {
	data      []byte
	closeCode int
	reason    string
}

// conn is one gateway websocket connection. The handler goroutine reads
// (readLoop); one writer goroutine owns every write and the compressors.
type conn struct {
	s         *Server
	id        int
	ws        *websocket.Conn
	path      string
	viaResume bool
	compress  string
	counters  *connCounters

	ctrl       chan outMsg   // non-dispatch payloads and close frames
	wake       chan struct{} // new dispatches for the attached session
	progress   chan struct{} // the writer wrote a batch (generator backpressure)
	done       chan struct{} // closed at teardown
	writerDone chan struct{}

	closing     atomic.Bool // the server closed or dropped the connection
	payloadZlib atomic.Bool // Identify asked for per-payload zlib

	// Owned by the reader goroutine.
	sends   []time.Time
	sendIdx int

	// Owned by the writer goroutine.
	closeSent bool
	zbuf      bytes.Buffer
	zw        *zlib.Writer
	zst       *zstd.Encoder

	mu             sync.Mutex
	authed         bool
	sess           *session // attached session
	owned          *session // session this connection last carried
	gen            uint64   // incremented at every attach/detach
	nextSeq        int64    // next seq of sess to write
	shardID        int
	shardCount     int
	acks           bool
	pendingHB      []int // indices of unanswered HeartbeatRequests
	hbTimer        *time.Timer
	graceTimer     *time.Timer
	forceTimer     *time.Timer
	serverClose    int
	abruptByServer bool
	clientClose    int
	torn           bool
}

func newConn(s *Server, ws *websocket.Conn, path string, q url.Values) *conn {
	c := &conn{
		s: s, ws: ws, path: path, viaResume: strings.HasPrefix(path, "/resume"),
		counters:   &connCounters{},
		ctrl:       make(chan outMsg, 1024),
		wake:       make(chan struct{}, 1),
		progress:   make(chan struct{}, 1),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
		shardID:    -1, shardCount: -1, acks: true,
	}
	switch comp := q.Get("compress"); comp {
	case compressZlib:
		c.compress = comp
		c.zw, _ = zlib.NewWriterLevel(&c.zbuf, zlib.DefaultCompression) // valid level: no error
	case compressZstd:
		c.compress = comp
		// A 1 MiB window keeps the per-connection state small; any zstd
		// decoder accepts it. Valid options: no error.
		c.zst, _ = zstd.NewWriter(&c.zbuf, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithWindowSize(1<<20), zstd.WithLowerEncoderMem(true))
	}
	return c
}

// run serves the connection until it ends.
func (c *conn) run(q url.Values, op7First bool) {
	cfg := &c.s.cfg
	go c.writeLoop()
	comp := q.Get("compress")
	switch enc := q.Get("encoding"); {
	case q.Get("v") != strconv.Itoa(cfg.APIVersion):
		c.closeWith(discord.CloseInvalidAPIVersion, "Invalid API version")
	case enc != "" && enc != "json":
		// Discord also speaks etf; the simulator does not, and refuses any
		// other encoding as a decode error.
		c.closeWith(discord.CloseDecodeError, "Error while decoding payload.")
	case comp != "" && comp != compressZlib && comp != compressZstd:
		c.closeWith(discord.CloseDecodeError, "Error while decoding payload.")
	case op7First:
		c.sendOp(discord.OpReconnect, nil)
		c.startGrace("Reconnect requested.")
	default:
		trace := []string{fmt.Sprintf(`["gateway-sim-%d",{"micros":0.0}]`, c.id)}
		c.sendOp(discord.OpHello, map[string]any{"heartbeat_interval": cfg.HeartbeatInterval.Milliseconds(), "_trace": trace})
		if cfg.HeartbeatTimeout > 0 {
			c.mu.Lock()
			c.hbTimer = time.AfterFunc(cfg.HeartbeatTimeout, c.zombie)
			c.mu.Unlock()
		}
	}
	c.readLoop()
	c.teardown()
}

func (c *conn) zombie() {
	c.s.log.Debug("zombie connection: no heartbeat", "conn", c.id)
	c.closeWith(c.s.cfg.ZombieCloseCode, "Session timed out.")
}

// readLoop reads client payloads until the connection fails or closes.
func (c *conn) readLoop() {
	c.ws.SetReadLimit(int64(max(c.s.cfg.MaxPayloadSize*4, 1<<16)))
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			byServer := c.serverClose != 0 || c.abruptByServer
			code := websocket.CloseAbnormalClosure
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code = ce.Code
			}
			if !byServer {
				c.clientClose = code
			}
			c.torn = true // no server close can start any more
			shard := c.shardID
			c.mu.Unlock()
			if !byServer {
				abrupt := ce == nil
				reason := ""
				if ce != nil {
					reason = ce.Text
				}
				c.s.record(func(r *records) {
					r.closes = append(r.closes, CloseRecord{Conn: c.id, ShardID: shard, Time: time.Now(),
						Code: code, Reason: reason, Abrupt: abrupt})
				})
			}
			return
		}
		if c.closing.Load() {
			continue
		}
		c.handle(data)
	}
}

// teardown releases the connection and decides its session's fate.
func (c *conn) teardown() {
	now := time.Now()
	close(c.done)
	c.mu.Lock()
	c.torn = true
	for _, t := range []*time.Timer{c.hbTimer, c.graceTimer, c.forceTimer} {
		if t != nil {
			t.Stop()
		}
	}
	owned, serverClose, abruptSrv, clientClose := c.owned, c.serverClose, c.abruptByServer, c.clientClose
	c.mu.Unlock()
	_ = c.ws.NetConn().Close()
	<-c.writerDone

	if owned != nil {
		owned.mu.Lock()
		if owned.connID == c.id {
			owned.detachLocked(c, now)
			switch {
			case serverClose == discord.CloseInvalidSeq || serverClose == discord.CloseSessionTimedOut:
				owned.killLocked(fmt.Sprintf("server closed with %d", serverClose))
			case serverClose == 0 && !abruptSrv &&
				(clientClose == websocket.CloseNormalClosure || clientClose == websocket.CloseGoingAway):
				owned.killLocked(fmt.Sprintf("client closed with %d", clientClose))
			}
		}
		owned.mu.Unlock()
	}
	code, byServer, abrupt := clientClose, false, clientClose == websocket.CloseAbnormalClosure
	if serverClose != 0 || abruptSrv {
		code, byServer, abrupt = serverClose, true, abruptSrv
		if abruptSrv {
			code = websocket.CloseAbnormalClosure
		}
	}
	c.s.record(func(r *records) {
		cr := &r.conns[c.id-1]
		cr.Closed, cr.CloseCode, cr.CloseByServer, cr.Abrupt = now, code, byServer, abrupt
	})
	c.s.log.Debug("connection closed", "conn", c.id, "code", code, "by_server", byServer)
}

// notify wakes the writer.
func (c *conn) notify() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// abort drops the TCP connection without a close frame.
func (c *conn) abort() {
	_ = c.ws.NetConn().Close()
}

// drop is the abrupt-close fault: no close frame, session kept.
func (c *conn) drop() {
	c.mu.Lock()
	if c.torn || c.abruptByServer || c.serverClose != 0 {
		c.mu.Unlock()
		c.abort()
		return
	}
	c.abruptByServer = true
	c.closing.Store(true)
	shard := c.shardID
	c.mu.Unlock()
	c.s.record(func(r *records) {
		r.closes = append(r.closes, CloseRecord{Conn: c.id, ShardID: shard, Time: time.Now(),
			Code: websocket.CloseAbnormalClosure, ByServer: true, Abrupt: true})
	})
	c.abort()
}

// closeWith sends a close frame (once) and records it.
func (c *conn) closeWith(code int, reason string) {
	c.mu.Lock()
	if c.torn || c.abruptByServer || c.serverClose != 0 {
		c.mu.Unlock()
		return
	}
	c.serverClose = code
	c.closing.Store(true)
	shard := c.shardID
	c.mu.Unlock()
	c.s.record(func(r *records) {
		r.closes = append(r.closes, CloseRecord{Conn: c.id, ShardID: shard, Time: time.Now(),
			Code: code, Reason: reason, ByServer: true})
	})
	c.s.log.Debug("closing connection", "conn", c.id, "code", code, "reason", reason)
	c.enqueue(outMsg{closeCode: code, reason: reason})
}

// enqueue hands m to the writer; a client so slow that the control queue
// is full is dropped.
func (c *conn) enqueue(m outMsg) {
	select {
	case c.ctrl <- m:
	default:
		c.s.log.Debug("control queue full: dropping connection", "conn", c.id)
		c.abort()
	}
}

// sendOp queues a non-dispatch payload and records it.
func (c *conn) sendOp(op int, d any) {
	b, err := json.Marshal(struct {
		T  *string `json:"t"`
		S  *int64  `json:"s"`
		Op int     `json:"op"`
		D  any     `json:"d"`
	}{Op: op, D: d})
	if err != nil {
		c.s.log.Error("rendering payload", "op", op, "err", err)
		return
	}
	var raw json.RawMessage
	var p struct {
		D json.RawMessage `json:"d"`
	}
	if json.Unmarshal(b, &p) == nil {
		raw = p.D
	}
	c.mu.Lock()
	shard := c.shardID
	c.mu.Unlock()
	c.s.record(func(r *records) {
		r.sent = append(r.sent, SentRecord{Conn: c.id, ShardID: shard, Time: time.Now(), Op: op, D: raw})
	})
	c.enqueue(outMsg{data: b})
}

// startGrace closes the connection with 4000 after Config.CloseGrace unless
// a successful Identify or Resume cancels it.
func (c *conn) startGrace(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.torn {
		return
	}
	if c.graceTimer != nil {
		c.graceTimer.Stop()
	}
	c.graceTimer = time.AfterFunc(c.s.cfg.CloseGrace, func() { c.closeWith(discord.CloseUnknownError, reason) })
}

// stopGraceLocked cancels startGrace. Requires c.mu.
func (c *conn) stopGraceLocked() {
	if c.graceTimer != nil {
		c.graceTimer.Stop()
		c.graceTimer = nil
	}
}

// writeLoop owns every write: control payloads first, then the attached
// session's dispatches in sequence order.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	defer func() {
		if c.zst != nil {
			_ = c.zst.Close()
		}
	}()
	batch := make([]entry, 0, 256)
	for {
		select {
		case m := <-c.ctrl:
			if !c.writeOut(m) {
				return
			}
			continue
		case <-c.done:
			return
		default:
		}
		if !c.closing.Load() {
			var overrun bool
			batch, overrun = c.fetch(batch[:0])
			if overrun {
				c.closeWith(discord.CloseUnknownError, "Client too slow: replay buffer overrun.")
				continue
			}
			if len(batch) > 0 {
				if !c.writeBatch(batch) {
					return
				}
				clear(batch)
				select {
				case c.progress <- struct{}{}:
				default:
				}
				continue
			}
		}
		select {
		case m := <-c.ctrl:
			if !c.writeOut(m) {
				return
			}
		case <-c.wake:
		case <-c.done:
			return
		}
	}
}

// fetch appends to dst the next dispatches of the attached session. It
// reports overrun when the next one was already evicted.
func (c *conn) fetch(dst []entry) ([]entry, bool) {
	c.mu.Lock()
	sess, next, gen := c.sess, c.nextSeq, c.gen
	c.mu.Unlock()
	if sess == nil {
		return dst, false
	}
	sess.mu.Lock()
	if sess.conn != c {
		sess.mu.Unlock()
		return dst, false
	}
	if next < sess.firstLocked() {
		sess.mu.Unlock()
		return dst, true
	}
	for next <= sess.seq && len(dst) < cap(dst) {
		dst = append(dst, sess.atLocked(next))
		next++
	}
	sess.mu.Unlock()
	c.mu.Lock()
	if c.gen != gen {
		dst = dst[:0] // detached meanwhile: these belong to a later Resume
	} else {
		c.nextSeq = next
	}
	c.mu.Unlock()
	return dst, false
}

// writeBatch writes dispatches; false means the connection failed.
func (c *conn) writeBatch(batch []entry) bool {
	for _, e := range batch {
		if c.closing.Load() {
			return true
		}
		c.counters.lastSeq.Store(e.seq) // before the write: a heartbeat may follow at once
		if err := c.writeMsg(e.data); err != nil {
			c.s.log.Debug("write failed", "conn", c.id, "err", err)
			c.abort()
			return false
		}
		c.counters.dispatches.Add(1)
	}
	return true
}

// writeOut writes a control payload or a close frame.
func (c *conn) writeOut(m outMsg) bool {
	if c.closeSent {
		return true
	}
	if m.closeCode != 0 {
		c.closeSent = true
		deadline := time.Now().Add(c.s.cfg.WriteTimeout)
		err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(m.closeCode, m.reason), deadline)
		c.mu.Lock()
		if !c.torn {
			c.forceTimer = time.AfterFunc(c.s.cfg.CloseTimeout, c.abort)
		}
		c.mu.Unlock()
		if err != nil {
			c.abort()
			return false
		}
		return true
	}
	if err := c.writeMsg(m.data); err != nil {
		c.s.log.Debug("write failed", "conn", c.id, "err", err)
		c.abort()
		return false
	}
	return true
}

// writeMsg writes one gateway payload with the connection's compression.
func (c *conn) writeMsg(data []byte) error {
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout)); err != nil {
		return fmt.Errorf("set write deadline: %w", err)
	}
	switch c.compress {
	case compressZlib:
		c.zbuf.Reset()
		if _, err := c.zw.Write(data); err != nil {
			return fmt.Errorf("zlib: %w", err)
		}
		if err := c.zw.Flush(); err != nil { // Z_SYNC_FLUSH: ends with 00 00 ff ff
			return fmt.Errorf("zlib flush: %w", err)
		}
		out := c.zbuf.Bytes()
		chunk := c.s.cfg.ZlibChunkSize
		if chunk <= 0 {
			chunk = len(out)
		}
		for len(out) > 0 {
			n := min(chunk, len(out))
			if err := c.ws.WriteMessage(websocket.BinaryMessage, out[:n]); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			out = out[n:]
		}
		return nil
	case compressZstd:
		c.zbuf.Reset()
		if _, err := c.zst.Write(data); err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
		if err := c.zst.Flush(); err != nil { // ends a block, not the frame
			return fmt.Errorf("zstd flush: %w", err)
		}
		if err := c.ws.WriteMessage(websocket.BinaryMessage, c.zbuf.Bytes()); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	}
	if c.payloadZlib.Load() {
		c.zbuf.Reset()
		zw, _ := zlib.NewWriterLevel(&c.zbuf, zlib.DefaultCompression)
		if _, err := zw.Write(data); err != nil {
			return fmt.Errorf("zlib: %w", err)
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("zlib: %w", err)
		}
		if err := c.ws.WriteMessage(websocket.BinaryMessage, c.zbuf.Bytes()); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, data); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// overLimit records a send and reports whether it exceeds SendLimit per
// SendWindow (a sliding window).
func (c *conn) overLimit(now time.Time) bool {
	lim := c.s.cfg.SendLimit
	if len(c.sends) < lim {
		c.sends = append(c.sends, now)
		return false
	}
	oldest := c.sends[c.sendIdx]
	c.sends[c.sendIdx] = now
	c.sendIdx = (c.sendIdx + 1) % lim
	return now.Sub(oldest) < c.s.cfg.SendWindow
}

// redact replaces the token of an Identify or Resume d.
func redact(op int, d json.RawMessage) json.RawMessage {
	if op != discord.OpIdentify && op != discord.OpResume {
		return d
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(d, &m) != nil {
		if bytes.Contains(d, []byte("token")) {
			return json.RawMessage(`"[undecodable, withheld]"`)
		}
		return d
	}
	if _, ok := m["token"]; !ok {
		return d
	}
	m["token"] = json.RawMessage(`"[redacted]"`)
	b, err := json.Marshal(m)
	if err != nil {
		return json.RawMessage(`"[withheld]"`)
	}
	return b
}

// handle processes one client payload.
func (c *conn) handle(data []byte) {
	now := time.Now()
	var p struct {
		Op *int            `json:"op"`
		D  json.RawMessage `json:"d"`
	}
	decErr := json.Unmarshal(data, &p)
	op := -1
	if decErr == nil && p.Op != nil {
		op = *p.Op
	}
	c.mu.Lock()
	shard, authed := c.shardID, c.authed
	c.mu.Unlock()
	var d json.RawMessage
	if decErr == nil {
		d = redact(op, append(json.RawMessage(nil), p.D...))
	}
	c.s.record(func(r *records) {
		r.received = append(r.received, Received{Conn: c.id, ShardID: shard, Time: now, Op: op, D: d, Size: len(data)})
	})
	switch {
	case c.overLimit(now):
		c.closeWith(discord.CloseRateLimited, "You are being rate limited.")
		return
	case len(data) > c.s.cfg.MaxPayloadSize, decErr != nil, p.Op == nil:
		c.closeWith(discord.CloseDecodeError, "Error while decoding payload.")
		return
	}
	switch op {
	case discord.OpHeartbeat:
		c.onHeartbeat(now, p.D)
	case discord.OpIdentify:
		c.onIdentify(now, p.D)
	case discord.OpResume:
		c.onResume(now, p.D)
	case discord.OpPresenceUpdate, discord.OpVoiceStateUpdate, discord.OpRequestGuildMembers, discord.OpRequestSoundboard, discord.OpRequestChannelInfo:
		if !authed {
			c.closeWith(discord.CloseNotAuthenticated, "Not authenticated.")
			return
		}
		if op == discord.OpRequestGuildMembers {
			c.onRequestMembers(p.D)
		}
	default:
		c.closeWith(discord.CloseUnknownOpcode, "Unknown opcode.")
	}
}

// onHeartbeat acknowledges a heartbeat and checks its d.
func (c *conn) onHeartbeat(now time.Time, d json.RawMessage) {
	rec := HeartbeatRecord{Conn: c.id, Time: now, LastSent: c.counters.lastSeq.Load()}
	if t := bytes.TrimSpace(d); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
		var v int64
		if err := json.Unmarshal(t, &v); err != nil {
			rec.Violation = "d is neither an integer nor null"
		} else {
			rec.Seq = &v
			switch {
			case v <= 0:
				rec.Violation = fmt.Sprintf("d is %d: sequence numbers start at 1, send null before the first dispatch", v)
			case v > rec.LastSent:
				rec.Violation = fmt.Sprintf("d is %d, ahead of the last sequence number sent (%d)", v, rec.LastSent)
			}
		}
	}
	c.mu.Lock()
	rec.ShardID = c.shardID
	rec.Acked = c.acks
	pending := c.pendingHB
	c.pendingHB = nil
	if c.hbTimer != nil {
		c.hbTimer.Reset(c.s.cfg.HeartbeatTimeout)
	}
	c.mu.Unlock()
	c.s.record(func(r *records) {
		r.heartbeats = append(r.heartbeats, rec)
		for _, i := range pending {
			r.hbRequests[i].Answered = true
			r.hbRequests[i].Delay = now.Sub(r.hbRequests[i].Sent)
		}
	})
	if rec.Acked {
		c.sendOp(discord.OpHeartbeatACK, nil)
	}
}

// identifyData is the d of an Identify.
type identifyData struct {
	Token      *string      `json:"token"`
	Intents    *json.Number `json:"intents"`
	Properties struct {
		OS      string `json:"os"`
		Browser string `json:"browser"`
		Device  string `json:"device"`
	} `json:"properties"`
	Shard          []int `json:"shard"`
	Compress       bool  `json:"compress"`
	LargeThreshold int   `json:"large_threshold"`
}

// onIdentify validates an Identify and starts a session.
func (c *conn) onIdentify(now time.Time, raw json.RawMessage) {
	s, cfg := c.s, &c.s.cfg
	rec := IdentifyRecord{Conn: c.id, Time: now}
	refuse := func(code int, reason string) {
		rec.CloseCode = code
		s.record(func(r *records) { r.identifies = append(r.identifies, rec) })
		c.closeWith(code, reason)
	}
	c.mu.Lock()
	authed := c.authed
	c.mu.Unlock()
	if authed {
		refuse(discord.CloseAlreadyAuthenticated, "Already authenticated.")
		return
	}
	var d identifyData
	if err := json.Unmarshal(raw, &d); err != nil {
		refuse(discord.CloseDecodeError, "Error while decoding payload.")
		return
	}
	rec.OS, rec.Browser, rec.Device = d.Properties.OS, d.Properties.Browser, d.Properties.Device
	rec.Compress, rec.LargeThreshold = d.Compress, d.LargeThreshold
	shard := d.Shard
	if shard == nil {
		shard = []int{0, 1}
	}
	if len(shard) == 2 {
		rec.ShardID, rec.ShardCount = shard[0], shard[1]
		rec.Bucket = max(shard[0], 0) % cfg.MaxConcurrency
	}
	if d.Intents != nil {
		rec.Intents, _ = strconv.ParseUint(d.Intents.String(), 10, 64)
	}
	if d.Token == nil || *d.Token != cfg.Token {
		refuse(discord.CloseAuthenticationFailed, "Authentication failed.")
		return
	}
	if len(shard) != 2 || shard[1] < 1 || shard[0] < 0 || shard[0] >= shard[1] ||
		(cfg.RequireShardCount && shard[1] != cfg.Shards) {
		refuse(discord.CloseInvalidShard, "Invalid shard.")
		return
	}
	if d.Intents == nil {
		refuse(discord.CloseInvalidIntents, "Invalid intent(s).")
		return
	}
	bits, err := strconv.ParseUint(d.Intents.String(), 10, 64)
	intents := discord.Intent(bits)
	if err != nil || intents&^discord.AllIntents() != 0 {
		refuse(discord.CloseInvalidIntents, "Invalid intent(s).")
		return
	}
	if intents&discord.PrivilegedIntents&^cfg.AllowedPrivilegedIntents != 0 {
		refuse(discord.CloseDisallowedIntents, "Disallowed intent(s).")
		return
	}
	guilds := s.world.guildsFor(shard[0], shard[1])
	if len(guilds) > cfg.MaxGuildsPerShard {
		refuse(discord.CloseShardingRequired, "Sharding required.")
		return
	}

	s.mu.Lock()
	if s.startRemainingLocked(now) <= 0 {
		s.mu.Unlock()
		refuse(discord.CloseAuthenticationFailed, "Authentication failed.") // the token was "reset"
		return
	}
	if last, ok := s.buckets[rec.Bucket]; ok && now.Sub(last) < cfg.IdentifyInterval {
		s.mu.Unlock()
		rec.InvalidSession = true
		s.record(func(r *records) { r.identifies = append(r.identifies, rec) })
		s.log.Debug("identify rate limited", "conn", c.id, "bucket", rec.Bucket)
		c.sendOp(discord.OpInvalidSession, false)
		c.startGrace("Invalid session.")
		return
	}
	s.buckets[rec.Bucket] = now
	s.startUsed++
	s.mu.Unlock()
	sess := newSession(shard[0], shard[1], intents, guilds, cfg.ReplayBuffer, cfg.SessionTTL)

	if d.Compress && c.compress == "" {
		c.payloadZlib.Store(true)
	}
	ready := s.readyData(sess)
	sess.mu.Lock()
	sess.conn, sess.connID = c, c.id
	c.mu.Lock()
	c.authed, c.sess, c.owned = true, sess, sess
	c.gen++
	c.nextSeq = 1
	c.shardID, c.shardCount = shard[0], shard[1]
	c.stopGraceLocked()
	c.mu.Unlock()
	sess.appendLocked("READY", ready)
	if intents&discord.IntentGuilds != 0 {
		for _, g := range guilds {
			sess.appendLocked("GUILD_CREATE", g.create)
		}
	}
	sess.mu.Unlock()
	// Published only now, so that no other dispatch can precede READY.
	s.mu.Lock()
	s.pruneLocked()
	s.sessions[sess.id] = sess
	s.mu.Unlock()
	rec.Accepted, rec.SessionID = true, sess.id
	s.record(func(r *records) {
		r.identifies = append(r.identifies, rec)
		cr := &r.conns[c.id-1]
		cr.ShardID, cr.ShardCount, cr.SessionID = shard[0], shard[1], sess.id
	})
	c.notify()
	s.log.Debug("session started", "conn", c.id, "shard", shard[0], "shards", shard[1], "guilds", len(guilds))
}

// readyData renders READY's d for a new session.
func (s *Server) readyData(sess *session) []byte {
	guilds := make([]map[string]any, 0, len(sess.guilds))
	for _, g := range sess.guilds {
		guilds = append(guilds, map[string]any{"id": g.idStr, "unavailable": true})
	}
	var appFlags uint64
	if s.cfg.AllowedPrivilegedIntents&discord.IntentGuildPresences != 0 {
		appFlags |= 1 << 13 // GATEWAY_PRESENCE_LIMITED
	}
	if s.cfg.AllowedPrivilegedIntents&discord.IntentGuildMembers != 0 {
		appFlags |= 1 << 15 // GATEWAY_GUILD_MEMBERS_LIMITED
	}
	if s.cfg.AllowedPrivilegedIntents&discord.IntentMessageContent != 0 {
		appFlags |= 1 << 19 // GATEWAY_MESSAGE_CONTENT_LIMITED
	}
	bot := s.world.bot
	b, err := json.Marshal(map[string]any{
		"v": s.cfg.APIVersion,
		"user": map[string]any{"id": bot.id, "username": bot.username, "global_name": bot.globalName,
			"discriminator": "0", "avatar": nil, "bot": true, "verified": true, "mfa_enabled": false,
			"flags": 0, "email": nil},
		"guilds":                  guilds,
		"session_id":              sess.id,
		"session_type":            "normal",
		"resume_gateway_url":      s.ResumeURL(),
		"shard":                   []int{sess.shardID, sess.shardCount},
		"application":             map[string]any{"id": s.world.appID, "flags": appFlags},
		"private_channels":        []any{},
		"relationships":           []any{},
		"presences":               []any{},
		"guild_join_requests":     []any{},
		"geo_ordered_rtc_regions": []string{"us-east", "us-central", "atlanta", "us-south", "newark"},
		"user_settings":           map[string]any{},
		"auth":                    map[string]any{},
		"_trace":                  []string{`["gateway-sim",{"micros":0.0}]`},
	})
	if err != nil {
		panic(fmt.Sprintf("simulator: rendering READY: %v", err)) // static shapes: cannot happen
	}
	return b
}

// onResume validates a Resume and replays the missed dispatches.
func (c *conn) onResume(now time.Time, raw json.RawMessage) {
	s, cfg := c.s, &c.s.cfg
	rec := ResumeRecord{Conn: c.id, Time: now, ViaResumeURL: c.viaResume}
	finish := func() { s.record(func(r *records) { r.resumes = append(r.resumes, rec) }) }
	refuse := func(code int, reason, why string) {
		rec.CloseCode, rec.Reason = code, why
		finish()
		c.closeWith(code, reason)
	}
	invalid := func(why string) {
		rec.InvalidSession, rec.Reason = true, why
		finish()
		s.log.Debug("resume refused", "conn", c.id, "why", why)
		c.sendOp(discord.OpInvalidSession, false)
		c.startGrace("Invalid session.")
	}
	c.mu.Lock()
	authed := c.authed
	c.mu.Unlock()
	if authed {
		refuse(discord.CloseAlreadyAuthenticated, "Already authenticated.", "already authenticated")
		return
	}
	var d struct {
		Token     *string `json:"token"`
		SessionID string  `json:"session_id"`
		Seq       *int64  `json:"seq"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		refuse(discord.CloseDecodeError, "Error while decoding payload.", "undecodable")
		return
	}
	rec.SessionID = d.SessionID
	if d.Seq != nil {
		rec.Seq = *d.Seq
	}
	if d.Token == nil || *d.Token != cfg.Token {
		refuse(discord.CloseAuthenticationFailed, "Authentication failed.", "bad token")
		return
	}
	s.mu.Lock()
	sess := s.sessions[d.SessionID]
	s.mu.Unlock()
	if sess == nil {
		invalid("unknown session")
		return
	}
	seq := rec.Seq
	sess.mu.Lock()
	if !sess.aliveLocked(now) {
		why := "session " + sess.deadReason
		sess.mu.Unlock()
		invalid(why)
		return
	}
	if seq > sess.seq || seq < 0 {
		sess.killLocked("resumed with an invalid seq")
		sess.mu.Unlock()
		refuse(discord.CloseInvalidSeq, "Invalid seq.", fmt.Sprintf("seq %d is beyond the session's %d", seq, sess.seq))
		return
	}
	if seq < sess.firstLocked()-1 {
		first := sess.firstLocked()
		sess.killLocked("resumed with a seq no longer buffered")
		sess.mu.Unlock()
		invalid(fmt.Sprintf("seq %d is no longer buffered (oldest %d)", seq, first))
		return
	}
	old := sess.conn
	if old != nil {
		old.mu.Lock()
		old.sess = nil
		old.gen++
		old.mu.Unlock()
	}
	rec.Accepted, rec.Replayed = true, int(sess.seq-seq)
	sess.conn, sess.connID, sess.expires = c, c.id, time.Time{}
	c.mu.Lock()
	c.authed, c.sess, c.owned = true, sess, sess
	c.gen++
	c.nextSeq = seq + 1
	c.shardID, c.shardCount = sess.shardID, sess.shardCount
	c.stopGraceLocked()
	c.mu.Unlock()
	c.counters.lastSeq.Store(seq)
	sess.appendLocked("RESUMED", []byte(`{"_trace":["[\"gateway-sim\",{\"micros\":0.0}]"]}`))
	sess.mu.Unlock()
	// Record before the writer sends the replay and RESUMED: a client that
	// saw RESUMED must find the resume in a Snapshot.
	finish()
	s.record(func(r *records) {
		cr := &r.conns[c.id-1]
		cr.ShardID, cr.ShardCount, cr.SessionID = sess.shardID, sess.shardCount, sess.id
	})
	c.notify()
	if old != nil && old != c {
		old.closeWith(discord.CloseUnknownError, "Session resumed on another connection.")
	}
	s.log.Debug("session resumed", "conn", c.id, "shard", sess.shardID, "replayed", rec.Replayed)
}

// onRequestMembers answers op 8 with one GUILD_MEMBERS_CHUNK per requested
// guild of the session.
func (c *conn) onRequestMembers(raw json.RawMessage) {
	var d struct {
		GuildID json.RawMessage `json:"guild_id"`
		Nonce   string          `json:"nonce"`
	}
	if json.Unmarshal(raw, &d) != nil {
		c.closeWith(discord.CloseDecodeError, "Error while decoding payload.")
		return
	}
	var ids []string
	if json.Unmarshal(d.GuildID, &ids) != nil {
		var one string
		if json.Unmarshal(d.GuildID, &one) != nil {
			c.closeWith(discord.CloseDecodeError, "Error while decoding payload.")
			return
		}
		ids = []string{one}
	}
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	if sess == nil {
		return
	}
	w := c.s.world
	for _, id := range ids {
		for _, g := range sess.guilds {
			if g.idStr != id {
				continue
			}
			members := []jsonMember{w.member(g, w.bot, true)}
			for _, m := range g.members {
				members = append(members, w.member(g, w.users[m], false))
			}
			chunk := map[string]any{"guild_id": g.idStr, "members": members, "chunk_index": 0,
				"chunk_count": 1, "not_found": []any{}}
			if d.Nonce != "" {
				chunk["nonce"] = d.Nonce
			}
			b, err := json.Marshal(chunk)
			if err == nil {
				sess.dispatch("GUILD_MEMBERS_CHUNK", b)
			}
		}
	}
}
