package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/spectacles-go/spectacles/core"
)

func TestIsPacketEvent(t *testing.T) {
	for ev, want := range map[string]bool{"SEND": true, "0": true, "3": true, "127": true,
		"send": false, "03": false, "-1": false, "+1": false, "": false, "MESSAGE_CREATE": false, "1a": false} {
		if got := IsPacketEvent(ev); got != want {
			t.Errorf("IsPacketEvent(%q) = %v, want %v", ev, got, want)
		}
	}
}

// msgpackStrBody returns the content of raw when it is one msgpack str in
// the legacy headers spec-tacles/gateway writes and reads.
func msgpackStrBody(t *testing.T, raw []byte) []byte {
	t.Helper()
	switch c := raw[0]; {
	case c&0xe0 == 0xa0 && len(raw) == 1+int(c&0x1f):
		return raw[1:]
	case c == 0xda && len(raw) == 3+(int(raw[1])<<8|int(raw[2])):
		return raw[3:]
	case c == 0xdb:
		return raw[5:]
	}
	t.Fatalf("payload starts with %#x (%d bytes), want a msgpack str", raw[0], len(raw))
	return nil
}

func TestEncodePacket(t *testing.T) {
	send := map[string]any{"guild_id": "81384788765712384", "packet": map[string]any{"op": int64(8), "d": map[string]any{"query": "<&>"}}}
	for _, c := range []struct {
		event string
		data  any
	}{{"SEND", send}, {"2", send["packet"]}, {"SEND", json.RawMessage(`{"guild_id": "1", "packet": {"op": 1, "d": null}}`)}} {
		v, err := EncodePacket(c.event, c.data)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := core.Msgpack{}.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		body := msgpackStrBody(t, raw)
		if !json.Valid(body) || bytes.Contains(body, []byte(`\u003c`)) {
			t.Errorf("%s: msgpack str holds %q", c.event, body)
		}
		// Our readers get the value back, with either codec.
		for _, codec := range []core.Codec{core.Msgpack{}, core.JSON{}} {
			enc, err := codec.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			got, err := core.NewPayload(enc, codec).Data()
			if _, ok := got.(map[string]any); err != nil || !ok {
				t.Errorf("%s with %s: read back %T %v", c.event, codec.Name(), got, err)
			}
		}
	}
	// Other events are left alone.
	if v, _ := EncodePacket("MESSAGE_CREATE", send); v.(map[string]any)["guild_id"] == nil {
		t.Errorf("MESSAGE_CREATE data changed: %v", v)
	}
	if _, err := EncodePacket("SEND", json.RawMessage(`{"op":`)); err == nil {
		t.Error("invalid JSON accepted")
	}
}

// TestManagerReadsLegacyPacketsAndRepublishesThem: SEND and shard-id
// packets in spec-tacles/gateway's form (msgpack str of JSON, as
// EncodePacket writes them) reach Discord; a SEND for a shard of another
// process is re-published under its shard id in that same form.
func TestManagerReadsLegacyPacketsAndRepublishesThem(t *testing.T) {
	env := newManagerEnv(t, 2, nil)
	env.run(t, func(c *ManagerConfig) { c.ShardCount, c.ShardIDs = 2, []int{0} })
	pub := env.open(t, "worker-"+env.group)
	ctx := context.Background()
	g0, g1 := guildOnShard(t, env.sim, 0, 2), guildOnShard(t, env.sim, 1, 2)
	publish := packetPublisher(t, pub)
	publish(SendEvent, map[string]any{"guild_id": g0, "packet": map[string]any{"op": 8, "d": map[string]any{"guild_id": g0, "query": "send", "limit": 0}}})
	publish("0", map[string]any{"op": 8, "d": map[string]any{"guild_id": g0, "query": "direct", "limit": 0}})
	publish(SendEvent, map[string]any{"guild_id": g1, "packet": map[string]any{"op": 8, "d": map[string]any{"guild_id": g1, "query": "elsewhere", "limit": 0}}})
	for _, ev := range []string{SendEvent, "0"} {
		for _, e := range env.raw.XRange(ctx, ev, "-", "+").Val() {
			msgpackStrBody(t, []byte(e.Values["data"].(string)))
		}
	}
	waitFor(t, "both packets at shard 0", func() bool { return len(received(env.sim, 0, 8)) == 2 })
	waitFor(t, "the SEND for shard 1 re-published on 1", func() bool { return env.raw.XLen(ctx, "1").Val() == 1 })
	e := env.raw.XRange(ctx, "1", "-", "+").Val()[0]
	body := msgpackStrBody(t, []byte(e.Values["data"].(string)))
	if !bytes.Contains(body, []byte(`"elsewhere"`)) || !bytes.Contains(body, []byte(`"op":8`)) {
		t.Errorf("re-published packet %s", body)
	}
}

// TestNewGatewayDoesNotReplayOldPackets: packets published before the
// gateway's group exists (by an earlier gateway's workers, say) are not
// sent to Discord; packets published once it runs are.
func TestNewGatewayDoesNotReplayOldPackets(t *testing.T) {
	env := newManagerEnv(t, 1, nil)
	pub := env.open(t, "worker-"+env.group)
	g := guildOnShard(t, env.sim, 0, 1)
	publish := packetPublisher(t, pub)
	chunk := func(query string) map[string]any {
		return map[string]any{"op": 8, "d": map[string]any{"guild_id": g, "query": query, "limit": 0}}
	}
	publish(SendEvent, map[string]any{"guild_id": g, "packet": chunk("old-send")})
	publish("0", chunk("old-direct"))
	env.run(t, nil)
	publish(SendEvent, map[string]any{"guild_id": g, "packet": chunk("new-send")})
	publish("0", chunk("new-direct"))
	waitFor(t, "the new packets at the shard", func() bool { return len(received(env.sim, 0, 8)) >= 2 })
	// The old ones would have been read first: the group reads in order.
	for _, d := range received(env.sim, 0, 8) {
		if bytes.Contains(d, []byte("old-")) {
			t.Errorf("a packet published before the gateway existed was sent to Discord: %s", d)
		}
	}
	if n := len(received(env.sim, 0, 8)); n != 2 {
		t.Errorf("%d op 8 packets sent, want 2", n)
	}
}

// packetPublisher returns a function that publishes data on event as
// EncodePacket writes it, through pub.
func packetPublisher(t *testing.T, pub core.Broker) func(event string, data any) {
	return func(event string, data any) {
		t.Helper()
		v, err := EncodePacket(event, data)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Publish(context.Background(), event, v); err != nil {
			t.Fatal(err)
		}
	}
}
