package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/gateway/simulator"
	redistransport "github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

// The gateway speaks fixed event names, so each of its tests leases a
// database of its own and deletes those streams before and after.
func gatewayTestURL(t *testing.T) string {
	t.Helper()
	u := redistest.LeaseDB(t, testRedisURL)
	c, err := redistransport.NewClient(u, 2)
	if err != nil {
		t.Fatal(err)
	}
	keys := append([]string{"SEND", "SEND:dlq", "0", "1", "GUILD_CREATE", "READY", "RESUMED", "GUILD_MEMBERS_CHUNK"}, simulator.SyntheticEvents()...)
	c.Del(context.Background(), keys...)
	t.Cleanup(func() {
		ctx := context.Background()
		c.Del(ctx, keys...)
		// The gateway's identify keys expire in seconds; the next
		// holder of the database should not wait for them.
		for it := c.Scan(ctx, 0, "spectacles:identify:*", 100).Iterator(); it.Next(ctx); {
			c.Del(ctx, it.Val())
		}
		c.Close()
	})
	return u
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startSimulator(t *testing.T, cfg simulator.Config) *simulator.Server {
	t.Helper()
	sim, err := simulator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestGatewayNodeEndToEnd(t *testing.T) {
	const token = "sekret-token-0123456789"
	sim := startSimulator(t, simulator.Config{Token: token, Shards: 2, Guilds: 6, MaxConcurrency: 2,
		HeartbeatInterval: time.Second, IdentifyInterval: 10 * time.Millisecond})
	url := gatewayTestURL(t)
	prom := freeAddr(t)
	env := map[string]string{
		"REDIS_URL": url, "DISCORD_TOKEN": token, "DISCORD_API_PROTOCOL": "http",
		"DISCORD_API_HOST": strings.TrimPrefix(sim.URL(), "http://"), "DISCORD_EVENTS": "MESSAGE_CREATE",
		"DISCORD_COMPRESS": "zlib-stream", "PROMETHEUS_ADDRESS": prom, "BROKER_GROUP": unique("gateway"),
	}
	ctx, cancel := context.WithCancel(t.Context())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"gateway"}, strings.NewReader(""), io.Discard, &stderr, mapLookup(env))
	}()
	eventually(t, "both shards identified", func() bool {
		n := 0
		for _, id := range sim.Snapshot().Identifies {
			if id.Accepted {
				n++
			}
		}
		return n == 2
	})
	c, err := redistransport.NewClient(url, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Dispatches reach the broker under their event name.
	guild := sim.Guilds()[0].ID
	if err := sim.Dispatch(guild, "MESSAGE_CREATE", map[string]any{"content": "nonce-e2e"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the dispatch in the MESSAGE_CREATE stream", func() bool {
		for _, e := range c.XRange(context.Background(), "MESSAGE_CREATE", "-", "+").Val() {
			if strings.Contains(fmt.Sprint(e.Values["data"]), "nonce-e2e") {
				return true
			}
		}
		return false
	})

	// A SEND published with the CLI reaches the shard that owns the guild.
	target := sim.GuildsForShard(1, 2)[0]
	r := invocation{env: map[string]string{"REDIS_URL": url}}.run(t.Context(), "publish", "SEND",
		fmt.Sprintf(`{"guild_id":%q,"packet":{"op":8,"d":{"guild_id":%q,"query":"","limit":0}}}`, target, target))
	if r.code != 0 {
		t.Fatalf("publish SEND: %d %s", r.code, r.stderr)
	}
	eventually(t, "op 8 at shard 1", func() bool {
		for _, p := range sim.Snapshot().Received {
			if p.Op == 8 && p.ShardID == 1 {
				return true
			}
		}
		return false
	})

	// spec-tacles/gateway's metric names.
	eventually(t, "metrics", func() bool {
		resp, err := http.Get("http://" + prom + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		text := string(body)
		for _, want := range []string{`gateway_packets_received{op="0",shard="0",t="MESSAGE_CREATE"}`, `gateway_packets_sent{op="8",shard="1",t=""}`,
			`gateway_shards_alive{id="1"} 1`, `gateway_total_shards 2`, `gateway_ping_count{id="0"}`} {
			if !strings.Contains(text, want) {
				return false
			}
		}
		return true
	})

	// `spectacles shards` reads the health the node reports through Redis.
	eventually(t, "shards --json", func() bool {
		r := invocation{env: map[string]string{"REDIS_URL": url}}.run(t.Context(), "shards", "--json")
		var nodes []struct {
			Group  string `json:"group"`
			Shards []struct {
				ID    int    `json:"id"`
				State string `json:"state"`
			} `json:"shards"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &nodes) != nil {
			return false
		}
		for _, n := range nodes {
			if n.Group == env["BROKER_GROUP"] && len(n.Shards) == 2 && n.Shards[0].State == "ready" && n.Shards[1].State == "ready" {
				return true
			}
		}
		return false
	})

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("gateway exited %d: %s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not stop")
	}
	eventually(t, "the shutdown closes", func() bool {
		n := 0
		for _, cl := range sim.Snapshot().Closes {
			if !cl.ByServer && cl.Code != 1000 && cl.Code != 1001 && !cl.Abrupt {
				n++
			}
		}
		return n == 2
	})
	if strings.Contains(stderr.String(), token) {
		t.Error("the token was printed")
	}
}

func TestGatewayBadTokenExits(t *testing.T) {
	sim := startSimulator(t, simulator.Config{})
	url := gatewayTestURL(t)
	r := invocation{env: map[string]string{
		"REDIS_URL": url, "DISCORD_TOKEN": "wrong-secret-token", "DISCORD_API_PROTOCOL": "http",
		"DISCORD_API_HOST": strings.TrimPrefix(sim.URL(), "http://"),
	}}.run(t.Context(), "gateway")
	if r.code != exitUsage || !strings.Contains(r.stderr, "401") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "wrong-secret-token") {
		t.Error("the token was printed")
	}
}

func TestGatewayConfiguration(t *testing.T) {
	base := map[string]string{"DISCORD_TOKEN": "t"}
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"DISCORD_TOKEN": ""}, "DISCORD_TOKEN (or --token) is required"},
		{map[string]string{"DISCORD_INTENTS": "GUILDS,GUILD_MESAGES"}, `DISCORD_INTENTS: unknown intent "GUILD_MESAGES"`},
		{map[string]string{"DISCORD_RAW_INTENTS": "abc"}, `DISCORD_RAW_INTENTS: "abc" is not a non-negative integer`},
		{map[string]string{"DISCORD_SHARD_COUNT": "abc"}, `DISCORD_SHARD_COUNT: "abc" is not an integer`},
		{map[string]string{"DISCORD_SHARD_IDS": "3-1"}, "DISCORD_SHARD_IDS: invalid shard ids"},
		{map[string]string{"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "0-2"}, "not below the shard count 2"},
		{map[string]string{"DISCORD_PRESENCE": "[1]"}, "DISCORD_PRESENCE: not a JSON object"},
		{map[string]string{"DISCORD_COMPRESS": "gzip"}, `DISCORD_COMPRESS: unknown compression "gzip"`},
		{map[string]string{"DISCORD_API_PROTOCOL": "ftp"}, `DISCORD_API_PROTOCOL: "ftp" is not http or https`},
		{map[string]string{"DISCORD_API_VERSION": "x"}, `DISCORD_API_VERSION: "x" is not an integer`},
		{map[string]string{"SHARD_STORE_TYPE": "etcd"}, `SHARD_STORE_TYPE: "etcd" is not memory or redis`},
		{map[string]string{"PROMETHEUS_ENDPOINT": "metrics"}, "PROMETHEUS_ENDPOINT"},
		{map[string]string{"GATEWAY_DISPATCH_FORMAT": "etf"}, "GATEWAY_DISPATCH_FORMAT"},
	}
	for _, c := range cases {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range c.env {
			env[k] = v
		}
		_, err := loadGatewayConfig(mapLookup(env), mapLookup(nil))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want %q", c.env, err, c.want)
		}
	}
	gc, err := loadGatewayConfig(mapLookup(map[string]string{"DISCORD_TOKEN": "Bot abc", "DISCORD_INTENTS": "guilds",
		"DISCORD_RAW_INTENTS": "512", "DISCORD_SHARD_IDS": "0-3,12"}), mapLookup(map[string]string{"compress": "none"}))
	if err != nil {
		t.Fatal(err)
	}
	if gc.Token != "abc" || gc.Intents != 1|512 || len(gc.ShardIDs) != 5 || gc.Compress != "none" || gc.APIBase() != "https://discord.com/api/v10" {
		t.Errorf("config %+v", gc)
	}
	if _, err := loadGatewayConfig(mapLookup(map[string]string{"DISCORD_TOKEN": "x"}), mapLookup(nil)); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
