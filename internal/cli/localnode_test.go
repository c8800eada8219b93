package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/internal/localnode"
)

// localEnv is an environment without REDIS_URL whose runtime directory is
// the test's own, so that no test meets a developer's local node.
func localEnv(t *testing.T) map[string]string {
	t.Helper()
	tmp := t.TempDir()
	return map[string]string{"REDIS_URL": "", "XDG_RUNTIME_DIR": filepath.Join(tmp, "run"), "HOME": tmp}
}

// TestEmbeddedDefault runs the README's two Run lines in one process: the
// consumer starts the local node, the publish uses it.
func TestEmbeddedDefault(t *testing.T) {
	env := localEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	out, errOut := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"consume", "--group", "audit", "MESSAGE_CREATE"}, strings.NewReader(""), out, errOut, mapLookup(env))
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("consume exit %d, stderr %q", code, errOut.String())
		}
		if _, err := os.Stat(filepath.Join(env["XDG_RUNTIME_DIR"], "spectacles", localnode.FileName)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the advertisement is left after consume exited: %v", err)
		}
	}()
	lines := waitLines(t, errOut, 3, 15*time.Second)
	for i, want := range []string{"embedded in-memory Redis", "keeps nothing on disk", "REDIS_URL=redis://127.0.0.1:"} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("stderr line %d does not say %q:\n%s", i, want, errOut.String())
		}
	}
	url := strings.TrimPrefix(lines[2], "REDIS_URL=")

	r := invocation{env: env}.run(t.Context(), "publish", "MESSAGE_CREATE", `{"content":"hi"}`)
	if r.code != 0 {
		t.Fatalf("publish: exit %d, stderr %q", r.code, r.stderr)
	}
	if !regexp.MustCompile(`^\d+-\d+\n$`).MatchString(r.stdout) {
		t.Errorf("stdout = %q, want an id", r.stdout)
	}
	if !strings.Contains(r.stderr, "using the local node") || !strings.Contains(r.stderr, strings.TrimPrefix(url, "redis://")) {
		t.Errorf("publish's stderr does not name the local node %s: %q", url, r.stderr)
	}
	got := waitLines(t, out, 1, 15*time.Second)
	if m := decodeLine(t, got[0]); !reflect.DeepEqual(m["data"], map[string]any{"content": "hi"}) {
		t.Errorf("consumer printed %s", got[0])
	}
}

// TestLocalNodeShortLivedCommandsNeedOne: without REDIS_URL and with no
// local node, the commands that would only talk to a throwaway server of
// their own fail with the hint instead of succeeding.
func TestLocalNodeShortLivedCommandsNeedOne(t *testing.T) {
	env := localEnv(t)
	for _, args := range [][]string{
		{"publish", "MESSAGE_CREATE", `{"content":"hi"}`},
		{"call", "REQUEST", `{}`},
		{"send", "--shard", "0", `{"op":4,"d":{"guild_id":"1","channel_id":null,"self_mute":false,"self_deaf":false}}`},
		{"streams"},
		{"groups", "MESSAGE_CREATE"},
		{"pending", "MESSAGE_CREATE", "audit"},
		{"ack", "MESSAGE_CREATE", "audit", "1-1"},
		{"claim", "MESSAGE_CREATE", "audit", "1-1"},
		{"dlq", "list", "MESSAGE_CREATE"},
		{"tail", "MESSAGE_CREATE"},
		{"shards"},
	} {
		r := invocation{env: env}.run(t.Context(), args...)
		if r.code != exitUsage || r.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, want %d and nothing", args, r.code, r.stdout, exitUsage)
		}
		wantOneErrorLine(t, r, "no local node is running and REDIS_URL is not set: start one with 'spectacles consume ...' or 'spectacles'")
	}
}

// TestLocalNodeCommandModes checks which commands start the local node,
// over the real command tree.
func TestLocalNodeCommandModes(t *testing.T) {
	a := &app{}
	want := map[string]nodeMode{"spectacles": nodeStart, "spectacles console": nodeStart, "spectacles consume": nodeStart,
		"spectacles gateway": nodeStart, "spectacles respond": nodeStart, "spectacles proxy": nodeStart, "spectacles bench": nodePrivate}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if got := commandNodeMode(c); got != want[c.CommandPath()] { // absent: nodeAttach
			t.Errorf("%s: mode %d, want %d", c.CommandPath(), got, want[c.CommandPath()])
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(a.rootCommand())
}

// TestLocalNodeBenchRunsPrivately: bench without a local node measures a
// server of its own, which it does not advertise.
func TestLocalNodeBenchRunsPrivately(t *testing.T) {
	env := localEnv(t)
	r := invocation{env: env}.run(t.Context(), "bench", "--messages", "50", "--consumers", "1", "--publishers", "1")
	if r.code != 0 {
		t.Fatalf("bench: exit %d, stderr %q", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "private embedded in-memory Redis") || !strings.Contains(r.stdout, `"broker":"redis-embedded"`) {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(env["XDG_RUNTIME_DIR"], "spectacles", localnode.FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bench advertised its private server: %v", err)
	}
}

// node is a spectacles process started by the process tests.
type node struct {
	cmd    *exec.Cmd
	stdout chan string
	stderr *syncBuffer
}

// processEnv is the environment of a spectacles process: this one's,
// without REDIS_URL and broker settings, with HOME and XDG_RUNTIME_DIR
// the test's own.
func processEnv(t *testing.T) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "REDIS_URL", "BROKER_TYPE", "HOME", "XDG_RUNTIME_DIR", "TMPDIR":
			continue
		}
		env = append(env, kv)
	}
	tmp := t.TempDir()
	return append(env, "HOME="+tmp, "XDG_RUNTIME_DIR="+filepath.Join(tmp, "run"))
}

func startNode(t *testing.T, bin string, env []string, args ...string) *node {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	n := &node{cmd: cmd, stdout: make(chan string, 16), stderr: &syncBuffer{}}
	cmd.Stderr = n.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			n.stdout <- sc.Text()
		}
		close(n.stdout)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return n
}

// url waits for the process to name its Redis on stderr: the REDIS_URL
// line of the one that started the local node, or the "using" line.
func (n *node) url(t *testing.T) (url string, started bool) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^REDIS_URL=(redis://127\.0\.0\.1:\d+)$|using the local node, the embedded Redis at (127\.0\.0\.1:\d+) `)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := re.FindStringSubmatch(n.stderr.String()); m != nil {
			if m[1] != "" {
				return m[1], true
			}
			return "redis://" + m[2], false
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v named no Redis within 20s; stderr:\n%s", n.cmd.Args, n.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and waits for the process to exit.
func (n *node) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		for range n.stdout {
		}
		waited <- n.cmd.Wait()
	}()
	select {
	case err := <-waited:
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("%v did not exit within 20s of %s", n.cmd.Args, sig)
		return nil
	}
}

// wantMessage waits for the consumer to print a message with data want.
func (n *node) wantMessage(t *testing.T, want map[string]any) {
	t.Helper()
	select {
	case line, ok := <-n.stdout:
		if !ok {
			t.Fatalf("%v exited; stderr:\n%s", n.cmd.Args, n.stderr.String())
		}
		if m := decodeLine(t, line); !reflect.DeepEqual(m["data"], want) {
			t.Errorf("consumer printed %s, want data %v", line, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%v printed nothing within 20s; stderr:\n%s", n.cmd.Args, n.stderr.String())
	}
}

// runBin runs a short-lived spectacles process.
func runBin(t *testing.T, bin string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var stdout, stderr strings.Builder
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(""), &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return result{code, stdout.String(), stderr.String()}
}

func advertPath(env []string) string {
	for _, kv := range env {
		if d, ok := strings.CutPrefix(kv, "XDG_RUNTIME_DIR="); ok {
			return filepath.Join(d, "spectacles", localnode.FileName)
		}
	}
	panic("no XDG_RUNTIME_DIR")
}

// TestLocalNodeProcesses runs the README's Run lines as separate
// processes, as typed in two shells, and what goes around them: a stale
// advertisement, two consumers starting at once.
func TestLocalNodeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "spectacles")
	if out, err := exec.Command("go", "build", "-o", bin, moduleRoot).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	publish := []string{"publish", "MESSAGE_CREATE", `{"content":"hi"}`}
	hint := "spectacles: no local node is running and REDIS_URL is not set: start one with 'spectacles consume ...' or 'spectacles' (the console), or set REDIS_URL\n"

	t.Run("RunLines", func(t *testing.T) {
		env := processEnv(t)
		consumer := startNode(t, bin, env, "consume", "--group", "audit", "MESSAGE_CREATE")
		url, started := consumer.url(t)
		if !started {
			t.Fatalf("the consumer did not start the local node; stderr:\n%s", consumer.stderr.String())
		}
		r := runBin(t, bin, env, publish...)
		if r.code != 0 || !regexp.MustCompile(`^\d+-\d+\n$`).MatchString(r.stdout) {
			t.Fatalf("publish: %+v", r)
		}
		if !strings.Contains(r.stderr, strings.TrimPrefix(url, "redis://")) {
			t.Errorf("publish did not use %s: %q", url, r.stderr)
		}
		consumer.wantMessage(t, map[string]any{"content": "hi"})

		if err := consumer.stop(t, syscall.SIGTERM); err != nil {
			t.Errorf("consume after SIGTERM: %v; stderr:\n%s", err, consumer.stderr.String())
		}
		if _, err := os.Stat(advertPath(env)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the advertisement is left after its owner exited: %v", err)
		}
		r = runBin(t, bin, env, publish...)
		if r.code != exitUsage || r.stdout != "" || r.stderr != hint {
			t.Errorf("publish with no node: %+v, want exit %d and %q", r, exitUsage, hint)
		}
	})

	t.Run("StaleAdvertisement", func(t *testing.T) {
		env := processEnv(t)
		consumer := startNode(t, bin, env, "consume", "--group", "audit", "MESSAGE_CREATE")
		oldURL, _ := consumer.url(t)
		// Killed: it cannot remove its file, which now names a dead pid
		// and a closed port.
		_ = consumer.stop(t, syscall.SIGKILL)
		if _, err := os.Stat(advertPath(env)); err != nil {
			t.Fatalf("no advertisement left by the killed process: %v", err)
		}
		r := runBin(t, bin, env, publish...)
		if r.code != exitUsage || r.stderr != hint {
			t.Errorf("publish with a stale advertisement: %+v, want exit %d and %q", r, exitUsage, hint)
		}
		// A file naming a live process (this one) whose port is closed
		// is stale too.
		stale := fmt.Sprintf(`{"addr":%q,"pid":%d,"started":"2026-01-01T00:00:00Z"}`, strings.TrimPrefix(oldURL, "redis://"), os.Getpid())
		if err := os.WriteFile(advertPath(env), []byte(stale), 0o600); err != nil {
			t.Fatal(err)
		}
		if r := runBin(t, bin, env, publish...); r.code != exitUsage || r.stderr != hint {
			t.Errorf("publish with a closed port advertised: %+v", r)
		}
		next := startNode(t, bin, env, "consume", "--group", "audit", "MESSAGE_CREATE")
		if _, started := next.url(t); !started {
			t.Fatalf("the next consumer did not replace the stale node; stderr:\n%s", next.stderr.String())
		}
		b, err := os.ReadFile(advertPath(env))
		if err != nil || !strings.Contains(string(b), `"pid":`+strconv.Itoa(next.cmd.Process.Pid)+",") {
			t.Errorf("advertisement %s (%v), want pid %d", b, err, next.cmd.Process.Pid)
		}
		if r := runBin(t, bin, env, publish...); r.code != 0 {
			t.Fatalf("publish: %+v", r)
		}
		next.wantMessage(t, map[string]any{"content": "hi"})
	})

	t.Run("Race", func(t *testing.T) {
		env := processEnv(t)
		const n = 3
		nodes := make([]*node, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				nodes[i] = startNode(t, bin, env, "consume", "--group", "race-"+strconv.Itoa(i), "MESSAGE_CREATE")
			})
		}
		wg.Wait()
		owners := 0
		first, _ := nodes[0].url(t)
		for _, nd := range nodes {
			url, started := nd.url(t)
			if started {
				owners++
			}
			if url != first {
				t.Errorf("consumers on two servers: %s and %s", first, url)
			}
		}
		if owners != 1 {
			t.Errorf("%d consumers started a node, want 1", owners)
		}
		if r := runBin(t, bin, env, publish...); r.code != 0 {
			t.Fatalf("publish: %+v", r)
		}
		for _, nd := range nodes { // every group gets the message
			nd.wantMessage(t, map[string]any{"content": "hi"})
		}
	})
}
