package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/redisgw"
	"github.com/spectacles-go/spectacles/internal/termtext"
)

// hostileTail is what the hostile names end with: ESC sequences, CR, BEL,
// C1 controls (NEL, CSI), a right-to-left override and, where asked,
// invalid UTF-8.
const hostileTail = "\x1b[2J\x1b]0;pwned\a\r\u0085\u009b31m\u202e"

// terminalSafe fails t when out holds a byte a terminal acts on: below
// 0x20 other than \n and \t, DEL, a C1 control, a bidi control, or
// invalid UTF-8.
func terminalSafe(t *testing.T, what, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s: output is not valid UTF-8: %q", what, out)
		return
	}
	for _, r := range out {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r <= 0x9f) ||
			(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f || r == 0x061c {
			t.Errorf("%s: raw %U in the output: %q", what, r, out)
			return
		}
	}
}

// run runs the command and checks that stdout and stderr are safe.
func safeCLI(t *testing.T, args ...string) result {
	t.Helper()
	r := cli(t, args...)
	terminalSafe(t, strings.Join(args[:1], " ")+" stdout", r.stdout)
	terminalSafe(t, strings.Join(args[:1], " ")+" stderr", r.stderr)
	return r
}

// b64 decodes a KEY_base64 field.
func b64(t *testing.T, v any) string {
	t.Helper()
	s, _ := v.(string)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || s == "" {
		t.Fatalf("not base64: %v (%v)", v, err)
	}
	return string(b)
}

// TestHostileNamesAreEscaped: names, reasons and payloads with control
// characters, bidi controls and invalid UTF-8 never reach the terminal
// raw, in any command's table, JSON or error; the table prints a name in a
// form that gives back its bytes (termtext.Unquote, or $'...' in a shell);
// JSON round-trips the exact bytes (KEY_base64 for invalid UTF-8); and
// the commands take the raw name back.
func TestHostileNamesAreEscaped(t *testing.T) {
	ev := unique("esc") + hostileTail + "\xff\xfe"
	group := unique("g") + hostileTail           // valid UTF-8: JSON keeps it exactly
	consumer := "w\r\x1b[8m" + "\u202e" + "\xc0" // invalid UTF-8
	reason := "bad \x1b[31mthing\x1b[0m\a\u009b\u202e"
	c := redisClient(t, ev)
	ctx := context.Background()

	var ids []string
	for _, text := range []string{`one \u001b[2J \u0085 \u202e`, "two"} {
		r := safeCLI(t, "publish", ev, `{"text":"`+text+`"}`)
		if r.code != 0 {
			t.Fatalf("publish: %s", r.stderr)
		}
		ids = append(ids, mustUnquote(t, strings.TrimSpace(r.stdout)))
	}
	if err := c.XGroupCreate(ctx, ev, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: consumer, Streams: []string{ev, ">"}, Count: 2}).Err(); err != nil {
		t.Fatal(err)
	}

	// streams: the table quotes the name; JSON gives its bytes back.
	r := safeCLI(t, "streams")
	if !strings.Contains(r.stdout, termtext.Quote(ev)) {
		t.Errorf("streams table lacks %s:\n%s", termtext.Quote(ev), r.stdout)
	}
	r = safeCLI(t, "streams", "--json")
	var found string
	for _, s := range jsonOut[[]map[string]any](t, r) {
		if s["stream_base64"] != nil && b64(t, s["stream_base64"]) == ev {
			found = ev
		}
	}
	if found != ev {
		t.Fatalf("streams --json: no stream_base64 gives %q back:\n%s", ev, r.stdout)
	}

	// groups: typed back from the table's quoted form.
	for _, name := range []string{ev, mustUnquote(t, termtext.Quote(ev))} {
		r = safeCLI(t, "groups", name)
		if r.code != 0 || !strings.Contains(r.stdout, termtext.Quote(group)) || !strings.Contains(r.stdout, termtext.Quote(consumer)) {
			t.Errorf("groups table (exit %d, %s):\n%s", r.code, r.stderr, r.stdout)
		}
	}
	r = safeCLI(t, "groups", ev, "--json")
	groups := jsonOut[[]map[string]any](t, r)
	if len(groups) != 1 || groups[0]["group"] != group {
		t.Fatalf("groups --json does not give the group name back: %s", r.stdout)
	}
	cl := groups[0]["consumers"].([]any)
	if len(cl) != 1 || b64(t, cl[0].(map[string]any)["consumer_base64"]) != consumer {
		t.Fatalf("groups --json does not give the consumer name back: %s", r.stdout)
	}

	// pending, by the raw consumer name.
	r = safeCLI(t, "pending", ev, group, "--consumer", consumer)
	if !strings.Contains(r.stdout, termtext.Quote(consumer)) || !strings.Contains(r.stdout, ids[0]) {
		t.Errorf("pending table:\n%s", r.stdout)
	}
	page := jsonOut[[]map[string]any](t, safeCLI(t, "pending", ev, group, "--json"))
	if len(page) != 2 || b64(t, page[0]["consumer_base64"]) != consumer {
		t.Fatalf("pending --json: %v", page)
	}

	// claim: the Redis driver refuses such a group name as an identity;
	// its error quotes the names escaped.
	other := "o\x1b[2J\u202e\xff"
	for _, args := range [][]string{{"claim", ev, group, ids[1], "--to", other}, {"claim", ev, group, ids[1], "--to", other, "--json"}} {
		if r = safeCLI(t, args...); r.code == 0 {
			t.Errorf("claim: %s", r.stdout)
		}
	}

	// dlq move with a hostile reason; list; requeue.
	r = safeCLI(t, "dlq", "move", ev, group, ids[0], "--reason", reason)
	if r.code != 0 || !strings.Contains(r.stdout, termtext.Quote(ev+":dlq")) {
		t.Errorf("dlq move (exit %d, %s): %s", r.code, r.stderr, r.stdout)
	}
	r = safeCLI(t, "dlq", "list", ev)
	if !strings.Contains(r.stdout, termtext.Quote(reason)) || !strings.Contains(r.stdout, termtext.Quote(group)) {
		t.Errorf("dlq list table:\n%s", r.stdout)
	}
	dl := jsonOut[[]map[string]any](t, safeCLI(t, "dlq", "list", ev, "--json"))
	if len(dl) != 1 || dl[0]["headers"].(map[string]any)["reason"] != reason ||
		!strings.Contains(dl[0]["data"].(map[string]any)["text"].(string), "\x1b[2J \u0085 \u202e") {
		t.Errorf("dlq list --json: %v", dl)
	}
	if hb, _ := dl[0]["headers_base64"].(map[string]any); hb == nil || b64(t, hb[base64.StdEncoding.EncodeToString([]byte("event"))]) != ev {
		t.Errorf("dlq list --json: headers_base64 does not give the event back: %v", dl[0])
	}
	dlID := dl[0]["id"].(string)

	// tail: JSON lines, event_base64 for the invalid name.
	lines := tailLines(t, ev+":dlq", 1)
	line := decodeLine(t, lines[0])
	if b64(t, line["event_base64"]) != ev+":dlq" || line["headers"].(map[string]any)["reason"] != reason {
		t.Errorf("tail: %s", lines[0])
	}

	r = safeCLI(t, "dlq", "requeue", ev, dlID)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "requeued 1: ") {
		t.Errorf("dlq requeue (exit %d, %s): %s", r.code, r.stderr, r.stdout)
	}

	// ack, by the raw names.
	r = safeCLI(t, "ack", ev, group, ids[1])
	if r.stdout != "acknowledged 1 of 1\n" {
		t.Errorf("ack: %q %s", r.stdout, r.stderr)
	}

	// Errors that quote names.
	nobody := unique("nobody") + hostileTail + "\xff"
	redisClient(t, nobody) // call publishes to it
	for _, args := range [][]string{
		{"pending", ev, "no-group" + hostileTail},
		{"call", nobody, "{}", "--timeout", "50ms"},
		{"nope" + hostileTail},
		{"publish", "x" + hostileTail, `{"bad` + hostileTail},
	} {
		r = safeCLI(t, args...)
		if r.code == 0 || r.stderr == "" {
			t.Errorf("%q succeeded: %s", args, r.stdout)
		}
		if args[0] == "pending" && !strings.Contains(r.stderr, termtext.Escape("no-group"+hostileTail)) {
			t.Errorf("the error does not show the group name escaped: %s", r.stderr)
		}
	}
}

// mustUnquote reads a name as a table prints it.
func mustUnquote(t *testing.T, s string) string {
	t.Helper()
	if got, ok := termtext.Unquote(s); ok {
		return got
	}
	return s
}

// tailLines runs tail --from 0 on event until it printed n lines, and
// checks that they are safe.
func tailLines(t *testing.T, event string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	out := &syncBuffer{}
	done := make(chan result, 1)
	go func() { done <- invocation{stdout: out}.run(ctx, "tail", event, "--from", "0", "--interval", "20ms") }()
	lines := waitLines(t, out, n, 15*time.Second)
	cancel()
	r := <-done
	terminalSafe(t, "tail stdout", out.String())
	terminalSafe(t, "tail stderr", r.stderr)
	return lines
}

// TestHostilePayloadsInConsumeAndCall: consume and call print JSON lines
// with no raw control character, C1 or bidi control, and the names come
// back exactly.
func TestHostilePayloadsInConsumeAndCall(t *testing.T) {
	ev := unique("esc-consume") + hostileTail + "\xff"
	redisClient(t, ev)
	r := safeCLI(t, "publish", ev, `{"text":"a\u001b[2J\u0085\u009b\u202e\u007f"}`)
	if r.code != 0 {
		t.Fatalf("publish: %s", r.stderr)
	}
	con := startConsume(t, "--group", unique("g"), ev)
	lines := waitLines(t, con.out, 1, 15*time.Second)
	res := con.stop()
	terminalSafe(t, "consume stdout", con.out.String())
	terminalSafe(t, "consume stderr", res.stderr)
	m := decodeLine(t, lines[0])
	if b64(t, m["event_base64"]) != ev || m["data"].(map[string]any)["text"] != "a\x1b[2J\u0085\u009b\u202e\x7f" {
		t.Errorf("consume line: %s", lines[0])
	}

	call := unique("esc-call") + hostileTail
	redisClient(t, call)
	startResponder(t, call, func(any) any { return map[string]any{"text": "r\x1b[2J\u0085\u202e\a"} })
	r = safeCLI(t, "call", call, "{}", "--timeout", "10s")
	if got := decodeLine(t, r.stdout); r.code != 0 || got["text"] != "r\x1b[2J\u0085\u202e\a" {
		t.Errorf("call (exit %d, %s): %s", r.code, r.stderr, r.stdout)
	}
}

// TestHostileShardsAndSend: shard statuses that gateway nodes publish
// (names, close reasons) and the send command print no raw control.
func TestHostileShardsAndSend(t *testing.T) {
	client := "node" + hostileTail
	group := unique("esc-gw")
	key := redisgw.StatusKeyPrefix + group + ":" + client
	c := redisClient(t)
	t.Cleanup(func() { c.Del(context.Background(), key) })
	st := gateway.NodeStatus{Group: group, Client: client, ShardCount: 1, UpdatedAt: time.Now().UTC(),
		Shards: []gateway.Status{{ID: 0, Count: 1, State: gateway.Ready, LastCloseCode: 4000, LastCloseReason: "why" + hostileTail}}}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(context.Background(), key, b, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	r := safeCLI(t, "shards")
	if !strings.Contains(r.stdout, termtext.Quote(client)) || !strings.Contains(r.stdout, termtext.Escape("why"+hostileTail)) {
		t.Errorf("shards table:\n%s", r.stdout)
	}
	r = safeCLI(t, "shards", "--json")
	found := false
	for _, n := range jsonOut[[]map[string]any](t, r) {
		found = found || n["client"] == client
	}
	if !found {
		t.Errorf("shards --json does not give %q back: %s", client, r.stdout)
	}

	redisClient(t, "987654") // the shard's event, this test's own
	r = safeCLI(t, "send", "--shard", "987654", `{"op":4,"d":{"x":"\u001b[2J\u202e"}}`)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "published 987654 ") {
		t.Errorf("send: %s %s", r.stdout, r.stderr)
	}
}
