package hub

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// serveAt serves a hub at addr until stop.
func serveAt(t *testing.T, addr string) (stop func()) {
	t.Helper()
	s := NewServer(ServerConfig{Logger: brokertest.Logger(t, slog.LevelInfo)})
	l, err := Listen(context.Background(), addr)
	for deadline := time.Now().Add(brokertest.Wait); err != nil && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond) // the old listener's port may take a moment
		l, err = Listen(context.Background(), addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), l) }()
	var stopped bool
	stop = func() {
		if !stopped {
			stopped = true
			_ = s.Close()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestReconnect: a hub restarts (empty) at the same address; its clients
// reconnect by themselves, register and subscribe again, and messages flow.
func TestReconnect(t *testing.T) {
	l, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	stop := serveAt(t, addr)

	for _, scheme := range []string{"ws", "tcp"} {
		parent := t
		t.Run(scheme, func(t *testing.T) {
			con := openClient(t, scheme+"://"+addr, core.Options{Identity: core.Identity{Group: brokertest.Unique("g"), Client: "c"}})
			pub := openClient(t, scheme+"://"+addr, core.Options{Identity: core.Identity{Client: "p"}})
			h, got := brokertest.Collect(t, true)
			brokertest.StartConsume(t, con, []string{"EV"}, h)
			if _, err := pub.Publish(brokertest.Context(t), "EV", map[string]any{"n": 1}); err != nil {
				t.Fatal(err)
			}
			brokertest.Next(t, got)

			stop()
			stop = serveAt(parent, addr)
			// Publishing fails while the client reconnects; once both
			// are back (the consumer subscribed again), a message flows.
			deadline := time.Now().Add(brokertest.Wait)
			for {
				// Unhandled counts every publish no group took: one that
				// came before the consumer subscribed again is lost (the
				// new hub is empty) and must not end the wait for another.
				before := pub.Unhandled()
				_, err := pub.Publish(brokertest.Context(t), "EV", map[string]any{"n": 2})
				if err == nil && pub.Unhandled() == before {
					select {
					case m := <-got:
						if d, _ := m.Data(); d.(map[string]any)["n"] != int64(2) {
							t.Fatalf("got %v", d)
						}
						return
					case <-time.After(200 * time.Millisecond):
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("nothing flows after the restart: last publish error %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// TestIdleClientStaysConnected: a websocket client that receives nothing
// for longer than the liveness timeout keeps its connection: the hub's
// pings, which it answers, keep both sides alive.
func TestIdleClientStaysConnected(t *testing.T) {
	t.Parallel()
	_, addr := startHub(t)
	con := openClient(t, "ws://"+addr, core.Options{Identity: core.Identity{Group: brokertest.Unique("g"), Client: "idle"}})
	h, got := brokertest.Collect(t, true)
	brokertest.StartConsume(t, con, []string{"EV"}, h)
	session := con.Session()
	time.Sleep(wsPongWait + 2*wsPingEvery)
	pub := openClient(t, "ws://"+addr, core.Options{Identity: core.Identity{Client: "p"}})
	if _, err := pub.Publish(brokertest.Context(t), "EV", 1); err != nil {
		t.Fatal(err)
	}
	brokertest.Next(t, got)
	if s := con.Session(); s != session {
		t.Errorf("the idle client reconnected: session %s, then %s", session, s)
	}
}
