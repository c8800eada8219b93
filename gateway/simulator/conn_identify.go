package simulator

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

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
