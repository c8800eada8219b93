package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
	"github.com/spectacles-go/spectacles/transport/redis/embedded"
)

// TestMain fails the package when any goroutine outlives the tests: every
// broker, client and server the tests make must be closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The server tests talk to: a real Redis at $SPECTACLES_REDIS_URL or
// 127.0.0.1:6379 when it answers PING; otherwise, outside CI, an embedded
// server per test. Under CI (CI=true) a missing Redis is a failure.
// SPECTACLES_REDIS_URL=embedded chooses the embedded server (as redistest,
// which this package's tests cannot import).
// The probe is done once per test binary; it holds no test's state.
var realProbe brokertest.Probe

func realRedisURL() (string, error) {
	return realProbe.Find(func() (string, error) {
		return brokertest.FindServer("SPECTACLES_REDIS_URL", DefaultURL, "embedded", func(ctx context.Context, url string) error {
			c, err := NewClient(url, 0)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("no Redis at %s: %w", url, err)
			}
			return nil
		})
	})
}

// serverURL returns the URL of the server for t, and whether it is a real
// Redis.
func serverURL(t testing.TB) (string, bool) {
	t.Helper()
	url, err := realRedisURL()
	if err == nil {
		return url, true
	}
	if brokertest.InCI() && !errors.Is(err, brokertest.ErrOff) {
		t.Fatalf("CI=true and %v: a missing broker under CI is a failure", err)
	}
	t.Logf("%v; using an embedded server", err)
	return startEmbedded(t).URL(), false
}

func startEmbedded(t testing.TB) *embedded.Server {
	t.Helper()
	e, err := embedded.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// rawClient is a plain go-redis client for checking the wire.
func rawClient(t testing.TB, url string) goredis.UniversalClient {
	t.Helper()
	c, err := NewClient(url, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// deleteKeys removes keys when the test ends (registered after the client,
// so it runs before the client closes).
func deleteKeys(t testing.TB, c goredis.UniversalClient, keys ...string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, k := range keys {
			_ = c.Del(ctx, k).Err()
		}
	})
}

func unique(prefix string) string { return brokertest.Unique(prefix) }

// testEvent returns a unique event name whose stream and dead-letter
// stream are deleted when the test ends.
func testEvent(t testing.TB, c goredis.UniversalClient) string {
	ev := unique("spectacles-test." + t.Name())
	deleteKeys(t, c, ev, core.DeadLetterEvent(ev))
	return ev
}

// testStream is the set-up of most tests: the server for t, whether it
// is a real Redis, a plain client on it and an event of the test's own.
func testStream(t testing.TB) (url string, real bool, raw goredis.UniversalClient, ev string) {
	t.Helper()
	url, real = serverURL(t)
	raw = rawClient(t, url)
	return url, real, raw, testEvent(t, raw)
}

// openBroker opens a broker at url, closed when the test ends.
func openBroker(t testing.TB, url string, cfg Config) *Broker {
	t.Helper()
	cfg.URL = url
	return brokertest.Open(t, 5*time.Second, func(ctx context.Context) (*Broker, error) { return Open(ctx, cfg) })
}

func ctxT(t testing.TB) context.Context { return brokertest.Context(t) }

// childRedis is a redis-server process the test owns, so that it can be
// restarted: no persistence, so a restart comes back empty.
type childRedis struct {
	bin  string
	port int
	dir  string
	cmd  *exec.Cmd
}

func (c *childRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(c.port) }

// startChildRedis starts redis-server on a free port; ok is false when the
// binary is missing.
func startChildRedis(t testing.TB) (*childRedis, bool) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, false
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	c := &childRedis{bin: bin, port: port, dir: t.TempDir()}
	c.start(t)
	t.Cleanup(c.stop)
	return c, true
}

func (c *childRedis) start(t testing.TB) {
	t.Helper()
	var lastErr error
	for range 3 {
		cmd := exec.Command(c.bin, "--port", strconv.Itoa(c.port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", c.dir, "--loglevel", "warning")
		brokertest.DieWithTest(cmd)
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		c.cmd = cmd
		if lastErr = c.waitReady(5 * time.Second); lastErr == nil {
			return
		}
		c.stop()
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("redis-server on %s did not answer: %v", c.addr(), lastErr)
}

func (c *childRedis) waitReady(d time.Duration) error {
	client := goredis.NewClient(&goredis.Options{Addr: c.addr(), MaxRetries: -1})
	defer client.Close()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := client.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *childRedis) stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
	c.cmd = nil
}

func (c *childRedis) restart(t testing.TB) {
	t.Helper()
	c.stop()
	c.start(t)
}

// waitNoPending waits up to 10 s for group's pending list on stream to be
// empty, and fails the test if it is not.
func waitNoPending(t testing.TB, c goredis.UniversalClient, stream, group string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := c.XPending(ctxT(t), stream, group).Result()
		if err != nil {
			t.Fatal(err)
		}
		if p.Count == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d still pending on %s for %s", p.Count, stream, group)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
