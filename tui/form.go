package tui

import (
	"strings"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textarea"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
)

// focusable is a form field: a textinput or a textarea.
type focusable interface {
	Focus() tea.Cmd
	Blur()
}

// formFocus is the focus of a form's fields, the same in Publish and Send:
// tab and shift+tab cycle through the fields, esc leaves them (the view's
// keys work again), enter or i edits the first field again.
type formFocus struct {
	fields []focusable
	// edit is the field enter/i focuses.
	edit int
	// cur is the focused field; -1: none.
	cur int
	k   struct{ Next, Prev, Edit, Leave key.Binding }
}

func newFormFocus(edit int, fields ...focusable) formFocus {
	f := formFocus{fields: fields, edit: edit}
	f.k.Next = bind("next field", "tab")
	f.k.Prev = bind("previous field", "shift+tab")
	f.k.Edit = bindAs("enter/i", "edit", "enter", "i")
	f.k.Leave = bind("stop editing", "esc")
	f.set(0)
	return f
}

// set focuses field i (-1: none).
func (f *formFocus) set(i int) {
	f.cur = i
	for _, x := range f.fields {
		x.Blur()
	}
	if i >= 0 && i < len(f.fields) {
		f.fields[i].Focus()
	}
}

// editing reports a focused field.
func (f *formFocus) editing() bool { return f.cur >= 0 }

// keys are the focus bindings, enabled by the focus.
func (f *formFocus) keys() []key.Binding {
	on := f.editing()
	f.k.Edit.SetEnabled(!on)
	f.k.Leave.SetEnabled(on)
	f.k.Next.SetEnabled(on)
	f.k.Prev.SetEnabled(on)
	return []key.Binding{f.k.Next, f.k.Prev, f.k.Edit, f.k.Leave}
}

// key moves the focus when msg is a focus key, and reports whether it was.
func (f *formFocus) key(msg tea.KeyMsg) bool {
	n := len(f.fields)
	switch on := f.editing(); {
	case key.Matches(msg, f.k.Leave) && on:
		f.set(-1)
	case key.Matches(msg, f.k.Edit) && !on:
		f.set(f.edit)
	case key.Matches(msg, f.k.Next) && on:
		f.set((f.cur + 1) % n)
	case key.Matches(msg, f.k.Prev) && on:
		f.set((f.cur + n - 1) % n)
	default:
		return false
	}
	return true
}

// update hands msg to the focused field, if any, and returns its command.
func (f *formFocus) update(msg tea.Msg) tea.Cmd {
	if f.cur < 0 || f.cur >= len(f.fields) {
		return nil
	}
	var cmd tea.Cmd
	switch x := f.fields[f.cur].(type) {
	case *textinput.Model:
		*x, cmd = x.Update(msg)
	case *textarea.Model:
		*x, cmd = x.Update(msg)
	}
	return cmd
}

// label renders field i's label: marked and highlighted when it has the focus.
func (f *formFocus) label(st *styles, i int, s string) string {
	if f.cur == i {
		return st.key.Render("▸ " + s)
	}
	return st.muted.Render("  " + s)
}

// writeResult writes a form's last result to b, one line at a time, the
// first styled good or bad by ok (muted while busy); nothing if it is empty.
func writeResult(b *strings.Builder, st *styles, result string, ok, busy bool) {
	if result == "" {
		return
	}
	style := st.good
	if !ok {
		style = st.bad
	}
	if busy {
		style = st.muted
	}
	lines := strings.Split(result, "\n")
	b.WriteString(" " + style.Render(lines[0]) + "\n")
	for _, l := range lines[1:] {
		b.WriteString(" " + l + "\n")
	}
}
