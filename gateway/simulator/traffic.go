package simulator

import (
	"context"
	"math"
	"math/rand/v2"
	"time"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

// runTraffic generates synthetic dispatches at the configured rate until
// ctx is done.
func (s *Server) runTraffic(ctx context.Context) {
	rng := rand.New(rand.NewPCG(s.cfg.Seed+1, s.cfg.Seed^0x9e3779b97f4a7c15))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	sleep := func(d time.Duration) bool {
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return false
		case <-s.rateKick:
			return true
		case <-timer.C:
			return true
		}
	}
	var (
		start    time.Time
		produced int64
		lastRate float64
	)
	for ctx.Err() == nil {
		rate := math.Float64frombits(s.rate.Load())
		switch {
		case rate == 0:
			start = time.Time{}
			if !sleep(time.Second) {
				return
			}
			continue
		case rate < 0 || math.IsInf(rate, 1):
			start = time.Time{}
			if !s.emitFlat(ctx, rng) && !sleep(5*time.Millisecond) {
				return
			}
			continue
		}
		now := time.Now()
		if start.IsZero() || rate != lastRate {
			start, produced, lastRate = now, 0, rate
		}
		due := int64(rate*now.Sub(start).Seconds()) - produced
		if due <= 0 {
			next := start.Add(time.Duration(float64(produced+1) / rate * float64(time.Second)))
			if !sleep(min(max(time.Until(next), time.Millisecond), 100*time.Millisecond)) {
				return
			}
			continue
		}
		if float64(due) > max(rate, 100) { // more than a second behind: do not burst
			start, produced, due = now, 0, 1
		}
		for range due {
			s.emitRandom(rng)
		}
		produced += due
	}
}

// pickEvent returns a random synthetic event type.
func (s *Server) pickEvent(rng *rand.Rand) string {
	return s.cfg.TrafficEvents[rng.IntN(len(s.cfg.TrafficEvents))]
}

// emitRandom generates one event in a random simulated guild and routes it
// to the sessions that own the guild (none: dropped, like Discord would).
func (s *Server) emitRandom(rng *rand.Rand) {
	if len(s.world.guilds) == 0 {
		return
	}
	g := s.world.guilds[rng.IntN(len(s.world.guilds))]
	targets := s.sessionsFor(g.id)
	if len(targets) == 0 {
		return
	}
	s.deliver(context.Background(), false, rng, g, targets)
}

// emitFlat generates one event as fast as possible: in a random guild of a
// random connected session, waiting while connected clients lag. It reports
// false when no session is connected.
func (s *Server) emitFlat(ctx context.Context, rng *rand.Rand) bool {
	live := s.liveSessions()
	var withGuilds []*session
	for _, ss := range live {
		if _, c := ss.lag(); c != nil && len(ss.guilds) > 0 {
			withGuilds = append(withGuilds, ss)
		}
	}
	if len(withGuilds) == 0 {
		return false
	}
	ss := withGuilds[rng.IntN(len(withGuilds))]
	g := ss.guilds[rng.IntN(len(ss.guilds))]
	s.deliver(ctx, true, rng, g, s.sessionsFor(g.id))
	return true
}

// deliver renders one random event of guild g and appends it to each
// target that has the intent. With a ctx it first waits until the
// target's connection has room (backpressure).
func (s *Server) deliver(ctx context.Context, wait bool, rng *rand.Rand, g *guild, targets []*session) {
	syn, err := s.world.generate(rng, s.pickEvent(rng), g)
	if err != nil {
		s.log.Error("synthetic event", "err", err)
		return
	}
	for _, ss := range targets {
		if ss.intents&syn.need == 0 {
			continue
		}
		d := syn.d
		if syn.noContent != nil && ss.intents&discord.IntentMessageContent == 0 {
			d = syn.noContent
		}
		if wait && !s.waitRoom(ctx, ss) {
			return
		}
		ss.dispatch(syn.t, d)
	}
}

// waitRoom waits until the session's connection has fewer than half a
// replay buffer of unsent dispatches. It returns false when ctx is done.
func (s *Server) waitRoom(ctx context.Context, ss *session) bool {
	limit := int64(max(s.cfg.ReplayBuffer/2, 1))
	for {
		lag, c := ss.lag()
		if c == nil || lag < limit {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-c.progress:
		case <-c.done:
			return true
		case <-time.After(10 * time.Millisecond):
		}
	}
}
