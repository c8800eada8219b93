package tui

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
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
	consumer      string
	minIdle       time.Duration
	tbl           table
	k             struct {
		nav                                                      navKeys
		Payload, Mark, MarkPage, Ack, Claim, Dead, Requeue, Copy key.Binding
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
	v.k.Payload = bind("payload", "enter")
	v.k.Mark = bindAs("space", "mark", " ")
	v.k.MarkPage = bind("mark page", "a")
	v.k.Ack = bind("ack", "A")
	v.k.Claim = bind("claim to…", "c")
	v.k.Dead = bind("move to dead letters", "D")
	v.k.Requeue = bind("requeue dead letters", "R")
	v.k.Copy = bind("copy id", "y")
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
func (v *pendingView) capturing() bool   { return false }

func (v *pendingView) canFilter() bool    { return true }
func (v *pendingView) filterText() string { return v.filter }

// setFilter reads "NAME" (a consumer) and "idle>DURATION" terms.
func (v *pendingView) setFilter(text string) tea.Cmd {
	v.filter = text
	consumer, minIdle := "", time.Duration(0)
	var bad string
	for f := range strings.FieldsSeq(text) {
		if rest, ok := strings.CutPrefix(f, "idle>"); ok {
			d, err := time.ParseDuration(rest)
			if err != nil {
				bad = rest
				continue
			}
			minIdle = d
			continue
		}
		consumer = f
	}
	if consumer == v.consumer && minIdle == v.minIdle {
		return nil
	}
	v.consumer, v.minIdle = consumer, minIdle
	v.reset()
	cmd := v.refresh()
	if bad != "" {
		return tea.Batch(cmd, statusErr(fmt.Sprintf("filter: %q is not a duration (idle>30s)", bad)))
	}
	return cmd
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
	q := core.PendingQuery{After: v.starts[len(v.starts)-1], Count: v.tbl.pageRows(), Consumer: v.consumer, MinIdle: v.minIdle}
	return func() tea.Msg {
		r := pendingResult{seq: seq, gen: gen, group: group}
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
			r.page, r.err = pi.Pending(ctx, stream, r.group, q)
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
	for _, b := range []*key.Binding{&v.k.Payload, &v.k.Mark, &v.k.MarkPage, &v.k.Copy} {
		b.SetEnabled(has)
	}
	for _, b := range []*key.Binding{&v.k.Ack, &v.k.Claim} {
		b.SetEnabled(write)
	}
	v.k.Dead.SetEnabled(write && !v.isDLQ())
	v.k.Requeue.SetEnabled(write && v.isDLQ())
	if pendingInspector(v.sh.backend) == nil {
		for _, b := range []*key.Binding{&v.k.Ack, &v.k.Claim, &v.k.Dead, &v.k.Requeue} {
			b.SetEnabled(false)
		}
	}
	return append(v.k.nav.list()[:4], v.k.Payload, v.k.Mark, v.k.MarkPage, v.k.Ack, v.k.Claim, v.k.Dead, v.k.Requeue, v.k.Copy)
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
			v.load.err, v.load.loaded = msg.err, true
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
	case submittedMsg:
		// A claim's consumer was typed: the marks are done with.
		clear(v.tbl.marked)
		return nil
	}
	return nil
}

func (v *pendingView) setPage(page []core.PendingEntry) {
	if len(page) == 0 && len(v.starts) > 1 {
		// The page emptied (acknowledged meanwhile): step back.
		v.starts, v.offsets = v.starts[:len(v.starts)-1], v.offsets[:len(v.offsets)-1]
		v.load.dirty = true
		return
	}
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
	v.starts = append(v.starts, v.rows[len(v.rows)-1].ID)
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
		if i := v.tbl.cursor; i > 0 && i < len(v.rows) {
			prev = v.rows[i-1].ID
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
	case key.Matches(msg, v.k.Ack) && ins != nil:
		clear(v.tbl.marked)
		return emit(confirmMsg{
			prompt: fmt.Sprintf("Acknowledge %s of %s? They leave the pending list for good.", plural(len(ids), "entry"), target),
			acts:   []action{ackAction{stream: stream, group: group, ids: ids}},
		})
	case key.Matches(msg, v.k.Claim) && ins != nil:
		names := make([]string, 0, len(v.consumers))
		for _, c := range v.consumers {
			names = append(names, c.Name)
		}
		hint := "(default: this console)"
		if len(names) > 0 {
			hint = "consumers: " + strings.Join(names, ", ")
		}
		return emit(promptMsg{label: fmt.Sprintf("Claim %s to consumer", plural(len(ids), "entry")), value: sh.node.Client, hint: hint,
			from: kPending, act: claimAction{stream: stream, group: group, ids: ids}})
	case key.Matches(msg, v.k.Dead) && ins != nil:
		clear(v.tbl.marked)
		return emit(confirmMsg{
			prompt: fmt.Sprintf("Move %s of %s to %s (acknowledging them here)?", plural(len(ids), "entry"), target, dlqOf(stream)),
			acts: []action{deadLetterAction{stream: stream, group: group, ids: ids,
				reason: "moved by an operator from the spectacles console on " + sh.node.Name}},
		})
	case key.Matches(msg, v.k.Requeue):
		clear(v.tbl.marked)
		source, _ := dlqSource(stream)
		return emit(confirmMsg{
			prompt: fmt.Sprintf("Requeue %s from %s to %s?", plural(len(ids), "dead letter"), stream, source),
			acts:   []action{requeueAction{from: kPending, source: source, group: group, ids: ids}},
		})
	case pressed(msg, v.k.Ack), pressed(msg, v.k.Claim), pressed(msg, v.k.Dead), pressed(msg, v.k.Requeue):
		if v.sh.readOnly {
			return statusErr("read-only: ack, claim, dead-letter and requeue are disabled")
		}
		if pressed(msg, v.k.Requeue) && !v.isDLQ() {
			return statusErr("requeue works on dead letters: open the pending entries of " + dlqOf(v.stream) + ", or :dlq " + v.stream)
		}
	}
	return nil
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
	if v.load.err != nil {
		if errors.Is(v.load.err, core.ErrUnsupported) {
			top = " " + st.warn.Render("this broker cannot list pending entries: "+v.sh.errText(v.load.err))
		} else {
			top = " " + st.bad.Render("✗ "+v.sh.errText(v.load.err))
		}
	} else {
		off := v.offsets[len(v.offsets)-1]
		pos := fmt.Sprintf("page %d · rows %s–%s", len(v.starts), fmtCount(int64(min(off+1, off+len(v.rows)))), fmtCount(int64(off+len(v.rows))))
		top = fmt.Sprintf(" %s pending in %s · %s · %s consumers", fmtCount(v.info.Pending), v.group, pos, fmt.Sprint(v.info.Consumers))
		if n := len(v.tbl.marked); n > 0 {
			top += st.marked.Render(fmt.Sprintf(" · %d marked", n))
		}
		if v.consumer != "" || v.minIdle > 0 {
			top += st.accent.Render(" · filtered")
		}
		top = st.muted.Render(top)
	}
	v.tbl.empty = "nothing pending"
	if v.consumer != "" || v.minIdle > 0 {
		v.tbl.empty = "nothing pending matches the filter"
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
