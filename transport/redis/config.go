package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/redact"
)

// Defaults for Config fields left zero.
const (
	// DefaultURL is the server used when Config.URL is empty.
	DefaultURL = "127.0.0.1:6379"
	// DefaultReadCount bounds the XREADGROUP and XAUTOCLAIM COUNT, and what
	// a consumer with fast handlers holds.
	DefaultReadCount = 1000
	// DefaultBlock is the XREADGROUP BLOCK time.
	DefaultBlock = 2 * time.Second
)

// Bounds of the default reclaim interval (MessageTimeout/4).
const (
	minReclaimInterval = 50 * time.Millisecond
	maxReclaimInterval = 30 * time.Second
)

// ErrInvalidURL is wrapped by the errors of NewClient and Open for a URL
// they cannot parse. Those errors never contain the URL's password.
var ErrInvalidURL = errors.New("invalid redis URL")

// ErrInvalidConfig is wrapped by the errors of Open and NewWithClient for
// settings that cannot work together.
var ErrInvalidConfig = errors.New("invalid redis broker config")

// Config configures the driver.
type Config struct {
	core.Options
	// URL is the server (REDIS_URL): "host:port",
	// "redis://[user:pass@]host:port/db", "rediss://..." for TLS, or a comma
	// list of host:port (or redis:// URLs) naming the nodes of a Redis
	// Cluster. Empty means DefaultURL. Only Open reads it.
	URL string
	// PoolSize is the connection pool size (REDIS_POOL_SIZE) for
	// publishes, acknowledgements, reclaims and calls; 0 keeps go-redis's
	// default. Each Consume call reads on one more connection of its own
	// (one per stream on Redis Cluster), outside the pool. Only Open reads
	// it.
	PoolSize int
	// ReadCount bounds the XREADGROUP COUNT, per stream, and the
	// XAUTOCLAIM COUNT. A consumer holds at most 2×Options.Concurrency
	// messages (running, and queued behind them), or as many as its
	// handlers finish in about 10 ms when that is more, up to ReadCount,
	// and reads no more than that leaves room for, spread over its
	// streams, so that nothing waits in the client for long. Default
	// DefaultReadCount.
	ReadCount int
	// Block is the XREADGROUP BLOCK time. Default DefaultBlock. On a single
	// server that allows CLIENT UNBLOCK a stopping consumer interrupts its
	// read at once; elsewhere (Redis Cluster, miniredis) stopping may take
	// up to Block.
	Block time.Duration
	// ReclaimInterval is how often XAUTOCLAIM looks for messages left idle
	// longer than MessageTimeout. Default MessageTimeout/4, clamped to
	// [50ms, 30s].
	ReclaimInterval time.Duration
	// MaxLen, when positive, trims each published stream to about MaxLen
	// entries (XADD MAXLEN ~). Exclusive with MinIDAge.
	MaxLen int64
	// UnhandledInterval is how often the broker checks whether the
	// streams it published to have a group, counting the entries added to
	// one without any as unhandled (UnhandledCounts) and reporting them
	// (core.EventUnhandled). Default core.UnhandledInterval; negative
	// turns the check off.
	UnhandledInterval time.Duration
	// MinIDAge, when positive, trims from each published stream the entries
	// older than MinIDAge (XADD MINID ~). Exclusive with MaxLen.
	// Dead-letter streams are never trimmed.
	MinIDAge time.Duration
	// Dialer, when set, makes the client's connections to the servers of
	// URL instead of TCP (go-redis's Options.Dialer): the DialContext of
	// an embedded server (transport/redis/embedded), for the clients of
	// the process that runs it, which then talk to it without system
	// calls. It cannot be combined with a rediss:// URL. Only Open reads
	// it.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

// withDefaults validates c and fills its zero fields.
func (c Config) withDefaults() (Config, error) {
	if c.MaxLen > 0 && c.MinIDAge > 0 {
		return c, fmt.Errorf("%w: MaxLen and MinIDAge are exclusive", ErrInvalidConfig)
	}
	if c.MaxLen < 0 || c.MinIDAge < 0 {
		return c, fmt.Errorf("%w: MaxLen and MinIDAge must not be negative", ErrInvalidConfig)
	}
	if c.ReadCount < 0 || c.Block < 0 || c.ReclaimInterval < 0 || c.PoolSize < 0 {
		return c, fmt.Errorf("%w: ReadCount, Block, ReclaimInterval and PoolSize must not be negative", ErrInvalidConfig)
	}
	c.Options = c.Options.WithDefaults()
	if c.ReadCount == 0 {
		c.ReadCount = DefaultReadCount
	}
	if c.Block == 0 {
		c.Block = DefaultBlock
	}
	if c.Block < time.Millisecond {
		// BLOCK 0 would mean "forever" to Redis.
		c.Block = time.Millisecond
	}
	if c.ReclaimInterval == 0 {
		c.ReclaimInterval = min(max(c.MessageTimeout/4, minReclaimInterval), maxReclaimInterval)
	}
	return c, nil
}

// NewClient makes a go-redis client for url, which is "host:port",
// "redis://[user:pass@]host:port/db" (go-redis query options such as
// ?dial_timeout=3s are accepted), "rediss://..." for TLS, "unix:///path",
// or a comma list of host:port or redis:// URLs naming Redis Cluster nodes,
// which yields a *goredis.ClusterClient. Empty means DefaultURL. poolSize 0
// keeps go-redis's default. It does not connect. Its errors wrap
// ErrInvalidURL and never contain the password.
func NewClient(url string, poolSize int) (goredis.UniversalClient, error) {
	return newClient(url, poolSize, nil)
}

// newClient is NewClient, with dialer (when not nil) making the
// connections.
func newClient(url string, poolSize int, dialer func(context.Context, string, string) (net.Conn, error)) (goredis.UniversalClient, error) {
	if poolSize < 0 {
		return nil, fmt.Errorf("%w: pool size %d is negative", ErrInvalidURL, poolSize)
	}
	url = strings.TrimSpace(url)
	if url == "" {
		url = DefaultURL
	}
	var parts []string
	for p := range strings.SplitSeq(url, ",") {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: %q names no server", ErrInvalidURL, redact.URL(url))
	}
	if len(parts) == 1 {
		o, err := parseOne(parts[0])
		if err != nil {
			return nil, err
		}
		if err := useDialer(o, parts[0], dialer); err != nil {
			return nil, err
		}
		o.PoolSize = poolSize
		return goredis.NewClient(o), nil
	}
	co := &goredis.ClusterOptions{PoolSize: poolSize}
	for i, p := range parts {
		o, err := parseOne(p)
		if err != nil {
			return nil, err
		}
		if err := useDialer(o, p, dialer); err != nil {
			return nil, err
		}
		if o.Network == "unix" {
			return nil, fmt.Errorf("%w: cluster node %q: unix sockets cannot be cluster nodes", ErrInvalidURL, redact.URL(p))
		}
		if o.DB != 0 {
			return nil, fmt.Errorf("%w: cluster node %q: Redis Cluster has only database 0", ErrInvalidURL, redact.URL(p))
		}
		co.Addrs = append(co.Addrs, o.Addr)
		if i == 0 {
			co.Username, co.Password, co.TLSConfig = o.Username, o.Password, o.TLSConfig
			co.DialTimeout, co.ReadTimeout, co.WriteTimeout = o.DialTimeout, o.ReadTimeout, o.WriteTimeout
			co.MaxRetries = o.MaxRetries
			co.Dialer = o.Dialer
			co.Protocol = o.Protocol
		}
	}
	return goredis.NewClusterClient(co), nil
}

// parseOne parses one server: a URL with a scheme, or host[:port] with
// optional user:pass@ in front.
func parseOne(s string) (*goredis.Options, error) {
	u := s
	if !strings.Contains(s, "://") {
		u = "redis://" + s
	}
	o, err := goredis.ParseURL(u)
	if err != nil {
		return nil, scrubURLError(s, err)
	}
	if o.TLSConfig != nil {
		o.Dialer = tlsDialer(o) // says so when the server does not speak TLS
	}
	if o.Protocol == 0 {
		// RESP2 unless the URL asks for ?protocol=3: the driver uses nothing
		// of RESP3, and go-redis looks for RESP3 push notifications before
		// every reply, about a tenth of a publish's client CPU.
		o.Protocol = 2
	}
	return o, nil
}

// useDialer makes dialer (when not nil) dial the connections of o, the
// options of server s.
func useDialer(o *goredis.Options, s string, dialer func(context.Context, string, string) (net.Conn, error)) error {
	if dialer == nil {
		return nil
	}
	if o.TLSConfig != nil {
		return fmt.Errorf("%w: %q: a Dialer cannot be combined with TLS", ErrInvalidConfig, redact.URL(s))
	}
	o.Dialer = dialer
	return nil
}

// scrubURLError describes a parse failure of raw without any secret it
// holds: the password, the whole user info and query values are removed
// from both the URL and the parser's message (url.Parse quotes the URL).
func scrubURLError(raw string, err error) error {
	return fmt.Errorf("%w %q: %s", ErrInvalidURL, redact.URL(raw), redact.ParseError(raw, err))
}

// describeAddrs names the servers of a client for messages, without
// credentials.
func describeAddrs(c goredis.UniversalClient) string {
	switch c := c.(type) {
	case *goredis.Client:
		return c.Options().Addr
	case *goredis.ClusterClient:
		return strings.Join(c.Options().Addrs, ",")
	}
	return "redis"
}

// trim returns the XADD trimming this configuration asks for, applied
// approximately ("~"): kind "MAXLEN" with the length, "MINID" with the
// oldest id to keep (now less MinIDAge), or "" for none.
func (c *Config) trim(now time.Time) (kind, threshold string) {
	switch {
	case c.MaxLen > 0:
		return "MAXLEN", strconv.FormatInt(c.MaxLen, 10)
	case c.MinIDAge > 0:
		return "MINID", strconv.FormatInt(now.Add(-c.MinIDAge).UnixMilli(), 10)
	}
	return "", ""
}
