package tui

import (
	"context"
	"slices"

	"github.com/spectacles-go/spectacles/core"
)

// The fake inspector settles by rule too, in batches of bulkPage, waiting
// on bulkGate (when set) before each, and checking the rule again when it
// acts, as the Redis driver does.
var _ core.BulkPendingInspector = (*fakeInspector)(nil)

func (f *fakeInspector) matching(stream, group string, rule core.PendingRule) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g, err := f.group(stream, group)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, p := range g.pending {
		if rule.Matches(p) {
			ids = append(ids, p.ID)
		}
	}
	return ids, nil
}

func (f *fakeInspector) CountPending(ctx context.Context, stream, group string, rule core.PendingRule) (int64, error) {
	f.call("CountPending")
	ids, err := f.matching(stream, group, rule)
	return int64(len(ids)), err
}

// settleBulk walks what rule matches in batches and gives each entry that
// still matches to act, under the lock; act reports whether it settled it.
func (f *fakeInspector) settleBulk(ctx context.Context, stream, group string, rule core.PendingRule, progress func(core.BulkProgress),
	act func(g *fakeGroup, i int) bool) (core.BulkResult, error) {
	ids, err := f.matching(stream, group, rule)
	if err != nil {
		return core.BulkResult{}, err
	}
	page := f.bulkPage
	if page <= 0 {
		page = 2
	}
	p := core.BulkProgress{Total: int64(len(ids))}
	if progress != nil {
		progress(p)
	}
	var res core.BulkResult
	for from := 0; from < len(ids); from += page {
		if f.bulkGate != nil {
			<-f.bulkGate
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		batch := ids[from:min(from+page, len(ids))]
		f.mu.Lock()
		g, _ := f.group(stream, group)
		for i := len(g.pending) - 1; i >= 0; i-- {
			e := g.pending[i]
			if slices.Contains(batch, e.ID) && rule.Matches(e) && act(g, i) {
				res.Count++
			}
		}
		f.mu.Unlock()
		p.Done, p.Scanned = res.Count, p.Scanned+len(batch)
		if progress != nil {
			progress(p)
		}
	}
	return res, nil
}

func (f *fakeInspector) ClaimPending(ctx context.Context, stream, group, consumer string, rule core.PendingRule, progress func(core.BulkProgress)) (core.BulkResult, error) {
	f.call("ClaimPending")
	var prev []core.PendingEntry
	res, err := f.settleBulk(ctx, stream, group, rule, progress, func(g *fakeGroup, i int) bool {
		prev = append(prev, g.pending[i])
		g.pending[i].Consumer, g.pending[i].Idle = consumer, 0
		f.claimed[consumer] = append(f.claimed[consumer], g.pending[i].ID)
		return true
	})
	slices.SortFunc(prev, func(a, b core.PendingEntry) int { return compareIDs(a.ID, b.ID) })
	res.Previous = prev
	return res, err
}

func (f *fakeInspector) AckPending(ctx context.Context, stream, group string, rule core.PendingRule, progress func(core.BulkProgress)) (core.BulkResult, error) {
	f.call("AckPending")
	return f.settleBulk(ctx, stream, group, rule, progress, func(g *fakeGroup, i int) bool {
		f.acked = append(f.acked, g.pending[i].ID)
		g.pending = slices.Delete(g.pending, i, i+1)
		return true
	})
}

func (f *fakeInspector) DeadLetterPending(ctx context.Context, stream, group, reason string, rule core.PendingRule, progress func(core.BulkProgress)) (core.BulkResult, error) {
	f.call("DeadLetterPending")
	return f.settleBulk(ctx, stream, group, rule, progress, func(g *fakeGroup, i int) bool {
		f.dead = append(f.dead, g.pending[i].ID)
		g.pending = slices.Delete(g.pending, i, i+1)
		return true
	})
}
