package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/redact"
)

// The Redis driver can inspect everything, pending messages included.
var (
	_ core.Inspector        = (*Broker)(nil)
	_ core.PendingInspector = (*Broker)(nil)
)

// inspectClient names the inspector in dead letters it writes by hand
// when the broker has no client name (Options.Identity.Client).
const inspectClient = "spectacles-inspector"

// Server implements core.Inspector: the server kind, address (without
// credentials), version and one PING's round trip.
func (b *Broker) Server(ctx context.Context) (core.ServerInfo, error) {
	info := core.ServerInfo{Kind: "redis", Address: redact.URL(describeAddrs(b.client))}
	if b.cluster {
		info.Kind = "redis-cluster"
	}
	start := time.Now()
	if err := b.client.Ping(ctx).Err(); err != nil {
		return info, fmt.Errorf("redis: ping: %w", err)
	}
	info.RoundTrip = time.Since(start)
	if text, err := b.client.Info(ctx, "server").Result(); err == nil {
		for line := range strings.SplitSeq(text, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
				info.Version = v
			}
		}
	}
	return info, nil
}

// Streams implements core.Inspector: every key of type stream (SCAN TYPE
// stream, on every master of a cluster), with XINFO STREAM, sorted by name.
func (b *Broker) Streams(ctx context.Context) ([]core.StreamInfo, error) {
	var (
		mu    sync.Mutex
		names []string
	)
	scan := func(ctx context.Context, node *goredis.Client) error {
		iter := node.ScanType(ctx, 0, "*", 1000, "stream").Iterator()
		var local []string
		for iter.Next(ctx) {
			local = append(local, iter.Val())
		}
		mu.Lock()
		names = append(names, local...)
		mu.Unlock()
		return iter.Err()
	}
	var err error
	switch c := b.client.(type) {
	case *goredis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *goredis.Client:
		err = scan(ctx, c)
	default:
		return nil, fmt.Errorf("redis: streams: %w for %T", core.ErrUnsupported, b.client)
	}
	if err != nil {
		return nil, fmt.Errorf("redis: scan streams: %w", err)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	pipe := b.client.Pipeline()
	cmds := make([]*goredis.XInfoStreamCmd, len(names))
	for i, n := range names {
		cmds[i] = pipe.XInfoStream(ctx, n)
	}
	if len(names) > 0 {
		_, _ = pipe.Exec(ctx)
	}
	out := make([]core.StreamInfo, 0, len(names))
	for i, n := range names {
		si, err := cmds[i].Result()
		if err != nil {
			if isNoSuchKey(err) {
				continue // deleted since the scan
			}
			return nil, fmt.Errorf("redis: xinfo stream %s: %w", n, err)
		}
		info := core.StreamInfo{Name: n, Length: si.Length, Groups: int(si.Groups),
			FirstID: si.FirstEntry.ID, LastID: si.LastGeneratedID}
		if info.FirstID == "" && (info.Length > 0 || info.Groups == 0) {
			// A server whose XINFO STREAM is partial (the embedded one
			// leaves out the first entry and the group count).
			b.completeStreamInfo(ctx, &info)
		}
		out = append(out, info)
	}
	return out, nil
}

// completeStreamInfo fills what a partial XINFO STREAM left out.
func (b *Broker) completeStreamInfo(ctx context.Context, info *core.StreamInfo) {
	if first, err := b.client.XRangeN(ctx, info.Name, "-", "+", 1).Result(); err == nil && len(first) == 1 {
		info.FirstID = first[0].ID
	}
	if gs, err := b.client.XInfoGroups(ctx, info.Name).Result(); err == nil {
		info.Groups = len(gs)
	}
}

func isNoSuchKey(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "no such key") || errors.Is(err, goredis.Nil))
}

// Groups implements core.Inspector with XINFO GROUPS.
func (b *Broker) Groups(ctx context.Context, stream string) ([]core.GroupInfo, error) {
	gs, err := b.client.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if isNoSuchKey(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("redis: xinfo groups %s: %w", stream, err)
	}
	out := make([]core.GroupInfo, len(gs))
	for i, g := range gs {
		out[i] = core.GroupInfo{Name: g.Name, Consumers: int(g.Consumers), Pending: g.Pending,
			LastDeliveredID: g.LastDeliveredID, Lag: g.Lag}
	}
	return out, nil
}

// Consumers implements core.Inspector with XINFO CONSUMERS.
func (b *Broker) Consumers(ctx context.Context, stream, group string) ([]core.ConsumerInfo, error) {
	cs, err := b.client.XInfoConsumers(ctx, stream, group).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: xinfo consumers %s %s: %w", stream, group, err)
	}
	out := make([]core.ConsumerInfo, len(cs))
	for i, c := range cs {
		out[i] = core.ConsumerInfo{Name: c.Name, Pending: c.Pending, Idle: c.Idle}
	}
	return out, nil
}

// Pending implements core.PendingInspector with XPENDING's extended form: one
// page, never the whole list.
func (b *Broker) Pending(ctx context.Context, stream, group string, q core.PendingQuery) ([]core.PendingEntry, error) {
	start, ok := afterID(q.After)
	if !ok {
		return nil, nil
	}
	count := int64(q.Count)
	if count <= 0 {
		count = 100
	}
	ps, err := b.client.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: stream, Group: group, Idle: q.MinIdle,
		Start: start, End: "+", Count: count, Consumer: q.Consumer}).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: xpending %s %s: %w", stream, group, err)
	}
	out := make([]core.PendingEntry, len(ps))
	for i, p := range ps {
		out[i] = core.PendingEntry{ID: p.ID, Consumer: p.Consumer, Idle: p.Idle, Deliveries: p.RetryCount}
	}
	return out, nil
}

// Entries implements core.Inspector with XRANGE / XREVRANGE and exclusive
// bounds: one page, never the whole stream.
func (b *Broker) Entries(ctx context.Context, stream string, q core.RangeQuery) ([]core.Entry, error) {
	count := int64(q.Count)
	if count <= 0 {
		count = 100
	}
	var (
		msgs []goredis.XMessage
		err  error
	)
	if q.Reverse {
		end, ok := beforeID(q.Before)
		if !ok {
			return nil, nil
		}
		msgs, err = b.client.XRevRangeN(ctx, stream, end, "-", count).Result()
	} else {
		start, ok := afterID(q.After)
		if !ok {
			return nil, nil
		}
		msgs, err = b.client.XRangeN(ctx, stream, start, "+", count).Result()
	}
	if err != nil {
		return nil, fmt.Errorf("redis: range %s: %w", stream, err)
	}
	out := make([]core.Entry, len(msgs))
	for i := range msgs {
		out[i] = entryOf(&msgs[i])
	}
	return out, nil
}

// afterID is the inclusive start of a range that begins after id ("-" for
// ""). Exclusive bounds are computed here rather than written "(id", which
// not every Redis-protocol server understands. ok is false past the last
// possible id.
func afterID(id string) (string, bool) {
	if id == "" {
		return "-", true
	}
	return nextStreamID(id)
}

// beforeID is the inclusive end of a range that ends before id ("+" for "").
func beforeID(id string) (string, bool) {
	if id == "" {
		return "+", true
	}
	ms, seq, err := parseStreamID(id)
	if err != nil {
		return "", false
	}
	switch {
	case seq > 0:
		return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq-1, 10), true
	case ms > 0:
		return strconv.FormatUint(ms-1, 10) + "-" + strconv.FormatUint(^uint64(0), 10), true
	}
	return "", false
}

func parseStreamID(id string) (ms, seq uint64, err error) {
	msPart, seqPart, ok := strings.Cut(id, "-")
	if !ok {
		seqPart = "0"
	}
	if ms, err = strconv.ParseUint(msPart, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stream id %q: %w", id, err)
	}
	if seq, err = strconv.ParseUint(seqPart, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stream id %q: %w", id, err)
	}
	return ms, seq, nil
}

func entryOf(m *goredis.XMessage) core.Entry {
	e := core.Entry{ID: m.ID}
	for k, v := range m.Values {
		s, _ := v.(string)
		if k == dataField {
			e.Raw = []byte(s)
			continue
		}
		if e.Headers == nil {
			e.Headers = map[string]string{}
		}
		e.Headers[k] = s
	}
	return e
}

// Ack implements core.PendingInspector with XACK.
func (b *Broker) Ack(ctx context.Context, stream, group string, ids ...string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	n, err := b.client.XAck(ctx, stream, group, ids...).Result()
	if err != nil {
		return 0, fmt.Errorf("redis: xack %s %s: %w", stream, group, err)
	}
	return int(n), nil
}

// Claim implements core.PendingInspector with XCLAIM … JUSTID: ownership moves
// without counting a delivery, so claiming by hand never pushes a message
// towards the dead-letter stream.
func (b *Broker) Claim(ctx context.Context, stream, group, consumer string, minIdle time.Duration, ids ...string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if err := (core.Identity{Group: group, Client: consumer}).Validate(); err != nil {
		return nil, fmt.Errorf("redis: claim: %w", err)
	}
	got, err := b.client.XClaimJustID(ctx, &goredis.XClaimArgs{Stream: stream, Group: group, Consumer: consumer,
		MinIdle: minIdle, Messages: ids}).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: xclaim %s %s: %w", stream, group, err)
	}
	return got, nil
}

// DeadLetter implements core.PendingInspector: each pending id is copied, with
// its delivery count and the reason, to the dead-letter stream and
// acknowledged, as the consumers do after too many deliveries. The dead
// letter's client header is this broker's client name: who moved it.
func (b *Broker) DeadLetter(ctx context.Context, stream, group, reason string, ids ...string) (int, error) {
	actor := b.cfg.Identity.Client
	if actor == "" {
		actor = inspectClient
	}
	moved := 0
	for _, id := range ids {
		msgs, err := b.client.XRangeN(ctx, stream, id, id, 1).Result()
		if err != nil {
			return moved, fmt.Errorf("redis: dead-letter %s %s: %w", stream, id, err)
		}
		var raw []byte
		if len(msgs) == 1 {
			raw = entryOf(&msgs[0]).Raw
		}
		ps, err := b.client.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: stream, Group: group, Start: id, End: id, Count: 1}).Result()
		if err != nil {
			// NOGROUP included: an unknown stream or group has nothing
			// pending, and nothing is written.
			return moved, fmt.Errorf("redis: dead-letter %s %s: %w", stream, id, err)
		}
		if len(ps) != 1 {
			continue // not pending for the group: nothing to move
		}
		deliveries := int(ps[0].RetryCount)
		if err := b.deadLetter(ctx, stream, id, raw, group, actor, reason, deliveries); err != nil {
			return moved, err
		}
		moved++
	}
	return moved, nil
}

// Requeue implements core.Inspector: each dead letter's original payload
// is added again to its event stream (every group of the event sees it
// again; Redis cannot deliver to one group only) and the dead letter is
// deleted, in one MULTI/EXEC where the keys allow.
func (b *Broker) Requeue(ctx context.Context, event string, ids ...string) ([]string, error) {
	dlq := core.DeadLetterEvent(event)
	var out []string
	for _, id := range ids {
		msgs, err := b.client.XRangeN(ctx, dlq, id, id, 1).Result()
		if err != nil {
			return out, fmt.Errorf("redis: requeue %s %s: %w", dlq, id, err)
		}
		if len(msgs) == 0 {
			return out, fmt.Errorf("redis: requeue: no dead letter %s in %s", id, dlq)
		}
		raw := entryOf(&msgs[0]).Raw
		add := &goredis.XAddArgs{Stream: event, Values: []any{dataField, raw}}
		var newID string
		if b.cluster {
			if newID, err = b.client.XAdd(ctx, add).Result(); err == nil {
				err = b.client.XDel(ctx, dlq, id).Err()
			}
		} else {
			pipe := b.client.TxPipeline()
			addCmd := pipe.XAdd(ctx, add)
			pipe.XDel(ctx, dlq, id)
			if _, err = pipe.Exec(ctx); err == nil {
				newID = addCmd.Val()
			}
		}
		if err != nil {
			return out, fmt.Errorf("redis: requeue %s %s: %w", dlq, id, err)
		}
		out = append(out, newID)
	}
	return out, nil
}
