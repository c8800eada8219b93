// Package retry paces the reconnecting loops of the broker drivers:
// exponentially growing delays with jitter, and a sleep that ends with its
// context.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delays of a Backoff.
const (
	Min = 50 * time.Millisecond
	Max = 5 * time.Second
)

// Backoff yields exponentially growing delays with jitter, from Min to Max.
// The zero value is ready to use.
type Backoff struct{ cur time.Duration }

// Next returns the next delay: the current step, halved at random.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = Min
	} else {
		b.cur = min(b.cur*2, Max)
	}
	half := b.cur / 2
	return half + rand.N(half+1)
}

// Reset starts again from the smallest delay.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits d; it returns false when ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
