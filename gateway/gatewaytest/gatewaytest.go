// Package gatewaytest holds the helpers the gateway's tests share
// (gateway and gateway/redisgw): the test log, polling, a simulator with
// test-friendly timings and running a manager until its shards are ready.
// Only tests import it; it cannot import gateway, whose own tests use it.
package gatewaytest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/gateway/simulator"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// Logger logs through t at debug level, so that logs show only for
// failing tests.
func Logger(t testing.TB) *slog.Logger { return brokertest.Logger(t, slog.LevelDebug) }

// WaitFor polls cond until it holds, failing after 15 s.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	WaitWithin(t, 15*time.Second, what, cond)
}

// WaitWithin polls cond until it holds, failing after limit.
func WaitWithin(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// StartSim starts a simulator with test-friendly timings (12 guilds on 1
// shard unless mod says otherwise), closed when t ends.
func StartSim(t testing.TB, mod func(*simulator.Config)) *simulator.Server {
	t.Helper()
	cfg := simulator.Config{
		Guilds:            12,
		Shards:            1,
		HeartbeatInterval: 400 * time.Millisecond,
		IdentifyInterval:  20 * time.Millisecond,
		ReplayBuffer:      1 << 17,
		CloseGrace:        time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	return Serve(t, cfg)
}

// Serve starts a simulator configured exactly as cfg, closed when t ends.
func Serve(t testing.TB, cfg simulator.Config) *simulator.Server {
	t.Helper()
	sim, err := simulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

// Runner is what Run runs: a gateway.Manager.
type Runner interface {
	Run(ctx context.Context) error
	Started() <-chan struct{}
}

// Run runs r until the test ends or stop is called, waits until it has
// started and ready holds, and returns stop. A run that ends with an
// error fails the test.
func Run(t testing.TB, r Runner, ready func() bool) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}
	t.Cleanup(stop)
	select {
	case <-r.Started():
	case err := <-done:
		t.Fatalf("manager stopped: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("manager did not start")
	}
	WaitFor(t, "every shard ready", ready)
	return stop
}
