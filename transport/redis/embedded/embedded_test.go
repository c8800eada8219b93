package embedded

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// waitUntil polls cond until it holds; limit is an upper bound on waiting
// for an event, not a speed requirement.
func waitUntil(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// start starts a server for t, closed when t ends.
func start(t testing.TB) *Server {
	t.Helper()
	e, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// client is a plain go-redis client of e, closed when t ends.
func client(t testing.TB, e *Server) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: e.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ctxT is a context for one test's commands.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestEmbeddedExpiresKeysInRealTime: keys given a TTL (SET PX, EXPIRE)
// expire as wall time passes, as on Redis, with no one advancing a clock.
func TestEmbeddedExpiresKeysInRealTime(t *testing.T) {
	t.Parallel()
	e := start(t)
	c := client(t, e)
	ctx := ctxT(t)
	if err := c.Set(ctx, "px", "v", 150*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "ex", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Expire(ctx, "ex", time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	expireSet := time.Now() // the TTL runs from before this
	if err := c.Set(ctx, "forever", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	set := time.Now()
	exists := func(k string) bool {
		n, err := c.Exists(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	waitUntil(t, 5*time.Second, "the PX 150 key expires", func() bool { return !exists("px") })
	if d := time.Since(set); d < 100*time.Millisecond {
		t.Errorf("the PX 150 key expired after %s", d)
	}
	// Once 150 ms have passed since the EXPIRE, its TTL has run down with
	// them (the PX key, set before it, may have expired earlier).
	if d := 150*time.Millisecond - time.Since(expireSet); d > 0 {
		time.Sleep(d)
	}
	if ttl, err := c.PTTL(ctx, "ex").Result(); err != nil || ttl <= 0 || ttl > 850*time.Millisecond {
		t.Errorf("PTTL of the EXPIRE 1 key after >= 150 ms: %v, %v", ttl, err)
	}
	waitUntil(t, 5*time.Second, "the EXPIRE 1 key expires", func() bool { return !exists("ex") })
	if d := time.Since(set); d < 900*time.Millisecond {
		t.Errorf("the EXPIRE 1 key expired after %s", d)
	}
	if !exists("forever") {
		t.Error("a key without TTL expired")
	}
	// A SET NX on the expired key takes it again (the identify limiter).
	if ok, err := c.SetNX(ctx, "px", "again", time.Minute).Result(); err != nil || !ok {
		t.Errorf("SET NX after expiry: %v, %v", ok, err)
	}
}

// TestEmbeddedStreamTimesAreWallTimes: stream entry ids and the idle
// times of XPENDING follow the wall clock.
func TestEmbeddedStreamTimesAreWallTimes(t *testing.T) {
	t.Parallel()
	e := start(t)
	c := client(t, e)
	ctx := ctxT(t)
	before := time.Now()
	id, err := c.XAdd(ctx, &goredis.XAddArgs{Stream: "s", Values: []any{"data", "x"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	ms, err := strconv.ParseInt(strings.SplitN(id, "-", 2)[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if at := time.UnixMilli(ms); at.Before(before.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
		t.Errorf("entry id %s is at %s, wall time %s", id, at, before)
	}
	if err := c.XGroupCreate(ctx, "s", "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{"s", ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	read := time.Now()
	time.Sleep(120 * time.Millisecond)
	p, err := c.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: "s", Group: "g", Start: "-", End: "+", Count: 1}).Result()
	if err != nil || len(p) != 1 {
		t.Fatalf("XPENDING: %v, %v", p, err)
	}
	if p[0].Idle < 100*time.Millisecond || p[0].Idle > time.Since(read)+100*time.Millisecond {
		t.Errorf("idle %s, %s since the read", p[0].Idle, time.Since(read))
	}
}

// TestEmbeddedClientUnblock: CLIENT ID and CLIENT UNBLOCK work as on
// Redis: the blocked command ends at once, and UNBLOCK answers 1 for a
// blocked client and 0 otherwise.
func TestEmbeddedClientUnblock(t *testing.T) {
	t.Parallel()
	e := start(t)
	c := client(t, e)
	ctx := ctxT(t)
	conn := c.Conn()
	defer conn.Close()
	id, err := conn.ClientID(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT ID: %v", err)
	}
	if n, err := c.ClientUnblock(ctx, id).Result(); err != nil || n != 0 {
		t.Errorf("CLIENT UNBLOCK of an idle client: %d, %v", n, err)
	}
	if n, err := c.ClientUnblock(ctx, id+1000).Result(); err != nil || n != 0 {
		t.Errorf("CLIENT UNBLOCK of an unknown client: %d, %v", n, err)
	}
	done := make(chan error, 1)
	go func() {
		done <- conn.XRead(context.Background(), &goredis.XReadArgs{Streams: []string{"nothing", "$"}, Block: 0}).Err()
	}()
	var unblocked time.Time
	waitUntil(t, 5*time.Second, "CLIENT UNBLOCK finds the client blocked", func() bool {
		n, err := c.ClientUnblock(ctx, id).Result()
		if err != nil {
			t.Fatalf("CLIENT UNBLOCK: %v", err)
		}
		unblocked = time.Now()
		return n == 1
	})
	select {
	case err := <-done:
		if err == nil {
			t.Error("the unblocked XREAD returned entries")
		}
	case <-time.After(time.Second):
		t.Fatal("XREAD BLOCK 0 still blocked 1 s after CLIENT UNBLOCK")
	}
	if d := time.Since(unblocked); d > time.Second {
		t.Errorf("unblocked after %s", d)
	}
	if n := e.blockedClients(); n != 0 {
		t.Errorf("%d clients still counted as blocked", n)
	}
}

// TestEmbeddedCloseEndsBlockedCommands: closing the server ends every
// blocked command at once, whoever blocks (BLOCK 0 never ends by itself).
func TestEmbeddedCloseEndsBlockedCommands(t *testing.T) {
	t.Parallel()
	e, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// No retries: the read ends with the connection.
	c := goredis.NewClient(&goredis.Options{Addr: e.Addr(), MaxRetries: -1})
	defer c.Close()
	ctx := ctxT(t)
	if err := c.XGroupCreateMkStream(ctx, "s", "g", "$").Err(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- c.XReadGroup(context.Background(), &goredis.XReadGroupArgs{Group: "g", Consumer: "c",
			Streams: []string{"s", ">"}, Block: 0}).Err()
	}()
	waitUntil(t, 5*time.Second, "the client blocks in XREADGROUP", func() bool { return e.blockedClients() > 0 })
	closed := make(chan struct{})
	start := time.Now()
	go func() { e.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(time.Second):
		t.Fatal("Close still waiting 1 s after it began, with a client blocked in XREADGROUP BLOCK 0")
	}
	t.Logf("closed in %s", time.Since(start))
	select {
	case err := <-done:
		if err == nil || errors.Is(err, goredis.Nil) {
			t.Logf("blocked read ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked read did not end when the server closed")
	}
	e.Close() // idempotent
}

// TestEmbeddedConsumerIdle: XINFO CONSUMERS reports how long a consumer
// has not read (miniredis alone reports -1 for a consumer that only ran
// XREADGROUP), as Redis does: a consumer that stops reading while it holds
// messages is seen idle, and a read makes it active again.
func TestEmbeddedConsumerIdle(t *testing.T) {
	t.Parallel()
	e := start(t)
	c := client(t, e)
	ctx := ctxT(t)
	if err := c.XAdd(ctx, &goredis.XAddArgs{Stream: "s", Values: []any{"data", "x"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.XGroupCreate(ctx, "s", "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "stuck", Streams: []string{"s", ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	read := time.Now()
	time.Sleep(150 * time.Millisecond)
	idle := func(name string) time.Duration {
		t.Helper()
		cs, err := c.XInfoConsumers(ctx, "s", "g").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range cs {
			if x.Name == name {
				return x.Idle
			}
		}
		t.Fatalf("no consumer %s in %+v", name, cs)
		return 0
	}
	if d := idle("stuck"); d < 100*time.Millisecond || d > time.Since(read)+100*time.Millisecond {
		t.Errorf("idle %s, %s since its read", d, time.Since(read))
	}
	// A blocked read that ends (BLOCK timeout) counts as seen at its end.
	if err := c.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: "g", Consumer: "stuck", Streams: []string{"s", ">"}, Count: 1, Block: 200 * time.Millisecond}).Err(); err != goredis.Nil {
		t.Fatalf("blocked read: %v", err)
	}
	if d := idle("stuck"); d > 100*time.Millisecond {
		t.Errorf("idle %s just after a blocked read ended", d)
	}
}

// TestEmbeddedScripts: a script's commands, which miniredis runs under
// its lock, pass the hook untouched (no deadlock, even for XREADGROUP,
// whose consumer the hook marks seen for connections), see TTLs run down
// with the wall clock, and leave no peer behind; nor do closed
// connections.
func TestEmbeddedScripts(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := ctxT(t)
	c := goredis.NewClient(&goredis.Options{Addr: e.Addr(), Dialer: e.DialContext})
	if err := c.XGroupCreateMkStream(ctx, "s", "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.XAdd(ctx, &goredis.XAddArgs{Stream: "s", Values: []any{"k", "v"}}).Err(); err != nil {
		t.Fatal(err)
	}
	const script = `redis.call('SET', KEYS[1], 'v', 'PX', ARGV[1])
		local r = redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'COUNT', 1, 'BLOCK', 10, 'STREAMS', 's', '>')
		local n = 0
		if r then n = #r end
		return {redis.call('EXISTS', KEYS[1]), n}`
	got, err := c.Eval(ctx, script, []string{"px"}, 100).Int64Slice()
	if err != nil || len(got) != 2 || got[0] != 1 || got[1] != 1 {
		t.Fatalf("script: %v, %v", got, err)
	}
	waitUntil(t, 5*time.Second, "the key the script set expires", func() bool {
		n, err := c.Exists(ctx, "px").Result()
		return err == nil && n == 0
	})
	// A script's XREADGROUP BLOCK does not block, as on Redis.
	got, err = c.Eval(ctx, script, []string{"px2"}, 100).Int64Slice()
	if err != nil || len(got) != 2 || got[1] != 0 {
		t.Fatalf("script reading nothing: %v, %v", got, err)
	}
	_ = c.Close()
	tcp := goredis.NewClient(&goredis.Options{Addr: e.Addr()})
	if err := tcp.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	_ = tcp.Close()
	waitUntil(t, 5*time.Second, "closed connections' peers are forgotten", func() bool {
		e.clients.mu.Lock()
		defer e.clients.mu.Unlock()
		return len(e.clients.conns) == 0 && len(e.clients.own) == 0 && len(e.clients.ids) == 0
	})
}
