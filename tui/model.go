package tui

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/cursor"
	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/spectacles-go/spectacles/internal/termtext"
	"github.com/spectacles-go/spectacles/themes"
)

// Minimum terminal size; below it the console shows a "too small" screen.
const (
	MinWidth  = 80
	MinHeight = 20
)

// DefaultRefresh is the default interval of the live views' refresh.
const DefaultRefresh = 2 * time.Second

// chrome is how many rows the header, tabs, breadcrumb, status and footer take.
const chrome = 5

// Options configure the console.
type Options struct {
	// Context ends every request when cancelled. Default: Background.
	Context context.Context
	// Theme colours the console. Default: themes.Dark().
	Theme themes.Theme
	// Renderer renders styles for the terminal; default: one detecting
	// the colours of Output.
	Renderer *lipgloss.Renderer
	// Output is the terminal, used by the default Renderer and clipboard.
	// Default os.Stdout.
	Output io.Writer
	// ReadOnly disables every action that changes anything.
	ReadOnly bool
	// Refresh is the interval of the live refresh. Default DefaultRefresh.
	Refresh time.Duration
	// RequestTimeout bounds each broker request. Default 5 s.
	RequestTimeout time.Duration
	// Clipboard copies text; default: an OSC 52 sequence to Output.
	Clipboard func(text string) error
	// Now is the clock (tests fix it). Default time.Now.
	Now func() time.Time
	// Location is the time zone of times shown. Default time.Local.
	Location *time.Location
	// Mouse turns on mouse reporting (Run only); off by default so that
	// the terminal's text selection keeps working.
	Mouse bool
	// View is the view to open first: a palette command such as
	// "streams" or "pending MESSAGE_CREATE". Default: the overview.
	View string
	// TailLimit is how many entries the live tail keeps. Default 1000.
	TailLimit int
}

type mode int

const (
	modeNormal mode = iota
	modePalette
	modeFilter
	modeConfirm
	modePrompt
	modeHelp
	modePayload
)

// Model is the console's root model: it owns the layout, the input mode,
// the refresh timer and the navigation, and routes messages to the views.
type Model struct {
	sh    *shared
	opts  Options
	views [numKinds]view
	stack []kind
	mode  mode

	width, height int
	input         textinput.Model
	confirm       confirmMsg
	prompt        promptMsg
	payload       payloadPane
	help          help.Model
	keys          globalKeys

	status    string
	statusErr bool

	interval time.Duration
	tickGen  int
	quitting bool
}

// New builds the console for b.
func New(b Backend, opts Options) *Model {
	if opts.Context == nil {
		opts.Context = context.Background()
	}
	if opts.Output == nil {
		opts.Output = os.Stdout
	}
	if opts.Renderer == nil {
		opts.Renderer = lipgloss.NewRenderer(opts.Output)
	}
	if opts.Theme.Name == "" {
		opts.Theme = themes.Dark()
	}
	if opts.Refresh <= 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Location == nil {
		opts.Location = time.Local
	}
	if opts.TailLimit <= 0 {
		opts.TailLimit = 1000
	}
	if opts.Clipboard == nil {
		out := opts.Output
		opts.Clipboard = func(text string) error {
			_, err := io.WriteString(out, "\x1b]52;c;"+base64.StdEncoding.EncodeToString([]byte(text))+"\x07")
			return err
		}
	}
	st := newStyles(opts.Renderer, opts.Theme)
	b = shownBackend{b} // broker text enters here, escaped (escape.go)
	node := b.Node()
	sh := &shared{backend: b, node: node, st: &st, r: opts.Renderer, readOnly: opts.ReadOnly, base: opts.Context,
		timeout: opts.RequestTimeout, now: opts.Now, loc: opts.Location, maxTail: opts.TailLimit, tick: tea.Tick}
	m := &Model{sh: sh, opts: opts, keys: newGlobalKeys(), interval: opts.Refresh, stack: []kind{kOverview}}
	m.views = [numKinds]view{
		kOverview: newOverview(sh),
		kStreams:  newStreams(sh),
		kGroups:   newGroups(sh),
		kPending:  newPending(sh),
		kTail:     newTail(sh),
		kPublish:  newPublish(sh),
		kSend:     newSend(sh),
		kShards:   newShards(sh),
	}
	m.input = newInput(opts.Renderer, &st)
	m.payload = newPayloadPane(sh)
	m.help = help.New()
	m.help.ShortSeparator = " • "
	m.help.Styles = help.Styles{
		ShortKey: st.key, ShortDesc: st.muted, ShortSeparator: st.muted, Ellipsis: st.muted,
		FullKey: st.key, FullDesc: st.text, FullSeparator: st.muted,
	}
	if opts.View != "" {
		if c, err := parseCommand(opts.View); err == nil && c.special == cmdNav && c.to != kOverview {
			m.stack = []kind{kOverview, c.to}
			m.applyNav(c.navMsg)
		}
	}
	return m
}

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

// Run runs the console on a terminal until the user quits or ctx ends.
func Run(ctx context.Context, b Backend, opts Options, in io.Reader, out io.Writer) error {
	opts.Context = ctx
	if out != nil {
		opts.Output = out
	}
	m := New(b, opts)
	popts := []tea.ProgramOption{tea.WithAltScreen(), tea.WithContext(ctx)}
	if in != nil {
		popts = append(popts, tea.WithInput(in))
	}
	if out != nil {
		popts = append(popts, tea.WithOutput(out))
	}
	if opts.Mouse {
		popts = append(popts, tea.WithMouseCellMotion())
	}
	_, err := tea.NewProgram(m, popts...).Run()
	if err != nil && ctx.Err() != nil {
		return nil // cancelled from outside: a normal end
	}
	return err
}

func (m *Model) active() kind { return m.stack[len(m.stack)-1] }

func (m *Model) tick() tea.Cmd {
	gen := m.tickGen
	return m.sh.tick(m.interval, func(time.Time) tea.Msg { return tickMsg{gen: gen} })
}

// Init starts the refresh timer and loads the first view.
func (m *Model) Init() tea.Cmd {
	return tea.Batch(m.tick(), m.views[m.active()].activate())
}

// Update routes a message: keys by input mode, results to their view.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.resize()
		return m, nil
	case tickMsg:
		if msg.gen != m.tickGen {
			return m, nil
		}
		var cmd tea.Cmd
		if !m.sh.paused {
			cmd = m.views[m.active()].refresh()
		}
		return m, tea.Batch(cmd, m.tick())
	case tea.KeyMsg:
		return m, m.handleKey(msg)
	case tea.MouseMsg:
		return m, m.handleMouse(msg)
	case confirmMsg:
		if m.sh.readOnly {
			return m, statusErr("read-only: that action is disabled")
		}
		m.confirm, m.mode = msg, modeConfirm
		return m, nil
	case promptMsg:
		m.prompt, m.mode = msg, modePrompt
		m.input.Reset()
		m.input.SetValue(msg.value)
		m.input.CursorEnd()
		if msg.masked {
			m.input.EchoMode = textinput.EchoPassword
			m.input.EchoCharacter = '•'
		} else {
			m.input.EchoMode = textinput.EchoNormal
		}
		m.input.Placeholder = ""
		return m, m.input.Focus()
	case navMsg:
		return m, m.navigate(msg)
	case statusMsg:
		m.setStatus(msg.text, msg.err)
		return m, nil
	case actionMsg:
		if msg.err != nil {
			m.setStatus(m.sh.errText(msg.err), true)
		} else {
			m.setStatus(msg.text, false)
		}
		if len(msg.requeued) > 0 {
			m.views[kTail].(*tailView).drop(msg.dlq, msg.requeued)
		}
		cmd := m.views[msg.from].refresh()
		if msg.from != m.active() {
			cmd = tea.Batch(cmd, m.views[m.active()].refresh())
		}
		return m, cmd
	case payloadMsg:
		if msg.err != nil {
			m.setStatus("payload: "+m.sh.errText(msg.err), true)
			return m, nil
		}
		if !msg.found {
			m.setStatus("entry "+msg.entry.ID+" is no longer in "+msg.stream+" (trimmed or deleted)", true)
			return m, nil
		}
		m.payload.open(msg.stream, msg.entry)
		m.mode = modePayload
		return m, nil
	case copyMsg:
		if err := m.opts.Clipboard(msg.text); err != nil {
			m.setStatus("copy: "+err.Error(), true)
		} else {
			m.setStatus(fmt.Sprintf("copied %s to the clipboard (OSC 52)", msg.what), false)
		}
		return m, nil
	case result:
		return m, m.views[msg.target()].update(msg)
	}
	// Anything else (cursor blinks, view ticks) goes to the active view.
	return m, m.views[m.active()].update(msg)
}

func (m *Model) setStatus(text string, isErr bool) {
	m.status, m.statusErr = oneLine(m.sh.backend.Redact(text)), isErr
}

func (m *Model) resize() {
	bw, bh := m.bodySize()
	for _, v := range m.views {
		v.setSize(bw, bh)
	}
	m.payload.setSize(bw, bh)
	m.help.Width = m.width
}

func (m *Model) bodySize() (int, int) { return m.width, max(m.height-chrome, 1) }

func (m *Model) handleMouse(msg tea.MouseMsg) tea.Cmd {
	if msg.Action != tea.MouseActionPress {
		return nil
	}
	switch msg.Button {
	case tea.MouseButtonWheelUp:
		return m.handleKey(tea.KeyMsg{Type: tea.KeyUp})
	case tea.MouseButtonWheelDown:
		return m.handleKey(tea.KeyMsg{Type: tea.KeyDown})
	}
	return nil
}

func (m *Model) handleKey(msg tea.KeyMsg) tea.Cmd {
	if key.Matches(msg, m.keys.ForceQuit) {
		m.quitting = true
		return tea.Quit
	}
	switch m.mode {
	case modeConfirm:
		m.mode = modeNormal
		if msg.String() == "y" || msg.String() == "Y" {
			m.setStatus("working…", false)
			return m.confirm.yes
		}
		m.setStatus("cancelled", false)
		return nil
	case modePrompt:
		switch msg.Type {
		case tea.KeyEsc:
			m.mode = modeNormal
			m.input.Blur()
			m.input.EchoMode = textinput.EchoNormal
			m.input.Reset()
			m.setStatus("cancelled", false)
			return nil
		case tea.KeyEnter:
			m.mode = modeNormal
			value := m.input.Value()
			m.input.Blur()
			m.input.EchoMode = textinput.EchoNormal
			m.input.Reset()
			return m.prompt.submit(value)
		}
		var cmd tea.Cmd
		m.input, cmd = m.input.Update(msg)
		return cmd
	case modePalette:
		switch msg.Type {
		case tea.KeyEsc:
			m.mode = modeNormal
			m.input.Blur()
			return nil
		case tea.KeyEnter:
			m.mode = modeNormal
			m.input.Blur()
			return m.runCommand(m.input.Value())
		}
		var cmd tea.Cmd
		m.input, cmd = m.input.Update(msg)
		return cmd
	case modeFilter:
		f, _ := m.views[m.active()].(filterable)
		switch msg.Type {
		case tea.KeyEsc:
			m.mode = modeNormal
			m.input.Blur()
			return f.setFilter("")
		case tea.KeyEnter:
			m.mode = modeNormal
			m.input.Blur()
			return nil
		}
		var cmd tea.Cmd
		m.input, cmd = m.input.Update(msg)
		return tea.Batch(cmd, f.setFilter(m.input.Value()))
	case modeHelp:
		m.mode = modeNormal
		return nil
	case modePayload:
		if key.Matches(msg, m.keys.Back) || key.Matches(msg, m.keys.Quit) {
			m.mode = modeNormal
			return nil
		}
		return m.payload.update(msg)
	}

	v := m.views[m.active()]
	if v.capturing() {
		return v.update(msg)
	}
	switch {
	case key.Matches(msg, m.keys.Quit):
		m.quitting = true
		return tea.Quit
	case key.Matches(msg, m.keys.Help):
		m.mode = modeHelp
		return nil
	case key.Matches(msg, m.keys.Palette):
		m.mode = modePalette
		m.input.Reset()
		m.input.EchoMode = textinput.EchoNormal
		m.input.Placeholder = "streams, pending EVENT [GROUP], tail EVENT…, shards, refresh 5s, quit"
		return m.input.Focus()
	case key.Matches(msg, m.keys.Filter):
		f, ok := v.(filterable)
		if !ok {
			m.setStatus("this view has no filter", false)
			return nil
		}
		m.mode = modeFilter
		m.input.Reset()
		m.input.EchoMode = textinput.EchoNormal
		m.input.Placeholder = ""
		m.input.SetValue(f.filterText())
		m.input.CursorEnd()
		return m.input.Focus()
	case key.Matches(msg, m.keys.Back):
		if len(m.stack) > 1 {
			return m.switchTo(m.stack[:len(m.stack)-1])
		}
		return nil
	case key.Matches(msg, m.keys.Refresh):
		return v.refresh()
	case key.Matches(msg, m.keys.Pause):
		m.sh.paused = !m.sh.paused
		if m.sh.paused {
			m.setStatus("live refresh paused (P resumes)", false)
		} else {
			m.setStatus("live refresh resumed", false)
			return v.activate()
		}
		return nil
	case key.Matches(msg, m.keys.Faster):
		return m.setInterval(m.interval / 2)
	case key.Matches(msg, m.keys.Slower):
		return m.setInterval(m.interval * 2)
	}
	for k := range numKinds {
		if key.Matches(msg, m.keys.Views[k]) {
			return m.navigate(navMsg{to: k})
		}
	}
	return v.update(msg)
}

func (m *Model) setInterval(d time.Duration) tea.Cmd {
	d = min(max(d, 250*time.Millisecond), time.Minute)
	m.interval = d
	m.tickGen++
	m.setStatus("refresh every "+d.String(), false)
	return m.tick()
}

// switchTo makes stack current and activates its top view.
func (m *Model) switchTo(stack []kind) tea.Cmd {
	old := m.active()
	m.stack = stack
	if old != m.active() {
		if d, ok := m.views[old].(deactivator); ok {
			d.deactivate()
		}
	}
	return m.views[m.active()].activate()
}

// applyNav gives a view its parameters.
func (m *Model) applyNav(n navMsg) {
	switch n.to {
	case kGroups:
		if n.stream != "" {
			m.views[kGroups].(*groupsView).setStream(n.stream)
		}
	case kPending:
		if n.stream != "" {
			m.views[kPending].(*pendingView).setTarget(n.stream, n.group)
		}
	case kTail:
		if len(n.streams) > 0 {
			m.views[kTail].(*tailView).setStreams(n.streams)
		}
	case kPublish:
		if n.event != "" || n.data != "" {
			m.views[kPublish].(*publishView).prefill(n.event, n.data)
		}
	case kSend:
		if n.data != "" {
			m.views[kSend].(*sendView).prefillGuild(n.data)
		}
	}
}

func (m *Model) navigate(n navMsg) tea.Cmd {
	m.applyNav(n)
	stack := m.stack
	if stack[len(stack)-1] != n.to {
		stack = append(stack, n.to)
		if len(stack) > 32 {
			stack = stack[len(stack)-32:]
		}
	}
	return m.switchTo(stack)
}

func (m *Model) runCommand(text string) tea.Cmd {
	n, err := parseCommand(text)
	if err != nil {
		m.setStatus(err.Error(), true)
		return nil
	}
	switch n.special {
	case cmdQuit:
		m.quitting = true
		return tea.Quit
	case cmdHelp:
		m.mode = modeHelp
		return nil
	case cmdRefresh:
		if n.interval > 0 {
			m.sh.paused = false
			return m.setInterval(n.interval)
		}
		m.sh.paused = !m.sh.paused
		return nil
	case cmdNone:
		return nil
	}
	return m.navigate(n.navMsg)
}

// View renders the whole screen.
func (m *Model) View() string {
	if m.quitting {
		return ""
	}
	if m.width == 0 || m.height == 0 {
		return "starting…"
	}
	st := m.sh.st
	if m.width < MinWidth || m.height < MinHeight {
		msg := fmt.Sprintf("terminal too small: %d×%d\nthe console needs at least %d×%d\n\nenlarge the window, or press q to quit",
			m.width, m.height, MinWidth, MinHeight)
		return lipgloss.Place(m.width, m.height, lipgloss.Center, lipgloss.Center, st.warn.Render(msg),
			lipgloss.WithWhitespaceChars(" "))
	}
	v := m.views[m.active()]
	var body string
	switch m.mode {
	case modeHelp:
		body = m.helpView()
	case modePayload:
		body = m.payload.view()
	default:
		body = v.view()
	}
	_, bh := m.bodySize()
	body = fitLines(body, m.width, bh)
	parts := []string{m.headerView(), m.tabsView(), m.crumbView(), body, m.statusView(), m.footerView()}
	// Broker text was escaped where it entered (shownBackend); this
	// catches what the user typed (a bidi control pasted in a field).
	return termtext.EscapeStyled(strings.Join(parts, "\n"))
}

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
	refresh := "refresh " + m.interval.String()
	if m.sh.paused {
		refresh = "refresh paused"
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
	left = pad(left, max(m.width-rightW, 0))
	return st.header.Render(left+refresh+" ") + " " + right
}

func (m *Model) tabsView() string {
	st := m.sh.st
	var b strings.Builder
	for k := range numKinds {
		label := fmt.Sprintf("%d %s", k+1, kindTitles[k])
		if k == m.active() {
			b.WriteString(st.tabOn.Render("[" + label + "]"))
		} else {
			b.WriteString(st.tabOff.Render(" " + label + " "))
		}
	}
	return truncate(b.String(), m.width)
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
	if f, ok := m.views[k].(filterable); ok && f.filterText() != "" && m.mode != modeFilter {
		s += st.accent.Render("  filter: " + f.filterText())
	}
	return truncate(s, m.width)
}

func (m *Model) statusView() string {
	st := m.sh.st
	switch m.mode {
	case modeConfirm:
		return truncate(" "+st.warn.Render(m.confirm.prompt+" (y/N)"), m.width)
	case modePrompt:
		line := " " + st.key.Render(m.prompt.label+": ") + m.input.View()
		if m.prompt.hint != "" {
			line += "  " + st.muted.Render(m.prompt.hint)
		}
		return truncate(line, m.width)
	case modePalette:
		line := " " + st.key.Render(":") + m.input.View()
		if s := paletteHint(m.input.Value()); s != "" {
			line += "  " + st.muted.Render(s)
		}
		return truncate(line, m.width)
	case modeFilter:
		return truncate(" "+st.key.Render("/")+m.input.View()+"  "+st.muted.Render("enter keep • esc clear"), m.width)
	}
	if m.status == "" {
		return ""
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
	case modeConfirm:
		return []key.Binding{bindAs("y", "confirm", "y"), bindAs("any other key", "cancel", "n")}
	case modePrompt, modePalette, modeFilter:
		return []key.Binding{bindAs("enter", "accept", "enter"), bindAs("esc", "cancel", "esc")}
	}
	return enabled(v.keys()...)
}

func (m *Model) globalBindings() []key.Binding {
	v := m.views[m.active()]
	if v.capturing() {
		return []key.Binding{m.keys.ForceQuit}
	}
	g := []key.Binding{m.keys.Help, m.keys.Palette}
	if _, ok := v.(filterable); ok {
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
	if u, ok := m.views[m.active()].(unavailabler); ok && m.mode == modeHelp {
		if list := u.unavailable(); len(list) > 0 {
			title := "Unavailable on this broker (" + m.brokerKind() + "):"
			if t, ok := u.(unavailableTitler); ok {
				title = t.unavailableTitle()
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
	b.WriteString(st.muted.Render("Commands (:) "+strings.Join(commandNames(), ", ")) + "\n")
	if m.sh.readOnly {
		b.WriteString(st.warn.Render("READ-ONLY: ack, claim, dead-letter, requeue, publish, call, send and shard control are disabled") + "\n")
	}
	b.WriteString(st.muted.Render("press any key to close"))
	return b.String()
}
