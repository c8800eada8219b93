package gateway

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

// connGoroutines returns the stacks of goroutines a shard's connection
// started (heartbeater, closer) that are still running.
func connGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var left []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "gateway.(*heartbeater).run") || strings.Contains(g, "gateway.(*Shard).connect.func") {
			left = append(left, g)
		}
	}
	return strings.Join(left, "\n\n")
}

func TestShardJoinsConnectionGoroutinesBeforeLeavingIt(t *testing.T) {
	sim := startSim(t, nil)
	s, err := NewShard(ShardConfig{
		ID: 0, Count: 1, Token: sim.Token(), Intents: 1, URL: sim.GatewayURL(),
		Identify: NewLocalIdentifyLimiter(1, 20*time.Millisecond, -1, 0), Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		closed := make(chan error, 1)
		go func() {
			deadline := time.Now().Add(15 * time.Second)
			for s.Status().State != Ready {
				if time.Now().After(deadline) {
					closed <- context.DeadlineExceeded
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			closed <- sim.CloseConnection(0, discord.CloseResumable, "test")
		}()
		out := s.connect(context.Background())
		if left := connGoroutines(); left != "" {
			t.Fatalf("connection %d ended (%s) with its goroutines still running:\n%s", i, out.reason, left)
		}
		if err := <-closed; err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		s.setState(Reconnecting)
	}
}
