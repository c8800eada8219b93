package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// pendingSetup publishes n messages to a new event and has consumer
// "worker" of a new group read them without acknowledging.
func pendingSetup(t *testing.T, n int) (c goredis.UniversalClient, ev, group string, ids []string) {
	t.Helper()
	ev, group = unique("inspect"), unique("g")
	c = redisClient(t, ev)
	ctx := context.Background()
	for i := range n {
		r := cli(t, "publish", ev, fmt.Sprintf(`{"i":%d}`, i))
		if r.code != 0 {
			t.Fatalf("publish: %s", r.stderr)
		}
		ids = append(ids, strings.TrimSpace(r.stdout))
	}
	if err := c.XGroupCreate(ctx, ev, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: "worker", Streams: []string{ev, ">"}, Count: int64(n)}).Err(); err != nil {
		t.Fatal(err)
	}
	return c, ev, group, ids
}

func jsonOut[T any](t *testing.T, r result) T {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var v T
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("output %q: %v", r.stdout, err)
	}
	return v
}

func TestInspectCommands(t *testing.T) {
	c, ev, group, ids := pendingSetup(t, 5)
	ctx := context.Background()

	streams := jsonOut[[]map[string]any](t, cli(t, "streams", "--json"))
	found := false
	for _, s := range streams {
		if s["stream"] == ev {
			found = s["length"] == float64(5) && s["group_count"] == float64(1)
		}
	}
	if !found {
		t.Errorf("streams --json lacks %s with length 5 and 1 group", ev)
	}
	if r := cli(t, "streams"); !strings.Contains(r.stdout, "STREAM") || !strings.Contains(r.stdout, ev) {
		t.Errorf("streams table:\n%s", r.stdout)
	}

	groups := jsonOut[[]map[string]any](t, cli(t, "groups", ev, "--json"))
	if len(groups) != 1 || groups[0]["group"] != group || groups[0]["pending_count"] != float64(5) {
		t.Fatalf("groups: %v", groups)
	}
	if cl := groups[0]["consumers"].([]any); len(cl) != 1 || cl[0].(map[string]any)["consumer"] != "worker" {
		t.Errorf("consumers: %v", cl)
	}

	page := jsonOut[[]map[string]any](t, cli(t, "pending", ev, group, "--count", "2", "--json"))
	next := jsonOut[[]map[string]any](t, cli(t, "pending", ev, group, "--after", page[1]["id"].(string), "--json"))
	if len(page) != 2 || page[0]["id"] != ids[0] || len(next) != 3 || next[0]["id"] != ids[2] {
		t.Fatalf("pending pages %v / %v", page, next)
	}

	claimed := jsonOut[map[string]any](t, cli(t, "claim", ev, group, ids[0], "--to", "rescuer", "--json"))
	if fmt.Sprint(claimed["claimed_ids"]) != "["+ids[0]+"]" {
		t.Errorf("claim: %v", claimed)
	}
	if p := c.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: ev, Group: group, Start: ids[0], End: ids[0], Count: 1}).Val(); len(p) != 1 || p[0].Consumer != "rescuer" {
		t.Errorf("after claim, Redis says %v", p)
	}
	if acked := jsonOut[map[string]any](t, cli(t, "ack", ev, group, ids[0], ids[1], "--json")); acked["acked_count"] != 2.0 {
		t.Errorf("ack: %v", acked)
	}
	if n := c.XPending(ctx, ev, group).Val().Count; n != 3 {
		t.Errorf("%d pending after acking 2 of 5", n)
	}

	if moved := jsonOut[map[string]any](t, cli(t, "dlq", "move", ev, group, ids[2], "--reason", "bad payload", "--json")); moved["moved_count"] != 1.0 {
		t.Errorf("dlq move: %v", moved)
	}
	dl := jsonOut[[]map[string]any](t, cli(t, "dlq", "list", ev, "--json"))
	if len(dl) != 1 || dl[0]["headers"].(map[string]any)["reason"] != "bad payload" || fmt.Sprint(dl[0]["data"]) != "map[i:2]" {
		t.Fatalf("dlq list: %v", dl)
	}
	req := jsonOut[map[string]any](t, cli(t, "dlq", "requeue", ev, dl[0]["id"].(string), "--json"))
	if len(req["requeued_ids"].([]any)) != 1 || c.XLen(ctx, ev+":dlq").Val() != 0 || c.XLen(ctx, ev).Val() != 6 {
		t.Errorf("requeue: %v", req)
	}
	if r := cli(t, "dlq", "requeue", ev, "1-1"); r.code == 0 {
		t.Error("requeue of a missing dead letter succeeded")
	}
}

func TestTailPrintsNewMessagesWithoutConsuming(t *testing.T) {
	ev := unique("tail")
	c := redisClient(t, ev)
	cli(t, "publish", ev, `{"old":true}`)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out syncBuffer
	done := make(chan result, 1)
	go func() {
		done <- invocation{stdout: &out}.run(ctx, "tail", ev, "--interval", "20ms", "--filter", "keep")
	}()
	time.Sleep(300 * time.Millisecond) // tail starts after the newest entry
	cli(t, "publish", ev, `{"keep":1}`)
	cli(t, "publish", ev, `{"drop":2}`)
	cli(t, "publish", ev, `{"keep":3}`)
	lines := waitLines(t, &out, 2, 10*time.Second)
	cancel()
	if r := <-done; r.code != 0 {
		t.Fatalf("tail exited %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(lines[0], `"keep":1`) || !strings.Contains(lines[1], `"keep":3`) || strings.Contains(out.String(), "old") {
		t.Errorf("tail printed:\n%s", out.String())
	}
	if groups := c.XInfoGroups(context.Background(), ev).Val(); len(groups) != 0 {
		t.Errorf("tail created groups: %v", groups)
	}
}

func TestSendCommand(t *testing.T) {
	url := gatewayTestURL(t)
	inv := invocation{env: map[string]string{"REDIS_URL": url}}
	r := inv.run(t.Context(), "send", "--guild", "81384788765712384", "--shard-count", "16", "--json",
		`{"op":4,"d":{"guild_id":"81384788765712384","channel_id":null,"self_mute":false,"self_deaf":false}}`)
	res := jsonOut[map[string]any](t, r)
	if res["event"] != "SEND" || res["shard"] != float64(2) {
		t.Errorf("send --guild: %v", res)
	}
	r = inv.run(t.Context(), "send", "--shard", "1", `{"op":3,"d":{"status":"idle","since":null,"activities":[],"afk":false}}`)
	if r.code != 0 || !strings.Contains(r.stdout, "published 1") {
		t.Errorf("send --shard: %d %s %s", r.code, r.stdout, r.stderr)
	}
	r = inv.run(t.Context(), "send", "--shard", "1", `{"op":2,"d":{}}`)
	if r.code != exitUsage || !strings.Contains(r.stderr, "op 2 may not be sent") {
		t.Errorf("identify by hand: %d %s", r.code, r.stderr)
	}
	if r := inv.run(t.Context(), "send", `{"op":4}`); r.code != exitUsage {
		t.Errorf("no target: %d", r.code)
	}
}
