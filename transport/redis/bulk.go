package redis

import (
	"context"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
)

// The Redis driver settles pending messages by rule, in batches.
var _ core.BulkPendingInspector = (*Broker)(nil)

// bulkPage is how many pending entries one XPENDING page and one script
// call of a bulk action cover: large enough that 100,000 entries take a
// hundred round trips, small enough that one script call blocks the
// server for about a millisecond.
const bulkPage = 1000

// settleScript checks each id of a page against a rule and, atomically
// with that check, acknowledges the ones that match (ARGV[2] "ack") or
// claims them for ARGV[3] without counting a delivery ("claim"): a message
// that a live consumer acknowledged or took over since the page was read
// no longer matches and is left alone. It returns, for each message it
// settled, {id, previous owner, idle ms, deliveries}.
//
// KEYS[1] is the stream; ARGV is group, op, target, consumer (exact, ""
// any), consumer substring ("" any), minimum idle ms, minimum deliveries,
// then the ids.
var settleScript = goredis.NewScript(`
local group, op, target, consumer, contains = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local minIdle, minDeliveries = tonumber(ARGV[6]), tonumber(ARGV[7])
local ids, out = {}, {}
for i = 8, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], group, ARGV[i], ARGV[i], 1)
  if #p == 1 then
    local owner, idle, deliveries = p[1][2], tonumber(p[1][3]), tonumber(p[1][4])
    if (consumer == '' or owner == consumer) and (contains == '' or string.find(owner, contains, 1, true))
        and idle >= minIdle and deliveries >= minDeliveries then
      ids[#ids + 1] = ARGV[i]
      out[#out + 1] = {ARGV[i], owner, idle, deliveries}
    end
  end
end
if #ids == 0 then
  return {}
end
if op == 'ack' then
  redis.call('XACK', KEYS[1], group, unpack(ids))
  return out
end
local args = {'XCLAIM', KEYS[1], group, target, '0'}
for _, id in ipairs(ids) do
  args[#args + 1] = id
end
args[#args + 1] = 'JUSTID'
local got = {}
for _, id in ipairs(redis.call(unpack(args))) do
  got[id] = true
end
local claimed = {}
for _, e in ipairs(out) do
  if got[e[1]] then
    claimed[#claimed + 1] = e
  end
end
return claimed
`)

// CountPending implements core.BulkPendingInspector: XPENDING's summary
// when the rule is a whole group or one consumer, else one walk through
// the matching pages.
func (b *Broker) CountPending(ctx context.Context, stream, group string, rule core.PendingRule) (int64, error) {
	if err := checkRuleIDs(rule); err != nil {
		return 0, err
	}
	if rule.IsAll() || (rule.Consumer != "" && rule.ConsumerContains == "" && rule.MinIdle <= 0 && rule.MinDeliveries <= 0 && len(rule.IDs) == 0) {
		sum, err := b.client.XPending(ctx, stream, group).Result()
		if err != nil {
			return 0, fmt.Errorf("redis: xpending %s %s: %w", stream, group, err)
		}
		if rule.Consumer != "" {
			return sum.Consumers[rule.Consumer], nil
		}
		return sum.Count, nil
	}
	var n int64
	err := b.walkPending(ctx, stream, group, rule, func(page []core.PendingEntry) error {
		n += int64(len(page))
		return nil
	})
	return n, err
}

// ClaimPending implements core.BulkPendingInspector with XPENDING pages
// and a script that checks the rule and XCLAIMs … JUSTID what matches.
func (b *Broker) ClaimPending(ctx context.Context, stream, group, consumer string, rule core.PendingRule, progress func(core.BulkProgress)) (core.BulkResult, error) {
	if err := (core.Identity{Group: group, Client: consumer}).Validate(); err != nil {
		return core.BulkResult{}, fmt.Errorf("redis: claim: %w", err)
	}
	var res core.BulkResult
	err := b.bulk(ctx, stream, group, rule, progress, &res, func(ids []string) error {
		got, err := b.settle(ctx, stream, group, "claim", consumer, rule, ids)
		res.Count += len(got)
		res.Previous = append(res.Previous, got...)
		return err
	})
	return res, err
}

// AckPending implements core.BulkPendingInspector with XPENDING pages and
// a script that checks the rule and XACKs what matches.
func (b *Broker) AckPending(ctx context.Context, stream, group string, rule core.PendingRule, progress func(core.BulkProgress)) (core.BulkResult, error) {
	var res core.BulkResult
	err := b.bulk(ctx, stream, group, rule, progress, &res, func(ids []string) error {
		got, err := b.settle(ctx, stream, group, "ack", "", rule, ids)
		res.Count += len(got)
		return err
	})
	return res, err
}

// DeadLetterPending implements core.BulkPendingInspector: the messages
// that match are first claimed, with the rule checked atomically, by this
// broker's client (as DeadLetter names it), so that no live consumer takes
// them meanwhile; then each is copied to the dead-letter stream with its
// delivery count and reason and acknowledged. A failure between the two
// leaves the message pending, owned by that client, never lost.
func (b *Broker) DeadLetterPending(ctx context.Context, stream, group, reason string, rule core.PendingRule, progress func(core.BulkProgress)) (core.BulkResult, error) {
	if _, ok := core.IsDeadLetterEvent(stream); ok {
		return core.BulkResult{}, fmt.Errorf("redis: dead-letter %s: %w", stream, core.ErrRejectDeadLetter)
	}
	actor := b.cfg.Identity.Client
	if actor == "" {
		actor = inspectClient
	}
	var res core.BulkResult
	err := b.bulk(ctx, stream, group, rule, progress, &res, func(ids []string) error {
		got, err := b.settle(ctx, stream, group, "claim", actor, rule, ids)
		if err != nil {
			return err
		}
		if len(got) == 0 {
			return nil
		}
		pipe := b.client.Pipeline()
		cmds := make([]*goredis.XMessageSliceCmd, len(got))
		for i, p := range got {
			cmds[i] = pipe.XRangeN(ctx, stream, p.ID, p.ID, 1)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("redis: dead-letter %s: read entries: %w", stream, err)
		}
		for i, p := range got {
			var raw []byte
			if msgs := cmds[i].Val(); len(msgs) == 1 {
				raw = entryOf(&msgs[0]).Raw
			}
			if err := b.deadLetter(ctx, stream, p.ID, raw, group, actor, reason, int(p.Deliveries)); err != nil {
				return err
			}
			res.Count++
		}
		return nil
	})
	return res, err
}

// bulk walks the pages of rule's candidates (or its ids) and gives each
// page's ids to act, reporting progress after each; Total is counted first
// when someone listens.
func (b *Broker) bulk(ctx context.Context, stream, group string, rule core.PendingRule, progress func(core.BulkProgress),
	res *core.BulkResult, act func(ids []string) error) error {
	if err := checkRuleIDs(rule); err != nil {
		return err
	}
	p := core.BulkProgress{Total: -1}
	if progress != nil {
		n, err := b.CountPending(ctx, stream, group, rule)
		if err != nil {
			return err
		}
		p.Total = n
		progress(p)
	}
	return b.walkPending(ctx, stream, group, rule, func(page []core.PendingEntry) error {
		ids := make([]string, len(page))
		for i, e := range page {
			ids[i] = e.ID
		}
		err := act(ids)
		p.Done, p.Scanned = res.Count, p.Scanned+len(page)
		if progress != nil {
			progress(p)
		}
		return err
	})
}

// walkPending gives fn, page by page in id order, the pending entries that
// match rule when read. With rule.IDs it reads those ids only.
func (b *Broker) walkPending(ctx context.Context, stream, group string, rule core.PendingRule, fn func(page []core.PendingEntry) error) error {
	if len(rule.IDs) > 0 {
		return b.walkIDs(ctx, stream, group, rule, fn)
	}
	start := "-"
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ps, err := b.client.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: stream, Group: group, Idle: rule.MinIdle,
			Start: start, End: "+", Count: bulkPage, Consumer: rule.Consumer}).Result()
		if err != nil {
			return fmt.Errorf("redis: xpending %s %s: %w", stream, group, err)
		}
		if err := matching(rule, ps, fn); err != nil {
			return err
		}
		if len(ps) < bulkPage {
			return nil
		}
		next, ok := nextStreamID(ps[len(ps)-1].ID)
		if !ok {
			return nil
		}
		start = next
	}
}

// walkIDs is walkPending for a rule of explicit ids: each page of ids is
// read with one XPENDING per id, in a pipeline.
func (b *Broker) walkIDs(ctx context.Context, stream, group string, rule core.PendingRule, fn func(page []core.PendingEntry) error) error {
	for from := 0; from < len(rule.IDs); from += bulkPage {
		if err := ctx.Err(); err != nil {
			return err
		}
		ids := rule.IDs[from:min(from+bulkPage, len(rule.IDs))]
		pipe := b.client.Pipeline()
		cmds := make([]*goredis.XPendingExtCmd, len(ids))
		for i, id := range ids {
			cmds[i] = pipe.XPendingExt(ctx, &goredis.XPendingExtArgs{Stream: stream, Group: group, Start: id, End: id, Count: 1})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("redis: xpending %s %s: %w", stream, group, err)
		}
		var ps []goredis.XPendingExt
		for _, c := range cmds {
			ps = append(ps, c.Val()...)
		}
		if err := matching(rule, ps, fn); err != nil {
			return err
		}
	}
	return nil
}

// matching gives fn the entries of ps that match rule, if any.
func matching(rule core.PendingRule, ps []goredis.XPendingExt, fn func(page []core.PendingEntry) error) error {
	page := make([]core.PendingEntry, 0, len(ps))
	for _, x := range ps {
		e := core.PendingEntry{ID: x.ID, Consumer: x.Consumer, Idle: x.Idle, Deliveries: x.RetryCount}
		if rule.Matches(e) {
			page = append(page, e)
		}
	}
	if len(page) == 0 {
		return nil
	}
	return fn(page)
}

// settle runs settleScript on ids and returns the entries it settled, as
// they were before.
func (b *Broker) settle(ctx context.Context, stream, group, op, target string, rule core.PendingRule, ids []string) ([]core.PendingEntry, error) {
	args := make([]any, 0, 7+len(ids))
	args = append(args, group, op, target, rule.Consumer, rule.ConsumerContains,
		strconv.FormatInt(rule.MinIdle.Milliseconds(), 10), strconv.FormatInt(rule.MinDeliveries, 10))
	for _, id := range ids {
		args = append(args, id)
	}
	rows, err := settleScript.Run(ctx, b.client, []string{stream}, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("redis: %s %s %s: %w", op, stream, group, err)
	}
	out := make([]core.PendingEntry, 0, len(rows))
	for _, r := range rows {
		f, ok := r.([]any)
		if !ok || len(f) != 4 {
			return out, fmt.Errorf("redis: %s %s %s: unexpected script reply %T", op, stream, group, r)
		}
		id, _ := f[0].(string)
		owner, _ := f[1].(string)
		idle, _ := f[2].(int64)
		deliveries, _ := f[3].(int64)
		out = append(out, core.PendingEntry{ID: id, Consumer: owner, Idle: time.Duration(idle) * time.Millisecond, Deliveries: deliveries})
	}
	return out, nil
}

// checkRuleIDs refuses a rule whose ids are not stream ids, which the
// server would refuse in the middle of a batch.
func checkRuleIDs(rule core.PendingRule) error {
	for _, id := range rule.IDs {
		if _, _, err := parseStreamID(id); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
	}
	return nil
}
