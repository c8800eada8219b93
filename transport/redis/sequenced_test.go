package redis

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// sequencedServers returns the servers PublishSequenced is tested on: the
// shared real Redis (when there is one) and an embedded server.
func sequencedServers(t *testing.T) map[string]string {
	t.Helper()
	servers := map[string]string{"Embedded": startEmbedded(t).URL()}
	if url, real := serverURL(t); real {
		servers["Redis"] = url
	}
	return servers
}

func seqBatch(mark, event, session string, from, to int64) []core.SequencedOutgoing {
	var out []core.SequencedOutgoing
	for s := from; s <= to; s++ {
		out = append(out, core.SequencedOutgoing{
			Outgoing: core.Outgoing{Event: event, Data: fmt.Sprintf("%s/%d", session, s)},
			Mark:     mark, Session: session, Seq: s,
		})
	}
	return out
}

// streamData returns the decoded payloads of stream, oldest first.
func streamData(t *testing.T, c goredis.UniversalClient, stream string) []string {
	t.Helper()
	msgs, err := c.XRange(ctxT(t), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(msgs))
	for i, m := range msgs {
		var s string
		if err := (core.Msgpack{}).Unmarshal([]byte(m.Values[dataField].(string)), &s); err != nil {
			t.Fatal(err)
		}
		out[i] = s
	}
	return out
}

// skipped counts the ids that say "already published".
func skipped(ids []string) int {
	n := 0
	for _, id := range ids {
		if id == "" {
			n++
		}
	}
	return n
}

// TestPublishSequenced: a retried batch adds nothing twice, an overlapping
// replay adds only what is new, a new session starts over, several marks
// share a batch, a message without a mark is always added, and an error in the middle of a batch leaves the marks of
// what it published, on a real Redis and on the embedded server.
func TestPublishSequenced(t *testing.T) {
	t.Parallel()
	for name, url := range sequencedServers(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			raw := rawClient(t, url)
			b := openBroker(t, url, Config{Options: core.Options{Logger: testLogger(t)}})
			evA, evB := testEvent(t, raw), testEvent(t, raw)
			markA, markB := unique("spectacles-test-mark"), unique("spectacles-test-mark")
			deleteKeys(t, raw, markA, markB)

			// Two shards in one batch, interleaved.
			var batch []core.SequencedOutgoing
			a, bb := seqBatch(markA, evA, "s1", 1, 5), seqBatch(markB, evB, "t1", 1, 3)
			for i := range a {
				batch = append(batch, a[i])
				if i < len(bb) {
					batch = append(batch, bb[i])
				}
			}
			ids, err := b.PublishSequenced(ctxT(t), batch)
			if err != nil || len(ids) != len(batch) || skipped(ids) != 0 {
				t.Fatalf("first publish: ids %q, err %v; want %d new ids", ids, err, len(batch))
			}
			// The same batch again, as a retry after an uncertain error.
			ids, err = b.PublishSequenced(ctxT(t), batch)
			if err != nil || len(ids) != len(batch) || skipped(ids) != len(batch) {
				t.Fatalf("retry: ids %q, err %v; want %d skipped", ids, err, len(batch))
			}
			// A replay overlapping what was published: 4 and 5 were.
			ids, err = b.PublishSequenced(ctxT(t), seqBatch(markA, evA, "s1", 4, 8))
			if err != nil || len(ids) != 5 || ids[0] != "" || ids[1] != "" || skipped(ids) != 2 {
				t.Fatalf("overlapping replay: ids %q, err %v; want 4 and 5 skipped, 6 to 8 new", ids, err)
			}
			// A new session numbers from 1 again.
			ids, err = b.PublishSequenced(ctxT(t), seqBatch(markA, evA, "s2", 1, 2))
			if err != nil || len(ids) != 2 || skipped(ids) != 0 {
				t.Fatalf("new session: ids %q, err %v; want 2 new ids", ids, err)
			}
			want := []string{"s1/1", "s1/2", "s1/3", "s1/4", "s1/5", "s1/6", "s1/7", "s1/8", "s2/1", "s2/2"}
			if got := streamData(t, raw, evA); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("stream A = %v, want %v", got, want)
			}
			if got := streamData(t, raw, evB); strings.Join(got, " ") != "t1/1 t1/2 t1/3" {
				t.Errorf("stream B = %v, want t1/1 t1/2 t1/3", got)
			}
			if v := raw.Get(ctxT(t), markA).Val(); v != "s2:2" {
				t.Errorf("mark A = %q, want s2:2", v)
			}
			if ttl := raw.TTL(ctxT(t), markA).Val(); ttl <= 0 || ttl > MarkTTL {
				t.Errorf("mark A expires in %v, want (0, %v]", ttl, MarkTTL)
			}

			// An error in the middle: the third message's stream is a string.
			bad := testEvent(t, raw)
			if err := raw.Set(ctxT(t), bad, "not a stream", 0).Err(); err != nil {
				t.Fatal(err)
			}
			mixed := seqBatch(markB, evB, "t1", 4, 5)
			mixed = append(mixed, seqBatch(markB, bad, "t1", 6, 6)...)
			mixed = append(mixed, seqBatch(markB, evB, "t1", 7, 7)...)
			ids, err = b.PublishSequenced(ctxT(t), mixed)
			if err == nil || errors.Is(err, core.ErrPublishUncertain) || len(ids) != 2 || skipped(ids) != 0 {
				t.Fatalf("batch with a bad stream: ids %q, err %v; want 2 ids and a certain error", ids, err)
			}
			if !strings.Contains(err.Error(), "WRONGTYPE") {
				t.Errorf("err = %v, want WRONGTYPE", err)
			}
			if err := raw.Del(ctxT(t), bad).Err(); err != nil {
				t.Fatal(err)
			}
			ids, err = b.PublishSequenced(ctxT(t), mixed)
			if err != nil || len(ids) != 4 || ids[0] != "" || ids[1] != "" || skipped(ids) != 2 {
				t.Fatalf("retry after the error: ids %q, err %v; want the first 2 skipped", ids, err)
			}
			// A message without a mark is published every time.
			free := seqBatch("", evB, "t1", 7, 7)
			for range 2 {
				if ids, err := b.PublishSequenced(ctxT(t), free); err != nil || len(ids) != 1 || ids[0] == "" {
					t.Fatalf("message without a mark: ids %q, err %v; want it published", ids, err)
				}
			}
			if got := streamData(t, raw, evB); strings.Join(got, " ") != "t1/1 t1/2 t1/3 t1/4 t1/5 t1/7 t1/7 t1/7" {
				t.Errorf("stream B = %v, want t1/1 to t1/5, then t1/7 three times", got)
			}
			if v := raw.Get(ctxT(t), markB).Val(); v != "t1:7" {
				t.Errorf("mark B = %q, want t1:7", v)
			}
		})
	}
}

// TestPublishSequencedTrims: the broker's MaxLen and MinIDAge trim the
// streams a sequenced publish adds to.
func TestPublishSequencedTrims(t *testing.T) {
	t.Parallel()
	for name, url := range sequencedServers(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			raw := rawClient(t, url)
			for _, cfg := range []Config{{MaxLen: 1}, {MinIDAge: time.Millisecond}} {
				ev := testEvent(t, raw)
				mark := unique("spectacles-test-mark")
				deleteKeys(t, raw, mark)
				cfg.Options = core.Options{Logger: testLogger(t)}
				b := openBroker(t, url, cfg)
				// Approximate trimming removes whole nodes of 100 entries.
				for i := int64(0); i < 5; i++ {
					if _, err := b.PublishSequenced(ctxT(t), seqBatch(mark, ev, "s", 100*i+1, 100*i+100)); err != nil {
						t.Fatal(err)
					}
					time.Sleep(2 * time.Millisecond)
				}
				if n := raw.XLen(ctxT(t), ev).Val(); n >= 500 {
					t.Errorf("MaxLen %d, MinIDAge %v: %d entries, want the stream trimmed", cfg.MaxLen, cfg.MinIDAge, n)
				}
			}
		})
	}
}

// TestPublishSequencedUncertainRetry: the reply to the script is lost
// after Redis ran it; the error says the batch may be published, and the
// retry adds nothing twice.
func TestPublishSequencedUncertainRetry(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	raw := rawClient(t, addr)
	direct := uncertainBroker(t, goredis.Options{Addr: addr})
	ev := testEvent(t, raw)
	mark := unique("spectacles-test-mark")
	deleteKeys(t, raw, mark)
	// Load the script, so that the proxy sees EVALSHA.
	if _, err := direct.PublishSequenced(ctxT(t), seqBatch(mark, ev, "s", 1, 1)); err != nil {
		t.Fatal(err)
	}
	p := startReplyEaterOn(t, addr, true, "evalsha")
	b := uncertainBroker(t, goredis.Options{Addr: p.addr()})
	batch := seqBatch(mark, ev, "s", 1, 4)
	if _, err := b.PublishSequenced(ctxT(t), batch); !errors.Is(err, core.ErrPublishUncertain) {
		t.Fatalf("err = %v, want ErrPublishUncertain", err)
	}
	if p.xadds.Load() == 0 {
		t.Fatal("the proxy never saw the script")
	}
	ids, err := direct.PublishSequenced(ctxT(t), batch)
	if err != nil || skipped(ids) != 4 {
		t.Fatalf("retry: ids %q, err %v; want all 4 skipped", ids, err)
	}
	if got := streamData(t, raw, ev); strings.Join(got, " ") != "s/1 s/2 s/3 s/4" {
		t.Errorf("stream = %v, want s/1 to s/4 once each", got)
	}
}

// TestPublishSequencedCluster: on a Redis Cluster the broker says it
// cannot, and publishes nothing.
func TestPublishSequencedCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	url, ok := startCluster(t)
	if !ok {
		if brokertest.InCI() {
			t.Fatal("CI=true and redis-server or redis-cli is missing")
		}
		t.Skip("redis-server or redis-cli is missing")
	}
	raw := rawClient(t, url)
	b := openBroker(t, url, Config{Options: core.Options{Logger: testLogger(t)}})
	ev := testEvent(t, raw)
	ids, err := b.PublishSequenced(ctxT(t), seqBatch("spectacles-test-mark", ev, "s", 1, 2))
	if !errors.Is(err, core.ErrUnsupported) || len(ids) != 0 {
		t.Errorf("ids %q, err %v; want ErrUnsupported", ids, err)
	}
	if n := raw.XLen(ctxT(t), ev).Val(); n != 0 {
		t.Errorf("%d entries, want none", n)
	}
}

// BenchmarkPublishBatchOrSequenced compares one shard's batches of 64
// dispatch-sized messages published plain (PublishBatch) and sequenced
// (PublishSequenced), with MaxLen trimming as the gateway runs.
func BenchmarkPublishBatchOrSequenced(b *testing.B) {
	url, _ := serverURL(b)
	raw := rawClient(b, url)
	br := openBroker(b, url, Config{MaxLen: 20000, Options: core.Options{Logger: testLogger(b)}})
	payload := core.Raw(make([]byte, 400))
	const size = 64
	b.Run("Batch", func(b *testing.B) {
		ev := testEvent(b, raw)
		msgs := make([]core.Outgoing, size)
		for i := range msgs {
			msgs[i] = core.Outgoing{Event: ev, Data: payload}
		}
		b.ResetTimer()
		for b.Loop() {
			if _, err := br.PublishBatch(ctxT(b), msgs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("Sequenced", func(b *testing.B) {
		ev := testEvent(b, raw)
		mark := unique("spectacles-test-mark")
		deleteKeys(b, raw, mark)
		session := "0123456789abcdef0123456789abcdef"
		msgs := make([]core.SequencedOutgoing, size)
		seq := int64(0)
		b.ResetTimer()
		for b.Loop() {
			for i := range msgs {
				seq++
				msgs[i] = core.SequencedOutgoing{Outgoing: core.Outgoing{Event: ev, Data: payload}, Mark: mark, Session: session, Seq: seq}
			}
			if _, err := br.PublishSequenced(ctxT(b), msgs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "msgs/s")
	})
}
