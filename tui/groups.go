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
	"github.com/charmbracelet/lipgloss"

	"github.com/spectacles-go/spectacles/core"
)

// maxGroupsWithConsumers bounds the consumer lists read per refresh.
const maxGroupsWithConsumers = 50

type groupsResult struct {
	seq, gen  uint64
	stream    core.StreamInfo
	groups    []core.GroupInfo
	consumers map[string][]core.ConsumerInfo
	err       error
	stats     error // statsOf after the load
	at        time.Time
}

func (groupsResult) target() kind { return kGroups }

// The Groups columns of Redis, and of RabbitMQ: a group is a queue,
// Pending its unacknowledged messages, Lag its ready ones; consumers are
// consumer tags @ connection names, with unknown idle times.
var (
	groupCols = []column{
		{title: "GROUP", width: 16, flex: true},
		{title: "CONSUMERS", width: 9, right: true},
		{title: "PENDING", width: 9, right: true},
		{title: "LAG", width: 9, right: true},
		{title: "OUT", width: 8, right: true},
		{title: "LAST DELIVERED", width: 16},
	}
	amqpGroupCols = []column{
		{title: "QUEUE", width: 24, flex: true},
		{title: "CONSUMERS", width: 9, right: true},
		{title: "UNACKED", width: 9, right: true},
		{title: "READY", width: 9, right: true},
		{title: "MESSAGES", width: 9, right: true},
	}
	consumerCols = []column{
		{title: "CONSUMER", width: 20, flex: true},
		{title: "PENDING", width: 9, right: true},
		{title: "IDLE", width: 9, right: true},
		{title: "STATE", width: 24},
	}
	amqpConsumerCols = []column{
		{title: "CONSUMER (TAG @ CONNECTION)", width: 30, flex: true},
		{title: "UNACKED", width: 9, right: true},
		{title: "STATE", width: 26},
	}
)

type groupsView struct {
	viewBase
	sh        *shared
	load      loader
	stream    string
	info      core.StreamInfo
	groups    []core.GroupInfo
	consumers map[string][]core.ConsumerInfo
	rates     rateTracker
	outRates  map[string]float64
	gt, ct    table
	filter    string
	sortBy    groupSort
	desc      bool
	shown     []core.GroupInfo // v.groups filtered and sorted
	k         struct{ Up, Down, Open, Copy, Tail, Sort, Reverse key.Binding }
}

// groupSort orders the Groups view: groups and their consumers by
// pending entries (the default, most first), by idle time (groups by the
// longest idle of their consumers), or by name.
type groupSort int

const (
	groupByPending groupSort = iota
	groupByIdle
	groupByName
	numGroupSorts
)

var groupSortNames = [numGroupSorts]string{"pending", "idle", "name"}

func newGroups(sh *shared) *groupsView {
	v := &groupsView{sh: sh, outRates: map[string]float64{}, desc: true}
	v.gt = newTable(sh.st, groupCols...)
	v.gt.empty = "no consumer groups: nothing consumes this stream"
	v.ct = newTable(sh.st, consumerCols...)
	v.ct.focused = false
	v.ct.empty = "no consumers"
	v.k.Up = bindAs("↑/k", "up", "up", "k")
	v.k.Down = bindAs("↓/j", "down", "down", "j")
	v.k.Open = bind("pending entries", "enter")
	v.k.Copy = bind("copy group name", "y")
	v.k.Tail = bind("tail stream", "t")
	v.k.Sort = bind("sort: pending, idle, name", "s")
	v.k.Reverse = bind("reverse order", "S")
	return v
}

func (v *groupsView) canFilter() bool    { return true }
func (v *groupsView) filterText() string { return v.filter }
func (v *groupsView) filterSyntax() string {
	return "text: the groups, and consumers, whose name contains it (any case), e.g. /worker"
}

func (v *groupsView) setFilter(text string) tea.Cmd {
	v.filter = text
	v.fill()
	return nil
}

// open shows the groups of n's stream, if it names one.
func (v *groupsView) open(n navMsg) {
	if n.stream != "" {
		v.setStream(n.stream)
	}
}

func (v *groupsView) setStream(stream string) {
	if stream == v.stream {
		return
	}
	v.stream = stream
	v.groups, v.consumers, v.info = nil, nil, core.StreamInfo{}
	v.rates = rateTracker{}
	v.gt.cursor, v.gt.top = 0, 0
	v.load.invalidate()
}

func (v *groupsView) crumbs() []string {
	if v.stream == "" {
		return nil
	}
	s := "sorted by " + groupSortNames[v.sortBy]
	if v.desc {
		s += " ↓"
	}
	return []string{v.stream, s}
}

func (v *groupsView) setSize(w, h int) {
	gh := max(h/2, 4)
	v.gt.setSize(w, gh)
	v.ct.setSize(w, max(h-gh-2, 2))
}

func (v *groupsView) activate() tea.Cmd  { return v.refresh() }
func (v *groupsView) updated() time.Time { return v.load.at }
func (v *groupsView) capturing() bool    { return false }

func (v *groupsView) refresh() tea.Cmd {
	ins, seq, gen, ok := v.load.beginInspect(v.sh, v.stream != "")
	if !ok {
		return nil
	}
	sh, stream := v.sh, v.stream
	return func() tea.Msg {
		r := groupsResult{seq: seq, gen: gen, consumers: map[string][]core.ConsumerInfo{}}
		ctx, cancel := sh.ctx()
		defer cancel()
		r.groups, r.err = ins.Groups(ctx, stream)
		r.groups = sh.fixGroups(r.groups)
		if r.err == nil {
			if list, err := ins.Streams(ctx); err == nil {
				for _, s := range list {
					if s.Name == stream {
						r.stream = s
					}
				}
			}
			for i, g := range r.groups {
				if i >= maxGroupsWithConsumers {
					break
				}
				c, err := ins.Consumers(ctx, stream, g.Name)
				if errors.Is(err, core.ErrStatsUnavailable) {
					break // the banner says why
				}
				if err != nil {
					r.err = err
					break
				}
				r.consumers[g.Name] = c
			}
		}
		r.stats = statsOf(ins)
		r.at = sh.now()
		return r
	}
}

func (v *groupsView) keys() []key.Binding {
	has := len(v.shown) > 0
	v.k.Open.SetEnabled(has)
	v.k.Copy.SetEnabled(has)
	v.k.Tail.SetEnabled(v.stream != "")
	if v.sh.amqp() {
		v.k.Open.SetHelp("enter", "unacked (explained)")
		v.k.Copy.SetHelp("y", "copy queue name")
		_, dlq := dlqSource(v.stream)
		v.k.Tail.SetEnabled(dlq)
	}
	return []key.Binding{v.k.Up, v.k.Down, v.k.Open, v.k.Tail, v.k.Copy, v.k.Sort, v.k.Reverse}
}

func (v *groupsView) unavailable() []unavailableKey {
	if !v.sh.amqp() || v.k.Tail.Enabled() || v.stream == "" {
		return nil
	}
	return []unavailableKey{{key: v.k.Tail, why: amqpTailWhy}}
}

func (v *groupsView) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case groupsResult:
		apply, again := v.load.finish(msg.seq, msg.gen)
		if apply {
			v.load.err, v.load.loaded, v.load.at = msg.err, true, msg.at
			v.sh.stats = msg.stats
			if msg.err == nil {
				v.info, v.groups, v.consumers = msg.stream, msg.groups, msg.consumers
				for _, g := range v.groups {
					if v.sh.amqp() {
						break // queue depths: no delivered counter
					}
					_, out := v.rates.rate(g.Name, 0, delivered(v.info.Length, []core.GroupInfo{g}), msg.at)
					v.outRates[g.Name] = out
				}
				v.fill()
			}
		}
		if again {
			return v.refresh()
		}
	case tea.KeyMsg:
		v.keys()
		if cmd := pressedUnavailable(msg, v.unavailable()); cmd != nil {
			return cmd
		}
		switch {
		case key.Matches(msg, v.k.Up):
			v.gt.move(-1)
			v.fillConsumers()
		case key.Matches(msg, v.k.Down):
			v.gt.move(1)
			v.fillConsumers()
		case key.Matches(msg, v.k.Open):
			return emit(navMsg{to: kPending, stream: v.stream, group: v.gt.selectedKey()})
		case key.Matches(msg, v.k.Copy):
			g := v.gt.selectedKey()
			return emit(copyMsg{what: "group name " + g, text: g})
		case key.Matches(msg, v.k.Tail):
			return emit(navMsg{to: kTail, streams: []string{v.stream}})
		case key.Matches(msg, v.k.Sort):
			v.sortBy = (v.sortBy + 1) % numGroupSorts
			v.desc = v.sortBy != groupByName // most first
			v.fill()
		case key.Matches(msg, v.k.Reverse):
			v.desc = !v.desc
			v.fill()
		}
	}
	return nil
}

// consumersShown are the consumers of group the filter keeps (all of them
// when the group's own name matches), sorted.
func (v *groupsView) consumersShown(group string) []core.ConsumerInfo {
	f := strings.ToLower(v.filter)
	var out []core.ConsumerInfo
	for _, c := range v.consumers[group] {
		if f == "" || strings.Contains(strings.ToLower(group), f) || strings.Contains(strings.ToLower(c.Name), f) {
			out = append(out, c)
		}
	}
	slices.SortStableFunc(out, func(a, b core.ConsumerInfo) int {
		var c int
		switch v.sortBy {
		case groupByPending:
			c = cmp.Compare(a.Pending, b.Pending)
		case groupByIdle:
			c = cmp.Compare(a.Idle, b.Idle)
		case groupByName:
			c = strings.Compare(a.Name, b.Name)
		}
		return thenByName(c, a.Name, b.Name, v.desc)
	})
	return out
}

// thenByName orders by c (reversed when desc), then by name: ties stay
// in name order either way, as rows do while the figures are unknown.
func thenByName(c int, a, b string, desc bool) int {
	switch {
	case c == 0:
		return strings.Compare(a, b)
	case desc:
		return -c
	}
	return c
}

// maxIdle is the longest idle time of group's consumers.
func (v *groupsView) maxIdle(group string) time.Duration {
	var d time.Duration
	for _, c := range v.consumers[group] {
		d = max(d, c.Idle)
	}
	return d
}

func (v *groupsView) fill() {
	f := strings.ToLower(v.filter)
	v.shown = v.shown[:0]
	for _, g := range v.groups {
		if f == "" || strings.Contains(strings.ToLower(g.Name), f) || len(v.consumersShown(g.Name)) > 0 {
			v.shown = append(v.shown, g)
		}
	}
	slices.SortStableFunc(v.shown, func(a, b core.GroupInfo) int {
		var c int
		switch v.sortBy {
		case groupByPending:
			c = cmp.Compare(a.Pending, b.Pending)
		case groupByIdle:
			c = cmp.Compare(v.maxIdle(a.Name), v.maxIdle(b.Name))
		case groupByName:
			c = strings.Compare(a.Name, b.Name)
		}
		return thenByName(c, a.Name, b.Name, v.desc)
	})
	v.gt.sortCol, v.gt.sortDesc = -1, v.desc
	v.ct.sortCol, v.ct.sortDesc = -1, v.desc
	switch v.sortBy {
	case groupByName:
		v.gt.sortCol, v.ct.sortCol = 0, 0
	case groupByPending:
		v.gt.sortCol, v.ct.sortCol = 2, 1
	case groupByIdle:
		if !v.sh.amqp() { // RabbitMQ gives no idle times
			v.ct.sortCol = 2
		}
	}
	rows := make([][]string, len(v.shown))
	keys := make([]string, len(v.shown))
	amqp := v.sh.amqp()
	v.gt.cols, v.ct.cols = groupCols, consumerCols
	v.gt.empty = "no consumer groups: nothing consumes this stream"
	if amqp {
		v.gt.cols, v.ct.cols = amqpGroupCols, amqpConsumerCols
		v.gt.empty = "no queues bound for this event: nothing consumes it"
		if v.sh.stats != nil {
			v.gt.empty = "none known: " + v.sh.errText(v.sh.stats)
		}
	}
	if v.filter != "" {
		v.gt.empty = "no group or consumer matches " + v.filter
	}
	for i, g := range v.shown {
		if amqp {
			depth := int64(-1)
			if g.Pending >= 0 && g.Lag >= 0 {
				depth = g.Pending + g.Lag
			}
			rows[i] = []string{g.Name, fmt.Sprint(g.Consumers), fmtKnown(g.Pending), fmtKnown(g.Lag), fmtKnown(depth)}
			if v.sh.stats != nil && g.Pending < 0 {
				rows[i][2], rows[i][4] = blank, blank
			}
			keys[i] = g.Name
			continue
		}
		lag := "?"
		if g.Lag >= 0 {
			lag = fmtCount(g.Lag)
		}
		rows[i] = []string{g.Name, fmt.Sprint(g.Consumers), fmtCount(g.Pending), lag, fmtRate(v.outRates[g.Name]), g.LastDeliveredID}
		keys[i] = g.Name
	}
	v.gt.setRows(rows, keys)
	v.fillConsumers()
}

// stale reports a consumer idle for longer than the message timeout.
func (v *groupsView) stale(c core.ConsumerInfo) bool {
	return v.sh.node.StaleAfter > 0 && c.Idle >= v.sh.node.StaleAfter
}

func (v *groupsView) fillConsumers() {
	list := v.consumersShown(v.gt.selectedKey())
	rows := make([][]string, len(list))
	keys := make([]string, len(list))
	amqp := v.sh.amqp()
	for i, c := range list {
		if amqp {
			state := "consuming"
			switch {
			case c.Pending > 0:
				state = fmt.Sprintf("working: holds %s", fmtCount(c.Pending))
			case c.Pending < 0:
				state = "consuming (? not counted)"
			}
			rows[i] = []string{c.Name, fmtKnown(c.Pending), state}
			keys[i] = c.Name
			continue
		}
		state := "active"
		switch {
		case v.stale(c) && c.Pending > 0:
			state = fmt.Sprintf("STALE: holds %s", fmtCount(c.Pending))
		case v.stale(c):
			state = "STALE"
		case c.Pending > 0:
			state = "working"
		}
		rows[i] = []string{c.Name, fmtCount(c.Pending), fmtDuration(c.Idle), state}
		keys[i] = c.Name
	}
	v.ct.setRows(rows, keys)
	v.ct.styleOf = func(i int) (lipgloss.Style, bool) {
		if i < len(list) && v.stale(list[i]) {
			return v.sh.st.warn, true
		}
		return lipgloss.Style{}, false
	}
}

func (v *groupsView) view() string {
	st := v.sh.st
	if msg, wait := awaitStream(v.sh, &v.load, v.stream, "No stream chosen: pick one in Streams (2, then enter), or type :groups STREAM.", "loading groups of "+v.stream+"…"); wait {
		return msg
	}
	var errLine string
	if v.load.err != nil {
		errLine = " " + st.bad.Render("✗ "+v.sh.errText(v.load.err)) + "\n"
	}
	sel := v.gt.selectedKey()
	title := " " + st.title.Render("Consumers of "+sel)
	if v.sh.node.StaleAfter > 0 && !v.sh.amqp() {
		title += st.muted.Render(fmt.Sprintf("  (stale: idle ≥ %s, the message timeout)", fmtDuration(v.sh.node.StaleAfter)))
	}
	if sel == "" {
		title = ""
	}
	if v.sh.node.Embedded {
		errLine += " " + st.muted.Render("LAG ? : the embedded server does not report lag") + "\n"
	}
	if v.sh.amqp() {
		errLine += " " + st.muted.Render("RabbitMQ queues: UNACKED delivered, not acknowledged · READY awaiting a consumer · ? not reported") + "\n"
	}
	return statsBanner(v.sh) + errLine + v.gt.view() + "\n\n" + title + "\n" + v.ct.view()
}
