package redistest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/transport/redis"
)

// Databases 1..LeasedDBs of a server are lent to tests by LeaseDB; DB 0
// holds the leases and the tests with unique key names.
const LeasedDBs = 15

// Lease timing: a lease lives leaseTTL unless refreshed, and is refreshed
// every leaseRefresh while its test runs; a run that dies frees its
// databases within leaseTTL. leaseWait bounds the wait for a free one.
const (
	leaseTTL     = 30 * time.Second
	leaseRefresh = 5 * time.Second
	leasePoll    = 200 * time.Millisecond
	leaseWait    = 3 * time.Minute
)

// leaseKey is the DB 0 key holding the lease of database n.
func leaseKey(n int) string { return "spectacles-test:db-lease:" + strconv.Itoa(n) }

var (
	// refreshLease extends a lease still held by this token.
	refreshLease = goredis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)
	// releaseLease deletes a lease still held by this token.
	releaseLease = goredis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
)

// ExclusiveDB returns the URL of a Redis database that no other test, in
// this run or a concurrent one, uses while t runs, and whether the server
// is a real Redis. On the real server it is a database leased with
// LeaseDB; on the embedded server it is DB 0 of a server of t's own.
//
// The database may hold keys a crashed run left: a test deletes the keys
// it uses before and after, and never flushes the database.
func ExclusiveDB(t testing.TB) (string, bool) {
	t.Helper()
	addr, real := Addr(t)
	if !real {
		u, err := DBURL(addr, 0)
		if err != nil {
			t.Fatal(err)
		}
		return u, false
	}
	return LeaseDB(t, addr), true
}

// LeaseDB takes one of databases 1..LeasedDBs of the server at addr for t
// and returns its URL. The lease is a key in DB 0, set with SET NX PX to a
// token of t's own, refreshed while t runs and deleted when t ends, only
// if still t's (compare and delete). When every database is leased it
// waits for one, up to a few minutes.
func LeaseDB(t testing.TB, addr string) string {
	t.Helper()
	if strings.Contains(addr, ",") {
		t.Fatalf("redistest: %s is a cluster, which has database 0 only", addr)
	}
	db0, err := DBURL(addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := redis.NewClient(db0, 0)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	token := Unique(fmt.Sprintf("%s/%d/%s", host, os.Getpid(), t.Name()))
	n, err := takeLease(c, token)
	if err != nil {
		_ = c.Close()
		t.Fatalf("redistest: leasing a database of %s: %v", addr, err)
	}
	key := leaseKey(n)
	stop := make(chan struct{})
	var refresher sync.WaitGroup
	refresher.Go(func() {
		tick := time.NewTicker(leaseRefresh)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), leaseRefresh)
			kept, err := refreshLease.Run(ctx, c, []string{key}, token, leaseTTL.Milliseconds()).Int()
			cancel()
			if err == nil && kept == 0 {
				t.Errorf("redistest: the lease of database %d expired and another test may have taken it", n)
				return
			}
		}
	})
	t.Cleanup(func() {
		close(stop)
		refresher.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := releaseLease.Run(ctx, c, []string{key}, token).Err(); err != nil {
			t.Logf("redistest: releasing the lease of database %d: %v (it expires in %s)", n, err, leaseTTL)
		}
		_ = c.Close()
	})
	u, err := DBURL(addr, n)
	if err != nil {
		t.Fatal(err)
	}
	// The server may have fewer databases than LeasedDBs+1.
	check := Client(t, u)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := check.Ping(ctx).Err(); err != nil {
		t.Fatalf("redistest: database %d of %s: %v (the tests need %d databases)", n, addr, err, LeasedDBs+1)
	}
	return u
}

// takeLease sets the first free lease key to token, waiting while none is
// free, and returns its database.
func takeLease(c goredis.UniversalClient, token string) (int, error) {
	deadline := time.Now().Add(leaseWait)
	for {
		for n := 1; n <= LeasedDBs; n++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ok, err := c.SetNX(ctx, leaseKey(n), token, leaseTTL).Result()
			cancel()
			if err != nil {
				return 0, err
			}
			if ok {
				return n, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("all %d databases stayed leased by other tests for %s", LeasedDBs, leaseWait)
		}
		time.Sleep(leasePoll)
	}
}

// DBURL returns the URL of database n of the server at addr, which is
// "host:port" or a single-server redis:// or rediss:// URL (whose own
// database, if any, is replaced; credentials and options are kept).
func DBURL(addr string, n int) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "redis://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		// Not the *url.Error: it quotes the URL, password and all.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", fmt.Errorf("redistest: server address: %w", err)
	}
	u.Path = "/" + strconv.Itoa(n)
	u.RawPath = ""
	return u.String(), nil
}
