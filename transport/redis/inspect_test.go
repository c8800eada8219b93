package redis

import (
	"context"
	"errors"
	"slices"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
)

// pendingFixture publishes n messages to a new event and has consumer
// "worker" of a new group read them without acking.
func pendingFixture(t *testing.T, n int) (b *Broker, ev, group string, ids []string, real bool) {
	t.Helper()
	url, real := serverURL(t)
	raw := rawClient(t, url)
	ev = testEvent(t, raw)
	group = unique("g")
	b = openBroker(t, url, Config{Options: core.Options{Identity: core.Identity{Group: group, Client: "console"}}})
	ctx := ctxT(t)
	for i := range n {
		id, err := b.Publish(ctx, ev, map[string]any{"i": int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := raw.XGroupCreate(ctx, ev, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: "worker", Streams: []string{ev, ">"}, Count: int64(n)}).Err(); err != nil {
		t.Fatal(err)
	}
	return b, ev, group, ids, real
}

func TestInspectorStreamsGroupsConsumers(t *testing.T) {
	b, ev, group, _, real := pendingFixture(t, 5) // the embedded server's XINFO lag is not exact
	ctx := ctxT(t)
	streams, err := b.Streams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(streams, func(s core.StreamInfo) bool { return s.Name == ev })
	if i < 0 {
		t.Fatalf("%s not among %d streams", ev, len(streams))
	}
	if s := streams[i]; s.Length != 5 || s.Groups != 1 || s.FirstID == "" || s.LastID == "" {
		t.Errorf("stream info %+v", s)
	}
	groups, err := b.Groups(ctx, ev)
	if err != nil || len(groups) != 1 {
		t.Fatalf("groups %v %v", groups, err)
	}
	if g := groups[0]; g.Name != group || g.Pending != 5 || g.Consumers != 1 || (real && g.Lag != 0) {
		t.Errorf("group info %+v", g)
	}
	cons, err := b.Consumers(ctx, ev, group)
	if err != nil || len(cons) != 1 || cons[0].Name != "worker" || cons[0].Pending != 5 {
		t.Fatalf("consumers %+v %v", cons, err)
	}
	info, err := b.Server(ctx)
	if err != nil || info.RoundTrip <= 0 || info.Address == "" {
		t.Errorf("server %+v %v", info, err)
	}
}

func TestInspectorPagesPendingAndEntries(t *testing.T) {
	b, ev, group, ids, _ := pendingFixture(t, 25)
	ctx := ctxT(t)
	var seen []string
	after := ""
	for {
		page, err := b.Pending(ctx, ev, group, core.PendingQuery{After: after, Count: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 10 {
			t.Fatalf("page of %d", len(page))
		}
		for _, p := range page {
			if p.Consumer != "worker" || p.Deliveries != 1 {
				t.Errorf("pending %+v", p)
			}
			seen = append(seen, p.ID)
		}
		after = page[len(page)-1].ID
	}
	if !slices.Equal(seen, ids) {
		t.Fatalf("paged %d pending ids, want %d in order", len(seen), len(ids))
	}
	first, err := b.Entries(ctx, ev, core.RangeQuery{Count: 10})
	if err != nil || len(first) != 10 || first[0].ID != ids[0] {
		t.Fatalf("first page %v", err)
	}
	next, _ := b.Entries(ctx, ev, core.RangeQuery{After: first[9].ID, Count: 10})
	if next[0].ID != ids[10] {
		t.Errorf("second page starts at %s, want %s", next[0].ID, ids[10])
	}
	newest, _ := b.Entries(ctx, ev, core.RangeQuery{Reverse: true, Count: 3})
	if newest[0].ID != ids[24] || newest[2].ID != ids[22] {
		t.Errorf("reverse page %v", newest)
	}
	older, _ := b.Entries(ctx, ev, core.RangeQuery{Reverse: true, Before: newest[2].ID, Count: 1})
	if older[0].ID != ids[21] {
		t.Errorf("reverse before: %s", older[0].ID)
	}
	var v map[string]any
	if err := (core.Msgpack{}).Unmarshal(first[3].Raw, &v); err != nil || v["i"] != int64(3) {
		t.Errorf("payload %v %v", v, err)
	}
}

func TestInspectorAckClaimDeadLetterRequeue(t *testing.T) {
	b, ev, group, ids, real := pendingFixture(t, 6)
	ctx := ctxT(t)
	if n, err := b.Ack(ctx, ev, group, ids[0], ids[1]); err != nil || n != 2 {
		t.Fatalf("ack: %d %v", n, err)
	}
	claimed, err := b.Claim(ctx, ev, group, "rescuer", 0, ids[2], ids[3])
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	page, _ := b.Pending(ctx, ev, group, core.PendingQuery{Count: 10})
	owners := map[string]string{}
	for _, p := range page {
		owners[p.ID] = p.Consumer
		if p.ID == ids[2] && p.Deliveries != 1 && real { // the embedded server counts JUSTID claims
			t.Errorf("a claim by hand counted a delivery: %d", p.Deliveries)
		}
	}
	if len(page) != 4 || owners[ids[2]] != "rescuer" || owners[ids[4]] != "worker" {
		t.Fatalf("pending after ack and claim: %v", owners)
	}
	if n, err := b.DeadLetter(ctx, ev, group, "poison, moved by hand", ids[4]); err != nil || n != 1 {
		t.Fatalf("dead-letter: %d %v", n, err)
	}
	if n, _ := b.DeadLetter(ctx, ev, group, "again", ids[0]); n != 0 {
		t.Error("an acknowledged message was dead-lettered")
	}
	dl, err := b.Entries(ctx, core.DeadLetterEvent(ev), core.RangeQuery{Count: 10})
	if err != nil || len(dl) != 1 {
		t.Fatalf("dead letters %v %v", dl, err)
	}
	h := dl[0].Headers
	if h[core.HeaderID] != ids[4] || h[core.HeaderReason] != "poison, moved by hand" || h[core.HeaderGroup] != group || h[core.HeaderDeliveries] != "1" {
		t.Errorf("dead letter headers %v", h)
	}
	newIDs, err := b.Requeue(ctx, ev, dl[0].ID)
	if err != nil || len(newIDs) != 1 {
		t.Fatalf("requeue: %v %v", newIDs, err)
	}
	if left, _ := b.Entries(ctx, core.DeadLetterEvent(ev), core.RangeQuery{Count: 10}); len(left) != 0 {
		t.Error("the dead letter is still there after requeue")
	}
	again, _ := b.Entries(ctx, ev, core.RangeQuery{After: ids[5], Count: 10})
	orig, _ := b.Entries(ctx, ev, core.RangeQuery{After: ids[3], Count: 1})
	if len(again) != 1 || string(again[0].Raw) != string(orig[0].Raw) {
		t.Errorf("requeued payload differs")
	}
	if _, err := b.Requeue(ctx, ev, "1-1"); err == nil {
		t.Error("requeue of a missing dead letter succeeded")
	}
	if _, err := b.Claim(ctx, ev, group, "bad name", 0, ids[5]); !errors.Is(err, core.ErrInvalidIdentity) {
		t.Errorf("claim to an invalid consumer name: %v", err)
	}
}

func TestInspectorOnMissingStream(t *testing.T) {
	url, _ := serverURL(t)
	b := openBroker(t, url, Config{})
	ctx := context.Background()
	if gs, err := b.Groups(ctx, unique("missing")); err != nil || len(gs) != 0 {
		t.Errorf("groups of a missing stream: %v %v", gs, err)
	}
	if es, err := b.Entries(ctx, unique("missing"), core.RangeQuery{}); err != nil || len(es) != 0 {
		t.Errorf("entries of a missing stream: %v %v", es, err)
	}
}

// A dead-letter move naming a group that does not exist is an error and
// writes nothing (it once reported "moved 1 of 1" and added an empty dead
// letter).
func TestInspectorDeadLetterUnknownGroupWritesNothing(t *testing.T) {
	b, ev, _, ids, _ := pendingFixture(t, 1)
	ctx := ctxT(t)
	for _, tc := range []struct{ stream, group string }{
		{ev, unique("nogroup")},
		{ev + ":nostream", unique("nogroup")},
	} {
		n, err := b.DeadLetter(ctx, tc.stream, tc.group, "by hand", ids[0])
		if err == nil || n != 0 {
			t.Errorf("DeadLetter(%s, %s) = %d, %v; want 0 and an error", tc.stream, tc.group, n, err)
		}
		if l, err := b.client.XLen(ctx, core.DeadLetterEvent(tc.stream)).Result(); err != nil || l != 0 {
			t.Errorf("%s holds %d entries (%v); want none", core.DeadLetterEvent(tc.stream), l, err)
		}
	}
}
