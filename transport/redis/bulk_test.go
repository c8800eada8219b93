package redis

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
)

// bulkFixture publishes n messages to a new event; consumer "w1" of a new
// group reads the first half and "w2" the rest, without acking. It
// returns the ids of each.
func bulkFixture(t *testing.T, n int) (b *Broker, raw goredis.UniversalClient, ev, group string, w1, w2 []string) {
	t.Helper()
	url, _ := serverURL(t)
	raw = rawClient(t, url)
	ev = testEvent(t, raw)
	group = unique("g")
	b = openBroker(t, url, Config{Options: core.Options{Identity: core.Identity{Group: group, Client: "console"}}})
	ctx := ctxT(t)
	pipe := raw.Pipeline()
	for i := range n {
		pipe.XAdd(ctx, &goredis.XAddArgs{Stream: ev, Values: []any{dataField, strconv.Itoa(i)}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := raw.XGroupCreate(ctx, ev, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	read := func(consumer string, count int) []string {
		res, err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: consumer, Streams: []string{ev, ">"}, Count: int64(count)}).Result()
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range res[0].Messages {
			ids = append(ids, m.ID)
		}
		return ids
	}
	w1 = read("w1", n/2)
	w2 = read("w2", n-n/2)
	return b, raw, ev, group, w1, w2
}

// owners returns the owner of every pending id.
func owners(t *testing.T, raw goredis.UniversalClient, ev, group string) map[string]string {
	t.Helper()
	ps, err := raw.XPendingExt(ctxT(t), &goredis.XPendingExtArgs{Stream: ev, Group: group, Start: "-", End: "+", Count: 1 << 20}).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range ps {
		out[p.ID] = p.Consumer
	}
	return out
}

// age sets ids' idle time and delivery count (XCLAIM IDLE RETRYCOUNT),
// keeping their owner.
func age(t *testing.T, raw goredis.UniversalClient, ev, group, owner string, idle time.Duration, deliveries int, ids ...string) {
	t.Helper()
	args := []any{"XCLAIM", ev, group, owner, 0}
	for _, id := range ids {
		args = append(args, id)
	}
	args = append(args, "IDLE", idle.Milliseconds(), "RETRYCOUNT", deliveries, "JUSTID")
	if err := raw.Do(ctxT(t), args...).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestClaimPendingByConsumerAcrossPagesAndUndo(t *testing.T) {
	n := 2*bulkPage + 500
	b, raw, ev, group, w1, w2 := bulkFixture(t, n)
	ctx := ctxT(t)
	count, err := b.CountPending(ctx, ev, group, core.PendingRule{Consumer: "w1"})
	if err != nil || count != int64(len(w1)) {
		t.Fatalf("count w1 = %d, %v; want %d", count, err, len(w1))
	}
	var reports []core.BulkProgress
	res, err := b.ClaimPending(ctx, ev, group, "w3", core.PendingRule{Consumer: "w1"}, func(p core.BulkProgress) { reports = append(reports, p) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Count != len(w1) || len(res.Previous) != len(w1) {
		t.Fatalf("claimed %d (previous %d), want %d", res.Count, len(res.Previous), len(w1))
	}
	own := owners(t, raw, ev, group)
	for _, id := range w1 {
		if own[id] != "w3" {
			t.Fatalf("%s owned by %q after the claim", id, own[id])
		}
	}
	for _, id := range w2 {
		if own[id] != "w2" {
			t.Fatalf("%s of w2 owned by %q: the claim took what the rule did not match", id, own[id])
		}
	}
	for _, p := range res.Previous {
		if p.Consumer != "w1" {
			t.Fatalf("previous owner %+v", p)
		}
	}
	if len(reports) < 3 || reports[0].Total != int64(len(w1)) || reports[len(reports)-1].Done != len(w1) {
		t.Fatalf("progress %+v", reports)
	}

	// Undo: back to the previous owners, only what w3 still holds.
	ids := make([]string, len(res.Previous))
	for i, p := range res.Previous {
		ids[i] = p.ID
	}
	if _, err := b.Ack(ctx, ev, group, ids[0]); err != nil { // settled meanwhile
		t.Fatal(err)
	}
	back, err := b.ClaimPending(ctx, ev, group, "w1", core.PendingRule{Consumer: "w3", IDs: ids}, nil)
	if err != nil || back.Count != len(ids)-1 {
		t.Fatalf("undo claimed %d, %v; want %d", back.Count, err, len(ids)-1)
	}
	own = owners(t, raw, ev, group)
	if _, ok := own[ids[0]]; ok {
		t.Fatalf("undo brought back the acknowledged %s", ids[0])
	}
	for _, id := range ids[1:] {
		if own[id] != "w1" {
			t.Fatalf("%s owned by %q after the undo", id, own[id])
		}
	}
}

func TestBulkRulesIdleDeliveriesAndSubstring(t *testing.T) {
	b, raw, ev, group, w1, w2 := bulkFixture(t, 40)
	ctx := ctxT(t)
	age(t, raw, ev, group, "w1", time.Hour, 7, w1[:5]...)
	age(t, raw, ev, group, "w2", time.Hour, 1, w2[:3]...)

	n, err := b.CountPending(ctx, ev, group, core.PendingRule{MinIdle: 30 * time.Minute})
	if err != nil || n != 8 {
		t.Fatalf("idle ≥ 30m counts %d, %v; want 8", n, err)
	}
	n, err = b.CountPending(ctx, ev, group, core.PendingRule{MinDeliveries: 5})
	if err != nil || n != 5 {
		t.Fatalf("deliveries ≥ 5 counts %d, %v; want 5", n, err)
	}

	res, err := b.AckPending(ctx, ev, group, core.PendingRule{MinIdle: 30 * time.Minute, ConsumerContains: "2"}, nil)
	if err != nil || res.Count != 3 || res.Previous != nil {
		t.Fatalf("ack idle and consumer ~2: %+v, %v; want 3", res, err)
	}
	own := owners(t, raw, ev, group)
	for _, id := range w2[:3] {
		if _, ok := own[id]; ok {
			t.Fatalf("%s still pending", id)
		}
	}
	if len(own) != 37 {
		t.Fatalf("%d pending after acking 3 of 40", len(own))
	}

	res, err = b.DeadLetterPending(ctx, ev, group, "stuck", core.PendingRule{MinDeliveries: 5}, nil)
	if err != nil || res.Count != 5 {
		t.Fatalf("dead-letter deliveries ≥ 5: %+v, %v", res, err)
	}
	dl, err := b.Entries(ctx, core.DeadLetterEvent(ev), core.RangeQuery{Count: 100})
	if err != nil || len(dl) != 5 {
		t.Fatalf("dead letters %d, %v", len(dl), err)
	}
	t.Cleanup(func() { raw.Del(context.Background(), core.DeadLetterEvent(ev)) })
	for i, e := range dl {
		if e.Headers[core.HeaderReason] != "stuck" || e.Headers[core.HeaderDeliveries] != "7" || e.Headers[core.HeaderID] != w1[i] ||
			e.Headers[core.HeaderClient] != "console" {
			t.Fatalf("dead letter %d headers %v", i, e.Headers)
		}
	}
	if own := owners(t, raw, ev, group); len(own) != 32 {
		t.Fatalf("%d pending after moving 5 of 37", len(own))
	}
	if _, err := b.DeadLetterPending(ctx, core.DeadLetterEvent(ev), group, "x", core.PendingRule{}, nil); !errors.Is(err, core.ErrRejectDeadLetter) {
		t.Fatalf("dead-lettering dead letters: %v", err)
	}
}

// TestSettleChecksTheRuleWhenItActs: a message that changed owner between
// the page read and the act no longer matches and is left alone.
func TestSettleChecksTheRuleWhenItActs(t *testing.T) {
	b, raw, ev, group, w1, _ := bulkFixture(t, 10)
	ctx := ctxT(t)
	rule := core.PendingRule{Consumer: "w1"}
	// A live consumer takes two of w1's messages, and acks one, after the
	// bulk action read them.
	if err := raw.XClaim(ctx, &goredis.XClaimArgs{Stream: ev, Group: group, Consumer: "live", Messages: w1[:2]}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.XAck(ctx, ev, group, w1[2]).Err(); err != nil {
		t.Fatal(err)
	}
	got, err := b.settle(ctx, ev, group, "ack", "", rule, w1)
	if err != nil || len(got) != len(w1)-3 {
		t.Fatalf("settled %d, %v; want %d", len(got), err, len(w1)-3)
	}
	if own := owners(t, raw, ev, group); own[w1[0]] != "live" || own[w1[1]] != "live" {
		t.Fatalf("the live consumer's messages were acknowledged: %v", own)
	}
	got, err = b.settle(ctx, ev, group, "claim", "w9", core.PendingRule{Consumer: "w1", MinIdle: time.Hour}, w1)
	if err != nil || len(got) != 0 {
		t.Fatalf("claimed %v, %v: nothing is idle an hour", got, err)
	}
}

// TestBulkClaimWhileLiveConsumersAck runs a bulk claim of one consumer's
// messages while another goroutine acknowledges and claims messages of
// both: at the end no message of the other consumer moved to the target.
func TestBulkClaimWhileLiveConsumersAck(t *testing.T) {
	b, raw, ev, group, w1, w2 := bulkFixture(t, 3*bulkPage)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < len(w1) && i < len(w2); i += 7 {
			raw.XAck(ctx, ev, group, w1[i], w2[i])
			raw.XClaim(ctx, &goredis.XClaimArgs{Stream: ev, Group: group, Consumer: "w2", Messages: []string{w1[i+1]}})
		}
	})
	res, err := b.ClaimPending(ctx, ev, group, "target", core.PendingRule{Consumer: "w1"}, nil)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for id, owner := range owners(t, raw, ev, group) {
		if owner == "target" {
			moved++
			if !slices.Contains(w1, id) {
				t.Fatalf("%s, never w1's, went to target", id)
			}
		}
	}
	// The live side may ack or take back what target got, never more.
	if moved > res.Count || res.Count == 0 {
		t.Fatalf("target owns %d, claim reported %d", moved, res.Count)
	}
	for _, p := range res.Previous {
		if p.Consumer != "w1" {
			t.Fatalf("claimed from %q: %+v", p.Consumer, p)
		}
	}
}

func TestBulkStopsWhenCancelled(t *testing.T) {
	b, raw, ev, group, _, _ := bulkFixture(t, 3*bulkPage)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	res, err := b.AckPending(ctx, ev, group, core.PendingRule{}, func(p core.BulkProgress) {
		if p.Done > 0 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if res.Count != bulkPage {
		t.Fatalf("acked %d before stopping, want one page (%d)", res.Count, bulkPage)
	}
	if own := owners(t, raw, ev, group); len(own) != 2*bulkPage {
		t.Fatalf("%d pending after a cancelled ack, want %d", len(own), 2*bulkPage)
	}
	if _, err := b.ClaimPending(ctxT(t), ev, group, "w", core.PendingRule{IDs: []string{"nope"}}, nil); err == nil {
		t.Fatal("an id that is no stream id was accepted")
	}
}

// BenchmarkClaimPending100k claims 100,000 pending entries of one
// consumer to another with ClaimPending (pages of bulkPage, a script per
// page) and back, on the test server: claimed/s and the time of one
// 100,000-entry claim.
func BenchmarkClaimPending100k(b *testing.B) {
	const n = 100_000
	url, real := serverURL(b)
	if !real {
		b.Log("embedded server: figures are not Redis's")
	}
	raw := rawClient(b, url)
	ev := testEvent(b, raw)
	group := unique("g")
	br := openBroker(b, url, Config{Options: core.Options{Identity: core.Identity{Group: group, Client: "console"}}})
	ctx := context.Background()
	for i := 0; i < n; i += 10_000 {
		pipe := raw.Pipeline()
		for j := range 10_000 {
			pipe.XAdd(ctx, &goredis.XAddArgs{Stream: ev, Values: []any{dataField, strconv.Itoa(i + j)}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if err := raw.XGroupCreate(ctx, ev, group, "0").Err(); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i += 10_000 {
		if err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: "from", Streams: []string{ev, ">"}, Count: 10_000}).Err(); err != nil {
			b.Fatal(err)
		}
	}
	from, to := "from", "to"
	claimed := 0
	b.ResetTimer()
	for b.Loop() {
		res, err := br.ClaimPending(ctx, ev, group, to, core.PendingRule{Consumer: from}, nil)
		if err != nil || res.Count != n {
			b.Fatalf("claimed %d, %v", res.Count, err)
		}
		claimed += res.Count
		from, to = to, from
	}
	b.ReportMetric(float64(claimed)/b.Elapsed().Seconds(), "claimed/s")
}
