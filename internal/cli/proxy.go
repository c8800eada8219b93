package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	goredis "github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/restproxy"
	"github.com/spectacles-go/spectacles/gateway/restproxy/redisstore"
)

// Defaults of spec-tacles/proxy.
const (
	defaultProxyGroup = "proxy"
	defaultProxyEvent = "REQUEST"
)

// ProxyConfig is the configuration of the proxy command.
type ProxyConfig struct {
	// API holds the gateway's Discord settings the proxy shares:
	// DISCORD_TOKEN, DISCORD_API_*, PROMETHEUS_*.
	API           GatewayConfig
	Event         string
	Broker        bool
	HTTPAddress   string
	Store         string // "memory" or "redis"
	StorePrefix   string
	GlobalLimit   int
	GlobalMargin  time.Duration
	Timeout       time.Duration
	MaxRetries    int
	InvalidBudget int
	Concurrency   int
}

// proxySharedSettings are the gateway settings the proxy reads too.
var proxySharedSettings = []string{"DISCORD_TOKEN", "DISCORD_API_PROTOCOL", "DISCORD_API_HOST", "DISCORD_API_VERSION",
	"PROMETHEUS_ADDRESS", "PROMETHEUS_ENDPOINT"}

// proxyAPISettings returns those gateway settings, DISCORD_TOKEN made
// optional in its help.
func proxyAPISettings() []setting[GatewayConfig] {
	var out []setting[GatewayConfig]
	for _, s := range gatewaySettings() {
		if slices.Contains(proxySharedSettings, s.env) {
			if s.env == "DISCORD_TOKEN" {
				s.usage = "bot token (never printed), sent only with requests that carry no Authorization; optional"
			}
			if s.env == "PROMETHEUS_ADDRESS" {
				s.usage = "address to serve Prometheus metrics, /healthz, /readyz and /buckets on (e.g. :8080); empty serves none"
			}
			out = append(out, s)
		}
	}
	return out
}

func proxySettings() []setting[ProxyConfig] {
	positive := func(dst *int) func(*ProxyConfig, string) error {
		return func(_ *ProxyConfig, v string) (err error) {
			*dst, err = parseInt(v)
			if err == nil && *dst < 1 {
				return fmt.Errorf("%q must be positive", v)
			}
			return err
		}
	}
	return []setting[ProxyConfig]{
		{
			env: "BROKER_EVENT", flag: "event", typ: "string", def: defaultProxyEvent,
			usage: "event the proxy consumes requests from",
			parse: func(c *ProxyConfig, v string) error {
				if strings.TrimSpace(v) == "" {
					return errors.New("must not be empty")
				}
				c.Event = v
				return nil
			},
		},
		{
			env: "PROXY_BROKER", flag: "broker", typ: "bool", def: "true",
			usage: "consume requests from the broker (false: the HTTP side only)",
			parse: func(c *ProxyConfig, v string) (err error) {
				c.Broker, err = strconv.ParseBool(v)
				return err
			},
		},
		{
			env: "PROXY_HTTP_ADDRESS", flag: "http-address", typ: "string",
			usage: "address of the transparent HTTP side (http://ADDR/api/v10/...); empty serves none",
			parse: func(c *ProxyConfig, v string) error { c.HTTPAddress = v; return nil },
		},
		{
			env: "PROXY_RATELIMIT_STORE", flag: "ratelimit-store", typ: "string", def: "memory",
			usage: "where rate limits live: memory (this process) or redis (shared by every proxy on REDIS_URL)",
			parse: func(c *ProxyConfig, v string) error {
				switch v = strings.ToLower(v); v {
				case "memory", "redis":
					c.Store = v
					return nil
				}
				return fmt.Errorf("%q is not memory or redis", v)
			},
		},
		{
			env: "PROXY_RATELIMIT_PREFIX", flag: "ratelimit-prefix", typ: "string", def: redisstore.DefaultPrefix,
			usage: "prefix of the Redis keys of the rate limits",
			parse: func(c *ProxyConfig, v string) error { c.StorePrefix = v; return nil },
		},
		{
			env: "PROXY_GLOBAL_LIMIT", flag: "global-limit", typ: "string", def: "50",
			usage: "requests per second per token (Discord's global limit), or auto: from DISCORD_TOKEN's max_concurrency (1: 50, else max(500, 25 x max_concurrency))",
			parse: func(c *ProxyConfig, v string) error {
				if strings.EqualFold(v, "auto") {
					c.GlobalLimit = 0
					return nil
				}
				return positive(&c.GlobalLimit)(c, v)
			},
		},
		{
			env: "PROXY_GLOBAL_MARGIN", flag: "global-margin", typ: "duration", def: "20ms",
			usage: "a request counts against the global limit while in flight and for 1 s plus this margin after its answer",
			parse: func(c *ProxyConfig, v string) (err error) {
				c.GlobalMargin, err = time.ParseDuration(v)
				if err == nil && c.GlobalMargin < 0 {
					return fmt.Errorf("%q must not be negative", v)
				}
				if c.GlobalMargin == 0 {
					c.GlobalMargin = -1 // none
				}
				return err
			},
		},
		{
			env: "PROXY_TIMEOUT", flag: "timeout", typ: "duration", def: "15s",
			usage: "how long a request without its own timeout may wait on limits and Discord",
			parse: func(c *ProxyConfig, v string) (err error) {
				c.Timeout, err = parsePositiveDuration(v)
				return err
			},
		},
		{
			env: "PROXY_MAX_RETRIES", flag: "max-retries", typ: "int", def: "3",
			usage: "retries of a request after a 429 (within its timeout); 0 passes 429s through",
			parse: func(c *ProxyConfig, v string) (err error) {
				c.MaxRetries, err = parseInt(v)
				if err == nil && c.MaxRetries < 0 {
					return fmt.Errorf("%q must not be negative", v)
				}
				if c.MaxRetries == 0 {
					c.MaxRetries = -1 // none
				}
				return err
			},
		},
		{
			env: "PROXY_INVALID_BUDGET", flag: "invalid-budget", typ: "int", def: "5000",
			usage: "invalid requests (401, 403, 429) per 10 minutes before the proxy refuses to send (Discord bans at 10000)",
			parse: func(c *ProxyConfig, v string) error { return positive(&c.InvalidBudget)(c, v) },
		},
		{
			env: "PROXY_CONCURRENCY", flag: "concurrency", typ: "int", def: "512",
			usage: "broker requests held at once (waiting on limits or in flight)",
			parse: func(c *ProxyConfig, v string) error { return positive(&c.Concurrency)(c, v) },
		},
	}
}

// loadProxyConfig resolves the proxy settings.
func loadProxyConfig(env, flags lookupFunc) (ProxyConfig, error) {
	c, err := load(proxySettings(), env, flags)
	if err != nil {
		return c, err
	}
	c.API, err = load(proxyAPISettings(), env, flags)
	if err != nil {
		return c, err
	}
	if c.GlobalLimit == 0 && c.API.Token == "" {
		return c, errors.New("PROXY_GLOBAL_LIMIT=auto needs DISCORD_TOKEN, whose max_concurrency it reads")
	}
	if !c.Broker && c.HTTPAddress == "" {
		return c, errors.New("PROXY_BROKER=false needs PROXY_HTTP_ADDRESS: the proxy would serve nothing")
	}
	return c, nil
}

func (a *app) proxyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Forward requests to Discord's REST API under its rate limits (REQUEST events, HTTP)",
		Long: `proxy is the Spectacles REST proxy. It consumes BROKER_EVENT (REQUEST) as group
BROKER_GROUP (proxy) on the configured broker, sends each request to Discord
once its rate limits allow, and replies {status, body} as spec-tacles/proxy
does: status 0 with Discord's {status, headers, url, body} (4xx and 5xx
included), or 2-8 for requests it could not send (8: timeout). With
PROXY_HTTP_ADDRESS it also serves a transparent proxy: point a library's API
URL at http://ADDR/api and it works unchanged, with per-token limits.

Rate limits: buckets by X-RateLimit-Bucket and top-level resource (route
templates until Discord names the bucket), one request in flight per bucket
in arrival order, the global limit per token counted at send time over a
sliding window (a request counts while in flight and for 1 s +
PROXY_GLOBAL_MARGIN after its answer, so latency cannot break it), 429s handled by scope and retried within
the request's timeout, and an invalid-request budget that stops a runaway
before Cloudflare bans the address. PROXY_RATELIMIT_STORE=redis shares all of
it between proxy processes through Redis.

Ack policy: a request is acknowledged when received, before it waits or is
sent, so it is never delivered again and sent twice; a proxy that dies
while holding requests loses them (their callers time out).

SIGINT or SIGTERM stops taking requests, answers the ones it holds (they
finish or time out), and exits 0.`,
		Example: `  spectacles proxy
  DISCORD_API_PROTOCOL=http DISCORD_API_HOST=127.0.0.1:8000 PROXY_HTTP_ADDRESS=:8081 spectacles proxy
  spectacles call REQUEST '{"method":"GET","path":"/users/@me","headers":{"Authorization":"Bot TOKEN"}}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pc, err := loadProxyConfig(a.env, changedFlags(cmd))
			if err != nil {
				return usageError(err)
			}
			return a.runProxy(cmd.Context(), pc)
		},
	}
	addSettingFlags(cmd, proxySettings())
	addSettingFlags(cmd, proxyAPISettings())
	return cmd
}

// runProxy runs the proxy until ctx ends.
func (a *app) runProxy(ctx context.Context, pc ProxyConfig) (err error) {
	id := a.cfg.Identity()
	if id.Group == "" {
		id.Group = defaultProxyGroup
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := restproxy.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	var b core.Broker
	if pc.Broker {
		opts := a.options(id)
		opts.Concurrency = pc.Concurrency
		if b, err = a.open(ctx, opts); err != nil {
			return err
		}
		defer closeBroker(b, &err)
	}
	store := restproxy.Store(restproxy.NewMemoryStore())
	if pc.Store == "redis" {
		rc, done, err := a.redisStoreClient(b)
		if err != nil {
			return err
		}
		defer done()
		rs, err := redisstore.New(ctx, rc, pc.StorePrefix)
		if err != nil {
			return err
		}
		store = rs
	}
	auth := ""
	if pc.API.Token != "" {
		auth = "Bot " + pc.API.Token
	}
	if pc.GlobalLimit == 0 {
		if pc.GlobalLimit, err = restproxy.DetectGlobalLimit(ctx, nil, pc.API.APIBase(), auth); err != nil {
			_ = store.Close()
			return err
		}
		a.log.Info("global limit detected", "global_limit", pc.GlobalLimit)
	}
	p, err := restproxy.New(restproxy.Config{
		APIBase: pc.API.APIBase(), Authorization: auth, GlobalLimit: pc.GlobalLimit, GlobalMargin: pc.GlobalMargin,
		Timeout: pc.Timeout, MaxRetries: pc.MaxRetries, InvalidBudget: pc.InvalidBudget, Store: store, Metrics: metrics, Logger: a.log,
	})
	if err != nil {
		_ = store.Close()
		return usageError(err)
	}
	defer p.Close()
	if err := restproxy.RegisterBuckets(reg, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		bs, _ := store.Buckets(ctx, time.Now())
		return float64(len(bs))
	}); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}

	if pc.API.PromAddress != "" {
		ready := func(ctx context.Context) error {
			if b != nil {
				return gateway.BrokerReachable(ctx, b, readyBrokerTimeout)
			}
			return nil
		}
		stop, err := serveHTTP(pc.API.PromAddress, "PROMETHEUS_ADDRESS", proxyAdminMux(pc.API.PromEndpoint, reg, ready, p), 5*time.Second)
		if err != nil {
			return err
		}
		defer stop()
	}
	if pc.HTTPAddress != "" {
		h := restproxy.NewHTTPHandler(p, restproxy.HTTPConfig{Logger: a.log})
		// Stopping waits for the requests it holds: they end within the
		// proxy's timeout.
		stop, err := serveHTTP(pc.HTTPAddress, "PROXY_HTTP_ADDRESS", h, pc.Timeout+5*time.Second)
		if err != nil {
			return err
		}
		defer stop()
	}
	if b != nil {
		srv := restproxy.NewBrokerServer(p, restproxy.BrokerConfig{Timeout: pc.Timeout, Logger: a.log})
		// A new group starts at the stream's end: requests published
		// before any proxy ran were given up on by their callers long ago.
		if err := b.Consume(core.WithNewGroupsAtEnd(ctx), []string{pc.Event}, srv.Handle); err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
	}
	a.log.Info("proxy ready", "event", pc.Event, "group", id.Group, "broker", pc.Broker, "http", pc.HTTPAddress,
		"api", pc.API.APIBase(), "store", pc.Store, "global_limit", pc.GlobalLimit)
	<-ctx.Done()
	a.log.Info("stopping: answering the requests held")
	return nil
}

// redisStoreClient is the Redis client of PROXY_RATELIMIT_STORE=redis: the
// broker's when it is Redis, else one for REDIS_URL.
func (a *app) redisStoreClient(b core.Broker) (client goredis.UniversalClient, done func(), err error) {
	if b == nil && a.cfg.RedisURL == "" {
		return nil, nil, usageErrorf("PROXY_RATELIMIT_STORE=redis needs Redis: set REDIS_URL")
	}
	c, done, err := a.redisClient(b)
	if err != nil {
		return nil, nil, err
	}
	if c == nil {
		done()
		return nil, nil, usageErrorf("PROXY_RATELIMIT_STORE=redis needs Redis: set REDIS_URL")
	}
	return c, done, nil
}

// proxyAdminMux serves metrics, health and GET /buckets.
func proxyAdminMux(endpoint string, reg *prometheus.Registry, ready func(context.Context) error, p *restproxy.Proxy) http.Handler {
	mux := http.NewServeMux()
	health := gateway.HealthHandler(ready)
	mux.Handle(endpoint, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/healthz", health)
	mux.Handle("/readyz", health)
	mux.Handle("/buckets", restproxy.AdminHandler(p))
	return mux
}

// serveHTTP serves h on addr until stop is called; stop waits up to grace
// for the requests being served.
func serveHTTP(addr, name string, h http.Handler, grace time.Duration) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", name, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
	}, nil
}
