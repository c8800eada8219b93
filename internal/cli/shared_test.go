package cli

import (
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
