package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway/gatewaytest"
	"github.com/spectacles-go/spectacles/gateway/simulator"
	"github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

type managerEnv struct {
	sim    *simulator.Server
	url    string
	raw    goredis.UniversalClient
	broker *redis.Broker
	group  string
}

func newManagerEnv(t testing.TB, shards int, simMod func(*simulator.Config)) *managerEnv {
	t.Helper()
	// The gateway speaks fixed event names (SEND, "0", MESSAGE_CREATE…),
	// so each test leases a Redis database of its own and deletes those
	// streams before and after instead of relying on unique names.
	url, _ := redistest.ExclusiveDB(t)
	raw := redistest.Client(t, url)
	keys := []string{SendEvent, core.DeadLetterEvent(SendEvent), "GUILD_CREATE", "READY", "RESUMED", "GUILD_MEMBERS_CHUNK"}
	keys = append(keys, simulator.SyntheticEvents()...)
	for i := range shards {
		keys = append(keys, fmt.Sprint(i), core.DeadLetterEvent(fmt.Sprint(i)))
	}
	raw.Del(context.Background(), keys...)
	redistest.DeleteKeys(t, raw, keys...)
	sim := startSim(t, func(c *simulator.Config) {
		c.Shards = shards
		c.Guilds = 4 * shards
		if simMod != nil {
			simMod(c)
		}
	})
	marks := make([]string, shards)
	for i := range shards {
		marks[i] = PublishMarkKey(sim.Token(), i)
	}
	raw.Del(context.Background(), marks...)
	redistest.DeleteKeys(t, raw, marks...)
	env := &managerEnv{sim: sim, url: url, raw: raw, group: redistest.Unique("gateway")}
	env.broker = env.open(t, env.group)
	return env
}

func (e *managerEnv) open(t testing.TB, group string) *redis.Broker {
	t.Helper()
	b, err := redis.Open(context.Background(), redis.Config{URL: e.url, Options: core.Options{
		Identity: core.Identity{Group: group, Client: "test"}, MessageTimeout: 500 * time.Millisecond, MaxDeliveries: 3,
		Logger: testLogger(t),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// run starts a manager and waits until all its shards are ready.
func (e *managerEnv) run(t testing.TB, mod func(*ManagerConfig)) (*Manager, func()) {
	t.Helper()
	cfg := ManagerConfig{
		Token: e.sim.Token(), Intents: 1<<0 | 1<<9 | 1<<10 | 1<<11, APIBase: e.sim.URL() + "/api/v10",
		Broker: e.broker, Identify: NewLocalIdentifyLimiter(1, 20*time.Millisecond, -1, 0),
		Logger: testLogger(t),
		Tune: func(c *ShardConfig) {
			c.MinBackoff, c.MaxBackoff, c.SessionFlush = 10*time.Millisecond, 200*time.Millisecond, 50*time.Millisecond
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := gatewaytest.Run(t, m, func() bool {
		sts := m.Shards()
		for _, st := range sts {
			if st.State != Ready {
				return false
			}
		}
		return len(sts) > 0
	})
	return m, stop
}

// consumeOne starts a consumer of event in a fresh group and returns its deliveries.
func (e *managerEnv) consume(t *testing.T, events ...string) chan *core.Message {
	t.Helper()
	ch := make(chan *core.Message, 1024)
	b := e.open(t, redistest.Unique("worker"))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := b.Consume(ctx, events, func(ctx context.Context, m *core.Message) {
		_ = m.Ack(ctx)
		ch <- m
	}); err != nil {
		t.Fatal(err)
	}
	return ch
}

func next(t *testing.T, ch chan *core.Message, match func(*core.Message) bool) *core.Message {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m := <-ch:
			if match(m) {
				return m
			}
		case <-deadline:
			t.Fatal("no matching message")
			return nil
		}
	}
}

func TestManagerPublishesDispatchesLikeSpectaclesGateway(t *testing.T) {
	env := newManagerEnv(t, 2, nil)
	env.run(t, func(c *ManagerConfig) { c.Events = []string{"MESSAGE_CREATE", "GUILD_CREATE"} })
	msgs := env.consume(t, "MESSAGE_CREATE")
	guild := env.sim.Guilds()[1]
	d := map[string]any{"id": "1234567890123456789", "guild_id": guild.ID, "content": "nonce-legacy"}
	if err := env.sim.Dispatch(guild.ID, "MESSAGE_CREATE", d); err != nil {
		t.Fatal(err)
	}
	_ = env.sim.Dispatch(guild.ID, "TYPING_START", map[string]any{"guild_id": guild.ID})
	m := next(t, msgs, func(m *core.Message) bool { return bytes.Contains(m.Raw, []byte("nonce-legacy")) })
	// sg-gateway's encoding: a msgpack str holding the JSON of d.
	if m.Raw[0] != 0xda && m.Raw[0]&0xe0 != 0xa0 && m.Raw[0] != 0xdb {
		t.Errorf("payload starts with %#x, want a msgpack str header", m.Raw[0])
	}
	data, err := m.Data()
	if err != nil {
		t.Fatal(err)
	}
	if data.(map[string]any)["content"] != "nonce-legacy" {
		t.Errorf("data %v", data)
	}
	time.Sleep(100 * time.Millisecond)
	if n := env.raw.XLen(context.Background(), "TYPING_START").Val(); n != 0 {
		t.Errorf("TYPING_START is not in DISCORD_EVENTS but %d were published", n)
	}
	if n := env.raw.XLen(context.Background(), "GUILD_CREATE").Val(); n != int64(len(env.sim.Guilds())) {
		t.Errorf("%d GUILD_CREATE published, want %d", n, len(env.sim.Guilds()))
	}
}

func TestManagerPublishesNativeMsgpack(t *testing.T) {
	env := newManagerEnv(t, 1, nil)
	env.run(t, func(c *ManagerConfig) { c.Format = FormatNative; c.Events = []string{"MESSAGE_CREATE"} })
	msgs := env.consume(t, "MESSAGE_CREATE")
	guild := env.sim.Guilds()[0]
	_ = env.sim.Dispatch(guild.ID, "MESSAGE_CREATE", map[string]any{"content": "nonce-native", "n": 5})
	m := next(t, msgs, func(m *core.Message) bool { return bytes.Contains(m.Raw, []byte("nonce-native")) })
	if m.Raw[0]&0xf0 != 0x80 && m.Raw[0] != 0xde {
		t.Errorf("payload starts with %#x, want a msgpack map", m.Raw[0])
	}
	data, _ := m.Data()
	if data.(map[string]any)["n"] != int64(5) {
		t.Errorf("data %v", data)
	}
}

// received returns the packets with op the simulator got from shard.
func received(sim *simulator.Server, shard, op int) []json.RawMessage {
	var out []json.RawMessage
	for _, r := range sim.Snapshot().Received {
		if r.ShardID == shard && r.Op == op {
			out = append(out, r.D)
		}
	}
	return out
}

func guildOnShard(t *testing.T, sim *simulator.Server, shard, count int) string {
	t.Helper()
	gs := sim.GuildsForShard(shard, count)
	if len(gs) == 0 {
		t.Fatalf("no guild on shard %d", shard)
	}
	return gs[0]
}

func TestManagerRoutesSendAndShardPackets(t *testing.T) {
	env := newManagerEnv(t, 2, nil)
	env.run(t, nil)
	pub := env.open(t, redistest.Unique("worker"))
	ctx := context.Background()
	g1 := guildOnShard(t, env.sim, 1, 2)
	g0 := guildOnShard(t, env.sim, 0, 2)

	// SEND as a msgpack map, as JS workers publish it.
	if _, err := pub.Publish(ctx, SendEvent, map[string]any{"guild_id": g1, "packet": map[string]any{
		"op": 8, "d": map[string]any{"guild_id": g1, "query": "map", "limit": 0}}}); err != nil {
		t.Fatal(err)
	}
	// SEND as a msgpack str holding JSON, as spec-tacles/gateway expects it.
	js := fmt.Sprintf(`{"guild_id":%q,"packet":{"op":8,"d":{"guild_id":%q,"query":"str","limit":0}}}`, g0, g0)
	if _, err := pub.Publish(ctx, SendEvent, core.Raw(core.MsgpackJSONString([]byte(js)))); err != nil {
		t.Fatal(err)
	}
	// Straight to a shard id.
	if _, err := pub.Publish(ctx, "1", map[string]any{"op": 3, "d": map[string]any{"status": "idle", "since": nil, "activities": []any{}, "afk": false}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the SEND packets at their shards", func() bool {
		return len(received(env.sim, 1, 8)) == 1 && len(received(env.sim, 0, 8)) == 1 && len(received(env.sim, 1, 3)) == 1
	})
	if !bytes.Contains(received(env.sim, 1, 8)[0], []byte(`"map"`)) || !bytes.Contains(received(env.sim, 0, 8)[0], []byte(`"str"`)) {
		t.Errorf("packets reached the wrong shards")
	}
	// Acked: nothing stays pending for the gateway's group, so nothing is
	// re-sent to Discord after the message timeout (spec-tacles/gateway's bug).
	time.Sleep(time.Second)
	for _, ev := range []string{SendEvent, "1"} {
		if p := env.raw.XPending(ctx, ev, env.group).Val(); p.Count != 0 {
			t.Errorf("%d %s packets still pending", p.Count, ev)
		}
	}
	if n := len(received(env.sim, 1, 8)); n != 1 {
		t.Errorf("SEND delivered %d times", n)
	}
}

func TestManagerDeadLettersInvalidPackets(t *testing.T) {
	env := newManagerEnv(t, 1, nil)
	env.run(t, nil)
	pub := env.open(t, redistest.Unique("worker"))
	ctx := context.Background()
	g := guildOnShard(t, env.sim, 0, 1)
	cases := map[string]any{
		"may not be sent":     map[string]any{"guild_id": g, "packet": map[string]any{"op": 2, "d": map[string]any{"token": "x"}}},
		"invalid snowflake":   map[string]any{"guild_id": "not-a-guild", "packet": map[string]any{"op": 8, "d": map[string]any{}}},
		"more than Discord's": map[string]any{"guild_id": g, "packet": map[string]any{"op": 3, "d": strings.Repeat("x", 5000)}},
		"no packet":           map[string]any{"guild_id": g},
	}
	ids := map[string]string{}
	for reason, data := range cases {
		id, err := pub.Publish(ctx, SendEvent, data)
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = reason
	}
	dlq := env.consume(t, core.DeadLetterEvent(SendEvent))
	for range cases {
		m := next(t, dlq, func(m *core.Message) bool { _, ok := ids[m.Headers[core.HeaderID]]; return ok })
		want := ids[m.Headers[core.HeaderID]]
		if !strings.Contains(m.Headers[core.HeaderReason], want) {
			t.Errorf("reason %q, want it to mention %q", m.Headers[core.HeaderReason], want)
		}
		delete(ids, m.Headers[core.HeaderID])
	}
	if n := len(env.sim.Snapshot().Identifies); n != 1 { // only the gateway's own
		t.Errorf("%d identifies reached Discord", n)
	}
}

func TestManagerRepublishesForShardsOfOtherProcesses(t *testing.T) {
	env := newManagerEnv(t, 2, nil)
	env.run(t, func(c *ManagerConfig) { c.ShardIDs = []int{0}; c.ShardCount = 2 })
	ctx := context.Background()
	// The process that owns shard 1 has run before: its group on "1"
	// exists (a brand-new group starts at the stream's end and would not
	// see a packet handed over before it existed).
	if err := env.raw.XGroupCreateMkStream(ctx, "1", env.group, "$").Err(); err != nil {
		t.Fatal(err)
	}
	pub := env.open(t, redistest.Unique("worker"))
	g1 := guildOnShard(t, env.sim, 1, 2)
	if _, err := pub.Publish(ctx, SendEvent, map[string]any{"guild_id": g1, "packet": map[string]any{"op": 8, "d": map[string]any{"guild_id": g1, "query": "", "limit": 0}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the packet re-published to shard 1", func() bool { return env.raw.XLen(ctx, "1").Val() == 1 })
	entry := env.raw.XRange(ctx, "1", "-", "+").Val()[0]
	// In the form every gateway reads: a msgpack str holding the JSON.
	raw := []byte(entry.Values["data"].(string))
	var packet map[string]any
	if err := (core.Msgpack{}).Unmarshal(raw, &packet); err != nil || fmt.Sprint(packet["op"]) != "8" || (raw[0]&0xe0 != 0xa0 && raw[0] != 0xda) {
		t.Errorf("re-published packet %q: %v (%v)", raw, packet, err)
	}
	// That process picks it up.
	env2 := &managerEnv{sim: env.sim, url: env.url, raw: env.raw, group: env.group}
	env2.broker = env.open(t, env.group)
	env2.run(t, func(c *ManagerConfig) { c.ShardIDs = []int{1}; c.ShardCount = 2 })
	waitFor(t, "shard 1 sent it", func() bool { return len(received(env.sim, 1, 8)) == 1 })
}

func TestManagerIdentifyBuckets(t *testing.T) {
	// The limiter takes a bucket's slot before connecting, so identifies
	// reach the server up to one connection set-up (a few ms, more under
	// -race on a loaded machine) closer than the interval: the simulator
	// enforces half of it, and spacing is checked with that tolerance.
	const interval = 150 * time.Millisecond
	env := newManagerEnv(t, 6, func(c *simulator.Config) { c.MaxConcurrency = 2; c.IdentifyInterval = interval / 2 })
	env.run(t, func(c *ManagerConfig) {
		c.Identify = NewLocalIdentifyLimiter(2, interval, -1, 0)
	})
	snap := env.sim.Snapshot()
	if len(snap.Identifies) != 6 {
		t.Fatalf("%d identifies for 6 shards", len(snap.Identifies))
	}
	for _, id := range snap.Identifies {
		if !id.Accepted || id.InvalidSession {
			t.Errorf("identify of shard %d refused: %+v", id.ShardID, id)
		}
	}
	for bucket := range 2 {
		times := snap.IdentifyTimes(bucket)
		if len(times) != 3 {
			t.Fatalf("bucket %d: %d identifies, want 3", bucket, len(times))
		}
		for i := 1; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap < interval-50*time.Millisecond {
				t.Errorf("bucket %d: identifies %s apart, want at least %s", bucket, gap, interval)
			}
		}
	}
	// Lowest shard first within each bucket.
	last := map[int]int{0: -1, 1: -1}
	for _, id := range snap.Identifies {
		if id.ShardID < last[id.Bucket] {
			t.Errorf("bucket %d: shard %d identified after shard %d", id.Bucket, id.ShardID, last[id.Bucket])
		}
		last[id.Bucket] = id.ShardID
	}
}

func TestManagerStartStopReconnectShards(t *testing.T) {
	env := newManagerEnv(t, 2, nil)
	m, _ := env.run(t, nil)
	want := len(env.sim.GuildsForShard(1, 2))
	waitFor(t, "shard 1's guilds and a heartbeat ACK", func() bool {
		st := m.Shards()[1]
		return st.GuildsAvailable == want && st.Latency > 0
	})
	if err := m.StopShard(1); err != nil {
		t.Fatal(err)
	}
	st := m.Shards()[1]
	if st.State != Stopped {
		t.Fatalf("stopped shard is %s", st.State)
	}
	// The operator's stop is said as such (not as the close code 4000 the
	// shard sends to keep its session resumable), and a stopped shard has
	// no latency.
	if st.LastCloseCode != 0 || st.LastCloseReason != "stopped by operator" || st.Latency != 0 {
		t.Errorf("stopped shard: close %d %q, latency %s; want 0 \"stopped by operator\", none", st.LastCloseCode, st.LastCloseReason, st.Latency)
	}
	if m.Shards()[0].State != Ready {
		t.Fatal("stopping shard 1 disturbed shard 0")
	}
	if err := m.StartShard(1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "shard 1 resumed", func() bool { return m.Shards()[1].State == Ready })
	// RESUMED replays no GUILD_CREATE: the guilds the session had count.
	if st := m.Shards()[1]; st.GuildsAvailable != want {
		t.Errorf("resumed shard 1: %d guilds (want %d), last close %d %q", st.GuildsAvailable, want, st.LastCloseCode, st.LastCloseReason)
	}
	if err := m.ReconnectShard(0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "shard 0 reconnected", func() bool { st := m.Shards()[0]; return st.State == Ready && st.Reconnects == 1 })
	snap := env.sim.Snapshot()
	if len(snap.Identifies) != 2 || len(snap.Resumes) != 2 {
		t.Errorf("identifies %d resumes %d, want 2 and 2", len(snap.Identifies), len(snap.Resumes))
	}
	if err := m.StopShard(7); !errors.Is(err, ErrUnknownShard) {
		t.Errorf("unknown shard: %v", err)
	}
	if err := m.StartShard(2); !errors.Is(err, ErrUnknownShard) {
		t.Errorf("shard beyond the count: %v", err)
	}
}

// TestManagerStreamIsExactAcrossFaults checks the broker side of resume: the
// MESSAGE_CREATE stream holds every message Discord sent, once, in order,
// whatever faults happened.
func TestManagerStreamIsExactAcrossFaults(t *testing.T) {
	env := newManagerEnv(t, 1, func(c *simulator.Config) {
		c.TrafficRate = 1000
		c.TrafficEvents = []string{"MESSAGE_CREATE"}
	})
	m, stop := env.run(t, func(c *ManagerConfig) { c.Events = []string{"MESSAGE_CREATE"} })
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 100 {
		switch rng.IntN(4) {
		case 0:
			_ = env.sim.Reconnect(0)
		case 1:
			_ = env.sim.DropConnection(0)
		case 2:
			_ = env.sim.InvalidateSession(0, true)
		case 3:
			_ = m.ReconnectShard(0)
		}
		waitFor(t, "resume", func() bool {
			n := 0
			for _, r := range env.sim.Snapshot().Resumes {
				if r.Accepted {
					n++
				}
			}
			return n == i+1 && m.Shards()[0].State == Ready
		})
	}
	env.sim.SetTrafficRate(0)
	n := checkStreamExact(t, env, m, stop)
	t.Logf("%d messages through 100 faults, exactly once and in order", n)
}

// checkStreamExact stops the manager once the MESSAGE_CREATE stream holds
// as many messages as shard 0's session sent, then checks that it holds
// exactly those, once each, in order. It returns how many.
func checkStreamExact(t *testing.T, env *managerEnv, m *Manager, stop func()) int {
	t.Helper()
	session := m.Shards()[0].SessionID
	// Traffic was stopped; let an event already on its way land first.
	var events []simulator.Event
	for prev := -1; ; {
		var err error
		if events, err = env.sim.Events(session); err != nil {
			t.Fatal(err)
		}
		if len(events) == prev {
			break
		}
		prev = len(events)
		time.Sleep(200 * time.Millisecond)
	}
	var want []string
	for _, e := range events {
		if e.T == "MESSAGE_CREATE" {
			var p struct {
				D struct {
					ID string `json:"id"`
				} `json:"d"`
			}
			_ = json.Unmarshal(e.Payload, &p)
			want = append(want, p.D.ID)
		}
	}
	waitFor(t, "every dispatch in the stream", func() bool {
		return env.raw.XLen(context.Background(), "MESSAGE_CREATE").Val() >= int64(len(want))
	})
	stop()
	var got []string
	for _, e := range env.raw.XRange(context.Background(), "MESSAGE_CREATE", "-", "+").Val() {
		var d struct {
			ID string `json:"id"`
		}
		if err := (core.Msgpack{}).Unmarshal([]byte(e.Values["data"].(string)), &d); err != nil {
			t.Fatal(err)
		}
		got = append(got, d.ID)
	}
	if len(got) != len(want) {
		t.Fatalf("stream has %d messages, Discord sent %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d: stream has %s, Discord sent %s", i, got[i], want[i])
		}
	}
	return len(want)
}

// slowBroker publishes like its Broker, after a delay per batch.
type slowBroker struct {
	core.Broker
	delay time.Duration
}

func (s slowBroker) PublishBatch(ctx context.Context, msgs []core.Outgoing) ([]string, error) {
	time.Sleep(s.delay)
	return core.PublishAll(ctx, s.Broker, msgs)
}

// TestManagerBackPressureShedsAndResumes: a broker slower than Discord
// fills the dispatch queue; shards never stop reading or heartbeating, shed
// their connection, resume once the queue drains, and lose nothing.
func TestManagerBackPressureShedsAndResumes(t *testing.T) {
	env := newManagerEnv(t, 1, func(c *simulator.Config) {
		c.TrafficRate = 3000
		c.TrafficEvents = []string{"MESSAGE_CREATE"}
		c.HeartbeatInterval = 200 * time.Millisecond
	})
	m, stop := env.run(t, func(c *ManagerConfig) {
		c.Events = []string{"MESSAGE_CREATE"}
		c.QueueSize = 128
		c.Broker = slowBroker{Broker: env.broker, delay: 20 * time.Millisecond}
	})
	waitFor(t, "the queue to overflow a few times", func() bool { return m.Shed() >= 3 })
	env.sim.SetTrafficRate(0)
	// Every resume replays the whole backlog at once and overflows the
	// queue again, so catching up takes a cycle per queue's worth: on a
	// loaded machine that can take longer than the usual wait.
	waitWithin(t, time.Minute, "the shard to catch up", func() bool { return m.Shards()[0].State == Ready && m.QueueLength() == 0 })
	n := checkStreamExact(t, env, m, stop)
	for _, c := range env.sim.Snapshot().Closes {
		if c.ByServer {
			t.Errorf("the server closed a connection (%d %s): reading or heartbeats were delayed", c.Code, c.Reason)
		}
	}
	t.Logf("%d messages, queue overflowed %d times, nothing lost", n, m.Shed())
}
