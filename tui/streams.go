package tui

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
)

// maxStreamsWithGroups bounds how many streams get their groups read on
// each refresh (one request each).
const maxStreamsWithGroups = 500

// rateTracker turns counters sampled at refreshes into rates per second.
type rateTracker struct {
	prev map[string]rateSample
}

type rateSample struct {
	in, out int64
	at      time.Time
}

// rate records a sample and returns the rates since the previous one (NaN
// when there is none, or the counter went back).
func (r *rateTracker) rate(name string, in, out int64, at time.Time) (inRate, outRate float64) {
	if r.prev == nil {
		r.prev = map[string]rateSample{}
	}
	inRate, outRate = math.NaN(), math.NaN()
	if p, ok := r.prev[name]; ok {
		if dt := at.Sub(p.at).Seconds(); dt > 0 {
			if in >= p.in && in >= 0 {
				inRate = float64(in-p.in) / dt
			}
			if out >= p.out && out >= 0 {
				outRate = float64(out-p.out) / dt
			}
		}
	}
	r.prev[name] = rateSample{in: in, out: out, at: at}
	return inRate, outRate
}

// delivered counts the entries delivered to a stream's groups (length −
// lag, summed), or -1 when unknown.
func delivered(length int64, groups []core.GroupInfo) int64 {
	var n int64
	for _, g := range groups {
		if g.Lag < 0 {
			return -1
		}
		n += max(length-g.Lag, 0)
	}
	return n
}

type streamRow struct {
	core.StreamInfo
	groups  []core.GroupInfo
	in, out float64
	// ready, unacked and consumers sum the queues of an AMQP event.
	ready, unacked int64
	consumers      int
}

type streamsResult struct {
	seq, gen uint64
	streams  []core.StreamInfo
	groups   map[string][]core.GroupInfo
	err      error
	stats    error // statsOf after the load
	at       time.Time
}

func (streamsResult) target() kind { return kStreams }

// statsOf asks ins, after a load, whether its statistics are complete
// (core.StatsChecker): nil when they are, else why not. Call it from a
// command.
func statsOf(ins core.Inspector) error {
	if c, ok := ins.(core.StatsChecker); ok {
		return c.StatsErr()
	}
	return nil
}

// statsBanner is the line views show above figures that the broker could
// not give (blank rather than zero), "" while the statistics are complete.
func statsBanner(sh *shared) string {
	if sh.stats == nil {
		return ""
	}
	return " " + sh.st.bad.Render("⚠ "+sh.errText(sh.stats)) + "\n " +
		sh.st.muted.Render("Figures are blank (–) where unknown; the queues listed are only those this console itself consumes.") + "\n"
}

// loadStreams lists the streams and the groups of each.
func loadStreams(sh *shared, ins core.Inspector) ([]core.StreamInfo, map[string][]core.GroupInfo, error) {
	ctx, cancel := sh.ctx()
	defer cancel()
	list, err := ins.Streams(ctx)
	if err != nil {
		return nil, nil, err
	}
	groups := make(map[string][]core.GroupInfo, len(list))
	for i, s := range list {
		if i >= maxStreamsWithGroups {
			break
		}
		if s.Groups == 0 {
			continue
		}
		g, err := ins.Groups(ctx, s.Name)
		if err != nil {
			return list, groups, err
		}
		groups[s.Name] = sh.fixGroups(g)
	}
	return list, groups, nil
}

type sortKey int

const (
	sortName sortKey = iota
	sortLength
	sortGroups
	sortIn
	sortOut
	numSorts
)

var sortNames = [numSorts]string{"name", "length", "groups", "in/s", "out/s"}

// streamCols are the Streams columns of a Redis broker; amqpStreamCols of
// RabbitMQ, where a stream is an event (a routing key) and its groups are
// the queues bound for it: no ids in order, and depths rather than
// counters, so no rates.
var (
	streamCols = []column{
		{title: "STREAM", width: 18, flex: true},
		{title: "LENGTH", width: 11, right: true},
		{title: "GROUPS", width: 6, right: true},
		{title: "IN", width: 8, right: true},
		{title: "OUT", width: 8, right: true},
		{title: "FIRST ID", width: 16},
		{title: "LAST ID", width: 16},
	}
	amqpStreamCols = []column{
		{title: "EVENT", width: 18, flex: true},
		{title: "MESSAGES", width: 11, right: true},
		{title: "QUEUES", width: 6, right: true},
		{title: "READY", width: 9, right: true},
		{title: "UNACKED", width: 9, right: true},
		{title: "CONSUMERS", width: 9, right: true},
	}
)

// queueTotals sums a stream's queues: ready, unacked (-1 when a queue's is
// unknown) and consumers.
func queueTotals(groups []core.GroupInfo) (ready, unacked int64, consumers int) {
	for _, g := range groups {
		consumers += g.Consumers
		if g.Lag < 0 || ready < 0 {
			ready = -1
		} else {
			ready += g.Lag
		}
		if g.Pending < 0 || unacked < 0 {
			unacked = -1
		} else {
			unacked += g.Pending
		}
	}
	return ready, unacked, consumers
}

// blank is a figure the broker cannot give now (statistics unavailable):
// shown as unknown, never as zero.
const blank = "–"

// fmtKnown shows a count, or "?" when it is unknown (negative).
func fmtKnown(n int64) string {
	if n < 0 {
		return "?"
	}
	return fmtCount(n)
}

type streamsView struct {
	viewBase
	sh     *shared
	load   loader
	rates  rateTracker
	all    []streamRow
	shown  []streamRow
	tbl    table
	filter string
	sortBy sortKey
	desc   bool
	k      struct {
		nav                                                          navKeys
		Open, Tail, Mark, Pending, DLQ, Publish, Copy, Sort, Reverse key.Binding
	}
}

func newStreams(sh *shared) *streamsView {
	v := &streamsView{sh: sh}
	v.tbl = newTable(sh.st, streamCols...)
	v.k.nav = newNavKeys()
	v.k.Open = bind("groups", "enter")
	v.k.Tail = bind("tail", "t")
	v.k.Mark = bindAs("space", "mark for tail", " ")
	v.k.Pending = bind("pending", "p")
	v.k.DLQ = bind("dead letters", "d")
	v.k.Publish = bind("publish to", "n")
	v.k.Copy = bind("copy name", "y")
	v.k.Sort = bind("sort", "s")
	v.k.Reverse = bind("reverse order", "S")
	return v
}

// amqpSortNames name the sorts on AMQP, where in/out stand for ready and
// unacked.
var amqpSortNames = [numSorts]string{"name", "messages", "queues", "ready", "unacked"}

func (v *streamsView) crumbs() []string {
	s := fmt.Sprintf("%s · sorted by %s", plural(len(v.all), "stream"), sortNames[v.sortBy])
	if v.sh.amqp() {
		s = fmt.Sprintf("%s · sorted by %s", plural(len(v.all), "event"), amqpSortNames[v.sortBy])
	}
	if v.desc {
		s += " ↓"
	}
	return []string{s}
}

func (v *streamsView) setSize(w, h int) { v.tbl.setSize(w, h) }

func (v *streamsView) updated() time.Time { return v.load.at }

func (v *streamsView) activate() tea.Cmd { return v.refresh() }

func (v *streamsView) refresh() tea.Cmd {
	ins, seq, gen, ok := v.load.beginInspect(v.sh, true)
	if !ok {
		return nil
	}
	sh := v.sh
	return func() tea.Msg {
		list, groups, err := loadStreams(sh, ins)
		return streamsResult{seq: seq, gen: gen, streams: list, groups: groups, err: err, stats: statsOf(ins), at: sh.now()}
	}
}

func (v *streamsView) capturing() bool { return false }
func (v *streamsView) filterSyntax() string {
	return "text: the streams whose name contains it (any case), e.g. /dlq"
}
func (v *streamsView) canFilter() bool    { return true }
func (v *streamsView) filterText() string { return v.filter }

func (v *streamsView) setFilter(text string) tea.Cmd {
	v.filter = text
	v.apply()
	return nil
}

func (v *streamsView) keys() []key.Binding {
	has := len(v.shown) > 0
	for _, b := range []*key.Binding{&v.k.Open, &v.k.Tail, &v.k.Mark, &v.k.Pending, &v.k.DLQ, &v.k.Copy} {
		b.SetEnabled(has)
	}
	v.k.Publish.SetEnabled(has && !v.sh.readOnly && v.sh.backend.Broker() != nil)
	if v.sh.amqp() {
		v.k.Pending.SetHelp("p", "unacked (explained)")
		// Only dead letters can be read without consuming them.
		row, _ := v.selected()
		_, dlq := dlqSource(row.Name)
		v.k.Tail.SetEnabled(has && dlq)
		v.k.Mark.SetEnabled(false)
	}
	out := append(v.k.nav.list()[:2], v.k.Open, v.k.Pending, v.k.Tail, v.k.Mark, v.k.DLQ, v.k.Publish, v.k.Copy, v.k.Sort, v.k.Reverse)
	return out
}

// amqpTailWhy is why a live AMQP event cannot be tailed.
const amqpTailWhy = "RabbitMQ queues cannot be read without consuming them; only dead letters (d, or :dlq EVENT) can be listed"

func (v *streamsView) unavailable() []unavailableKey {
	if !v.sh.amqp() {
		return nil
	}
	var out []unavailableKey
	if !v.k.Tail.Enabled() {
		out = append(out, unavailableKey{key: v.k.Tail, why: amqpTailWhy + " (t works on an EVENT:dlq row)"})
	}
	return append(out, unavailableKey{key: v.k.Mark, why: "marks choose live queues to tail, which RabbitMQ cannot read"})
}

func (v *streamsView) selected() (streamRow, bool) {
	k := v.tbl.selectedKey()
	for _, r := range v.shown {
		if r.Name == k {
			return r, true
		}
	}
	return streamRow{}, false
}

func (v *streamsView) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case streamsResult:
		apply, again := v.load.finish(msg.seq, msg.gen)
		if apply {
			v.load.err, v.load.loaded, v.load.at = msg.err, true, msg.at
			v.sh.stats = msg.stats
			if msg.err == nil || msg.streams != nil {
				rows := make([]streamRow, 0, len(msg.streams))
				amqp := v.sh.amqp()
				for _, s := range msg.streams {
					g := msg.groups[s.Name]
					if amqp {
						// Queue depths, not counters: no rates.
						r := streamRow{StreamInfo: s, groups: g, in: math.NaN(), out: math.NaN()}
						r.ready, r.unacked, r.consumers = queueTotals(g)
						rows = append(rows, r)
						continue
					}
					in, out := v.rates.rate(s.Name, s.Length, delivered(s.Length, g), msg.at)
					if s.Groups == 0 {
						out = math.NaN()
					}
					rows = append(rows, streamRow{StreamInfo: s, groups: g, in: in, out: out})
				}
				v.all = rows
				v.apply()
			}
		}
		if again {
			return v.refresh()
		}
		return nil
	}
	return nil
}

func (v *streamsView) key(msg tea.KeyMsg) tea.Cmd {
	if _, ok := v.k.nav.move(msg, &v.tbl); ok {
		return nil
	}
	row, ok := v.selected()
	if ok && v.sh.amqp() {
		if cmd := pressedUnavailable(msg, v.unavailable()); cmd != nil {
			return cmd
		}
	}
	switch {
	case key.Matches(msg, v.k.Sort):
		v.sortBy = (v.sortBy + 1) % numSorts
		v.desc = v.sortBy != sortName
		v.apply()
	case key.Matches(msg, v.k.Reverse):
		v.desc = !v.desc
		v.apply()
	case !ok:
		return nil
	case key.Matches(msg, v.k.Open):
		return emit(navMsg{to: kGroups, stream: row.Name})
	case key.Matches(msg, v.k.Pending):
		return emit(navMsg{to: kPending, stream: row.Name})
	case key.Matches(msg, v.k.Mark):
		v.tbl.toggleMark()
		v.tbl.move(1)
	case key.Matches(msg, v.k.Tail):
		var names []string
		for _, r := range v.all {
			if v.tbl.marked[r.Name] {
				names = append(names, r.Name)
			}
		}
		if len(names) == 0 {
			names = []string{row.Name}
		}
		clear(v.tbl.marked)
		return emit(navMsg{to: kTail, streams: names})
	case key.Matches(msg, v.k.DLQ):
		name := row.Name
		if _, isDLQ := dlqSource(name); !isDLQ {
			name = dlqOf(name)
		}
		return emit(navMsg{to: kTail, streams: []string{name}})
	case key.Matches(msg, v.k.Publish):
		return emit(navMsg{to: kPublish, event: row.Name})
	case pressed(msg, v.k.Publish):
		return statusErr("read-only: publishing is disabled")
	case key.Matches(msg, v.k.Copy):
		return emit(copyMsg{what: "stream name " + row.Name, text: row.Name})
	}
	return nil
}

// apply filters and sorts the rows into the table.
func (v *streamsView) apply() {
	f := strings.ToLower(v.filter)
	v.shown = v.shown[:0]
	for _, r := range v.all {
		if f == "" || strings.Contains(strings.ToLower(r.Name), f) {
			v.shown = append(v.shown, r)
		}
	}
	amqp := v.sh.amqp()
	rate := func(x float64) float64 {
		if math.IsNaN(x) {
			return -1
		}
		return x
	}
	slices.SortStableFunc(v.shown, func(a, b streamRow) int {
		var c int
		switch v.sortBy {
		case sortLength:
			c = cmp.Compare(a.Length, b.Length)
		case sortGroups:
			c = cmp.Compare(a.Groups, b.Groups)
		case sortIn:
			c = cmp.Compare(rate(a.in), rate(b.in))
			if amqp {
				c = cmp.Compare(a.ready, b.ready)
			}
		case sortOut:
			c = cmp.Compare(rate(a.out), rate(b.out))
			if amqp {
				c = cmp.Compare(a.unacked, b.unacked)
			}
		}
		if c == 0 {
			c = strings.Compare(a.Name, b.Name)
			if v.desc {
				c = -c
			}
		}
		if v.desc {
			return -c
		}
		return c
	})
	rows := make([][]string, len(v.shown))
	keys := make([]string, len(v.shown))
	v.tbl.cols = streamCols
	if amqp {
		v.tbl.cols = amqpStreamCols
	}
	for i, r := range v.shown {
		if amqp {
			rows[i] = []string{r.Name, fmtCount(r.Length), fmt.Sprint(r.Groups), fmtKnown(r.ready), fmtKnown(r.unacked), fmt.Sprint(r.consumers)}
			if v.sh.stats != nil { // AMQP alone: the own queue's ready messages
				rows[i] = []string{r.Name, blank, fmt.Sprint(r.Groups), fmtKnown(r.ready), blank, blank}
			}
		} else {
			rows[i] = []string{r.Name, fmtCount(r.Length), fmt.Sprint(r.Groups), fmtRate(r.in), fmtRate(r.out), r.FirstID, r.LastID}
		}
		keys[i] = r.Name
	}
	v.tbl.setRows(rows, keys)
	switch {
	case v.filter != "":
		v.tbl.empty = "no stream matches " + v.filter
	case v.sh.stats != nil:
		v.tbl.empty = "none known: " + v.sh.errText(v.sh.stats)
	case amqp:
		v.tbl.empty = "no queues bound on this exchange yet"
	default:
		v.tbl.empty = "no streams yet"
	}
}

func (v *streamsView) view() string {
	if msg := inspectorMissing(v.sh); msg != "" {
		return msg
	}
	if !v.load.loaded && v.load.err == nil {
		return " " + v.sh.st.muted.Render("loading streams…")
	}
	out := statsBanner(v.sh) + v.tbl.view()
	if v.load.err != nil {
		out = " " + v.sh.st.bad.Render("✗ "+v.sh.errText(v.load.err)) + "\n" + out
	}
	if v.sh.amqp() {
		out += "\n\n " + v.sh.st.muted.Render("RabbitMQ: one row per event (routing key); MESSAGES is the depth of its queues (ready + unacked),")
		out += "\n " + v.sh.st.muted.Render("QUEUES the queues bound for it. Counts are RabbitMQ's statistics, a few seconds old.")
	}
	return out
}

// inspectorMissing explains a broker without inspection, or returns "".
func inspectorMissing(sh *shared) string {
	if sh.backend.Inspector() != nil {
		return ""
	}
	return " " + sh.st.warn.Render("This broker offers no inspection (it does not implement core.Inspector).") + "\n " +
		sh.st.muted.Render("Publish, Send and Shards still work.")
}
