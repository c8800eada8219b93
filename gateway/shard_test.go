package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spectacles-go/spectacles/gateway/discord"
	"github.com/spectacles-go/spectacles/gateway/gatewaytest"
	"github.com/spectacles-go/spectacles/gateway/simulator"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startSim starts a simulator with test-friendly timings.
func startSim(t testing.TB, mod func(*simulator.Config)) *simulator.Server {
	t.Helper()
	return gatewaytest.StartSim(t, mod)
}

// recorder keeps the dispatches a shard delivered, in order.
type recorder struct {
	mu   sync.Mutex
	seen []Dispatch
}

func (r *recorder) add(d Dispatch) bool {
	r.mu.Lock()
	r.seen = append(r.seen, d)
	r.mu.Unlock()
	return true
}

func (r *recorder) all() []Dispatch {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Dispatch(nil), r.seen...)
}

type running struct {
	shard *Shard
	rec   *recorder
	store SessionStore
	stop  func() error
}

// runShard runs a shard against sim until the test ends or stop is called.
func runShard(t *testing.T, sim *simulator.Server, mod func(*ShardConfig)) *running {
	t.Helper()
	rec := &recorder{}
	cfg := ShardConfig{
		ID: 0, Count: 1, Token: sim.Token(), Intents: 1<<0 | 1<<9 | 1<<10 | 1<<11,
		URL: sim.GatewayURL(), Identify: NewLocalIdentifyLimiter(1, 20*time.Millisecond, -1, 0),
		Dispatches: newFuncSink(rec.add), MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		SessionFlush: 50 * time.Millisecond, Logger: testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := NewShard(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return &running{shard: s, rec: rec, store: s.cfg.Store, stop: stop}
}

// waitFor polls cond until it holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	gatewaytest.WaitFor(t, what, cond)
}

// waitWithin polls cond until it holds, failing after limit.
func waitWithin(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	gatewaytest.WaitWithin(t, limit, what, cond)
}

func waitState(t *testing.T, s *Shard, st State) {
	t.Helper()
	waitFor(t, "state "+st.String(), func() bool { return s.Status().State == st })
}

func TestShardIdentifiesAndTracksGuilds(t *testing.T) {
	sim := startSim(t, nil)
	r := runShard(t, sim, nil)
	waitState(t, r.shard, Ready)
	want := len(sim.GuildsForShard(0, 1))
	waitFor(t, "every GUILD_CREATE", func() bool { return r.shard.Status().GuildsAvailable == want })
	st := r.shard.Status()
	if st.SessionID == "" || st.GuildsUnavailable != 0 || st.Seq < int64(want+1) {
		t.Errorf("status %+v", st)
	}
	snap := sim.Snapshot()
	if len(snap.Identifies) != 1 || !snap.Identifies[0].Accepted {
		t.Fatalf("identifies %+v", snap.Identifies)
	}
	id := snap.Identifies[0]
	if id.Browser != "spectacles" || id.ShardID != 0 || id.ShardCount != 1 || id.Intents != uint64(1<<0|1<<9|1<<10|1<<11) {
		t.Errorf("identify %+v", id)
	}
	for _, hb := range snap.Heartbeats {
		if hb.Violation != "" {
			t.Errorf("heartbeat violation: %s", hb.Violation)
		}
	}
	waitFor(t, "a heartbeat ACK", func() bool { return !r.shard.Status().LastHeartbeatACK.IsZero() })
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if st := r.shard.Status().State; st != Stopped {
		t.Errorf("state after stop %s", st)
	}
}

// checkContiguous asserts that the dispatches of each session arrived with
// consecutive sequence numbers: no gap, no duplicate.
// waitCaughtUp waits, once the simulator's traffic is stopped, until the
// shard has received every event the simulator sent its session (and no
// trailing one follows for a few polls): stopping earlier would leave
// events in flight that only a resume would bring.
func waitCaughtUp(t *testing.T, r *running, sim *simulator.Server) {
	t.Helper()
	stable := 0
	waitFor(t, "the shard to receive every event sent", func() bool {
		st := r.shard.Status()
		events, err := sim.Events(st.SessionID)
		if err != nil || len(events) == 0 || events[len(events)-1].Seq != st.Seq {
			stable = 0
			return false
		}
		stable++
		return stable >= 4
	})
}

func checkContiguous(t *testing.T, got []Dispatch, sim *simulator.Server, sessionID string) {
	t.Helper()
	var last int64
	for i, d := range got {
		if d.Seq != last+1 {
			t.Fatalf("dispatch %d (%s): seq %d after %d", i, d.Event, d.Seq, last)
		}
		last = d.Seq
	}
	events, err := sim.Events(sessionID)
	if err != nil {
		t.Fatal(err)
	}
	if n := events[len(events)-1].Seq; n != last {
		t.Fatalf("received up to seq %d, the session is at %d", last, n)
	}
}

func TestShardResumesThroughHundredsOfFaults(t *testing.T) {
	sim := startSim(t, func(c *simulator.Config) { c.TrafficRate = 800 })
	r := runShard(t, sim, nil)
	waitState(t, r.shard, Ready)
	sessionID := r.shard.Status().SessionID
	rng := rand.New(rand.NewPCG(1, 2))
	const faults = 200
	counts := map[string]int{}
	for i := range faults {
		var name string
		var err error
		switch rng.IntN(5) {
		case 0:
			name, err = "op 7", sim.Reconnect(0)
		case 1:
			name, err = "abrupt close", sim.DropConnection(0)
		case 2:
			name, err = "close 4000", sim.CloseConnection(0, 4000, "test")
		case 3:
			name, err = "op 9 true", sim.InvalidateSession(0, true)
		case 4:
			name = "client reconnect"
			r.shard.Reconnect()
		}
		if err != nil {
			t.Fatalf("fault %d (%s): %v", i, name, err)
		}
		counts[name]++
		// Wait until the shard resumed on a new connection.
		waitFor(t, "resume after "+name, func() bool {
			snap := sim.Snapshot()
			n := 0
			for _, rs := range snap.Resumes {
				if rs.Accepted {
					n++
				}
			}
			return n == i+1 && r.shard.Status().State == Ready
		})
		time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond)
	}
	sim.SetTrafficRate(0)
	waitCaughtUp(t, r, sim)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	snap := sim.Snapshot()
	if len(snap.Identifies) != 1 {
		t.Errorf("%d identifies: every fault should have been resumed", len(snap.Identifies))
	}
	for _, rs := range snap.Resumes {
		if !rs.ViaResumeURL {
			t.Errorf("resume on connection %d did not use resume_gateway_url", rs.Conn)
			break
		}
	}
	if r.shard.Status().SessionID != sessionID {
		t.Errorf("session changed")
	}
	got := r.rec.all()
	checkContiguous(t, got, sim, sessionID)
	t.Logf("faults %v; %d dispatches, %d resumes", counts, len(got), len(snap.Resumes))
}

func TestShardFatalCloseStopsWithoutRetry(t *testing.T) {
	cases := []struct {
		name string
		sim  func(*simulator.Config)
		cfg  func(*ShardConfig)
		code int
	}{
		{"4004 bad token", nil, func(c *ShardConfig) { c.Token = "wrong" }, 4004},
		{"4014 disallowed intents", nil, func(c *ShardConfig) { c.Intents |= 1 << 15 }, 4014},
		{"4013 invalid intents", nil, func(c *ShardConfig) { c.Intents |= 1 << 30 }, 4013},
		{"4010 invalid shard", func(c *simulator.Config) { c.RequireShardCount = true; c.Shards = 2 }, nil, 4010},
		{"4012 invalid version", nil, func(c *ShardConfig) { c.Version = 9 }, 4012},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sim := startSim(t, c.sim)
			r := runShard(t, sim, c.cfg)
			waitState(t, r.shard, Failed)
			err := r.stop()
			var fe *FatalError
			if !errors.As(err, &fe) || fe.Code != c.code || !errors.Is(err, ErrFatalClose) {
				t.Fatalf("Run returned %v, want a fatal close %d", err, c.code)
			}
			time.Sleep(100 * time.Millisecond) // a retry would connect within MinBackoff
			if n := len(sim.Snapshot().Connections); n != 1 {
				t.Errorf("%d connections after a fatal close, want 1", n)
			}
			st := r.shard.Status()
			if st.LastCloseCode != c.code || st.Err == "" {
				t.Errorf("status %+v", st)
			}
			if contains(err.Error(), sim.Token()) {
				t.Error("the error contains the token")
			}
		})
	}
}

func contains(s, sub string) bool { return sub != "" && strings.Contains(s, sub) }

// testLogger logs through t, so that logs show only for failing tests.
func testLogger(t testing.TB) *slog.Logger { return gatewaytest.Logger(t) }

func TestShardNewSessionAfterInvalidSessionAndExpiry(t *testing.T) {
	sim := startSim(t, nil)
	r := runShard(t, sim, nil)
	waitState(t, r.shard, Ready)
	first := r.shard.Status().SessionID

	if err := sim.InvalidateSession(0, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new session after op 9 false", func() bool {
		st := r.shard.Status()
		return st.State == Ready && st.SessionID != first
	})
	second := r.shard.Status().SessionID

	if err := sim.CloseConnection(0, 4009, "session timed out"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new session after 4009", func() bool {
		st := r.shard.Status()
		return st.State == Ready && st.SessionID != second && st.SessionID != first
	})
	if n := len(sim.Snapshot().Identifies); n != 3 {
		t.Errorf("%d identifies, want 3", n)
	}
	// Sequence numbers restart with each new session.
	third := r.shard.Status()
	if third.Seq > int64(len(sim.GuildsForShard(0, 1))+1) {
		t.Errorf("seq %d carried over into the new session", third.Seq)
	}
}

func TestShardZombieConnectionResumes(t *testing.T) {
	sim := startSim(t, func(c *simulator.Config) { c.HeartbeatInterval = 150 * time.Millisecond })
	r := runShard(t, sim, nil)
	waitState(t, r.shard, Ready)
	if err := sim.SetHeartbeatACKs(0, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a client close of the zombie connection", func() bool {
		for _, c := range sim.Snapshot().Closes {
			if !c.ByServer && c.Code != 1000 && c.Code != 1001 && !c.Abrupt {
				return true
			}
		}
		return false
	})
	waitFor(t, "a resume", func() bool {
		for _, rs := range sim.Snapshot().Resumes {
			if rs.Accepted {
				return true
			}
		}
		return false
	})
	waitState(t, r.shard, Ready)
}

func TestShardAnswersServerHeartbeatRequest(t *testing.T) {
	sim := startSim(t, func(c *simulator.Config) { c.HeartbeatInterval = 10 * time.Second })
	r := runShard(t, sim, nil)
	waitState(t, r.shard, Ready)
	if err := sim.RequestHeartbeat(0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an answer to op 1", func() bool {
		reqs := sim.Snapshot().HeartbeatRequests
		return len(reqs) == 1 && reqs[0].Answered
	})
	// Answered long before the 10 s interval would have beaten.
	if d := sim.Snapshot().HeartbeatRequests[0].Delay; d > 5*time.Second {
		t.Errorf("answered after %s", d)
	}
}

func TestShardReconnectBeforeHello(t *testing.T) {
	sim := startSim(t, nil)
	sim.ReconnectBeforeHello()
	r := runShard(t, sim, nil)
	waitState(t, r.shard, Ready)
	if n := len(sim.Snapshot().Connections); n != 2 {
		t.Errorf("%d connections, want 2 (op 7 before hello, then a new one)", n)
	}
}

func TestShardCompressions(t *testing.T) {
	for _, c := range []Compression{CompressZlib, CompressZstd} {
		t.Run(string(c), func(t *testing.T) {
			sim := startSim(t, func(cfg *simulator.Config) { cfg.ZlibChunkSize = 7; cfg.TrafficRate = 500 })
			r := runShard(t, sim, func(cfg *ShardConfig) { cfg.Compress = c })
			waitState(t, r.shard, Ready)
			waitFor(t, "traffic", func() bool { return r.shard.Status().Events > 100 })
			_ = sim.Reconnect(0) // a new compression context on resume
			waitFor(t, "resume", func() bool { return len(sim.Snapshot().Resumes) == 1 && r.shard.Status().State == Ready })
			waitFor(t, "more traffic", func() bool { return r.shard.Status().Events > 200 })
			sim.SetTrafficRate(0)
			waitCaughtUp(t, r, sim)
			_ = r.stop()
			if conn, _ := sim.Snapshot().Connection(1); conn.Compress != string(c) {
				t.Errorf("connected with compress=%q", conn.Compress)
			}
			checkContiguous(t, r.rec.all(), sim, r.shard.Status().SessionID)
		})
	}
}

func TestShardShutdownKeepsSessionForNextProcess(t *testing.T) {
	sim := startSim(t, func(c *simulator.Config) { c.TrafficRate = 300 })
	store := &MemoryStore{}
	first := runShard(t, sim, func(c *ShardConfig) { c.Store = store })
	waitState(t, first.shard, Ready)
	waitFor(t, "traffic", func() bool { return first.shard.Status().Events > 50 })
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}
	saved, _ := store.Load(context.Background(), 0)
	if !saved.Resumable() || saved.ResumeURL == "" || saved.Seq != first.shard.Status().Seq {
		t.Fatalf("saved session %+v, shard at %d", saved, first.shard.Status().Seq)
	}
	waitFor(t, "the close to be recorded", func() bool { return len(sim.Snapshot().Closes) == 1 })
	closes := sim.Snapshot().Closes
	if last := closes[len(closes)-1]; last.ByServer || last.Code == 1000 || last.Code == 1001 {
		t.Fatalf("shutdown close %+v: must keep the session resumable", last)
	}
	// A "new process" with the same store resumes, and gets what it missed.
	time.Sleep(100 * time.Millisecond)
	second := runShard(t, sim, func(c *ShardConfig) { c.Store = store })
	waitState(t, second.shard, Ready)
	snap := sim.Snapshot()
	if len(snap.Identifies) != 1 || len(snap.Resumes) != 1 || !snap.Resumes[0].Accepted || snap.Resumes[0].Replayed == 0 {
		t.Fatalf("identifies %d, resumes %+v", len(snap.Identifies), snap.Resumes)
	}
	sim.SetTrafficRate(0)
	time.Sleep(50 * time.Millisecond)
	_ = second.stop()
	all := append(first.rec.all(), second.rec.all()...)
	checkContiguous(t, all, sim, saved.ID)
}

func TestShardSendsWorkerPackets(t *testing.T) {
	sim := startSim(t, func(c *simulator.Config) { c.SendLimit = 10; c.SendWindow = 500 * time.Millisecond })
	r := runShard(t, sim, func(c *ShardConfig) { c.SendLimit = 10; c.SendWindow = 500 * time.Millisecond })
	waitState(t, r.shard, Ready)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	guild := sim.GuildsForShard(0, 1)[0]
	packet, _ := json.Marshal(map[string]any{"op": 8, "d": map[string]any{"guild_id": guild, "query": "", "limit": 0}})
	// More than the limit allows in one window: the limiter must spread them.
	for range 25 {
		if err := r.shard.Send(ctx, packet); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.shard.Send(ctx, []byte(`{"op":2,"d":{}}`)); !errors.Is(err, discord.ErrInvalidPacket) {
		t.Errorf("identify from a worker: err = %v", err)
	}
	waitFor(t, "25 op 8 received", func() bool {
		n := 0
		for _, p := range sim.Snapshot().Received {
			if p.Op == 8 {
				n++
			}
		}
		return n == 25
	})
	for _, c := range sim.Snapshot().Closes {
		if c.Code == 4008 {
			t.Fatal("rate limited by the gateway: the send limiter let too much through")
		}
	}
}
