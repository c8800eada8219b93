package redis

import (
	"errors"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
)

// batchConnBroker is a broker over a client of addr with maxRetries (-1:
// none) whose PublishBatch connection has been made, and a function that
// breaks that connection: the server kills it (CLIENT KILL) when it is a
// real Redis, else (miniredis has no CLIENT KILL) its socket is closed
// under it.
func batchConnBroker(t *testing.T, maxRetries int) (b *Broker, raw goredis.UniversalClient, ev string, kill func()) {
	t.Helper()
	url, real := serverURL(t)
	o, err := parseOne(url)
	if err != nil {
		t.Fatal(err)
	}
	addr := o.Addr
	raw = rawClient(t, addr)
	ev = testEvent(t, raw)
	client := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: maxRetries})
	t.Cleanup(func() { _ = client.Close() })
	b, err = NewWithClient(client, Config{Options: core.Options{Logger: testLogger(t)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if _, err := b.PublishBatch(ctxT(t), []core.Outgoing{{Event: ev, Data: "first"}}); err != nil {
		t.Fatal(err)
	}
	p := b.batchConns
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) != 1 || p.open != 1 {
		t.Fatalf("after one batch: %d free, %d open; want the batch's own connection kept", len(p.free), p.open)
	}
	c := p.free[0]
	return b, raw, ev, func() {
		t.Helper()
		if !real {
			_ = c.rc.nc.Close()
			return
		}
		if err := raw.ClientKillByFilter(ctxT(t), "ID", strconv.FormatInt(c.rc.id, 10)).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// A PublishBatch connection that the server closed while it sat in the
// free list is found broken by the next batch; the batch then goes through
// go-redis, which retries on a connection of its own: every message is
// added once, and the broken connection is closed.
func TestPublishBatchOwnConnectionBrokenFallsBack(t *testing.T) {
	t.Parallel()
	b, raw, ev, kill := batchConnBroker(t, 0)
	kill()
	ids, err := b.PublishBatch(ctxT(t), []core.Outgoing{{Event: ev, Data: "a"}, {Event: ev, Data: "b"}, {Event: ev, Data: "c"}})
	if err != nil || len(ids) != 3 {
		t.Fatalf("batch after the connection was killed: %d ids, err %v; want 3 and none", len(ids), err)
	}
	if n := raw.XLen(ctxT(t), ev).Val(); n != 4 {
		t.Errorf("%d entries, want 4 (each message once)", n)
	}
	msgs := raw.XRange(ctxT(t), ev, "-", "+").Val()
	for i, m := range msgs[1:] {
		if m.ID != ids[i] {
			t.Errorf("entry %d is %s, PublishBatch said %s", i+1, m.ID, ids[i])
		}
	}
	p := b.batchConns
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open != 0 || len(p.free) != 0 {
		t.Errorf("%d open, %d free; want the killed connection closed", p.open, len(p.free))
	}
}

// With go-redis's retries turned off, a batch whose own connection broke
// is not sent again: the error says the messages may have been published.
func TestPublishBatchOwnConnectionBrokenNoRetries(t *testing.T) {
	t.Parallel()
	b, raw, ev, kill := batchConnBroker(t, -1)
	kill()
	_, err := b.PublishBatch(ctxT(t), []core.Outgoing{{Event: ev, Data: "a"}})
	if !errors.Is(err, core.ErrPublishUncertain) {
		t.Errorf("err = %v, want ErrPublishUncertain", err)
	}
	// The next batch dials a new connection.
	if ids, err := b.PublishBatch(ctxT(t), []core.Outgoing{{Event: ev, Data: "b"}}); err != nil || len(ids) != 1 {
		t.Errorf("the next batch: %d ids, err %v", len(ids), err)
	}
	// The connection was gone before "a" was written: only "first" and "b".
	if n := raw.XLen(ctxT(t), ev).Val(); n != 2 {
		t.Errorf("%d entries, want 2", n)
	}
}

// A PublishBatch connection that sat in the free list for batchIdleCheck
// is checked with a PING first: one the server closed meanwhile is
// replaced by a new one before the batch is written.
func TestPublishBatchChecksIdleConnection(t *testing.T) {
	t.Parallel()
	b, raw, ev, kill := batchConnBroker(t, -1) // no retries: a write to the dead connection would fail
	p := b.batchConns
	p.mu.Lock()
	old := p.free[0]
	p.mu.Unlock()
	kill()
	time.Sleep(batchIdleCheck + 100*time.Millisecond)
	if ids, err := b.PublishBatch(ctxT(t), []core.Outgoing{{Event: ev, Data: "a"}}); err != nil || len(ids) != 1 {
		t.Fatalf("batch after an idle second: %d ids, err %v", len(ids), err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open != 1 || len(p.free) != 1 || p.free[0] == old {
		t.Errorf("%d open, %d free, same connection %v; want the dead one replaced", p.open, len(p.free), len(p.free) == 1 && p.free[0] == old)
	}
	if n := raw.XLen(ctxT(t), ev).Val(); n != 2 {
		t.Errorf("%d entries, want 2", n)
	}
}
