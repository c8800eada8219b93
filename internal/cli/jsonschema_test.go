package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/redisgw"
	redistransport "github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

// snakeKey is what every key the commands choose looks like.
var snakeKey = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// userKeys hold what the broker or a peer put there (payloads, headers):
// their keys are not the commands' to choose.
var userKeys = map[string]bool{"data": true, "headers": true, "headers_base64": true}

// schema checks the --json output of every command against the one
// documented schema, and remembers each key's JSON type so that a key
// spelled the same in two commands means the same kind of value.
type schema struct {
	t     *testing.T
	kinds map[string]string // key → JSON type
	where map[string]string // key → the command that first printed it
}

func newSchema(t *testing.T) *schema {
	return &schema{t: t, kinds: map[string]string{}, where: map[string]string{}}
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// check walks v, printed by cmd, and reports every key that breaks the
// schema: not snake_case; a duration (…_ms) that is not a number; an id
// (id, …_id) that is not a string, ids (…_ids) not an array of strings;
// a time (…_at) or …_base64 that is not a string; a key whose type differs
// from the same key in another command.
func (s *schema) check(cmd string, v any, path string) {
	s.t.Helper()
	switch x := v.(type) {
	case []any:
		for i, e := range x {
			s.check(cmd, e, fmt.Sprintf("%s[%d]", path, i))
		}
	case map[string]any:
		for k, e := range x {
			p := path + "." + k
			if !snakeKey.MatchString(k) {
				s.t.Errorf("%s: key %s is not snake_case", cmd, p)
			}
			kind := jsonKind(e)
			want := ""
			switch {
			case strings.HasSuffix(k, "_ms"):
				want = "number"
			case k == "id" || strings.HasSuffix(k, "_id"), strings.HasSuffix(k, "_at"), strings.HasSuffix(k, "_base64") && !userKeys[k]:
				want = "string"
			case strings.HasSuffix(k, "_ids"):
				want = "array"
				for _, id := range asSlice(e) {
					if _, ok := id.(string); !ok {
						s.t.Errorf("%s: %s holds %v, not a string id", cmd, p, id)
					}
				}
			}
			if want != "" && kind != want {
				s.t.Errorf("%s: %s = %v is a %s, want a %s", cmd, p, e, kind, want)
			}
			if prev, ok := s.kinds[k]; ok && prev != kind && kind != "null" && prev != "null" {
				s.t.Errorf("key %q is a %s in %s but a %s in %s", k, prev, s.where[k], kind, cmd)
			} else if !ok || prev == "null" {
				s.kinds[k], s.where[k] = kind, cmd
			}
			if !userKeys[k] {
				s.check(cmd, e, p)
			}
		}
	}
}

// has fails unless obj holds every key of keys.
func (s *schema) has(cmd string, obj any, keys ...string) {
	s.t.Helper()
	m, ok := obj.(map[string]any)
	if !ok {
		s.t.Errorf("%s: %v is not an object", cmd, obj)
		return
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			s.t.Errorf("%s: no key %q in %v", cmd, k, m)
		}
	}
}

func asSlice(v any) []any { x, _ := v.([]any); return x }

func asMap(v any) map[string]any { x, _ := v.(map[string]any); return x }

// doc decodes one JSON document and checks it.
func (s *schema) doc(cmd string, r result) any {
	s.t.Helper()
	if r.code != 0 {
		s.t.Fatalf("%s: exit %d: %s", cmd, r.code, r.stderr)
	}
	var v any
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		s.t.Fatalf("%s: output %q: %v", cmd, r.stdout, err)
	}
	s.check(cmd, v, cmd)
	return v
}

// TestJSONSchema: every command's --json output follows one schema:
// snake_case keys, durations in milliseconds as numbers under …_ms, ids
// as strings, and the same concept under the same key in every command.
func TestJSONSchema(t *testing.T) {
	s := newSchema(t)
	c, ev, group, ids := pendingSetup(t, 4)
	ctx := context.Background()

	// streams
	var stream map[string]any
	for _, e := range asSlice(s.doc("streams", cli(t, "streams", "--json"))) {
		if asMap(e)["stream"] == ev {
			stream = asMap(e)
		}
	}
	s.has("streams", stream, "stream", "length", "group_count", "first_id", "last_id")
	if stream["length"] != 4.0 || stream["group_count"] != 1.0 || stream["first_id"] != ids[0] || stream["last_id"] != ids[3] {
		t.Errorf("streams: %v", stream)
	}

	// groups
	groups := asSlice(s.doc("groups", cli(t, "groups", ev, "--json")))
	if len(groups) != 1 {
		t.Fatalf("groups: %v", groups)
	}
	g := asMap(groups[0])
	s.has("groups", g, "stream", "group", "consumer_count", "pending_count", "lag", "last_delivered_id", "consumers")
	if g["stream"] != ev || g["group"] != group || g["pending_count"] != 4.0 || g["consumer_count"] != 1.0 || g["last_delivered_id"] != ids[3] {
		t.Errorf("groups: %v", g)
	}
	cs := asSlice(g["consumers"])
	if len(cs) != 1 {
		t.Fatalf("groups consumers: %v", g["consumers"])
	}
	s.has("groups", cs[0], "consumer", "pending_count", "idle_ms")
	if asMap(cs[0])["consumer"] != "worker" || asMap(cs[0])["pending_count"] != 4.0 {
		t.Errorf("groups consumer: %v", cs[0])
	}

	// pending
	page := asSlice(s.doc("pending", cli(t, "pending", ev, group, "--json")))
	if len(page) != 4 {
		t.Fatalf("pending: %v", page)
	}
	s.has("pending", page[0], "stream", "group", "id", "consumer", "idle_ms", "deliveries")
	if p := asMap(page[0]); p["id"] != ids[0] || p["consumer"] != "worker" || p["deliveries"] != 1.0 || p["stream"] != ev || p["group"] != group {
		t.Errorf("pending: %v", p)
	}

	// claim
	claim := s.doc("claim", cli(t, "claim", ev, group, ids[0], "--to", "rescuer", "--json"))
	s.has("claim", claim, "stream", "group", "consumer", "claimed_ids")
	if m := asMap(claim); m["consumer"] != "rescuer" || fmt.Sprint(m["claimed_ids"]) != "["+ids[0]+"]" {
		t.Errorf("claim: %v", m)
	}

	// claim --all, back to worker
	claimAll := s.doc("claim --all", cli(t, "claim", ev, group, "--all", "--consumer", "rescuer", "--to", "worker", "--json"))
	s.has("claim --all", claimAll, "stream", "group", "consumer", "claimed_count")
	if m := asMap(claimAll); m["consumer"] != "worker" || m["claimed_count"] != 1.0 {
		t.Errorf("claim --all: %v", m)
	}

	// ack
	ack := s.doc("ack", cli(t, "ack", ev, group, ids[0], "--json"))
	s.has("ack", ack, "stream", "group", "acked_count")
	if asMap(ack)["acked_count"] != 1.0 {
		t.Errorf("ack: %v", ack)
	}

	// dlq move, list, requeue
	move := s.doc("dlq move", cli(t, "dlq", "move", ev, group, ids[1], "--reason", "by hand", "--json"))
	s.has("dlq move", move, "stream", "group", "moved_count", "event")
	if m := asMap(move); m["moved_count"] != 1.0 || m["event"] != core.DeadLetterEvent(ev) {
		t.Errorf("dlq move: %v", m)
	}
	dl := asSlice(s.doc("dlq list", cli(t, "dlq", "list", ev, "--json")))
	if len(dl) != 1 {
		t.Fatalf("dlq list: %v", dl)
	}
	s.has("dlq list", dl[0], "event", "id", "headers", "data")
	if m := asMap(dl[0]); m["event"] != core.DeadLetterEvent(ev) || fmt.Sprint(m["data"]) != "map[i:1]" {
		t.Errorf("dlq list: %v", m)
	}
	req := s.doc("dlq requeue", cli(t, "dlq", "requeue", ev, asMap(dl[0])["id"].(string), "--json"))
	s.has("dlq requeue", req, "event", "requeued_ids")
	if m := asMap(req); m["event"] != ev || len(asSlice(m["requeued_ids"])) != 1 {
		t.Errorf("dlq requeue: %v", m)
	}

	// tail, from the beginning
	tctx, cancel := context.WithCancel(t.Context())
	var out syncBuffer
	done := make(chan result, 1)
	go func() { done <- invocation{stdout: &out}.run(tctx, "tail", ev, "--from", "0", "--interval", "20ms") }()
	lines := waitLines(t, &out, 5, 15*time.Second)
	cancel()
	<-done
	for _, l := range lines {
		s.doc("tail", result{stdout: l})
	}
	s.has("tail", decodeLine(t, lines[0]), "event", "id", "data")

	// consume
	cons := startConsume(t, "--group", unique("schema"), ev)
	lines = waitLines(t, cons.out, 5, 15*time.Second)
	cons.stop()
	for _, l := range lines {
		s.doc("consume", result{stdout: l})
	}
	s.has("consume", decodeLine(t, lines[0]), "event", "id", "deliveries", "data")

	// call: the reply's data is the peer's, as it is; its failure line
	// ({"error", "raw_base64"}) is the commands'.
	callEv := unique("schema-call")
	redisClient(t, callEv)
	startResponder(t, callEv, func(any) any { return map[string]any{"ok": true} })
	s.doc("call", cli(t, "call", callEv, `{}`, "--timeout", "10s"))

	// send
	inv := invocation{env: map[string]string{"REDIS_URL": gatewayTestURL(t)}}
	send := s.doc("send", inv.run(t.Context(), "send", "--guild", "81384788765712384", "--shard-count", "16", "--json",
		`{"op":4,"d":{"guild_id":"81384788765712384","channel_id":null,"self_mute":false,"self_deaf":false}}`))
	s.has("send", send, "event", "id", "shard")

	// shards: a node status as a gateway reports it
	node := redistest.Unique("schema-node")
	key := redisgw.StatusKeyPrefix + node + ":n1"
	status := gateway.NodeStatus{Group: node, Client: "n1", ShardCount: 2, UpdatedAt: time.Now().UTC(), Published: 7,
		Shards: []gateway.Status{{ID: 1, Count: 2, State: gateway.Ready, SessionID: "abc", Seq: 9, Latency: 1500 * time.Microsecond,
			LastHeartbeatACK: time.Now().UTC(), GuildsAvailable: 3, Reconnects: 1, Events: 11, LastCloseCode: 4000, LastCloseReason: "x", Err: "e"}}}
	b, _ := json.Marshal(status)
	if err := c.Set(ctx, key, b, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	defer c.Del(context.Background(), key)
	var n map[string]any
	for _, e := range asSlice(s.doc("shards", cli(t, "shards", "--json"))) {
		if asMap(e)["group"] == node {
			n = asMap(e)
		}
	}
	s.has("shards", n, "group", "client", "shard_count", "queue_length", "published_count", "updated_at", "stale", "shards")
	sh := asSlice(n["shards"])
	if len(sh) != 1 {
		t.Fatalf("shards: %v", n)
	}
	s.has("shards", sh[0], "shard", "shard_count", "state", "session_id", "seq", "latency_ms", "last_heartbeat_ack_at",
		"available_guild_count", "unavailable_guild_count", "reconnect_count", "dispatch_count", "last_close_code", "last_close_reason", "error")
	if m := asMap(sh[0]); m["shard"] != 1.0 || m["latency_ms"] != 1.5 {
		t.Errorf("shards shard: %v", m)
	}

	// bench
	bench := s.doc("bench", cli(t, "bench", "--messages", "50", "--size", "64"))
	s.has("bench", bench, "broker", "phase", "message_count", "payload_bytes", "consumer_count", "publisher_count", "batch_size", "publish_per_s",
		"end_to_end_per_s", "publish_ms", "end_to_end_ms", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms",
		"cpu_us_per_msg")

	// The same concept, the same key: checked above by each command's
	// required keys (stream, group, consumer, id, deliveries, idle_ms, …)
	// and by the type check across commands.
	for _, k := range []string{"stream", "group", "consumer", "id", "event", "deliveries", "idle_ms", "consumer_count", "pending_count", "shard", "shard_count"} {
		if _, ok := s.kinds[k]; !ok {
			t.Errorf("no command printed %q", k)
		}
	}
}

// TestJSONInvalidUTF8Strings: a msgpack str that is not valid UTF-8 (as
// spec-tacles/go writes []byte) prints as base64 in data, like a msgpack
// bin, in consume, tail, dlq list and call; encoding/json would otherwise
// replace each bad byte with U+FFFD and lose the bytes.
func TestJSONInvalidUTF8Strings(t *testing.T) {
	ev, group := unique("schema-bytes"), unique("g")
	c := redisClient(t, ev)
	b, err := redistransport.Open(t.Context(), redistransport.Config{URL: testRedisURL,
		Options: core.Options{Identity: core.Identity{Group: unique("pub"), Client: "p"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bad := "\xff\x00ok"
	want := "/wBvaw==" // base64 of bad
	if _, err := b.Publish(t.Context(), ev, map[string]any{"s": bad, "b": []byte(bad), "t": "text", bad: 1}); err != nil {
		t.Fatal(err)
	}
	checkData := func(what string, data any) {
		t.Helper()
		m := asMap(data)
		if m["s"] != want || m["b"] != want || m["t"] != "text" || m[want] != 1.0 {
			t.Errorf("%s: data = %v, want s and b as %s, key %s", what, data, want, want)
		}
	}

	cons := startConsume(t, "--group", group, "--no-ack", ev)
	lines := waitLines(t, cons.out, 1, 15*time.Second)
	cons.stop()
	checkData("consume", decodeLine(t, lines[0])["data"])

	if err := c.XGroupCreate(t.Context(), ev, group+"-dl", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.XReadGroup(t.Context(), &goredis.XReadGroupArgs{Group: group + "-dl", Consumer: "w", Streams: []string{ev, ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	var id string
	if p := jsonOut[[]map[string]any](t, cli(t, "pending", ev, group+"-dl", "--json")); len(p) == 1 {
		id, _ = p[0]["id"].(string)
	}
	if r := cli(t, "dlq", "move", ev, group+"-dl", id); r.code != 0 {
		t.Fatalf("dlq move %q: %s", id, r.stderr)
	}
	dl := jsonOut[[]map[string]any](t, cli(t, "dlq", "list", ev, "--json"))
	if len(dl) != 1 {
		t.Fatalf("dlq list: %v", dl)
	}
	checkData("dlq list", dl[0]["data"])

	tctx, cancel := context.WithCancel(t.Context())
	var out syncBuffer
	done := make(chan result, 1)
	go func() { done <- invocation{stdout: &out}.run(tctx, "tail", ev, "--from", "0", "--interval", "20ms") }()
	lines = waitLines(t, &out, 1, 15*time.Second)
	cancel()
	<-done
	checkData("tail", decodeLine(t, lines[0])["data"])

	callEv := unique("schema-bytes-call")
	redisClient(t, callEv)
	startResponder(t, callEv, func(any) any { return map[string]any{"s": bad, "b": []byte(bad), "t": "text", bad: 1} })
	r := cli(t, "call", callEv, `{}`, "--timeout", "10s")
	if r.code != 0 {
		t.Fatalf("call: %s", r.stderr)
	}
	checkData("call", decodeLine(t, r.stdout))
}
