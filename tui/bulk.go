package tui

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/termtext"
)

// Bulk recovery: the Pending view's B key acts on every pending entry that
// matches its filter (a core.PendingRule), not on marked rows. The count
// is asked first (bulkCountMsg), the operator confirms an action that names
// it and the rule, then a bulkJob runs the broker's batches in a goroutine
// of its own and reports progress as messages (bulkProgressMsg) until it
// ends (bulkDoneMsg); esc cancels it. The UI goroutine never waits on it.

// bulkOp is what a bulk action does.
type bulkOp int

const (
	bulkAck bulkOp = iota
	bulkClaim
	bulkDead
)

// verbs of each op: the question, the running form and the result.
func (o bulkOp) verbs() (ask, running, done string) {
	switch o {
	case bulkClaim:
		return "Claim", "claiming", "claimed"
	case bulkDead:
		return "Move", "moving to dead letters", "moved to dead letters"
	}
	return "Acknowledge", "acknowledging", "acknowledged"
}

// bulkInspector returns b's inspector as a core.BulkPendingInspector, or
// nil when the broker cannot settle pending entries by rule.
func bulkInspector(b Backend) core.BulkPendingInspector {
	p, _ := b.Inspector().(core.BulkPendingInspector)
	return p
}

// shownBulkPendingInspector is a shownPendingInspector whose broker also
// settles by rule, and which does too (names unquoted on the way in,
// quoted on the way out).
type shownBulkPendingInspector struct {
	shownPendingInspector
	bp core.BulkPendingInspector
}

func unquoteRule(r core.PendingRule) core.PendingRule {
	r.Consumer, r.ConsumerContains = unquote(r.Consumer), unquote(r.ConsumerContains)
	if r.IDs != nil {
		r.IDs = unquoteAll(r.IDs)
	}
	return r
}

func shownBulk(res core.BulkResult, err error) (core.BulkResult, error) {
	for i := range res.Previous {
		p := &res.Previous[i]
		p.ID, p.Consumer = termtext.Quote(p.ID), termtext.Quote(p.Consumer)
	}
	return res, shownErr(err)
}

func (s shownBulkPendingInspector) CountPending(ctx context.Context, stream, group string, rule core.PendingRule) (int64, error) {
	n, err := s.bp.CountPending(ctx, unquote(stream), unquote(group), unquoteRule(rule))
	return n, shownErr(err)
}

func (s shownBulkPendingInspector) ClaimPending(ctx context.Context, stream, group, consumer string, rule core.PendingRule, progress func(core.BulkProgress)) (core.BulkResult, error) {
	return shownBulk(s.bp.ClaimPending(ctx, unquote(stream), unquote(group), unquote(consumer), unquoteRule(rule), progress))
}

func (s shownBulkPendingInspector) AckPending(ctx context.Context, stream, group string, rule core.PendingRule, progress func(core.BulkProgress)) (core.BulkResult, error) {
	return shownBulk(s.bp.AckPending(ctx, unquote(stream), unquote(group), unquoteRule(rule), progress))
}

func (s shownBulkPendingInspector) DeadLetterPending(ctx context.Context, stream, group, reason string, rule core.PendingRule, progress func(core.BulkProgress)) (core.BulkResult, error) {
	return shownBulk(s.bp.DeadLetterPending(ctx, unquote(stream), unquote(group), reason, unquoteRule(rule), progress))
}

// bulkCountMsg is how many entries a bulk action's rule matches.
type bulkCountMsg struct {
	op    bulkOp
	plan  bulkPlan
	count int64
	err   error
}

func (bulkCountMsg) target() kind { return kPending }

// bulkPlan is a bulk action before it runs: where, which rule, and, for a
// claim, to whom and who the group's consumers are.
type bulkPlan struct {
	stream, group string
	rule          core.PendingRule
	count         int64
	to            string
	reason        string
	consumers     []string
}

// countBulk counts what rule matches, for the confirmation.
func countBulk(sh *shared, op bulkOp, plan bulkPlan) tea.Cmd {
	bi := bulkInspector(sh.backend)
	return func() tea.Msg {
		ctx, cancel := sh.ctx()
		defer cancel()
		n, err := bi.CountPending(ctx, plan.stream, plan.group, plan.rule)
		return bulkCountMsg{op: op, plan: plan, count: n, err: err}
	}
}

// question is the confirmation of op on plan: it names the count and the
// rule, and what cannot be undone.
func (p bulkPlan) question(op bulkOp) string {
	ask, _, _ := op.verbs()
	what := fmt.Sprintf("%s %s matching %s", ask, plural(int(p.count), "pending entry"), p.rule)
	switch op {
	case bulkClaim:
		return newConsumerWarning(p.consumers, p.to, p.group) + fmt.Sprintf("%s to %q?", what, p.to)
	case bulkDead:
		return fmt.Sprintf("%s to %s (acknowledging them here)?", what, dlqOf(p.stream))
	}
	return what + "? An ack cannot be undone."
}

// newConsumerWarning heads a claim's confirmation when to is not one of
// the group's consumers: claiming creates it.
func newConsumerWarning(consumers []string, to, group string) string {
	if slices.Contains(consumers, to) {
		return ""
	}
	return fmt.Sprintf("%q is not a consumer of %s: claiming creates it. ", to, group)
}

// bulkClaimInput asks for a bulk claim's target.
type bulkClaimInput struct{ plan bulkPlan }

func (a bulkClaimInput) withInput(text string) (action, string, error) {
	a.plan.to = strings.TrimSpace(text)
	if a.plan.to == "" {
		return nil, "", errors.New("claim: a consumer name is required")
	}
	return bulkAction{op: bulkClaim, plan: a.plan}, a.plan.question(bulkClaim), nil
}

// bulkAction is a confirmed bulk action: running it only hands the view a
// job to start (bulkStartMsg), since the job outlives one command.
type bulkAction struct {
	op   bulkOp
	plan bulkPlan
}

func (a bulkAction) run(context.Context, Backend) tea.Msg { return bulkStartMsg(a) }

// bulkStartMsg tells the Pending view to start a confirmed bulk action.
type bulkStartMsg bulkAction

func (bulkStartMsg) target() kind { return kPending }

// bulkJob is a running bulk action. The worker goroutine writes the latest
// progress and signals; the view reads it in a command (next), one message
// at a time, so progress never queues up behind a slow screen.
type bulkJob struct {
	op     bulkOp
	plan   bulkPlan
	ctx    context.Context
	cancel context.CancelFunc
	signal chan struct{} // capacity 1: progress is waiting
	done   chan struct{} // closed when the worker ends
	// cancelled: esc was pressed (the UI goroutine's only).
	cancelled bool

	mu       sync.Mutex // guards what the worker writes
	progress core.BulkProgress
	res      core.BulkResult
	err      error
}

// bulkProgressMsg is a job's latest progress.
type bulkProgressMsg struct {
	job *bulkJob
	p   core.BulkProgress
}

func (bulkProgressMsg) target() kind { return kPending }

// bulkDoneMsg is a job's end.
type bulkDoneMsg struct {
	job *bulkJob
	res core.BulkResult
	err error
}

func (bulkDoneMsg) target() kind { return kPending }

func newBulkJob(base context.Context, a bulkAction) *bulkJob {
	ctx, cancel := context.WithCancel(base)
	return &bulkJob{op: a.op, plan: a.plan, ctx: ctx, cancel: cancel, signal: make(chan struct{}, 1), done: make(chan struct{}),
		progress: core.BulkProgress{Total: a.plan.count}}
}

// start runs the job in a goroutine and returns its first message.
func (j *bulkJob) start(b core.BulkPendingInspector) tea.Cmd {
	return func() tea.Msg {
		go j.work(b)
		return j.wait()
	}
}

func (j *bulkJob) work(b core.BulkPendingInspector) {
	defer close(j.done)
	defer j.cancel()
	report := func(p core.BulkProgress) {
		j.mu.Lock()
		j.progress = p
		j.mu.Unlock()
		select {
		case j.signal <- struct{}{}:
		default: // the view has not read the last one yet: it reads this one
		}
	}
	p := j.plan
	var (
		res core.BulkResult
		err error
	)
	switch j.op {
	case bulkClaim:
		res, err = b.ClaimPending(j.ctx, p.stream, p.group, p.to, p.rule, report)
	case bulkDead:
		res, err = b.DeadLetterPending(j.ctx, p.stream, p.group, p.reason, p.rule, report)
	default:
		res, err = b.AckPending(j.ctx, p.stream, p.group, p.rule, report)
	}
	j.mu.Lock()
	j.res, j.err = res, err
	j.mu.Unlock()
}

// wait blocks, in a command, for the job's next progress or its end.
func (j *bulkJob) wait() tea.Msg {
	select {
	case <-j.signal:
		j.mu.Lock()
		defer j.mu.Unlock()
		return bulkProgressMsg{job: j, p: j.progress}
	case <-j.done:
		j.mu.Lock()
		defer j.mu.Unlock()
		return bulkDoneMsg{job: j, res: j.res, err: j.err}
	}
}

// next is the command that reads the job's next message.
func (j *bulkJob) next() tea.Cmd { return j.wait }

// stop cancels the job; it ends after the batch in flight.
func (j *bulkJob) stop() {
	j.cancelled = true
	j.cancel()
}

// summary is the status line after the job ended.
func (j *bulkJob) summary(res core.BulkResult, err error) (string, bool) {
	_, _, done := j.op.verbs()
	what := fmt.Sprintf("%s %s (%s)", done, plural(res.Count, "entry"), j.plan.rule)
	if j.op == bulkClaim {
		what = fmt.Sprintf("%q now owns %s (%s)", j.plan.to, plural(res.Count, "entry"), j.plan.rule)
	}
	switch {
	case j.cancelled && errors.Is(err, context.Canceled):
		return "cancelled: " + what, false
	case err != nil:
		return fmt.Sprintf("%s, then failed: %v", what, err), true
	}
	return what, false
}

// bar draws a progress bar of width cells for done of total.
func bar(st *styles, done, total int64, width int) string {
	frac := 0.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	full := int(frac * float64(width))
	return st.accent.Render(strings.Repeat("█", full)) + st.muted.Render(strings.Repeat("░", width-full)) + fmt.Sprintf(" %3d%%", int(frac*100))
}

// progressLine is the Pending view's top line while j runs.
func (j *bulkJob) progressLine(st *styles, p core.BulkProgress, width int) string {
	_, running, _ := j.op.verbs()
	total := max(p.Total, int64(p.Done))
	if j.plan.count > total {
		total = j.plan.count
	}
	head := fmt.Sprintf(" %s %s of %s/%s (%s) ", running, fmtCount(int64(p.Done))+" / "+fmtCount(total), j.plan.stream, j.plan.group, j.plan.rule)
	tail := "  esc cancels"
	if j.cancelled {
		tail = "  cancelling after this batch…"
	}
	barWidth := min(max(width-len([]rune(head))-len(tail)-6, 10), 40)
	return truncate(st.text.Render(head)+bar(st, int64(p.Done), total, barWidth)+st.muted.Render(tail), width)
}

// undoClaim is what claiming back to the previous owners needs: which ids
// each previous owner had, and who holds them now.
type undoClaim struct {
	stream, group, to string
	owners            map[string][]string
	count             int
}

func newUndoClaim(stream, group, to string, previous []core.PendingEntry) *undoClaim {
	if len(previous) == 0 {
		return nil
	}
	u := &undoClaim{stream: stream, group: group, to: to, owners: map[string][]string{}, count: len(previous)}
	for _, p := range previous {
		if p.Consumer != to {
			u.owners[p.Consumer] = append(u.owners[p.Consumer], p.ID)
		}
	}
	if len(u.owners) == 0 {
		return nil
	}
	return u
}

// names are the previous owners, sorted.
func (u *undoClaim) names() []string {
	out := make([]string, 0, len(u.owners))
	for n := range u.owners {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// undoAction claims entries back to their previous owners, only those the
// claim's target still holds.
type undoAction struct{ u *undoClaim }

// timeout lets an undo of a large claim take its batches' time.
func (undoAction) timeout() time.Duration { return 5 * time.Minute }

func (a undoAction) run(ctx context.Context, b Backend) tea.Msg {
	bi := bulkInspector(b)
	if bi == nil {
		return actionMsg{from: kPending, err: fmt.Errorf("%s: %w", noPendingWhy, core.ErrUnsupported)}
	}
	n := 0
	for _, owner := range a.u.names() {
		res, err := bi.ClaimPending(ctx, a.u.stream, a.u.group, owner, core.PendingRule{Consumer: a.u.to, IDs: a.u.owners[owner]}, nil)
		n += res.Count
		if err != nil {
			return actionMsg{from: kPending, text: fmt.Sprintf("undo: %d back", n), err: err}
		}
	}
	return actionMsg{from: kPending, text: fmt.Sprintf("undone: %s back to %s (of %d claimed)", plural(n, "entry"), strings.Join(a.u.names(), ", "), a.u.count)}
}

// claimedMsg is a claim's outcome for the Pending view: besides the status
// line, what undoing it needs.
type claimedMsg struct {
	actionMsg
	undo *undoClaim
}

func (claimedMsg) target() kind { return kPending }

// claimTargets are the names of a group's consumers, most recently active
// first: the Tab completions of a claim's target.
func claimTargets(consumers []core.ConsumerInfo) []string {
	cs := slices.Clone(consumers)
	slices.SortStableFunc(cs, func(a, b core.ConsumerInfo) int { return cmp.Compare(a.Idle, b.Idle) })
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

// defaultTarget is the consumer a claim offers first: the most recently
// active consumer of the group that is live (idle less than staleAfter,
// when set) and does not already own everything claimed (owner, "" when
// several do); else fallback (the console's name).
func defaultTarget(consumers []core.ConsumerInfo, owner string, staleAfter time.Duration, fallback string) string {
	cs := slices.Clone(consumers)
	slices.SortStableFunc(cs, func(a, b core.ConsumerInfo) int { return cmp.Compare(a.Idle, b.Idle) })
	for _, c := range cs {
		if c.Name != owner && (staleAfter <= 0 || c.Idle < staleAfter) {
			return c.Name
		}
	}
	return fallback
}

// pendingPage reads one page of the pending entries that match rule.
// XPENDING does the exact consumer and idle conditions. A consumer
// substring becomes the group's consumers that contain it (consumers, as
// XINFO CONSUMERS listed them: only a consumer owns entries), one page of
// each merged in id order, so that every query stays a page. A minimum of
// deliveries is checked here, reading further pages until the page is
// full, the list ends or maxScan entries were looked at.
func pendingPage(ctx context.Context, pi core.PendingInspector, stream, group string, rule core.PendingRule, consumers []core.ConsumerInfo,
	after string, count int) ([]core.PendingEntry, error) {
	if rule.ConsumerContains != "" && rule.Consumer == "" && consumers != nil {
		r := rule
		r.ConsumerContains = ""
		var out []core.PendingEntry
		for _, c := range consumers {
			if !strings.Contains(c.Name, rule.ConsumerContains) {
				continue
			}
			r.Consumer = c.Name
			page, err := pendingPage(ctx, pi, stream, group, r, nil, after, count)
			if err != nil {
				return nil, err
			}
			out = append(out, page...)
		}
		slices.SortFunc(out, func(a, b core.PendingEntry) int { return compareIDs(a.ID, b.ID) })
		return out[:min(len(out), count)], nil
	}
	q := core.PendingQuery{After: after, Count: count, Consumer: rule.Consumer, MinIdle: rule.MinIdle}
	if rule.ConsumerContains == "" && rule.MinDeliveries <= 0 {
		return pi.Pending(ctx, stream, group, q)
	}
	const maxScan = 50_000
	q.Count = max(count, 500)
	var out []core.PendingEntry
	for scanned := 0; scanned < maxScan; {
		page, err := pi.Pending(ctx, stream, group, q)
		if err != nil {
			return out, err
		}
		scanned += len(page)
		for _, p := range page {
			if rule.Matches(p) {
				out = append(out, p)
				if len(out) == count {
					return out, nil
				}
			}
		}
		if len(page) < q.Count {
			break
		}
		q.After = page[len(page)-1].ID
	}
	return out, nil
}
