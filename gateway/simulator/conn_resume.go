package simulator

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

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
