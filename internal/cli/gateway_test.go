package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/gatewaytest"
	"github.com/spectacles-go/spectacles/gateway/simulator"
	"github.com/spectacles-go/spectacles/internal/brokertest"
	redistransport "github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

// The gateway speaks fixed event names, so each of its tests leases a
// database of its own and deletes those streams before and after.
func gatewayTestURL(t *testing.T) string {
	t.Helper()
	u := redistest.LeaseDB(t, testRedisURL)
	c, err := redistransport.NewClient(u, 2)
	if err != nil {
		t.Fatal(err)
	}
	keys := append([]string{"SEND", "SEND:dlq", "0", "1", "GUILD_CREATE", "READY", "RESUMED", "GUILD_MEMBERS_CHUNK"}, simulator.SyntheticEvents()...)
	c.Del(context.Background(), keys...)
	t.Cleanup(func() {
		ctx := context.Background()
		c.Del(ctx, keys...)
		// The gateway's identify keys expire in seconds; the next
		// holder of the database should not wait for them.
		for it := c.Scan(ctx, 0, "spectacles:identify:*", 100).Iterator(); it.Next(ctx); {
			c.Del(ctx, it.Val())
		}
		c.Close()
	})
	return u
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startSimulator(t *testing.T, cfg simulator.Config) *simulator.Server {
	t.Helper()
	return gatewaytest.Serve(t, cfg)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestGatewayNodeEndToEnd(t *testing.T) {
	const token = "sekret-token-0123456789"
	sim := startSimulator(t, simulator.Config{Token: token, Shards: 2, Guilds: 6, MaxConcurrency: 2,
		HeartbeatInterval: time.Second, IdentifyInterval: 10 * time.Millisecond})
	url := gatewayTestURL(t)
	prom := freeAddr(t)
	env := map[string]string{
		"REDIS_URL": url, "DISCORD_TOKEN": token, "DISCORD_API_PROTOCOL": "http",
		"DISCORD_API_HOST": strings.TrimPrefix(sim.URL(), "http://"), "DISCORD_EVENTS": "MESSAGE_CREATE",
		"DISCORD_COMPRESS": "zlib-stream", "PROMETHEUS_ADDRESS": prom, "BROKER_GROUP": unique("gateway"),
	}
	ctx, cancel := context.WithCancel(t.Context())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"gateway"}, strings.NewReader(""), io.Discard, &stderr, mapLookup(env))
	}()
	eventually(t, "both shards identified", func() bool {
		n := 0
		for _, id := range sim.Snapshot().Identifies {
			if id.Accepted {
				n++
			}
		}
		return n == 2
	})
	c, err := redistransport.NewClient(url, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Dispatches reach the broker under their event name.
	guild := sim.Guilds()[0].ID
	if err := sim.Dispatch(guild, "MESSAGE_CREATE", map[string]any{"content": "nonce-e2e"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the dispatch in the MESSAGE_CREATE stream", func() bool {
		for _, e := range c.XRange(context.Background(), "MESSAGE_CREATE", "-", "+").Val() {
			if strings.Contains(fmt.Sprint(e.Values["data"]), "nonce-e2e") {
				return true
			}
		}
		return false
	})

	// A SEND published with the CLI reaches the shard that owns the guild.
	target := sim.GuildsForShard(1, 2)[0]
	r := invocation{env: map[string]string{"REDIS_URL": url}}.run(t.Context(), "publish", "SEND",
		fmt.Sprintf(`{"guild_id":%q,"packet":{"op":8,"d":{"guild_id":%q,"query":"","limit":0}}}`, target, target))
	if r.code != 0 {
		t.Fatalf("publish SEND: %d %s", r.code, r.stderr)
	}
	eventually(t, "op 8 at shard 1", func() bool {
		for _, p := range sim.Snapshot().Received {
			if p.Op == 8 && p.ShardID == 1 {
				return true
			}
		}
		return false
	})

	// spec-tacles/gateway's metric names.
	eventually(t, "metrics", func() bool {
		resp, err := http.Get("http://" + prom + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		text := string(body)
		for _, want := range []string{`gateway_packets_received{op="0",shard="0",t="MESSAGE_CREATE"}`, `gateway_packets_sent{op="8",shard="1",t=""}`,
			`gateway_shards_alive{id="1"} 1`, `gateway_total_shards 2`, `gateway_ping_count{id="0"}`} {
			if !strings.Contains(text, want) {
				return false
			}
		}
		return true
	})

	// `spectacles shards` reads the health the node reports through Redis.
	eventually(t, "shards --json", func() bool {
		r := invocation{env: map[string]string{"REDIS_URL": url}}.run(t.Context(), "shards", "--json")
		var nodes []struct {
			Group  string `json:"group"`
			Shards []struct {
				Shard int    `json:"shard"`
				State string `json:"state"`
			} `json:"shards"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &nodes) != nil {
			return false
		}
		for _, n := range nodes {
			if n.Group == env["BROKER_GROUP"] && len(n.Shards) == 2 && n.Shards[0].State == "ready" && n.Shards[1].State == "ready" {
				return true
			}
		}
		return false
	})

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("gateway exited %d: %s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not stop")
	}
	eventually(t, "the shutdown closes", func() bool {
		n := 0
		for _, cl := range sim.Snapshot().Closes {
			if !cl.ByServer && cl.Code != 1000 && cl.Code != 1001 && !cl.Abrupt {
				n++
			}
		}
		return n == 2
	})
	if strings.Contains(stderr.String(), token) {
		t.Error("the token was printed")
	}
}

func TestGatewayBadTokenExits(t *testing.T) {
	sim := startSimulator(t, simulator.Config{})
	url := gatewayTestURL(t)
	r := invocation{env: map[string]string{
		"REDIS_URL": url, "DISCORD_TOKEN": "wrong-secret-token", "DISCORD_API_PROTOCOL": "http",
		"DISCORD_API_HOST": strings.TrimPrefix(sim.URL(), "http://"),
	}}.run(t.Context(), "gateway")
	if r.code != exitUsage || !strings.Contains(r.stderr, "401") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "wrong-secret-token") {
		t.Error("the token was printed")
	}
}

func TestGatewayConfiguration(t *testing.T) {
	base := map[string]string{"DISCORD_TOKEN": "t"}
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"DISCORD_TOKEN": ""}, "DISCORD_TOKEN (or --token) is required"},
		{map[string]string{"DISCORD_INTENTS": "GUILDS,GUILD_MESAGES"}, `DISCORD_INTENTS: unknown intent "GUILD_MESAGES"`},
		{map[string]string{"DISCORD_RAW_INTENTS": "abc"}, `DISCORD_RAW_INTENTS: "abc" is not a non-negative integer`},
		{map[string]string{"DISCORD_SHARD_COUNT": "abc"}, `DISCORD_SHARD_COUNT: "abc" is not an integer`},
		{map[string]string{"DISCORD_SHARD_IDS": "3-1"}, "DISCORD_SHARD_IDS: invalid shard ids"},
		{map[string]string{"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "0-2"}, "not below the shard count 2"},
		{map[string]string{"DISCORD_PRESENCE": "[1]"}, "DISCORD_PRESENCE: not a JSON object"},
		{map[string]string{"DISCORD_COMPRESS": "gzip"}, `DISCORD_COMPRESS: unknown compression "gzip"`},
		{map[string]string{"DISCORD_API_PROTOCOL": "ftp"}, `DISCORD_API_PROTOCOL: "ftp" is not http or https`},
		{map[string]string{"DISCORD_API_VERSION": "x"}, `DISCORD_API_VERSION: "x" is not an integer`},
		{map[string]string{"SHARD_STORE_TYPE": "etcd"}, `SHARD_STORE_TYPE: "etcd" is not memory or redis`},
		{map[string]string{"PROMETHEUS_ENDPOINT": "metrics"}, "PROMETHEUS_ENDPOINT"},
		{map[string]string{"GATEWAY_DISPATCH_FORMAT": "etf"}, "GATEWAY_DISPATCH_FORMAT"},
		{map[string]string{"GATEWAY_DRAIN_TIMEOUT": "30"}, "GATEWAY_DRAIN_TIMEOUT"},
		{map[string]string{"GATEWAY_DRAIN_TIMEOUT": "-1s"}, "GATEWAY_DRAIN_TIMEOUT"},
	}
	for _, c := range cases {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range c.env {
			env[k] = v
		}
		_, err := loadGatewayConfig(mapLookup(env), mapLookup(nil))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want %q", c.env, err, c.want)
		}
	}
	gc, err := loadGatewayConfig(mapLookup(map[string]string{"DISCORD_TOKEN": "Bot abc", "DISCORD_INTENTS": "guilds",
		"DISCORD_RAW_INTENTS": "512", "DISCORD_SHARD_IDS": "0-3,12"}), mapLookup(map[string]string{"compress": "none"}))
	if err != nil {
		t.Fatal(err)
	}
	if gc.Token != "abc" || gc.Intents != 1|512 || len(gc.ShardIDs) != 5 || gc.Compress != "none" || gc.APIBase() != "https://discord.com/api/v10" {
		t.Errorf("config %+v", gc)
	}
	if _, err := loadGatewayConfig(mapLookup(map[string]string{"DISCORD_TOKEN": "x"}), mapLookup(nil)); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

// childRedis is a redis-server process of the test's own, so that the test
// can freeze it (SIGSTOP) the way a stalled broker freezes.
type childRedis struct {
	addr string
	cmd  *exec.Cmd
}

// startChildRedis starts redis-server on a free port, without persistence.
// Without the binary the test skips, or fails under CI.
func startChildRedis(t *testing.T) *childRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and redis-server is not installed")
		}
		t.Skip("redis-server is not installed: no broker of the test's own to freeze")
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--loglevel", "warning")
	brokertest.DieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	c := &childRedis{addr: addr, cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT) // never leave it frozen
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	client := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	defer client.Close()
	eventually(t, "redis-server to answer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		return client.Ping(ctx).Err() == nil
	})
	return c
}

// buildSpectacles builds the command into a temporary directory.
func buildSpectacles(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "spectacles")
	if out, err := exec.Command("go", "build", "-o", bin, moduleRoot).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// gatewayProcess is `spectacles gateway` running as a child process.
type gatewayProcess struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	err    error // once exited is closed
}

func startGatewayProcess(t *testing.T, bin string, env []string) *gatewayProcess {
	t.Helper()
	p := &gatewayProcess{cmd: exec.Command(bin, "gateway"), stderr: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// waitExit waits up to d for the process to exit and reports whether it did.
func (p *gatewayProcess) waitExit(d time.Duration) bool {
	select {
	case <-p.exited:
		return true
	case <-time.After(d):
		return false
	}
}

// messageIDs returns the ids of the MESSAGE_CREATE dispatches of events, in order.
func messageIDs(events []simulator.Event) []string {
	var ids []string
	for _, e := range events {
		if e.T != "MESSAGE_CREATE" {
			continue
		}
		var p struct {
			D struct {
				ID string `json:"id"`
			} `json:"d"`
		}
		_ = json.Unmarshal(e.Payload, &p)
		ids = append(ids, p.D.ID)
	}
	return ids
}

// streamIDs returns the ids of the dispatches in the MESSAGE_CREATE stream, in order.
func streamIDs(t *testing.T, c goredis.UniversalClient) []string {
	t.Helper()
	entries, err := c.XRange(context.Background(), "MESSAGE_CREATE", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		var d struct {
			ID string `json:"id"`
		}
		raw, _ := e.Values["data"].(string)
		if err := (core.Msgpack{}).Unmarshal([]byte(raw), &d); err != nil {
			t.Fatalf("stream entry %s: %v", e.ID, err)
		}
		ids = append(ids, d.ID)
	}
	return ids
}

// TestGatewayStalledBrokerShutdownLosesNothing freezes the broker (SIGSTOP)
// under a few hundred dispatches a second, stops the gateway process the
// way a supervisor does (SIGTERM, then SIGKILL a few seconds later), thaws
// the broker and starts a second gateway process on the same session
// store: the second resumes where the broker's confirmations stopped, so
// the stream ends up with every dispatch Discord sent, in order, once each:
// the batch that was in flight when the broker froze runs when it thaws,
// and the publish mark makes the second gateway skip what it added.
func TestGatewayStalledBrokerShutdownLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs redis-server")
	}
	rs := startChildRedis(t)
	bin := buildSpectacles(t)
	const token = "stall-token-0123456789"
	sim := startSimulator(t, simulator.Config{Token: token, Shards: 1, Guilds: 4, TrafficRate: 300,
		TrafficEvents: []string{"MESSAGE_CREATE"}, HeartbeatInterval: 5 * time.Second,
		IdentifyInterval: 10 * time.Millisecond, ReplayBuffer: 1 << 17})
	env := []string{"REDIS_URL=redis://" + rs.addr, "DISCORD_TOKEN=" + token, "DISCORD_API_PROTOCOL=http",
		"DISCORD_API_HOST=" + strings.TrimPrefix(sim.URL(), "http://"), "DISCORD_EVENTS=MESSAGE_CREATE",
		"DISCORD_COMPRESS=none", "SHARD_STORE_TYPE=redis", "GATEWAY_DRAIN_TIMEOUT=1s", "LOG_LEVEL=debug"}
	rc := goredis.NewClient(&goredis.Options{Addr: rs.addr})
	defer rc.Close()

	first := startGatewayProcess(t, bin, env)
	eventually(t, "300 dispatches in the stream", func() bool {
		return rc.XLen(context.Background(), "MESSAGE_CREATE").Val() >= 300
	})
	// What the broker held before it froze was confirmed to the gateway.
	confirmed := rc.XLen(context.Background(), "MESSAGE_CREATE").Val()
	if err := rs.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // ~300 dispatches wait for the frozen broker
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// A supervisor's stop timeout: the gateway's own bound (the drain
	// timeout plus the bounded waits for the stalled store) is shorter.
	killed := false
	if !first.waitExit(12 * time.Second) {
		killed = true
		_ = first.cmd.Process.Kill()
		<-first.exited
	}
	if err := rs.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("first gateway: killed %v, exit %v\n%s", killed, first.err, lastLines(first.stderr.String(), 3))
	if !killed && (first.err == nil || !strings.Contains(first.stderr.String(), "were not published within the drain timeout")) {
		t.Errorf("the first gateway exited with %v and no word of the dispatches left:\n%s", first.err, lastLines(first.stderr.String(), 20))
	}
	time.Sleep(500 * time.Millisecond) // what the broker held when it froze lands
	savedSeq, _ := rc.Get(context.Background(), "gateway0seq").Int64()
	afterFirst := streamIDs(t, rc)
	distinct := map[string]bool{}
	for _, id := range afterFirst {
		distinct[id] = true
	}
	t.Logf("after the first gateway: saved seq %d, stream %d entries (%d distinct)", savedSeq, len(afterFirst), len(distinct))

	second := startGatewayProcess(t, bin, env)
	eventually(t, "the second gateway to resume", func() bool {
		for _, r := range sim.Snapshot().Resumes {
			if r.Accepted {
				return true
			}
		}
		return false
	})
	session := rc.Get(context.Background(), "gateway0session").Val()
	time.Sleep(500 * time.Millisecond)
	sim.SetTrafficRate(0)
	// Wait until the stream stops growing and holds at least what was sent.
	var sent, got []string
	for prev := -1; ; prev = len(got) {
		events, err := sim.Events(session)
		if err != nil {
			t.Fatal(err)
		}
		sent = messageIDs(events)
		time.Sleep(300 * time.Millisecond)
		got = streamIDs(t, rc)
		if len(got) == prev && len(got) >= len(sent) {
			break
		}
		if len(got) == prev && second.waitExit(0) {
			break
		}
		if len(got) == prev {
			time.Sleep(time.Second)
			if len(streamIDs(t, rc)) == len(got) {
				break
			}
		}
	}
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !second.waitExit(20 * time.Second) {
		t.Errorf("the second gateway did not stop on SIGTERM")
	} else if second.err != nil {
		t.Errorf("second gateway: %v\n%s", second.err, lastLines(second.stderr.String(), 10))
	}

	count := map[string]int{}
	var firstSeen []string
	for _, id := range got {
		if count[id] == 0 {
			firstSeen = append(firstSeen, id)
		}
		count[id]++
	}
	lost, duplicated := 0, 0
	for _, id := range sent {
		if count[id] == 0 {
			lost++
		}
	}
	inFlight := map[string]bool{} // reached the broker after it last confirmed
	for _, id := range afterFirst[min(int(confirmed), len(afterFirst)):] {
		inFlight[id] = true
	}
	behind := 0
	for id, n := range count {
		duplicated += n - 1
		if n > 1 && !inFlight[id] {
			behind++
		}
	}
	if behind > 0 {
		t.Errorf("%d dispatches are in the stream twice though the broker had confirmed them before it froze: the saved seq was behind what was published", behind)
	}
	t.Logf("sent %d, published %d, lost %d, duplicated %d (in flight when the broker froze: %d)", len(sent), len(got), lost, duplicated, len(afterFirst)-int(confirmed))
	if lost != 0 || duplicated != 0 || len(firstSeen) != len(sent) || len(got) != len(sent) {
		t.Errorf("the stream is not what Discord sent, once each: sent %d, published %d, lost %d, duplicated %d", len(sent), len(got), lost, duplicated)
	}
	for i := range min(len(firstSeen), len(sent)) {
		if firstSeen[i] != sent[i] {
			t.Errorf("out of order at %d: stream has %s, Discord sent %s", i, firstSeen[i], sent[i])
			break
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestGatewayNodeKilledShowsStale runs `spectacles gateway` as a real
// process on the simulator, kills it with SIGKILL (it cannot remove its
// status), and checks that `spectacles shards` still lists the node, as
// STALE with its shards' last state, once it has been silent for longer
// than the stale threshold: its status key once expired after 6 s, before
// the 10 s threshold, and the node vanished instead.
func TestGatewayNodeKilledShowsStale(t *testing.T) {
	const token = "sekret-token-kill-9"
	sim := startSimulator(t, simulator.Config{Token: token, Shards: 1, Guilds: 2,
		HeartbeatInterval: time.Second, IdentifyInterval: 10 * time.Millisecond})
	url := gatewayTestURL(t)
	group := unique("killed")
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(bin, "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"=gateway", "REDIS_URL="+url, "BROKER_TYPE=redis", "DISCORD_TOKEN="+token,
		"DISCORD_API_PROTOCOL=http", "DISCORD_API_HOST="+strings.TrimPrefix(sim.URL(), "http://"), "BROKER_GROUP="+group,
		"DISCORD_EVENTS=MESSAGE_CREATE", "PROMETHEUS_ADDRESS=", "LOG_LEVEL=error")
	var childErr syncBuffer
	child.Stdout, child.Stderr = io.Discard, &childErr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- child.Wait() }()
	t.Cleanup(func() {
		_ = child.Process.Kill()
		<-waited
	})
	type node struct {
		Group  string `json:"group"`
		Stale  bool   `json:"stale"`
		Shards []struct {
			State string `json:"state"`
		} `json:"shards"`
	}
	find := func() (node, bool) {
		r := invocation{env: map[string]string{"REDIS_URL": url}}.run(t.Context(), "shards", "--json")
		var nodes []node
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &nodes) != nil {
			return node{}, false
		}
		for _, n := range nodes {
			if n.Group == group {
				return n, true
			}
		}
		return node{}, false
	}
	eventually(t, "the node's shard ready", func() bool {
		n, ok := find()
		return ok && !n.Stale && len(n.Shards) == 1 && n.Shards[0].State == "ready"
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err == nil {
		t.Fatalf("the gateway was not killed: %s", childErr.String())
	}
	waited <- nil // for the cleanup
	// Listed all along, then STALE with its last state.
	deadline := time.Now().Add(gateway.NodeStaleAfter + 10*time.Second)
	for {
		n, ok := find()
		if !ok {
			t.Fatal("the killed node vanished from `shards` before it was shown STALE")
		}
		if n.Stale {
			if len(n.Shards) != 1 || n.Shards[0].State != "ready" {
				t.Fatalf("the STALE node's last state: %+v", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the killed node was never shown STALE")
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := invocation{env: map[string]string{"REDIS_URL": url}}.run(t.Context(), "shards")
	if !strings.Contains(r.stdout, "STALE "+group) {
		t.Errorf("shards does not mark the node STALE:\n%s", r.stdout)
	}
}
