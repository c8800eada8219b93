package retry

import (
	"context"
	"testing"
	"time"
)

func TestBackoffGrowsWithinBounds(t *testing.T) {
	var b Backoff
	prevCeiling := time.Duration(0)
	for i := range 20 {
		d := b.Next()
		ceiling := min(Min<<i, Max)
		if d < ceiling/2 || d > ceiling {
			t.Fatalf("step %d: %s outside [%s, %s]", i, d, ceiling/2, ceiling)
		}
		if ceiling < prevCeiling {
			t.Fatal("the ceiling shrank")
		}
		prevCeiling = ceiling
	}
	b.Reset()
	if d := b.Next(); d > Min {
		t.Errorf("after Reset: %s", d)
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep returned true for a cancelled context")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep returned false")
	}
}

func TestBackoffWithOwnBoundsHasEqualJitter(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 2 * time.Minute}
	for i := range 20 {
		step := min(time.Second<<i, 2*time.Minute)
		for range 50 {
			c := b
			d := c.Next()
			if d < step/2 || d > step {
				t.Fatalf("step %d: %s outside [%s, %s]", i, d, step/2, step)
			}
		}
		b.Next()
	}
	if b.cur != 2*time.Minute {
		t.Errorf("the step grew to %s, want the Max", b.cur)
	}
	b.Reset()
	if d := b.Next(); d < 500*time.Millisecond || d > time.Second {
		t.Errorf("after Reset: %s", d)
	}
}

func TestBackoffMaxBelowMinUsesMin(t *testing.T) {
	b := Backoff{Min: time.Minute, Max: time.Second}
	for range 5 {
		if d := b.Next(); d < 30*time.Second || d > time.Minute {
			t.Fatalf("%s outside [30s, 1m]", d)
		}
	}
}

func TestJitterIsFull(t *testing.T) {
	low, high := false, false
	for range 2000 {
		d := Jitter(100 * time.Millisecond)
		if d < 0 || d > 100*time.Millisecond {
			t.Fatalf("%s outside [0, 100ms]", d)
		}
		low = low || d < 25*time.Millisecond
		high = high || d > 75*time.Millisecond
	}
	if !low || !high {
		t.Errorf("2000 draws did not cover [0, 100ms]: low %v high %v", low, high)
	}
	if Jitter(0) != 0 || Jitter(-time.Second) != 0 {
		t.Error("Jitter of a non-positive duration is not 0")
	}
}
