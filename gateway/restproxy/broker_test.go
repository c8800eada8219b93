package restproxy

import (
	"context"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway/simulator"
	"github.com/spectacles-go/spectacles/transport/amqp"
	"github.com/spectacles-go/spectacles/transport/amqp/amqptest"
	"github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

// brokerEnv is a REST fake, proxies consuming REQUEST on a broker, and a
// caller.
type brokerEnv struct {
	rest   *simulator.REST
	event  string
	caller core.Broker
}

// opener opens a broker client of the proxy's group (proxy) or of the
// caller's (caller).
type opener func(t *testing.T, role, client string) core.Broker

// redisOpener opens Redis clients with short message timeouts, so that an
// unacknowledged message would be reclaimed by another proxy quickly. It
// also returns the server's address: without a real Redis every
// redistest.Addr call starts an embedded server of its own.
func redisOpener(t *testing.T, event string) (opener, string) {
	addr, _ := redistest.Addr(t)
	raw := redistest.Client(t, addr)
	redistest.DeleteKeys(t, raw, event, core.DeadLetterEvent(event))
	return func(t *testing.T, role, client string) core.Broker {
		b, err := redis.Open(context.Background(), redis.Config{URL: addr, ReclaimInterval: 50 * time.Millisecond, Options: core.Options{
			Identity: core.Identity{Group: role, Client: client}, MessageTimeout: 200 * time.Millisecond,
			Concurrency: 64, CallTimeout: 10 * time.Second,
		}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}, addr
}

// amqpOpener opens RabbitMQ clients: one group (the exchange) for the
// proxy and its caller, as AMQP routes calls through the group.
func amqpOpener(t *testing.T) opener {
	url := amqptest.URL(t)
	group := redistest.Unique("proxy")
	return func(t *testing.T, _, client string) core.Broker {
		b, err := amqp.Open(context.Background(), amqp.Config{URL: url, Options: core.Options{
			Identity: core.Identity{Group: group, Client: client}, Concurrency: 64, CallTimeout: 10 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// startBrokerEnv starts the fake and n proxy consumers of one proxy.
func startBrokerEnv(t *testing.T, fakeCfg simulator.RESTConfig, n int, event string, open opener) *brokerEnv {
	t.Helper()
	rest, base := fake(t, fakeCfg)
	e := &brokerEnv{rest: rest, event: event}
	p := newProxy(t, base, Config{})
	for i := 0; i < n; i++ {
		b := open(t, "proxy", "proxy-"+string(rune('a'+i)))
		srv := NewBrokerServer(p, BrokerConfig{})
		ctx, cancel := context.WithCancel(context.Background())
		if err := b.Consume(ctx, []string{e.event}, srv.Handle); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cancel()
			_ = b.Close()
		})
	}
	c := open(t, "caller", "caller")
	t.Cleanup(func() { _ = c.Close() })
	e.caller = c
	return e
}

// call sends a raw msgpack request and decodes the reply.
func (e *brokerEnv) call(t *testing.T, req any) map[string]any {
	t.Helper()
	raw, ok := req.([]byte)
	if !ok {
		var err error
		if raw, err = msgpack.Marshal(req); err != nil {
			t.Fatal(err)
		}
	}
	p, err := e.caller.Call(context.Background(), e.event, core.Raw(raw))
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := msgpack.Unmarshal(p.Raw, &out); err != nil {
		t.Fatalf("reply %x: %v", p.Raw, err)
	}
	return out
}

func status(r map[string]any) int64 {
	v := reflect.ValueOf(r["status"])
	switch {
	case v.CanInt():
		return v.Int()
	case v.CanUint():
		return int64(v.Uint())
	}
	return -1
}

// TestBrokerWireShapes sends what @spectacles/proxy and rustacles put on
// the wire and checks the replies.
func TestBrokerWireShapes(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		event := redistest.Unique("REQUEST")
		open, _ := redisOpener(t, event)
		testBrokerWireShapes(t, startBrokerEnv(t, simulator.RESTConfig{}, 1, event, open))
	})
	t.Run("amqp", func(t *testing.T) {
		testBrokerWireShapes(t, startBrokerEnv(t, simulator.RESTConfig{}, 1, redistest.Unique("REQUEST"), amqpOpener(t)))
	})
}

func testBrokerWireShapes(t *testing.T, e *brokerEnv) {
	ch := chanID(1)
	// @spectacles/proxy: body a str of JSON, query nil, no timeout, no
	// User-Agent.
	r := e.call(t, map[string]any{"method": "post", "path": "/channels/" + ch + "/messages", "body": `{"content":"hi"}`, "query": nil,
		"headers": map[string]any{"Authorization": testBot, "X-RateLimit-Precision": "millisecond", "content-type": "application/json"}})
	body, _ := r["body"].(map[string]any)
	if status(r) != 0 || status(body) != 200 || !strings.HasSuffix(body["url"].(string), "/api/v10/channels/"+ch+"/messages") {
		t.Fatalf("reply %+v", r)
	}
	headers, _ := body["headers"].(map[string]any)
	if headers["x-ratelimit-bucket"] != simulator.BucketHash("messages-write") || headers["x-ratelimit-remaining"] != "4" || headers["content-type"] != "application/json" {
		t.Fatalf("headers %+v", headers)
	}
	inner, ok := body["body"].([]byte)
	var msg map[string]any
	if !ok || json.Unmarshal(inner, &msg) != nil || msg["content"] != "hi" {
		t.Fatalf("body %T %q", body["body"], body["body"])
	}
	// rustacles: bin body, a path without its slash, a Duration timeout,
	// a query map; the emoji stays percent-encoded.
	r = e.call(t, map[string]any{"method": "PUT", "path": "channels/" + ch + "/messages/" + chanID(2) + "/reactions/%F0%9F%91%8D/@me",
		"body": []byte{}, "query": map[string]any{"b": "2", "a": "x%20y"}, "headers": map[string]any{"Authorization": testBot, "User-Agent": "rustacles/1"},
		"timeout": map[string]any{"secs": 5, "nanos": 0}})
	if body, _ := r["body"].(map[string]any); status(r) != 0 || status(body) != 204 {
		t.Fatalf("reply %+v", r)
	}
	recs := e.rest.Requests()
	if len(recs) != 2 || recs[0].UserAgent != DefaultUserAgent || recs[1].UserAgent != "rustacles/1" ||
		recs[1].Path != "/api/v10/channels/"+ch+"/messages/"+chanID(2)+"/reactions/%F0%9F%91%8D/@me" || recs[1].RawQuery != "a=x%20y&b=2" {
		t.Fatalf("records %+v", recs)
	}
	// Discord's errors are status 0 with the HTTP status inside.
	r = e.call(t, map[string]any{"method": "GET", "path": "/users/@me", "headers": map[string]any{"Authorization": "Bot wrong"}})
	if body, _ := r["body"].(map[string]any); status(r) != 0 || status(body) != 401 {
		t.Fatalf("401 reply %+v", r)
	}
	// Every failure class gets its status.
	for want, req := range map[int64]any{
		2: []byte{0xc1},
		5: map[string]any{"method": 7, "path": "/x"},
		3: map[string]any{"method": "GET", "path": "/a b"},
		4: map[string]any{"method": "GET", "path": "/x", "query": map[string]any{"a": "%zz"}},
		6: map[string]any{"method": "GET", "path": "/x", "headers": map[string]any{"X": "a\nb"}},
	} {
		r := e.call(t, req)
		if status(r) != want {
			t.Errorf("%v: reply %+v, want status %d", req, r, want)
		}
		if _, ok := r["body"].(string); !ok {
			t.Errorf("%v: error body %T", req, r["body"])
		}
	}
}

// TestBrokerTimeoutAndAckPolicy: a request that waits on a limit is
// acknowledged before it waits, so that two consumers with a short message
// timeout never send it twice; one that cannot be sent in time gets
// status 8 without reaching Discord.
func TestBrokerTimeoutAndAckPolicy(t *testing.T) {
	event := redistest.Unique("REQUEST")
	open, _ := redisOpener(t, event)
	e := startBrokerEnv(t, simulator.RESTConfig{TimeScale: 0.2}, 2, event, open) // 5 per second
	path := "/channels/" + chanID(1) + "/messages"
	req := func(timeout any) map[string]any {
		return map[string]any{"method": "POST", "path": path, "body": "{}", "timeout": timeout,
			"headers": map[string]any{"Authorization": testBot, "Content-Type": "application/json"}}
	}
	for i := 0; i < 5; i++ {
		if r := e.call(t, req(nil)); status(r) != 0 {
			t.Fatalf("reply %+v", r)
		}
	}
	// The bucket resets in about a second: 100 ms is too short.
	if r := e.call(t, req(map[string]any{"secs": 0, "nanos": 100_000_000})); status(r) != 8 {
		t.Fatalf("reply %+v, want status 8", r)
	}
	// This one waits about a second, far past the 200 ms message timeout
	// after which the other consumer would reclaim an unacknowledged one.
	r := e.call(t, req([]any{5, 0}))
	if body, _ := r["body"].(map[string]any); status(r) != 0 || status(body) != 200 {
		t.Fatalf("reply %+v", r)
	}
	time.Sleep(500 * time.Millisecond) // time for a wrong redelivery to show
	if s := e.rest.Stats(); s.Requests != 6 || s.ByStatus[429] != 0 {
		t.Fatalf("the fake saw %+v, want 6 requests and no 429", s)
	}
}

// TestBrokerBacklogNotSent: a request published long before a proxy
// received it (by its stream id's time) is answered status 8, unsent.
func TestBrokerBacklogNotSent(t *testing.T) {
	event := redistest.Unique("REQUEST")
	open, addr := redisOpener(t, event)
	raw := redistest.Client(t, addr)
	old := strconv.FormatInt(time.Now().Add(-time.Hour).UnixMilli(), 10) + "-0"
	req, _ := msgpack.Marshal(map[string]any{"method": "GET", "path": "/users/@me", "headers": map[string]any{"Authorization": testBot}})
	if err := raw.XAdd(context.Background(), &goredis.XAddArgs{Stream: event, ID: old, Values: []any{"data", req}}).Err(); err != nil {
		t.Fatal(err)
	}
	sub := raw.Subscribe(context.Background(), event+":"+old)
	defer sub.Close()
	if _, err := sub.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := startBrokerEnv(t, simulator.RESTConfig{}, 1, event, open)
	select {
	case msg := <-sub.Channel():
		var r map[string]any
		if err := msgpack.Unmarshal([]byte(msg.Payload), &r); err != nil || status(r) != 8 {
			t.Fatalf("reply %+v %v", r, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reply")
	}
	if n := e.rest.Stats().Requests; n != 0 {
		t.Fatalf("the fake saw %d requests", n)
	}
}
