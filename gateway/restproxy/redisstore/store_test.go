package redisstore

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spectacles-go/spectacles/gateway/restproxy"
	"github.com/spectacles-go/spectacles/gateway/simulator"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const bot = "Bot " + simulator.DefaultToken

// twoProxies starts the REST fake and two proxies, each with its own Redis
// client and store on one leased database, as two processes would be.
func twoProxies(t *testing.T, fakeCfg simulator.RESTConfig, cfg restproxy.Config) (*simulator.REST, [2]*restproxy.Proxy) {
	t.Helper()
	rest, err := simulator.NewREST(fakeCfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rest)
	t.Cleanup(srv.Close)
	url, _ := redistest.ExclusiveDB(t)
	prefix := redistest.Unique("proxytest") + ":"
	var out [2]*restproxy.Proxy
	for i := range out {
		c := redistest.Client(t, url)
		if i == 0 {
			t.Cleanup(func() {
				ctx := context.Background()
				keys, _ := c.Keys(ctx, prefix+"*").Result()
				if len(keys) > 0 {
					c.Del(ctx, keys...)
				}
			})
		}
		store, err := New(context.Background(), c, prefix)
		if err != nil {
			t.Fatal(err)
		}
		cfg.APIBase, cfg.Store = srv.URL+"/api/v10", store
		p, err := restproxy.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		out[i] = p
	}
	return rest, out
}

func send(t *testing.T, p *restproxy.Proxy, method, path string) {
	t.Helper()
	res, err := p.Do(context.Background(), &restproxy.Request{Method: method, Path: path,
		Header: http.Header{"Authorization": {bot}, "Content-Type": {"application/json"}}, Body: []byte("{}")})
	if err != nil {
		t.Errorf("%s %s: %v", method, path, err)
		return
	}
	if res.Status >= 300 {
		t.Errorf("%s %s: status %d %s", method, path, res.Status, res.Body)
	}
}

func snowflake(i int) string { return strconv.Itoa(200000000000000000 + i) }

// TestTwoProcessesShareBuckets: two proxies sending to one bucket draw no
// 429 (they share its state and wake each other), and the hash one learned
// serves the other.
func TestTwoProcessesShareBuckets(t *testing.T) {
	rest, ps := twoProxies(t, simulator.RESTConfig{TimeScale: 0.02}, restproxy.Config{}) // 5 per 100 ms
	path := "/channels/" + snowflake(1) + "/messages"
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ {
		wg.Go(func() { send(t, ps[i%2], "POST", path) })
	}
	wg.Wait()
	msg := "/channels/" + snowflake(2) + "/messages/" + snowflake(3) + "/reactions/x/@me"
	send(t, ps[0], "PUT", msg)
	send(t, ps[1], "PUT", msg) // 1 per 5 ms: waits for the reset the first one learned
	if s := rest.Stats(); s.ByStatus[429] != 0 || s.Requests != 32 {
		t.Fatalf("fake stats %+v", s)
	}
	buckets, err := ps[0].Store().Buckets(context.Background(), time.Now())
	if err != nil || len(buckets) < 2 {
		t.Fatalf("buckets %+v %v", buckets, err)
	}
}

// TestTwoProcessesShareGlobalLimit: requests to distinct buckets split over
// two proxies never exceed the token's global limit in any window.
func TestTwoProcessesShareGlobalLimit(t *testing.T) {
	window := 200 * time.Millisecond
	rest, ps := twoProxies(t, simulator.RESTConfig{GlobalLimit: 5, GlobalWindow: window},
		restproxy.Config{GlobalLimit: 5, GlobalWindow: window, GlobalMargin: 20 * time.Millisecond})
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ {
		wg.Go(func() { send(t, ps[i%2], "GET", "/channels/"+snowflake(i)) })
	}
	wg.Wait()
	if s := rest.Stats(); s.ByStatus[429] != 0 {
		t.Fatalf("429s: %+v", s)
	}
	if got := rest.MaxGlobalWindow(simulator.IdentityOf(bot)); got > 5 {
		t.Fatalf("%d requests within one global window, limit 5", got)
	}
}

// TestInvalidCountAndBanShared: both processes see the invalid requests
// and the ban of either.
func TestInvalidCountAndBanShared(t *testing.T) {
	_, ps := twoProxies(t, simulator.RESTConfig{}, restproxy.Config{InvalidBudget: 2})
	for i := 0; i < 2; i++ {
		res, err := ps[i].Do(context.Background(), &restproxy.Request{Method: "GET", Path: "/users/@me", Header: http.Header{"Authorization": {"Bot bad"}}})
		if err != nil || res.Status != 401 {
			t.Fatalf("%v %+v", err, res)
		}
	}
	for i := range ps {
		_, err := ps[i].Do(context.Background(), &restproxy.Request{Method: "GET", Path: "/users/@me", Header: http.Header{"Authorization": {bot}}})
		if !errors.Is(err, restproxy.ErrInvalidBudget) {
			t.Fatalf("proxy %d: %v, want ErrInvalidBudget", i, err)
		}
	}
	store := ps[0].Store()
	if err := store.Ban(context.Background(), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, banned, err := ps[1].Store().Invalid(context.Background(), time.Now()); err != nil || banned.IsZero() {
		t.Fatalf("ban not shared: %v %v", banned, err)
	}
}

// TestRecentRateLimitsShared: a 429 one proxy got is in the store's recent
// list, which another process (spectacles buckets, the console) reads.
func TestRecentRateLimitsShared(t *testing.T) {
	rest, ps := twoProxies(t, simulator.RESTConfig{}, restproxy.Config{})
	ch := snowflake(7)
	rest.SetShared("channels/"+ch, 100*time.Millisecond)
	// The proxy gets the shared 429, waits it out and retries.
	if _, err := ps[0].Do(context.Background(), &restproxy.Request{Method: "GET", Path: "/channels/" + ch + "/messages",
		Header: http.Header{"Authorization": {bot}}}); err != nil {
		t.Fatal(err)
	}
	s := ps[1].Store().(*Store)
	recent, err := ReadRecent(context.Background(), s.c, s.prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != 1 || recent[0].Scope != "shared" || recent[0].Route == "" {
		t.Fatalf("recent 429s %+v, want the one shared 429", recent)
	}
}
