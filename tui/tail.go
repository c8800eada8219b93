package tui

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
)

// Tail polling: the first read shows the newest tailBacklog entries of
// each stream, then every tailEvery the entries after the last id seen, at
// most tailBatch per stream and poll.
const (
	tailBacklog = 50
	tailBatch   = 500
	tailEvery   = 500 * time.Millisecond
	// amqpTailEvery is the poll interval on RabbitMQ.
	amqpTailEvery = 2 * time.Second
)

type tailEntry struct {
	stream, id string
	line       string
	ok         bool
}

type tailResult struct {
	seq, gen uint64
	entries  []tailEntry
	last     map[string]string
	err      error
	at       time.Time
}

func (tailResult) target() kind { return kTail }

type tailTick struct{ gen int }

func (tailTick) target() kind { return kTail }

// tailCols are the tail's columns, with ids idWidth wide (36 for the AMQP
// driver's message ids).
func tailCols(idWidth int) []column {
	return []column{
		{title: "TIME", width: 12},
		{title: "STREAM", width: 20},
		{title: "ID", width: idWidth},
		{title: "PAYLOAD", width: 20, flex: true},
	}
}

// tailView follows one or more streams.
type tailView struct {
	viewBase
	sh      *shared
	load    loader
	streams []string
	last    map[string]string
	buf     []tailEntry
	shown   []int
	filter  string
	paused  bool
	follow  bool
	active  bool
	tickGen int
	dropped int
	tbl     table
	k       struct {
		nav                                        navKeys
		Pause, Payload, Mark, Requeue, Copy, Clear key.Binding
	}
}

func newTail(sh *shared) *tailView {
	v := &tailView{sh: sh, last: map[string]string{}, follow: true}
	v.tbl = newTable(sh.st, tailCols(16)...)
	v.k.nav = newNavKeys()
	v.k.Pause = bind("pause/resume", "p")
	v.k.Payload = bind("payload", "enter")
	v.k.Mark = bindAs("space", "mark", " ")
	v.k.Requeue = bind("requeue dead letters", "R")
	v.k.Copy = bind("copy id", "y")
	v.k.Clear = bind("clear", "c")
	return v
}

// open follows n's streams, if it names some.
func (v *tailView) open(n navMsg) {
	if len(n.streams) > 0 {
		v.setStreams(n.streams)
	}
}

func (v *tailView) setStreams(streams []string) {
	streams = slices.Compact(slices.Sorted(slices.Values(streams)))
	if slices.Equal(streams, v.streams) {
		return
	}
	v.streams = streams
	v.last = map[string]string{}
	v.buf, v.shown, v.dropped = nil, nil, 0
	v.follow = true
	clear(v.tbl.marked)
	v.apply()
	v.load.invalidate()
}

func (v *tailView) crumbs() []string {
	if len(v.streams) == 0 {
		return nil
	}
	s := strings.Join(v.streams, ", ")
	switch {
	case v.paused:
		s += " · PAUSED"
	case v.follow:
		s += " · following"
	}
	return []string{s}
}

func (v *tailView) setSize(w, h int) { v.tbl.setSize(w, h-1) }
func (v *tailView) capturing() bool  { return false }

func (v *tailView) activate() tea.Cmd {
	v.active = true
	v.tickGen++
	return tea.Batch(v.refresh(), v.nextTick())
}

func (v *tailView) deactivate() {
	v.active = false
	v.tickGen++
}

func (v *tailView) canFilter() bool { return true }
func (v *tailView) filterSyntax() string {
	return "text: the entries whose payload, stream or id contains it (any case)"
}
func (v *tailView) filterText() string { return v.filter }

func (v *tailView) setFilter(text string) tea.Cmd {
	v.filter = text
	v.apply()
	return nil
}

func (v *tailView) refresh() tea.Cmd {
	ins, seq, gen, ok := v.load.beginInspect(v.sh, len(v.streams) > 0 && !v.paused)
	if !ok {
		return nil
	}
	sh, streams := v.sh, v.streams
	last := make(map[string]string, len(v.last))
	for k, id := range v.last {
		last[k] = id
	}
	return func() tea.Msg {
		r := tailResult{seq: seq, gen: gen, last: last}
		ctx, cancel := sh.ctx()
		defer cancel()
		for _, s := range streams {
			var list []core.Entry
			var err error
			if id, seen := last[s]; seen {
				list, err = ins.Entries(ctx, s, core.RangeQuery{After: id, Count: tailBatch})
			} else {
				list, err = ins.Entries(ctx, s, core.RangeQuery{Reverse: true, Count: tailBacklog})
				slices.Reverse(list)
				last[s] = "0-0"
			}
			if err != nil {
				r.err = err
				continue
			}
			for _, e := range list {
				d := decodePayload(e.Raw)
				line := d.Line
				if len(e.Headers) > 0 {
					if reason := e.Headers[core.HeaderReason]; reason != "" {
						line = "[" + reason + "] " + line
					}
				}
				r.entries = append(r.entries, tailEntry{stream: s, id: e.ID, line: truncate(oneLine(line), 400), ok: d.OK})
				last[s] = e.ID
			}
		}
		slices.SortStableFunc(r.entries, func(a, b tailEntry) int { return compareIDs(a.id, b.id) })
		r.at = sh.now()
		return r
	}
}

// updated is when the tail last polled (zero while paused, when its data
// is not meant to be live).
func (v *tailView) updated() time.Time {
	if v.paused {
		return time.Time{}
	}
	return v.load.at
}

func (v *tailView) keys() []key.Binding {
	has := len(v.shown) > 0
	for _, b := range []*key.Binding{&v.k.Payload, &v.k.Mark, &v.k.Copy, &v.k.Clear} {
		b.SetEnabled(has)
	}
	v.k.Pause.SetEnabled(len(v.streams) > 0)
	v.k.Requeue.SetEnabled(has && !v.sh.readOnly && v.dlqOnly())
	return append(v.k.nav.list(), v.k.Pause, v.k.Payload, v.k.Mark, v.k.Requeue, v.k.Copy, v.k.Clear)
}

func (v *tailView) dlqOnly() bool {
	for _, s := range v.streams {
		if _, ok := dlqSource(s); !ok {
			return false
		}
	}
	return len(v.streams) > 0
}

func (v *tailView) nextTick() tea.Cmd {
	if !v.active || v.paused || v.sh.paused {
		return nil
	}
	gen := v.tickGen
	every := tailEvery
	if v.sh.amqp() {
		// Each poll reads dead letters through the management API.
		every = amqpTailEvery
	}
	return v.sh.tick(every, func(time.Time) tea.Msg { return tailTick{gen: gen} })
}

func (v *tailView) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case tailTick:
		if msg.gen != v.tickGen || !v.active {
			return nil
		}
		return tea.Batch(v.refresh(), v.nextTick())
	case tailResult:
		apply, again := v.load.finish(msg.seq, msg.gen)
		if apply {
			v.load.err, v.load.loaded, v.load.at = msg.err, true, msg.at
			v.last = msg.last
			if len(msg.entries) > 0 {
				v.buf = append(v.buf, msg.entries...)
				if over := len(v.buf) - v.sh.maxTail; over > 0 {
					v.dropped += over
					v.buf = slices.Delete(v.buf, 0, over)
				}
				v.apply()
			}
		}
		if again {
			return v.refresh()
		}
		return nil
	case requeuedMsg:
		v.drop(msg.dlq, msg.ids)
		return nil
	}
	return nil
}

func (v *tailView) key(msg tea.KeyMsg) tea.Cmd {
	if _, ok := v.k.nav.move(msg, &v.tbl); ok {
		v.follow = v.tbl.cursor >= len(v.tbl.rows)-1
		return nil
	}
	switch {
	case key.Matches(msg, v.k.Pause):
		v.paused = !v.paused
		if !v.paused {
			v.tickGen++
			return tea.Batch(v.refresh(), v.nextTick())
		}
	case key.Matches(msg, v.k.Clear):
		v.buf, v.dropped = nil, 0
		v.follow = true
		v.apply()
	case key.Matches(msg, v.k.Mark):
		v.tbl.toggleMark()
		v.tbl.move(1)
	case key.Matches(msg, v.k.Payload):
		if i := v.tbl.cursor; i >= 0 && i < len(v.shown) {
			e := v.buf[v.shown[i]]
			prev := ""
			for j := v.shown[i] - 1; j >= 0; j-- {
				if v.buf[j].stream == e.stream {
					prev = v.buf[j].id
					break
				}
			}
			return fetchEntry(v.sh, e.stream, e.id, prev)
		}
	case key.Matches(msg, v.k.Copy):
		if i := v.tbl.cursor; i >= 0 && i < len(v.shown) {
			id := v.buf[v.shown[i]].id
			return emit(copyMsg{what: "id " + id, text: id})
		}
	case key.Matches(msg, v.k.Requeue):
		byStream := map[string][]string{}
		for _, i := range v.shown {
			e := v.buf[i]
			if v.tbl.marked[e.stream+" "+e.id] {
				byStream[e.stream] = append(byStream[e.stream], e.id)
			}
		}
		if len(byStream) == 0 && v.tbl.cursor < len(v.shown) {
			e := v.buf[v.shown[v.tbl.cursor]]
			byStream[e.stream] = []string{e.id}
		}
		clear(v.tbl.marked)
		var acts []action
		n := 0
		for s, ids := range byStream {
			source, _ := dlqSource(s)
			acts = append(acts, requeueAction{from: kTail, source: source, ids: ids})
			n += len(ids)
		}
		return emit(confirmMsg{prompt: fmt.Sprintf("Requeue %s to their original events?", plural(n, "dead letter")), acts: acts})
	case pressed(msg, v.k.Requeue):
		if v.sh.readOnly {
			return statusErr("read-only: requeue is disabled")
		}
		return statusErr("requeue works in a tail of dead letters only (:dlq EVENT)")
	}
	return nil
}

// drop removes entries of stream from the buffer (dead letters requeued).
func (v *tailView) drop(stream string, ids []string) {
	n := len(v.buf)
	v.buf = slices.DeleteFunc(v.buf, func(e tailEntry) bool { return e.stream == stream && slices.Contains(ids, e.id) })
	if len(v.buf) != n {
		v.apply()
	}
}

// apply filters the buffer into the table, newest at the bottom.
func (v *tailView) apply() {
	f := strings.ToLower(v.filter)
	v.shown = v.shown[:0]
	for i, e := range v.buf {
		if f == "" || strings.Contains(strings.ToLower(e.line), f) || strings.Contains(strings.ToLower(e.stream), f) || strings.Contains(e.id, f) {
			v.shown = append(v.shown, i)
		}
	}
	rows := make([][]string, len(v.shown))
	keys := make([]string, len(v.shown))
	for j, i := range v.shown {
		e := v.buf[i]
		when := ""
		if t := idTime(e.id); !t.IsZero() {
			when = t.In(v.sh.loc).Format("15:04:05.000")
		}
		rows[j] = []string{when, e.stream, e.id, e.line}
		keys[j] = e.stream + " " + e.id
	}
	keep := v.tbl.cursor
	if v.sh.amqp() && v.tbl.cols[2].width != 36 {
		v.tbl.cols = tailCols(36)
	}
	v.tbl.setRows(rows, keys)
	if v.follow {
		v.tbl.cursor = len(rows) - 1
	} else {
		v.tbl.cursor = keep
	}
	v.tbl.clamp()
}

func (v *tailView) view() string {
	st := v.sh.st
	if msg := inspectorMissing(v.sh); msg != "" {
		return msg
	}
	if len(v.streams) == 0 {
		return " " + st.muted.Render("Nothing to follow: pick streams in Streams (space marks, t tails), or type :tail STREAM[,STREAM…].")
	}
	var top string
	switch {
	case v.load.err != nil && errors.Is(v.load.err, core.ErrUnsupported) && v.sh.amqp():
		top = " " + st.warn.Render("unavailable: "+amqpTailWhy+" — "+v.sh.errText(v.load.err))
	case v.load.err != nil:
		top = " " + st.bad.Render("✗ "+v.sh.errText(v.load.err))
	case !v.load.loaded:
		top = " " + st.muted.Render("loading…")
	default:
		s := fmt.Sprintf(" %d entries shown of %d kept (last %d)", len(v.shown), len(v.buf), v.sh.maxTail)
		if v.dropped > 0 {
			s += fmt.Sprintf(" · %d older dropped", v.dropped)
		}
		if v.paused {
			s += " · PAUSED (p resumes)"
		}
		top = st.muted.Render(s)
	}
	if v.filter != "" {
		v.tbl.empty = "no entry matches " + v.filter
	} else {
		v.tbl.empty = "waiting for entries…"
	}
	return top + "\n" + v.tbl.view()
}
