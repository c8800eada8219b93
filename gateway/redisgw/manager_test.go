package redisgw

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/gatewaytest"
	"github.com/spectacles-go/spectacles/gateway/simulator"
	"github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

func testLogger(t testing.TB) *slog.Logger { return gatewaytest.Logger(t) }

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	gatewaytest.WaitFor(t, what, cond)
}

// managerEnv is a simulator and a Redis broker for managers.
type managerEnv struct {
	sim    *simulator.Server
	raw    goredis.UniversalClient
	broker *redis.Broker
}

func newManagerEnv(t *testing.T, shards int, simMod func(*simulator.Config)) *managerEnv {
	t.Helper()
	// The gateway speaks fixed event names: a Redis database of its own.
	url, _ := redistest.ExclusiveDB(t)
	raw := redistest.Client(t, url)
	keys := []string{gateway.SendEvent, core.DeadLetterEvent(gateway.SendEvent), "GUILD_CREATE", "READY", "RESUMED", "GUILD_MEMBERS_CHUNK"}
	keys = append(keys, simulator.SyntheticEvents()...)
	sim := gatewaytest.StartSim(t, func(c *simulator.Config) {
		c.Guilds, c.Shards = 4*shards, shards
		if simMod != nil {
			simMod(c)
		}
	})
	for i := range shards {
		keys = append(keys, fmt.Sprint(i), core.DeadLetterEvent(fmt.Sprint(i)), gateway.PublishMarkKey(sim.Token(), i))
	}
	raw.Del(context.Background(), keys...)
	redistest.DeleteKeys(t, raw, keys...)
	b, err := redis.Open(context.Background(), redis.Config{URL: url, Options: core.Options{
		Identity: core.Identity{Group: redistest.Unique("gateway"), Client: "test"}, MessageTimeout: 500 * time.Millisecond,
		MaxDeliveries: 3, Logger: testLogger(t),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &managerEnv{sim: sim, raw: raw, broker: b}
}

// run starts a manager and waits until all its shards are ready.
func (e *managerEnv) run(t *testing.T, mod func(*gateway.ManagerConfig)) (*gateway.Manager, func()) {
	t.Helper()
	cfg := gateway.ManagerConfig{
		Token: e.sim.Token(), Intents: 1<<0 | 1<<9 | 1<<10 | 1<<11, APIBase: e.sim.URL() + "/api/v10",
		Broker: e.broker, Identify: gateway.NewLocalIdentifyLimiter(1, 20*time.Millisecond, -1, 0), Logger: testLogger(t),
		Tune: func(c *gateway.ShardConfig) {
			c.MinBackoff, c.MaxBackoff, c.SessionFlush = 10*time.Millisecond, 200*time.Millisecond, 50*time.Millisecond
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := gateway.NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := gatewaytest.Run(t, m, func() bool {
		sts := m.Shards()
		for _, st := range sts {
			if st.State != gateway.Ready {
				return false
			}
		}
		return len(sts) > 0
	})
	return m, stop
}

func TestManagerRestartResumesFromRedisStore(t *testing.T) {
	env := newManagerEnv(t, 2, func(c *simulator.Config) { c.TrafficRate = 200 })
	prefix := redistest.Unique("gwstore") + ":"
	var keys []string
	for i := range 2 {
		keys = append(keys, fmt.Sprintf("%s%dsession", prefix, i), fmt.Sprintf("%s%dseq", prefix, i), fmt.Sprintf("%s%dresume_url", prefix, i))
	}
	redistest.DeleteKeys(t, env.raw, keys...)
	store := NewSessionStore(env.raw, prefix)
	m1, stop := env.run(t, func(c *gateway.ManagerConfig) { c.Store = store })
	waitFor(t, "traffic", func() bool {
		for _, st := range m1.Shards() {
			if st.Events < 20 {
				return false
			}
		}
		return true
	})
	before := m1.Shards()
	stop()
	// A new process with the same store resumes every shard.
	m2, _ := env.run(t, func(c *gateway.ManagerConfig) { c.Store = NewSessionStore(env.raw, prefix) })
	snap := env.sim.Snapshot()
	if len(snap.Identifies) != 2 {
		t.Errorf("%d identifies: the restarted process should have resumed", len(snap.Identifies))
	}
	accepted := 0
	for _, r := range snap.Resumes {
		if r.Accepted {
			accepted++
		}
	}
	if accepted != 2 {
		t.Errorf("%d resumes accepted, want 2", accepted)
	}
	for i, st := range m2.Shards() {
		if st.SessionID != before[i].SessionID {
			t.Errorf("shard %d: session %s, was %s", i, st.SessionID, before[i].SessionID)
		}
	}
}
