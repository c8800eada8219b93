package tui

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/termtext"
)

// The Services view lists the service instances that announce themselves
// on the broker (presence: core.PresenceReader), grouped by group, with
// the latest presence events below when the broker remembers them.

// maxPresenceHistory is how many presence events the view shows.
const maxPresenceHistory = 8

type servicesResult struct {
	seq, gen  uint64
	instances []core.Instance
	history   []core.PresenceEvent
	// none is set when the broker reports no presence at all.
	none bool
	err  error
	at   time.Time
}

func (servicesResult) target() kind { return kServices }

var serviceCols = []column{
	{title: "GROUP", width: 14, flex: true},
	{title: "CLIENT", width: 14, flex: true},
	{title: "VERSION", width: 18},
	{title: "STATUS", width: 7},
	{title: "LAST SEEN", width: 9, right: true},
	{title: "EVENTS", width: 18, flex: true},
	{title: "CALLS", width: 10, flex: true},
}

type servicesView struct {
	viewBase
	sh        *shared
	load      loader
	instances []core.Instance
	history   []core.PresenceEvent
	none      bool
	filter    string
	shown     []core.Instance
	t         table
	width     int
	height    int
	k         struct{ Up, Down, Copy key.Binding }
}

func newServices(sh *shared) *servicesView {
	v := &servicesView{sh: sh}
	v.t = newTable(sh.st, serviceCols...)
	v.t.empty = "no service announces itself on this broker"
	v.k.Up = bindAs("↑/k", "up", "up", "k")
	v.k.Down = bindAs("↓/j", "down", "down", "j")
	v.k.Copy = bind("copy client name", "y")
	return v
}

// presenceOf returns the presence reader of b's broker, nil when it
// reports none.
func presenceOf(b Backend) core.PresenceReader {
	if p, ok := b.(presencer); ok {
		return p.Presence()
	}
	return nil
}

func (v *servicesView) crumbs() []string {
	if v.filter != "" {
		return []string{"filter " + termtext.Quote(v.filter)}
	}
	return nil
}

func (v *servicesView) setSize(w, h int) {
	v.width, v.height = w, h
	hist := 0
	if len(v.history) > 0 {
		hist = min(len(v.history), maxPresenceHistory) + 2
	}
	v.t.setSize(w, max(h-hist-1, 3)) // a summary line above
}

func (v *servicesView) activate() tea.Cmd  { return v.refresh() }
func (v *servicesView) updated() time.Time { return v.load.at }
func (v *servicesView) capturing() bool    { return false }
func (v *servicesView) canFilter() bool    { return true }
func (v *servicesView) filterText() string { return v.filter }
func (v *servicesView) filterSyntax() string {
	return "text: the instances whose group, client, version or events contain it (any case), e.g. /audit"
}

func (v *servicesView) setFilter(text string) tea.Cmd {
	v.filter = text
	v.fill()
	return nil
}

func (v *servicesView) refresh() tea.Cmd {
	seq, gen, ok := v.load.begin()
	if !ok {
		return nil
	}
	sh := v.sh
	p := presenceOf(sh.backend)
	return func() tea.Msg {
		r := servicesResult{seq: seq, gen: gen}
		if p == nil {
			r.none, r.at = true, sh.now()
			return r
		}
		ctx, cancel := sh.ctx()
		defer cancel()
		r.instances, r.err = p.Instances(ctx)
		if h, ok := p.(core.PresenceHistory); ok && r.err == nil {
			r.history, _ = h.PresenceHistory(ctx, maxPresenceHistory)
		}
		r.at = sh.now()
		return r
	}
}

func (v *servicesView) keys() []key.Binding {
	v.k.Copy.SetEnabled(len(v.shown) > 0)
	return []key.Binding{v.k.Up, v.k.Down, v.k.Copy}
}

func (v *servicesView) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case servicesResult:
		apply, again := v.load.finish(msg.seq, msg.gen)
		if apply {
			v.load.err, v.load.loaded, v.load.at = msg.err, true, msg.at
			v.none = msg.none
			if msg.err == nil {
				v.instances, v.history = msg.instances, msg.history
				v.fill()
				v.setSize(v.width, v.height) // room for the history below
			}
		}
		if again {
			return v.refresh()
		}
	case tea.KeyMsg:
		switch {
		case key.Matches(msg, v.k.Up):
			v.t.move(-1)
		case key.Matches(msg, v.k.Down):
			v.t.move(1)
		case key.Matches(msg, v.k.Copy):
			if i := v.t.cursor; i >= 0 && i < len(v.shown) {
				c := v.shown[i].Client
				return emit(copyMsg{what: "client name " + termtext.Quote(c), text: c})
			}
		}
	}
	return nil
}

// fill sorts and filters the instances into the table: by group, live
// ones first, then by client.
func (v *servicesView) fill() {
	now := v.sh.now()
	f := strings.ToLower(v.filter)
	v.shown = v.shown[:0]
	for _, in := range v.instances {
		text := strings.ToLower(strings.Join(append([]string{in.Group, in.Client, in.Version}, in.Events...), "\x00"))
		if f == "" || strings.Contains(text, f) {
			v.shown = append(v.shown, in)
		}
	}
	slices.SortStableFunc(v.shown, func(a, b core.Instance) int {
		return cmp.Or(strings.Compare(a.Group, b.Group), cmp.Compare(boolInt(a.Stale(now)), boolInt(b.Stale(now))),
			strings.Compare(a.Client, b.Client))
	})
	rows := make([][]string, len(v.shown))
	keys := make([]string, len(v.shown))
	for i, in := range v.shown {
		status := "online"
		if in.Stale(now) {
			status = "stale"
		}
		seen := "-"
		if !in.LastSeen.IsZero() {
			seen = fmtDuration(now.Sub(in.LastSeen).Truncate(100*time.Millisecond)) + " ago"
		}
		rows[i] = []string{termtext.Quote(in.Group), termtext.Quote(in.Client), termtext.Quote(in.Version), status, seen,
			strings.Join(quoteAll(in.Events), ","), strings.Join(quoteAll(in.Calls), ",")}
		keys[i] = in.Session + "\x00" + in.Group + "\x00" + in.Client
	}
	v.t.setRows(rows, keys)
	v.t.styleOf = func(row int) (lipgloss.Style, bool) {
		if row < len(v.shown) && v.shown[row].Stale(now) {
			return v.sh.st.warn, true
		}
		return lipgloss.Style{}, false
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (v *servicesView) view() string {
	st := v.sh.st
	if !v.load.loaded {
		return " " + st.muted.Render("loading service instances…")
	}
	if v.none {
		return " " + st.muted.Render("This broker reports no presence. Services announce themselves on Redis (and the embedded broker), on RabbitMQ (read from its management API) and on a spectacles hub.")
	}
	var b strings.Builder
	if v.load.err != nil {
		b.WriteString(" " + st.bad.Render("✗ "+v.sh.errText(v.load.err)) + "\n")
	}
	groups := map[string]bool{}
	stale := 0
	now := v.sh.now()
	for _, in := range v.instances {
		groups[in.Group] = true
		if in.Stale(now) {
			stale++
		}
	}
	summary := fmt.Sprintf("%d instances of %d groups", len(v.instances), len(groups))
	if stale > 0 {
		summary += fmt.Sprintf(" · %d stale (no heartbeat within their TTL)", stale)
	}
	b.WriteString(" " + st.muted.Render(summary) + "\n")
	b.WriteString(v.t.view())
	if len(v.history) > 0 {
		b.WriteString("\n\n " + st.title.Render("Latest presence events") + "\n")
		for i, e := range v.history {
			if i >= maxPresenceHistory {
				break
			}
			line := " " + e.At.In(v.sh.loc).Format("15:04:05") + "  " + termtext.Quote(strings.TrimPrefix(e.Event, "spectacles.")) + "  " +
				termtext.Quote(e.Instance.Group) + "/" + termtext.Quote(e.Instance.Client)
			if e.Reason != "" {
				line += " (" + termtext.Quote(e.Reason) + ")"
			}
			b.WriteString(truncate(line, v.width) + "\n")
		}
	}
	return strings.TrimRight(b.String(), "\n")
}
