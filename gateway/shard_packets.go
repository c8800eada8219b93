package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

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
	p, err := r.parse(raw)
	if err != nil {
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
		p, err := r.parse(raw)
		if err != nil {
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
			if g, err := parseGuildRef(p.D); err == nil && g.ID != "" {
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

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("gateway: encoding a fixed payload: %v", err)) // only plain maps reach here
	}
	return b
}
