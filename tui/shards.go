package tui

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/spectacles-go/spectacles/gateway"
)

// latencyHistory is how many latency samples a shard's sparkline keeps.
const latencyHistory = 12

type shardsResult struct {
	seq, gen  uint64
	info      GatewayInfo
	shards    []gateway.Status
	count     int
	published uint64
	queue     int
	counters  bool
	nodes     []gateway.NodeStatus // reported by gateway nodes in other processes
	nodesErr  error
	at        time.Time
}

func (shardsResult) target() kind { return kShards }

type gatewayStartedMsg struct{ err error }

func (gatewayStartedMsg) target() kind { return kShards }

// shardRow is one row of the shards table: a local shard (node "") or a
// shard of a gateway node in another process.
type shardRow struct {
	node  string
	stale bool
	s     gateway.Status
}

func (r shardRow) key() string {
	if r.node == "" {
		return strconv.Itoa(r.s.ID)
	}
	return "@" + r.node + "#" + strconv.Itoa(r.s.ID)
}

// shardsView shows the local gateway's shards and controls them, then the
// shards that gateway nodes in other processes report (read-only).
type shardsView struct {
	viewBase
	sh            *shared
	load          loader
	res           shardsResult
	rows          []shardRow
	history       map[string][]float64
	lastACK       map[string]time.Time
	pubRate       rateTracker
	rate          float64
	starting      bool
	tbl           table
	filter        string
	width, height int
	k             struct {
		Up, Down, Start, Stop, Reconnect, Gateway key.Binding
	}
}

// shardColumns are the table's columns: with a NODE column when gateway
// nodes report shards (and the latency trend only when it fits).
func shardColumns(remote, trend bool) []column {
	cols := []column{
		{title: "SHARD", width: 6},
		{title: "STATE", width: 11},
		{title: "LATENCY", width: 7, right: true},
		{title: "TREND", width: latencyHistory},
		{title: "SEQ", width: 7, right: true},
		{title: "GUILDS", width: 7, right: true},
		{title: "RECONN", width: 6, right: true},
		{title: "EVENTS", width: 7, right: true},
		{title: "LAST CLOSE", width: 12, flex: true},
	}
	if !trend {
		cols = slices.Delete(cols, 3, 4)
	}
	if remote {
		cols = append([]column{{title: "NODE", width: 14, flex: true}}, cols...)
	}
	return cols
}

// wideShards is the width from which the NODE and TREND columns both fit;
// below narrowShards the TREND column gives way to the counts.
const (
	wideShards   = 110
	narrowShards = 100
)

func newShards(sh *shared) *shardsView {
	v := &shardsView{sh: sh, history: map[string][]float64{}, lastACK: map[string]time.Time{}}
	v.tbl = newTable(sh.st, shardColumns(false, true)...)
	v.tbl.empty = "no shards"
	v.k.Up = bindAs("↑/k", "up", "up", "k")
	v.k.Down = bindAs("↓/j", "down", "down", "j")
	v.k.Start = bind("start shard", "s")
	v.k.Stop = bind("stop shard", "x")
	v.k.Reconnect = bind("reconnect shard", "R")
	v.k.Gateway = bind("start a local gateway", "g")
	return v
}

func (v *shardsView) crumbs() []string {
	if v.res.info.Simulated {
		return []string{"SIMULATED gateway"}
	}
	return nil
}

func (v *shardsView) setSize(w, h int) {
	v.width, v.height = w, h
	v.tbl.setSize(w, h-3)
	v.fill()
}
func (v *shardsView) canFilter() bool    { return true }
func (v *shardsView) filterText() string { return v.filter }
func (v *shardsView) filterSyntax() string {
	return "text: the shards whose node, id (0/4), state or last close contains it (any case), e.g. /failed"
}

func (v *shardsView) setFilter(text string) tea.Cmd {
	v.filter = text
	v.rows = v.collect()
	v.fill()
	return nil
}

func (v *shardsView) activate() tea.Cmd  { return v.refresh() }
func (v *shardsView) updated() time.Time { return v.res.at }
func (v *shardsView) capturing() bool    { return false }

func (v *shardsView) refresh() tea.Cmd {
	seq, gen, ok := v.load.begin()
	if !ok {
		return nil
	}
	sh := v.sh
	return func() tea.Msg {
		r := shardsResult{seq: seq, gen: gen, info: sh.backend.Gateway(), at: sh.now()}
		if g := r.info.Gateway; g != nil {
			r.shards, r.count = g.Shards(), g.ShardCount()
			if pc, ok := g.(publishCounter); ok {
				r.published, r.queue, r.counters = pc.Published(), pc.QueueLength(), true
			}
		}
		r.nodes, r.nodesErr = loadNodes(sh)
		return r
	}
}

// selected is the row under the cursor.
func (v *shardsView) selected() (shardRow, bool) {
	i := v.tbl.cursor
	if i < 0 || i >= len(v.rows) {
		return shardRow{}, false
	}
	return v.rows[i], true
}

// remoteSelected reports a remote node's shard under the cursor.
func (v *shardsView) remoteSelected() (shardRow, bool) {
	r, ok := v.selected()
	return r, ok && r.node != ""
}

func (v *shardsView) keys() []key.Binding {
	g := v.res.info.Gateway != nil
	_, remote := v.remoteSelected()
	w := g && !v.sh.readOnly && len(v.res.shards) > 0 && !remote
	v.k.Start.SetEnabled(w)
	v.k.Stop.SetEnabled(w)
	v.k.Reconnect.SetEnabled(w)
	v.k.Gateway.SetEnabled(!g && !v.sh.readOnly && !v.starting && v.sh.node.CanStartGateway)
	return []key.Binding{v.k.Up, v.k.Down, v.k.Start, v.k.Stop, v.k.Reconnect, v.k.Gateway}
}

// unavailable lists shard control on a remote node's shard: it runs in
// another process, which the console does not drive.
func (v *shardsView) unavailable() []unavailableKey {
	r, ok := v.remoteSelected()
	if !ok {
		return nil
	}
	why := remoteWhy + " (" + r.node + ")"
	return []unavailableKey{{key: v.k.Start, why: why}, {key: v.k.Stop, why: why}, {key: v.k.Reconnect, why: why}}
}

func (v *shardsView) unavailableTitle() string {
	r, _ := v.remoteSelected()
	return fmt.Sprintf("Unavailable on shard %d of gateway node %s:", r.s.ID, r.node)
}

func (v *shardsView) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case shardsResult:
		apply, again := v.load.finish(msg.seq, msg.gen)
		if apply {
			v.load.loaded = true
			v.res = msg
			if msg.counters {
				in, _ := v.pubRate.rate("published", int64(msg.published), 0, msg.at)
				v.rate = in
			}
			v.rows = v.collect()
			v.track()
			v.fill()
		}
		if again {
			return v.refresh()
		}
	case confirmedMsg:
		// The start was confirmed: the gateway is starting.
		if len(msg.acts) == 1 {
			if _, ok := msg.acts[0].(startGatewayAction); ok {
				v.starting = true
				return status("starting a gateway…")
			}
		}
	case gatewayStartedMsg:
		v.starting = false
		if msg.err != nil {
			return tea.Batch(statusErr("gateway: "+v.sh.errText(msg.err)), v.refresh())
		}
		return tea.Batch(status("gateway started"), v.refresh())
	}
	return nil
}

// track adds each shard's new heartbeat round trips to its latency trend
// and forgets the shards that are gone.
func (v *shardsView) track() {
	seen := make(map[string]bool, len(v.rows))
	for _, r := range v.rows {
		k := r.key()
		seen[k] = true
		s := r.s
		if !s.LastHeartbeatACK.IsZero() && !s.LastHeartbeatACK.Equal(v.lastACK[k]) {
			v.lastACK[k] = s.LastHeartbeatACK
			h := append(v.history[k], float64(s.Latency)/float64(time.Millisecond))
			if len(h) > latencyHistory {
				h = h[len(h)-latencyHistory:]
			}
			v.history[k] = h
		}
	}
	for k := range v.history {
		if !seen[k] {
			delete(v.history, k)
			delete(v.lastACK, k)
		}
	}
}

func stateStyle(st *styles, s gateway.State) (lipgloss.Style, bool) {
	switch s {
	case gateway.Ready:
		return lipgloss.Style{}, false
	case gateway.Failed:
		return st.bad, true
	case gateway.Stopped:
		return st.muted, true
	}
	return st.warn, true
}

// collect lists the rows the filter keeps: local shards, then each
// gateway node's.
func (v *shardsView) collect() []shardRow {
	list := make([]shardRow, 0, len(v.res.shards))
	f := strings.ToLower(v.filter)
	keep := func(r shardRow) {
		text := fmt.Sprintf("%s %d/%d %s %d %s %s", r.node, r.s.ID, r.s.Count, r.s.State, r.s.LastCloseCode, r.s.LastCloseReason, r.s.Err)
		if r.stale {
			text += " stale"
		}
		if r.node == "" {
			text += " this console"
		}
		if f == "" || strings.Contains(strings.ToLower(text), f) {
			list = append(list, r)
		}
	}
	for _, s := range v.res.shards {
		keep(shardRow{s: s})
	}
	for _, n := range v.res.nodes {
		stale := nodeStale(n, v.res.at)
		for _, s := range n.Shards {
			keep(shardRow{node: nodeName(n), stale: stale, s: s})
		}
	}
	return list
}

// fill renders the rows into the table.
func (v *shardsView) fill() {
	list := v.rows
	remote := false // a NODE column when gateway nodes report shards
	for _, n := range v.res.nodes {
		remote = remote || len(n.Shards) > 0
	}
	v.tbl.empty = "no shards"
	if v.filter != "" {
		v.tbl.empty = "no shard matches " + v.filter
	}
	trend := v.width >= narrowShards && (!remote || v.width >= wideShards)
	v.tbl.cols = shardColumns(remote, trend)
	rows := make([][]string, len(list))
	keys := make([]string, len(list))
	for i, r := range list {
		s := r.s
		guilds := strconv.Itoa(s.GuildsAvailable)
		if s.GuildsUnavailable > 0 {
			guilds += fmt.Sprintf("+%d?", s.GuildsUnavailable)
		}
		last := s.LastCloseReason // "stopped by operator" has no code
		if s.LastCloseCode != 0 {
			last = fmt.Sprintf("%d %s", s.LastCloseCode, s.LastCloseReason)
		}
		if s.Err != "" {
			last = v.sh.backend.Redact(s.Err)
		}
		seq := "-"
		if s.Seq > 0 {
			seq = strconv.FormatInt(s.Seq, 10)
		}
		var cells []string
		if remote {
			node := r.node
			switch {
			case node == "":
				node = "this console"
			case r.stale:
				node = "STALE " + node
			}
			cells = append(cells, node)
		}
		cells = append(cells, fmt.Sprintf("%d/%d", s.ID, s.Count), s.State.String(), fmtLatency(s.Latency))
		if trend {
			spark := sparkline(v.history[r.key()], latencyHistory)
			if s.Latency <= 0 {
				spark = "" // no connection: no latency now
			}
			cells = append(cells, spark)
		}
		rows[i] = append(cells, seq, guilds, strconv.Itoa(s.Reconnects), fmtCount(int64(s.Events)), last)
		keys[i] = r.key()
	}
	v.tbl.setRows(rows, keys)
	v.tbl.styleOf = func(i int) (lipgloss.Style, bool) {
		if i >= len(list) {
			return lipgloss.Style{}, false
		}
		if list[i].stale {
			return v.sh.st.muted, true
		}
		return stateStyle(v.sh.st, list[i].s.State)
	}
}

func (v *shardsView) key(msg tea.KeyMsg) tea.Cmd {
	g := v.res.info.Gateway
	switch {
	case key.Matches(msg, v.k.Up):
		v.tbl.move(-1)
		return nil
	case key.Matches(msg, v.k.Down):
		v.tbl.move(1)
		return nil
	case key.Matches(msg, v.k.Gateway):
		return v.promptGateway()
	case pressed(msg, v.k.Gateway) && g == nil && v.sh.readOnly:
		return statusErr("read-only: starting a gateway is disabled")
	}
	if cmd := pressedUnavailable(msg, v.unavailable()); cmd != nil {
		return cmd
	}
	id, err := strconv.Atoi(v.tbl.selectedKey())
	if err != nil {
		if pressed(msg, v.k.Start) || pressed(msg, v.k.Stop) || pressed(msg, v.k.Reconnect) {
			if v.sh.readOnly {
				return statusErr("read-only: shard control is disabled")
			}
			return statusErr("no shard selected: no gateway runs here (g starts one)")
		}
		return nil
	}
	switch {
	case key.Matches(msg, v.k.Start):
		return v.sh.start(shardAction{id: id, op: shardStart})
	case key.Matches(msg, v.k.Stop):
		return emit(confirmMsg{prompt: fmt.Sprintf("Stop shard %d? Its guilds get no events until it starts again (the session stays resumable).", id),
			acts: []action{shardAction{id: id, op: shardStop}}})
	case key.Matches(msg, v.k.Reconnect):
		return emit(confirmMsg{prompt: fmt.Sprintf("Reconnect shard %d? It closes its connection and resumes.", id),
			acts: []action{shardAction{id: id, op: shardReconnect}}})
	case pressed(msg, v.k.Start), pressed(msg, v.k.Stop), pressed(msg, v.k.Reconnect):
		if v.sh.readOnly {
			return statusErr("read-only: shard control is disabled")
		}
	}
	return nil
}

func (v *shardsView) promptGateway() tea.Cmd {
	sh := v.sh
	hint := "typed in a masked field, never shown"
	if sh.node.EnvToken {
		hint = "empty: DISCORD_TOKEN from the environment"
	}
	return emit(promptMsg{label: "Bot token", masked: true, hint: hint, from: kShards, act: startGatewayAction{envToken: sh.node.EnvToken}})
}

func (v *shardsView) view() string {
	st := v.sh.st
	if !v.load.loaded {
		return " " + st.muted.Render("loading…")
	}
	info := v.res.info
	var head string
	local := info.Gateway != nil
	switch {
	case local:
		parts := []string{fmt.Sprintf("%d of %d shards in this process", len(v.res.shards), v.res.count)}
		if info.Target != "" {
			parts = append(parts, info.Target)
		}
		if v.res.counters {
			parts = append(parts, fmt.Sprintf("published %s (%s)", fmtCount(int64(v.res.published)), fmtRate(v.rate)), fmt.Sprintf("queue %d", v.res.queue))
		}
		head = " " + strings.Join(parts, " · ")
		if info.Simulated {
			head = " " + st.badge.Render(" SIMULATED ") + st.muted.Render(" built-in Discord simulator, synthetic traffic") + "\n" + head
		}
	case info.Starting || v.starting:
		head = " " + st.muted.Render("starting a gateway…")
	default:
		head = " " + st.muted.Render("No gateway runs in this console.")
		if info.Err != nil {
			head = " " + st.bad.Render("✗ gateway stopped: "+v.sh.errText(info.Err))
		}
		switch {
		case v.sh.readOnly:
			head += "\n " + st.warn.Render("READ-ONLY: starting a gateway is disabled")
		case v.sh.node.CanStartGateway:
			head += "\n " + st.muted.Render("Press g to start one (token typed in a masked field, or DISCORD_TOKEN from the environment).")
		}
	}
	if v.sh.node.GatewayNodes {
		head += "\n " + v.nodesLine()
	}
	if !local && len(v.rows) == 0 && v.filter == "" {
		return head
	}
	if !strings.Contains(head, "\n") {
		head += "\n" // the head takes two lines at least
	}
	// The table takes what the head leaves (and one spare line).
	v.tbl.setSize(v.width, v.height-strings.Count(head, "\n")-2)
	return head + "\n" + v.tbl.view()
}

// nodesLine summarises the gateway nodes that report to Redis.
func (v *shardsView) nodesLine() string {
	st := v.sh.st
	if v.res.nodesErr != nil {
		return st.bad.Render("✗ gateway nodes: " + v.sh.errText(v.res.nodesErr))
	}
	nodes := v.res.nodes
	if len(nodes) == 0 {
		return st.muted.Render("No gateway node in another process reports its shards to this Redis.")
	}
	var t shardTally
	var stale []string
	for _, n := range nodes {
		s := nodeStale(n, v.res.at)
		t.add(n.Shards, s)
		if s {
			stale = append(stale, nodeName(n))
		}
	}
	line := plural(len(nodes), "gateway node") + " report to Redis: " + t.text(st)
	if len(stale) > 0 {
		line += "\n " + st.warn.Render(fmt.Sprintf("STALE, no report for over %s: %s", nodeStaleAfter, strings.Join(stale, ", ")))
	}
	return line
}
