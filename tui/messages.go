package tui

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/spectacles-go/spectacles/core"
)

// kind names a view.
type kind int

// The views, in tab order (keys 1–9, then 0).
const (
	kOverview kind = iota
	kStreams
	kGroups
	kPending
	kTail
	kPublish
	kSend
	kShards
	kServices
	kBuckets
	numKinds
)

var kindNames = [numKinds]string{"overview", "streams", "groups", "pending", "tail", "publish", "send", "shards", "services", "buckets"}

var kindTitles = [numKinds]string{"Overview", "Streams", "Groups", "Pending", "Tail", "Publish", "Send", "Shards", "Services", "Buckets"}

// kindShort are the tab titles when even the compact tab row does not fit.
var kindShort = [numKinds]string{"Over", "Strm", "Grps", "Pend", "Tail", "Pub", "Send", "Shrd", "Svcs", "Bkts"}

// view is one screen of the console. Views are components: the root owns
// the layout and routes messages; a view owns its data, its keys and its
// requests.
type view interface {
	navigable
	// crumbs are the breadcrumb after the view's title (stream, group).
	crumbs() []string
	// setSize gives the body's size.
	setSize(w, h int)
	// update handles the view's own results, and keys while it is active
	// (unless the view is a keyer).
	update(msg tea.Msg) tea.Cmd
	// view renders the body.
	view() string
	// refresh starts loading unless a load is in flight (then it marks
	// the view dirty, and the load starts again when the first returns).
	refresh() tea.Cmd
	// activate is called when the view becomes visible.
	activate() tea.Cmd
	// keys are the view's bindings, enabled by the view's state.
	keys() []key.Binding
	// capturing reports a focused text field that takes every key.
	capturing() bool
}

// dated is a view that knows when its data was read: the header shows
// its age.
type dated interface {
	// updated is when the data shown was read; zero before the first load.
	updated() time.Time
}

// filterSyntaxer is a filtering view that describes its filter's syntax;
// filterSyntax gives the default.
type filterSyntaxer interface {
	filterSyntax() string
}

// filterSyntax is how v's filter reads, for the help and the filter's
// placeholder.
func filterSyntax(v view) string {
	if f, ok := v.(filterSyntaxer); ok {
		return f.filterSyntax()
	}
	return "text: the rows that contain it (any case)"
}

// keyer is a view that takes its keys in key rather than in update.
type keyer interface {
	key(msg tea.KeyMsg) tea.Cmd
}

// viewKey gives a key to the active view v: first its keys are enabled by
// its state, then the key goes to its key method if it is a keyer, else to
// update.
func viewKey(v view, msg tea.KeyMsg) tea.Cmd {
	if k, ok := v.(keyer); ok {
		v.keys()
		return k.key(msg)
	}
	return v.update(msg)
}

// navigable is the navigation the root asks of every view, the same for
// all of them, so that the root never needs to know which view it talks
// to: open with a navMsg's parameters, stop when hidden, filter ("/"), and
// list the keys this broker cannot do. viewBase gives the defaults.
type navigable interface {
	// open takes the parameters of a navMsg (stream, group, streams…).
	open(n navMsg)
	// deactivate stops background work when the view is hidden.
	deactivate()
	// canFilter reports that the view accepts "/" filters.
	canFilter() bool
	// filterText is the filter typed; setFilter changes it.
	filterText() string
	setFilter(text string) tea.Cmd
	// unavailable lists the actions this broker cannot do, headed by
	// unavailableTitle ("" names the broker).
	unavailable() []unavailableKey
	unavailableTitle() string
}

// viewBase is a navigable that has no parameters, no filter and nothing
// unavailable; views embed it and override what they do.
type viewBase struct{}

func (viewBase) open(navMsg)                   {}
func (viewBase) deactivate()                   {}
func (viewBase) canFilter() bool               { return false }
func (viewBase) filterText() string            { return "" }
func (viewBase) setFilter(string) tea.Cmd      { return nil }
func (viewBase) unavailable() []unavailableKey { return nil }
func (viewBase) unavailableTitle() string      { return "" }

// result is a view's own reply from a command.
type result interface {
	target() kind
}

// tickMsg drives the periodic refresh; gen drops ticks of an old timer.
type tickMsg struct{ gen int }

// confirmMsg asks "(y/N)" before running acts, one after the other.
type confirmMsg struct {
	prompt string
	acts   []action
}

// promptMsg asks for a line of text for act; from is the view that asked
// (it hears submittedMsg when the text is accepted).
type promptMsg struct {
	label, value, hint string
	// suggestions complete the text typed (Tab).
	suggestions []string
	masked      bool
	from        kind
	act         inputAction
}

// navMsg opens a view.
type navMsg struct {
	to      kind
	stream  string
	group   string
	streams []string
	event   string
	data    string
}

// statusMsg shows a line in the status bar.
type statusMsg struct {
	text string
	err  bool
}

// payloadMsg opens the payload viewer.
type payloadMsg struct {
	stream string
	entry  core.Entry
	found  bool
	err    error
}

// copyMsg copies text to the clipboard.
type copyMsg struct{ what, text string }

// requeuedMsg tells the tail that dead letters of dlq were requeued (they
// leave its buffer).
type requeuedMsg struct {
	dlq string
	ids []string
}

// actionMsg reports an action's outcome and refreshes the view it came from.
type actionMsg struct {
	from kind
	text string
	err  error
	// requeued are the dead letters of dlq a requeue moved away.
	dlq      string
	requeued []string
}

func status(text string) tea.Cmd {
	return func() tea.Msg { return statusMsg{text: text} }
}

func statusErr(text string) tea.Cmd {
	return func() tea.Msg { return statusMsg{text: text, err: true} }
}

func emit(msg tea.Msg) tea.Cmd { return func() tea.Msg { return msg } }

// loader enforces one load in flight per view and drops stale results:
// seq numbers loads; gen changes with the view's parameters.
type loader struct {
	seq, gen        uint64
	inflight, dirty bool
	loaded          bool
	err             error
	at              time.Time
}

// begin starts a load, or marks the view dirty when one is in flight.
// beginInspect is begin for a view that reads sh's inspector once ready
// reports it has something to read: ok false without an inspector, when
// not ready, or while a load is in flight.
func (l *loader) beginInspect(sh *shared, ready bool) (ins core.Inspector, seq, gen uint64, ok bool) {
	ins = sh.backend.Inspector()
	if ins == nil || !ready {
		return nil, 0, 0, false
	}
	seq, gen, ok = l.begin()
	return ins, seq, gen, ok
}

func (l *loader) begin() (seq, gen uint64, ok bool) {
	if l.inflight {
		l.dirty = true
		return 0, 0, false
	}
	l.inflight, l.dirty = true, false
	l.seq++
	return l.seq, l.gen, true
}

// finish records a result and reports whether to apply it (not stale) and
// whether to load again (the view changed meanwhile).
func (l *loader) finish(seq, gen uint64) (apply, again bool) {
	if seq == l.seq {
		l.inflight = false
	}
	return gen == l.gen, l.dirty && !l.inflight
}

// invalidate changes the parameters: results in flight become stale.
func (l *loader) invalidate() {
	l.gen++
	l.loaded = false
	l.err = nil
}

// shared is the console's context, common to every view.
type shared struct {
	backend  Backend
	node     NodeInfo
	st       *styles
	r        *lipgloss.Renderer
	readOnly bool
	base     context.Context
	timeout  time.Duration
	now      func() time.Time
	loc      *time.Location
	maxTail  int
	// paused stops every live refresh (P).
	paused bool
	// stats is why the inspector's statistics are partial (RabbitMQ's
	// management API does not answer), nil while they are complete; the
	// latest load that asked sets it (statsOf).
	stats error
	// picking is set while pickBusiest searches (off the UI goroutine).
	picking atomic.Bool
	// serverKind is the broker kind the server reported (Server().Kind),
	// once the overview asked; until then the node's BrokerKind counts.
	serverKind string
	// tick makes timer commands (tests replace it to drive time by hand).
	tick func(time.Duration, func(time.Time) tea.Msg) tea.Cmd
}

// ctx returns a context for one request.
func (s *shared) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.base, s.timeout)
}

// errText shows an error without secrets.
func (s *shared) errText(err error) string {
	if err == nil {
		return ""
	}
	return s.backend.Redact(err.Error())
}

// amqp reports a RabbitMQ broker (kind "amqp"): its queues stand for
// streams and groups, and it cannot list or settle unacknowledged messages.
func (s *shared) amqp() bool {
	k := s.serverKind
	if k == "" {
		k = s.node.BrokerKind
	}
	return k == "amqp"
}

// unavailableKey is an action a broker cannot do: shown in the help as
// unavailable, with why, and pressing it says why.
type unavailableKey struct {
	key key.Binding
	why string
}

// pressedUnavailable returns a status error when msg is one of list's keys.
func pressedUnavailable(msg tea.KeyMsg, list []unavailableKey) tea.Cmd {
	for _, u := range list {
		if pressed(msg, u.key) {
			return statusErr(u.key.Help().Desc + " is unavailable: " + u.why)
		}
	}
	return nil
}

// fixGroups drops what a server cannot tell: the embedded server reports
// every group's lag as the stream's length, so it counts as unknown.
func (s *shared) fixGroups(gs []core.GroupInfo) []core.GroupInfo {
	if s.node.Embedded {
		for i := range gs {
			gs[i].Lag = -1
		}
	}
	return gs
}

// awaitStream is what a view of one stream shows instead of its data, with
// wait true: that sh has no inspector, none when no stream is chosen, or
// loading until l has loaded.
func awaitStream(sh *shared, l *loader, stream, none, loading string) (msg string, wait bool) {
	switch msg = inspectorMissing(sh); {
	case msg != "":
		return msg, true
	case stream == "":
		return " " + sh.st.muted.Render(none), true
	case !l.loaded:
		return " " + sh.st.muted.Render(loading), true
	}
	return "", false
}
