package redisgw

import (
	"context"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

func TestSessionStoreUsesSpectaclesKeys(t *testing.T) {
	addr, _ := redistest.Addr(t)
	c := redistest.Client(t, addr)
	prefix := redistest.Unique("gwtest") + ":"
	redistest.DeleteKeys(t, c, prefix+"3session", prefix+"3seq", prefix+"3resume_url")
	store := NewSessionStore(c, prefix)
	ctx := context.Background()

	if s, err := store.Load(ctx, 3); err != nil || s.Resumable() {
		t.Fatalf("empty store: %+v %v", s, err)
	}
	want := gateway.Session{ID: "abc", Seq: 42, ResumeURL: "wss://resume.example/"}
	if err := store.Save(ctx, 3, want); err != nil {
		t.Fatal(err)
	}
	// spec-tacles/gateway's keys, readable by it.
	if v := c.Get(ctx, prefix+"3session").Val(); v != "abc" {
		t.Errorf("%s3session = %q", prefix, v)
	}
	if v := c.Get(ctx, prefix+"3seq").Val(); v != "42" {
		t.Errorf("%s3seq = %q", prefix, v)
	}
	got, err := store.Load(ctx, 3)
	if err != nil || got != want {
		t.Fatalf("load: %+v %v", got, err)
	}
	// A new session replaces seq instead of keeping a larger old one.
	if err := store.Save(ctx, 3, gateway.Session{ID: "new", Seq: 1, ResumeURL: "wss://r2/"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := store.Load(ctx, 3); got.Seq != 1 || got.ID != "new" {
		t.Errorf("after a new session: %+v", got)
	}
	if err := store.Save(ctx, 3, gateway.Session{}); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, prefix+"3session", prefix+"3seq", prefix+"3resume_url").Val(); n != 0 {
		t.Errorf("%d keys left after clearing the session", n)
	}
	c.Set(ctx, prefix+"3session", "x", 0)
	c.Set(ctx, prefix+"3seq", "not-a-number", 0)
	if _, err := store.Load(ctx, 3); err == nil {
		t.Error("a corrupt seq loaded without error")
	}
}

func TestIdentifyLimiterSpacesProcesses(t *testing.T) {
	addr, _ := redistest.Addr(t)
	c := redistest.Client(t, addr)
	prefix := redistest.Unique("gwtest") + ":"
	redistest.DeleteKeys(t, c, prefix+"identify:0")
	const interval = 200 * time.Millisecond
	// Two "processes" with their own limiters over one Redis.
	a := NewIdentifyLimiter(c, prefix, 1, interval, "a")
	b := NewIdentifyLimiter(c, prefix, 1, interval, "b")
	ctx := context.Background()
	if err := a.Wait(ctx, 0); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if gap := time.Since(start); gap < interval/2 {
		t.Errorf("second identify came %s after the first, want about %s", gap, interval)
	}
}
