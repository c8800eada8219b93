package tui

import (
	"github.com/charmbracelet/lipgloss"

	"github.com/spectacles-go/spectacles/themes"
)

// styles are a theme turned into lipgloss styles for one renderer.
type styles struct {
	theme                               themes.Theme
	text, muted, accent, title, key     lipgloss.Style
	header, badge, tabOn, tabOff, crumb lipgloss.Style
	selected, marked, colHeader         lipgloss.Style
	good, warn, bad                     lipgloss.Style
	box                                 lipgloss.Style
}

func fg(s lipgloss.Style, c lipgloss.TerminalColor) lipgloss.Style {
	if c == nil {
		return s
	}
	return s.Foreground(c)
}

func bg(s lipgloss.Style, c lipgloss.TerminalColor) lipgloss.Style {
	if c == nil {
		return s
	}
	return s.Background(c)
}

func newStyles(r *lipgloss.Renderer, t themes.Theme) styles {
	n := r.NewStyle
	s := styles{theme: t}
	s.text = fg(n(), t.Text)
	s.muted = fg(n(), t.Muted)
	s.accent = fg(n(), t.Accent)
	s.key = fg(n(), t.Accent).Bold(t.Bold)
	s.title = fg(n(), t.Accent).Bold(t.Bold)
	s.header = bg(fg(n(), t.HeaderFg), t.HeaderBg).Bold(t.Bold)
	if t.HeaderBg == nil {
		s.header = s.header.Reverse(true)
	}
	s.badge = bg(fg(n(), t.BadgeFg), t.BadgeBg).Bold(true)
	if t.BadgeBg == nil {
		s.badge = s.badge.Reverse(true)
	}
	s.tabOn = fg(n(), t.Accent).Bold(true).Underline(true)
	s.tabOff = fg(n(), t.Muted)
	s.crumb = fg(n(), t.Text).Bold(t.Bold)
	s.selected = bg(fg(n(), t.SelectedFg), t.SelectedBg).Reverse(t.Reverse)
	s.marked = fg(n(), t.Marked).Bold(true)
	s.colHeader = fg(n(), t.Muted).Bold(t.Bold)
	s.good = fg(n(), t.Good)
	s.warn = fg(n(), t.Warn).Bold(t.Warn == nil)
	s.bad = fg(n(), t.Bad).Bold(true)
	border := n().Border(lipgloss.RoundedBorder()).Padding(0, 1)
	if t.Accent != nil {
		border = border.BorderForeground(t.Accent)
	}
	s.box = border
	return s
}
