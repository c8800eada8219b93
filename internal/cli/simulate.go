package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/gateway/simulator"
)

func (a *app) simulateCommand() *cobra.Command {
	var (
		cfg        simulator.Config
		rate       float64
		heartbeat  time.Duration
		identifyIv time.Duration
		restCfg    simulator.RESTConfig
	)
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Serve a local simulator of Discord's gateway, for development and tests",
		Long: `simulate serves GET /api/v10/gateway/bot and a websocket gateway that behaves
like Discord's: Hello, identify checks and close codes, identify buckets,
READY then lazy GUILD_CREATE, heartbeats, resume with replay, zlib-stream and
zstd-stream, the 4096-byte and 120/60 s limits, and synthetic traffic.
Beside it, on the same address, it serves a fake of Discord's REST API with
Discord's rate limits (buckets and X-RateLimit-* headers, shared hashes, the
global limit, 429s of each scope, invalid-request bans), for the REST proxy.
Point a gateway or a proxy at it with the environment it prints.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := simulateFlagsError(&cfg, heartbeat, identifyIv); err != nil {
				return err
			}
			cfg.TrafficRate = rate
			cfg.HeartbeatInterval = heartbeat
			cfg.IdentifyInterval = identifyIv
			cfg.Logger = a.log
			restCfg.Token, restCfg.Logger = cfg.Token, a.log
			rest, err := simulator.NewREST(restCfg)
			if err != nil {
				return usageError(err)
			}
			cfg.REST = rest
			sim, err := simulator.New(cfg)
			if err != nil {
				return usageError(err)
			}
			ctx := cmd.Context()
			if err := sim.Start(ctx); err != nil {
				return err
			}
			defer sim.Close()
			host := sim.URL()[len("http://"):]
			fmt.Fprintf(a.stderr, "spectacles: SIMULATED Discord gateway at %s (%d shards, %d guilds, %.0f events/s).\n",
				sim.GatewayURL(), sim.Config().Shards, sim.Config().Guilds, rate)
			fmt.Fprintf(a.stderr, "spectacles: point a gateway at it with:\n")
			fmt.Fprintf(a.stdout, "DISCORD_API_PROTOCOL=http DISCORD_API_HOST=%s DISCORD_TOKEN=%s\n", host, sim.Token())
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", "127.0.0.1:0", "address to listen on (port 0 picks a free one)")
	f.StringVar(&cfg.Token, "sim-token", "", "token the simulator accepts (default "+simulator.DefaultToken+")")
	f.IntVar(&cfg.Shards, "shards", 1, "shard count /gateway/bot recommends")
	f.IntVar(&cfg.Guilds, "guilds", 10, "simulated guilds over all shards (0: none)")
	f.IntVar(&cfg.MaxConcurrency, "max-concurrency", 1, "identify buckets (session_start_limit.max_concurrency)")
	f.Float64Var(&rate, "rate", 5, "synthetic dispatches per second (0: none; negative: as fast as clients read)")
	f.DurationVar(&heartbeat, "heartbeat-interval", 41250*time.Millisecond, "heartbeat interval sent in Hello")
	f.IntVar(&restCfg.GlobalLimit, "rest-global-limit", 50, "REST requests per second per bot (the global limit)")
	f.Float64Var(&restCfg.TimeScale, "rest-time-scale", 1, "factor on every REST route window (0.1 makes limits reset 10 times faster)")
	f.DurationVar(&identifyIv, "identify-interval", 5*time.Second, "minimum time between identifies of one bucket")
	return cmd
}
