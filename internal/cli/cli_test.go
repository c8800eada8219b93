package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
	redistransport "github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/embedded"
)

// moduleRoot is the module's root directory, which holds the spectacles
// command (the main package), the README and the deployment files, from
// this package's directory, where its tests run.
const moduleRoot = "../.."

// testRedisURL is the server the end-to-end tests use: the shared Redis at
// 127.0.0.1:6379, or, outside CI when it is not running, an embedded one.
// TestMain sets it once.
var testRedisURL string

// childEnv, set to a command line, makes this test binary run that
// spectacles command instead of the tests: a real process that a test can
// kill (childCommand).
const childEnv = "SPECTACLES_CLI_TEST_CHILD"

func TestMain(m *testing.M) {
	if args := os.Getenv(childEnv); args != "" {
		os.Exit(run(context.Background(), strings.Fields(args), strings.NewReader(""), os.Stdout, os.Stderr, os.LookupEnv))
	}
	code := testMain(m)
	if code == 0 {
		// Every command must stop what it started: brokers, gateways,
		// embedded servers, signal handlers.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines leaked by the commands: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func testMain(m *testing.M) int {
	const shared = "127.0.0.1:6379"
	conn, err := net.DialTimeout("tcp", shared, time.Second)
	switch {
	case err == nil:
		conn.Close()
		testRedisURL = shared
	case os.Getenv("CI") == "true":
		fmt.Fprintf(os.Stderr, "Redis at %s is not reachable and CI=true: %v\n", shared, err)
		return 1
	default:
		e, err := embedded.Start()
		if err != nil {
			fmt.Fprintf(os.Stderr, "no Redis at %s and the embedded one failed: %v\n", shared, err)
			return 1
		}
		defer e.Close()
		fmt.Fprintf(os.Stderr, "no Redis at %s; testing against the embedded server %s\n", shared, e.Addr())
		testRedisURL = e.URL()
	}
	return m.Run()
}

// result is what one invocation of the command produced.
type result struct {
	code           int
	stdout, stderr string
}

// invocation describes one in-process run of the command.
type invocation struct {
	env    map[string]string // added to REDIS_URL=testRedisURL; "" unsets
	stdin  io.Reader
	stdout io.Writer // default: captured into result.stdout
}

func (inv invocation) run(ctx context.Context, args ...string) result {
	env := map[string]string{"REDIS_URL": testRedisURL}
	for k, v := range inv.env {
		if v == "" {
			delete(env, k)
		} else {
			env[k] = v
		}
	}
	var stdout bytes.Buffer
	var stderr syncBuffer // loggers and, with BROKER_TYPE=ipc, output share it
	var out io.Writer = &stdout
	if inv.stdout != nil {
		out = inv.stdout
	}
	stdin := inv.stdin
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	code := run(ctx, args, stdin, out, &stderr, mapLookup(env))
	return result{code, stdout.String(), stderr.String()}
}

// cli runs the command with the test server and no other environment.
func cli(t *testing.T, args ...string) result {
	t.Helper()
	return invocation{}.run(t.Context(), args...)
}

// unique returns a name no other test or run uses.
func unique(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// redisClient connects to the test server and deletes the given streams
// when the test ends (they are the test's own).
func redisClient(t *testing.T, events ...string) goredis.UniversalClient {
	t.Helper()
	c, err := redistransport.NewClient(testRedisURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var keys []string
		for _, e := range events {
			keys = append(keys, e, core.DeadLetterEvent(e))
		}
		if len(keys) > 0 {
			c.Del(context.Background(), keys...)
		}
		c.Close()
	})
	return c
}

// syncBuffer collects output written from several goroutines.
type syncBuffer = brokertest.SyncBuffer

// waitLines waits until s holds at least n complete lines and returns them.
func waitLines(t *testing.T, s fmt.Stringer, n int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		text := s.String()
		lines := strings.SplitAfter(text, "\n")
		complete := lines[:len(lines)-1]
		if len(complete) >= n {
			for i := range complete {
				complete[i] = strings.TrimSuffix(complete[i], "\n")
			}
			return complete
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d of %d lines within %s:\n%s", len(complete), n, timeout, text)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consumer runs `spectacles consume` in the background until stop is
// called; stop returns its result.
type consumer struct {
	out  *syncBuffer
	stop func() result
}

func startConsume(t *testing.T, args ...string) *consumer {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	out := &syncBuffer{}
	done := make(chan result, 1)
	go func() {
		done <- invocation{stdout: out}.run(ctx, append([]string{"consume"}, args...)...)
	}()
	var once sync.Once
	var res result
	stop := func() result {
		once.Do(func() {
			cancel()
			select {
			case res = <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("consume did not stop within 15s of cancellation")
			}
		})
		return res
	}
	t.Cleanup(func() { stop() })
	return &consumer{out: out, stop: stop}
}

// wantOneErrorLine checks that stderr is exactly one "spectacles: ..." line
// containing want.
func wantOneErrorLine(t *testing.T, r result, want string) {
	t.Helper()
	if !strings.HasPrefix(r.stderr, "spectacles: ") || strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("stderr is not one spectacles: line: %q", r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q does not contain %q", r.stderr, want)
	}
}

func decodeLine(t *testing.T, line string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("not a JSON line: %q: %v", line, err)
	}
	return m
}

func pending(t *testing.T, c goredis.UniversalClient, event, group string) int64 {
	t.Helper()
	p, err := c.XPending(context.Background(), event, group).Result()
	if err != nil {
		t.Fatalf("XPENDING %s %s: %v", event, group, err)
	}
	return p.Count
}

func TestPublishThenConsume(t *testing.T) {
	event, group := unique("cli-pubsub"), unique("cli-group")
	rc := redisClient(t, event)

	var ids []string
	for _, inv := range []struct {
		args  []string
		stdin io.Reader
	}{
		{args: []string{"publish", event, `{"n":1,"s":"arg","list":[1,2.5,"x"],"big":12345678901234}`}},
		{args: []string{"publish", event, "-"}, stdin: strings.NewReader(`{"n":2,"s":"dash"}`)},
		{args: []string{"publish", event}, stdin: strings.NewReader("\n  {\"n\":3,\"s\":\"piped\"}\n")},
		{args: []string{"--codec", "json", "publish", event, `"plain string"`}},
	} {
		r := invocation{stdin: inv.stdin}.run(t.Context(), inv.args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", inv.args, r.code, r.stderr)
		}
		id := strings.TrimSpace(r.stdout)
		if !regexp.MustCompile(`^\d+-\d+$`).MatchString(id) || strings.Count(r.stdout, "\n") != 1 {
			t.Fatalf("%v printed %q, want one stream id line", inv.args, r.stdout)
		}
		ids = append(ids, id)
	}

	c := startConsume(t, "--group", group, "--client", "c1", event)
	lines := waitLines(t, c.out, 4, 10*time.Second)
	want := map[string]any{
		ids[0]: map[string]any{"n": 1.0, "s": "arg", "list": []any{1.0, 2.5, "x"}, "big": 12345678901234.0},
		ids[1]: map[string]any{"n": 2.0, "s": "dash"},
		ids[2]: map[string]any{"n": 3.0, "s": "piped"},
		ids[3]: "plain string",
	}
	for i, line := range lines {
		m := decodeLine(t, line)
		id, _ := m["id"].(string)
		if id != ids[i] {
			t.Errorf("line %d has id %s, want %s: lines must come in stream order", i, id, ids[i])
		}
		if m["event"] != event || m["deliveries"] != 1.0 {
			t.Errorf("line %s: want event %s, deliveries 1", line, event)
		}
		if !reflect.DeepEqual(m["data"], want[id]) {
			t.Errorf("line %s: data = %#v, want %#v", line, m["data"], want[id])
		}
		delete(want, id)
	}
	if len(want) != 0 {
		t.Errorf("messages not printed: %v", want)
	}
	c.stopCleanly(t)
	wantPending(t, rc, event, group, 0, "consume must ack what it printed")
}

func TestConsumeUndecodableIsPrintedAndNotAcked(t *testing.T) {
	event, group := unique("cli-bad"), unique("cli-group")
	rc := redisClient(t, event)
	raw := []byte{0xc1, 0xff, 0x00} // 0xc1 is never valid msgpack, nor JSON
	id, err := rc.XAdd(t.Context(), &goredis.XAddArgs{Stream: event, Values: []any{"data", raw}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	c := startConsume(t, "--group", group, event)
	lines := waitLines(t, c.out, 1, 10*time.Second)
	m := decodeLine(t, lines[0])
	if m["event"] != event || m["id"] != id || m["raw_base64"] != base64.StdEncoding.EncodeToString(raw) {
		t.Errorf("line = %s", lines[0])
	}
	if e, _ := m["error"].(string); !strings.Contains(e, "undecodable") {
		t.Errorf("error field = %q, want the decode error", e)
	}
	if _, ok := m["data"]; ok {
		t.Errorf("undecodable message printed data: %s", lines[0])
	}
	c.stopCleanly(t)
	wantPending(t, rc, event, group, 1, "the undecodable message must be left unacknowledged")
}

// TestUndecodableIsDeadLettered follows an undecodable message through its
// redeliveries to the dead-letter stream: it is never lost.
func TestUndecodableIsDeadLettered(t *testing.T) {
	event, group := unique("cli-poison"), unique("cli-group")
	rc := redisClient(t, event)
	raw := []byte{0xc1}
	if err := rc.XAdd(t.Context(), &goredis.XAddArgs{Stream: event, Values: []any{"data", raw}}).Err(); err != nil {
		t.Fatal(err)
	}
	c := startConsume(t, "--group", group, "--message-timeout", "200ms", "--max-deliveries", "2", event)
	lines := waitLines(t, c.out, 2, 15*time.Second)
	for i, line := range lines[:2] {
		if m := decodeLine(t, line); m["deliveries"] != float64(i+1) || m["raw_base64"] != "wQ==" {
			t.Errorf("delivery %d printed %s", i+1, line)
		}
	}

	dlq := startConsume(t, "--group", unique("cli-inspect"), "--no-ack", core.DeadLetterEvent(event))
	dead := decodeLine(t, waitLines(t, dlq.out, 1, 15*time.Second)[0])
	headers, _ := dead["headers"].(map[string]any)
	if dead["event"] != core.DeadLetterEvent(event) || dead["raw_base64"] != "wQ==" ||
		headers[core.HeaderEvent] != event || headers[core.HeaderGroup] != group {
		t.Errorf("dead letter = %v", dead)
	}
	c.stop()
	dlq.stop()
}

func TestConsumeNoAck(t *testing.T) {
	event, group := unique("cli-noack"), unique("cli-group")
	rc := redisClient(t, event)
	if r := cli(t, "publish", event, `{"a":null}`); r.code != 0 {
		t.Fatalf("publish: %+v", r)
	}
	c := startConsume(t, "--group", group, "--no-ack", event)
	lines := waitLines(t, c.out, 1, 10*time.Second)
	if m := decodeLine(t, lines[0]); !reflect.DeepEqual(m["data"], map[string]any{"a": nil}) {
		t.Errorf("line = %s", lines[0])
	}
	c.stop()
	wantPending(t, rc, event, group, 1, "--no-ack leaves it pending")
}

func TestConsumeNeedsGroupAndEvent(t *testing.T) {
	r := cli(t, "consume", "SOME_EVENT")
	if r.code != exitUsage {
		t.Errorf("exit %d, want %d", r.code, exitUsage)
	}
	wantOneErrorLine(t, r, "consume needs a group: set --group or BROKER_GROUP")

	r = cli(t, "consume", "--group", "g")
	if r.code != exitUsage {
		t.Errorf("exit %d, want %d", r.code, exitUsage)
	}
	wantOneErrorLine(t, r, "wrong number of arguments")
}

// startResponder consumes event as a service that replies to every call.
func startResponder(t *testing.T, event string, reply func(data any) any) {
	t.Helper()
	b, err := redistransport.Open(t.Context(), redistransport.Config{
		Options: core.Options{Identity: core.Identity{Group: unique("responder"), Client: "r1"}},
		URL:     testRedisURL,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// Consume returns once the group exists: a call made after this
	// returns is read (with no group yet it would fail at once).
	err = b.Consume(ctx, []string{event}, func(ctx context.Context, m *core.Message) {
		data, err := m.Data()
		if err != nil {
			t.Errorf("responder: %v", err)
			return
		}
		if err := m.Reply(ctx, reply(data)); err != nil {
			t.Errorf("reply: %v", err)
		}
		m.Ack(ctx)
	})
	if err != nil {
		cancel()
		t.Fatalf("responder consume: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		b.Close()
	})
}

func TestCallPrintsReply(t *testing.T) {
	event := unique("cli-call")
	redisClient(t, event)
	startResponder(t, event, func(data any) any {
		return map[string]any{"echo": data, "text": []byte("héllo"), "bin": []byte{0xff, 0x00}}
	})
	r := cli(t, "call", event, `{"q":[1,"two"]}`, "--timeout", "10s")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("stdout is not one line: %q", r.stdout)
	}
	got := decodeLine(t, r.stdout)
	want := map[string]any{"echo": map[string]any{"q": []any{1.0, "two"}}, "text": "héllo", "bin": "/wA="}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("reply = %s, want %v", r.stdout, want)
	}
}

func TestCallTimeout(t *testing.T) {
	event := unique("cli-call-nobody")
	rc := redisClient(t, event)
	// A group that never answers: with none at all the call would fail at
	// once (TestCallNobodyConsumesFailsFast).
	if err := rc.XGroupCreateMkStream(t.Context(), event, "mute", "$").Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := cli(t, "call", event, `{}`, "--timeout", "300ms")
	if r.code != exitTimeout {
		t.Errorf("exit %d, want %d (stderr %q)", r.code, exitTimeout, r.stderr)
	}
	wantOneErrorLine(t, r, "timed out waiting for a reply after 3") // 300ms or a little more
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing", r.stdout)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("call took %s with --timeout 300ms", d)
	}
}

func TestInvalidJSON(t *testing.T) {
	for _, args := range [][]string{
		{"publish", "E", `{"a":`},
		{"call", "E", "not json"},
		{"publish", "E", `{"a":1} trailing`},
		{"publish", "E", "-"}, // empty stdin
	} {
		r := cli(t, args...)
		if r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, r.code, exitUsage)
		}
		wantOneErrorLine(t, r, "data is not valid JSON")
	}
}

func TestPublishWithoutDataFromTerminal(t *testing.T) {
	devnull, err := os.Open(os.DevNull) // a character device, like a terminal
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	r := invocation{stdin: devnull}.run(t.Context(), "publish", "E")
	if r.code != exitUsage {
		t.Errorf("exit %d, want %d", r.code, exitUsage)
	}
	wantOneErrorLine(t, r, "no data: give JSON as an argument, or pipe it on standard input")
}

func TestBenchPrintsOneJSONLine(t *testing.T) {
	r := cli(t, "bench", "--messages", "300", "--size", "64", "--consumers", "2", "--publishers", "3", "--log-level", "debug")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("stdout is not one line: %q", r.stdout)
	}
	m := decodeLine(t, r.stdout)
	for k, want := range map[string]any{"broker": "redis", "message_count": 300.0, "payload_bytes": 64.0, "consumer_count": 2.0, "publisher_count": 3.0} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v in %s", k, m[k], want, r.stdout)
		}
	}
	for _, k := range []string{"publish_per_s", "end_to_end_per_s"} {
		if v, _ := m[k].(float64); v <= 0 {
			t.Errorf("%s = %v, want a positive rate", k, m[k])
		}
	}
	var prev float64
	for _, k := range []string{"latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms"} {
		v, ok := m[k].(float64)
		if !ok || v < prev {
			t.Errorf("%s = %v (previous %v) in %s", k, m[k], prev, r.stdout)
		}
		prev = v
	}
	for _, k := range []string{"publish_ms", "end_to_end_ms"} {
		if v, _ := m[k].(float64); v <= 0 {
			t.Errorf("%s = %v, want a positive duration", k, m[k])
		}
	}

	// The run's stream is deleted at the end.
	event := regexp.MustCompile(`spectacles-bench-[0-9a-f]{12}`).FindString(r.stderr)
	if event == "" {
		t.Fatalf("stderr does not name the bench event: %q", r.stderr)
	}
	rc := redisClient(t)
	if n, err := rc.Exists(t.Context(), event).Result(); err != nil || n != 0 {
		t.Errorf("EXISTS %s = %d, %v: the bench stream was left behind", event, n, err)
	}
}

// --publish-only and --consume-only time one side: the other side's
// figures are left out, and the CPU figures (the process's, and a real
// Redis server's, read from INFO cpu; the embedded server has no INFO cpu)
// are there.
func TestBenchPhases(t *testing.T) {
	for flag, measured := range map[string][]string{
		"--publish-only": {"publish_per_s", "publish_ms"},
		"--consume-only": {"consume_per_s", "consume_ms"},
		"":               {"publish_per_s", "publish_ms", "end_to_end_per_s", "end_to_end_ms", "latency_p50_ms"},
	} {
		name := strings.TrimPrefix(flag, "--")
		if name == "" {
			name = "end-to-end"
		}
		t.Run(name, func(t *testing.T) {
			args := []string{"bench", "--messages", "400", "--size", "64"}
			if flag != "" {
				args = append(args, flag)
			}
			r := cli(t, args...)
			if r.code != 0 {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			m := decodeLine(t, r.stdout)
			wantPhase := map[string]string{"--publish-only": "publish", "--consume-only": "consume", "": "end-to-end"}[flag]
			if m["phase"] != wantPhase {
				t.Errorf("phase %v, want %s", m["phase"], wantPhase)
			}
			all := []string{"publish_per_s", "publish_ms", "consume_per_s", "consume_ms", "end_to_end_per_s", "end_to_end_ms",
				"latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms"}
			for _, k := range all {
				v, present := m[k]
				switch {
				case slices.Contains(measured, k):
					if f, _ := v.(float64); f <= 0 {
						t.Errorf("%s = %v, want a positive figure in %s", k, v, r.stdout)
					}
				case flag == "" && strings.HasPrefix(k, "latency_"):
					if _, ok := v.(float64); !ok {
						t.Errorf("%s = %v, want a number in %s", k, v, r.stdout)
					}
				case present:
					t.Errorf("%s = %v, want it left out for %q", k, v, flag)
				}
			}
			if f, _ := m["cpu_us_per_msg"].(float64); f <= 0 {
				t.Errorf("cpu_us_per_msg = %v, want a positive figure", m["cpu_us_per_msg"])
			}
			if m["broker"] == "redis" && testRedisURL == "127.0.0.1:6379" {
				if f, ok := m["server_cpu_us_per_msg"].(float64); !ok || f < 0 {
					t.Errorf("server_cpu_us_per_msg = %v on a Redis server", m["server_cpu_us_per_msg"])
				}
			} else if _, present := m["server_cpu_us_per_msg"]; present && m["broker"] != "redis" {
				t.Errorf("server_cpu_us_per_msg = %v on %v", m["server_cpu_us_per_msg"], m["broker"])
			}
		})
	}
	r := cli(t, "bench", "--publish-only", "--consume-only")
	if r.code != exitUsage {
		t.Errorf("both phases: exit %d, want %d", r.code, exitUsage)
	}
	wantOneErrorLine(t, r, "exclude each other")
}

// --batch publishes through PublishBatch; the output says the batch size.
func TestBenchBatch(t *testing.T) {
	r := cli(t, "bench", "--messages", "500", "--size", "64", "--publishers", "2", "--batch", "64")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	m := decodeLine(t, r.stdout)
	if m["batch_size"] != 64.0 || m["message_count"] != 500.0 {
		t.Errorf("batch_size %v, message_count %v in %s", m["batch_size"], m["message_count"], r.stdout)
	}
	if r := cli(t, "bench", "--batch", "-1"); r.code != exitUsage {
		t.Errorf("--batch -1: exit %d, want %d", r.code, exitUsage)
	}
}

// --concurrency sets the consumers' handlers, and --cpuprofile writes a
// profile that go tool pprof reads (gzipped protobuf).
func TestBenchConcurrencyAndProfile(t *testing.T) {
	prof := filepath.Join(t.TempDir(), "cpu.prof")
	r := cli(t, "bench", "--messages", "300", "--size", "64", "--concurrency", "1", "--cpuprofile", prof)
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if m := decodeLine(t, r.stdout); m["message_count"] != 300.0 {
		t.Errorf("message_count %v in %s", m["message_count"], r.stdout)
	}
	b, err := os.ReadFile(prof)
	if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("profile: %d bytes, %v; want a gzipped pprof profile", len(b), err)
	}
	if r := cli(t, "bench", "--concurrency", "0"); r.code != exitUsage {
		t.Errorf("--concurrency 0: exit %d, want %d", r.code, exitUsage)
	}
	if r := cli(t, "bench", "--messages", "10", "--cpuprofile", filepath.Join(t.TempDir(), "no", "such", "dir")); r.code == 0 {
		t.Error("--cpuprofile into a missing directory succeeded")
	}
}

func TestParseRedisCPU(t *testing.T) {
	got, err := parseRedisCPU("# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:0.25\r\nused_cpu_sys_children:9\r\n")
	if err != nil || got != 1750*time.Millisecond {
		t.Errorf("parseRedisCPU = %s, %v; want 1.75s", got, err)
	}
	for _, bad := range []string{"", "# CPU\r\nused_cpu_sys:1\r\n", "used_cpu_sys:x\r\nused_cpu_user:1\r\n", "used_cpu_sys:-1\r\nused_cpu_user:1\r\n"} {
		if _, err := parseRedisCPU(bad); err == nil {
			t.Errorf("parseRedisCPU(%q) accepted", bad)
		}
	}
}

func TestBenchRejectsBadFlags(t *testing.T) {
	r := cli(t, "bench", "--size", "3")
	if r.code == 0 {
		t.Fatal("bench --size 3 succeeded")
	}
	wantOneErrorLine(t, r, "payload size must be at least 16 bytes")

	r = cli(t, "bench", "--messages", "lots")
	if r.code != exitUsage {
		t.Errorf("exit %d, want %d", r.code, exitUsage)
	}
	wantOneErrorLine(t, r, `"lots"`)
}

func TestConfigurationErrors(t *testing.T) {
	cases := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"REDIS_POOL_SIZE": "abc"}, []string{"publish", "E", "{}"}, `spectacles: REDIS_POOL_SIZE: "abc" is not an integer`},
		{map[string]string{"BROKER_TYPE": "amqp"}, []string{"publish", "E", "{}"}, `spectacles: BROKER_TYPE=amqp publishes to the exchange named by the group: set --group or BROKER_GROUP`},
		{map[string]string{"BROKER_TYPE": "zeromq"}, []string{"publish", "E", "{}"}, `spectacles: BROKER_TYPE: "zeromq" is not a broker type`},
		{map[string]string{"REDIS_POOL_SIZE": "abc"}, []string{"--pool-size", "3", "publish", "E", "{}"}, ""}, // the flag wins
		{nil, []string{"--message-timeout", "1", "publish", "E", "{}"}, `spectacles: --message-timeout: "1" is not a duration`},
		{nil, []string{"frobnicate"}, `spectacles: unknown command "frobnicate"`},
		{nil, []string{"publish", "--bogus", "E"}, `spectacles: unknown flag: --bogus`},
		{nil, []string{"publish"}, `spectacles: wrong number of arguments (usage: spectacles publish EVENT [JSON|-]`},
	}
	for _, c := range cases {
		ev := unique("cli-conf")
		redisClient(t, ev)
		args := slicesReplace(c.args, "E", ev)
		r := invocation{env: c.env}.run(t.Context(), args...)
		if c.want == "" {
			if r.code != 0 {
				t.Errorf("%v %v: exit %d, stderr %q", c.env, c.args, r.code, r.stderr)
			}
			continue
		}
		if r.code != exitUsage {
			t.Errorf("%v %v: exit %d, want %d", c.env, c.args, r.code, exitUsage)
		}
		wantOneErrorLine(t, r, c.want)
	}
}

func slicesReplace(s []string, old, new string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		if v == old {
			v = new
		}
		out[i] = v
	}
	return out
}

func TestPasswordsAreNeverPrinted(t *testing.T) {
	// Nothing listens on port 1: connecting fails and the error quotes
	// the server.
	for _, inv := range []struct {
		env  map[string]string
		args []string
	}{
		{map[string]string{"REDIS_URL": "redis://admin:hunter2secret@127.0.0.1:1/0"}, []string{"publish", "E", "{}"}},
		{nil, []string{"--redis-url", "redis://admin:hunter2secret@127.0.0.1:1/0", "call", "E", "{}"}},
		{map[string]string{"REDIS_URL": "redis://admin:hunter2secret@[::1/0"}, []string{"publish", "E", "{}"}},
		{map[string]string{"REDIS_URL": "admin:hunter2secret@127.0.0.1:1,admin:hunter2secret@127.0.0.1:2"}, []string{"publish", "E", "{}"}},
		{map[string]string{"REDIS_URL": "redis://:hunter2secret@127.0.0.1:1/0", "LOG_LEVEL": "debug"}, []string{"bench", "--messages", "1"}},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		r := invocation{env: inv.env}.run(ctx, inv.args...)
		cancel()
		if r.code == 0 {
			t.Errorf("%v: succeeded against a closed port", inv.args)
		}
		if strings.Contains(r.stderr+r.stdout, "hunter2") {
			t.Errorf("%v: password printed: %q", inv.args, r.stderr)
		}
		if _, logging := inv.env["LOG_LEVEL"]; logging {
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if !strings.HasPrefix(lines[len(lines)-1], "spectacles: ") {
				t.Errorf("%v: stderr does not end with the error: %q", inv.args, r.stderr)
			}
		} else {
			wantOneErrorLine(t, r, "")
		}
	}
}

// TestConsumeStopsOnSignal runs the built binary and interrupts it the way
// a user or a process manager does.
func TestConsumeStopsOnSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "spectacles")
	build := exec.Command("go", "build", "-o", bin, moduleRoot)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			event, group := unique("cli-signal"), unique("cli-group")
			rc := redisClient(t, event)
			if r := cli(t, "publish", event, `{"before":"signal"}`); r.code != 0 {
				t.Fatalf("publish: %+v", r)
			}
			cmd := exec.Command(bin, "consume", "--group", group, event)
			cmd.Env = append(os.Environ(), "REDIS_URL="+testRedisURL)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr syncBuffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string, 10)
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			select {
			case line := <-lines:
				if m := decodeLine(t, line); !reflect.DeepEqual(m["data"], map[string]any{"before": "signal"}) {
					t.Errorf("line = %s", line)
				}
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("no message printed; stderr:\n%s", stderr.String())
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			for range lines {
			}
			waited := make(chan error, 1)
			go func() { waited <- cmd.Wait() }()
			select {
			case err := <-waited:
				if err != nil {
					t.Errorf("consume after %s: %v; stderr:\n%s", sig, err, stderr.String())
				}
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("consume did not exit within 15s of %s", sig)
			}
			wantPending(t, rc, event, group, 0, "after a clean stop")
		})
	}
}
