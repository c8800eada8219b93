package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/discord"
)

// GatewayConfig is the configuration of the gateway command, read from the
// environment variables of spec-tacles/gateway and from flags.
type GatewayConfig struct {
	Token          string
	Events         []string
	Intents        discord.Intent
	ShardCount     int
	ShardIDs       []int
	Presence       json.RawMessage
	APIProtocol    string
	APIHost        string
	APIVersion     int
	Compress       gateway.Compression
	Format         gateway.DispatchFormat
	StoreType      string // "memory" or "redis"
	StorePrefix    string
	PromAddress    string
	PromEndpoint   string
	QueueSize      int
	DrainTimeout   time.Duration
	LargeThreshold int
}

// APIBase is the Discord REST base URL this configuration points at.
func (g GatewayConfig) APIBase() string {
	return gateway.APIBase(g.APIProtocol, g.APIHost, g.APIVersion)
}

func gatewaySettings() []setting[GatewayConfig] {
	return []setting[GatewayConfig]{
		{
			env: "DISCORD_TOKEN", flag: "token", typ: "string", secret: true,
			usage: "bot token (never printed); required",
			parse: func(c *GatewayConfig, v string) error {
				c.Token = strings.TrimPrefix(strings.TrimSpace(v), "Bot ")
				return nil
			},
		},
		{
			env: "DISCORD_EVENTS", flag: "events", typ: "list",
			usage: "comma list of dispatch events to publish; empty publishes all",
			parse: func(c *GatewayConfig, v string) error {
				for e := range strings.SplitSeq(v, ",") {
					if e = strings.TrimSpace(e); e != "" {
						c.Events = append(c.Events, strings.ToUpper(e))
					}
				}
				return nil
			},
		},
		{
			env: "DISCORD_INTENTS", flag: "intents", typ: "list",
			usage: "comma list of intent names (GUILDS,GUILD_MESSAGES,...); an unknown name is an error; default: every non-privileged intent",
			parse: func(c *GatewayConfig, v string) error {
				i, err := discord.ParseIntents(v)
				c.Intents |= i
				return err
			},
		},
		{
			env: "DISCORD_RAW_INTENTS", flag: "raw-intents", typ: "int",
			usage: "intents as a number, added to DISCORD_INTENTS",
			parse: func(c *GatewayConfig, v string) error {
				if v == "" {
					return nil
				}
				i, err := discord.ParseRawIntents(v)
				c.Intents |= i
				return err
			},
		},
		{
			env: "DISCORD_SHARD_COUNT", flag: "shard-count", typ: "int", def: "0",
			usage: "total shards of the bot; 0 asks Discord (/gateway/bot)",
			parse: func(c *GatewayConfig, v string) (err error) {
				c.ShardCount, err = parseInt(v)
				if err == nil && c.ShardCount < 0 {
					return fmt.Errorf("%q must not be negative", v)
				}
				return err
			},
		},
		{
			env: "DISCORD_SHARD_IDS", flag: "shard-ids", typ: "list",
			usage: "shards this process runs, as ids and ranges (0-7,12); empty runs all",
			parse: func(c *GatewayConfig, v string) (err error) {
				c.ShardIDs, err = gateway.ParseShardIDs(v)
				return err
			},
		},
		{
			env: "DISCORD_PRESENCE", flag: "presence", typ: "json",
			usage: `initial presence, a JSON object ({"status":"online","activities":[...]})`,
			parse: func(c *GatewayConfig, v string) error {
				if strings.TrimSpace(v) == "" {
					return nil
				}
				var obj map[string]any
				if err := json.Unmarshal([]byte(v), &obj); err != nil {
					return fmt.Errorf("not a JSON object: %w", err)
				}
				c.Presence = json.RawMessage(v)
				return nil
			},
		},
		{
			env: "DISCORD_API_PROTOCOL", flag: "api-protocol", typ: "string", def: "https",
			usage: "scheme of the Discord API (http to use a local simulator)",
			parse: func(c *GatewayConfig, v string) error {
				v = strings.ToLower(strings.TrimSuffix(v, "://"))
				if v != "http" && v != "https" {
					return fmt.Errorf("%q is not http or https", v)
				}
				c.APIProtocol = v
				return nil
			},
		},
		{
			env: "DISCORD_API_HOST", flag: "api-host", typ: "string", def: "discord.com",
			usage: "host[:port] of the Discord API",
			parse: func(c *GatewayConfig, v string) error {
				if strings.ContainsAny(v, "/ ") {
					return fmt.Errorf("%q is not a host[:port]", v)
				}
				c.APIHost = v
				return nil
			},
		},
		{
			env: "DISCORD_API_VERSION", flag: "api-version", typ: "int", def: "10",
			usage: "Discord API and gateway version",
			parse: func(c *GatewayConfig, v string) (err error) {
				c.APIVersion, err = parseInt(v)
				if err == nil && c.APIVersion < 1 {
					return fmt.Errorf("%q must be positive", v)
				}
				return err
			},
		},
		{
			env: "DISCORD_COMPRESS", flag: "compress", typ: "string", def: string(gateway.CompressZstd),
			usage: "transport compression: zstd-stream, zlib-stream or none",
			parse: func(c *GatewayConfig, v string) (err error) {
				c.Compress, err = gateway.ParseCompression(v)
				return err
			},
		},
		{
			env: "GATEWAY_DISPATCH_FORMAT", flag: "dispatch-format", typ: "string", def: "legacy",
			usage: "how d is published: legacy (msgpack string of JSON, as spec-tacles/gateway) or native (a msgpack map)",
			parse: func(c *GatewayConfig, v string) error {
				switch strings.ToLower(v) {
				case "legacy":
					c.Format = gateway.FormatLegacy
				case "native":
					c.Format = gateway.FormatNative
				default:
					return fmt.Errorf("%q is not legacy or native", v)
				}
				return nil
			},
		},
		{
			env: "SHARD_STORE_TYPE", flag: "shard-store", typ: "string", def: "memory",
			usage: "where shard sessions are kept: memory, or redis (resume after a restart)",
			parse: func(c *GatewayConfig, v string) error {
				switch v = strings.ToLower(v); v {
				case "memory", "redis":
					c.StoreType = v
				default:
					return fmt.Errorf("%q is not memory or redis", v)
				}
				return nil
			},
		},
		{
			env: "SHARD_STORE_PREFIX", flag: "shard-store-prefix", typ: "string", def: "gateway",
			usage: "prefix of the session keys ({prefix}{shard}session, {prefix}{shard}seq)",
			parse: func(c *GatewayConfig, v string) error { c.StorePrefix = v; return nil },
		},
		{
			env: "PROMETHEUS_ADDRESS", flag: "prometheus-address", typ: "string",
			usage: "address to serve Prometheus metrics, /healthz and /readyz on (e.g. :8080); empty serves none",
			parse: func(c *GatewayConfig, v string) error { c.PromAddress = v; return nil },
		},
		{
			env: "PROMETHEUS_ENDPOINT", flag: "prometheus-endpoint", typ: "string", def: "/metrics",
			usage: "path of the metrics",
			parse: func(c *GatewayConfig, v string) error {
				if !strings.HasPrefix(v, "/") {
					return fmt.Errorf("%q must start with /", v)
				}
				c.PromEndpoint = v
				return nil
			},
		},
		{
			env: "GATEWAY_QUEUE_SIZE", flag: "queue-size", typ: "int", def: "8192",
			usage: "dispatches that may wait for the broker before shards wait too",
			parse: func(c *GatewayConfig, v string) (err error) {
				c.QueueSize, err = parseInt(v)
				if err == nil && c.QueueSize < 1 {
					return fmt.Errorf("%q must be positive", v)
				}
				return err
			},
		},
		{
			env: "GATEWAY_DRAIN_TIMEOUT", flag: "drain-timeout", typ: "duration", def: "30s",
			usage: "how long a stopping gateway keeps publishing its queued dispatches before it saves the sessions and exits non-zero, leaving the rest for Discord to replay",
			parse: func(c *GatewayConfig, v string) (err error) {
				c.DrainTimeout, err = parsePositiveDuration(v)
				return err
			},
		},
		{
			env: "DISCORD_LARGE_THRESHOLD", flag: "large-threshold", typ: "int", def: "0",
			usage: "Identify's large_threshold (50-250); 0 leaves Discord's default",
			parse: func(c *GatewayConfig, v string) (err error) {
				c.LargeThreshold, err = parseInt(v)
				if err == nil && c.LargeThreshold != 0 && (c.LargeThreshold < 50 || c.LargeThreshold > 250) {
					return fmt.Errorf("%q is not between 50 and 250", v)
				}
				return err
			},
		},
	}
}

// loadGatewayConfig resolves the gateway settings (see loadConfig).
func loadGatewayConfig(env, flags lookupFunc) (GatewayConfig, error) {
	c, err := load(gatewaySettings(), env, flags)
	if err != nil {
		return c, err
	}
	if c.Token == "" {
		return c, fmt.Errorf("DISCORD_TOKEN (or --token) is required")
	}
	if c.Intents == 0 {
		// Neither variable given: every intent that needs no approval.
		c.Intents = discord.AllIntents() &^ discord.PrivilegedIntents
	}
	if c.ShardCount > 0 && c.ShardIDs != nil {
		if _, err := gateway.ResolveShardIDs(c.ShardIDs, c.ShardCount); err != nil {
			return c, fmt.Errorf("DISCORD_SHARD_IDS: %w", err)
		}
	}
	return c, nil
}
