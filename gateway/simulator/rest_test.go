package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// manualClock is a clock tests move by hand.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// restFake starts a REST fake on a real listener.
func restFake(t *testing.T, cfg RESTConfig) (*REST, *httptest.Server) {
	t.Helper()
	r, err := NewREST(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

type restResp struct {
	status int
	header http.Header
	body   map[string]any
}

func restDo(t *testing.T, srv *httptest.Server, method, path, auth, body string) restResp {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+"/api/v10"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := restResp{status: res.StatusCode, header: res.Header}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, path, raw, err)
		}
	}
	return out
}

const bot = "Bot " + DefaultToken

func TestRESTBucketHeadersAndUser429(t *testing.T) {
	clock := &manualClock{t: time.Unix(1_800_000_000, 0)}
	_, srv := restFake(t, RESTConfig{Now: clock.Now})
	for i := 0; i < 5; i++ {
		r := restDo(t, srv, "POST", "/channels/1/messages", bot, `{"content":"hi"}`)
		if r.status != 200 {
			t.Fatalf("request %d: status %d %v", i, r.status, r.body)
		}
		if got := r.header.Get("X-RateLimit-Remaining"); got != strconv.Itoa(4-i) {
			t.Errorf("request %d: remaining %q", i, got)
		}
		if r.header.Get("X-RateLimit-Limit") != "5" || r.header.Get("X-RateLimit-Bucket") != BucketHash("messages-write") ||
			r.header.Get("X-RateLimit-Reset-After") != "5.000" || r.header.Get("X-RateLimit-Reset") != "1800000005.000" ||
			r.header.Get("Via") != "1.1 google" {
			t.Errorf("request %d: headers %v", i, r.header)
		}
		if r.header.Get("X-RateLimit-Scope") != "" {
			t.Errorf("scope on a success: %v", r.header)
		}
		if r.body["content"] != "hi" || r.body["channel_id"] != "1" {
			t.Errorf("body %v", r.body)
		}
	}
	clock.Add(1500 * time.Millisecond)
	r := restDo(t, srv, "POST", "/channels/1/messages", bot, `{}`)
	if r.status != 429 || r.header.Get("X-RateLimit-Scope") != "user" || r.header.Get("Retry-After") != "4" ||
		r.header.Get("X-RateLimit-Reset-After") != "3.500" || r.body["retry_after"] != 3.5 || r.body["global"] != false {
		t.Fatalf("6th: %d %v %v", r.status, r.header, r.body)
	}
	// Another channel is another top-level resource.
	if r := restDo(t, srv, "POST", "/channels/2/messages", bot, `{}`); r.status != 200 {
		t.Fatalf("other channel: %d", r.status)
	}
	// The window ends: a new one starts.
	clock.Add(3500 * time.Millisecond)
	if r := restDo(t, srv, "POST", "/channels/1/messages", bot, `{}`); r.status != 200 || r.header.Get("X-RateLimit-Remaining") != "4" {
		t.Fatalf("after reset: %d %v", r.status, r.header)
	}
}

func TestRESTSharedHashes(t *testing.T) {
	clock := &manualClock{t: time.Unix(1_800_000_000, 0)}
	_, srv := restFake(t, RESTConfig{Now: clock.Now})
	// Reactions: adding and clearing share one budget of 1 per 250 ms.
	a := restDo(t, srv, "PUT", "/channels/1/messages/5/reactions/%F0%9F%91%8D/@me", bot, "")
	b := restDo(t, srv, "DELETE", "/channels/1/messages/5/reactions", bot, "")
	if a.status != 204 || b.status != 429 || a.header.Get("X-RateLimit-Bucket") != b.header.Get("X-RateLimit-Bucket") {
		t.Fatalf("reactions: %d %d %v %v", a.status, b.status, a.header, b.header)
	}
	// POST and PATCH messages: one hash, independent budgets.
	for i := 0; i < 5; i++ {
		restDo(t, srv, "POST", "/channels/3/messages", bot, "{}")
	}
	p := restDo(t, srv, "PATCH", "/channels/3/messages/9", bot, "{}")
	if p.status != 200 || p.header.Get("X-RateLimit-Bucket") != BucketHash("messages-write") {
		t.Fatalf("patch after 5 posts: %d %v", p.status, p.header)
	}
	// GET and PATCH on one path have different hashes.
	g := restDo(t, srv, "GET", "/channels/3", bot, "")
	q := restDo(t, srv, "PATCH", "/channels/3", bot, `{"nsfw":false}`)
	if g.header.Get("X-RateLimit-Bucket") == q.header.Get("X-RateLimit-Bucket") {
		t.Fatal("GET and PATCH share a hash")
	}
	// Routes without a per-route limit send no bucket headers.
	v := restDo(t, srv, "GET", "/voice/regions", bot, "")
	if v.status != 200 || v.header.Get("X-RateLimit-Bucket") != "" || v.header.Get("X-RateLimit-Limit") != "" {
		t.Fatalf("global-only route: %d %v", v.status, v.header)
	}
}

func TestRESTDeleteAgeBuckets(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	_, srv := restFake(t, RESTConfig{Now: func() time.Time { return now }})
	cases := map[string]time.Time{
		"message-delete-old":   now.Add(-15 * 24 * time.Hour),
		"message-delete":       now.Add(-time.Minute),
		"message-delete-young": now.Add(-time.Second),
	}
	for bucket, at := range cases {
		r := restDo(t, srv, "DELETE", "/channels/1/messages/"+strconv.FormatUint(SnowflakeAt(at), 10), bot, "")
		if r.header.Get("X-RateLimit-Bucket") != BucketHash(bucket) {
			t.Errorf("%s: bucket %q", bucket, r.header.Get("X-RateLimit-Bucket"))
		}
	}
}

func TestRESTGlobalLimit(t *testing.T) {
	clock := &manualClock{t: time.Unix(1_800_000_000, 0)}
	rest, srv := restFake(t, RESTConfig{Now: clock.Now, GlobalLimit: 3})
	for i := 0; i < 3; i++ {
		if r := restDo(t, srv, "GET", "/channels/"+strconv.Itoa(i), bot, ""); r.status != 200 {
			t.Fatalf("request %d: %d", i, r.status)
		}
		clock.Add(100 * time.Millisecond)
	}
	r := restDo(t, srv, "GET", "/channels/9", bot, "")
	if r.status != 429 || r.header.Get("X-RateLimit-Global") != "true" || r.header.Get("X-RateLimit-Scope") != "global" ||
		r.header.Get("X-RateLimit-Bucket") != "" || r.body["global"] != true || r.body["retry_after"] != 0.7 ||
		r.header.Get("Retry-After") != "0.700" {
		t.Fatalf("global: %d %v %v", r.status, r.header, r.body)
	}
	// Interaction callbacks and interaction webhooks are exempt.
	if r := restDo(t, srv, "POST", "/interactions/1/tok/callback", "", `{"type":1}`); r.status != 204 {
		t.Fatalf("interaction callback: %d %v", r.status, r.body)
	}
	if r := restDo(t, srv, "POST", "/webhooks/1/"+InteractionTokenPrefix+"xyz", "", `{}`); r.status != 200 {
		t.Fatalf("interaction webhook: %d %v", r.status, r.body)
	}
	// Another bot has its own budget.
	if r := restDo(t, srv, "GET", "/channels/9", "Bearer other", ""); r.status != 200 {
		t.Fatalf("bearer: %d", r.status)
	}
	// The window slides: 700 ms later the first request has left it.
	clock.Add(700 * time.Millisecond)
	if r := restDo(t, srv, "GET", "/channels/10", bot, ""); r.status != 200 {
		t.Fatalf("after the window: %d %v", r.status, r.body)
	}
	if got := rest.MaxGlobalWindow(IdentityOf(bot)); got != 4 {
		t.Errorf("max window %d, want 4 (3 + the 429)", got)
	}
	if s := rest.Stats(); s.Global429 != 1 || s.Invalid != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestRESTSharedAndSublimit(t *testing.T) {
	clock := &manualClock{t: time.Unix(1_800_000_000, 0)}
	rest, srv := restFake(t, RESTConfig{Now: clock.Now, TimeScale: 0.001})
	rest.SetShared("channels/7", 30*time.Second)
	r := restDo(t, srv, "GET", "/channels/7/messages", bot, "")
	if r.status != 429 || r.header.Get("X-RateLimit-Scope") != "shared" || r.header.Get("Retry-After") != "30" ||
		r.header.Get("X-RateLimit-Remaining") != "4" || r.body["retry_after"] != 30.0 {
		t.Fatalf("shared: %d %v %v", r.status, r.header, r.body)
	}
	if s := rest.Stats(); s.Shared429 != 1 || s.Invalid != 0 {
		t.Errorf("shared 429 counted as invalid: %+v", s)
	}
	// The name/topic sublimit: 2 per SublimitWindow (600 ms at this scale)
	// inside a 5 per 5 ms bucket whose headers are not exhausted.
	for i := 0; i < 3; i++ {
		clock.Add(10 * time.Millisecond)
		r = restDo(t, srv, "PATCH", "/channels/8", bot, `{"name":"n`+strconv.Itoa(i)+`"}`)
	}
	if r.status != 429 || r.header.Get("X-RateLimit-Remaining") == "0" || r.body["retry_after"] != 0.58 {
		t.Fatalf("sublimit: %d %v %v", r.status, r.header, r.body)
	}
	if r := restDo(t, srv, "PATCH", "/channels/8", bot, `{"nsfw":true}`); r.status != 200 {
		t.Fatalf("edit without name: %d", r.status)
	}
}

func TestRESTAuthWebhooksAndBan(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rest, srv := restFake(t, RESTConfig{InvalidLimit: 4, Logger: log, ForbiddenChannels: []string{"403"}})
	if r := restDo(t, srv, "GET", "/users/@me", "Bot wrong-secret", ""); r.status != 401 || r.body["code"] != 0.0 {
		t.Fatalf("bad token: %d %v", r.status, r.body)
	}
	if r := restDo(t, srv, "GET", "/users/@me", "", ""); r.status != 401 {
		t.Fatalf("no auth: %d", r.status)
	}
	if r := restDo(t, srv, "POST", "/webhooks/1/"+DefaultWebhookToken, "", `{"content":"x"}`); r.status != 200 {
		t.Fatalf("webhook: %d %v", r.status, r.body)
	}
	if r := restDo(t, srv, "POST", "/webhooks/1/bad", "", `{}`); r.status != 401 || r.body["code"] != 50027.0 {
		t.Fatalf("bad webhook token: %d %v", r.status, r.body)
	}
	if r := restDo(t, srv, "GET", "/channels/403/messages", bot, ""); r.status != 403 || r.body["code"] != 50013.0 {
		t.Fatalf("forbidden: %d %v", r.status, r.body)
	}
	if r := restDo(t, srv, "GET", "/nothing/here", bot, ""); r.status != 404 {
		t.Fatalf("unknown route: %d", r.status)
	}
	// Four invalid requests so far; the fifth starts the ban.
	restDo(t, srv, "GET", "/users/@me", "Bot wrong-secret", "")
	r := restDo(t, srv, "GET", "/users/@me", bot, "")
	if r.status != 429 || r.header.Get("Via") != "" || r.header.Get("Retry-After") != "" ||
		r.header.Get("X-RateLimit-Limit") != "" || r.body["message"] != CloudflareBanMessage {
		t.Fatalf("ban: %d %v %v", r.status, r.header, r.body)
	}
	if s := rest.Stats(); s.Invalid != 5 || s.Banned != 1 {
		t.Errorf("stats %+v", s)
	}
	if strings.Contains(logs.String(), "wrong-secret") || strings.Contains(logs.String(), DefaultToken) {
		t.Fatalf("a token reached the log:\n%s", logs.String())
	}
	for _, rec := range rest.Requests() {
		if strings.Contains(rec.Identity, "secret") {
			t.Fatalf("record holds a token: %+v", rec)
		}
	}
}

func TestRESTRecordsAndFaults(t *testing.T) {
	rest, srv := restFake(t, RESTConfig{})
	rest.FailNext(502)
	if r := restDo(t, srv, "GET", "/users/@me", bot, ""); r.status != 502 {
		t.Fatalf("injected: %d", r.status)
	}
	req, _ := http.NewRequest("PUT", srv.URL+"/api/v10/channels/1/messages/2/reactions/%F0%9F%91%8D/@me?x=1%202", nil)
	req.Header.Set("Authorization", bot)
	req.Header.Set("User-Agent", "DiscordBot (test, 1)")
	req.Header.Set("X-Audit-Log-Reason", "why%20not")
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	recs := rest.Requests()
	last := recs[len(recs)-1]
	if last.Path != "/api/v10/channels/1/messages/2/reactions/%F0%9F%91%8D/@me" || last.RawQuery != "x=1%202" ||
		last.UserAgent != "DiscordBot (test, 1)" || last.AuditLogReason != "why%20not" || last.Status != 204 ||
		last.Identity != IdentityOf(bot) {
		t.Fatalf("record %+v", last)
	}
}

// TestRESTBesideGateway serves the fake and the gateway on one address, as
// `spectacles simulate` does.
func TestRESTBesideGateway(t *testing.T) {
	rest, err := NewREST(RESTConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.REST = rest
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for path, want := range map[string]int{"/api/v10/gateway/bot": 200, "/api/v10/users/@me": 200, "/api/v10/unknown": 404} {
		req, _ := http.NewRequest("GET", s.URL()+path, nil)
		req.Header.Set("Authorization", bot)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, res.StatusCode, want)
		}
	}
	if rest.Stats().Requests != 2 {
		t.Errorf("the fake saw %d requests, want 2", rest.Stats().Requests)
	}
	http.DefaultClient.CloseIdleConnections()
}
