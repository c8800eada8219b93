package tui

import (
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
)

// modalKind is which modal input is open.
type modalKind int

const (
	modalNone modalKind = iota
	modalPalette
	modalFilter
	modalConfirm
	modalPrompt
)

// modal is the console's modal input, in the status line: the ":"
// palette, the "/" filter, a "(y/N)" confirmation and a prompt for a line
// of text. While it is open the root gives it every key; what a key did
// comes back as a modalEvent, which the root acts on.
type modal struct {
	st      *styles
	kind    modalKind
	input   textinput.Model
	confirm confirmMsg
	prompt  promptMsg
}

// modalEvent is what a key did to the modal.
type modalEvent struct {
	kind modalKind
	// closed: the modal closed, accepted (enter, y) or not (esc, any
	// other key on a confirmation).
	closed, accepted bool
	// value is the text typed (palette, filter, prompt).
	value string
	// changed: the filter's text changed.
	changed bool
}

func newModal(r *lipgloss.Renderer, st *styles) modal {
	in := newInput(r, st)
	return modal{st: st, input: in}
}

// openInput opens a text input with value, placeholder and echo.
func (d *modal) openInput(k modalKind, value, placeholder string, masked bool) tea.Cmd {
	d.kind = k
	d.input.Reset()
	d.input.SetValue(value)
	d.input.CursorEnd()
	d.input.EchoMode = textinput.EchoNormal
	if masked {
		d.input.EchoMode = textinput.EchoPassword
		d.input.EchoCharacter = '•'
	}
	d.input.Placeholder = placeholder
	d.input.ShowSuggestions = false
	d.input.SetSuggestions(nil)
	return d.input.Focus()
}

func (d *modal) openPalette() tea.Cmd {
	return d.openInput(modalPalette, "", "streams, pending EVENT [GROUP], tail EVENT…, shards, refresh 5s, quit", false)
}

// openFilter opens the filter with text, syntax as its placeholder.
func (d *modal) openFilter(text, syntax string) tea.Cmd {
	return d.openInput(modalFilter, text, syntax, false)
}

func (d *modal) openPrompt(p promptMsg) tea.Cmd {
	d.prompt = p
	cmd := d.openInput(modalPrompt, p.value, "", p.masked)
	if len(p.suggestions) > 0 && !p.masked {
		// Tab completes, ctrl+n / ctrl+p choose among several.
		d.input.ShowSuggestions = true
		d.input.SetSuggestions(p.suggestions)
	}
	return cmd
}

func (d *modal) openConfirm(c confirmMsg) {
	d.input.Blur()
	d.confirm, d.kind = c, modalConfirm
}

// close closes the modal; a masked prompt's text is forgotten.
func (d *modal) close() {
	if d.kind == modalPrompt {
		d.input.EchoMode = textinput.EchoNormal
		d.input.Reset()
	}
	d.input.Blur()
	d.kind = modalNone
}

// update handles a key while the modal is open.
func (d *modal) update(msg tea.KeyMsg) (tea.Cmd, modalEvent) {
	ev := modalEvent{kind: d.kind}
	if d.kind == modalConfirm {
		ev.closed, ev.accepted = true, msg.String() == "y" || msg.String() == "Y"
		d.close()
		return nil, ev
	}
	switch msg.Type {
	case tea.KeyEsc, tea.KeyEnter:
		ev.closed, ev.accepted, ev.value = true, msg.Type == tea.KeyEnter, d.input.Value()
		d.close()
		return nil, ev
	}
	var cmd tea.Cmd
	d.input, cmd = d.input.Update(msg)
	ev.value = d.input.Value()
	// The filter follows every key typed.
	ev.changed = d.kind == modalFilter
	return cmd, ev
}

// view is the status line while the modal is open.
func (d *modal) view(width int) string {
	st := d.st
	switch d.kind {
	case modalConfirm:
		// A long question is cut, never its (y/N).
		const yn = " (y/N)"
		return st.warn.Render(truncate(" "+d.confirm.prompt, max(width-len(yn), 1)) + yn)
	case modalPrompt:
		line := " " + st.key.Render(d.prompt.label+": ") + d.input.View()
		if d.prompt.hint != "" {
			line += "  " + st.muted.Render(d.prompt.hint)
		}
		return truncate(line, width)
	case modalPalette:
		line := " " + st.key.Render(":") + d.input.View()
		if s := paletteHint(d.input.Value()); s != "" {
			line += "  " + st.muted.Render(s)
		}
		return truncate(line, width)
	case modalFilter:
		return truncate(" "+st.key.Render("/")+d.input.View()+"  "+st.muted.Render("enter keep • esc clear"), width)
	}
	return ""
}

// keys are the modal's bindings.
func (d *modal) keys() []key.Binding {
	if d.kind == modalConfirm {
		return []key.Binding{bindAs("y", "confirm", "y"), bindAs("any other key", "cancel", "n")}
	}
	return []key.Binding{bindAs("enter", "accept", "enter"), bindAs("esc", "cancel", "esc")}
}
