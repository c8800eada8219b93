package gateway

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"time"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

// heartbeater sends heartbeats on one connection and detects zombies: a
// heartbeat due while the previous one has no ACK closes the connection
// with a resumable code.
type heartbeater struct {
	s        *Shard
	lc       *liveConn
	interval time.Duration
	ackC     chan struct{}
	nowC     chan struct{}
}

func newHeartbeater(s *Shard, lc *liveConn, interval time.Duration) *heartbeater {
	return &heartbeater{s: s, lc: lc, interval: interval, ackC: make(chan struct{}, 1), nowC: make(chan struct{}, 1)}
}

// acked reports an op 11 from the reader.
func (h *heartbeater) acked() {
	select {
	case h.ackC <- struct{}{}:
	default:
	}
}

// now asks for an immediate heartbeat (the server sent op 1).
func (h *heartbeater) now() {
	select {
	case h.nowC <- struct{}{}:
	default:
	}
}

func (h *heartbeater) run(ctx context.Context) {
	// The first beat is jittered so that many shards do not beat together.
	timer := time.NewTimer(time.Duration(rand.Float64() * float64(h.interval)))
	defer timer.Stop()
	acked := true
	var sentAt time.Time
	beat := func() bool {
		seq := h.s.Session().Seq
		var d any // null until the first dispatch
		if seq > 0 {
			d = seq
		}
		payload, _ := json.Marshal(map[string]any{"op": discord.OpHeartbeat, "d": d})
		// Note the time before writing: the ACK can arrive before the
		// write returns.
		acked = false
		sentAt = time.Now()
		return h.lc.write(ctx, discord.OpHeartbeat, payload, true) == nil
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.ackC:
			if !acked {
				acked = true
				now := time.Now()
				h.s.mu.Lock()
				h.s.status.Latency = now.Sub(sentAt)
				h.s.status.LastHeartbeatACK = now
				h.s.mu.Unlock()
				h.s.cfg.Metrics.pingMS(h.s.cfg.ID, float64(now.Sub(sentAt).Microseconds())/1000)
			}
		case <-h.nowC:
			if !beat() {
				return
			}
		case <-timer.C:
			if !acked {
				h.s.log.Warn("no heartbeat ACK since the last heartbeat: zombie connection, reconnecting")
				h.lc.close(discord.CloseResumable, "zombie connection")
				return
			}
			if !beat() {
				return
			}
			timer.Reset(h.interval)
		}
	}
}
