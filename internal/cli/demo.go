package cli

import (
	"cmp"
	"context"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/discord"
	"github.com/spectacles-go/spectacles/gateway/simulator"
	"github.com/spectacles-go/spectacles/tui"
)

// demoMaxLen is how many entries each stream keeps while the demo
// publishes to the embedded broker (--sim-max-len): hours of synthetic
// traffic stay within a bounded memory.
const demoMaxLen = 10_000

// demoHold is how long the simulated worker-2 reads before it stops,
// holding what it read; demoStaleAfter is the idle time after which the
// demo's console calls a consumer stale (at most the message timeout), so
// that the stuck worker-2 is shown, and warned about, within a minute.
const (
	demoHold       = 15 * time.Second
	demoStaleAfter = 30 * time.Second
)

// simBotMaxHeld bounds the messages the simulated worker-1 leaves pending
// (as a crashed handler would); past it, it acknowledges them all, so that
// the pending list stays bounded too.
const simBotMaxHeld = 500

// startDemo starts the built-in simulator, a gateway on it and a simulated
// bot (group sim-bot) that leaves some messages pending and dead-letters a
// few, so that every view has something to show. On the embedded broker
// its publishes trim each stream to about f.simMaxLen entries; a real
// Redis (--simulate) is never trimmed.
func (a *app) startDemo(ctx context.Context, wg *sync.WaitGroup, node *tui.Node, f consoleFlags, log *slog.Logger) (tui.GatewayInfo, error) {
	sim, err := simulator.New(simulator.Config{
		Shards: f.simShards, Guilds: 12 * f.simShards, TrafficRate: f.simRate,
		HeartbeatInterval: 8 * time.Second, IdentifyInterval: 100 * time.Millisecond, Logger: log,
	})
	if err != nil {
		return tui.GatewayInfo{}, usageError(err)
	}
	if err := sim.Start(ctx); err != nil {
		return tui.GatewayInfo{}, err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		_ = sim.Close()
	}()
	hold, stale := cmp.Or(f.simHold, demoHold), cmp.Or(f.simStale, demoStaleAfter)
	if node.Info.StaleAfter <= 0 || node.Info.StaleAfter > stale {
		node.Info.StaleAfter = stale
	}
	open := a.open
	if a.cfg.BrokerType == "redis" && a.brokerName() == "redis-embedded" && f.simMaxLen > 0 {
		open = func(ctx context.Context, opts core.Options) (core.Broker, error) {
			return a.openRedisTrimmed(ctx, opts, f.simMaxLen)
		}
	}
	b, err := open(ctx, a.options(core.Identity{Group: defaultGatewayGroup, Client: "sim-gateway"}))
	if err != nil {
		return tui.GatewayInfo{}, err
	}
	mc := gateway.ManagerConfig{
		Token: sim.Token(), APIBase: sim.URL() + "/api/v10", Broker: b, Codec: a.cfg.Codec, Logger: log,
		Intents:  discord.AllIntents() &^ discord.PrivilegedIntents,
		Identify: gateway.NewLocalIdentifyLimiter(1, 100*time.Millisecond, -1, 0), KeepRunningOnFatal: true,
	}
	info, err := runManager(ctx, wg, node, mc, b, tui.GatewayInfo{Simulated: true, Target: "SIMULATED Discord at " + sim.GatewayURL()})
	if err != nil {
		return info, err
	}
	if err := a.startSimBot(ctx, wg, open, hold, log); err != nil {
		log.Warn("simulated bot did not start", "err", err)
	}
	return info, nil
}

// startSimBot runs two simulated workers of group sim-bot, opened with
// openBroker: worker-1 acks most messages, leaves one in eight pending (up
// to simBotMaxHeld) and rejects one in fifty; worker-2 reads for hold
// without acking, then stops (its messages stay pending, held by an idle
// consumer).
func (a *app) startSimBot(ctx context.Context, wg *sync.WaitGroup, openBroker func(context.Context, core.Options) (core.Broker, error),
	hold time.Duration, log *slog.Logger) error {
	events := []string{"MESSAGE_CREATE", "MESSAGE_REACTION_ADD"}
	open := func(client string) (core.Broker, error) {
		opts := a.options(core.Identity{Group: "sim-bot", Client: client})
		opts.MessageTimeout, opts.MaxDeliveries, opts.Logger = time.Hour, -1, log
		return openBroker(ctx, opts)
	}
	var held atomic.Int64
	w1, err := open("worker-1")
	if err != nil {
		return err
	}
	if err := w1.Consume(ctx, events, func(ctx context.Context, m *core.Message) {
		h := fnv.New32a()
		_, _ = h.Write([]byte(m.ID))
		switch n := h.Sum32(); {
		case n%50 == 1:
			_ = m.Reject(ctx, "simulated: the bot could not handle this message")
		case n%8 == 0 && held.Add(1) <= simBotMaxHeld:
			// left pending, as a crashed handler would
		default:
			_ = m.Ack(ctx)
		}
	}); err != nil {
		_ = w1.Close()
		return err
	}
	w2, err := open("worker-2")
	if err != nil {
		_ = w1.Close()
		return err
	}
	w2ctx, stopW2 := context.WithTimeout(ctx, hold)
	if err := w2.Consume(w2ctx, events[:1], func(context.Context, *core.Message) {}); err != nil {
		log.Warn("simulated worker-2 did not start", "err", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		stopW2()
		_ = w2.Close()
		_ = w1.Close()
	}()
	return nil
}
