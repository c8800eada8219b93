package gateway

import (
	"context"
	"sync"
	"time"
)

// sendLimiter keeps a connection within Discord's send limit (120 payloads
// per 60 s), reserving room for heartbeats: ordinary sends may use only
// limit-reserve slots of the window.
type sendLimiter struct {
	mu      sync.Mutex
	limit   int
	reserve int
	window  time.Duration
	sent    []time.Time // send times within the window, oldest first
	dropped uint64      // sends that have left sent, for sentAt's tokens
}

func newSendLimiter(limit, reserve int, window time.Duration) *sendLimiter {
	if reserve >= limit {
		reserve = limit - 1
	}
	return &sendLimiter{limit: limit, reserve: reserve, window: window}
}

// wait blocks until a payload may be sent and counts it. Heartbeats
// (priority) may use the reserved slots. The token it returns is for
// sentAt.
func (l *sendLimiter) wait(ctx context.Context, priority bool) (uint64, error) {
	for {
		delay, token := l.takeToken(time.Now(), priority)
		if delay == 0 {
			return token, nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

// sentAt moves the send of token to when its write finished: a send
// waits for the connection's write lock and for the write itself, and the
// server counts it when it arrives, later than wait counted it.
func (l *sendLimiter) sentAt(token uint64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if token < l.dropped {
		return
	}
	// Later sends count from no earlier either, which keeps sent in order
	// (and errs on the safe side).
	for i := token - l.dropped; i < uint64(len(l.sent)); i++ {
		if now.After(l.sent[i]) {
			l.sent[i] = now
		}
	}
}

// take counts a send and returns 0, or returns how long to wait.
func (l *sendLimiter) take(now time.Time, priority bool) time.Duration {
	d, _ := l.takeToken(now, priority)
	return d
}

// takeToken is take that also returns the send's token for sentAt.
func (l *sendLimiter) takeToken(now time.Time, priority bool) (time.Duration, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// The server counts arrivals when it reads them, after our sends
	// finished: keep a margin so that a send we think left the window has
	// left the server's too.
	window := l.window + max(l.window/50, 50*time.Millisecond)
	cut := 0
	for cut < len(l.sent) && now.Sub(l.sent[cut]) >= window {
		cut++
	}
	l.sent = l.sent[cut:]
	l.dropped += uint64(cut)
	allowed := l.limit - l.reserve
	if priority {
		allowed = l.limit
	}
	if len(l.sent) < allowed {
		l.sent = append(l.sent, now)
		return 0, l.dropped + uint64(len(l.sent)) - 1
	}
	// Wait until enough of the oldest sends leave the window.
	oldest := l.sent[len(l.sent)-allowed]
	return oldest.Add(window).Sub(now) + time.Millisecond, 0
}

// used reports how many sends the current window holds.
func (l *sendLimiter) used(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, t := range l.sent {
		if now.Sub(t) < l.window {
			n++
		}
	}
	return n
}

// IdentifyLimiter decides when a shard may identify. Discord allows
// max_concurrency identifies per 5 s, one per bucket (shard_id %
// max_concurrency).
type IdentifyLimiter interface {
	// Wait blocks until shard may send Identify, and counts that identify.
	Wait(ctx context.Context, shard int) error
}

// LocalIdentifyLimiter spaces identifies within one process: one per
// bucket per interval, lower shard ids of a bucket first, and no more than
// the session start limit allows.
type LocalIdentifyLimiter struct {
	maxConcurrency int
	interval       time.Duration

	mu        sync.Mutex
	next      map[int]time.Time    // per bucket: earliest next identify
	waiting   map[int]map[int]bool // per bucket: shards waiting
	changed   chan struct{}        // closed when waiting shrinks
	remaining int                  // identifies left before resetAt; <0 = unknown
	resetAt   time.Time
}

// WithIdentifyMargin lengthens an identify interval by 5% (at least 10 ms):
// the slot is taken before connecting, and connections take different
// times, so identifies could otherwise reach Discord closer together than
// the interval. For Discord's 5 s this gives spec-tacles/gateway's 5.25 s.
// IdentifyLimiters of other packages (gateway/redisgw) use it too.
func WithIdentifyMargin(interval time.Duration) time.Duration {
	return interval + max(interval/20, 10*time.Millisecond)
}

// NewLocalIdentifyLimiter makes a limiter for max_concurrency buckets, one
// identify per bucket per interval (Discord: 5 s). remaining and resetAfter
// come from /gateway/bot's session_start_limit; remaining < 0 means
// unknown.
func NewLocalIdentifyLimiter(maxConcurrency int, interval time.Duration, remaining int, resetAfter time.Duration) *LocalIdentifyLimiter {
	if maxConcurrency < 1 {
		maxConcurrency = 1
	}
	return &LocalIdentifyLimiter{
		maxConcurrency: maxConcurrency,
		interval:       WithIdentifyMargin(interval),
		next:           map[int]time.Time{},
		waiting:        map[int]map[int]bool{},
		changed:        make(chan struct{}),
		remaining:      remaining,
		resetAt:        time.Now().Add(resetAfter),
	}
}

// Wait implements IdentifyLimiter.
func (l *LocalIdentifyLimiter) Wait(ctx context.Context, shard int) error {
	bucket := shard % l.maxConcurrency
	l.mu.Lock()
	if l.waiting[bucket] == nil {
		l.waiting[bucket] = map[int]bool{}
	}
	l.waiting[bucket][shard] = true
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.waiting[bucket], shard)
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}()
	for {
		l.mu.Lock()
		delay, changed := l.tryLocked(time.Now(), bucket, shard)
		l.mu.Unlock()
		if delay == 0 {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-changed:
			t.Stop()
		case <-t.C:
		}
	}
}

// tryLocked grants the identify (returning 0) or says how long to wait at
// most before trying again.
func (l *LocalIdentifyLimiter) tryLocked(now time.Time, bucket, shard int) (time.Duration, chan struct{}) {
	if l.remaining == 0 {
		if now.Before(l.resetAt) {
			return l.resetAt.Sub(now), l.changed
		}
		l.remaining = -1 // a new allowance of unknown size
	}
	for other := range l.waiting[bucket] {
		if other < shard {
			return time.Hour, l.changed // a lower shard goes first
		}
	}
	if at := l.next[bucket]; now.Before(at) {
		return at.Sub(now), l.changed
	}
	l.next[bucket] = now.Add(l.interval)
	if l.remaining > 0 {
		l.remaining--
	}
	return 0, nil
}
