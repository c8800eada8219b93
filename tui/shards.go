package tui

import (
	"fmt"
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
	at        time.Time
}

func (shardsResult) target() kind { return kShards }

type gatewayStartedMsg struct{ err error }

func (gatewayStartedMsg) target() kind { return kShards }

// shardsView shows the local gateway's shards and controls them.
type shardsView struct {
	sh       *shared
	load     loader
	res      shardsResult
	history  map[int][]float64
	lastACK  map[int]time.Time
	pubRate  rateTracker
	rate     float64
	starting bool
	tbl      table
	k        struct {
		Up, Down, Start, Stop, Reconnect, Gateway key.Binding
	}
}

func newShards(sh *shared) *shardsView {
	v := &shardsView{sh: sh, history: map[int][]float64{}, lastACK: map[int]time.Time{}}
	v.tbl = newTable(sh.st,
		column{title: "SHARD", width: 6},
		column{title: "STATE", width: 11},
		column{title: "LATENCY", width: 7, right: true},
		column{title: "TREND", width: latencyHistory},
		column{title: "SEQ", width: 7, right: true},
		column{title: "GUILDS", width: 7, right: true},
		column{title: "RECONN", width: 6, right: true},
		column{title: "EVENTS", width: 7, right: true},
		column{title: "LAST CLOSE", width: 12, flex: true},
	)
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

func (v *shardsView) setSize(w, h int)  { v.tbl.setSize(w, h-3) }
func (v *shardsView) activate() tea.Cmd { return v.refresh() }
func (v *shardsView) capturing() bool   { return false }

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
		return r
	}
}

func (v *shardsView) keys() []key.Binding {
	g := v.res.info.Gateway != nil
	w := g && !v.sh.readOnly && len(v.res.shards) > 0
	v.k.Start.SetEnabled(w)
	v.k.Stop.SetEnabled(w)
	v.k.Reconnect.SetEnabled(w)
	v.k.Gateway.SetEnabled(!g && !v.sh.readOnly && !v.starting && v.sh.node.CanStartGateway)
	return []key.Binding{v.k.Up, v.k.Down, v.k.Start, v.k.Stop, v.k.Reconnect, v.k.Gateway}
}

func (v *shardsView) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case shardsResult:
		apply, again := v.load.finish(msg.seq, msg.gen)
		if apply {
			v.load.loaded = true
			v.res = msg
			for _, s := range msg.shards {
				if !s.LastHeartbeatACK.IsZero() && !s.LastHeartbeatACK.Equal(v.lastACK[s.ID]) {
					v.lastACK[s.ID] = s.LastHeartbeatACK
					h := append(v.history[s.ID], float64(s.Latency)/float64(time.Millisecond))
					if len(h) > latencyHistory {
						h = h[len(h)-latencyHistory:]
					}
					v.history[s.ID] = h
				}
			}
			if msg.counters {
				in, _ := v.pubRate.rate("published", int64(msg.published), 0, msg.at)
				v.rate = in
			}
			v.fill()
		}
		if again {
			return v.refresh()
		}
	case gatewayStartedMsg:
		v.starting = false
		if msg.err != nil {
			return tea.Batch(statusErr("gateway: "+v.sh.errText(msg.err)), v.refresh())
		}
		return tea.Batch(status("gateway started"), v.refresh())
	case tea.KeyMsg:
		return v.key(msg)
	}
	return nil
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

func (v *shardsView) fill() {
	rows := make([][]string, len(v.res.shards))
	keys := make([]string, len(v.res.shards))
	for i, s := range v.res.shards {
		guilds := strconv.Itoa(s.GuildsAvailable)
		if s.GuildsUnavailable > 0 {
			guilds += fmt.Sprintf("+%d?", s.GuildsUnavailable)
		}
		last := ""
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
		rows[i] = []string{fmt.Sprintf("%d/%d", s.ID, s.Count), s.State.String(), fmtLatency(s.Latency),
			sparkline(v.history[s.ID], latencyHistory), seq, guilds, strconv.Itoa(s.Reconnects), fmtCount(int64(s.Events)), last}
		keys[i] = strconv.Itoa(s.ID)
	}
	v.tbl.setRows(rows, keys)
	list := v.res.shards
	v.tbl.styleOf = func(i int) (lipgloss.Style, bool) {
		if i < len(list) {
			return stateStyle(v.sh.st, list[i].State)
		}
		return lipgloss.Style{}, false
	}
}

func (v *shardsView) key(msg tea.KeyMsg) tea.Cmd {
	v.keys()
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
	act := func(verb string, f func(int) error) tea.Cmd {
		return func() tea.Msg {
			err := f(id)
			return actionMsg{from: kShards, text: fmt.Sprintf("shard %d: %s", id, verb), err: err}
		}
	}
	switch {
	case key.Matches(msg, v.k.Start):
		return act("started", g.StartShard)
	case key.Matches(msg, v.k.Stop):
		return emit(confirmMsg{prompt: fmt.Sprintf("Stop shard %d? Its guilds get no events until it starts again (the session stays resumable).", id),
			yes: act("stopped", g.StopShard)})
	case key.Matches(msg, v.k.Reconnect):
		return emit(confirmMsg{prompt: fmt.Sprintf("Reconnect shard %d? It closes its connection and resumes.", id),
			yes: act("reconnecting", g.ReconnectShard)})
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
	return emit(promptMsg{label: "Bot token", masked: true, hint: hint, submit: func(token string) tea.Cmd {
		token = strings.TrimPrefix(strings.TrimSpace(token), "Bot ")
		if token == "" && !sh.node.EnvToken {
			return statusErr("a token is required (DISCORD_TOKEN is not set)")
		}
		v.starting = true
		return tea.Batch(status("starting a gateway…"), func() tea.Msg {
			return gatewayStartedMsg{err: sh.backend.StartGateway(sh.base, token)}
		})
	}})
}

func (v *shardsView) view() string {
	st := v.sh.st
	if !v.load.loaded {
		return " " + st.muted.Render("loading…")
	}
	info := v.res.info
	var head string
	switch {
	case info.Gateway != nil:
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
		} else {
			head += "\n"
		}
	case info.Starting || v.starting:
		head = " " + st.muted.Render("starting a gateway…") + "\n"
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
		return head
	}
	return head + "\n" + v.tbl.view()
}
