package redistest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/transport/redis/embedded"
)

// server is a server of the test's own, so that it can lease every
// database without disturbing concurrent runs.
func server(t *testing.T) string {
	t.Helper()
	e, err := embedded.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e.URL()
}

// TestLeasesAreExclusive: each lease takes a database no other holds; when
// all are held a lease waits until one is released; a release with
// another token deletes nothing; leases expire if not refreshed.
func TestLeasesAreExclusive(t *testing.T) {
	addr := server(t)
	c := Client(t, addr)
	ctx := context.Background()
	seen := map[int]string{}
	for i := range LeasedDBs {
		tok := Unique("holder")
		n, err := takeLease(c, tok)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := seen[n]; dup || n < 1 || n > LeasedDBs {
			t.Fatalf("lease %d got database %d; held: %v", i, n, seen)
		}
		seen[n] = tok
		if ttl := c.PTTL(ctx, leaseKey(n)).Val(); ttl <= 0 || ttl > leaseTTL {
			t.Errorf("lease of %d has TTL %s, want (0, %s]", n, ttl, leaseTTL)
		}
	}
	got := make(chan int, 1)
	go func() {
		n, err := takeLease(c, "late")
		if err != nil {
			t.Error(err)
		}
		got <- n
	}()
	if n := releaseLease.Run(ctx, c, []string{leaseKey(7)}, "not-the-holder").Val(); n != int64(0) {
		t.Errorf("release with another token: %v", n)
	}
	if c.Get(ctx, leaseKey(7)).Val() != seen[7] {
		t.Fatal("a release with another token deleted the lease")
	}
	if err := releaseLease.Run(ctx, c, []string{leaseKey(7)}, seen[7]).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n != 7 {
			t.Errorf("the waiting lease got database %d, want the released 7", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting lease did not get the released database")
	}
	// A refresh by another token does not extend.
	if kept := refreshLease.Run(ctx, c, []string{leaseKey(3)}, "not-the-holder", 1).Val(); kept != int64(0) {
		t.Errorf("refresh with another token: %v", kept)
	}
	if kept := refreshLease.Run(ctx, c, []string{leaseKey(3)}, seen[3], 100).Val(); kept != int64(1) {
		t.Errorf("refresh by the holder: %v", kept)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Exists(ctx, leaseKey(3)).Val() == 1 {
		if time.Now().After(deadline) {
			t.Fatal("a lease not refreshed did not expire")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLeaseDB: LeaseDB gives t a database of its own, which another test
// does not get while t holds it, and releases it when t ends.
func TestLeaseDB(t *testing.T) {
	addr := server(t)
	c := Client(t, addr)
	ctx := context.Background()
	var first, second string
	t.Run("holder", func(t *testing.T) {
		first = LeaseDB(t, addr)
		t.Run("other", func(t *testing.T) { second = LeaseDB(t, addr) })
		if first == second {
			t.Errorf("two holders of %s", first)
		}
		if err := Client(t, first).Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Errorf("using the leased database: %v", err)
		}
	})
	if !strings.HasSuffix(first, "/1") || !strings.HasSuffix(second, "/2") {
		t.Errorf("leased %s then %s, want databases 1 then 2", first, second)
	}
	for n := 1; n <= LeasedDBs; n++ {
		if c.Exists(ctx, leaseKey(n)).Val() != 0 {
			t.Errorf("lease of database %d still held after its test", n)
		}
	}
}

// TestExclusiveDB: on whatever server the tests use, the database is
// usable, and two tests running at once get different ones.
func TestExclusiveDB(t *testing.T) {
	urls := make(chan string, 2)
	// Both tests hold their lease until both have one: otherwise the first
	// could release its database before the second asks, and the second
	// would rightly get the same one.
	var held sync.WaitGroup
	held.Add(2)
	t.Run("group", func(t *testing.T) {
		for range 2 {
			t.Run("db", func(t *testing.T) {
				t.Parallel()
				u, _ := ExclusiveDB(t)
				held.Done()
				both := make(chan struct{})
				go func() { held.Wait(); close(both) }()
				select {
				case <-both:
				case <-time.After(time.Minute):
					t.Fatal("the other test got no database within a minute")
				}
				key := Unique("exclusive")
				c := Client(t, u)
				DeleteKeys(t, c, key)
				if err := c.Set(context.Background(), key, "v", 0).Err(); err != nil {
					t.Error(err)
				}
				urls <- u
			})
		}
	})
	if a, b := <-urls, <-urls; a == b {
		t.Errorf("two concurrent tests got %s", a)
	}
}

func TestDBURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:6379":                    "redis://127.0.0.1:6379/4",
		"redis://127.0.0.1:6379":            "redis://127.0.0.1:6379/4",
		"redis://:pw@h:1/0?dial_timeout=1s": "redis://:pw@h:1/4?dial_timeout=1s",
		"rediss://u:pw@h:1/9":               "rediss://u:pw@h:1/4",
	} {
		if got, err := DBURL(in, 4); err != nil || got != want {
			t.Errorf("DBURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := DBURL("redis://u:s3cretpw@h:x", 1); err == nil || strings.Contains(err.Error(), "s3cretpw") {
		t.Errorf("bad URL: %v", err)
	}
}
