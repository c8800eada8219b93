package tui

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

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

// mode is who receives keys: the active view (normal), the modal input,
// the help overlay or the payload viewer.
type mode int

const (
	modeNormal mode = iota
	modeModal
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
	modal         modal
	payload       payloadPane
	help          help.Model
	keys          globalKeys

	status    string
	statusErr bool
	statusAt  time.Time

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
		kServices: newServices(sh),
		kBuckets:  newBuckets(sh),
	}
	m.modal = newModal(opts.Renderer, &st)
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
		m.mode = modeModal
		m.modal.openConfirm(msg)
		return m, nil
	case promptMsg:
		m.mode = modeModal
		return m, m.modal.openPrompt(msg)
	case navMsg:
		return m, m.navigate(msg)
	case statusMsg:
		m.setStatus(msg.text, msg.err)
		return m, nil
	case busiestMsg:
		// Unless the user went elsewhere, or chose a group meanwhile.
		if m.active() != kPending || m.mode != modeNormal || len(m.views[kPending].crumbs()) > 0 {
			return m, nil
		}
		m.setStatus(fmt.Sprintf("no group chosen: showing %s, the group holding the most pending entries (:pending STREAM GROUP picks another)", msg.group), false)
		return m, m.navigate(navMsg{to: kPending, stream: msg.stream, group: msg.group})
	case actionMsg:
		if msg.err != nil {
			m.setStatus(m.sh.errText(msg.err), true)
		} else {
			m.setStatus(msg.text, false)
		}
		var cmd tea.Cmd
		if len(msg.requeued) > 0 {
			cmd = m.views[kTail].update(requeuedMsg{dlq: msg.dlq, ids: msg.requeued})
		}
		cmd = tea.Batch(cmd, m.views[msg.from].refresh())
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
		m.modal.close()
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

// statusTTL is how long a status message (not an error) stays shown.
const statusTTL = 10 * time.Second

func (m *Model) setStatus(text string, isErr bool) {
	m.status, m.statusErr, m.statusAt = oneLine(m.sh.backend.Redact(text)), isErr, m.sh.now()
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
	case modeModal:
		return m.modalKey(msg)
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
		return viewKey(v, msg)
	}
	switch {
	case key.Matches(msg, m.keys.Quit):
		m.quitting = true
		return tea.Quit
	case key.Matches(msg, m.keys.Help):
		m.mode = modeHelp
		return nil
	case key.Matches(msg, m.keys.Palette):
		m.mode = modeModal
		return m.modal.openPalette()
	case key.Matches(msg, m.keys.Filter):
		if !v.canFilter() {
			m.setStatus("this view has no filter", false)
			return nil
		}
		m.mode = modeModal
		return m.modal.openFilter(v.filterText(), filterSyntax(v))
	case key.Matches(msg, m.keys.Back):
		if v.canFilter() && v.filterText() != "" {
			// esc clears a filter before it goes back.
			m.setStatus("filter cleared", false)
			return v.setFilter("")
		}
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
	return viewKey(v, msg)
}

// modalKey gives a key to the modal input and acts on what it did.
func (m *Model) modalKey(msg tea.KeyMsg) tea.Cmd {
	cmd, ev := m.modal.update(msg)
	if ev.closed {
		m.mode = modeNormal
	}
	v := m.views[m.active()]
	switch ev.kind {
	case modalConfirm:
		if !ev.accepted {
			m.setStatus("cancelled", false)
			return nil
		}
		m.setStatus("working…", false)
		acts := m.modal.confirm.acts
		return tea.Batch(v.update(confirmedMsg{acts: acts}), m.sh.startAll(acts))
	case modalPrompt:
		if !ev.closed {
			return cmd
		}
		if !ev.accepted {
			m.setStatus("cancelled", false)
			return nil
		}
		return m.submit(m.modal.prompt, ev.value)
	case modalPalette:
		if ev.closed && ev.accepted {
			return m.runCommand(ev.value)
		}
	case modalFilter:
		switch {
		case ev.closed && !ev.accepted:
			return v.setFilter("")
		case ev.changed:
			return tea.Batch(cmd, v.setFilter(ev.value))
		}
	}
	return cmd
}

// submit makes a prompt's action from the text typed, then confirms it
// or runs it.
func (m *Model) submit(p promptMsg, text string) tea.Cmd {
	a, ask, err := p.act.withInput(text)
	if err != nil {
		return statusErr(err.Error())
	}
	told := m.views[p.from].update(submittedMsg{act: a})
	if ask != "" {
		return tea.Batch(told, emit(confirmMsg{prompt: ask, acts: []action{a}}))
	}
	return tea.Batch(told, m.sh.start(a))
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
		m.views[old].deactivate()
	}
	return m.views[m.active()].activate()
}

// applyNav gives a view its parameters.
func (m *Model) applyNav(n navMsg) { m.views[n.to].open(n) }

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
