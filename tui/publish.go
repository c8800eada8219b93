package tui

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textarea"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
)

type publishResult struct {
	seq     uint64
	call    bool
	event   string
	id      string
	reply   string
	err     error
	elapsed time.Duration
}

func (publishResult) target() kind { return kPublish }

// publishView publishes or calls an event with JSON data typed in an
// editor that validates it as it is typed.
type publishView struct {
	viewBase
	sh       *shared
	event    textinput.Model
	timeout  textinput.Model
	editor   textarea.Model
	form     formFocus // fields: 0 event, 1 data, 2 timeout
	seq      uint64
	busy     bool
	result   string
	resultOK bool
	width    int
	height   int
	k        struct {
		Publish, Call, Format key.Binding
	}
}

func newPublish(sh *shared) *publishView {
	v := &publishView{sh: sh, event: newField(sh, "EVENT_NAME"), timeout: newField(sh, "5s"), editor: newEditor(sh)}
	v.timeout.SetValue("5s")
	v.editor.Placeholder = `{"content": "hello"}`
	v.k.Publish = bind("publish", "ctrl+s")
	v.k.Call = bind("call (wait for a reply)", "ctrl+o")
	v.k.Format = bind("format JSON", "ctrl+f")
	// The fields in the order the screen shows them: tab follows it.
	v.form = newFormFocus(pubData, &v.event, &v.timeout, &v.editor)
	return v
}

// open prefills the form with n's event and data, if it has them.
func (v *publishView) open(n navMsg) {
	if n.event != "" || n.data != "" {
		v.prefill(n.event, n.data)
	}
}

// The Publish form's fields, in screen (and tab) order.
const (
	pubEvent = iota
	pubTimeout
	pubData
)

func (v *publishView) prefill(event, data string) {
	if event != "" {
		v.event.SetValue(event)
	}
	if data != "" {
		v.editor.SetValue(data)
	}
	if event != "" {
		v.form.set(pubData)
	}
}

func (v *publishView) crumbs() []string {
	if e := strings.TrimSpace(v.event.Value()); e != "" {
		return []string{e}
	}
	return nil
}

func (v *publishView) setSize(w, h int) {
	v.width, v.height = w, h
	v.event.Width = max(w-20, 10)
	v.timeout.Width = 10
	v.editor.SetWidth(max(w-4, 20))
	v.editor.SetHeight(max(h-9, 3))
}

func (v *publishView) activate() tea.Cmd { return nil }
func (v *publishView) refresh() tea.Cmd  { return nil }
func (v *publishView) capturing() bool   { return v.form.editing() }

func (v *publishView) canWrite() bool { return !v.sh.readOnly && v.sh.backend.Broker() != nil }

func (v *publishView) keys() []key.Binding {
	// With no field focused, ctrl+s and ctrl+o do nothing.
	w := v.canWrite() && v.form.editing()
	v.k.Publish.SetEnabled(w && !v.busy)
	v.k.Call.SetEnabled(w && !v.busy)
	v.k.Format.SetEnabled(true)
	return append([]key.Binding{v.k.Publish, v.k.Call, v.k.Format}, v.form.keys()...)
}

// validate checks the event name and the JSON.
func (v *publishView) validate() (event string, data any, err error) {
	event = strings.TrimSpace(v.event.Value())
	if event == "" {
		return "", nil, errors.New("an event name is required")
	}
	if strings.ContainsAny(event, " \t\r\n") {
		return "", nil, errors.New("the event name must not contain spaces")
	}
	text := strings.TrimSpace(v.editor.Value())
	if text == "" {
		return event, nil, errors.New("data is empty: type JSON (null is valid)")
	}
	data, err = core.DecodeJSON([]byte(text))
	if err != nil {
		return event, nil, fmt.Errorf("invalid JSON: %v", err)
	}
	if err := checkPacketEvent(event, data, knownShardCount(v.sh)); err != nil {
		return event, nil, err
	}
	return event, data, nil
}

func (v *publishView) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case publishCheckMsg:
		if msg.act.seq != v.seq {
			return nil
		}
		if q := msg.question(); q != "" {
			return emit(confirmMsg{prompt: q, acts: []action{msg.act}})
		}
		return v.start(msg.act)
	case confirmedMsg:
		if len(msg.acts) == 1 {
			if a, ok := msg.acts[0].(publishAction); ok && a.seq == v.seq {
				v.started(a) // the root runs it
			}
		}
		return nil
	case publishResult:
		if msg.seq != v.seq {
			return nil
		}
		v.busy = false
		switch {
		case msg.err != nil && errors.Is(msg.err, core.ErrTimeout):
			v.result, v.resultOK = fmt.Sprintf("call %s: no reply within the timeout (%s)", msg.event, fmtDuration(msg.elapsed)), false
		case msg.err != nil:
			v.result, v.resultOK = v.sh.errText(msg.err), false
		case msg.call:
			v.result, v.resultOK = fmt.Sprintf("reply to %s after %s:\n%s", msg.event, fmtDuration(msg.elapsed), msg.reply), true
		default:
			v.result, v.resultOK = fmt.Sprintf("published %s → id %s", msg.event, msg.id), true
		}
		return nil
	}
	return nil
}

func (v *publishView) key(msg tea.KeyMsg) tea.Cmd {
	if v.form.key(msg) {
		return nil
	}
	switch {
	case key.Matches(msg, v.k.Format):
		var buf bytes.Buffer
		if err := json.Indent(&buf, []byte(strings.TrimSpace(v.editor.Value())), "", "  "); err == nil {
			v.editor.SetValue(buf.String())
		}
		return nil
	case key.Matches(msg, v.k.Publish), key.Matches(msg, v.k.Call):
		return v.send(key.Matches(msg, v.k.Call))
	case pressed(msg, v.k.Publish), pressed(msg, v.k.Call):
		if v.sh.readOnly {
			return statusErr("read-only: publish and call are disabled")
		}
		if v.sh.backend.Broker() == nil {
			return statusErr("no broker to publish to")
		}
		return nil
	}
	return v.form.update(msg)
}

func (v *publishView) send(call bool) tea.Cmd {
	event, data, err := v.validate()
	if err == nil {
		// SEND and shard ids in the form every gateway reads.
		data, err = gateway.EncodePacket(event, data)
	}
	if err != nil {
		return statusErr(err.Error())
	}
	timeout := 5 * time.Second
	if call {
		d, err := time.ParseDuration(strings.TrimSpace(v.timeout.Value()))
		if err != nil || d <= 0 {
			return statusErr(fmt.Sprintf("timeout %q is not a duration (e.g. 5s)", v.timeout.Value()))
		}
		timeout = d
	}
	v.seq++
	a := publishAction{seq: v.seq, call: call, event: event, data: data, wait: timeout}
	return tea.Batch(status("looking up who consumes "+event+"…"), checkConsumers(v.sh, a))
}

// start runs a, which nobody needs to confirm.
func (v *publishView) start(a publishAction) tea.Cmd {
	v.started(a)
	return v.sh.start(a)
}

// started shows that a runs.
func (v *publishView) started(a publishAction) {
	v.busy = true
	v.result = ""
	if a.call {
		v.result = fmt.Sprintf("calling %s, waiting up to %s for a reply…", a.event, a.wait)
	}
}

func (v *publishView) view() string {
	st := v.sh.st
	label := func(i int, s string) string { return v.form.label(st, i, s) }
	var b strings.Builder
	b.WriteString(label(pubEvent, "Event   ") + " " + v.event.View() + "\n")
	b.WriteString(label(pubTimeout, "Timeout ") + " " + v.timeout.View() + st.muted.Render("   (for a call)") + "\n")
	b.WriteString(label(pubData, "Data (JSON)") + "\n")
	b.WriteString(v.editor.View() + "\n")
	_, _, err := v.validate()
	switch {
	case err != nil:
		b.WriteString(" " + st.warn.Render("✗ "+err.Error()) + "\n")
	default:
		b.WriteString(" " + st.good.Render("✓ valid") + st.muted.Render(fmt.Sprintf(" · published with the broker's codec · %d bytes of JSON", len(strings.TrimSpace(v.editor.Value())))) + "\n")
	}
	switch {
	case v.sh.readOnly:
		b.WriteString(" " + st.warn.Render("READ-ONLY: publish and call are disabled") + "\n")
	case v.sh.backend.Broker() == nil:
		b.WriteString(" " + st.warn.Render("no broker to publish to") + "\n")
	}
	writeResult(&b, st, v.result, v.resultOK, v.busy)
	return b.String()
}
