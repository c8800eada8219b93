package tui

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textarea"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/discord"
)

type sendResult struct {
	seq  uint64
	text string
	err  error
}

func (sendResult) target() kind { return kSend }

// sendNodesResult is what the gateway nodes report, for their shard count.
type sendNodesResult struct {
	seq, gen uint64
	nodes    []gateway.NodeStatus
	err      error
	at       time.Time
}

func (sendNodesResult) target() kind { return kSend }

// sendView sends a packet to a Discord shard: as SEND {guild_id, packet}
// (routed by the gateway to (guild_id >> 22) % shard_count) or straight to
// one shard's event.
type sendView struct {
	viewBase
	sh       *shared
	guild    textinput.Model
	count    textinput.Model
	shard    textinput.Model
	editor   textarea.Model
	form     formFocus // fields: 0 guild, 1 count, 2 shard, 3 packet
	template string
	seq      uint64
	result   string
	resultOK bool
	// load reads the gateway nodes' statuses when no local gateway runs:
	// their shard count routes the preview.
	load  loader
	nodes sendNodesResult
	k     struct{ Send, Direct key.Binding }
}

func newSend(sh *shared) *sendView {
	v := &sendView{sh: sh, guild: newField(sh, "guild id (snowflake)"), count: newField(sh, "auto"),
		shard: newField(sh, "auto"), editor: newEditor(sh)}
	v.k.Send = bind("SEND (routed by guild)", "ctrl+s")
	v.k.Direct = bind("send to the shard directly", "ctrl+d")
	v.form = newFormFocus(0, &v.guild, &v.count, &v.shard, &v.editor)
	v.retemplate()
	return v
}

func packetTemplate(guild string) string {
	if guild == "" {
		guild = "GUILD_ID"
	}
	return fmt.Sprintf("{\n  \"op\": 8,\n  \"d\": {\"guild_id\": %q, \"query\": \"\", \"limit\": 0}\n}", guild)
}

// retemplate refreshes the example packet while the user has not edited it.
func (v *sendView) retemplate() {
	if v.editor.Value() == v.template || v.editor.Value() == "" {
		v.template = packetTemplate(strings.TrimSpace(v.guild.Value()))
		v.editor.SetValue(v.template)
	}
}

// open prefills the guild id with n's data, if it has some.
func (v *sendView) open(n navMsg) {
	if n.data != "" {
		v.prefillGuild(n.data)
	}
}

func (v *sendView) prefillGuild(g string) {
	v.guild.SetValue(g)
	v.retemplate()
}

func (v *sendView) crumbs() []string { return nil }

func (v *sendView) setSize(w, h int) {
	v.guild.Width, v.count.Width, v.shard.Width = 24, 8, 8
	v.editor.SetWidth(max(w-4, 20))
	v.editor.SetHeight(max(h-11, 3))
}

func (v *sendView) activate() tea.Cmd { return v.refresh() }

// refresh reads the gateway nodes' statuses, when they can tell the shard
// count and no local gateway does.
func (v *sendView) refresh() tea.Cmd {
	sh := v.sh
	if !sh.node.GatewayNodes || sh.backend.Gateway().Gateway != nil {
		return nil
	}
	seq, gen, ok := v.load.begin()
	if !ok {
		return nil
	}
	return func() tea.Msg {
		nodes, err := loadNodes(sh)
		return sendNodesResult{seq: seq, gen: gen, nodes: nodes, err: err, at: sh.now()}
	}
}

func (v *sendView) capturing() bool { return v.form.editing() }

func (v *sendView) keys() []key.Binding {
	// With no field focused, ctrl+s and ctrl+d do nothing.
	w := !v.sh.readOnly && v.sh.backend.Broker() != nil && v.form.editing()
	v.k.Send.SetEnabled(w)
	v.k.Direct.SetEnabled(w)
	return append([]key.Binding{v.k.Send, v.k.Direct}, v.form.keys()...)
}

// shardCount is the typed count, else the local gateway's, else the one
// gateway nodes report, else 0.
func (v *sendView) shardCount() (int, string) {
	n, source, _ := v.countAndWhy()
	return n, source
}

// countAndWhy is shardCount, with why it is unknown (nil: nothing tells).
func (v *sendView) countAndWhy() (int, string, error) {
	if s := strings.TrimSpace(v.count.Value()); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return 0, "typed (invalid)", nil
		}
		return n, "typed", nil
	}
	if g := v.sh.backend.Gateway().Gateway; g != nil {
		if n := g.ShardCount(); n > 0 {
			return n, "local gateway", nil
		}
		return 0, "", nil
	}
	if v.nodes.err != nil {
		return 0, "", fmt.Errorf("shard count unknown: gateway nodes: %w; type the bot's shard count", v.nodes.err)
	}
	return nodesShardCount(v.nodes.nodes, v.nodes.at)
}

// plan validates the fields and works out where the packet goes.
type sendPlan struct {
	guild         uint64
	guildText     string
	count, routed int
	direct        int
	op            int
	packet        any
}

func (v *sendView) plan() (sendPlan, error) {
	var p sendPlan
	p.guildText = strings.TrimSpace(v.guild.Value())
	gid, err := core.ParseSnowflake(p.guildText)
	if err != nil {
		return p, fmt.Errorf("guild id: %v", err)
	}
	p.guild = gid
	count, _, why := v.countAndWhy()
	switch {
	case why != nil:
		return p, why
	case count == 0 && v.sh.node.GatewayNodes:
		return p, errors.New("shard count unknown: no local gateway runs, and no gateway node reports one; type the bot's shard count")
	case count == 0:
		return p, errors.New("shard count unknown: no local gateway runs; type the bot's shard count")
	}
	p.count = count
	p.routed = core.ShardID(gid, count)
	p.direct = p.routed
	if s := strings.TrimSpace(v.shard.Value()); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n >= count {
			return p, fmt.Errorf("shard %q is not in 0..%d", s, count-1)
		}
		p.direct = n
	}
	text := strings.TrimSpace(v.editor.Value())
	op, err := discord.ValidatePacket([]byte(text))
	if err != nil {
		return p, err
	}
	p.op = op
	if p.packet, err = core.DecodeJSON([]byte(text)); err != nil {
		return p, err
	}
	return p, nil
}

func (v *sendView) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case sendNodesResult:
		apply, again := v.load.finish(msg.seq, msg.gen)
		if apply {
			v.load.loaded = true
			v.nodes = msg
		}
		if again {
			return v.refresh()
		}
		return nil
	case sendResult:
		if msg.seq != v.seq {
			return nil
		}
		if msg.err != nil {
			v.result, v.resultOK = v.sh.errText(msg.err), false
			return statusErr("send failed")
		}
		v.result, v.resultOK = msg.text, true
		return status("sent")
	}
	return nil
}

func (v *sendView) key(msg tea.KeyMsg) tea.Cmd {
	if v.form.key(msg) {
		return nil
	}
	switch {
	case key.Matches(msg, v.k.Send), key.Matches(msg, v.k.Direct):
		return v.send(key.Matches(msg, v.k.Direct))
	case pressed(msg, v.k.Send), pressed(msg, v.k.Direct):
		if v.sh.readOnly {
			return statusErr("read-only: sending packets is disabled")
		}
		return nil
	}
	cmd := v.form.update(msg)
	if v.form.cur == 0 {
		v.retemplate()
	}
	return cmd
}

func (v *sendView) send(direct bool) tea.Cmd {
	p, err := v.plan()
	if err != nil {
		return statusErr(err.Error())
	}
	event, data, prompt := gateway.SendEvent, any(map[string]any{"guild_id": p.guildText, "packet": p.packet}),
		fmt.Sprintf("SEND op %d for guild %s? The gateway routes it to shard %d of %d.", p.op, p.guildText, p.routed, p.count)
	if direct {
		event, data = strconv.Itoa(p.direct), p.packet
		prompt = fmt.Sprintf("Send op %d straight to shard %d (event %q)?", p.op, p.direct, event)
	}
	if v.sh.node.Simulated {
		prompt += " (SIMULATED gateway)"
	}
	v.seq++
	return emit(confirmMsg{prompt: prompt, acts: []action{sendAction{seq: v.seq, event: event, data: data, routed: p.routed, count: p.count}}})
}

func (v *sendView) view() string {
	st := v.sh.st
	label := func(i int, s string) string { return v.form.label(st, i, s) }
	count, source := v.shardCount()
	var b strings.Builder
	b.WriteString(label(0, "Guild id    ") + " " + v.guild.View() + "\n")
	countNote := ""
	if source != "" && source != "typed" {
		countNote = st.muted.Render(fmt.Sprintf("   %d from the %s", count, source))
	}
	b.WriteString(label(1, "Shard count ") + " " + v.count.View() + countNote + "\n")
	b.WriteString(label(2, "Direct shard") + " " + v.shard.View() + st.muted.Render("   (ctrl+d only; empty: the routed shard)") + "\n")
	b.WriteString(label(3, "Packet (JSON)") + "\n")
	b.WriteString(v.editor.View() + "\n")
	p, err := v.plan()
	switch {
	case err != nil:
		b.WriteString(" " + st.warn.Render("✗ "+err.Error()) + "\n")
	default:
		route := fmt.Sprintf("✓ op %d · guild %s routes to shard %d of %d ((guild_id >> 22) %% %d)", p.op, p.guildText, p.routed, p.count, p.count)
		b.WriteString(" " + st.good.Render(route) + "\n")
	}
	gw := v.sh.backend.Gateway()
	switch {
	case v.sh.readOnly:
		b.WriteString(" " + st.warn.Render("READ-ONLY: sending is disabled") + "\n")
	case gw.Simulated:
		b.WriteString(" " + st.badge.Render(" SIMULATED ") + st.muted.Render(" packets go to the built-in Discord simulator") + "\n")
	case gw.Gateway == nil:
		b.WriteString(" " + st.muted.Render("no local gateway: a gateway process consuming SEND on this broker delivers the packet") + "\n")
	}
	writeResult(&b, st, v.result, v.resultOK, false)
	return b.String()
}
