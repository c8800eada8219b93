package tui

import (
	"slices"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
)

// globalKeys work in every view (unless a text field has the focus).
type globalKeys struct {
	Quit, ForceQuit, Help, Palette, Filter, Back, Refresh, Pause, Faster, Slower key.Binding
	Views                                                                        [numKinds]key.Binding
}

func newGlobalKeys() globalKeys {
	g := globalKeys{
		Quit:      key.NewBinding(key.WithKeys("q"), key.WithHelp("q", "quit")),
		ForceQuit: key.NewBinding(key.WithKeys("ctrl+c"), key.WithHelp("ctrl+c", "quit")),
		Help:      key.NewBinding(key.WithKeys("?"), key.WithHelp("?", "help")),
		Palette:   key.NewBinding(key.WithKeys(":"), key.WithHelp(":", "command")),
		Filter:    key.NewBinding(key.WithKeys("/"), key.WithHelp("/", "filter")),
		Back:      key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "back")),
		Refresh:   key.NewBinding(key.WithKeys("r", "ctrl+r"), key.WithHelp("r", "refresh now")),
		Pause:     key.NewBinding(key.WithKeys("P"), key.WithHelp("P", "pause/resume refresh")),
		Faster:    key.NewBinding(key.WithKeys("+", "="), key.WithHelp("+", "refresh faster")),
		Slower:    key.NewBinding(key.WithKeys("-", "_"), key.WithHelp("-", "refresh slower")),
	}
	for k := range numKinds {
		n := tabKey(k)
		g.Views[k] = key.NewBinding(key.WithKeys(n), key.WithHelp(n, kindNames[k]))
	}
	return g
}

// bind makes a binding with its help text.
func bind(help string, keys ...string) key.Binding {
	return key.NewBinding(key.WithKeys(keys...), key.WithHelp(keys[0], help))
}

// bindAs makes a binding whose help shows label instead of the first key.
func bindAs(label, help string, keys ...string) key.Binding {
	return key.NewBinding(key.WithKeys(keys...), key.WithHelp(label, help))
}

// pressed reports whether msg is one of b's keys, enabled or not: the
// console uses it to explain why a disabled action did nothing.
func pressed(msg tea.KeyMsg, b key.Binding) bool {
	return slices.Contains(b.Keys(), msg.String())
}

// enabled returns the enabled bindings of list.
func enabled(list ...key.Binding) []key.Binding {
	out := make([]key.Binding, 0, len(list))
	for _, b := range list {
		if b.Enabled() {
			out = append(out, b)
		}
	}
	return out
}

// navKeys are the cursor keys shared by the table views.
type navKeys struct {
	Up, Down, PageUp, PageDown, Top, Bottom key.Binding
}

func newNavKeys() navKeys {
	return navKeys{
		Up:       bindAs("↑/k", "up", "up", "k"),
		Down:     bindAs("↓/j", "down", "down", "j"),
		PageUp:   bindAs("pgup", "page up", "pgup", "ctrl+b"),
		PageDown: bindAs("pgdn", "page down", "pgdown", "ctrl+f"),
		Top:      bindAs("home/g", "first", "home", "g"),
		Bottom:   bindAs("end/G", "last", "end", "G"),
	}
}

// move applies a navigation key to a table and returns the edge it hit
// (-1, 0, +1) and whether the key was a navigation key.
func (n navKeys) move(msg tea.KeyMsg, t *table) (edge int, ok bool) {
	switch {
	case key.Matches(msg, n.Up):
		return t.move(-1), true
	case key.Matches(msg, n.Down):
		return t.move(1), true
	case key.Matches(msg, n.PageUp):
		return t.move(-t.pageRows()), true
	case key.Matches(msg, n.PageDown):
		return t.move(t.pageRows()), true
	case key.Matches(msg, n.Top):
		t.cursor = 0
		t.clamp()
		return 0, true
	case key.Matches(msg, n.Bottom):
		t.cursor = len(t.rows) - 1
		t.clamp()
		return 0, true
	}
	return 0, false
}

func (n navKeys) list() []key.Binding {
	return []key.Binding{n.Up, n.Down, n.PageUp, n.PageDown, n.Top, n.Bottom}
}

// tabKey is the key of view k: 1 to 9, then 0 for the tenth.
func tabKey(k kind) string {
	if k == 9 {
		return "0"
	}
	return string(rune('1' + k))
}
