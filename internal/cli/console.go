package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
	goredis "github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/redisgw"
	"github.com/spectacles-go/spectacles/gateway/restproxy"
	"github.com/spectacles-go/spectacles/gateway/restproxy/redisstore"
	"github.com/spectacles-go/spectacles/internal/redact"
	"github.com/spectacles-go/spectacles/themes"
	"github.com/spectacles-go/spectacles/tui"
)

// consoleFlags are the console command's own flags.
type consoleFlags struct {
	readOnly, noGateway, simulate, mouse bool
	theme, logFile, view                 string
	refresh                              time.Duration
	simRate                              float64
	simShards                            int
	simMaxLen                            int64
	// simHold and simStale are the demo's timings (tests shorten them):
	// how long worker-2 reads before it stops, and the idle time after
	// which the console calls a consumer stale; 0 for demoHold and
	// demoStaleAfter.
	simHold, simStale time.Duration
}

func (a *app) consoleCommand() *cobra.Command {
	var f consoleFlags
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Open the interactive console (also: spectacles with no arguments)",
		Long: `console is an interactive terminal console on this node: live streams,
consumer groups, pending entries and shard health, with actions to claim,
ack, dead-letter, requeue, publish, call and SEND-route packets by hand.

With nothing configured it shows a live system on a fresh machine: the
embedded broker and a local gateway connected to the built-in Discord
simulator with synthetic traffic, labelled SIMULATED. With DISCORD_TOKEN it
runs real shards; with REDIS_URL it attaches to that Redis (and runs no
simulator, so that nothing synthetic reaches a real broker). --no-gateway
inspects the broker only; --read-only disables every action that changes
anything (and starts no real shards). The Shards view and the overview
also show the shards of gateway nodes (spectacles gateway) that report to
the broker's Redis, or to REDIS_URL when BROKER_TYPE=amqp. Press ? in any
view for its keys, : for commands.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(a.env); err != nil {
				return err
			}
			if !isTerminal(a.stdin) || !isTerminalWriter(a.stdout) {
				return usageErrorf("the console needs a terminal (standard input and output); see spectacles --help for the scriptable commands")
			}
			return a.runConsole(cmd.Context(), f)
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// register adds the console's flags to fl (the console command's, and the
// root command's, so that `spectacles --read-only` works too).
func (f *consoleFlags) register(fl *pflag.FlagSet) {
	fl.BoolVar(&f.readOnly, "read-only", false, "disable every action that changes anything (ack, claim, publish, send, shard control)")
	fl.BoolVar(&f.noGateway, "no-gateway", false, "run no shards: inspect the broker only")
	fl.BoolVar(&f.simulate, "simulate", false, "run the built-in Discord simulator even when REDIS_URL is set (it publishes synthetic events)")
	fl.BoolVar(&f.mouse, "mouse", false, "enable mouse scrolling (off by default so that terminal text selection works)")
	fl.StringVar(&f.theme, "theme", "", "colour theme: "+strings.Join(themes.Names(), ", ")+" (env "+themes.EnvVar+", default dark; NO_COLOR is respected)")
	fl.StringVar(&f.logFile, "log-file", "", "append logs to this file (default: no logs; nothing is written to the terminal while the console runs)")
	fl.StringVar(&f.view, "view", "", `view to open first, as a ":" command: "streams", "pending MESSAGE_CREATE", "shards"`)
	fl.DurationVar(&f.refresh, "refresh", tui.DefaultRefresh, "live refresh interval (+ and - change it, P pauses)")
	fl.Float64Var(&f.simRate, "sim-rate", 6, "synthetic dispatches per second of the simulator")
	fl.IntVar(&f.simShards, "sim-shards", 2, "shards of the simulated bot")
	fl.Int64Var(&f.simMaxLen, "sim-max-len", demoMaxLen, "entries each stream keeps while the simulator publishes to the embedded broker (XADD MAXLEN ~; 0 keeps all)")
}

// openConsole is what spectacles with no arguments does: the console on a
// terminal, the help otherwise (so that scripts never hang on a screen).
func (a *app) openConsole(cmd *cobra.Command, f consoleFlags) error {
	if err := f.check(a.env); err != nil {
		return err
	}
	if !isTerminal(a.stdin) || !isTerminalWriter(a.stdout) {
		return cmd.Help()
	}
	return a.runConsole(cmd.Context(), f)
}

// isTerminalWriter reports whether w is a terminal.
func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// consoleClient is the consumer name the console claims messages to: not
// the host's default client name, which a worker on this host may use.
func consoleClient() string { return "spectacles-console@" + core.DefaultClient() }

func (a *app) runConsole(parent context.Context, f consoleFlags) (err error) {
	theme, err := themes.Resolve(f.theme, a.env)
	if err != nil {
		return usageError(err)
	}
	log, closeLog, err := consoleLogger(f.logFile, a.cfg.LogLevel)
	if err != nil {
		return usageError(err)
	}
	defer closeLog()
	a.log = log // nothing may write to the terminal while the console runs

	token, _ := a.env("DISCORD_TOKEN")
	token = strings.TrimPrefix(strings.TrimSpace(token), "Bot ")
	if a.cfg.BrokerType == "ipc" {
		return usageErrorf("the console needs the terminal, and BROKER_TYPE=ipc needs standard input and output: use redis or amqp")
	}
	// Nothing configured: a demo on the embedded broker. A real broker
	// (REDIS_URL, or RabbitMQ) never gets synthetic traffic unless asked.
	brokerConfigured := a.cfg.RedisURL != "" || a.cfg.BrokerType != "redis"
	simulate := !f.noGateway && (f.simulate || (token == "" && !brokerConfigured))
	// Read-only never starts real shards: identifying changes Discord's
	// side (sessions, identify limits) and may displace a running gateway.
	realGateway := !f.noGateway && !f.readOnly && !simulate && token != ""

	ctx, cancel := context.WithCancel(parent)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	group := a.cfg.Group
	if group == "" {
		group = "spectacles-console"
	}
	b, err := a.open(ctx, a.options(core.Identity{Group: group, Client: consoleClient()}))
	if err != nil {
		return err
	}
	defer closeBroker(b, &err)
	// The address the header shows, without its password. Only the redis
	// broker has a Redis URL (asking for one otherwise would start an
	// embedded Redis).
	var url string
	switch a.cfg.BrokerType {
	case "amqp":
		url = a.cfg.AMQPURL
	case "hub":
		url = a.cfg.HubURL
	case "redis":
		url, _ = a.redisURL()
	}

	var secretList []string
	for _, u := range a.rawURLs {
		secretList = append(secretList, redact.Secrets(u)...)
	}
	if token != "" {
		secretList = append(secretList, token)
	}
	node := &tui.Node{
		Info: tui.NodeInfo{
			Name: fmt.Sprintf("%s/%d", core.DefaultClient(), os.Getpid()), Client: consoleClient(), Group: a.cfg.Group,
			BrokerKind: a.brokerName(), BrokerAddress: redact.URL(url), Embedded: a.brokerName() == "redis-embedded",
			Simulated: simulate, EnvToken: token != "", StaleAfter: a.cfg.MessageTimeout,
		},
		Publisher: b,
		Secrets:   secretList,
	}
	if ins, ok := any(b).(core.Inspector); ok {
		node.Inspect = ins
	}
	// Gateway nodes in other processes report their shards to Redis: the
	// broker's own, else REDIS_URL's.
	rc, doneRedis, err := a.redisClient(b)
	if err != nil {
		return err
	}
	defer doneRedis()
	node.ReadNodes = nodeReader(rc)
	prefix := redisstore.DefaultPrefix
	if v, ok := a.env("PROXY_RATELIMIT_PREFIX"); ok && v != "" {
		prefix = v
	}
	node.ReadBuckets = bucketsReader(rc, prefix)
	// Gateways started here (at launch or from the Shards view) run until
	// the console ends.
	start := func(_ context.Context, tok string) (tui.GatewayInfo, error) {
		env := a.env
		if tok != "" {
			env = func(name string) (string, bool) {
				if name == "DISCORD_TOKEN" {
					return tok, true
				}
				return a.env(name)
			}
		}
		gc, err := loadGatewayConfig(env, func(string) (string, bool) { return "", false })
		if err != nil {
			return tui.GatewayInfo{}, err
		}
		return a.startConsoleGateway(ctx, &wg, node, gc, log)
	}
	if !simulate {
		node.Start = start
	}

	switch {
	case simulate:
		info, err := a.startDemo(ctx, &wg, node, f, log)
		if err != nil {
			return err
		}
		node.SetGateway(info)
	case realGateway:
		// In the background: the console shows the shards as they start.
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := node.StartGateway(ctx, ""); err != nil {
				log.Error("gateway did not start", "err", node.Redact(err.Error()))
			}
		}()
	}

	opts := tui.Options{
		ReadOnly: f.readOnly, Refresh: f.refresh, Mouse: f.mouse, View: f.view, Theme: theme,
	}
	out, _ := a.stdout.(*os.File)
	r := lipgloss.NewRenderer(a.stdout)
	if theme.Colorless() {
		// NO_COLOR forbids colours, not bold or reverse video.
		r.SetColorProfile(termenv.ANSI)
	}
	opts.Renderer = r
	if out != nil {
		opts.Output = out
	}
	err = tui.Run(ctx, node, opts, a.stdin, a.stdout)
	cancel()
	return err
}

// nodeReader reads the statuses gateway nodes publish to rc; nil when
// there is no Redis.
func nodeReader(rc goredis.UniversalClient) func(context.Context) ([]gateway.NodeStatus, error) {
	if rc == nil {
		return nil
	}
	return func(ctx context.Context) ([]gateway.NodeStatus, error) {
		return redisgw.ReadNodeStatuses(ctx, rc)
	}
}

// bucketsReader reads the REST proxy's Redis store at prefix for the
// console's Buckets view; nil without Redis.
func bucketsReader(rc goredis.UniversalClient, prefix string) func(context.Context) (restproxy.Snapshot, error) {
	if rc == nil {
		return nil
	}
	return func(ctx context.Context) (snap restproxy.Snapshot, err error) {
		now := time.Now()
		if snap.Buckets, err = redisstore.ReadBuckets(ctx, rc, prefix, now); err != nil {
			return snap, err
		}
		if snap.Recent, err = redisstore.ReadRecent(ctx, rc, prefix); err != nil {
			return snap, err
		}
		var banned time.Time
		if snap.InvalidCount, banned, err = redisstore.ReadInvalid(ctx, rc, prefix, now); err != nil {
			return snap, err
		}
		if !banned.IsZero() {
			snap.BannedUntil = &banned
		}
		return snap, nil
	}
}

// consoleLogger logs to a file, or nowhere.
func consoleLogger(path string, level slog.Level) (*slog.Logger, func(), error) {
	if path == "" {
		return slog.New(slog.DiscardHandler), func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("--log-file: %w", err)
	}
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: level})), func() { _ = f.Close() }, nil
}

// startConsoleGateway runs a gateway manager until ctx ends and returns
// once its shards are starting.
func (a *app) startConsoleGateway(ctx context.Context, wg *sync.WaitGroup, node *tui.Node, gc GatewayConfig, log *slog.Logger) (tui.GatewayInfo, error) {
	id := a.cfg.Identity()
	if id.Group == "" {
		id.Group = defaultGatewayGroup
	}
	b, err := a.open(ctx, a.options(id))
	if err != nil {
		return tui.GatewayInfo{}, err
	}
	mc := gateway.ManagerConfig{
		Token: gc.Token, Intents: gc.Intents, Presence: gc.Presence, LargeThreshold: gc.LargeThreshold,
		ShardCount: gc.ShardCount, ShardIDs: gc.ShardIDs, APIBase: gc.APIBase(), Version: gc.APIVersion,
		Compress: gc.Compress, Events: gc.Events, Broker: b, Codec: a.cfg.Codec, Format: gc.Format,
		Logger: log, KeepRunningOnFatal: true, QueueSize: gc.QueueSize,
	}
	if rc, ok := b.(redisClienter); ok {
		mc.SharedIdentify = redisgw.IdentifyLimiters(rc.Client(), gc.Token)
		if gc.StoreType == "redis" {
			mc.Store = redisgw.NewSessionStore(rc.Client(), gc.StorePrefix)
		}
	}
	info := tui.GatewayInfo{Target: "Discord API " + gc.APIBase()}
	return runManager(ctx, wg, node, mc, b, info)
}

// runManager starts a manager, waits until its shards start, and records
// its end in node.
func runManager(ctx context.Context, wg *sync.WaitGroup, node *tui.Node, mc gateway.ManagerConfig, b core.Broker, info tui.GatewayInfo) (tui.GatewayInfo, error) {
	m, err := gateway.NewManager(mc)
	if err != nil {
		_ = b.Close()
		return tui.GatewayInfo{}, err
	}
	done := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := m.Run(ctx)
		_ = b.Close()
		done <- err
		if ctx.Err() == nil {
			if err == nil {
				err = errors.New("the gateway stopped")
			}
			node.SetGateway(tui.GatewayInfo{Err: err, Simulated: info.Simulated})
		}
	}()
	select {
	case <-m.Started():
		info.Gateway = m
		return info, nil
	case err := <-done:
		if err == nil {
			err = ctx.Err()
		}
		return tui.GatewayInfo{}, err
	case <-time.After(30 * time.Second):
		return tui.GatewayInfo{}, errors.New("the gateway did not start within 30 s")
	}
}
