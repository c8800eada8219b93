package cli

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/transport/amqp/amqptest"
)

// process is a spectacles process run by a test.
type process struct {
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan error
}

// startProcess starts bin with args against the test server; the process
// is killed when the test ends if it is still running.
func startProcess(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	return startProcessEnv(t, bin, []string{"REDIS_URL=" + testRedisURL}, args...)
}

// startProcessEnv is startProcess with env added to the environment.
func startProcessEnv(t *testing.T, bin string, env []string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...), done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *process) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(limit):
		t.Fatalf("%v did not exit within %s; stderr:\n%s", p.cmd.Args, limit, p.stderr.String())
		return -1
	}
}

// startRespond starts `spectacles respond` and waits until it consumes.
func startRespond(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	p := startProcess(t, bin, append([]string{"respond"}, args...)...)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.stderr.String(), "msg=responding") {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("respond exited (%v); stderr:\n%s", err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("respond did not start within 15s; stderr:\n%s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// call runs `spectacles call` as a process and returns its exit code and
// standard output.
func callProcess(t *testing.T, bin, event, data string, timeout time.Duration) (int, string, string) {
	t.Helper()
	p := startProcess(t, bin, "call", event, data, "--timeout", timeout.String())
	code := p.wait(t, timeout+15*time.Second)
	return code, p.stdout.String(), p.stderr.String()
}

// deadLetterReason waits for the one dead letter of event and returns its
// reason.
func deadLetterReason(t *testing.T, event string) string {
	t.Helper()
	c := redisClient(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, err := c.XRange(context.Background(), core.DeadLetterEvent(event), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) > 1 {
			t.Fatalf("%d dead letters, want 1", len(entries))
		}
		if len(entries) == 1 {
			reason, _ := entries[0].Values[core.HeaderReason].(string)
			return reason
		}
		if time.Now().After(deadline) {
			t.Fatal("no dead letter within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRespondAnswersCalls runs respond and call as two processes against
// the real server: the README's call examples, end to end.
func TestRespondAnswersCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildSpectacles(t)

	t.Run("command", func(t *testing.T) {
		event, group := unique("cli-respond"), unique("g")
		rc := redisClient(t, event)
		// The data on stdin, the metadata in the environment.
		p := startRespond(t, bin, event, "--group", group, "--", "sh", "-c",
			`printf '{"in":'; cat | tr -d '\n'; printf ',"event":"%s","deliveries":%s}' "$SPECTACLES_EVENT" "$SPECTACLES_DELIVERIES"`)
		code, out, stderr := callProcess(t, bin, event, `{"q":[1,"two"],"s":"é<>"}`, 10*time.Second)
		if code != 0 {
			t.Fatalf("call exit %d, stderr %s\nrespond stderr:\n%s", code, stderr, p.stderr.String())
		}
		got := decodeLine(t, out)
		want := map[string]any{"in": map[string]any{"q": []any{1.0, "two"}, "s": "é<>"}, "event": event, "deliveries": 1.0}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("reply %s, want %v", out, want)
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if code := p.wait(t, 15*time.Second); code != 0 {
			t.Errorf("respond exit %d after SIGTERM; stderr:\n%s", code, p.stderr.String())
		}
		wantPending(t, rc, event, group, 0, "the answered call was not acknowledged")
	})

	t.Run("fixed reply", func(t *testing.T) {
		event, group := unique("cli-respond"), unique("g")
		redisClient(t, event)
		startRespond(t, bin, event, "--group", group, "--reply", `{"ok":true}`)
		for i := range 3 {
			code, out, stderr := callProcess(t, bin, event, `{"n":`+strconv.Itoa(i)+`}`, 10*time.Second)
			if code != 0 || strings.TrimSpace(out) != `{"ok":true}` {
				t.Fatalf("call %d: exit %d, stdout %q, stderr %q", i, code, out, stderr)
			}
		}
	})

	t.Run("failing command is dead-lettered", func(t *testing.T) {
		event, group := unique("cli-respond"), unique("g")
		rc := redisClient(t, event)
		// More than 1 KiB of stderr, with a control character at the end.
		startRespond(t, bin, event, "--group", group, "--", "sh", "-c",
			`cat >/dev/null; i=0; while [ $i -lt 100 ]; do echo "noise line $i" >&2; i=$((i+1)); done; printf 'last\033[2J words\n' >&2; exit 3`)
		code, out, _ := callProcess(t, bin, event, `{}`, time.Second)
		if code != exitTimeout || out != "" {
			t.Errorf("call: exit %d, stdout %q; want %d and no reply", code, out, exitTimeout)
		}
		reason := deadLetterReason(t, event)
		if !strings.Contains(reason, "exit status 3") || !strings.HasSuffix(reason, `last\x1b[2J words`) {
			t.Errorf("reason %q: want the exit status and the escaped end of stderr", reason)
		}
		if strings.Contains(reason, "noise line 0\n") || len(reason) > 1200 {
			t.Errorf("reason holds more than the last 1 KiB of stderr (%d bytes)", len(reason))
		}
		wantPending(t, rc, event, group, 0, "the rejected message is still pending")
	})

	t.Run("output that is not JSON is dead-lettered", func(t *testing.T) {
		event, group := unique("cli-respond"), unique("g")
		redisClient(t, event)
		startRespond(t, bin, event, "--group", group, "--", "echo", "not json")
		if code, _, _ := callProcess(t, bin, event, `{}`, time.Second); code != exitTimeout {
			t.Errorf("call exit %d, want %d", code, exitTimeout)
		}
		if reason := deadLetterReason(t, event); !strings.Contains(reason, "not one JSON value") {
			t.Errorf("reason %q", reason)
		}
	})

	t.Run("timeout kills the process group", func(t *testing.T) {
		event, group := unique("cli-respond"), unique("g")
		redisClient(t, event)
		pidFile := filepath.Join(t.TempDir(), "pid")
		startRespond(t, bin, event, "--group", group, "--timeout", "300ms", "--", "sh", "-c",
			`sleep 60 & echo $! > `+pidFile+`; wait`)
		if code, _, _ := callProcess(t, bin, event, `{}`, 2*time.Second); code != exitTimeout {
			t.Errorf("call exit %d, want %d", code, exitTimeout)
		}
		if reason := deadLetterReason(t, event); !strings.Contains(reason, "longer than --timeout 300ms") {
			t.Errorf("reason %q", reason)
		}
		text, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(text)))
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for alive(pid) {
			if time.Now().After(deadline) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("the command's child %d outlived the timeout", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("signal waits for running commands", func(t *testing.T) {
		for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
			t.Run(sig.String(), func(t *testing.T) {
				event, group := unique("cli-respond"), unique("g")
				rc := redisClient(t, event)
				started := filepath.Join(t.TempDir(), "started")
				p := startRespond(t, bin, event, "--group", group, "--", "sh", "-c",
					`touch `+started+`; sleep 1; cat`)
				caller := startProcess(t, bin, "call", event, `{"late":true}`, "--timeout", "15s")
				deadline := time.Now().Add(10 * time.Second)
				for {
					if _, err := os.Stat(started); err == nil {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("the command did not start; stderr:\n%s", p.stderr.String())
					}
					time.Sleep(10 * time.Millisecond)
				}
				if err := p.cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				if code := p.wait(t, 15*time.Second); code != 0 {
					t.Errorf("respond exit %d after %s; stderr:\n%s", code, sig, p.stderr.String())
				}
				if code := caller.wait(t, 20*time.Second); code != 0 || strings.TrimSpace(caller.stdout.String()) != `{"late":true}` {
					t.Errorf("call: exit %d, stdout %q, stderr %q", code, caller.stdout.String(), caller.stderr.String())
				}
				wantPending(t, rc, event, group, 0, "after a clean stop")
			})
		}
	})
}

// alive reports whether process pid runs (a zombie does not).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(rest, "Z")
}

// TestRespondUndecodableIsDeadLettered: a payload that cannot be decoded
// is rejected without running the command.
func TestRespondUndecodableIsDeadLettered(t *testing.T) {
	event, group := unique("cli-respond-undecodable"), unique("g")
	rc := redisClient(t, event)
	if err := rc.XAdd(context.Background(), &goredis.XAddArgs{Stream: event, Values: []any{"data", "\xc1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	reason := respondUntilDeadLetter(t, event, event, "--group", group, "--", "sh", "-c", "touch "+marker+"; cat")
	if !strings.Contains(reason, "cannot be decoded") {
		t.Errorf("reason %q", reason)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the command ran for an undecodable payload")
	}
}

func TestRespondUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"respond", "--group", "g", "E"}, "respond needs a reply"},
		{[]string{"respond", "--group", "g", "E", "--reply", "{}", "--", "cat"}, "not both"},
		{[]string{"respond", "--group", "g", "--reply", "{}"}, "at least one event"},
		{[]string{"respond", "--group", "g", "--", "cat"}, "at least one event"},
		{[]string{"respond", "--group", "g", "E", "--reply", "{nope"}, "--reply is not valid JSON"},
		{[]string{"respond", "E", "--reply", "{}"}, "respond needs a group"},
		{[]string{"respond", "--group", "g", "E", "--timeout", "0s", "--", "cat"}, "--timeout must be positive"},
		{[]string{"respond", "--group", "g", "E", "--concurrency", "0", "--", "cat"}, "--concurrency must be at least 1"},
	} {
		r := cli(t, tc.args...)
		if r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d", tc.args, r.code, exitUsage)
		}
		wantOneErrorLine(t, r, tc.want)
	}
}

func TestTailBufferKeepsTheEnd(t *testing.T) {
	tb := &tailBuffer{max: 8}
	tb.Write([]byte("short\n"))
	if got := tb.String(); got != "short" {
		t.Errorf("%q", got)
	}
	tb.Write([]byte("é and the end\n"))
	if got := tb.String(); got != "...the end" {
		t.Errorf("%q", got)
	}
	tb = &tailBuffer{max: 4}
	tb.Write([]byte("aé€")) // the cut falls inside €
	if got := tb.String(); got != "...€" {
		t.Errorf("%q is not cut at a rune boundary", got)
	}
}

// TestRespondOverAMQP: with BROKER_TYPE=amqp, respond answers a call on
// the caller's reply_to queue, and acknowledges a published message (no
// reply_to: not a call) without a reply, warning once.
func TestRespondOverAMQP(t *testing.T) {
	url := amqptest.URL(t)
	group, ev := unique("cli-amqp-respond"), unique("REQ")
	deleteAMQP(t, url, group, group+":"+ev, group+":"+ev+":dlq")
	env := map[string]string{"BROKER_TYPE": "amqp", "AMQP_URL": url, "BROKER_GROUP": group}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ran := filepath.Join(t.TempDir(), "ran")
	done := make(chan result, 1)
	go func() {
		done <- invocation{env: env}.run(ctx, "respond", ev, "--", "sh", "-c", `echo >> `+ran+`; printf '{"got":'; cat; printf '}'`)
	}()
	// The queue exists once respond runs: call until one is answered.
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := invocation{env: env}.run(t.Context(), "call", ev, `{"n":1}`, "--timeout", "2s")
		if r.code == 0 {
			if got := strings.TrimSpace(r.stdout); got != `{"got":{"n":1}}` {
				t.Errorf("reply %s", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no call answered within 20s: %+v", r)
		}
	}
	for i := range 2 {
		if r := (invocation{env: env}).run(t.Context(), "publish", ev, `{"published":`+strconv.Itoa(i)+`}`); r.code != 0 {
			t.Fatalf("publish: %+v", r)
		}
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		text, _ := os.ReadFile(ran)
		if strings.Count(string(text), "\n") >= 3 { // the call and the two published messages
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the published messages were not handled within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	r := <-done
	if r.code != 0 {
		t.Fatalf("respond exit %d: %s", r.code, r.stderr)
	}
	if n := strings.Count(r.stderr, "not a call"); n != 1 {
		t.Errorf("%d warnings about messages that are not calls, want 1:\n%s", n, r.stderr)
	}
	if strings.Contains(r.stderr, "rejecting") || strings.Contains(r.stderr, "reply failed") {
		t.Errorf("a published message was not simply acknowledged:\n%s", r.stderr)
	}
}

// TestRespondEndlessOutputIsBounded: a command that writes without end is
// killed once its output passes the bound, and the message dead-lettered.
func TestRespondEndlessOutputIsBounded(t *testing.T) {
	event, group := unique("cli-respond-endless"), unique("g")
	redisClient(t, event)
	if r := cli(t, "publish", event, `{}`); r.code != 0 {
		t.Fatalf("publish: %+v", r)
	}
	reason := respondUntilDeadLetter(t, event, event, "--group", group, "--timeout", "60s", "--", "yes")
	if !strings.Contains(reason, "output passed 16777216 bytes") {
		t.Errorf("reason %q", reason)
	}
}
