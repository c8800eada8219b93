package redis

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// replyEater is a brokertest.ReplyEater that swallows the reply to each
// connection's first XADD (or the trigger given to startReplyEaterOn)
// and then, when drop is set, closes the client's connection; otherwise
// it leaves the client waiting.
type replyEater struct {
	*brokertest.ReplyEater
	xadds *atomic.Int32
}

func startReplyEater(t *testing.T, target string, drop bool) *replyEater {
	t.Helper()
	return startReplyEaterOn(t, target, drop, "xadd")
}

// startReplyEaterOn starts a replyEater that swallows the reply to the
// first command containing trigger (lower case).
func startReplyEaterOn(t *testing.T, target string, drop bool, trigger string) *replyEater {
	t.Helper()
	p := brokertest.StartReplyEater(t, target, brokertest.EaterConfig{
		Triggers: []string{trigger}, Drop: drop, Settle: 100 * time.Millisecond,
	})
	return &replyEater{ReplyEater: p, xadds: &p.Eaten}
}

func (p *replyEater) addr() string { return p.Addr() }

// redisAddr returns host:port of the test server.
func redisAddr(t *testing.T) string {
	t.Helper()
	url, _ := serverURL(t)
	o, err := parseOne(url)
	if err != nil {
		t.Fatal(err)
	}
	return o.Addr
}

// uncertainBroker is a broker over a client of addr with no retries (so
// that one XADD is sent once) and short timeouts.
func uncertainBroker(t *testing.T, o goredis.Options) *Broker {
	t.Helper()
	o.MaxRetries = -1
	if o.ReadTimeout == 0 {
		o.ReadTimeout = 500 * time.Millisecond
	}
	o.DialTimeout = time.Second
	client := goredis.NewClient(&o)
	t.Cleanup(func() { _ = client.Close() })
	b, err := NewWithClient(client, Config{Options: core.Options{CallTimeout: 3 * time.Second, Logger: testLogger(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestPublishUncertainAfterWrite: when the connection fails after the
// XADD was written, Publish, PublishBatch and Call say the message may
// have been published (it was).
func TestPublishUncertainAfterWrite(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	raw := rawClient(t, addr)
	for _, tc := range []struct {
		name string
		drop bool // the connection is closed; else the reply never comes
	}{{"ConnectionDropped", true}, {"NoReply", false}} {
		t.Run(tc.name, func(t *testing.T) {
			p := startReplyEater(t, addr, tc.drop)
			b := uncertainBroker(t, goredis.Options{Addr: p.addr()})
			ops := map[string]func(ev string) error{
				"Publish": func(ev string) error {
					_, err := b.Publish(ctxT(t), ev, "x")
					return err
				},
				"PublishBatch": func(ev string) error {
					_, err := b.PublishBatch(ctxT(t), []core.Outgoing{{Event: ev, Data: "x"}})
					return err
				},
				"Call": func(ev string) error {
					_, err := b.Call(ctxT(t), ev, "x")
					return err
				},
				"PublishCancelled": func(ev string) error {
					// The caller's deadline comes first, while the reply is
					// awaited.
					ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
					defer cancel()
					_, err := b.Publish(ctx, ev, "x")
					return err
				},
			}
			for name, op := range ops {
				ev := testEvent(t, raw)
				err := op(ev)
				if !errors.Is(err, core.ErrPublishUncertain) {
					t.Errorf("%s: err = %v, want ErrPublishUncertain", name, err)
				}
				if n := raw.XLen(ctxT(t), ev).Val(); n != 1 {
					t.Errorf("%s: %d entries, want the 1 that was written", name, n)
				}
				if name == "PublishCancelled" && !tc.drop && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%s: err = %v, want it to wrap DeadlineExceeded", name, err)
				}
			}
			if p.xadds.Load() == 0 {
				t.Error("the proxy never saw an XADD")
			}
		})
	}
}

// TestPublishErrorBeforeSendIsCertain: when nothing was sent (no server,
// no free connection), the error does not wrap ErrPublishUncertain.
func TestPublishErrorBeforeSendIsCertain(t *testing.T) {
	t.Parallel()
	t.Run("DialRefused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := l.Addr().String()
		_ = l.Close()
		b := uncertainBroker(t, goredis.Options{Addr: closed})
		_, err = b.Publish(ctxT(t), "never", "x")
		if err == nil || errors.Is(err, core.ErrPublishUncertain) {
			t.Errorf("publish to a closed port: err = %v, want an error without ErrPublishUncertain", err)
		}
		_, err = b.PublishBatch(ctxT(t), []core.Outgoing{{Event: "never", Data: "x"}})
		if err == nil || errors.Is(err, core.ErrPublishUncertain) {
			t.Errorf("batch publish to a closed port: err = %v, want an error without ErrPublishUncertain", err)
		}
	})
	t.Run("PoolTimeout", func(t *testing.T) {
		addr := redisAddr(t)
		raw := rawClient(t, addr)
		ev := testEvent(t, raw)
		b := uncertainBroker(t, goredis.Options{Addr: addr, PoolSize: 1, PoolTimeout: 200 * time.Millisecond})
		conn := b.client.(*goredis.Client).Conn() // takes the only connection
		defer conn.Close()
		if err := conn.Ping(ctxT(t)).Err(); err != nil {
			t.Fatal(err)
		}
		_, err := b.Publish(ctxT(t), ev, "x")
		if err == nil || errors.Is(err, core.ErrPublishUncertain) {
			t.Errorf("publish with no free connection: err = %v, want an error without ErrPublishUncertain", err)
		}
		if !strings.Contains(err.Error(), "pool") {
			t.Errorf("err = %v, want a pool timeout", err)
		}
		if n := raw.XLen(ctxT(t), ev).Val(); n != 0 {
			t.Errorf("%d entries written, want 0", n)
		}
	})
	t.Run("ServerError", func(t *testing.T) {
		addr := redisAddr(t)
		raw := rawClient(t, addr)
		key := testEvent(t, raw)
		if err := raw.Set(ctxT(t), key, "not a stream", 0).Err(); err != nil {
			t.Fatal(err)
		}
		b := uncertainBroker(t, goredis.Options{Addr: addr})
		_, err := b.Publish(ctxT(t), key, "x")
		if err == nil || errors.Is(err, core.ErrPublishUncertain) {
			t.Errorf("publish to a string key: err = %v, want WRONGTYPE without ErrPublishUncertain", err)
		}
	})
}
