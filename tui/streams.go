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
}

type streamsResult struct {
	seq, gen uint64
	streams  []core.StreamInfo
	groups   map[string][]core.GroupInfo
	err      error
	at       time.Time
}

func (streamsResult) target() kind { return kStreams }

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

type streamsView struct {
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
	v.tbl = newTable(sh.st,
		column{title: "STREAM", width: 18, flex: true},
		column{title: "LENGTH", width: 11, right: true},
		column{title: "GROUPS", width: 6, right: true},
		column{title: "IN", width: 8, right: true},
		column{title: "OUT", width: 8, right: true},
		column{title: "FIRST ID", width: 16},
		column{title: "LAST ID", width: 16},
	)
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

func (v *streamsView) crumbs() []string {
	s := fmt.Sprintf("%s · sorted by %s", plural(len(v.all), "stream"), sortNames[v.sortBy])
	if v.desc {
		s += " ↓"
	}
	return []string{s}
}

func (v *streamsView) setSize(w, h int) { v.tbl.setSize(w, h) }

func (v *streamsView) activate() tea.Cmd { return v.refresh() }

func (v *streamsView) refresh() tea.Cmd {
	ins := v.sh.backend.Inspector()
	if ins == nil {
		return nil
	}
	seq, gen, ok := v.load.begin()
	if !ok {
		return nil
	}
	sh := v.sh
	return func() tea.Msg {
		list, groups, err := loadStreams(sh, ins)
		return streamsResult{seq: seq, gen: gen, streams: list, groups: groups, err: err, at: sh.now()}
	}
}

func (v *streamsView) capturing() bool    { return false }
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
	out := append(v.k.nav.list()[:2], v.k.Open, v.k.Pending, v.k.Tail, v.k.Mark, v.k.DLQ, v.k.Publish, v.k.Copy, v.k.Sort, v.k.Reverse)
	return out
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
			if msg.err == nil || msg.streams != nil {
				rows := make([]streamRow, 0, len(msg.streams))
				for _, s := range msg.streams {
					g := msg.groups[s.Name]
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
	case tea.KeyMsg:
		return v.key(msg)
	}
	return nil
}

func (v *streamsView) key(msg tea.KeyMsg) tea.Cmd {
	v.keys()
	if _, ok := v.k.nav.move(msg, &v.tbl); ok {
		return nil
	}
	row, ok := v.selected()
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
		if _, isDLQ := core.IsDeadLetterEvent(name); !isDLQ {
			name = core.DeadLetterEvent(name)
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
		case sortOut:
			c = cmp.Compare(rate(a.out), rate(b.out))
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
	for i, r := range v.shown {
		rows[i] = []string{r.Name, fmtCount(r.Length), fmt.Sprint(r.Groups), fmtRate(r.in), fmtRate(r.out), r.FirstID, r.LastID}
		keys[i] = r.Name
	}
	v.tbl.setRows(rows, keys)
	if v.filter != "" {
		v.tbl.empty = "no stream matches " + v.filter
	} else {
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
	out := v.tbl.view()
	if v.load.err != nil {
		out = " " + v.sh.st.bad.Render("✗ "+v.sh.errText(v.load.err)) + "\n" + out
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
