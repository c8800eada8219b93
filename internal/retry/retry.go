// Package retry paces reconnecting and retrying loops (the broker drivers,
// the gateway's shards, its dispatch queue and identify coordination):
// exponentially growing delays with "equal jitter" (each delay is drawn
// uniformly from the upper half of the current step), full jitter for a
// single short wait, and a sleep that ends with its context.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Default bounds of a Backoff.
const (
	Min = 50 * time.Millisecond
	Max = 5 * time.Second
)

// Backoff yields exponentially growing delays with equal jitter: the step
// starts at Min and doubles with each Next up to Max, and each delay is
// drawn uniformly from [step/2, step]. The zero value uses the package's
// Min and Max.
type Backoff struct {
	// Min is the first step; 0 means the package's Min.
	Min time.Duration
	// Max bounds the step; 0 (or less than Min) means the larger of the
	// package's Max and Min.
	Max time.Duration

	cur time.Duration
}

func (b *Backoff) bounds() (lo, hi time.Duration) {
	lo, hi = b.Min, b.Max
	if lo <= 0 {
		lo = Min
	}
	if hi < lo {
		hi = max(Max, lo)
	}
	return lo, hi
}

// Next returns the next delay: the current step, halved at random (a
// delay in [step/2, step]), and doubles the step for the next call.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.bounds()
	if b.cur == 0 {
		b.cur = lo
	} else if b.cur < hi {
		b.cur = min(b.cur*2, hi)
	}
	half := b.cur / 2
	return half + rand.N(b.cur-half+1)
}

// Reset starts again from the smallest delay.
func (b *Backoff) Reset() { b.cur = 0 }

// Jitter returns a delay drawn uniformly from [0, d] (full jitter), for a
// wait that should be short but not taken by many callers at once; 0 for
// d <= 0.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

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
