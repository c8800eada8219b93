package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway/discord"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testIntents = discord.IntentGuilds | discord.IntentGuildMessages | discord.IntentGuildMessageReactions | discord.IntentGuildMessageTyping

// testConfig is a fast configuration: no identify spacing, no zombie
// check, short grace periods.
func testConfig() Config {
	return Config{
		HeartbeatInterval: 10 * time.Second,
		HeartbeatTimeout:  -1,
		IdentifyInterval:  -1,
		CloseGrace:        300 * time.Millisecond,
		CloseTimeout:      500 * time.Millisecond,
	}
}

func newServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func waitFor(t testing.TB, s *Server, what string, cond func(Snapshot) bool) Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snap, err := s.WaitFor(ctx, cond)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return snap
}

func TestGatewayBot(t *testing.T) {
	cfg := testConfig()
	cfg.Shards, cfg.MaxConcurrency, cfg.SessionStartLimit = 3, 2, 10
	s := newServer(t, cfg)

	get := func(auth string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, s.URL()+"/api/v10/gateway/bot", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatalf("decode: %v", err)
		}
		return resp.StatusCode, m
	}
	code, m := get("Bot " + s.Token())
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if m["url"] != s.GatewayURL() || !strings.HasPrefix(s.GatewayURL(), "ws://127.0.0.1:") {
		t.Errorf("url %v, GatewayURL %s", m["url"], s.GatewayURL())
	}
	if m["shards"] != float64(3) {
		t.Errorf("shards %v", m["shards"])
	}
	lim, _ := m["session_start_limit"].(map[string]any)
	if lim["total"] != float64(10) || lim["remaining"] != float64(10) || lim["max_concurrency"] != float64(2) {
		t.Errorf("session_start_limit %v", lim)
	}
	if ra, _ := lim["reset_after"].(float64); ra <= 0 || ra > float64(24*time.Hour/time.Millisecond) {
		t.Errorf("reset_after %v", lim["reset_after"])
	}

	for _, bad := range []string{"", s.Token(), "Bot nope", "Bearer " + s.Token()} {
		if code, m := get(bad); code != http.StatusUnauthorized || m["message"] == nil {
			t.Errorf("auth %q: status %d %v", bad, code, m)
		}
	}

	// Identifies count against remaining.
	c, _, _ := startShard(t, s, "", 0, 3, testIntents)
	_ = c
	if _, m := get("Bot " + s.Token()); m["session_start_limit"].(map[string]any)["remaining"] != float64(9) {
		t.Errorf("remaining after one identify: %v", m["session_start_limit"])
	}
	defer http.DefaultClient.CloseIdleConnections()
	resp, err := http.Get(s.URL() + "/api/v10/gateway")
	if err != nil {
		t.Fatal(err)
	}
	var plain map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&plain)
	resp.Body.Close()
	if plain["url"] != s.GatewayURL() {
		t.Errorf("/gateway: %v", plain)
	}
}

func TestHello(t *testing.T) {
	cfg := testConfig()
	cfg.HeartbeatInterval = 1234 * time.Millisecond
	s := newServer(t, cfg)
	c := dial(t, s.GatewayURL(), "")
	p := c.expect(discord.OpHello, "")
	if p.S != nil || p.T != nil {
		t.Errorf("hello s/t not null: %v", p)
	}
	var d struct {
		HeartbeatInterval int64    `json:"heartbeat_interval"`
		Trace             []string `json:"_trace"`
	}
	if err := json.Unmarshal(p.D, &d); err != nil {
		t.Fatal(err)
	}
	if d.HeartbeatInterval != 1234 || len(d.Trace) == 0 {
		t.Errorf("hello d %s", p.D)
	}
	snap := waitFor(t, s, "hello recorded", func(sn Snapshot) bool { return len(sn.Sent) > 0 })
	if snap.Sent[0].Op != discord.OpHello || snap.Sent[0].Conn != 1 {
		t.Errorf("first sent %+v", snap.Sent[0])
	}
	// Raw shape: s and t are present as null.
	ws := dialWS(t, s.GatewayURL()+"/?v=10&encoding=json")
	defer ws.Close()
	_, raw, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if string(m["s"]) != "null" || string(m["t"]) != "null" || string(m["op"]) != "10" || len(m) != 4 {
		t.Errorf("hello %s", raw)
	}
}

func TestCloseCodes(t *testing.T) {
	cfg := testConfig()
	cfg.Shards = 2
	cfg.RequireShardCount = true
	cfg.AllowedPrivilegedIntents = discord.IntentMessageContent
	s := newServer(t, cfg)
	tok := s.Token()
	identify := func(token string, shard any, intents any) map[string]any {
		return map[string]any{"op": 2, "d": map[string]any{"token": token, "intents": intents, "shard": shard,
			"properties": map[string]string{"os": "linux", "browser": "x", "device": "x"}}}
	}
	cases := []struct {
		name  string
		query string // replaces the default query when set
		sends []any  // maps are marshalled, []byte sent raw
		want  int
	}{
		{name: "bad version", query: "/?v=6&encoding=json", want: discord.CloseInvalidAPIVersion},
		{name: "no version", query: "/?encoding=json", want: discord.CloseInvalidAPIVersion},
		{name: "etf", query: "/?v=10&encoding=etf", want: discord.CloseDecodeError},
		{name: "bad compress", query: "/?v=10&encoding=json&compress=gzip", want: discord.CloseDecodeError},
		{name: "not authenticated", sends: []any{map[string]any{"op": 3, "d": map[string]any{"status": "online"}}}, want: discord.CloseNotAuthenticated},
		{name: "request members before identify", sends: []any{map[string]any{"op": 8, "d": map[string]any{"guild_id": "1"}}}, want: discord.CloseNotAuthenticated},
		{name: "bad token", sends: []any{identify("nope", []int{0, 2}, testIntents)}, want: discord.CloseAuthenticationFailed},
		{name: "missing token", sends: []any{map[string]any{"op": 2, "d": map[string]any{"intents": 1}}}, want: discord.CloseAuthenticationFailed},
		{name: "bad resume token", sends: []any{map[string]any{"op": 6, "d": map[string]any{"token": "x", "session_id": "y", "seq": 1}}}, want: discord.CloseAuthenticationFailed},
		{name: "second identify", sends: []any{identify(tok, []int{0, 2}, testIntents), identify(tok, []int{0, 2}, testIntents)}, want: discord.CloseAlreadyAuthenticated},
		{name: "shard id >= count", sends: []any{identify(tok, []int{2, 2}, testIntents)}, want: discord.CloseInvalidShard},
		{name: "shard count 0", sends: []any{identify(tok, []int{0, 0}, testIntents)}, want: discord.CloseInvalidShard},
		{name: "shard count not configured", sends: []any{identify(tok, []int{0, 3}, testIntents)}, want: discord.CloseInvalidShard},
		{name: "shard negative", sends: []any{identify(tok, []int{-1, 2}, testIntents)}, want: discord.CloseInvalidShard},
		{name: "shard three numbers", sends: []any{identify(tok, []int{0, 2, 1}, testIntents)}, want: discord.CloseInvalidShard},
		{name: "invalid intents", sends: []any{identify(tok, []int{0, 2}, uint64(1)<<30)}, want: discord.CloseInvalidIntents},
		{name: "bit 18", sends: []any{identify(tok, []int{0, 2}, uint64(1)<<18)}, want: discord.CloseInvalidIntents},
		{name: "intents missing", sends: []any{identify(tok, []int{0, 2}, nil)}, want: discord.CloseInvalidIntents},
		{name: "disallowed members", sends: []any{identify(tok, []int{0, 2}, testIntents|discord.IntentGuildMembers)}, want: discord.CloseDisallowedIntents},
		{name: "disallowed presences", sends: []any{identify(tok, []int{0, 2}, discord.IntentGuildPresences)}, want: discord.CloseDisallowedIntents},
		{name: "undecodable", sends: []any{[]byte(`{"op":1,`)}, want: discord.CloseDecodeError},
		{name: "no op", sends: []any{[]byte(`{"d":null}`)}, want: discord.CloseDecodeError},
		{name: "op not a number", sends: []any{[]byte(`{"op":"1","d":null}`)}, want: discord.CloseDecodeError},
		{name: "too large", sends: []any{[]byte(`{"op":1,"d":null,"x":"` + strings.Repeat("a", 4100) + `"}`)}, want: discord.CloseDecodeError},
		{name: "identify shape", sends: []any{map[string]any{"op": 2, "d": "token"}}, want: discord.CloseDecodeError},
		{name: "unknown opcode", sends: []any{map[string]any{"op": 99, "d": nil}}, want: discord.CloseUnknownOpcode},
		{name: "receive-only opcode", sends: []any{map[string]any{"op": 11, "d": nil}}, want: discord.CloseUnknownOpcode},
		{name: "dispatch from client", sends: []any{map[string]any{"op": 0, "d": nil}}, want: discord.CloseUnknownOpcode},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.query
			if q == "" {
				q = "/?v=10&encoding=json"
			}
			c := dialRaw(t, s.GatewayURL()+q, "")
			for _, m := range tc.sends {
				if b, ok := m.([]byte); ok {
					c.sendRaw(b)
				} else {
					c.send(m)
				}
			}
			if got := c.closeCode(5 * time.Second); got != tc.want {
				t.Errorf("close code %d, want %d", got, tc.want)
			}
		})
	}
	// The allowed privileged intent is accepted; message content arrives.
	c, _, r := startShard(t, s, "", 1, 2, testIntents|discord.IntentMessageContent)
	if r.Shard[0] != 1 || r.Shard[1] != 2 {
		t.Errorf("READY shard %v", r.Shard)
	}
	c.Close()
	snap := s.Snapshot()
	for _, code := range []int{4001, 4002, 4003, 4004, 4005, 4010, 4012, 4013, 4014} {
		found := false
		for _, cl := range snap.Closes {
			found = found || (cl.ByServer && cl.Code == code)
		}
		if !found {
			t.Errorf("close %d not recorded", code)
		}
	}
}

func TestShardingRequired(t *testing.T) {
	cfg := testConfig()
	cfg.Shards, cfg.Guilds, cfg.MaxGuildsPerShard = 3, 6, 2
	s := newServer(t, cfg)
	c := dial(t, s.GatewayURL(), "")
	c.expect(discord.OpHello, "")
	c.identify(s.Token(), 0, 1, testIntents)
	if got := c.closeCode(5 * time.Second); got != discord.CloseShardingRequired {
		t.Fatalf("close %d, want 4011", got)
	}
	// Three shards of two guilds each fit.
	for i := range 3 {
		_, _, r := startShard(t, s, "", i, 3, testIntents)
		if len(r.Guilds) != 2 {
			t.Errorf("shard %d: %d guilds", i, len(r.Guilds))
		}
	}
}

// heartbeatsACKed sends n heartbeats on c, expecting op 11 for each and
// pausing after each.
func heartbeatsACKed(c *testClient, n int, pause time.Duration) {
	for range n {
		c.heartbeat(nil)
		c.expect(discord.OpHeartbeatACK, "")
		time.Sleep(pause)
	}
}

func TestSendRateLimit(t *testing.T) {
	cfg := testConfig()
	cfg.SendLimit, cfg.SendWindow = 5, time.Minute
	s := newServer(t, cfg)
	c := dial(t, s.GatewayURL(), "")
	c.expect(discord.OpHello, "")
	heartbeatsACKed(c, 5, 0)
	c.heartbeat(nil)
	if got := c.closeCode(5 * time.Second); got != discord.CloseRateLimited {
		t.Fatalf("close %d, want 4008", got)
	}
	// The window slides: a new connection with spaced sends is fine.
	cfg2 := testConfig()
	cfg2.SendLimit, cfg2.SendWindow = 2, 150*time.Millisecond
	s2 := newServer(t, cfg2)
	c2 := dial(t, s2.GatewayURL(), "")
	c2.expect(discord.OpHello, "")
	heartbeatsACKed(c2, 4, 100*time.Millisecond)
	if len(s2.Snapshot().ServerCloses()) != 0 {
		t.Errorf("spaced sends were closed: %v", s2.Snapshot().ServerCloses())
	}
}

func TestIdentifyConcurrency(t *testing.T) {
	cfg := testConfig()
	cfg.Shards, cfg.MaxConcurrency = 4, 2
	cfg.IdentifyInterval = 400 * time.Millisecond
	cfg.CloseGrace = 200 * time.Millisecond
	s := newServer(t, cfg)

	startShard(t, s, "", 0, 4, testIntents) // bucket 0
	startShard(t, s, "", 1, 4, testIntents) // bucket 1: its own limit

	// Shard 2 is bucket 0 again: op 9 false, then the server closes.
	c := dial(t, s.GatewayURL(), "")
	c.expect(discord.OpHello, "")
	c.identify(s.Token(), 2, 4, testIntents)
	p := c.expect(discord.OpInvalidSession, "")
	if string(p.D) != "false" {
		t.Errorf("op 9 d %s", p.D)
	}
	if got := c.closeCode(5 * time.Second); got != discord.CloseUnknownError {
		t.Errorf("close after op 9: %d", got)
	}

	// Retrying on the same connection after op 9 is allowed once the bucket
	// is free.
	c2 := dial(t, s.GatewayURL(), "")
	c2.expect(discord.OpHello, "")
	for {
		c2.identify(s.Token(), 2, 4, testIntents)
		p := c2.next(5 * time.Second)
		if p.event() == "READY" {
			break
		}
		if p.Op != discord.OpInvalidSession {
			t.Fatalf("got %v", p)
		}
		time.Sleep(50 * time.Millisecond)
	}
	startShardRetry(t, s, 3)

	snap := s.Snapshot()
	for b := range 2 {
		times := snap.IdentifyTimes(b)
		if len(times) != 2 {
			t.Fatalf("bucket %d: %d identifies", b, len(times))
		}
		for i := 1; i < len(times); i++ {
			if gap := times[i].Sub(times[i-1]); gap < cfg.IdentifyInterval {
				t.Errorf("bucket %d: identifies %v apart", b, gap)
			}
		}
	}
	limited := 0
	for _, id := range snap.Identifies {
		if id.InvalidSession {
			limited++
			if id.Accepted {
				t.Error("an identify both accepted and refused")
			}
		}
	}
	if limited == 0 {
		t.Error("no rate-limited identify recorded")
	}
}

// startShardRetry identifies shard of 4 on a fresh connection per attempt
// until READY.
func startShardRetry(t *testing.T, s *Server, shard int) *testClient {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c := dial(t, s.GatewayURL(), "")
		c.expect(discord.OpHello, "")
		c.identify(s.Token(), shard, 4, testIntents)
		p := c.next(5 * time.Second)
		if p.event() == "READY" {
			return c
		}
		c.Close()
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("shard %d never got READY", shard)
	return nil
}

func TestReadyGuildCreateAndRouting(t *testing.T) {
	cfg := testConfig()
	cfg.Shards, cfg.Guilds = 3, 10
	s := newServer(t, cfg)

	guilds := s.Guilds()
	if len(guilds) != 10 {
		t.Fatalf("%d guilds", len(guilds))
	}
	seen := map[string]bool{}
	for i, g := range guilds {
		id, err := core.ParseSnowflake(g.ID)
		if err != nil {
			t.Fatal(err)
		}
		if seen[g.ID] {
			t.Errorf("duplicate guild id %s", g.ID)
		}
		seen[g.ID] = true
		if core.ShardID(id, 3) != i%3 {
			t.Errorf("guild %d (%s) on shard %d", i, g.ID, core.ShardID(id, 3))
		}
		if y := core.SnowflakeTime(id).Year(); y < 2015 || y > 2026 {
			t.Errorf("guild %s created %d", g.ID, y)
		}
	}

	clients := make([]*testClient, 3)
	for shard := range 3 {
		c, p, r := startShard(t, s, "", shard, 3, testIntents)
		clients[shard] = c
		if p.S == nil || *p.S != 1 {
			t.Errorf("READY seq %v", p.S)
		}
		if r.V != 10 || r.SessionID == "" || len(r.Shard) != 2 || r.Shard[0] != shard || r.Shard[1] != 3 {
			t.Errorf("READY %+v", r)
		}
		if r.ResumeGatewayURL == s.GatewayURL() || r.ResumeGatewayURL != s.ResumeURL() {
			t.Errorf("resume_gateway_url %q (gateway %q)", r.ResumeGatewayURL, s.GatewayURL())
		}
		if r.User.ID != s.BotUserID() || !r.User.Bot || r.Application.ID != s.ApplicationID() {
			t.Errorf("READY user/application %+v %+v", r.User, r.Application)
		}
		want := s.GuildsForShard(shard, 3)
		if len(r.Guilds) != len(want) || len(want) == 0 {
			t.Fatalf("shard %d: READY has %d guilds, want %d", shard, len(r.Guilds), len(want))
		}
		for i, g := range r.Guilds {
			if !g.Unavailable || g.ID != want[i] {
				t.Errorf("READY guild %+v, want %s unavailable", g, want[i])
			}
		}
		// Lazy GUILD_CREATE, one per guild, in order, seqs following READY.
		for i := range want {
			gc := c.expect(discord.OpDispatch, "GUILD_CREATE")
			if *gc.S != int64(i+2) {
				t.Errorf("GUILD_CREATE seq %d, want %d", *gc.S, i+2)
			}
			var d struct {
				ID          string `json:"id"`
				Name        string `json:"name"`
				MemberCount int    `json:"member_count"`
				Unavailable bool   `json:"unavailable"`
				Channels    []struct {
					ID   string `json:"id"`
					Name string `json:"name"`
				} `json:"channels"`
				Members []json.RawMessage `json:"members"`
				Roles   []json.RawMessage `json:"roles"`
			}
			if err := json.Unmarshal(gc.D, &d); err != nil {
				t.Fatal(err)
			}
			if d.ID != want[i] || d.Name == "" || d.Unavailable || d.MemberCount != len(d.Members) ||
				len(d.Channels) < 3 || len(d.Roles) == 0 {
				t.Errorf("GUILD_CREATE %s", gc.D)
			}
		}
	}

	// Dispatch routes by guild id.
	for i, g := range guilds {
		if err := s.Dispatch(g.ID, "CUSTOM_EVENT", map[string]any{"guild_id": g.ID, "n": i}); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	for shard, c := range clients {
		for range s.GuildsForShard(shard, 3) {
			p := c.expect(discord.OpDispatch, "CUSTOM_EVENT")
			var d struct {
				GuildID string `json:"guild_id"`
			}
			_ = json.Unmarshal(p.D, &d)
			id, _ := core.ParseSnowflake(d.GuildID)
			if core.ShardID(id, 3) != shard {
				t.Errorf("guild %s delivered to shard %d", d.GuildID, shard)
			}
			got++
		}
	}
	if got != 10 {
		t.Errorf("%d custom events", got)
	}
	// Any snowflake routes, simulated guild or not: guild 1 is on shard 0.
	if err := s.Dispatch("1", "X", nil); err != nil {
		t.Errorf("Dispatch to guild 1: %v", err)
	}
	if err := s.Dispatch("abc", "X", nil); err == nil {
		t.Error("Dispatch accepted a bad guild id")
	}
	if err := s.Dispatch(guilds[0].ID, "bad name", nil); err == nil {
		t.Error("Dispatch accepted a bad event name")
	}
	if err := s.DispatchShard(0, "DM_EVENT", json.RawMessage(`{"x":1}`)); err != nil {
		t.Error(err)
	}
	clients[0].skipUntil(discord.OpDispatch, "DM_EVENT")

	// Synthetic traffic goes to the owning shard, with realistic payloads.
	s.SetTrafficRate(300)
	for shard, c := range clients {
		msgs := 0
		deadline := time.Now().Add(5 * time.Second)
		for msgs < 5 && time.Now().Before(deadline) {
			p := c.next(5 * time.Second)
			var d struct {
				GuildID   string          `json:"guild_id"`
				ID        string          `json:"id"`
				ChannelID string          `json:"channel_id"`
				Content   string          `json:"content"`
				Timestamp json.RawMessage `json:"timestamp"`
				Author    struct {
					ID string `json:"id"`
				} `json:"author"`
			}
			if err := json.Unmarshal(p.D, &d); err != nil {
				t.Fatal(err)
			}
			id, err := core.ParseSnowflake(d.GuildID)
			if err != nil || core.ShardID(id, 3) != shard {
				t.Errorf("%s for guild %q on shard %d", p.event(), d.GuildID, shard)
			}
			if p.event() == "PRESENCE_UPDATE" {
				t.Error("PRESENCE_UPDATE without GUILD_PRESENCES")
			}
			if p.event() == "MESSAGE_CREATE" {
				msgs++
				if _, err := core.ParseSnowflake(d.ID); err != nil || d.ChannelID == "" || d.Author.ID == "" {
					t.Errorf("MESSAGE_CREATE %s", p.D)
				}
				if d.Content != "" {
					t.Errorf("content without MESSAGE_CONTENT: %q", d.Content)
				}
				var ts string
				_ = json.Unmarshal(d.Timestamp, &ts)
				if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
					t.Errorf("timestamp %q: %v", d.Timestamp, err)
				}
			}
		}
		if msgs < 5 {
			t.Errorf("shard %d: %d MESSAGE_CREATE", shard, msgs)
		}
	}
	s.SetTrafficRate(0)
}

func TestMessageContentIntent(t *testing.T) {
	cfg := testConfig()
	cfg.AllowedPrivilegedIntents = discord.IntentMessageContent
	cfg.TrafficEvents = []string{"MESSAGE_CREATE"}
	cfg.TrafficRate = 200
	s := newServer(t, cfg)
	c, _, _ := startShard(t, s, "", 0, 1, testIntents|discord.IntentMessageContent)
	p := c.skipUntil(discord.OpDispatch, "MESSAGE_CREATE")
	var d struct {
		Content string `json:"content"`
	}
	_ = json.Unmarshal(p.D, &d)
	if d.Content == "" {
		t.Errorf("no content with MESSAGE_CONTENT: %s", p.D)
	}
}

func TestHeartbeats(t *testing.T) {
	s := newServer(t, testConfig())
	c := dial(t, s.GatewayURL(), "")
	c.expect(discord.OpHello, "")
	c.heartbeat(nil) // before Identify: allowed
	if p := c.expect(discord.OpHeartbeatACK, ""); p.D != nil && string(p.D) != "null" {
		t.Errorf("ACK d %s", p.D)
	}
	c.heartbeat(0) // a violation: seqs start at 1
	c.expect(discord.OpHeartbeatACK, "")
	c.identify(s.Token(), 0, 1, testIntents)
	c.expect(discord.OpDispatch, "READY")
	var last int64
	for range s.GuildsForShard(0, 1) {
		last = *c.expect(discord.OpDispatch, "GUILD_CREATE").S
	}
	c.heartbeat(last)
	c.expect(discord.OpHeartbeatACK, "")
	c.heartbeat(last + 100) // ahead of what was sent
	c.expect(discord.OpHeartbeatACK, "")

	// Server op 1: the client must answer at once.
	if err := s.RequestHeartbeat(0); err != nil {
		t.Fatal(err)
	}
	p := c.expect(discord.OpHeartbeat, "")
	if p.S != nil {
		t.Errorf("server op 1 %v", p)
	}
	c.heartbeat(last)
	c.expect(discord.OpHeartbeatACK, "")

	snap := waitFor(t, s, "heartbeat request answered", func(sn Snapshot) bool {
		return len(sn.HeartbeatRequests) == 1 && sn.HeartbeatRequests[0].Answered
	})
	if hr := snap.HeartbeatRequests[0]; hr.Delay <= 0 || hr.Delay > 5*time.Second || hr.ShardID != 0 {
		t.Errorf("heartbeat request %+v", hr)
	}
	hb := snap.Heartbeats
	if len(hb) != 5 {
		t.Fatalf("%d heartbeats recorded", len(hb))
	}
	if hb[0].Seq != nil || hb[0].Violation != "" || !hb[0].Acked || hb[0].ShardID != -1 {
		t.Errorf("null heartbeat %+v", hb[0])
	}
	if hb[1].Seq == nil || *hb[1].Seq != 0 || hb[1].Violation == "" {
		t.Errorf("zero heartbeat %+v", hb[1])
	}
	if hb[2].Violation != "" || *hb[2].Seq != last || hb[2].LastSent != last || hb[2].ShardID != 0 {
		t.Errorf("good heartbeat %+v", hb[2])
	}
	if hb[3].Violation == "" {
		t.Errorf("heartbeat ahead not flagged %+v", hb[3])
	}

	// Stop ACKing: the heartbeat goes unanswered.
	if err := s.SetHeartbeatACKs(0, false); err != nil {
		t.Fatal(err)
	}
	c.heartbeat(last)
	if p, ok := c.tryNext(300 * time.Millisecond); ok {
		t.Errorf("got %v while ACKs are off", p)
	}
	if err := s.SetHeartbeatACKs(0, true); err != nil {
		t.Fatal(err)
	}
	c.heartbeat(last)
	c.expect(discord.OpHeartbeatACK, "")
	snap = s.Snapshot()
	if n := len(snap.Heartbeats); snap.Heartbeats[n-2].Acked || !snap.Heartbeats[n-1].Acked {
		t.Errorf("Acked flags %+v", snap.Heartbeats[n-2:])
	}
	if err := s.RequestHeartbeat(5); !errors.Is(err, ErrNoConnection) {
		t.Errorf("RequestHeartbeat on a missing shard: %v", err)
	}
}

func TestZombieConnection(t *testing.T) {
	cfg := testConfig()
	cfg.HeartbeatInterval = 200 * time.Millisecond
	cfg.HeartbeatTimeout = 0 // default: 1.5 intervals
	s := newServer(t, cfg)
	c, _, r := startShard(t, s, "", 0, 1, testIntents)
	start := time.Now()
	if got := c.closeCode(5 * time.Second); got != discord.CloseSessionTimedOut {
		t.Fatalf("close %d, want 4009", got)
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("closed after %v", el)
	}
	snap := waitFor(t, s, "session ended", func(sn Snapshot) bool {
		si, ok := sn.Session(r.SessionID)
		return ok && si.Dead
	})
	si, _ := snap.Session(r.SessionID)
	if !strings.Contains(si.DeadReason, "4009") {
		t.Errorf("dead reason %q", si.DeadReason)
	}

	// A client that heartbeats stays connected.
	c2 := dial(t, s.GatewayURL(), "")
	c2.expect(discord.OpHello, "")
	for range 6 {
		c2.heartbeat(nil)
		c2.expect(discord.OpHeartbeatACK, "")
		time.Sleep(100 * time.Millisecond)
	}
	if cl := s.Snapshot().Connections[1].Closed; !cl.IsZero() {
		t.Error("heartbeating connection closed")
	}
}

func TestResume(t *testing.T) {
	for _, how := range []string{"client close 4000", "abrupt drop", "op 7", "server close 4000"} {
		t.Run(how, func(t *testing.T) {
			cfg := testConfig()
			cfg.Guilds = 4
			s := newServer(t, cfg)
			c, _, r := startShard(t, s, "", 0, 1, testIntents)
			guild := s.Guilds()[0].ID
			for range 4 {
				c.expect(discord.OpDispatch, "GUILD_CREATE")
			}
			for i := range 3 {
				if err := s.Dispatch(guild, "BEFORE", map[string]int{"i": i}); err != nil {
					t.Fatal(err)
				}
			}
			var last int64
			for range 3 {
				last = *c.expect(discord.OpDispatch, "BEFORE").S
			}
			if last != 8 {
				t.Fatalf("last seq %d", last)
			}
			switch how {
			case "client close 4000":
				c.sendClose(4000)
				c.closeCode(5 * time.Second)
			case "abrupt drop":
				if err := s.DropConnection(0); err != nil {
					t.Fatal(err)
				}
				if got := c.closeCode(5 * time.Second); got != 1006 {
					t.Errorf("close %d", got)
				}
			case "op 7":
				if err := s.Reconnect(0); err != nil {
					t.Fatal(err)
				}
				c.expect(discord.OpReconnect, "")
			case "server close 4000":
				if err := s.CloseConnection(0, 4000, "test"); err != nil {
					t.Fatal(err)
				}
				if got := c.closeCode(5 * time.Second); got != 4000 {
					t.Errorf("close %d", got)
				}
			}
			waitFor(t, s, "session detached", func(sn Snapshot) bool {
				si, ok := sn.Session(r.SessionID)
				return ok && !si.Connected && !si.Dead
			})
			// Traffic while disconnected accumulates in the buffer.
			for i := range 5 {
				if err := s.Dispatch(guild, "MISSED", map[string]int{"i": i}); err != nil {
					t.Fatal(err)
				}
			}
			if how == "op 7" {
				if p, ok := c.tryNext(100 * time.Millisecond); ok {
					t.Errorf("dispatch after op 7: %v", p)
				}
				c.sendClose(4000)
				c.closeCode(5 * time.Second)
			}
			// Resume from an older seq than the last received: the replay
			// starts exactly after it.
			from := last - 2
			c2 := dial(t, r.ResumeGatewayURL, "")
			c2.expect(discord.OpHello, "")
			c2.resume(s.Token(), r.SessionID, from)
			want := []string{"BEFORE", "BEFORE", "MISSED", "MISSED", "MISSED", "MISSED", "MISSED", "RESUMED"}
			for i, w := range want {
				p := c2.expect(discord.OpDispatch, w)
				if *p.S != from+1+int64(i) {
					t.Fatalf("replay %d: seq %d, want %d", i, *p.S, from+1+int64(i))
				}
			}
			if err := s.Dispatch(guild, "AFTER", nil); err != nil {
				t.Fatal(err)
			}
			if p := c2.expect(discord.OpDispatch, "AFTER"); *p.S != from+int64(len(want))+1 {
				t.Errorf("AFTER seq %d", *p.S)
			}
			if p, ok := c2.tryNext(50 * time.Millisecond); ok {
				t.Errorf("unexpected %v", p)
			}
			snap := s.Snapshot()
			rs := snap.Resumes
			if len(rs) != 1 || !rs[0].Accepted || rs[0].Replayed != 7 || !rs[0].ViaResumeURL || rs[0].Seq != from || rs[0].SessionID != r.SessionID {
				t.Errorf("resume record %+v", rs)
			}
			last2 := snap.Connections[len(snap.Connections)-1]
			if !last2.ResumeURL || last2.Path != "/resume/" || last2.SessionID != r.SessionID || last2.ShardID != 0 {
				t.Errorf("connection record %+v", last2)
			}
			// A heartbeat with the resumed seq is fine.
			c2.heartbeat(from + int64(len(want)) + 1)
			c2.expect(discord.OpHeartbeatACK, "")
			if v := s.Snapshot().Heartbeats[0].Violation; v != "" {
				t.Errorf("violation %q", v)
			}
		})
	}
}

func TestResumeRefused(t *testing.T) {
	cfg := testConfig()
	cfg.SessionTTL = 300 * time.Millisecond
	cfg.ReplayBuffer = 8
	cfg.Guilds = 2
	s := newServer(t, cfg)

	resumeExpect := func(sessionID string, seq int64) payload {
		t.Helper()
		c := dial(t, s.ResumeURL(), "")
		c.expect(discord.OpHello, "")
		c.resume(s.Token(), sessionID, seq)
		p := c.next(5 * time.Second)
		if p.Op == discord.OpInvalidSession {
			if string(p.D) != "false" {
				t.Errorf("op 9 d %s", p.D)
			}
			// The connection may still identify.
			c.identify(s.Token(), 0, 1, testIntents)
			c.expect(discord.OpDispatch, "READY")
		}
		return p
	}

	for _, code := range []int{1000, 1001} {
		t.Run(fmt.Sprintf("client close %d", code), func(t *testing.T) {
			c, _, r := startShard(t, s, "", 0, 1, testIntents)
			c.sendClose(code)
			c.closeCode(5 * time.Second)
			waitFor(t, s, "session dead", func(sn Snapshot) bool { si, _ := sn.Session(r.SessionID); return si.Dead })
			if p := resumeExpect(r.SessionID, 1); p.Op != discord.OpInvalidSession {
				t.Errorf("got %v", p)
			}
		})
	}
	t.Run("ttl", func(t *testing.T) {
		c, _, r := startShard(t, s, "", 0, 1, testIntents)
		c.sendClose(4000)
		c.closeCode(5 * time.Second)
		time.Sleep(cfg.SessionTTL + 100*time.Millisecond)
		if p := resumeExpect(r.SessionID, 1); p.Op != discord.OpInvalidSession {
			t.Errorf("got %v", p)
		}
		si, _ := s.Snapshot().Session(r.SessionID)
		if si.DeadReason != "expired" {
			t.Errorf("dead reason %q", si.DeadReason)
		}
	})
	t.Run("ExpireSession", func(t *testing.T) {
		c, _, r := startShard(t, s, "", 0, 1, testIntents)
		c.Close()
		if err := s.ExpireSession(r.SessionID); err != nil {
			t.Fatal(err)
		}
		if p := resumeExpect(r.SessionID, 1); p.Op != discord.OpInvalidSession {
			t.Errorf("got %v", p)
		}
		if err := s.ExpireSession("nope"); !errors.Is(err, ErrNoSession) {
			t.Errorf("ExpireSession(nope): %v", err)
		}
	})
	t.Run("unknown session", func(t *testing.T) {
		if p := resumeExpect("0123456789abcdef0123456789abcdef", 1); p.Op != discord.OpInvalidSession {
			t.Errorf("got %v", p)
		}
	})
	t.Run("seq evicted", func(t *testing.T) {
		c, _, r := startShard(t, s, "", 0, 1, testIntents)
		c.Close()
		for i := range 10 {
			_ = s.DispatchShard(0, "FILL", map[string]int{"i": i})
		}
		if p := resumeExpect(r.SessionID, 1); p.Op != discord.OpInvalidSession {
			t.Errorf("got %v", p)
		}
	})
	t.Run("seq ahead", func(t *testing.T) {
		c, _, r := startShard(t, s, "", 0, 1, testIntents)
		c.Close()
		c2 := dial(t, s.ResumeURL(), "")
		c2.expect(discord.OpHello, "")
		c2.resume(s.Token(), r.SessionID, 1000)
		if got := c2.closeCode(5 * time.Second); got != discord.CloseInvalidSeq {
			t.Errorf("close %d, want 4007", got)
		}
	})
	t.Run("resume while authenticated", func(t *testing.T) {
		c, _, r := startShard(t, s, "", 0, 1, testIntents)
		c.resume(s.Token(), r.SessionID, 1)
		if got := c.closeCode(5 * time.Second); got != discord.CloseAlreadyAuthenticated {
			t.Errorf("close %d, want 4005", got)
		}
	})
	for _, rs := range s.Snapshot().Resumes {
		if rs.Accepted {
			t.Errorf("accepted resume %+v", rs)
		}
	}
}

func TestResumeTakesOverLiveConnection(t *testing.T) {
	s := newServer(t, testConfig())
	c, _, r := startShard(t, s, "", 0, 1, testIntents)
	c2 := dial(t, s.ResumeURL(), "")
	c2.expect(discord.OpHello, "")
	c2.resume(s.Token(), r.SessionID, 1)
	c2.skipUntil(discord.OpDispatch, "RESUMED")
	if got := c.closeCode(5 * time.Second); got != discord.CloseUnknownError {
		t.Errorf("old connection closed with %d", got)
	}
	// The session survives the old connection's end.
	if err := s.DispatchShard(0, "STILL_HERE", nil); err != nil {
		t.Fatal(err)
	}
	c2.expect(discord.OpDispatch, "STILL_HERE")
}

func TestFaultInjection(t *testing.T) {
	cfg := testConfig()
	cfg.Guilds = 1
	s := newServer(t, cfg)

	t.Run("op 9 resumable", func(t *testing.T) {
		c, _, r := startShard(t, s, "", 0, 1, testIntents)
		c.expect(discord.OpDispatch, "GUILD_CREATE")
		if err := s.InvalidateSession(0, true); err != nil {
			t.Fatal(err)
		}
		if p := c.expect(discord.OpInvalidSession, ""); string(p.D) != "true" {
			t.Errorf("op 9 d %s", p.D)
		}
		// Resume on the same connection (allowed after op 9).
		c.resume(s.Token(), r.SessionID, 2)
		c.expect(discord.OpDispatch, "RESUMED")
	})
	t.Run("op 9 not resumable", func(t *testing.T) {
		c, _, r := startShard(t, s, "", 0, 1, testIntents)
		if err := s.InvalidateSession(0, false); err != nil {
			t.Fatal(err)
		}
		if p := c.skipUntil(discord.OpInvalidSession, ""); string(p.D) != "false" {
			t.Errorf("op 9 d %s", p.D)
		}
		if got := c.closeCode(5 * time.Second); got != discord.CloseUnknownError {
			t.Errorf("close after grace %d", got)
		}
		si, _ := s.Snapshot().Session(r.SessionID)
		if !si.Dead {
			t.Errorf("session %+v", si)
		}
	})
	t.Run("op 7 then grace close", func(t *testing.T) {
		c, _, _ := startShard(t, s, "", 0, 1, testIntents)
		if err := s.Reconnect(0); err != nil {
			t.Fatal(err)
		}
		c.skipUntil(discord.OpReconnect, "")
		if got := c.closeCode(5 * time.Second); got != discord.CloseUnknownError {
			t.Errorf("close %d", got)
		}
	})
	t.Run("op 7 before hello", func(t *testing.T) {
		s.ReconnectBeforeHello()
		c := dial(t, s.GatewayURL(), "")
		if p := c.next(5 * time.Second); p.Op != discord.OpReconnect {
			t.Fatalf("first payload %v", p)
		}
		if got := c.closeCode(5 * time.Second); got != discord.CloseUnknownError {
			t.Errorf("close %d", got)
		}
		// Only the next connection.
		c2 := dial(t, s.GatewayURL(), "")
		c2.expect(discord.OpHello, "")
	})
	t.Run("close with code", func(t *testing.T) {
		c, _, r := startShard(t, s, "", 0, 1, testIntents)
		if err := s.CloseConnection(0, 4009, "Session timed out."); err != nil {
			t.Fatal(err)
		}
		if got := c.closeCode(5 * time.Second); got != 4009 {
			t.Errorf("close %d", got)
		}
		snap := waitFor(t, s, "dead", func(sn Snapshot) bool { si, _ := sn.Session(r.SessionID); return si.Dead })
		var rec *CloseRecord
		for i := range snap.Closes {
			if snap.Closes[i].ByServer && snap.Closes[i].Code == 4009 {
				rec = &snap.Closes[i]
			}
		}
		if rec == nil || rec.Reason != "Session timed out." || rec.ShardID != 0 {
			t.Errorf("close record %+v", rec)
		}
		if err := s.CloseConnection(0, 4000, strings.Repeat("x", 124)); err == nil {
			t.Error("long reason accepted")
		}
	})
	t.Run("no connection", func(t *testing.T) {
		for _, err := range []error{s.Reconnect(7), s.InvalidateSession(7, true), s.DropConnection(7),
			s.CloseConnection(7, 4000, ""), s.SetHeartbeatACKs(7, false)} {
			if !errors.Is(err, ErrNoConnection) {
				t.Errorf("err %v", err)
			}
		}
	})
}

func TestCompression(t *testing.T) {
	for _, tc := range []struct {
		compress string
		chunk    int
	}{{compressZlib, 0}, {compressZlib, 7}, {compressZstd, 0}} {
		t.Run(tc.compress+"/"+strconv.Itoa(tc.chunk), func(t *testing.T) {
			cfg := testConfig()
			cfg.Guilds = 5
			cfg.ZlibChunkSize = tc.chunk
			s := newServer(t, cfg)
			c, _, r := startShard(t, s, tc.compress, 0, 1, testIntents)
			if len(r.Guilds) != 5 {
				t.Errorf("READY guilds %d", len(r.Guilds))
			}
			for range 5 {
				c.expect(discord.OpDispatch, "GUILD_CREATE")
			}
			for i := range 20 {
				_ = s.DispatchShard(0, "BIG", map[string]string{"text": strings.Repeat("spectacles ", i*10)})
			}
			for i := range 20 {
				p := c.expect(discord.OpDispatch, "BIG")
				if *p.S != int64(7+i) {
					t.Errorf("seq %d", *p.S)
				}
			}
			c.heartbeat(nil)
			c.expect(discord.OpHeartbeatACK, "")
			// hello + READY + 5 + 20 + ACK
			const payloads = 28
			if n := c.decoded.Load(); n != payloads {
				t.Errorf("decoded %d payloads", n)
			}
			frames := c.wsMessages.Load()
			switch {
			case tc.compress == compressZstd || tc.chunk == 0:
				if frames != payloads {
					t.Errorf("%d websocket messages for %d payloads", frames, payloads)
				}
			default:
				if frames <= payloads*2 {
					t.Errorf("only %d websocket messages for %d split payloads", frames, payloads)
				}
			}
		})
	}
}

func TestZlibSuffix(t *testing.T) {
	// Every unsplit zlib-stream message ends with 00 00 ff ff and the first
	// starts with a zlib header.
	cfg := testConfig()
	s := newServer(t, cfg)
	ws := dialWS(t, s.GatewayURL()+"/?v=10&encoding=json&compress=zlib-stream")
	defer ws.Close()
	for i := range 3 {
		if i > 0 {
			_ = ws.WriteMessage(1, []byte(`{"op":1,"d":null}`))
		}
		_, data, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 && (data[0] != 0x78 || (uint16(data[0])<<8|uint16(data[1]))%31 != 0) {
			t.Errorf("no zlib header: % x", data[:2])
		}
		if !bytes.HasSuffix(data, []byte{0, 0, 0xff, 0xff}) {
			t.Errorf("message %d does not end with 00 00 ff ff: % x", i, data[len(data)-4:])
		}
	}
}

func TestPayloadCompression(t *testing.T) {
	s := newServer(t, testConfig())
	ws := dialWS(t, s.GatewayURL()+"/?v=10&encoding=json")
	defer ws.Close()
	if _, _, err := ws.ReadMessage(); err != nil { // Hello, plain
		t.Fatal(err)
	}
	id := `{"op":2,"d":{"token":"` + s.Token() + `","intents":1,"compress":true,"properties":{"os":"x","browser":"x","device":"x"}}}`
	if err := ws.WriteMessage(1, []byte(id)); err != nil {
		t.Fatal(err)
	}
	mt, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if mt != 2 {
		t.Fatalf("message type %d", mt)
	}
	zr, err := zlibReader(data)
	if err != nil {
		t.Fatal(err)
	}
	var p payload
	if err := json.Unmarshal(zr, &p); err != nil || p.event() != "READY" {
		t.Errorf("payload %v %v", p, err)
	}
	if !s.Snapshot().Identifies[0].Compress {
		t.Error("compress not recorded")
	}
}

func TestRequestGuildMembers(t *testing.T) {
	cfg := testConfig()
	cfg.Guilds = 1
	s := newServer(t, cfg)
	c, _, _ := startShard(t, s, "", 0, 1, testIntents)
	c.expect(discord.OpDispatch, "GUILD_CREATE")
	g := s.Guilds()[0].ID
	c.send(map[string]any{"op": 8, "d": map[string]any{"guild_id": g, "query": "", "limit": 0, "nonce": "n1"}})
	p := c.expect(discord.OpDispatch, "GUILD_MEMBERS_CHUNK")
	var d struct {
		GuildID string            `json:"guild_id"`
		Members []json.RawMessage `json:"members"`
		Nonce   string            `json:"nonce"`
	}
	_ = json.Unmarshal(p.D, &d)
	if d.GuildID != g || len(d.Members) == 0 || d.Nonce != "n1" {
		t.Errorf("chunk %s", p.D)
	}
}

func TestRecordingAndNoTokenLeak(t *testing.T) {
	var lb syncWriter
	cfg := testConfig()
	cfg.Token = "very-secret-token-value"
	cfg.Logger = slog.New(slog.NewTextHandler(&lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newServer(t, cfg)

	c, _, r := startShard(t, s, "", 0, 1, testIntents)
	c.heartbeat(1)
	c.skipUntil(discord.OpHeartbeatACK, "")
	c.sendClose(4000)
	c.closeCode(5 * time.Second)
	bad := dial(t, s.GatewayURL(), "")
	bad.expect(discord.OpHello, "")
	bad.identify("wrong-"+cfg.Token, 0, 1, testIntents)
	bad.closeCode(5 * time.Second)
	c2 := dial(t, s.ResumeURL(), "")
	c2.expect(discord.OpHello, "")
	c2.resume(cfg.Token, r.SessionID, 1)
	c2.skipUntil(discord.OpDispatch, "RESUMED")

	snap := waitFor(t, s, "records", func(sn Snapshot) bool {
		return len(sn.Connections) == 3 && !sn.Connections[1].Closed.IsZero() && len(sn.Resumes) == 1
	})
	// Everything the clients sent is recorded, tokens redacted.
	var ops []int
	for _, rc := range snap.Received {
		ops = append(ops, rc.Op)
		if bytes.Contains(rc.D, []byte(cfg.Token)) {
			t.Errorf("token in recorded payload %s", rc.D)
		}
		if rc.Op == discord.OpIdentify && !bytes.Contains(rc.D, []byte(`"token":"[redacted]"`)) {
			t.Errorf("identify not redacted: %s", rc.D)
		}
	}
	if want := []int{discord.OpIdentify, discord.OpHeartbeat, discord.OpIdentify, discord.OpResume}; !equalInts(ops, want) {
		t.Errorf("received ops %v, want %v", ops, want)
	}
	if snap.Received[1].ShardID != 0 || snap.Received[0].ShardID != -1 || snap.Received[1].Conn != 1 {
		t.Errorf("received %+v", snap.Received[:2])
	}
	id := snap.Identifies[0]
	if !id.Accepted || id.ShardID != 0 || id.ShardCount != 1 || id.Bucket != 0 || id.Intents != uint64(testIntents) ||
		id.OS != "linux" || id.Browser != "spectacles-test" || id.SessionID != r.SessionID {
		t.Errorf("identify %+v", id)
	}
	if snap.Identifies[1].CloseCode != discord.CloseAuthenticationFailed || snap.Identifies[1].Accepted {
		t.Errorf("bad identify %+v", snap.Identifies[1])
	}
	c1 := snap.Connections[0]
	if c1.Version != "10" || c1.Encoding != "json" || c1.ShardID != 0 || c1.SessionID != r.SessionID ||
		c1.CloseCode != 4000 || c1.CloseByServer || c1.Abrupt || c1.Dispatches < 2 || c1.Path != "/" || c1.ResumeURL {
		t.Errorf("connection 1 %+v", c1)
	}
	if snap.Connections[1].CloseCode != discord.CloseAuthenticationFailed || !snap.Connections[1].CloseByServer {
		t.Errorf("connection 2 %+v", snap.Connections[1])
	}
	var clientCloses, serverCloses int
	for _, cl := range snap.Closes {
		if cl.ByServer {
			serverCloses++
		} else {
			clientCloses++
		}
	}
	if clientCloses != 1 || serverCloses != 1 {
		t.Errorf("closes %+v", snap.Closes)
	}
	if snap.SessionStartRemaining != 999 {
		t.Errorf("remaining %d", snap.SessionStartRemaining)
	}
	evs, err := s.Events(r.SessionID)
	if err != nil || len(evs) == 0 || evs[0].T != "READY" || evs[len(evs)-1].T != "RESUMED" {
		t.Errorf("events %v %v", len(evs), err)
	}
	// Snapshots are copies.
	snap.Received[0].D[0] = 'X'
	if s.Snapshot().Received[0].D[0] == 'X' {
		t.Error("snapshot shares memory")
	}
	// No token in logs.
	_ = s.Close()
	if strings.Contains(lb.String(), cfg.Token) {
		t.Error("token in logs")
	}
	if !strings.Contains(lb.String(), "connection opened") {
		t.Error("no debug logs")
	}
}

func TestCloseStopsEverything(t *testing.T) {
	cfg := testConfig()
	cfg.TrafficRate = 1000
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: %v", err)
	}
	c, _, _ := startShard(t, s, zstdName(), 0, 1, testIntents)
	_ = c
	// Cancelling the context stops the server too.
	cancel()
	if got := c.closeCode(5 * time.Second); got != 1006 {
		t.Errorf("close %d", got)
	}
	_ = s.Close()
	_ = s.Close()
	if err := s.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
	if _, err := New(Config{Shards: -1}); err == nil {
		t.Error("negative shards accepted")
	}
	if _, err := New(Config{TrafficEvents: []string{"NOPE"}}); err == nil {
		t.Error("unknown event accepted")
	}
	if _, err := New(Config{AllowedPrivilegedIntents: discord.IntentGuilds}); err == nil {
		t.Error("non-privileged AllowedPrivilegedIntents accepted")
	}
}

func TestUnlimitedTrafficBackpressure(t *testing.T) {
	cfg := testConfig()
	cfg.TrafficRate = -1
	cfg.ReplayBuffer = 64
	s := newServer(t, cfg)
	c, _, _ := startShard(t, s, "", 0, 1, testIntents)
	// A client that reads slowly is never overrun: the generator waits.
	last := int64(1) // READY
	for range 200 {
		p := c.next(5 * time.Second)
		if p.S != nil {
			if *p.S != last+1 {
				t.Fatalf("seq %d after %d", *p.S, last)
			}
			last = *p.S
		}
		if last%50 == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if cl := s.Snapshot().ServerCloses(); len(cl) != 0 {
		t.Errorf("server closed: %v", cl)
	}
}

func zstdName() string { return compressZstd }

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func zlibReader(b []byte) ([]byte, error) {
	r, err := zlibNewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestReshardingAndStartLimit(t *testing.T) {
	cfg := testConfig()
	cfg.Shards, cfg.Guilds, cfg.SessionStartLimit = 2, 4, 3
	s := newServer(t, cfg)
	// The old single-shard session and the new shard 1 of 2 run together.
	old, _, _ := startShard(t, s, "", 0, 1, testIntents)
	next, _, _ := startShard(t, s, "", 1, 2, testIntents)
	g := s.GuildsForShard(1, 2)[0]
	if err := s.Dispatch(g, "BOTH", nil); err != nil {
		t.Fatal(err)
	}
	old.skipUntil(discord.OpDispatch, "BOTH")
	next.skipUntil(discord.OpDispatch, "BOTH")

	// The third identify uses the last start; the fourth finds the token reset.
	startShard(t, s, "", 0, 2, testIntents)
	if r := s.Snapshot().SessionStartRemaining; r != 0 {
		t.Errorf("remaining %d", r)
	}
	c := dial(t, s.GatewayURL(), "")
	c.expect(discord.OpHello, "")
	c.identify(s.Token(), 0, 2, testIntents)
	if got := c.closeCode(5 * time.Second); got != discord.CloseAuthenticationFailed {
		t.Errorf("close %d, want 4004", got)
	}
}
