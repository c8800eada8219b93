package cli

import (
	"context"
	"fmt"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

// bulkSetup adds n messages to a new event; consumer "w1" of a new group
// reads the first half, "w2" the rest, without acknowledging.
func bulkSetup(t *testing.T, n int) (c goredis.UniversalClient, ev, group string) {
	t.Helper()
	ev, group = unique("bulk"), unique("g")
	c = redisClient(t, ev)
	ctx := context.Background()
	pipe := c.Pipeline()
	for i := range n {
		pipe.XAdd(ctx, &goredis.XAddArgs{Stream: ev, Values: []any{"data", fmt.Sprintf(`{"i":%d}`, i)}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.XGroupCreate(ctx, ev, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		consumer string
		count    int
	}{{"w1", n / 2}, {"w2", n - n/2}} {
		if err := c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: r.consumer, Streams: []string{ev, ">"}, Count: int64(r.count)}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	return c, ev, group
}

// pendingOf counts the pending messages of each consumer.
func pendingOf(t *testing.T, c goredis.UniversalClient, ev, group string) map[string]int64 {
	t.Helper()
	sum, err := c.XPending(context.Background(), ev, group).Result()
	if err != nil {
		t.Fatal(err)
	}
	return sum.Consumers
}

func TestBulkCommandsByRule(t *testing.T) {
	c, ev, group := bulkSetup(t, 2400) // more than one batch of each consumer
	ctx := context.Background()

	claimed := jsonOut[map[string]any](t, cli(t, "claim", ev, group, "--all", "--consumer", "w1", "--to", "w3", "--json"))
	if claimed["claimed_count"] != 1200.0 || claimed["consumer"] != "w3" || claimed["stream"] != ev || claimed["group"] != group {
		t.Fatalf("claim --all: %v", claimed)
	}
	if p := pendingOf(t, c, ev, group); p["w1"] != 0 || p["w3"] != 1200 || p["w2"] != 1200 {
		t.Fatalf("after claim --all --consumer w1 --to w3: %v", p)
	}

	// Ten of w2's messages delivered often; --min-deliveries picks them.
	ps := c.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: ev, Group: group, Consumer: "w2", Start: "-", End: "+", Count: 10}).Val()
	args := []any{"XCLAIM", ev, group, "w2", 0}
	for _, p := range ps {
		args = append(args, p.ID)
	}
	if err := c.Do(ctx, append(args, "RETRYCOUNT", 9, "JUSTID")...).Err(); err != nil {
		t.Fatal(err)
	}
	r := cli(t, "dlq", "move", ev, group, "--all", "--min-deliveries", "5", "--reason", "poison")
	if r.code != 0 || !strings.Contains(r.stdout, "moved 10 to "+ev+":dlq (deliveries ≥ 5)") {
		t.Fatalf("dlq move --all: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := c.XLen(ctx, ev+":dlq").Val(); n != 10 {
		t.Fatalf("%d dead letters, want 10", n)
	}
	if p := pendingOf(t, c, ev, group); p["w2"] != 1190 {
		t.Fatalf("after dlq move --all: %v", p)
	}

	acked := jsonOut[map[string]any](t, cli(t, "ack", ev, group, "--all", "--consumer", "w2", "--json"))
	if acked["acked_count"] != 1190.0 {
		t.Fatalf("ack --all --consumer w2: %v", acked)
	}
	r = cli(t, "ack", ev, group, "--all")
	if r.code != 0 || !strings.Contains(r.stdout, "acknowledged 1200 (all pending)") {
		t.Fatalf("ack --all: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := c.XPending(ctx, ev, group).Val().Count; n != 0 {
		t.Fatalf("%d pending after ack --all", n)
	}
	if r := cli(t, "ack", ev, group, "--all", "--min-idle", "1h"); r.code != 0 || !strings.Contains(r.stdout, "acknowledged 0 (idle ≥ 1h0m0s)") {
		t.Fatalf("ack --all with nothing to do: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestBulkCommandsRefuseMixedSelections(t *testing.T) {
	for _, args := range [][]string{
		{"claim", "S", "G", "--all"},                                       // no --to
		{"claim", "S", "G", "1-1", "--all", "--to", "w"},                   // ids and --all
		{"ack", "S", "G", "1-1", "--consumer", "w1"},                       // a rule without --all
		{"dlq", "move", "S", "G", "1-1", "--min-idle", "1m"},               // a rule without --all
		{"dlq", "move", "S", "G", "--min-deliveries", "3"},                 // no ids, no --all
		{"claim", "S", "G", "--all", "--to", "w", "--min-deliveries", "x"}, // not a number
	} {
		r := cli(t, args...)
		if r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d (usage)\n%s", args, r.code, exitUsage, r.stderr)
		}
	}
}
