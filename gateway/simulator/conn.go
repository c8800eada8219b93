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
	c.markServerClose(CloseRecord{Code: websocket.CloseAbnormalClosure, Abrupt: true})
	c.abort()
}

// markServerClose marks c as closed by the server, abruptly when
// rec.Abrupt is set, and records rec; it reports false, changing nothing,
// when c was already torn down or closed by the server.
func (c *conn) markServerClose(rec CloseRecord) bool {
	c.mu.Lock()
	if c.torn || c.abruptByServer || c.serverClose != 0 {
		c.mu.Unlock()
		return false
	}
	if rec.Abrupt {
		c.abruptByServer = true
	} else {
		c.serverClose = rec.Code
	}
	c.closing.Store(true)
	rec.Conn, rec.ShardID, rec.ByServer = c.id, c.shardID, true
	c.mu.Unlock()
	c.s.record(func(r *records) {
		rec.Time = time.Now()
		r.closes = append(r.closes, rec)
	})
	return true
}

// closeWith sends a close frame (once) and records it.
func (c *conn) closeWith(code int, reason string) {
	if !c.markServerClose(CloseRecord{Code: code, Reason: reason}) {
		return
	}
	c.s.log.Debug("closing connection", "conn", c.id, "code", code, "reason", reason)
	c.enqueue(outMsg{closeCode: code, reason: reason})
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
