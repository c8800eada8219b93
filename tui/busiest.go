package tui

import (
	tea "github.com/charmbracelet/bubbletea"
)

// busiestMsg names the group holding the most pending entries, for the
// Pending view opened with no group chosen.
type busiestMsg struct{ stream, group string }

// pickBusiest finds, off the UI goroutine, the stream and group holding
// the most pending entries; the root then opens them in Pending if it still
// shows no group. One search runs at a time; nil when one runs already or
// there is no inspector.
func pickBusiest(sh *shared) tea.Cmd {
	ins := sh.backend.Inspector()
	if ins == nil || !sh.picking.CompareAndSwap(false, true) {
		return nil
	}
	return func() tea.Msg {
		defer sh.picking.Store(false)
		streams, groups, _ := loadStreams(sh, ins)
		var best busiestMsg
		var most int64
		for _, s := range streams {
			for _, g := range groups[s.Name] {
				if g.Pending > most {
					best, most = busiestMsg{stream: s.Name, group: g.Name}, g.Pending
				}
			}
		}
		if most == 0 {
			return nil // nothing pending anywhere: the view explains how to pick
		}
		return best
	}
}
