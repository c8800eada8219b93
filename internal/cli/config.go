package cli

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/redact"
	amqptransport "github.com/spectacles-go/spectacles/transport/amqp"
	"github.com/spectacles-go/spectacles/transport/hub"
	"github.com/spectacles-go/spectacles/transport/ipc"
)

// Config is the global configuration of the spectacles command, read from
// flags and environment variables (flags win).
type Config struct {
	// BrokerType is the broker kind: "redis", "amqp", "ipc" or "hub".
	BrokerType string
	// HubURL is the hub of BROKER_TYPE=hub (HUB_URL): ws://host:port or
	// tcp://host:port.
	HubURL string
	// AMQPURL is the RabbitMQ server (AMQP_URL).
	AMQPURL string
	// Subgroup is the AMQP subgroup of consumed queues (AMQP_SUBGROUP).
	Subgroup string
	// AMQPManagementURL is RabbitMQ's management API, for inspection
	// (AMQP_MANAGEMENT_URL): empty derives it from AMQPURL, "off" disables.
	AMQPManagementURL string
	// IPCFormat is the stdio format of the ipc broker (IPC_FORMAT).
	IPCFormat ipc.Format
	// Group is the group name (BROKER_GROUP); consuming requires one.
	Group string
	// Client is this instance's client name (BROKER_CLIENT).
	Client string
	// MessageTimeout is how long a delivered message may stay
	// unacknowledged before another client of the group takes it over.
	MessageTimeout time.Duration
	// MaxDeliveries is how many deliveries a message gets before it is
	// dead-lettered; 0 means the default, negative disables.
	MaxDeliveries int
	// Codec encodes what this process publishes and replies.
	Codec core.Codec
	// RedisURL is the Redis server; empty starts an embedded one.
	RedisURL string
	// PoolSize is the Redis connection pool size; 0 means the driver's
	// default.
	PoolSize int
	// LogLevel is the minimum level logged to stderr.
	LogLevel slog.Level
}

// Options returns the driver options this configuration describes, for a
// client named id.
func (c Config) Options(id core.Identity, log *slog.Logger) core.Options {
	return core.Options{
		Identity:       id,
		Codec:          c.Codec,
		MessageTimeout: c.MessageTimeout,
		MaxDeliveries:  c.MaxDeliveries,
		Logger:         log,
		Announce:       core.Announcement{Version: announceVersion()},
	}
}

// Identity returns the configured group and client names.
func (c Config) Identity() core.Identity {
	return core.Identity{Group: c.Group, Client: c.Client}
}

// setting is one configuration value with its environment variable, its
// flag and how it is parsed into a configuration of type T.
type setting[T any] struct {
	env   string // environment variable
	flag  string // global flag, without dashes
	typ   string // value type shown in help
	def   string // default, applied through parse like any other value
	usage string
	// parse stores v in c; its error must not repeat the variable name,
	// which the caller prefixes.
	parse func(c *T, v string) error
	// secret values are never shown, in help or in errors.
	secret bool
}

// settings lists every global setting. The README's configuration table
// documents the same list (a test checks that each variable is there).
func settings() []setting[Config] {
	return []setting[Config]{
		{
			env: "BROKER_TYPE", flag: "broker-type", typ: "string", def: "redis",
			usage: "broker kind: redis (Redis streams), amqp (RabbitMQ), ipc (JSON lines on stdin and stdout) or hub (a spectacles hub: HUB_URL)",
			parse: func(c *Config, v string) error {
				switch t := strings.ToLower(v); t {
				case "redis", "amqp", "ipc", "hub":
					c.BrokerType = t
					return nil
				default:
					return fmt.Errorf("%q is not a broker type (want redis, amqp, ipc or hub)", v)
				}
			},
		},
		{
			env: "HUB_URL", flag: "hub-url", typ: "url", def: hub.DefaultURL,
			usage: "the spectacles hub of BROKER_TYPE=hub: ws://host:port (websocket) or tcp://host:port (JSON lines)",
			parse: func(c *Config, v string) error {
				if !strings.HasPrefix(v, "ws://") && !strings.HasPrefix(v, "wss://") && !strings.HasPrefix(v, "tcp://") {
					return fmt.Errorf("%q is not a ws://, wss:// or tcp:// URL", redact.Text(v, v))
				}
				c.HubURL = v
				return nil
			},
		},
		{
			env: "AMQP_URL", flag: "amqp-url", typ: "url", def: amqptransport.DefaultURL,
			usage: "RabbitMQ server for BROKER_TYPE=amqp: amqp://user:password@host:port/vhost or amqps://...",
			parse: func(c *Config, v string) error {
				if !strings.HasPrefix(v, "amqp://") && !strings.HasPrefix(v, "amqps://") {
					return fmt.Errorf("%q is not an amqp:// or amqps:// URL", redact.Text(v, v))
				}
				c.AMQPURL = v
				return nil
			},
		},
		{
			env: "AMQP_MANAGEMENT_URL", flag: "amqp-management-url", typ: "url",
			usage: "RabbitMQ management API used to inspect queues (http://host:15672); empty derives it from AMQP_URL, off disables",
			parse: func(c *Config, v string) error { c.AMQPManagementURL = v; return nil },
		},
		{
			env: "AMQP_SUBGROUP", flag: "subgroup", typ: "string",
			usage: "AMQP subgroup: consume from <group>:<subgroup>:<event> queues, so that several services get copies",
			parse: func(c *Config, v string) error { c.Subgroup = v; return nil },
		},
		{
			env: "IPC_FORMAT", flag: "ipc-format", typ: "string", def: "json",
			usage: "stdio format of BROKER_TYPE=ipc: json (one JSON object per line) or msgpack (spec-tacles/go's stream)",
			parse: func(c *Config, v string) (err error) {
				c.IPCFormat, err = ipc.ParseFormat(v)
				return err
			},
		},
		{
			env: "BROKER_GROUP", flag: "group", typ: "string",
			usage: "group name, shared by every instance of a service (required to consume)",
			parse: func(c *Config, v string) error {
				if v != "" {
					if err := (core.Identity{Group: v, Client: "x"}).Validate(); err != nil {
						return err
					}
				}
				c.Group = v
				return nil
			},
		},
		{
			env: "BROKER_CLIENT", flag: "client", typ: "string",
			usage: "client name of this instance, stable across restarts (default: the host name)",
			parse: func(c *Config, v string) error {
				if v == "" {
					v = core.DefaultClient()
				}
				if err := (core.Identity{Group: "x", Client: v}).Validate(); err != nil {
					return err
				}
				c.Client = v
				return nil
			},
		},
		{
			env: "BROKER_MESSAGE_TIMEOUT", flag: "message-timeout", typ: "duration", def: core.DefaultMessageTimeout.String(),
			usage: "how long a delivered message may stay unacknowledged before another client of the group takes it over",
			parse: func(c *Config, v string) (err error) {
				c.MessageTimeout, err = parsePositiveDuration(v)
				return err
			},
		},
		{
			env: "BROKER_MAX_DELIVERIES", flag: "max-deliveries", typ: "int", def: strconv.Itoa(core.DefaultMaxDeliveries),
			usage: "deliveries of a message before it moves to EVENT:dlq; negative disables dead-lettering",
			parse: func(c *Config, v string) (err error) {
				c.MaxDeliveries, err = parseInt(v)
				if err == nil && c.MaxDeliveries == 0 {
					return fmt.Errorf("%q: use a positive number, or a negative one to disable dead-lettering", v)
				}
				return err
			},
		},
		{
			env: "BROKER_CODEC", flag: "codec", typ: "string", def: "msgpack",
			usage: "payload encoding of what this process sends: msgpack or json (both are read)",
			parse: func(c *Config, v string) (err error) {
				c.Codec, err = core.CodecByName(v)
				return err
			},
		},
		{
			env: "REDIS_URL", flag: "redis-url", typ: "url",
			usage: "Redis server: host:port or redis://[user:password@]host:port/db; unset uses the local node, an embedded in-memory server shared by this user's spectacles commands",
			parse: func(c *Config, v string) error {
				c.RedisURL = v
				return nil
			},
		},
		{
			env: "REDIS_POOL_SIZE", flag: "pool-size", typ: "int", def: "0",
			usage: "Redis connections per client; 0 uses the driver's default",
			parse: func(c *Config, v string) (err error) {
				c.PoolSize, err = parseInt(v)
				if err == nil && c.PoolSize < 0 {
					return fmt.Errorf("%q must not be negative", v)
				}
				return err
			},
		},
		{
			env: "LOG_LEVEL", flag: "log-level", typ: "level", def: "info",
			usage: "minimum level logged to stderr: debug, info, warn or error",
			parse: func(c *Config, v string) error {
				if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
					return fmt.Errorf("%q is not a log level (want debug, info, warn or error)", v)
				}
				return nil
			},
		},
	}
}

// lookupFunc returns a value by name and whether it is set, like
// os.LookupEnv.
type lookupFunc func(name string) (string, bool)

// loadConfig resolves every setting: a flag that was given wins over the
// environment variable, which wins over the default. An environment
// variable set to the empty string counts as unset. An invalid value is an
// error that names the flag or variable it came from.
func loadConfig(env, flags lookupFunc) (Config, error) {
	return load(settings(), env, flags)
}

// load resolves a list of settings into a T (see loadConfig).
func load[T any](list []setting[T], env, flags lookupFunc) (T, error) {
	var c T
	for _, s := range list {
		source, v := "default of "+s.env, s.def
		if fv, ok := flags(s.flag); ok {
			source, v = "--"+s.flag, fv
		} else if ev, ok := env(s.env); ok && ev != "" {
			source, v = s.env, ev
		}
		if err := s.parse(&c, v); err != nil {
			var zero T
			if s.secret {
				return zero, fmt.Errorf("%s: invalid value", source)
			}
			return zero, fmt.Errorf("%s: %w", source, err)
		}
	}
	return c, nil
}

func parseInt(v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer", v)
	}
	return n, nil
}

func parsePositiveDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (examples: 30s, 2m, 1h)", v)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q must be positive", v)
	}
	return d, nil
}
