package simulator

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway/discord"
)

// Fault injections act on the newest open connection identified or resumed
// as the given shard id (whatever its shard count), and return an error
// wrapping ErrNoConnection when there is none.

// onNewest runs f on shard's newest connection, or returns the error
// wrapping ErrNoConnection when there is none.
func (s *Server) onNewest(shard int, f func(c *conn)) error {
	c, err := s.newestConn(shard)
	if err != nil {
		return err
	}
	f(c)
	return nil
}

// Reconnect sends op 7 to shard's connection. The session is detached at
// once: later dispatches wait in its replay buffer for a Resume. If the
// client keeps the connection open for Config.CloseGrace, the server closes
// it with 4000.
func (s *Server) Reconnect(shard int) error {
	return s.onNewest(shard, func(c *conn) {
		c.detach(false)
		c.sendOp(discord.OpReconnect, nil)
		c.startGrace("Reconnect requested.")
		s.log.Info("fault: op 7 reconnect", "shard", shard, "conn", c.id)
	})
}

// InvalidateSession sends op 9 with d = resumable to shard's connection.
// The connection becomes unauthenticated (it may Identify or Resume again
// within Config.CloseGrace, after which the server closes it with 4000).
// With resumable false the session ends; with true it stays resumable.
func (s *Server) InvalidateSession(shard int, resumable bool) error {
	return s.onNewest(shard, func(c *conn) {
		c.detach(!resumable)
		c.mu.Lock()
		c.authed = false
		c.mu.Unlock()
		c.sendOp(discord.OpInvalidSession, resumable)
		c.startGrace("Invalid session.")
		s.log.Info("fault: op 9", "shard", shard, "conn", c.id, "resumable", resumable)
	})
}

// DropConnection closes shard's TCP connection without a close frame. The
// session stays resumable.
func (s *Server) DropConnection(shard int) error {
	return s.onNewest(shard, func(c *conn) {
		s.log.Info("fault: abrupt close", "shard", shard, "conn", c.id)
		c.drop()
	})
}

// CloseConnection closes shard's connection with a close frame carrying
// code and reason (at most 123 bytes). 4007 and 4009 end the session; any
// other code leaves it resumable.
func (s *Server) CloseConnection(shard, code int, reason string) error {
	if len(reason) > 123 {
		return fmt.Errorf("simulator: close reason of %d bytes: at most 123", len(reason))
	}
	return s.onNewest(shard, func(c *conn) {
		s.log.Info("fault: close", "shard", shard, "conn", c.id, "code", code)
		c.closeWith(code, reason)
	})
}

// SetHeartbeatACKs stops (false) or restarts (true) the op 11 answers to
// shard's heartbeats, to make the connection look like a zombie.
func (s *Server) SetHeartbeatACKs(shard int, enabled bool) error {
	return s.onNewest(shard, func(c *conn) {
		c.mu.Lock()
		c.acks = enabled
		c.mu.Unlock()
		s.log.Info("fault: heartbeat ACKs", "shard", shard, "conn", c.id, "enabled", enabled)
	})
}

// RequestHeartbeat sends a server op 1 to shard's connection. The next
// client heartbeat answers it (Snapshot.HeartbeatRequests has the delay).
func (s *Server) RequestHeartbeat(shard int) error {
	return s.onNewest(shard, func(c *conn) {
		now := time.Now()
		var idx int
		s.record(func(r *records) {
			r.hbRequests = append(r.hbRequests, HeartbeatRequest{Conn: c.id, ShardID: shard, Sent: now})
			idx = len(r.hbRequests) - 1
		})
		c.mu.Lock()
		c.pendingHB = append(c.pendingHB, idx)
		c.mu.Unlock()
		c.sendOp(discord.OpHeartbeat, nil)
	})
}

// ReconnectBeforeHello makes the next new connection receive op 7 instead
// of Hello. Each call affects one more connection.
func (s *Server) ReconnectBeforeHello() {
	s.mu.Lock()
	s.op7First++
	s.mu.Unlock()
}

// ExpireSession ends a session as if its TTL had passed: a later Resume
// gets op 9 d:false. Its connection, if any, is left open but receives
// nothing more.
func (s *Server) ExpireSession(sessionID string) error {
	s.mu.Lock()
	sess := s.sessions[sessionID]
	s.mu.Unlock()
	if sess == nil {
		return fmt.Errorf("%w: %q", ErrNoSession, sessionID)
	}
	sess.mu.Lock()
	if c := sess.conn; c != nil {
		sess.conn = nil
		c.mu.Lock()
		c.sess = nil
		c.gen++
		c.mu.Unlock()
	}
	sess.killLocked("expired")
	sess.mu.Unlock()
	return nil
}

// detach detaches c from its session, ending the session when kill is set.
func (c *conn) detach(kill bool) {
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	if sess == nil {
		return
	}
	sess.mu.Lock()
	sess.detachLocked(c, time.Now())
	if kill {
		sess.killLocked("invalidated by op 9")
	}
	c.mu.Lock()
	c.sess = nil
	c.gen++
	c.mu.Unlock()
	sess.mu.Unlock()
}

// validEventName reports whether t can be an event name: upper-case
// letters, digits and underscores.
func validEventName(t string) bool {
	if t == "" {
		return false
	}
	for _, r := range t {
		if (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '_' {
			return false
		}
	}
	return true
}

// marshalD renders a dispatch's d: json.RawMessage and []byte are taken as
// JSON text, anything else is marshalled.
func marshalD(d any) ([]byte, error) {
	var b []byte
	switch v := d.(type) {
	case json.RawMessage:
		b = v
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(d); err != nil {
			return nil, fmt.Errorf("simulator: marshalling d: %w", err)
		}
		return b, nil
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("simulator: d is not valid JSON")
	}
	return append([]byte(nil), b...), nil
}

// Dispatch injects an op 0 dispatch t with payload d into every live
// session that owns guildID by (guild_id >> 22) % shard_count, connected or
// waiting for a Resume. guildID is a snowflake string; it need not be a
// simulated guild. d may be a json.RawMessage, JSON []byte or any value
// json.Marshal accepts. Intents are not checked. It returns an error
// wrapping ErrNoSession when no session owns the guild.
func (s *Server) Dispatch(guildID, t string, d any) error {
	id, err := core.ParseSnowflake(guildID)
	if err != nil {
		return fmt.Errorf("simulator: dispatch guild id: %w", err)
	}
	n, err := dispatchTo(s.sessionsFor(id), t, d)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w owns guild %s", ErrNoSession, guildID)
	}
	return nil
}

// DispatchShard injects a dispatch into every live session with the given
// shard id (for events without a guild, such as direct messages, which go
// to shard 0). It returns an error wrapping ErrNoSession when there is none.
func (s *Server) DispatchShard(shard int, t string, d any) error {
	var onShard []*session
	for _, sess := range s.liveSessions() {
		if sess.shardID == shard {
			onShard = append(onShard, sess)
		}
	}
	n, err := dispatchTo(onShard, t, d)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w for shard %d", ErrNoSession, shard)
	}
	return nil
}

// dispatchTo checks event name t and payload d and injects the dispatch
// into each of sessions, returning how many took it.
func dispatchTo(sessions []*session, t string, d any) (int, error) {
	if !validEventName(t) {
		return 0, fmt.Errorf("simulator: dispatch event name %q: want A-Z, 0-9 and _", t)
	}
	b, err := marshalD(d)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, sess := range sessions {
		if sess.dispatch(t, b) {
			n++
		}
	}
	return n, nil
}

// Events returns a copy of a session's replay buffer, oldest first.
func (s *Server) Events(sessionID string) ([]Event, error) {
	s.mu.Lock()
	sess := s.sessions[sessionID]
	s.mu.Unlock()
	if sess == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoSession, sessionID)
	}
	return sess.events(), nil
}

// GuildInfo describes a simulated guild.
type GuildInfo struct {
	// ID is the guild's snowflake.
	ID string
	// Name is its name.
	Name string
	// ChannelIDs are its text channels.
	ChannelIDs []string
}

// Guilds returns the simulated guilds in generation order; with the
// configured shard count, guild i belongs to shard i % Shards.
func (s *Server) Guilds() []GuildInfo {
	out := make([]GuildInfo, 0, len(s.world.guilds))
	for _, g := range s.world.guilds {
		out = append(out, GuildInfo{ID: g.idStr, Name: g.name, ChannelIDs: append([]string(nil), g.channels...)})
	}
	return out
}

// GuildsForShard returns the ids of the simulated guilds that shard id of
// count receives.
func (s *Server) GuildsForShard(id, count int) []string {
	var out []string
	for _, g := range s.world.guildsFor(id, count) {
		out = append(out, g.idStr)
	}
	return out
}

// BotUserID returns the simulated bot user's id (READY's user.id).
func (s *Server) BotUserID() string { return s.world.bot.id }

// ApplicationID returns READY's application.id.
func (s *Server) ApplicationID() string { return s.world.appID }
