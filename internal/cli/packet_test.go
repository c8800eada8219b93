package cli

import (
	"context"
	"encoding/json"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	redistransport "github.com/spectacles-go/spectacles/transport/redis"
)

// legacyJSON checks that the stream's last entry is a msgpack str (the
// legacy headers spec-tacles/gateway reads: fixstr, str16, str32) holding
// JSON, and returns that JSON decoded.
func lastLegacyJSON(t *testing.T, c goredis.UniversalClient, stream string) map[string]any {
	t.Helper()
	entries, err := c.XRevRangeN(context.Background(), stream, "+", "-", 1).Result()
	if err != nil || len(entries) != 1 {
		t.Fatalf("XREVRANGE %s: %v %v", stream, entries, err)
	}
	raw := []byte(entries[0].Values["data"].(string))
	var body []byte
	switch c := raw[0]; {
	case c&0xe0 == 0xa0:
		body = raw[1:]
	case c == 0xda:
		body = raw[3:]
	case c == 0xdb:
		body = raw[5:]
	default:
		t.Fatalf("%s: data starts with %#x, want a msgpack str header (spec-tacles/gateway drops anything else)", stream, c)
	}
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s: the msgpack str does not hold a JSON object: %v (%q)", stream, err, body)
	}
	return v
}

// TestPacketsArePublishedAsMsgpackStringsOfJSON: send --guild, send
// --shard, and publish of SEND or a shard id write what spec-tacles/gateway
// reads (a msgpack str holding JSON), not a msgpack map.
func TestPacketsArePublishedAsMsgpackStringsOfJSON(t *testing.T) {
	url := gatewayTestURL(t)
	inv := invocation{env: map[string]string{"REDIS_URL": url}}
	c, err := redistransport.NewClient(url, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const guild = "81384788765712384"
	packet := `{"op":4,"d":{"guild_id":"81384788765712384","channel_id":null,"self_mute":false,"self_deaf":false}}`

	if r := inv.run(t.Context(), "send", "--guild", guild, packet); r.code != 0 {
		t.Fatalf("send --guild: %d %s", r.code, r.stderr)
	}
	v := lastLegacyJSON(t, c, "SEND")
	if v["guild_id"] != guild || v["packet"].(map[string]any)["op"] != float64(4) {
		t.Errorf("send --guild wrote %v", v)
	}
	if r := inv.run(t.Context(), "send", "--shard", "1", packet); r.code != 0 {
		t.Fatalf("send --shard: %d %s", r.code, r.stderr)
	}
	if v := lastLegacyJSON(t, c, "1"); v["op"] != float64(4) {
		t.Errorf("send --shard wrote %v", v)
	}
	send := `{"guild_id":"` + guild + `","packet":` + packet + `}`
	if r := inv.run(t.Context(), "publish", "SEND", send); r.code != 0 {
		t.Fatalf("publish SEND: %d %s", r.code, r.stderr)
	}
	if v := lastLegacyJSON(t, c, "SEND"); v["guild_id"] != guild {
		t.Errorf("publish SEND wrote %v", v)
	}
	if r := inv.run(t.Context(), "publish", "0", packet); r.code != 0 {
		t.Fatalf("publish 0: %d %s", r.code, r.stderr)
	}
	if v := lastLegacyJSON(t, c, "0"); v["op"] != float64(4) {
		t.Errorf("publish 0 wrote %v", v)
	}
}
