package redis

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/internal/brokertest"
)

func TestNewClientURLForms(t *testing.T) {
	t.Parallel()
	single := func(t *testing.T, url string) *goredis.Options {
		t.Helper()
		c, err := NewClient(url, 7)
		if err != nil {
			t.Fatalf("NewClient(%q): %v", url, err)
		}
		defer c.Close()
		cc, ok := c.(*goredis.Client)
		if !ok {
			t.Fatalf("NewClient(%q) = %T, want *redis.Client", url, c)
		}
		return cc.Options()
	}
	t.Run("HostPort", func(t *testing.T) {
		o := single(t, "cache.internal:6380")
		if o.Addr != "cache.internal:6380" || o.PoolSize != 7 || o.TLSConfig != nil || o.Password != "" {
			t.Errorf("options %+v", o)
		}
	})
	t.Run("Empty", func(t *testing.T) {
		if o := single(t, ""); o.Addr != DefaultURL {
			t.Errorf("addr %q", o.Addr)
		}
	})
	t.Run("RedisURL", func(t *testing.T) {
		o := single(t, "redis://user:s3cret@cache.internal:6390/3?dial_timeout=2s")
		if o.Addr != "cache.internal:6390" || o.Username != "user" || o.Password != "s3cret" || o.DB != 3 || o.DialTimeout != 2*time.Second {
			t.Errorf("options %+v", o)
		}
	})
	t.Run("TLS", func(t *testing.T) {
		o := single(t, "rediss://:s3cret@cache.internal:6390")
		if o.TLSConfig == nil || o.TLSConfig.ServerName != "cache.internal" || o.Password != "s3cret" {
			t.Errorf("options %+v", o)
		}
	})
	t.Run("Protocol", func(t *testing.T) {
		// RESP2 unless the URL asks for RESP3.
		if o := single(t, "cache.internal:6380"); o.Protocol != 2 {
			t.Errorf("default protocol %d, want 2", o.Protocol)
		}
		if o := single(t, "redis://cache.internal:6380?protocol=3"); o.Protocol != 3 {
			t.Errorf("?protocol=3 gave protocol %d", o.Protocol)
		}
		c, err := NewClient("10.0.0.1:7000,10.0.0.2:7001", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if p := c.(*goredis.ClusterClient).Options().Protocol; p != 2 {
			t.Errorf("cluster protocol %d, want 2", p)
		}
	})
	t.Run("Cluster", func(t *testing.T) {
		c, err := NewClient("10.0.0.1:7000, 10.0.0.2:7001,10.0.0.3:7002", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cc, ok := c.(*goredis.ClusterClient)
		if !ok {
			t.Fatalf("got %T, want *redis.ClusterClient", c)
		}
		if got := strings.Join(cc.Options().Addrs, ","); got != "10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002" {
			t.Errorf("addrs %s", got)
		}
	})
	t.Run("ClusterURLs", func(t *testing.T) {
		c, err := NewClient("rediss://u:s3cret@10.0.0.1:7000,redis://10.0.0.2:7001", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		o := c.(*goredis.ClusterClient).Options()
		if o.Password != "s3cret" || o.TLSConfig == nil || len(o.Addrs) != 2 {
			t.Errorf("options %+v", o)
		}
	})
}

func TestNewClientErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	const secret = brokertest.URLSecret
	brokertest.CheckURLErrors(t, ErrInvalidURL, []string{
		"redis://user:" + secret + "@cache.internal:notaport",
		"redis://user:" + secret + "@cache.internal:6379/not-a-db",
		"redis://user:" + secret + "@cache.internal:6379/1/2",
		"redis://user:" + secret + "@cache.internal:6379?bogus_option=1",
		"redis://user:" + secret + "@cache.internal:6379?password=" + secret,
		"http://user:" + secret + "@cache.internal:6379",
		"redis://user:" + secret + "%zz@cache.internal:6379",
		"redis://user:" + secret + "@[::1",
		"redis://" + secret + "@cache.internal:x",
		"user:" + secret + "@cache.internal:bad",
		"a:1,redis://user:" + secret + "@b:2/5",
	}, func(url string) error {
		c, err := NewClient(url, 0)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func TestOpenFailsFastWithoutThePassword(t *testing.T) {
	t.Parallel()
	// Port 1 on loopback: connection refused.
	brokertest.CheckDialError(t, "redis://user:s3cretpw@127.0.0.1:1", func(ctx context.Context, url string) error {
		_, err := Open(ctx, Config{URL: url})
		return err
	})
}

// TestDialerCannotCombineWithTLS: a Config.Dialer makes the connections,
// so a rediss:// URL, whose TLS it would skip, is refused; with a plain
// URL every node's connections come from it.
func TestDialerCannotCombineWithTLS(t *testing.T) {
	t.Parallel()
	dial := func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("no") }
	if _, err := newClient("rediss://127.0.0.1:6379", 0, dial); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("rediss:// with a Dialer: %v, want ErrInvalidConfig", err)
	}
	c, err := newClient("127.0.0.1:1", 0, dial)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(t.Context()).Err(); err == nil || !strings.Contains(err.Error(), "no") {
		t.Errorf("PING through a failing Dialer: %v", err)
	}
	cc, err := newClient("127.0.0.1:1,127.0.0.1:2", 0, dial)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if o := cc.(*goredis.ClusterClient).Options(); o.Dialer == nil {
		t.Error("the cluster client does not use the Dialer")
	}
}
