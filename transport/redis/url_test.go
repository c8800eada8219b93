package redis

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
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
	const secret = "pa55w0rdXYZ"
	for _, url := range []string{
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
	} {
		c, err := NewClient(url, 0)
		if err == nil {
			c.Close()
			t.Errorf("NewClient(%q) succeeded", url)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "pa55") {
			t.Errorf("error for %q shows the password: %v", url, err)
		}
		if !errors.Is(err, ErrInvalidURL) {
			t.Errorf("error for %q does not wrap ErrInvalidURL: %v", url, err)
		}
	}
}

func TestOpenFailsFastWithoutThePassword(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Port 1 on loopback: connection refused.
	_, err := Open(ctx, Config{URL: "redis://user:s3cretpw@127.0.0.1:1"})
	if err == nil {
		t.Fatal("Open succeeded")
	}
	if strings.Contains(err.Error(), "s3cretpw") {
		t.Errorf("error shows the password: %v", err)
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("error does not name the server: %v", err)
	}
}
