package tui

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/internal/termtext"
)

// hostile ends every name of the hostile fixture: an SGR sequence (that a
// last-minute screen filter would let through), ESC sequences, CR, BEL, C1
// controls, a right-to-left override.
const hostile = "\x1b[8m\x1b[2J\x1b]0;pwned\a\r\u0085\u009b31m\u202e"

// hostileFixture is a system whose every name, reason and payload is
// hostile; stream and consumer names are not valid UTF-8 either.
func hostileFixture() (*fakeInspector, *fakeBroker, *fakeGateway, *Node) {
	ins := newFakeInspector()
	ins.server.Version = "7" + hostile
	ev := "EV" + hostile + "\xff"
	s := &fakeStream{name: ev}
	for i := range 3 {
		s.entries = append(s.entries, core.Entry{ID: fmt.Sprintf("%d-0", baseMS+int64(i)*1000),
			Raw:     mustMsgpack(map[string]any{"text": "payload" + hostile + "\u009b", "n": i}),
			Headers: map[string]string{"note" + hostile: "v" + hostile}})
	}
	g := &fakeGroup{info: core.GroupInfo{Name: "G" + hostile, LastDeliveredID: s.entries[2].ID}}
	g.consumers = []core.ConsumerInfo{{Name: "C" + hostile + "\xc0", Pending: 3, Idle: 9 * time.Minute}}
	for i := range 3 {
		g.pending = append(g.pending, core.PendingEntry{ID: s.entries[i].ID, Consumer: g.consumers[0].Name, Idle: time.Minute, Deliveries: 2})
	}
	s.groups = []*fakeGroup{g}
	ins.streams[ev] = s
	dlq := &fakeStream{name: core.DeadLetterEvent(ev), entries: []core.Entry{{ID: fmt.Sprintf("%d-0", baseMS+9000),
		Raw:     mustMsgpack(map[string]any{"text": "dead" + hostile}),
		Headers: map[string]string{core.HeaderReason: "reason" + hostile, core.HeaderGroup: g.info.Name}}}}
	ins.streams[dlq.name] = dlq
	gw := &fakeGateway{shards: []gateway.Status{{ID: 0, Count: 1, State: gateway.Failed, LastCloseCode: 4004,
		LastCloseReason: "close" + hostile, Err: "err" + hostile, SessionID: "s" + hostile}}}
	n := &Node{
		Info:    NodeInfo{Name: "node" + hostile, Client: "console" + hostile, Group: "grp" + hostile, BrokerKind: "redis", BrokerAddress: "addr" + hostile},
		Inspect: ins, Publisher: &fakeBroker{},
		ReadNodes: func(context.Context) ([]gateway.NodeStatus, error) {
			return []gateway.NodeStatus{{Group: "ng" + hostile, Client: "nc" + hostile + "\xfe", ShardCount: 1,
				Shards: []gateway.Status{{ID: 0, Count: 1, State: gateway.Ready, LastCloseReason: "nr" + hostile}}}}, nil
		},
	}
	n.SetGateway(GatewayInfo{Gateway: gw, Target: "ws://" + hostile, Err: fmt.Errorf("gw err %s", hostile)})
	return ins, n.Publisher.(*fakeBroker), gw, n
}

// screenSafe fails t when a frame rendered without colours holds a byte a
// terminal acts on.
func screenSafe(t *testing.T, step, frame string) {
	t.Helper()
	if !utf8.ValidString(frame) {
		t.Fatalf("%s: the frame is not valid UTF-8:\n%q", step, frame)
	}
	for _, r := range frame {
		if (r < 0x20 && r != '\n') || r == 0x7f || (r >= 0x80 && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			t.Fatalf("%s: raw %U in the frame:\n%q", step, r, frame)
		}
	}
}

// TestHostileNamesAreEscapedOnScreen visits every view, prompt and pane
// of a system whose names, reasons and payloads carry control characters,
// bidi controls and invalid UTF-8: no frame shows one raw, names show in
// their $'...' form, and actions reach the broker with the exact bytes.
func TestHostileNamesAreEscapedOnScreen(t *testing.T) {
	ins, b, _, node := hostileFixture()
	ev := "EV" + hostile + "\xff"
	group, consumer := "G"+hostile, "C"+hostile+"\xc0"
	d := newDriver(t, node, plainOptions(), 120, 34)
	check := func(step string, want ...string) {
		t.Helper()
		screenSafe(t, step, d.view())
		for _, w := range want {
			if !strings.Contains(d.view(), w) {
				t.Fatalf("%s: the frame lacks %q:\n%s", step, w, d.view())
			}
		}
	}
	palette := func(cmd string) {
		d.keys(":")
		d.typeText(cmd)
		check("palette "+cmd, "")
		d.keys("enter")
	}
	check("overview", `\x1b[2J`)
	d.keys("2")
	check("streams", termtext.Quote(ev)[:12])
	d.keys("y")
	check("copy status", "copied stream name")
	if len(d.copy) != 1 || unquote(d.copy[0]) != ev {
		t.Errorf("copied %q, want the $'...' form of %q", d.copy, ev)
	}
	d.keys("enter")
	check("groups", "G\\x1b[8m")
	palette("pending " + termtext.Quote(ev) + " " + termtext.Quote(group))
	check("pending", "3 pending in", `C\x1b[8m`)
	d.keys("enter")
	check("payload", `payload\u001b[8m`, `\u009b`, `note\x1b[8m`)
	d.keys("esc", "A")
	check("confirm ack")
	d.keys("y")
	check("after ack", "acknowledged 1 of 1")
	if len(ins.acked) != 1 {
		t.Errorf("ack did not reach the broker with the raw names: %v", ins.acked)
	}
	d.keys("c")
	check("claim prompt", "tab completes · ")
	d.send(tea.KeyMsg{Type: tea.KeyCtrlU})
	d.typeText(termtext.Quote(consumer))
	d.keys("enter")
	check("confirm claim")
	d.keys("y")
	check("after claim")
	if len(ins.claimed[consumer]) != 1 {
		t.Errorf("claim did not reach the broker for the raw consumer: %v", ins.claimed)
	}
	d.keys("D")
	check("confirm dead-letter", "Move 1 entry")
	d.keys("n")
	palette("tail " + termtext.Quote(ev))
	check("tail", `payload\u001b[8m`)
	palette("dlq " + termtext.Quote(ev))
	check("dlq tail", `[reason\x1b[8m`)
	d.keys("R")
	check("confirm requeue")
	d.keys("y")
	check("after requeue", "requeued 1 of 1")
	if len(ins.requeue) != 1 {
		t.Errorf("requeue did not reach the broker: %v", ins.requeue)
	}
	d.keys("?")
	check("help")
	d.keys("esc")
	d.keys("8")
	check("shards", `err\x1b[8m`, `$'ng\x1b[8m`)
	d.keys("7")
	check("send")
	d.keys("esc", "6")
	d.typeText(termtext.Quote(ev))
	d.keys("tab", "tab")
	d.typeText(`{"x": "\u001b[2J\u202e"}`)
	d.keys("ctrl+s")
	check("confirm publish", "Publish to "+termtext.Quote(ev)+"?")
	d.keys("y")
	check("publish", "published "+termtext.Quote(ev))
	if len(b.published) != 1 || b.published[0].Event != ev {
		t.Errorf("publish did not reach the broker under the raw name: %+v", b.published)
	}
	d.keys("esc")
	palette("groups " + termtext.Quote("nope"+hostile))
	check("missing stream error")
}
