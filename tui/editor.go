package tui

import (
	"github.com/charmbracelet/bubbles/cursor"
	"github.com/charmbracelet/bubbles/textarea"
	"github.com/charmbracelet/bubbles/textinput"
	"github.com/charmbracelet/lipgloss"
)

// newInput makes a one-line text input styled by the console's theme, with
// a steady cursor.
func newInput(r *lipgloss.Renderer, st *styles) textinput.Model {
	in := textinput.New()
	in.Prompt = ""
	in.Cursor.SetMode(cursor.CursorStatic)
	in.Cursor.Style = r.NewStyle().Reverse(true)
	in.Cursor.TextStyle = r.NewStyle()
	in.PromptStyle = st.key
	in.TextStyle = st.text
	in.PlaceholderStyle = st.muted
	in.CompletionStyle = st.muted
	return in
}

// newField makes a one-line text field styled by the console's theme, with
// a steady cursor (a blinking one would redraw the screen twice a second).
func newField(sh *shared, placeholder string) textinput.Model {
	in := newInput(sh.r, sh.st)
	in.Placeholder = placeholder
	return in
}

// newEditor makes a multi-line JSON editor styled by the theme.
func newEditor(sh *shared) textarea.Model {
	ta := textarea.New()
	n := sh.r.NewStyle
	style := textarea.Style{
		Base: n(), CursorLine: n(), CursorLineNumber: sh.st.accent, EndOfBuffer: sh.st.muted,
		LineNumber: sh.st.muted, Placeholder: sh.st.muted, Prompt: sh.st.muted, Text: sh.st.text,
	}
	ta.FocusedStyle, ta.BlurredStyle = style, style
	ta.Cursor.SetMode(cursor.CursorStatic)
	ta.Cursor.Style = n().Reverse(true)
	ta.Cursor.TextStyle = n()
	ta.ShowLineNumbers = true
	ta.CharLimit = 64 << 10
	ta.MaxHeight = 0
	ta.Prompt = "│ "
	ta.Blur()
	return ta
}
