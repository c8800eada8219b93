package cli

import (
	"context"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

// stopCleanly stops the consume command c and fails t unless it exited 0.
func (c *consumer) stopCleanly(t *testing.T) {
	t.Helper()
	if r := c.stop(); r.code != 0 {
		t.Fatalf("consume exit %d, stderr %q", r.code, r.stderr)
	}
}

// wantPending checks that group has exactly want messages of event pending;
// why says what a different count means.
func wantPending(t *testing.T, rc goredis.UniversalClient, event, group string, want int64, why string) {
	t.Helper()
	if n := pending(t, rc, event, group); n != want {
		t.Errorf("pending = %d, want %d: %s", n, want, why)
	}
}

// respondUntilDeadLetter runs spectacles respond with args until a message
// of event is dead-lettered, stops it, fails t unless it exited 0, and
// returns the dead letter's reason.
func respondUntilDeadLetter(t *testing.T, event string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan result, 1)
	go func() {
		done <- invocation{}.run(ctx, append([]string{"respond"}, args...)...)
	}()
	reason := deadLetterReason(t, event)
	cancel()
	if r := <-done; r.code != 0 {
		t.Errorf("respond exit %d, stderr %q", r.code, r.stderr)
	}
	return reason
}
