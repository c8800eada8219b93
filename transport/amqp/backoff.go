package amqp

import (
	"context"
	"math/rand/v2"
	"time"
)

// Retry delays of the reconnecting loops.
const (
	backoffMin = 50 * time.Millisecond
	backoffMax = 5 * time.Second
)

// backoff yields exponentially growing delays with jitter, from backoffMin
// to backoffMax. The zero value is ready to use.
type backoff struct{ cur time.Duration }

// next returns the next delay: the current step, halved at random.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = backoffMin
	} else {
		b.cur = min(b.cur*2, backoffMax)
	}
	half := b.cur / 2
	return half + rand.N(half+1)
}

// reset starts again from the smallest delay.
func (b *backoff) reset() { b.cur = 0 }

// sleepCtx waits d; it returns false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
