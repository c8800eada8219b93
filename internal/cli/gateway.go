package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/redisgw"
	"github.com/spectacles-go/spectacles/internal/redact"
	redistransport "github.com/spectacles-go/spectacles/transport/redis"
)

// statusInterval is how often a gateway node publishes its shards' health
// for `spectacles shards` and remote consoles.
const statusInterval = 2 * time.Second

// defaultGatewayGroup is spec-tacles/gateway's BROKER_GROUP default.
const defaultGatewayGroup = "gateway"

// addSettingFlags registers a command's own settings as flags parsed later
// by load, like the global ones.
func addSettingFlags[T any](cmd *cobra.Command, list []setting[T]) {
	for _, s := range list {
		usage := fmt.Sprintf("%s (env %s", s.usage, s.env)
		if s.def != "" {
			usage += ", default " + redact.URL(s.def)
		}
		cmd.Flags().Var(&textFlag{typ: s.typ}, s.flag, usage+")")
	}
}

// changedFlags looks up the flags of cmd that were given.
func changedFlags(cmd *cobra.Command) lookupFunc {
	return func(name string) (string, bool) {
		f := cmd.Flags().Lookup(name)
		if f == nil || !f.Changed {
			return "", false
		}
		return f.Value.String(), true
	}
}

func (a *app) gatewayCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run Discord gateway shards: publish dispatches, route packets back",
		Long: `gateway is a headless Spectacles gateway node. It holds the bot's Discord
websocket shards (all of them, or DISCORD_SHARD_IDS), publishes each dispatch's
d under its event name t, and sends the packets workers publish to a shard id
("0", "1", ...) or as SEND {guild_id, packet} to the shard that owns the guild.

It reads spec-tacles/gateway's environment variables. On SIGINT or SIGTERM it
closes the shards resumably, publishes the dispatches still queued for at most
GATEWAY_DRAIN_TIMEOUT, and saves each shard's session at the last dispatch the
broker confirmed, so that the next start resumes and Discord replays the rest.
If dispatches were left unpublished it says how many and exits non-zero.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			gc, err := loadGatewayConfig(a.env, changedFlags(cmd))
			if err != nil {
				return usageError(err)
			}
			return a.runGateway(cmd.Context(), gc)
		},
	}
	addSettingFlags(cmd, gatewaySettings())
	return cmd
}

// runGateway runs a gateway node until ctx ends or a shard closes fatally.
func (a *app) runGateway(ctx context.Context, gc GatewayConfig) (err error) {
	id := a.cfg.Identity()
	if id.Group == "" {
		id.Group = defaultGatewayGroup
	}
	b, err := a.open(ctx, a.options(id))
	if err != nil {
		return err
	}
	defer func() {
		if errors.Is(err, gateway.ErrNotDrained) {
			// The broker is stalled: closing it could wait for it for good.
			closeBrokerWithin(b, &err, brokerCloseWait)
			return
		}
		closeBroker(b, &err)
	}()

	rc, doneRedis, err := a.redisClient(b)
	if err != nil {
		return err
	}
	defer doneRedis()
	mc := gateway.ManagerConfig{
		Token: gc.Token, Intents: gc.Intents, Presence: gc.Presence, LargeThreshold: gc.LargeThreshold,
		ShardCount: gc.ShardCount, ShardIDs: gc.ShardIDs, APIBase: gc.APIBase(), Version: gc.APIVersion,
		Compress: gc.Compress, Events: gc.Events, Broker: b, Codec: a.cfg.Codec, Format: gc.Format,
		QueueSize: gc.QueueSize, DrainTimeout: gc.DrainTimeout, SharedIdentify: redisgw.IdentifyLimiters(rc, gc.Token), Logger: a.log,
	}
	if gc.StoreType == "redis" {
		if rc == nil {
			return usageErrorf("SHARD_STORE_TYPE=redis needs Redis: set REDIS_URL")
		}
		sc := rc
		if a.cfg.RedisURL != "" {
			// A client of its own: when the broker stalls, its blocked
			// commands must not leave the final session saves waiting
			// for a connection of the shared pool.
			if sc, err = redistransport.NewClient(a.cfg.RedisURL, 4); err != nil {
				return fmt.Errorf("REDIS_URL: %w", err)
			}
			defer sc.Close()
		}
		mc.Store = redisgw.NewSessionStore(sc, gc.StorePrefix)
	}
	var reg *prometheus.Registry
	if gc.PromAddress != "" {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if mc.Metrics, err = gateway.NewMetrics(reg); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		if uc, ok := b.(core.UnhandledCounter); ok {
			reg.MustRegister(gateway.UnhandledCollector(uc))
		}
	}
	m, err := gateway.NewManager(mc)
	if err != nil {
		return usageError(err)
	}
	if reg != nil {
		ready := func(ctx context.Context) error {
			if err := gateway.BrokerReachable(ctx, b, readyBrokerTimeout); err != nil {
				return err
			}
			return m.Ready()
		}
		stop, err := servePrometheus(gc.PromAddress, gc.PromEndpoint, reg, gateway.HealthHandler(ready))
		if err != nil {
			return err
		}
		defer stop()
		a.log.Info("serving Prometheus metrics, /healthz and /readyz", "address", gc.PromAddress, "endpoint", gc.PromEndpoint)
	}
	a.log.Info("gateway starting", "group", id.Group, "client", id.Client, "api", gc.APIBase(),
		"intents", gc.Intents.String(), "compress", gc.Compress, "shard_store", gc.StoreType)
	if rc != nil {
		reportCtx, stopReport := context.WithCancel(ctx)
		reported := make(chan struct{})
		go func() {
			defer close(reported)
			m.ReportStatus(reportCtx, redisgw.NewStatusReporter(rc), id.Group, id.Client, statusInterval)
		}()
		defer func() {
			stopReport()
			select {
			case <-reported:
			case <-time.After(time.Second): // a stalled Redis
			}
		}()
	}
	if err := m.Run(ctx); err != nil {
		if errors.Is(err, gateway.ErrUnauthorized) || errors.Is(err, gateway.ErrFatalClose) {
			return usageError(err)
		}
		return err
	}
	return nil
}

// brokerCloseWait bounds how long a gateway whose drain failed waits for
// the stalled broker to close.
const brokerCloseWait = 2 * time.Second

// closeBrokerWithin closes b like closeBroker, waiting at most d.
func closeBrokerWithin(b interface{ Close() error }, err *error, d time.Duration) {
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case cerr := <-closed:
		if cerr != nil && *err == nil {
			*err = fmt.Errorf("close broker: %w", cerr)
		}
	case <-time.After(d):
	}
}

// readyBrokerTimeout bounds the broker check of /readyz.
const readyBrokerTimeout = 2 * time.Second

// servePrometheus serves reg on addr at endpoint, and health (/healthz,
// /readyz) beside it, until stop is called.
func servePrometheus(addr, endpoint string, reg *prometheus.Registry, health http.Handler) (stop func(), err error) {
	if endpoint == "/healthz" || endpoint == "/readyz" {
		return nil, usageErrorf("PROMETHEUS_ENDPOINT %s is where health is served: choose another path", endpoint)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("PROMETHEUS_ADDRESS %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(endpoint, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/healthz", health)
	mux.Handle("/readyz", health)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
