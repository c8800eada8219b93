package tui

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/internal/termtext"
)

type overviewResult struct {
	seq, gen  uint64
	server    core.ServerInfo
	serverErr error
	streams   []core.StreamInfo
	groups    map[string][]core.GroupInfo
	consumers map[string][]core.ConsumerInfo // by stream/group
	listErr   error
	stats     error // statsOf after the load
	gw        GatewayInfo
	shards    []gateway.Status
	count     int
	published uint64
	counters  bool
	nodes     []gateway.NodeStatus // reported by gateway nodes in other processes
	nodesErr  error
	// unhandled are the events published, by any process, that no group
	// consumes (core.UnhandledReader), names not yet escaped.
	unhandled []core.UnhandledReport
	at        time.Time
}

func (overviewResult) target() kind { return kOverview }

// overviewView summarises the node: broker health, shards, rates, dead
// letters and warnings.
type overviewView struct {
	viewBase
	sh     *shared
	load   loader
	res    overviewResult
	rates  rateTracker
	in     float64
	out    float64
	pub    float64
	lags   map[string][]int64
	width  int
	height int
	cursor int // the selected warning
	k      struct{ Select, Open, Streams, Shards, DLQ key.Binding }
}

func newOverview(sh *shared) *overviewView {
	v := &overviewView{sh: sh, lags: map[string][]int64{}, in: math.NaN(), out: math.NaN(), pub: math.NaN()}
	v.k.Select = bindAs("↑↓", "select warning", "up", "k", "down", "j")
	v.k.Open = bind("open its view", "enter")
	v.k.Streams = bind("streams", "enter")
	v.k.Shards = bind("shards", "s")
	v.k.DLQ = bind("dead letters", "d")
	return v
}

func (v *overviewView) crumbs() []string   { return nil }
func (v *overviewView) updated() time.Time { return v.res.at }
func (v *overviewView) setSize(w, h int)   { v.width, v.height = w, h }
func (v *overviewView) activate() tea.Cmd  { return v.refresh() }
func (v *overviewView) capturing() bool    { return false }
func (v *overviewView) keys() []key.Binding {
	v.k.DLQ.SetEnabled(len(v.dlqs()) > 0)
	has := v.load.loaded && len(v.warnings()) > 0
	v.k.Select.SetEnabled(has)
	v.k.Open.SetEnabled(has)
	v.k.Streams.SetEnabled(!has)
	return []key.Binding{v.k.Select, v.k.Open, v.k.Streams, v.k.Shards, v.k.DLQ}
}

func (v *overviewView) refresh() tea.Cmd {
	seq, gen, ok := v.load.begin()
	if !ok {
		return nil
	}
	sh := v.sh
	ins := sh.backend.Inspector()
	ur, _ := presenceOf(sh.backend).(core.UnhandledReader)
	return func() tea.Msg {
		r := overviewResult{seq: seq, gen: gen, gw: sh.backend.Gateway(), consumers: map[string][]core.ConsumerInfo{}}
		if g := r.gw.Gateway; g != nil {
			r.shards, r.count = g.Shards(), g.ShardCount()
			if pc, ok := g.(publishCounter); ok {
				r.published, r.counters = pc.Published(), true
			}
		}
		if ins != nil {
			ctx, cancel := sh.ctx()
			r.server, r.serverErr = ins.Server(ctx)
			cancel()
			if r.serverErr == nil {
				r.streams, r.groups, r.listErr = loadStreams(sh, ins)
				ctx, cancel := sh.ctx()
				n := 0
				for _, s := range r.streams {
					for _, g := range r.groups[s.Name] {
						if n >= maxGroupsWithConsumers {
							break
						}
						n++
						if c, err := ins.Consumers(ctx, s.Name, g.Name); err == nil {
							r.consumers[s.Name+"/"+g.Name] = c
						}
					}
				}
				cancel()
				r.stats = statsOf(ins)
			}
		}
		r.nodes, r.nodesErr = loadNodes(sh)
		if ur != nil {
			ctx, cancel := sh.ctx()
			r.unhandled, _ = ur.UnhandledReports(ctx) // no reports is no warning
			cancel()
		}
		r.at = sh.now()
		return r
	}
}

func (v *overviewView) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case overviewResult:
		apply, again := v.load.finish(msg.seq, msg.gen)
		if apply {
			v.load.loaded = true
			v.res = msg
			if msg.serverErr == nil {
				v.sh.stats = msg.stats
			}
			if msg.serverErr == nil && msg.server.Kind != "" {
				v.sh.serverKind = msg.server.Kind
			}
			var in, out int64
			known := true
			for _, s := range msg.streams {
				in += s.Length
				d := delivered(s.Length, msg.groups[s.Name])
				if d < 0 {
					known = false
				}
				out += d
				for _, g := range msg.groups[s.Name] {
					id := s.Name + "/" + g.Name
					l := append(v.lags[id], g.Lag)
					if len(l) > 3 {
						l = l[len(l)-3:]
					}
					v.lags[id] = l
				}
			}
			if !known {
				out = -1
			}
			if msg.serverErr == nil && msg.streams != nil && !v.sh.amqp() {
				v.in, v.out = v.rates.rate("all", in, out, msg.at)
			}
			if msg.counters {
				v.pub, _ = v.rates.rate("gateway", int64(msg.published), 0, msg.at)
			}
		}
		if again {
			return v.refresh()
		}
	case tea.KeyMsg:
		v.keys()
		switch {
		case key.Matches(msg, v.k.Select) && (msg.String() == "up" || msg.String() == "k"):
			v.cursor = max(v.cursor-1, 0)
		case key.Matches(msg, v.k.Select):
			v.cursor = min(v.cursor+1, max(len(v.warnings())-1, 0))
		case key.Matches(msg, v.k.Open):
			if w := v.warnings(); v.cursor < len(w) {
				return emit(w[v.cursor].to)
			}
		case key.Matches(msg, v.k.Streams):
			return emit(navMsg{to: kStreams})
		case key.Matches(msg, v.k.Shards):
			return emit(navMsg{to: kShards})
		case key.Matches(msg, v.k.DLQ):
			return emit(navMsg{to: kTail, streams: v.dlqs()})
		}
	}
	return nil
}

func (v *overviewView) dlqs() []string {
	var out []string
	for _, s := range v.res.streams {
		if _, ok := dlqSource(s.Name); ok && s.Length > 0 {
			out = append(out, s.Name)
		}
	}
	return out
}

// lagWarnAt is the lag (entries not yet delivered to a group) from which
// the overview warns.
const lagWarnAt = 1000

// warning is one line of the overview's warnings, and the view that shows
// its subject (enter opens it).
type warning struct {
	text string
	to   navMsg
}

// warnings lists what an operator should look at.
func (v *overviewView) warnings() []warning {
	if v.res.stats != nil && v.res.serverErr == nil {
		// The figures are partial: no warning drawn from them holds.
		return append([]warning{{text: v.sh.errText(v.res.stats) + ": queue depths, consumers and dead letters are unknown",
			to: navMsg{to: kStreams}}}, v.shardWarnings()...)
	}
	if v.sh.amqp() {
		return v.amqpWarnings()
	}
	var out []warning
	reported := v.unhandledByName()
	for _, s := range v.res.streams {
		if _, dlq := dlqSource(s.Name); dlq || s.Groups > 0 || s.Length == 0 || core.IsPresenceEvent(unquote(s.Name)) {
			continue // presence events are there to be read when wanted, not consumed
		}
		text := fmt.Sprintf("%s: %s entries published, but no group consumes them", s.Name, fmtCount(s.Length))
		if r, ok := reported[s.Name]; ok {
			text += " (" + unhandledText(r) + ")"
			delete(reported, s.Name)
		}
		out = append(out, warning{text, navMsg{to: kGroups, stream: s.Name}})
	}
	out = append(out, v.unhandledWarnings(reported)...)
	for _, s := range v.res.streams {
		for _, g := range v.res.groups[s.Name] {
			id := s.Name + "/" + g.Name
			l := v.lags[id]
			groups := navMsg{to: kGroups, stream: s.Name}
			switch {
			case len(l) == 3 && l[0] >= 0 && l[0] < l[1] && l[1] < l[2]:
				out = append(out, warning{fmt.Sprintf("%s: lag growing (%s → %s → %s)", id, fmtCount(l[0]), fmtCount(l[1]), fmtCount(l[2])), groups})
			case g.Lag >= lagWarnAt:
				out = append(out, warning{fmt.Sprintf("%s: lag %s (entries not yet delivered to the group)", id, fmtCount(g.Lag)), groups})
			}
			for _, c := range v.res.consumers[id] {
				if v.sh.node.StaleAfter > 0 && c.Idle >= v.sh.node.StaleAfter && c.Pending > 0 {
					out = append(out, warning{fmt.Sprintf("%s: consumer %s idle for %s holds %s pending (claim them in Pending)", id, c.Name, fmtDuration(c.Idle), fmtCount(c.Pending)),
						navMsg{to: kPending, stream: s.Name, group: g.Name}})
				}
			}
		}
	}
	return append(out, v.shardWarnings()...)
}

// shardWarnings lists failed shards, here and on gateway nodes, and stale
// gateway nodes.
func (v *overviewView) shardWarnings() []warning {
	var out []warning
	for _, s := range v.res.shards {
		if s.State == gateway.Failed {
			out = append(out, warning{fmt.Sprintf("shard %d failed: %s", s.ID, v.sh.backend.Redact(s.Err)), navMsg{to: kShards}})
		}
	}
	for _, w := range nodeWarnings(v.sh, v.res.nodes, v.res.at) {
		out = append(out, warning{w, navMsg{to: kShards}})
	}
	return out
}

// unhandledByName maps the escaped event names of the unhandled reports
// to their reports.
func (v *overviewView) unhandledByName() map[string]core.UnhandledReport {
	out := make(map[string]core.UnhandledReport, len(v.res.unhandled))
	for _, r := range v.res.unhandled {
		out[termtext.Quote(r.Event)] = r
	}
	return out
}

// unhandledText says how many unhandled messages who reported.
func unhandledText(r core.UnhandledReport) string {
	return fmt.Sprintf("%s reported unhandled by %s", messages(r.Count), plural(len(r.Publishers), "publisher"))
}

// messages counts n messages.
func messages(n uint64) string {
	if n == 1 {
		return "1 message"
	}
	return fmtCount(int64(min(n, math.MaxInt64))) + " messages"
}

// unhandledWarnings warns of each reported event (most messages first):
// published, by any process, and consumed by no group.
func (v *overviewView) unhandledWarnings(reported map[string]core.UnhandledReport) []warning {
	var out []warning
	for _, r := range v.res.unhandled {
		name := termtext.Quote(r.Event)
		if _, ok := reported[name]; !ok {
			continue
		}
		by := make([]string, len(r.Publishers))
		for i, p := range r.Publishers {
			by[i] = termtext.Quote(p)
		}
		who := strings.Join(by[:min(len(by), 3)], ", ")
		if len(by) > 3 {
			who += ", …"
		}
		out = append(out, warning{fmt.Sprintf("%s: %s published that no group consumes (by %s)", name,
			messages(r.Count), who), navMsg{to: kServices}})
	}
	return out
}

// amqpWarnings lists what an operator of RabbitMQ should look at: queues
// whose ready messages grow (with no consumer, or consumers not keeping
// up), ready messages nobody consumes, and counts RabbitMQ did not give.
func (v *overviewView) amqpWarnings() []warning {
	var out []warning
	unknown := false
	for _, s := range v.res.streams {
		_, dlq := dlqSource(s.Name)
		groups := navMsg{to: kGroups, stream: s.Name}
		for _, g := range v.res.groups[s.Name] {
			if g.Pending < 0 || g.Lag < 0 {
				unknown = true
			}
			l := v.lags[s.Name+"/"+g.Name]
			growing := len(l) == 3 && l[0] >= 0 && l[0] < l[1] && l[1] < l[2]
			switch {
			case growing && g.Consumers == 0 && !dlq:
				out = append(out, warning{fmt.Sprintf("queue %s: ready messages growing (%s → %s → %s) and no consumers", g.Name, fmtCount(l[0]), fmtCount(l[1]), fmtCount(l[2])), groups})
			case growing && !dlq:
				out = append(out, warning{fmt.Sprintf("queue %s: ready messages growing (%s → %s → %s): its %s do not keep up", g.Name, fmtCount(l[0]), fmtCount(l[1]), fmtCount(l[2]), plural(g.Consumers, "consumer")), groups})
			case g.Consumers == 0 && g.Lag > 0 && !dlq:
				out = append(out, warning{fmt.Sprintf("queue %s: %s ready and no consumers", g.Name, fmtCount(g.Lag)), groups})
			case g.Lag >= lagWarnAt && !dlq:
				out = append(out, warning{fmt.Sprintf("queue %s: %s ready (not yet delivered)", g.Name, fmtCount(g.Lag)), groups})
			}
		}
	}
	out = append(out, v.unhandledWarnings(v.unhandledByName())...)
	if unknown {
		out = append(out, warning{"some unacked or ready counts are unknown (?): RabbitMQ has not reported them yet, or its management API is unreachable", navMsg{to: kStreams}})
	}
	return append(out, v.shardWarnings()...)
}

func (v *overviewView) view() string {
	st := v.sh.st
	if !v.load.loaded {
		return " " + st.muted.Render("loading…")
	}
	r := v.res
	n := v.sh.node
	label := func(s string) string { return " " + st.title.Render(pad(s, 13)) }
	var b strings.Builder

	node := n.Name
	if n.Client != "" {
		node += st.muted.Render("  claims as ") + n.Client
	}
	if n.Group != "" {
		node += st.muted.Render("  group ") + n.Group
	}
	b.WriteString(label("Node") + node + "\n")

	broker := n.BrokerKind
	if r.server.Address != "" {
		broker = r.server.Kind + " " + r.server.Address
	} else if n.BrokerAddress != "" {
		broker += " " + n.BrokerAddress
	}
	if r.server.Embedded || n.Embedded {
		broker += st.muted.Render(" (embedded, in-memory: gone when this process exits)")
	}
	switch {
	case v.sh.backend.Inspector() == nil:
		broker += "  " + st.warn.Render("no inspection (core.Inspector not implemented)")
	case r.serverErr != nil:
		broker += "  " + st.bad.Render("● DOWN: "+v.sh.errText(r.serverErr))
	default:
		broker += "  " + st.good.Render("● up")
		if r.server.Version != "" {
			broker += st.muted.Render("  version ") + r.server.Version
		}
		broker += st.muted.Render("  round trip ") + fmtLatency(r.server.RoundTrip)
	}
	b.WriteString(label("Broker") + broker + "\n")
	if r.serverErr == nil && r.stats != nil {
		b.WriteString(" " + st.bad.Render("⚠ "+v.sh.errText(r.stats)) + "\n")
	}

	gw := st.muted.Render("none in this console")
	switch {
	case r.gw.Gateway != nil:
		var t shardTally
		t.add(r.shards, false)
		gw = t.text(st)
		if r.counters {
			gw += st.muted.Render(" · published ") + fmtRate(v.pub)
		}
		if r.gw.Simulated {
			gw = st.badge.Render(" SIMULATED ") + " " + gw
		}
		if r.gw.Target != "" {
			gw += st.muted.Render(" · " + r.gw.Target)
		}
	case r.gw.Starting:
		gw = st.muted.Render("starting…")
	case r.gw.Err != nil:
		gw = st.bad.Render("stopped: " + v.sh.errText(r.gw.Err))
	}
	b.WriteString(label("Gateway") + gw + "\n")
	if line, ok := v.nodesLine(); ok {
		b.WriteString(label("Shards") + line + "\n")
	}

	if v.sh.backend.Inspector() != nil && r.serverErr == nil {
		var entries, pending int64
		var groups int
		for _, s := range r.streams {
			if _, dlq := dlqSource(s.Name); !dlq {
				entries += s.Length
			}
			for _, g := range r.groups[s.Name] {
				groups++
				pending += max(g.Pending, 0)
			}
		}
		switch {
		case r.stats != nil:
			// Blank, not zero: the broker cannot tell now.
			what := "Queues"
			if !v.sh.amqp() {
				what = "Messages"
			}
			b.WriteString(label(what) + st.muted.Render(blank+" ready · "+blank+" unacked · "+blank+" consumers · "+blank+" queues (statistics unavailable)") + "\n")
		case v.sh.amqp():
			var ready, unacked int64
			var consumers int
			for _, s := range r.streams {
				if _, dlq := dlqSource(s.Name); dlq {
					continue
				}
				rd, un, c := queueTotals(r.groups[s.Name])
				ready, unacked, consumers = ready+max(rd, 0), unacked+max(un, 0), consumers+c
			}
			b.WriteString(label("Queues") + fmt.Sprintf("%s ready · %s unacked · %s", fmtCount(ready), fmtCount(unacked), plural(consumers, "consumer")) +
				st.muted.Render(fmt.Sprintf(" · %s · %s queues (RabbitMQ statistics)", plural(len(r.streams), "event"), fmtCount(int64(groups)))) + "\n")
		default:
			b.WriteString(label("Messages") + fmt.Sprintf("in %s · out %s", fmtRate(v.in), fmtRate(v.out)) +
				st.muted.Render(fmt.Sprintf(" · %s · %s entries · %s · %s pending", plural(len(r.streams), "stream"), fmtCount(entries), plural(groups, "group"), fmtCount(pending))) + "\n")
		}
		var dl int64
		var parts []string
		for _, s := range r.streams {
			if _, ok := dlqSource(s.Name); ok && s.Length > 0 {
				dl += s.Length
				parts = append(parts, fmt.Sprintf("%s %s", s.Name, fmtCount(s.Length)))
			}
		}
		dead := st.good.Render("0")
		switch {
		case r.stats != nil:
			dead = st.muted.Render(blank)
		case dl > 0:
			dead = st.warn.Render(fmtCount(dl)) + st.muted.Render(" ("+strings.Join(parts, ", ")+")  d: tail them")
		}
		b.WriteString(label("Dead letters") + dead + "\n")
		if r.listErr != nil {
			b.WriteString(" " + st.bad.Render("✗ "+v.sh.errText(r.listErr)) + "\n")
		}
	}

	warns := v.warnings()
	v.cursor = min(v.cursor, max(len(warns)-1, 0))
	head := label("Warnings")
	if len(warns) > 0 {
		head += st.muted.Render("↑/↓ select · enter opens its view")
	}
	b.WriteString("\n" + head + "\n")
	if len(warns) == 0 {
		b.WriteString("   " + st.good.Render("none") + "\n")
	}
	room := max(v.height-strings.Count(b.String(), "\n")-1, 1)
	first := max(v.cursor-room+2, 0) // keep the selected one in sight
	if len(warns) <= room {
		first = 0
	}
	for i := first; i < len(warns); i++ {
		if i-first == room-1 && len(warns)-first > room {
			b.WriteString("   " + st.muted.Render(fmt.Sprintf("… and %d more", len(warns)-i)) + "\n")
			break
		}
		line := truncate(warns[i].text, v.width-6)
		if i == v.cursor {
			b.WriteString(" " + st.selected.Render("▸ ⚠ "+line) + "\n")
			continue
		}
		b.WriteString("   " + st.warn.Render("⚠ ") + line + "\n")
	}
	return b.String()
}

// nodesLine counts the shards here and on the gateway nodes that report
// to Redis; ok is false when it would add nothing to the Gateway line.
func (v *overviewView) nodesLine() (string, bool) {
	st, r := v.sh.st, v.res
	switch {
	case !v.sh.node.GatewayNodes:
		return "", false
	case r.nodesErr != nil:
		return st.bad.Render("✗ gateway nodes: " + v.sh.errText(r.nodesErr)), true
	case len(r.nodes) == 0 && r.gw.Gateway != nil:
		return "", false
	case len(r.nodes) == 0:
		return st.muted.Render("no gateway node reports its shards to this Redis"), true
	}
	var t shardTally
	t.add(r.shards, false)
	remote, stale := 0, 0
	for _, n := range r.nodes {
		s := nodeStale(n, r.at)
		t.add(n.Shards, s)
		remote += len(n.Shards)
		if s {
			stale++
		}
	}
	where := fmt.Sprintf("%d on %s", remote, plural(len(r.nodes), "node"))
	if stale > 0 {
		where += fmt.Sprintf(" (%d STALE)", stale)
	}
	if len(r.shards) > 0 {
		where = fmt.Sprintf("%d here, ", len(r.shards)) + where
	}
	return t.text(st) + st.muted.Render(" · "+where), true
}
