package tui

import (
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
)

// fetchEntry loads one entry by id. A Redis stream id is found exactly
// (Entries after the id just before it); any other id (AMQP message ids)
// from after prev, the id of the entry shown before it in the same stream
// ("" for the first), searching a short page and then, when it moved
// (entries before it were removed), one bounded page from the start.
func fetchEntry(sh *shared, stream, id, prev string) tea.Cmd {
	ins := sh.backend.Inspector()
	if ins == nil {
		return statusErr("this broker offers no inspection")
	}
	return func() tea.Msg {
		ctx, cancel := sh.ctx()
		defer cancel()
		msg := payloadMsg{stream: stream, entry: core.Entry{ID: id}}
		queries := []core.RangeQuery{{After: prevID(id), Count: 1}}
		if !isStreamID(id) {
			queries = []core.RangeQuery{{After: prev, Count: fetchNearby}}
			if prev != "" {
				queries = append(queries, core.RangeQuery{Count: fetchWide})
			}
		}
		for _, q := range queries {
			list, err := ins.Entries(ctx, stream, q)
			if err != nil {
				msg.err = err
				return msg
			}
			for _, e := range list {
				if e.ID == id {
					msg.entry, msg.found = e, true
					return msg
				}
			}
		}
		return msg
	}
}

// fetchNearby and fetchWide bound the pages fetchEntry reads to find an
// id that is not a Redis stream id.
const (
	fetchNearby = 20
	fetchWide   = 500
)

// payloadPane shows one entry's payload: decoded pretty JSON, or a hex
// dump when it does not decode.
type payloadPane struct {
	sh            *shared
	stream        string
	entry         core.Entry
	dec           decoded
	raw           bool
	lines         []string
	top           int
	width, height int
	k             struct{ Up, Down, PageUp, PageDown, Top, Bottom, CopyID, CopyPayload, Raw key.Binding }
}

func newPayloadPane(sh *shared) payloadPane {
	p := payloadPane{sh: sh}
	p.k.Up = bindAs("↑/k", "scroll up", "up", "k")
	p.k.Down = bindAs("↓/j", "scroll down", "down", "j")
	p.k.PageUp = bindAs("pgup", "page up", "pgup", "b")
	p.k.PageDown = bindAs("pgdn", "page down", "pgdown", " ", "f")
	p.k.Top = bindAs("g", "top", "g", "home")
	p.k.Bottom = bindAs("G", "bottom", "G", "end")
	p.k.CopyID = bind("copy id", "y")
	p.k.CopyPayload = bind("copy payload", "Y")
	p.k.Raw = bind("raw/decoded", "x")
	return p
}

func (p *payloadPane) setSize(w, h int) {
	p.width, p.height = w, h
	p.render()
}

func (p *payloadPane) open(stream string, e core.Entry) {
	p.stream, p.entry, p.raw, p.top = stream, e, false, 0
	p.dec = decodePayload(e.Raw)
	p.render()
}

func (p *payloadPane) render() {
	st := p.sh.st
	var head []string
	head = append(head, st.title.Render(fmt.Sprintf("%s  %s", p.stream, p.entry.ID)))
	when := idTime(p.entry.ID)
	info := fmt.Sprintf("%d bytes", p.dec.Size)
	if !when.IsZero() {
		info = when.In(p.sh.loc).Format("2006-01-02 15:04:05.000") + " · " + info
	}
	switch {
	case p.raw:
		info += " · raw bytes (x: decoded)"
	case p.dec.OK:
		info += " · decoded (x: raw bytes)"
	default:
		info += " · " + st.warn.Render("undecodable: "+oneLine(p.dec.Err)) + " · raw bytes shown"
	}
	if p.dec.Truncated {
		info += st.warn.Render(fmt.Sprintf(" · preview capped at %d KiB", maxPreview>>10))
	}
	head = append(head, st.muted.Render(info))
	for _, k := range slices.Sorted(maps.Keys(p.entry.Headers)) {
		head = append(head, st.muted.Render(k+": ")+p.entry.Headers[k])
	}
	head = append(head, "")
	body := p.dec.Pretty
	if p.raw && p.dec.OK {
		body = decodePayloadRaw(p.entry.Raw)
	}
	p.lines = head
	for l := range strings.SplitSeq(strings.TrimRight(body, "\n"), "\n") {
		p.lines = append(p.lines, truncate(l, p.width-2))
	}
	p.clamp()
}

func decodePayloadRaw(raw []byte) string {
	return hex.Dump(raw[:min(len(raw), maxPreview)])
}

func (p *payloadPane) clamp() {
	p.top = max(min(p.top, len(p.lines)-p.height), 0)
}

func (p *payloadPane) keys() []key.Binding {
	return []key.Binding{p.k.Up, p.k.Down, p.k.PageUp, p.k.PageDown, p.k.CopyID, p.k.CopyPayload, p.k.Raw}
}

func (p *payloadPane) update(msg tea.KeyMsg) tea.Cmd {
	switch {
	case key.Matches(msg, p.k.Up):
		p.top--
	case key.Matches(msg, p.k.Down):
		p.top++
	case key.Matches(msg, p.k.PageUp):
		p.top -= p.height
	case key.Matches(msg, p.k.PageDown):
		p.top += p.height
	case key.Matches(msg, p.k.Top):
		p.top = 0
	case key.Matches(msg, p.k.Bottom):
		p.top = len(p.lines)
	case key.Matches(msg, p.k.Raw):
		p.raw = !p.raw
		p.render()
	case key.Matches(msg, p.k.CopyID):
		return emit(copyMsg{what: "id " + p.entry.ID, text: p.entry.ID})
	case key.Matches(msg, p.k.CopyPayload):
		text := p.dec.Line
		if !p.dec.OK {
			text = string(p.entry.Raw)
		}
		return emit(copyMsg{what: fmt.Sprintf("the payload of %s", p.entry.ID), text: text})
	}
	p.clamp()
	return nil
}

func (p *payloadPane) view() string {
	end := min(p.top+p.height, len(p.lines))
	return " " + strings.Join(p.lines[p.top:end], "\n ")
}
