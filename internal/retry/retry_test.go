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
