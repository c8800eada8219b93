package tui

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
)

type pendingResult struct {
	seq, gen  uint64
	group     string // resolved group (when the view was opened without one)
	info      core.GroupInfo
	groups    int
	all       []core.GroupInfo
	consumers []core.ConsumerInfo
	page      []core.PendingEntry
	err       error
	at        time.Time // when the load finished
}

func (pendingResult) target() kind { return kPending }

// pendingView pages through a group's pending entries: it never loads more
// than one page (the rows that fit) from the broker.
type pendingView struct {
	viewBase
	sh            *shared
	load          loader
	stream, group string
	autoGroup     bool
	info          core.GroupInfo
	groups        int
	all           []core.GroupInfo // every group of the stream
	consumers     []core.ConsumerInfo
	starts        []string // "after" id of each page up to the current one
	offsets       []int    // rows before each page
	rows          []core.PendingEntry
	landAt        int // -1: keep; 0: top; 1: bottom
	filter        string
	rule          core.PendingRule // what the filter selects
	sort          pendingSort
	armed         bool     // B was pressed: the next key picks a bulk action
	job           *bulkJob // the bulk action running, if any
	jobProgress   core.BulkProgress
	undo          *undoClaim          // the last claim, to claim back
	byID          []core.PendingEntry // the page in id order (rows may be sorted)
	pageLast      string              // the page's last id, where the next starts
	tbl           table
	k             struct {
		nav                                                      navKeys
		Payload, Mark, MarkPage, Ack, Claim, Dead, Requeue, Copy key.Binding
		Bulk, Undo, Sort, SortDir, FilterHelp                    key.Binding
	}
}

func newPending(sh *shared) *pendingView {
	v := &pendingView{sh: sh, starts: []string{""}, offsets: []int{0}, landAt: -1}
	v.tbl = newTable(sh.st,
		column{title: "ID", width: 20},
		column{title: "CONSUMER", width: 18, flex: true},
		column{title: "IDLE", width: 9, right: true},
		column{title: "DELIVERIES", width: 10, right: true},
		column{title: "PUBLISHED", width: 19},
	)
	v.k.nav = newNavKeys()
	v.k.nav.Bottom = bindAs("end/G", "last (G: last page)", "end", "G")
	v.k.Payload = bind("payload", "enter")
	v.k.Mark = bindAs("space", "mark", " ")
	v.k.MarkPage = bind("mark page", "a")
	v.k.Ack = bind("ack", "A")
	v.k.Claim = bind("claim to…", "c")
	v.k.Dead = bind("move to dead letters", "D")
	v.k.Requeue = bind("requeue dead letters", "R")
	v.k.Copy = bind("copy id", "y")
	v.k.Bulk = bind("bulk on the filter's matches (then A, c, D)", "B")
	v.k.Undo = bind("undo claim", "u")
	v.k.Sort = bind("sort page", "s")
	v.k.SortDir = bind("reverse sort", "S")
	v.k.FilterHelp = bindAs("/", "filter w1 consumer=X idle>5m dlv>=3", "/")
	return v
}

// open shows the pending entries of n's stream and group, if it names them.
func (v *pendingView) open(n navMsg) {
	if n.stream != "" {
		v.setTarget(n.stream, n.group)
	}
}

func (v *pendingView) setTarget(stream, group string) {
	if stream == v.stream && (group == v.group || group == "") {
		return
	}
	v.stream, v.group, v.autoGroup = stream, group, group == ""
	v.reset()
}

func (v *pendingView) reset() {
	v.starts, v.offsets, v.rows, v.landAt = []string{""}, []int{0}, nil, -1
	v.tbl.cursor, v.tbl.top = 0, 0
	clear(v.tbl.marked)
	v.tbl.setRows(nil, nil)
	v.load.invalidate()
	v.armed = false
}

func (v *pendingView) crumbs() []string {
	if v.stream == "" {
		return nil
	}
	out := []string{v.stream}
	if v.group != "" {
		g := "group " + v.group
		if v.sh.amqp() {
			g = "queue " + v.group
		}
		if v.autoGroup && v.groups > 1 {
			g += fmt.Sprintf(" (most pending of %d)", v.groups)
		}
		out = append(out, g)
	}
	return out
}

func (v *pendingView) setSize(w, h int) {
	old := v.tbl.pageRows()
	v.tbl.setSize(w, h-2)
	if old != v.tbl.pageRows() {
		v.load.gen++ // a page of the old size is stale
		v.load.dirty = v.load.inflight
	}
}

func (v *pendingView) activate() tea.Cmd { return v.refresh() }
func (v *pendingView) capturing() bool   { return v.armed || v.job != nil }

func (v *pendingView) canFilter() bool    { return true }
func (v *pendingView) filterText() string { return v.filter }
func (v *pendingView) filterSyntax() string {
	return "TEXT: consumers whose name contains it; consumer=NAME, idle>5m, deliveries>=3 (dlv>=3); terms combine, e.g. /w1 idle>5m"
}

// updated is when the page on screen was loaded, for the header's age.
func (v *pendingView) updated() time.Time { return v.load.at }

// setFilter reads the filter's terms (parsePendingFilter).
func (v *pendingView) setFilter(text string) tea.Cmd {
	v.filter = text
	rule, bad := parsePendingFilter(text)
	var cmd tea.Cmd
	if bad != "" {
		cmd = statusErr("filter: " + bad)
	}
	if rule.Consumer == v.rule.Consumer && rule.ConsumerContains == v.rule.ConsumerContains &&
		rule.MinIdle == v.rule.MinIdle && rule.MinDeliveries == v.rule.MinDeliveries {
		return cmd
	}
	v.rule = rule
	v.reset()
	return tea.Batch(cmd, v.refresh())
}

// parsePendingFilter reads a Pending filter: "TEXT" matches the consumers
// whose name contains it, "consumer=NAME" one consumer exactly,
// "idle>DURATION" entries idle at least that long, "deliveries>=N" (or
// "dlv>=N"; ">" for more than N) entries delivered at least N times. bad
// says what was not understood.
func parsePendingFilter(text string) (rule core.PendingRule, bad string) {
	for f := range strings.FieldsSeq(text) {
		lower := strings.ToLower(f)
		switch {
		case strings.HasPrefix(lower, "idle>"):
			rest := strings.TrimPrefix(strings.TrimPrefix(lower, "idle>"), "=")
			d, err := time.ParseDuration(rest)
			if err != nil || d < 0 {
				bad = fmt.Sprintf("%q is not a duration (idle>30s)", rest)
				continue
			}
			rule.MinIdle = d
		case strings.HasPrefix(lower, "deliveries>"), strings.HasPrefix(lower, "dlv>"):
			_, rest, _ := strings.Cut(lower, ">")
			more := !strings.HasPrefix(rest, "=")
			n, err := strconv.ParseInt(strings.TrimPrefix(rest, "="), 10, 64)
			if err != nil || n < 0 {
				bad = fmt.Sprintf("%q is not a count (deliveries>=3)", rest)
				continue
			}
			if more {
				n++
			}
			rule.MinDeliveries = n
		case strings.HasPrefix(lower, "consumer="):
			rule.Consumer, rule.ConsumerContains = f[len("consumer="):], ""
		default:
			rule.ConsumerContains, rule.Consumer = f, ""
		}
	}
	return rule, bad
}

func (v *pendingView) refresh() tea.Cmd {
	if v.stream == "" {
		return pickBusiest(v.sh) // busiest.go
	}
	ins, seq, gen, ok := v.load.beginInspect(v.sh, v.stream != "")
	if !ok {
		return nil
	}
	sh, stream, group := v.sh, v.stream, v.group
	pi := pendingInspector(sh.backend)
	rule, after, count := v.rule, v.starts[len(v.starts)-1], v.tbl.pageRows()
	return func() (msg tea.Msg) {
		r := pendingResult{seq: seq, gen: gen, group: group}
		defer func() {
			// Every return hands back r: stamp it with the load's end.
			if pr, ok := msg.(pendingResult); ok {
				pr.at = sh.now()
				msg = pr
			}
		}()
		ctx, cancel := sh.ctx()
		defer cancel()
		groups, err := ins.Groups(ctx, stream)
		if err != nil {
			r.err = err
			return r
		}
		r.groups = len(groups)
		groups = sh.fixGroups(groups)
		r.all = groups
		if r.group == "" {
			if len(groups) == 0 {
				r.err = fmt.Errorf("%s has no consumer groups, so nothing is pending", stream)
				return r
			}
			best := slices.MaxFunc(groups, func(a, b core.GroupInfo) int { return cmp.Compare(a.Pending, b.Pending) })
			r.group = best.Name
		}
		found := false
		for _, g := range groups {
			if g.Name == r.group {
				r.info, found = g, true
			}
		}
		if !found {
			r.err = fmt.Errorf("%s has no group %q", stream, r.group)
			return r
		}
		r.consumers, _ = ins.Consumers(ctx, stream, r.group)
		if pi != nil {
			r.page, r.err = pendingPage(ctx, pi, stream, r.group, rule, r.consumers, after, count)
		}
		return r
	}
}

func (v *pendingView) isDLQ() bool {
	_, ok := dlqSource(v.stream)
	return ok
}

func (v *pendingView) keys() []key.Binding {
	has := len(v.rows) > 0
	write := has && !v.sh.readOnly
	for _, b := range []*key.Binding{&v.k.Payload, &v.k.Mark, &v.k.MarkPage, &v.k.Copy, &v.k.Sort, &v.k.SortDir, &v.k.nav.Top, &v.k.nav.Bottom} {
		b.SetEnabled(has)
	}
	for _, b := range []*key.Binding{&v.k.Ack, &v.k.Claim} {
		b.SetEnabled(write)
	}
	v.k.Dead.SetEnabled(write && !v.isDLQ())
	v.k.Requeue.SetEnabled(write && v.isDLQ())
	v.k.Bulk.SetEnabled(write && bulkInspector(v.sh.backend) != nil)
	v.k.Undo.SetEnabled(!v.sh.readOnly && v.undo != nil && bulkInspector(v.sh.backend) != nil)
	v.k.FilterHelp.SetEnabled(true)
	if pendingInspector(v.sh.backend) == nil {
		for _, b := range []*key.Binding{&v.k.Ack, &v.k.Claim, &v.k.Dead, &v.k.Requeue, &v.k.Bulk, &v.k.Undo, &v.k.FilterHelp} {
			b.SetEnabled(false)
		}
	}
	return append(v.k.nav.list()[:4], v.k.Payload, v.k.Mark, v.k.MarkPage, v.k.Ack, v.k.Claim, v.k.Dead, v.k.Requeue, v.k.Copy,
		v.k.Bulk, v.k.Undo, v.k.Sort, v.k.SortDir, v.k.nav.Top, v.k.nav.Bottom, v.k.FilterHelp)
}

// Why RabbitMQ cannot do the Pending view's actions.
const (
	amqpPendingWhy = "RabbitMQ does not let another client list or take unacknowledged messages"
	amqpAckWhy     = "only the channel a message was delivered on can acknowledge it (RabbitMQ)"
	amqpClaimWhy   = "RabbitMQ cannot take a message from the consumer it was delivered to; it returns to its queue when that consumer's channel closes"
	amqpDeadWhy    = "RabbitMQ cannot take a message from its consumer; the driver dead-letters after MaxDeliveries, a handler with Reject"
	// noPendingWhy is why another broker that is no core.PendingInspector
	// cannot.
	noPendingWhy = "this broker cannot list or settle pending messages"
)

func (v *pendingView) unavailable() []unavailableKey {
	if pendingInspector(v.sh.backend) != nil {
		return nil
	}
	ack, claim, dead := amqpAckWhy, amqpClaimWhy, amqpDeadWhy
	if !v.sh.amqp() {
		ack, claim, dead = noPendingWhy, noPendingWhy, noPendingWhy
	}
	out := []unavailableKey{{key: v.k.Ack, why: ack}, {key: v.k.Claim, why: claim}, {key: v.k.Dead, why: dead}}
	if v.isDLQ() {
		source, _ := dlqSource(v.stream)
		out = append(out, unavailableKey{key: v.k.Requeue, why: "dead letters are listed and requeued in the tail: :dlq " + source + ", then R"})
	}
	return out
}

// targets are the marked ids, or the one under the cursor.
func (v *pendingView) targets() []string {
	var ids []string
	for id := range v.tbl.marked {
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		if id := v.tbl.selectedKey(); id != "" {
			ids = []string{id}
		}
	}
	slices.SortFunc(ids, compareIDs)
	return ids
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	if s, ok := strings.CutSuffix(what, "y"); ok {
		return fmt.Sprintf("%d %sies", n, s)
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func (v *pendingView) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case pendingResult:
		apply, again := v.load.finish(msg.seq, msg.gen)
		if apply {
			v.load.err, v.load.loaded, v.load.at = msg.err, true, msg.at
			if msg.group != "" {
				v.group = msg.group
			}
			v.info, v.groups, v.consumers, v.all = msg.info, msg.groups, msg.consumers, msg.all
			if msg.err == nil {
				v.setPage(msg.page)
			}
		}
		if again {
			return v.refresh()
		}
		return nil
	case confirmedMsg:
		// An action on the marks was confirmed: they are done with. (A
		// cancelled confirmation keeps them.)
		clear(v.tbl.marked)
		if len(msg.acts) == 1 {
			if _, ok := msg.acts[0].(undoAction); ok {
				v.undo = nil
			}
		}
		return nil
	case lastPageMsg:
		if msg.gen != v.load.gen {
			return nil
		}
		if msg.err != nil {
			return statusErr("last page: " + v.sh.errText(msg.err))
		}
		v.starts, v.offsets, v.landAt = msg.starts, msg.offsets, 1
		v.load.invalidate()
		v.load.loaded = true
		return v.refresh()
	case bulkCountMsg:
		return v.bulkCounted(msg)
	case bulkStartMsg:
		bi := bulkInspector(v.sh.backend)
		if v.job != nil || bi == nil {
			return statusErr("a bulk action already runs: esc cancels it")
		}
		v.job = newBulkJob(v.sh.base, bulkAction(msg))
		v.jobProgress = core.BulkProgress{Total: msg.plan.count}
		return v.job.start(bi)
	case bulkProgressMsg:
		if msg.job != v.job {
			return nil
		}
		v.jobProgress = msg.p
		return msg.job.next()
	case bulkDoneMsg:
		if msg.job == v.job {
			v.job = nil
		}
		text, isErr := msg.job.summary(msg.res, msg.err)
		switch msg.job.op {
		case bulkClaim:
			if u := newUndoClaim(msg.job.plan.stream, msg.job.plan.group, msg.job.plan.to, msg.res.Previous); u != nil {
				v.undo = u
				text += " · u undoes (back to " + strings.Join(u.names(), ", ") + ")"
			}
		case bulkAck:
			text += " · an ack cannot be undone"
		}
		if isErr {
			return emit(actionMsg{from: kPending, err: errors.New(text)})
		}
		return emit(actionMsg{from: kPending, text: text})
	case claimedMsg:
		if msg.err == nil && msg.undo != nil {
			v.undo = msg.undo
			msg.text += " · u undoes (back to " + strings.Join(msg.undo.names(), ", ") + ")"
		}
		return emit(msg.actionMsg)
	}
	return nil
}

// bulkCounted asks to confirm a counted bulk action, or for a claim's
// target first.
func (v *pendingView) bulkCounted(msg bulkCountMsg) tea.Cmd {
	if msg.err != nil {
		return statusErr("bulk: " + v.sh.errText(msg.err))
	}
	plan := msg.plan
	plan.count = msg.count
	if plan.count == 0 {
		return status("nothing pending in " + plan.stream + "/" + plan.group + " matches " + plan.rule.String())
	}
	if msg.op == bulkClaim {
		return emit(promptMsg{label: fmt.Sprintf("Claim %s (%s) to consumer", plural(int(plan.count), "entry"), plan.rule),
			value: defaultTarget(v.consumers, plan.rule.Consumer, v.sh.node.StaleAfter, v.sh.node.Client), hint: claimHint(plan.consumers),
			suggestions: plan.consumers, from: kPending, act: bulkClaimInput{plan: plan}})
	}
	return emit(confirmMsg{prompt: plan.question(msg.op), acts: []action{bulkAction{op: msg.op, plan: plan}}})
}

// claimHint is a claim prompt's hint: how to complete the target.
func claimHint(consumers []string) string {
	if len(consumers) == 0 {
		return "the group has no consumers yet: the name typed becomes one"
	}
	return "tab completes · " + strings.Join(consumers, ", ")
}

func (v *pendingView) setPage(page []core.PendingEntry) {
	if len(page) == 0 && len(v.starts) > 1 {
		// The page emptied (acknowledged meanwhile): step back.
		v.starts, v.offsets = v.starts[:len(v.starts)-1], v.offsets[:len(v.offsets)-1]
		v.load.dirty = true
		return
	}
	v.pageLast = ""
	if len(page) > 0 {
		v.pageLast = page[len(page)-1].ID
	}
	v.byID = page
	if v.sort.col != pendSortID || v.sort.desc {
		page = v.sort.apply(page)
	}
	v.sort.titles(v.tbl.cols)
	v.rows = page
	rows := make([][]string, len(page))
	keys := make([]string, len(page))
	for i, p := range page {
		published := ""
		if t := idTime(p.ID); !t.IsZero() {
			published = t.In(v.sh.loc).Format("01-02 15:04:05.000")
		}
		rows[i] = []string{p.ID, p.Consumer, fmtDuration(p.Idle), fmt.Sprint(p.Deliveries), published}
		keys[i] = p.ID
	}
	v.tbl.setRows(rows, keys)
	switch v.landAt {
	case 0:
		v.tbl.cursor = 0
	case 1:
		v.tbl.cursor = len(rows) - 1
	}
	v.landAt = -1
	v.tbl.clamp()
}

func (v *pendingView) nextPage() tea.Cmd {
	if len(v.rows) < v.tbl.pageRows() {
		return nil // last page
	}
	v.starts = append(v.starts, v.pageLast)
	v.offsets = append(v.offsets, v.offsets[len(v.offsets)-1]+len(v.rows))
	v.landAt = 0
	v.load.invalidate()
	v.load.loaded = true
	return v.refresh()
}

func (v *pendingView) prevPage(land int) tea.Cmd {
	if len(v.starts) == 1 {
		return nil
	}
	v.starts, v.offsets = v.starts[:len(v.starts)-1], v.offsets[:len(v.offsets)-1]
	v.landAt = land
	v.load.invalidate()
	v.load.loaded = true
	return v.refresh()
}

func (v *pendingView) key(msg tea.KeyMsg) tea.Cmd {
	if v.job != nil && msg.Type == tea.KeyEsc {
		if v.job.cancelled {
			return nil
		}
		v.job.stop()
		return status("cancelling: the bulk action stops after the batch in flight")
	}
	if v.armed {
		return v.bulkKey(msg)
	}
	switch {
	case key.Matches(msg, v.k.nav.PageDown):
		return v.nextPage()
	case key.Matches(msg, v.k.nav.PageUp):
		return v.prevPage(0)
	case key.Matches(msg, v.k.nav.Top):
		if len(v.starts) > 1 {
			v.starts, v.offsets = v.starts[:1], v.offsets[:1]
			v.landAt = 0
			v.load.invalidate()
			v.load.loaded = true
			return v.refresh()
		}
		v.tbl.cursor = 0
		v.tbl.clamp()
		return nil
	case key.Matches(msg, v.k.nav.Bottom):
		// end: the page's last row, then (again) the list's; G: the
		// list's last row, on its last page.
		if last := len(v.rows) - 1; len(v.rows) < v.tbl.pageRows() || (msg.String() == "end" && v.tbl.cursor != last) {
			v.tbl.cursor = last
			v.tbl.clamp()
			return nil
		}
		if pendingInspector(v.sh.backend) == nil {
			return nil
		}
		return tea.Batch(status("finding the last page…"), lastPage(v.sh, v.stream, v.group, v.rule, v.tbl.pageRows(), v.load.gen))
	}
	if edge, ok := v.k.nav.move(msg, &v.tbl); ok {
		switch edge {
		case 1:
			return v.nextPage()
		case -1:
			return v.prevPage(1)
		}
		return nil
	}
	if v.job != nil {
		return status("a bulk action runs: esc cancels it; the list keeps scrolling and refreshing")
	}
	if cmd := pressedUnavailable(msg, v.unavailable()); cmd != nil {
		return cmd
	}
	ids := v.targets()
	target := fmt.Sprintf("%s/%s", v.stream, v.group)
	sh, stream, group := v.sh, v.stream, v.group
	ins := pendingInspector(sh.backend) // nil: the actions are unavailable (above)
	switch {
	case key.Matches(msg, v.k.Payload):
		id, prev := v.tbl.selectedKey(), ""
		if i := slices.IndexFunc(v.byID, func(p core.PendingEntry) bool { return p.ID == id }); i > 0 {
			prev = v.byID[i-1].ID
		}
		return fetchEntry(sh, stream, id, prev)
	case key.Matches(msg, v.k.Mark):
		v.tbl.toggleMark()
		v.tbl.move(1)
	case key.Matches(msg, v.k.MarkPage):
		all := true
		for _, id := range v.tbl.keys {
			all = all && v.tbl.marked[id]
		}
		for _, id := range v.tbl.keys {
			if all {
				delete(v.tbl.marked, id)
			} else {
				v.tbl.marked[id] = true
			}
		}
	case key.Matches(msg, v.k.Copy):
		id := v.tbl.selectedKey()
		return emit(copyMsg{what: "id " + id, text: id})
	case key.Matches(msg, v.k.Sort), key.Matches(msg, v.k.SortDir):
		if key.Matches(msg, v.k.Sort) {
			v.sort = v.sort.next()
		} else {
			v.sort.desc = !v.sort.desc
		}
		v.setPage(v.byID)
		if v.sort.col == pendSortID && !v.sort.desc {
			return status("page in id order, as the broker pages")
		}
		return status(fmt.Sprintf("page sorted by %s %s (the broker pages by id)", pendingSortNames[v.sort.col], v.sort.arrow()))
	case key.Matches(msg, v.k.Bulk):
		v.armed = true
		return status(fmt.Sprintf("bulk on %s: A ack · c claim · D dead letters · other keys cancel", v.rule))
	case key.Matches(msg, v.k.Undo):
		u := v.undo
		return emit(confirmMsg{
			prompt: fmt.Sprintf("Claim back %s that %q still holds to %s?", plural(u.count, "entry"), u.to, strings.Join(u.names(), ", ")),
			acts:   []action{undoAction{u: u}},
		})
	case key.Matches(msg, v.k.Ack) && ins != nil:
		return emit(confirmMsg{
			prompt: fmt.Sprintf("Acknowledge %s of %s? They leave the pending list for good.", plural(len(ids), "entry"), target),
			acts:   []action{ackAction{stream: stream, group: group, ids: ids}},
		})
	case key.Matches(msg, v.k.Claim) && ins != nil:
		names := claimTargets(v.consumers)
		return emit(promptMsg{label: fmt.Sprintf("Claim %s to consumer", plural(len(ids), "entry")),
			value: defaultTarget(v.consumers, v.ownerOf(ids), sh.node.StaleAfter, sh.node.Client), hint: claimHint(names), suggestions: names,
			from: kPending, act: claimAction{stream: stream, group: group, ids: ids, consumers: names}})
	case key.Matches(msg, v.k.Dead) && ins != nil:
		return emit(confirmMsg{
			prompt: fmt.Sprintf("Move %s of %s to %s (acknowledging them here)?", plural(len(ids), "entry"), target, dlqOf(stream)),
			acts: []action{deadLetterAction{stream: stream, group: group, ids: ids,
				reason: "moved by an operator from the spectacles console on " + sh.node.Name}},
		})
	case key.Matches(msg, v.k.Requeue):
		source, _ := dlqSource(stream)
		return emit(confirmMsg{
			prompt: fmt.Sprintf("Requeue %s from %s to %s?", plural(len(ids), "dead letter"), stream, source),
			acts:   []action{requeueAction{from: kPending, source: source, group: group, ids: ids}},
		})
	case pressed(msg, v.k.Undo):
		if v.sh.readOnly {
			return statusErr("read-only: undo is disabled")
		}
		return status("nothing to undo: only a claim can be undone (an ack or a move to dead letters cannot)")
	case pressed(msg, v.k.Ack), pressed(msg, v.k.Claim), pressed(msg, v.k.Dead), pressed(msg, v.k.Requeue), pressed(msg, v.k.Bulk):
		if v.sh.readOnly {
			return statusErr("read-only: ack, claim, dead-letter and requeue are disabled")
		}
		if pressed(msg, v.k.Requeue) && !v.isDLQ() {
			return statusErr("requeue works on dead letters: open the pending entries of " + dlqOf(v.stream) + ", or :dlq " + v.stream)
		}
		if pressed(msg, v.k.Bulk) && len(v.rows) > 0 {
			return statusErr("bulk actions need a broker that settles pending entries by rule")
		}
		if pressed(msg, v.k.Bulk) && !v.load.loaded {
			return status("bulk: the pending entries are still loading")
		}
		if pressed(msg, v.k.Bulk) {
			return status("bulk: nothing pending matches " + v.rule.String())
		}
	}
	return nil
}

// bulkKey takes the key after B: the bulk action to count and confirm.
func (v *pendingView) bulkKey(msg tea.KeyMsg) tea.Cmd {
	v.armed = false
	op := bulkAck
	switch {
	case key.Matches(msg, v.k.Ack):
	case key.Matches(msg, v.k.Claim):
		op = bulkClaim
	case key.Matches(msg, v.k.Dead) && !v.isDLQ():
		op = bulkDead
	default:
		return status("bulk action cancelled")
	}
	plan := bulkPlan{stream: v.stream, group: v.group, rule: v.rule, consumers: claimTargets(v.consumers),
		reason: "moved in bulk by an operator from the spectacles console on " + v.sh.node.Name}
	return tea.Batch(status("counting the entries that match "+v.rule.String()+"…"), countBulk(v.sh, op, plan))
}

// ownerOf is the one consumer that owns every id on this page, or "".
func (v *pendingView) ownerOf(ids []string) string {
	owner := ""
	for _, p := range v.rows {
		if !slices.Contains(ids, p.ID) {
			continue
		}
		if owner != "" && p.Consumer != owner {
			return ""
		}
		owner = p.Consumer
	}
	return owner
}

func (v *pendingView) view() string {
	st := v.sh.st
	if msg, wait := awaitStream(v.sh, &v.load, v.stream, "No group chosen: pick a stream in Streams, then a group (enter), or type :pending STREAM [GROUP].", "loading pending entries…"); wait {
		return msg
	}
	var top string
	if v.load.err == nil && pendingInspector(v.sh.backend) == nil {
		if v.sh.amqp() {
			return v.amqpView()
		}
		return " " + st.warn.Render(noPendingWhy) + "\n " +
			st.muted.Render(fmt.Sprintf("%s pending in %s · %s consumers", fmtKnown(v.info.Pending), v.group, fmt.Sprint(v.info.Consumers)))
	}
	filtered := !v.rule.IsAll()
	switch {
	case v.job != nil:
		top = v.job.progressLine(st, v.jobProgress, v.tbl.width)
	case v.load.err != nil:
		if errors.Is(v.load.err, core.ErrUnsupported) {
			top = " " + st.warn.Render("this broker cannot list pending entries: "+v.sh.errText(v.load.err))
		} else {
			top = " " + st.bad.Render("✗ "+v.sh.errText(v.load.err))
		}
	default:
		off := v.offsets[len(v.offsets)-1]
		pos := fmt.Sprintf("page %d · rows %s–%s", len(v.starts), fmtCount(int64(min(off+1, off+len(v.rows)))), fmtCount(int64(off+len(v.rows))))
		top = fmt.Sprintf(" %s pending in %s · %s · %s consumers", fmtCount(v.info.Pending), v.group, pos, fmt.Sprint(v.info.Consumers))
		if n := len(v.tbl.marked); n > 0 {
			top += st.marked.Render(fmt.Sprintf(" · %d marked", n))
		}
		if filtered {
			top += st.accent.Render(" · filtered: " + v.rule.String())
		}
		top = truncate(st.muted.Render(top), v.tbl.width)
	}
	v.tbl.empty = "nothing pending"
	if filtered {
		v.tbl.empty = "nothing pending matches " + v.rule.String()
	}
	return top + "\n" + v.tbl.view()
}

// amqpView explains, on RabbitMQ, why no unacknowledged message is listed,
// with what RabbitMQ counts instead.
func (v *pendingView) amqpView() string {
	st := v.sh.st
	var b strings.Builder
	line := func(s string) { b.WriteString(" " + s + "\n") }
	line(st.warn.Render(fmt.Sprintf("%s; unacked per queue: %s", amqpPendingWhy, fmtKnown(v.info.Pending))))
	line("")
	line(st.title.Render("Queue "+v.group) + "  " + fmt.Sprintf("%s unacked · %s ready · %s", fmtKnown(v.info.Pending), fmtKnown(v.info.Lag), plural(v.info.Consumers, "consumer")))
	for _, c := range v.consumers {
		held := "unacked not counted per consumer"
		if c.Pending >= 0 {
			held = "holds " + fmtCount(c.Pending) + " unacked"
		}
		line("   " + truncate(c.Name, max(v.tbl.width-40, 20)) + st.muted.Render("  "+held))
	}
	var others []string
	for _, g := range v.all {
		if g.Name != v.group {
			others = append(others, fmt.Sprintf("%s %s unacked, %s ready", g.Name, fmtKnown(g.Pending), fmtKnown(g.Lag)))
		}
	}
	if len(others) > 0 {
		line(st.muted.Render("Other queues of " + v.stream + ": " + strings.Join(others, " · ")))
	}
	line("")
	line(st.muted.Render("Ack, claim and dead-letter are unavailable on RabbitMQ (? shows why). Instead:"))
	line(st.muted.Render(" · an unacked message returns to its queue when its consumer's channel closes (stop or restart it);"))
	line(st.muted.Render(" · the driver dead-letters a message after MaxDeliveries deliveries, a handler with Reject;"))
	source := v.stream
	if s, ok := dlqSource(v.stream); ok {
		source = s
	}
	line(st.muted.Render(" · dead letters are listed and requeued in the tail: :dlq " + source + ", then R."))
	return b.String()
}
