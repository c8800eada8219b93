package tui

import (
	"strings"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/x/ansi"
)

// The console's chrome: header, tabs, breadcrumb, status line, footer and
// the help overlay, around the active view's body.

// fitLines cuts or pads text to exactly h lines of at most w cells.
func fitLines(s string, w, h int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > h {
		lines = lines[:h]
	}
	for i, l := range lines {
		if ansi.StringWidth(l) > w {
			lines[i] = ansi.Truncate(l, w, "")
		}
	}
	for len(lines) < h {
		lines = append(lines, "")
	}
	return strings.Join(lines, "\n")
}

func (m *Model) headerView() string {
	st := m.sh.st
	n := m.sh.node
	left := " spectacles console"
	if n.Name != "" {
		left += " │ node " + n.Name
	}
	addr := n.BrokerKind
	if n.BrokerAddress != "" {
		addr += " " + n.BrokerAddress
	}
	if n.Embedded {
		addr += " (embedded, in-memory)"
	}
	left += " │ " + addr
	refresh := "every " + m.interval.String()
	if m.sh.paused {
		refresh = "refresh paused"
	}
	if d, ok := m.views[m.active()].(dated); ok && m.mode == modeNormal {
		if at := d.updated(); !at.IsZero() {
			age := max(m.sh.now().Sub(at), 0)
			refresh = "updated " + fmtAge(age) + " ago · " + refresh
			if age > 3*m.interval+m.sh.timeout && !m.sh.paused {
				refresh = "⚠ " + refresh // the loads do not come back
			}
		}
	}
	var badges []string
	if n.Simulated {
		badges = append(badges, st.badge.Render(" SIMULATED "))
	}
	if m.sh.readOnly {
		badges = append(badges, st.badge.Render(" READ-ONLY "))
	}
	right := strings.Join(badges, " ")
	rightW := ansi.StringWidth(right) + ansi.StringWidth(refresh) + 2
	// Narrow: the title and the node's name give way before the broker.
	room := m.width - rightW
	for _, short := range []string{strings.Replace(left, " spectacles console", " spectacles", 1), " spectacles │ " + addr} {
		if ansi.StringWidth(left)+2 <= room {
			break
		}
		left = short
	}
	left = pad(left, max(room, 0))
	return st.header.Render(left+refresh+" ") + " " + right
}

func (m *Model) tabsView() string {
	st := m.sh.st
	render := func(compact, short bool) string {
		var b strings.Builder
		for k := range numKinds {
			label := tabKey(k) + " " + kindTitles[k]
			if short && k != m.active() {
				label = tabKey(k) + " " + kindShort[k]
			}
			switch {
			case k == m.active() && compact && k > 0:
				b.WriteString(" " + st.tabOn.Render("["+label+"]"))
			case k == m.active():
				b.WriteString(st.tabOn.Render("[" + label + "]"))
			case compact: // one space between tabs, so that all fit in 80 columns
				b.WriteString(st.tabOff.Render(" " + label))
			default:
				b.WriteString(st.tabOff.Render(" " + label + " "))
			}
		}
		return b.String()
	}
	s := render(false, false)
	if ansi.StringWidth(s) > m.width {
		s = render(true, false)
	}
	if ansi.StringWidth(s) > m.width {
		s = render(true, true) // inactive tabs by short titles
	}
	return truncate(s, m.width)
}

func (m *Model) crumbView() string {
	st := m.sh.st
	k := m.active()
	parts := []string{kindTitles[k]}
	parts = append(parts, m.views[k].crumbs()...)
	if m.mode == modePayload {
		parts = append(parts, "payload "+m.payload.entry.ID)
	}
	if m.mode == modeHelp {
		parts = append(parts, "help")
	}
	s := " " + st.crumb.Render(strings.Join(parts, " › "))
	if m.sh.stats != nil && k != kOverview && k != kStreams && k != kGroups { // those show it whole
		s += "  " + st.bad.Render("⚠ statistics unavailable")
	}
	if v := m.views[k]; v.canFilter() && v.filterText() != "" && m.modal.kind != modalFilter {
		s += st.accent.Render("  filter: " + v.filterText())
	}
	return truncate(s, m.width)
}

func (m *Model) statusView() string {
	st := m.sh.st
	if m.mode == modeModal {
		return m.modal.view(m.width)
	}
	if m.status == "" {
		return ""
	}
	if !m.statusErr && !strings.HasSuffix(m.status, "…") && m.sh.now().Sub(m.statusAt) > statusTTL {
		return "" // aged out; an error, or work in progress ("working…"), stays until something replaces it
	}
	if m.statusErr {
		return truncate(" "+st.bad.Render("✗ "+m.status), m.width)
	}
	return truncate(" "+st.muted.Render(m.status), m.width)
}

// viewBindings are the keys that work now, view first.
func (m *Model) viewBindings() []key.Binding {
	v := m.views[m.active()]
	switch m.mode {
	case modePayload:
		return append(m.payload.keys(), m.keys.Back)
	case modeModal:
		return m.modal.keys()
	}
	return enabled(v.keys()...)
}

func (m *Model) globalBindings() []key.Binding {
	v := m.views[m.active()]
	if v.capturing() {
		return []key.Binding{m.keys.ForceQuit}
	}
	g := []key.Binding{m.keys.Help, m.keys.Palette}
	if v.canFilter() {
		g = append(g, m.keys.Filter)
	}
	if len(m.stack) > 1 {
		g = append(g, m.keys.Back)
	}
	g = append(g, m.keys.Refresh, m.keys.Pause, m.keys.Faster, m.keys.Slower, m.keys.Quit)
	return g
}

// brokerKind is the broker's kind as the server reports it, else the node's.
func (m *Model) brokerKind() string {
	if m.sh.serverKind != "" {
		return m.sh.serverKind
	}
	return m.sh.node.BrokerKind
}

func (m *Model) footerView() string {
	list := m.viewBindings()
	if m.mode == modeNormal {
		list = append(list, m.globalBindings()...)
	}
	return truncate(" "+m.help.ShortHelpView(list), m.width)
}

func (m *Model) helpView() string {
	st := m.sh.st
	views := make([]key.Binding, 0, numKinds)
	for k := range numKinds {
		views = append(views, m.keys.Views[k])
	}
	groups := [][]key.Binding{m.viewBindings(), m.globalBindings(), views}
	var b strings.Builder
	b.WriteString(st.title.Render("Keys that work in "+kindTitles[m.active()]) + "\n\n")
	b.WriteString(m.help.FullHelpView(groups) + "\n\n")
	if v := m.views[m.active()]; m.mode == modeHelp {
		if list := v.unavailable(); len(list) > 0 {
			title := "Unavailable on this broker (" + m.brokerKind() + "):"
			if t := v.unavailableTitle(); t != "" {
				title = t
			}
			b.WriteString(st.warn.Render(title) + "\n")
			for _, x := range list {
				h := x.key.Help()
				b.WriteString("  " + st.key.Render(pad(h.Key, 6)) + st.text.Render(h.Desc) + "\n")
				b.WriteString("        " + st.muted.Render(truncate("✗ "+x.why, max(m.width-9, 10))) + "\n")
			}
			b.WriteString("\n")
		}
	}
	if v := m.views[m.active()]; v.canFilter() {
		f := ansi.Wordwrap("Filter (/) "+filterSyntax(v)+"; esc clears it, a second esc goes back", max(m.width-1, 20), "")
		b.WriteString(st.muted.Render(f) + "\n")
	}
	// Every command, wrapped to the width (80 columns show them all).
	cmds := ansi.Wordwrap("Commands (:) "+strings.Join(commandNames(), ", "), max(m.width-1, 20), "")
	b.WriteString(st.muted.Render(cmds) + "\n")
	if m.sh.readOnly {
		b.WriteString(st.warn.Render("READ-ONLY: ack, claim, dead-letter, requeue, publish, call, send and shard control are disabled") + "\n")
	}
	b.WriteString(st.muted.Render("press any key to close"))
	return b.String()
}
