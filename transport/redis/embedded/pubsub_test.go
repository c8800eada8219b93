package embedded

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// respConn is a raw RESP2 connection to the server, to see the order of
// what it writes exactly.
type respConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialRESP(t *testing.T, e *Server) *respConn {
	t.Helper()
	c, err := net.Dial("tcp", e.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &respConn{c: c, r: bufio.NewReader(c)}
}

func (rc *respConn) send(args ...string) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	_, _ = rc.c.Write([]byte(b.String()))
}

// read reads one reply and returns it flattened: an array's elements
// joined by spaces, a simple string or integer as it is.
func (rc *respConn) read(t *testing.T) string {
	t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := rc.r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch line[0] {
	case '*', '>':
		var n int
		fmt.Sscan(line[1:], &n)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = rc.read(t)
		}
		return strings.Join(parts, " ")
	case '$':
		var n int
		fmt.Sscan(line[1:], &n)
		if n < 0 {
			return "(nil)"
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rc.r, buf); err != nil {
			t.Fatalf("read: %v", err)
		}
		return string(buf[:n])
	default:
		return line[1:]
	}
}

// A message published before a subscriber's UNSUBSCRIBE reaches it before
// the UNSUBSCRIBE's reply, never after, as on Redis: a client that left
// subscriber mode (its last channel gone) takes a late message for the
// reply to its next command (ioredis then fails its calls with
// "Connection in subscriber mode"). @spectacles/brokers callers subscribe
// to a reply channel per call and unsubscribe once answered, while the
// responder may publish the reply again.
func TestPublishedBeforeUnsubscribeArrivesBeforeItsReply(t *testing.T) {
	e := start(t)
	sub := dialRESP(t, e)
	pub := client(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for round := range 300 {
		channel := fmt.Sprintf("reply:%d", round)
		sub.send("SUBSCRIBE", channel)
		if got := sub.read(t); got != "subscribe "+channel+" 1" {
			t.Fatalf("round %d: SUBSCRIBE answered %q", round, got)
		}
		// A publisher keeps publishing to the channel while the client
		// unsubscribes.
		roundCtx, stop := context.WithCancel(ctx)
		wg.Go(func() {
			for roundCtx.Err() == nil {
				_ = pub.Publish(roundCtx, channel, "again").Err()
			}
		})
		time.Sleep(time.Duration(round%5) * 100 * time.Microsecond)
		sub.send("UNSUBSCRIBE", channel)
		sub.send("PING")
		for {
			got := sub.read(t)
			if got == "message "+channel+" again" {
				continue // before the UNSUBSCRIBE's reply: as on Redis
			}
			if got != "unsubscribe "+channel+" 0" {
				t.Fatalf("round %d: %q before the UNSUBSCRIBE's reply", round, got)
			}
			break
		}
		stop()
		if got := sub.read(t); got != "PONG" {
			t.Fatalf("round %d: after leaving subscriber mode, PING was answered by %q", round, got)
		}
	}
}

// Subscribing by channel and by pattern, publishing from a client, from
// inside MULTI and from a script, PUBSUB's counts, a subscriber's PUBLISH
// refused in subscriber mode, and a closed subscriber no longer counted.
func TestPubsubDeliversAsRedis(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	pub := client(t, e)
	sub := dialRESP(t, e)
	sub.send("SUBSCRIBE", "a", "b")
	for _, want := range []string{"subscribe a 1", "subscribe b 2"} {
		if got := sub.read(t); got != want {
			t.Fatalf("SUBSCRIBE: %q, want %q", got, want)
		}
	}
	sub.send("PSUBSCRIBE", "ev:*")
	if got := sub.read(t); got != "psubscribe ev:* 3" {
		t.Fatalf("PSUBSCRIBE: %q", got)
	}
	if n, err := pub.Publish(ctx, "a", "1").Result(); err != nil || n != 1 {
		t.Fatalf("PUBLISH a: %d, %v", n, err)
	}
	if n, err := pub.Publish(ctx, "ev:x", "2").Result(); err != nil || n != 1 {
		t.Fatalf("PUBLISH ev:x: %d, %v", n, err)
	}
	if n, _ := pub.Publish(ctx, "nobody", "3").Result(); n != 0 {
		t.Fatalf("PUBLISH to no subscriber reached %d", n)
	}
	pipe := pub.TxPipeline()
	pipe.Publish(ctx, "b", "in multi")
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("PUBLISH in MULTI: %v", err)
	}
	if err := pub.Eval(ctx, "return redis.call('PUBLISH', KEYS[1], ARGV[1])", []string{"a"}, "from a script").Err(); err != nil {
		t.Fatalf("PUBLISH from a script: %v", err)
	}
	for _, want := range []string{"message a 1", "pmessage ev:* ev:x 2", "message b in multi", "message a from a script"} {
		if got := sub.read(t); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	counts, err := pub.PubSubNumSub(ctx, "a", "b", "c").Result()
	if err != nil || counts["a"] != 1 || counts["b"] != 1 || counts["c"] != 0 {
		t.Fatalf("PUBSUB NUMSUB: %v, %v", counts, err)
	}
	sub.send("PUBLISH", "a", "x")
	if got := sub.read(t); !strings.Contains(got, "only (P|S)SUBSCRIBE") && !strings.Contains(strings.ToLower(got), "subscribe") {
		t.Fatalf("PUBLISH in subscriber mode: %q, want refused", got)
	}
	_ = sub.c.Close()
	waitUntil(t, 5*time.Second, "the closed subscriber to be forgotten", func() bool {
		n, _ := pub.Publish(ctx, "a", "after close").Result()
		m, _ := pub.Publish(ctx, "ev:y", "after close").Result()
		return n == 0 && m == 0
	})
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true}, {"*", "anything", true}, {"ev:*", "ev:", true}, {"ev:*", "ev:x:y", true},
		{"ev:*", "e", false}, {"a?c", "abc", true}, {"a?c", "ac", false}, {"**x", "ax", true},
		{"h[ae]llo", "hello", true}, {"h[ae]llo", "hillo", false}, {"h[^e]llo", "hallo", true},
		{"h[^e]llo", "hello", false}, {"h[a-c]t", "hbt", true}, {"h[c-a]t", "hbt", true},
		{"h[a-c]t", "hdt", false}, {`a\*b`, "a*b", true}, {`a\*b`, "axb", false},
		{"[abc", "a", true}, {"x", "xy", false}, {"*a*b", "xxaxxb", true}, {"*a*b", "xxaxx", false},
	} {
		if got := globMatch(c.pattern, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
	}
}
