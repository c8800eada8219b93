package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/spectacles-go/spectacles/gateway/discord"
	"github.com/spectacles-go/spectacles/internal/retry"
)

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
		if ctx.Err() != nil && errors.Is(context.Cause(ctx), ErrStoppedByOperator) {
			// The close code was the shard's own, sent to stay resumable.
			s.status.LastCloseCode, s.status.LastCloseReason = 0, ErrStoppedByOperator.Error()
		}
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

// inheritGuilds takes the guilds prev (a stopped shard of the same id)
// knew, for a session this shard resumes.
func (s *Shard) inheritGuilds(prev *Shard) {
	prev.mu.Lock()
	guilds := maps.Clone(prev.guilds)
	prev.mu.Unlock()
	s.mu.Lock()
	s.guilds = guilds
	s.mu.Unlock()
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
