// Package redistest gives tests a Redis server and tidy keys: the real
// Redis at $SPECTACLES_REDIS_URL or 127.0.0.1:6379 when it answers PING;
// otherwise, outside CI, an embedded server (transport/redis/embedded) for
// the test. Under CI (CI=true) a missing Redis fails the test: a missing
// broker under CI is a failure, never a skip. SPECTACLES_REDIS_URL=embedded
// chooses the embedded server even when a Redis answers, CI or not.
//
// Tests share the real server, with each other and with concurrent runs:
// they must use unique key names (Unique) and delete what they create
// (DeleteKeys), never FLUSHALL or FLUSHDB. A test that needs fixed key
// names (the gateway's event streams) takes a database for itself with
// ExclusiveDB.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/internal/brokertest"
	"github.com/spectacles-go/spectacles/internal/redact"
	"github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/embedded"
)

// EnvURL is the environment variable naming the Redis server of the tests;
// the value Embedded chooses an embedded server per test.
const (
	EnvURL   = "SPECTACLES_REDIS_URL"
	Embedded = "embedded"
)

// findServer looks for the real server: $SPECTACLES_REDIS_URL, or
// redis.DefaultURL, when it answers PING within 2 seconds. The value
// Embedded chooses none (an error wrapping brokertest.ErrOff).
func findServer() (string, error) {
	return brokertest.FindServer(EnvURL, redis.DefaultURL, Embedded, ping)
}

// ping checks that the Redis at addr answers PING.
func ping(ctx context.Context, addr string) error {
	c, err := redis.NewClient(addr, 1)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("no Redis at %s: %w", redact.URL(addr), err)
	}
	return nil
}

// The probe is done once per test binary; it holds no test's state.
var shared brokertest.Probe

// Addr returns the server for t, in a form redis.NewClient accepts
// ("host:port" or a URL), and whether it is a real Redis (false for an
// embedded server, which is closed when t ends).
func Addr(t testing.TB) (string, bool) {
	t.Helper()
	addr, err := shared.Find(findServer)
	if err == nil {
		return addr, true
	}
	if brokertest.InCI() && !errors.Is(err, brokertest.ErrOff) {
		t.Fatalf("CI=true and %v: a missing broker under CI is a failure", err)
	}
	e, err := embedded.Start()
	if err != nil {
		t.Fatalf("no Redis, and the embedded server did not start: %v", err)
	}
	t.Cleanup(e.Close)
	return e.Addr(), false
}

// Client returns a go-redis client for addr, closed when t ends.
func Client(t testing.TB, addr string) goredis.UniversalClient {
	t.Helper()
	c, err := redis.NewClient(addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Unique returns prefix followed by a random suffix.
func Unique(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// DeleteKeys deletes keys from c when t ends. Call it after Client, so that
// it runs before the client closes.
func DeleteKeys(t testing.TB, c goredis.UniversalClient, keys ...string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Del(ctx, keys...).Err(); err != nil {
			t.Logf("redistest: deleting %v: %v", keys, err)
		}
	})
}
