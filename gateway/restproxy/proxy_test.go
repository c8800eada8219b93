package restproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spectacles-go/spectacles/gateway/simulator"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testBot = "Bot " + simulator.DefaultToken

// Snowflake-sized ids (ParseRoute only treats 17-20 digits as ids).
func chanID(i int) string { return strconv.Itoa(100000000000000000 + i) }

// fake starts the REST fake on a real listener.
func fake(t *testing.T, cfg simulator.RESTConfig) (*simulator.REST, string) {
	t.Helper()
	r, err := simulator.NewREST(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv.URL + "/api/v10"
}

// newProxy builds a proxy at base.
func newProxy(t *testing.T, base string, cfg Config) *Proxy {
	t.Helper()
	cfg.APIBase = base
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func do(t *testing.T, p *Proxy, method, path, body string) *Response {
	t.Helper()
	res, err := p.Do(context.Background(), &Request{Method: method, Path: path,
		Header: http.Header{"Authorization": {testBot}, "Content-Type": {"application/json"}}, Body: []byte(body)})
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return res
}

func total429(s simulator.RESTStats) int { return s.ByStatus[429] }

func TestParseRoute(t *testing.T) {
	now := time.Now()
	old := strconv.FormatUint(simulator.SnowflakeAt(now.Add(-20*24*time.Hour)), 10)
	young := strconv.FormatUint(simulator.SnowflakeAt(now.Add(-time.Second)), 10)
	mid := strconv.FormatUint(simulator.SnowflakeAt(now.Add(-time.Hour)), 10)
	c, g, w := chanID(1), chanID(2), chanID(3)
	cases := []struct {
		method, path, key, major string
		exempt                   bool
	}{
		{"post", "/channels/" + c + "/messages", "POST /channels/:id/messages", "channels/" + c, false},
		{"PATCH", "/channels/" + c + "/messages/" + mid, "PATCH /channels/:id/messages/:id", "channels/" + c, false},
		{"PUT", "/channels/" + c + "/messages/" + mid + "/reactions/%F0%9F%91%8D/@me", "PUT /channels/:id/messages/:id/reactions/:reaction", "channels/" + c, false},
		{"DELETE", "/channels/" + c + "/messages/" + mid + "/reactions", "DELETE /channels/:id/messages/:id/reactions", "channels/" + c, false},
		{"DELETE", "/channels/" + c + "/messages/" + old, "DELETE /channels/:id/messages/:id#old", "channels/" + c, false},
		{"DELETE", "/channels/" + c + "/messages/" + young, "DELETE /channels/:id/messages/:id#young", "channels/" + c, false},
		{"DELETE", "/channels/" + c + "/messages/" + mid, "DELETE /channels/:id/messages/:id", "channels/" + c, false},
		{"GET", "/guilds/" + g + "/members/" + c, "GET /guilds/:id/members/:id", "guilds/" + g, false},
		{"POST", "/webhooks/" + w + "/secret-token", "POST /webhooks/:id/:token", "webhooks/" + w + "/" + shortHash("secret-token"), false},
		{"POST", "/webhooks/" + w + "/" + InteractionTokenPrefix + "abc", "POST /webhooks/:id/:token", "webhooks/" + w + "/" + shortHash(InteractionTokenPrefix+"abc"), true},
		{"GET", "/webhooks/" + w, "GET /webhooks/:id", "webhooks/" + w, false},
		{"POST", "/interactions/" + c + "/tok/callback", "POST /interactions/:id/:token/callback", "interactions/" + c, true},
		{"GET", "/users/@me", "GET /users/@me", "", false},
		{"GET", "/invites/abcdef", "GET /invites/:code", "", false},
		{"GET", "/api/v10/gateway/bot", "GET /gateway/bot", "", false},
	}
	for _, tc := range cases {
		r := ParseRoute(tc.method, tc.path, now)
		if r.Key() != tc.key || r.Major != tc.major || r.Exempt != tc.exempt {
			t.Errorf("%s %s: got %q %q %v, want %q %q %v", tc.method, tc.path, r.Key(), r.Major, r.Exempt, tc.key, tc.major, tc.exempt)
		}
		if strings.Contains(r.Major, "secret") || strings.Contains(r.Template, "secret") {
			t.Errorf("a token in the route: %+v", r)
		}
	}
}

// TestBurstWithinLimits sends bursts that the limits allow: the fake sees
// no 429, and requests of one channel arrive in the order they came.
func TestBurstWithinLimits(t *testing.T) {
	rest, base := fake(t, simulator.RESTConfig{TimeScale: 0.02}) // 5 per 100 ms
	p := newProxy(t, base, Config{})
	joined := map[string]int{}
	p.joined = func(key string) { joined[key]++ } // under p.mu
	const channels, perChannel = 3, 12
	var wg sync.WaitGroup
	for c := 0; c < channels; c++ {
		path := "/channels/" + chanID(c) + "/messages"
		key := Ticket{Identity: IdentityOf(testBot), Route: "POST /channels/:id/messages", Major: "channels/" + chanID(c)}.RouteKey()
		for i := 0; i < perChannel; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if res := do(t, p, "POST", path, fmt.Sprintf(`{"content":"%d"}`, i)); res.Status != 200 {
					t.Errorf("status %d: %s", res.Status, res.Body)
				}
			}()
			// Wait until this one is queued, so that arrival order is known.
			for {
				p.mu.Lock()
				n := joined[key]
				p.mu.Unlock()
				if n > i {
					break
				}
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	wg.Wait()
	if s := rest.Stats(); total429(s) != 0 || s.Requests != channels*perChannel {
		t.Fatalf("fake stats %+v", s)
	}
	next := map[string]int{}
	for _, r := range rest.Requests() {
		var n int
		_, _ = fmt.Sscanf(string(r.Body), `{"content":"%d"}`, &n)
		if n != next[r.Path] {
			t.Fatalf("%s: request %d arrived when %d was next", r.Path, n, next[r.Path])
		}
		next[r.Path]++
	}
}

func TestGlobalLimit(t *testing.T) {
	window := 200 * time.Millisecond
	rest, base := fake(t, simulator.RESTConfig{GlobalLimit: 5, GlobalWindow: window})
	p := newProxy(t, base, Config{GlobalLimit: 5, GlobalWindow: window, GlobalMargin: 20 * time.Millisecond})
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res := do(t, p, "GET", "/channels/"+chanID(i), ""); res.Status != 200 {
				t.Errorf("status %d", res.Status)
			}
		}()
	}
	wg.Wait()
	if s := rest.Stats(); total429(s) != 0 {
		t.Fatalf("429s: %+v", s)
	}
	if got := rest.MaxGlobalWindow(simulator.IdentityOf(testBot)); got > 5 {
		t.Fatalf("%d requests arrived within one global window, limit 5", got)
	}
}

func TestInteractionsExemptFromGlobal(t *testing.T) {
	rest, base := fake(t, simulator.RESTConfig{})
	p := newProxy(t, base, Config{GlobalLimit: 1, GlobalWindow: time.Hour})
	do(t, p, "GET", "/channels/"+chanID(1), "")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := p.Do(ctx, &Request{Method: "GET", Path: "/channels/" + chanID(2), Header: http.Header{"Authorization": {testBot}}}); !errors.Is(err, ErrTimeout) {
		t.Fatalf("over the global limit: %v, want ErrTimeout", err)
	}
	for _, path := range []string{"/interactions/" + chanID(3) + "/tok/callback", "/webhooks/" + chanID(4) + "/" + InteractionTokenPrefix + "x"} {
		res, err := p.Do(ctx, &Request{Method: "POST", Path: path, Body: []byte(`{"type":1}`), Header: http.Header{"Content-Type": {"application/json"}}})
		if err != nil || res.Status >= 300 {
			t.Fatalf("%s: %v %+v", path, err, res)
		}
	}
	// Another token has its own global budget.
	res, err := p.Do(ctx, &Request{Method: "GET", Path: "/channels/" + chanID(5), Header: http.Header{"Authorization": {"Bearer someone"}}})
	if err != nil || res.Status != 200 {
		t.Fatalf("bearer: %v %+v", err, res)
	}
	if s := rest.Stats(); s.Requests != 4 {
		t.Fatalf("the fake saw %d requests, want 4", s.Requests)
	}
}

func TestSharedHashMerges(t *testing.T) {
	rest, base := fake(t, simulator.RESTConfig{TimeScale: 0.2}) // reactions 1 per 50 ms
	p := newProxy(t, base, Config{})
	msg := "/channels/" + chanID(1) + "/messages/" + chanID(2)
	// Learn both routes' hash: until Discord named it, the second route
	// cannot know it shares the first one's bucket, so let the window pass.
	do(t, p, "PUT", msg+"/reactions/%F0%9F%91%8D/@me", "")
	time.Sleep(150 * time.Millisecond)
	do(t, p, "DELETE", msg+"/reactions", "")
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(2)
		go func() { defer wg.Done(); do(t, p, "PUT", msg+"/reactions/%F0%9F%91%8D/@me", "") }()
		go func() { defer wg.Done(); do(t, p, "DELETE", msg+"/reactions", "") }()
	}
	wg.Wait()
	if s := rest.Stats(); total429(s) != 0 {
		t.Fatalf("routes sharing a hash drew 429s: %+v", s)
	}
	for _, r := range rest.Requests() {
		if strings.Contains(r.Path, "reactions/") && !strings.HasSuffix(r.Path, "/reactions/%F0%9F%91%8D/@me") {
			t.Fatalf("path changed: %q", r.Path)
		}
	}
}

func TestRetriesBy429Scope(t *testing.T) {
	t.Run("shared", func(t *testing.T) {
		rest, base := fake(t, simulator.RESTConfig{})
		p := newProxy(t, base, Config{})
		rest.SetShared("channels/"+chanID(1), 300*time.Millisecond)
		if res := do(t, p, "GET", "/channels/"+chanID(1)+"/messages", ""); res.Status != 200 {
			t.Fatalf("status %d", res.Status)
		}
		s := rest.Stats()
		n, _, _ := p.Store().Invalid(context.Background(), time.Now())
		if s.Shared429 != 1 || s.ByStatus[200] != 1 || n != 0 || p.Recent()[0].Scope != "shared" {
			t.Fatalf("stats %+v, invalid %d, recent %+v", s, n, p.Recent())
		}
	})
	t.Run("user, from a second process's share of the bucket", func(t *testing.T) {
		rest, base := fake(t, simulator.RESTConfig{TimeScale: 0.05}) // 5 per 250 ms
		a := newProxy(t, base, Config{})
		b := newProxy(t, base, Config{})
		path := "/channels/" + chanID(1) + "/messages"
		for i := 0; i < 5; i++ {
			do(t, a, "POST", path, "{}")
		}
		if res := do(t, b, "POST", path, "{}"); res.Status != 200 {
			t.Fatalf("status %d", res.Status)
		}
		if s := rest.Stats(); s.User429 != 1 || s.ByStatus[200] != 6 {
			t.Fatalf("stats %+v", s)
		}
	})
	// Three requests against a global limit of 2 per 300 ms that the proxy
	// does not know: the third draws a global 429, the token pauses, and
	// its retry (after the first request's slot freed) is answered, never
	// early. (A fourth request right after the retry could meet the second
	// request's slot still in the fake's sliding window, whatever the
	// proxy does: Discord tells only when the first slot frees.)
	t.Run("global", func(t *testing.T) {
		rest, base := fake(t, simulator.RESTConfig{GlobalLimit: 2, GlobalWindow: 300 * time.Millisecond})
		p := newProxy(t, base, Config{GlobalLimit: 50})
		start := time.Now()
		for i := 0; i < 3; i++ {
			if res := do(t, p, "GET", "/channels/"+chanID(i), ""); res.Status != 200 {
				t.Fatalf("status %d", res.Status)
			}
		}
		if s := rest.Stats(); s.Global429 != 1 || s.ByStatus[200] != 3 {
			t.Fatalf("one global 429 should pause the token: %+v, 429s %+v", s, p.Recent())
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Fatalf("the retry went after %s, before the global window of 300 ms ended", d)
		}
	})
	t.Run("sublimit", func(t *testing.T) {
		rest, base := fake(t, simulator.RESTConfig{TimeScale: 0.0005}) // sublimit window 300 ms
		p := newProxy(t, base, Config{})
		for i := 0; i < 3; i++ {
			if res := do(t, p, "PATCH", "/channels/"+chanID(1), `{"name":"n`+strconv.Itoa(i)+`"}`); res.Status != 200 {
				t.Fatalf("status %d", res.Status)
			}
		}
		if s := rest.Stats(); s.Sublimit429 != 1 || p.Recent()[0].Scope != "sublimit" {
			t.Fatalf("stats %+v, recent %+v", s, p.Recent())
		}
	})
}

func TestTimeoutNotSent(t *testing.T) {
	rest, base := fake(t, simulator.RESTConfig{}) // 5 per 5 s
	p := newProxy(t, base, Config{})
	path := "/channels/" + chanID(1) + "/messages"
	for i := 0; i < 5; i++ {
		do(t, p, "POST", path, "{}")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := p.Do(ctx, &Request{Method: "POST", Path: path, Header: http.Header{"Authorization": {testBot}}})
	if !errors.Is(err, ErrTimeout) || time.Since(start) > 900*time.Millisecond {
		t.Fatalf("got %v after %s, want ErrTimeout at once", err, time.Since(start))
	}
	if s := rest.Stats(); s.Requests != 5 {
		t.Fatalf("the fake saw %d requests, want 5", s.Requests)
	}
}

func TestInvalidBudgetAndBan(t *testing.T) {
	forbidden := chanID(403)
	get := func(p *Proxy, path, auth string) (*Response, error) {
		return p.Do(context.Background(), &Request{Method: "GET", Path: path, Header: http.Header{"Authorization": {auth}}})
	}
	t.Run("budget", func(t *testing.T) {
		rest, base := fake(t, simulator.RESTConfig{ForbiddenChannels: []string{forbidden}})
		p := newProxy(t, base, Config{InvalidBudget: 3})
		for i := 0; i < 3; i++ {
			if res, err := get(p, "/channels/"+forbidden+"/messages", testBot); err != nil || res.Status != 403 {
				t.Fatalf("%v %+v", err, res)
			}
		}
		if _, err := get(p, "/users/@me", testBot); !errors.Is(err, ErrInvalidBudget) || rest.Stats().Requests != 3 {
			t.Fatalf("got %v, fake saw %d", err, rest.Stats().Requests)
		}
	})
	t.Run("a refused bot token", func(t *testing.T) {
		rest, base := fake(t, simulator.RESTConfig{})
		p := newProxy(t, base, Config{})
		for i := 0; i < 3; i++ {
			if res, err := get(p, "/users/@me", "Bot wrong"); err != nil || res.Status != 401 || (i > 0) != (res.Header.Get(MarkerHeader) == "unauthorized") {
				t.Fatalf("request %d: %v %+v", i, err, res)
			}
		}
		if res, err := get(p, "/users/@me", testBot); err != nil || res.Status != 200 || rest.Stats().Requests != 2 {
			t.Fatalf("another token: %v %+v, the fake saw %d", err, res, rest.Stats().Requests)
		}
	})
	t.Run("cloudflare ban", func(t *testing.T) {
		rest, base := fake(t, simulator.RESTConfig{InvalidLimit: 2, ForbiddenChannels: []string{forbidden}})
		p := newProxy(t, base, Config{})
		for i := 0; i < 3; i++ {
			_, _ = get(p, "/channels/"+forbidden+"/messages", testBot)
		}
		res := do(t, p, "GET", "/users/@me", "")
		if res.Status != 429 || rest.Stats().Banned != 1 {
			t.Fatalf("%+v %+v", res, rest.Stats())
		}
		if _, err := get(p, "/users/@me", testBot); !errors.Is(err, ErrBanned) || rest.Stats().Banned != 1 {
			t.Fatalf("after the ban: %v, fake %+v", err, rest.Stats())
		}
	})
}

func TestRequestForwarding(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rest, base := fake(t, simulator.RESTConfig{Logger: log})
	p := newProxy(t, base, Config{Authorization: testBot, Logger: log})
	path := "/channels/" + chanID(1) + "/messages/" + chanID(2) + "/reactions/%F0%9F%91%8D/@me"
	res, err := p.Do(context.Background(), &Request{Method: "put", Path: path, RawQuery: "a=1&b=x%20y"})
	if err != nil || res.Status != 204 || res.URL != base+path+"?a=1&b=x%20y" {
		t.Fatalf("%v %+v", err, res)
	}
	res, err = p.Do(context.Background(), &Request{Method: "POST", Path: "/webhooks/" + chanID(3) + "/" + simulator.DefaultWebhookToken,
		Header: http.Header{"User-Agent": {"mine/1"}, "Content-Type": {"application/json"}}, Body: []byte(`{"content":"x"}`)})
	if err != nil || res.Status != 200 || res.Header.Get("X-Ratelimit-Bucket") == "" {
		t.Fatalf("%v %+v", err, res)
	}
	recs := rest.Requests()
	if recs[0].Path != "/api/v10"+path || recs[0].RawQuery != "a=1&b=x%20y" || recs[0].UserAgent != DefaultUserAgent ||
		recs[0].Identity != simulator.IdentityOf(testBot) {
		t.Fatalf("first %+v", recs[0])
	}
	if recs[1].UserAgent != "mine/1" || recs[1].Identity != simulator.IdentityOf(testBot) || string(recs[1].Body) != `{"content":"x"}` {
		t.Fatalf("second %+v", recs[1])
	}
	for _, bad := range []Request{{Method: "GET", Path: "no-slash"}, {Method: "GET", Path: "/a b"}, {Method: "G T", Path: "/x"},
		{Method: "GET", Path: "/x", RawQuery: "a=%zz"}, {Method: "GET", Path: "/x", Header: http.Header{"X": {"a\nb"}}}} {
		if _, err := p.Do(context.Background(), &bad); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%+v: %v, want ErrInvalidRequest", bad, err)
		}
	}
	if strings.Contains(logs.String(), simulator.DefaultToken) || strings.Contains(logs.String(), simulator.DefaultWebhookToken) {
		t.Fatalf("a token reached the log:\n%s", logs.String())
	}
}

// TestRetryPastDeadlineReturnsDiscordsAnswer: a 429 whose wait ends after
// the request's deadline is not retried; the caller gets Discord's 429.
func TestRetryPastDeadlineReturnsDiscordsAnswer(t *testing.T) {
	rest, base := fake(t, simulator.RESTConfig{})
	p := newProxy(t, base, Config{})
	rest.SetShared("channels/"+chanID(1), time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, err := p.Do(ctx, &Request{Method: "GET", Path: "/channels/" + chanID(1) + "/messages", Header: http.Header{"Authorization": {testBot}}})
	if err != nil || res.Status != 429 || res.Header.Get("X-Ratelimit-Scope") != "shared" || rest.Stats().Requests != 1 {
		t.Fatalf("%v %+v, the fake saw %d", err, res, rest.Stats().Requests)
	}
}

// TestResetWithoutResetAfter: without X-RateLimit-Reset-After the proxy
// waits for X-RateLimit-Reset (an epoch), here from a fake whose clock
// runs 50 ms ahead: a burst over the bucket's limit draws no 429.
func TestResetWithoutResetAfter(t *testing.T) {
	rest, base := fake(t, simulator.RESTConfig{TimeScale: 0.04, OmitResetAfter: true, ClockOffset: 50 * time.Millisecond})
	p := newProxy(t, base, Config{})
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Go(func() {
			if res := do(t, p, "POST", "/channels/"+chanID(1)+"/messages", "{}"); res.Status != 200 {
				t.Errorf("status %d", res.Status)
			}
		})
	}
	wg.Wait()
	if s := rest.Stats(); total429(s) != 0 || s.Requests != 12 {
		t.Fatalf("fake stats %+v", s)
	}
}
