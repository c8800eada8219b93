package tui

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
)

func newFixtureDriver(t *testing.T, opts Options) (*driver, *fakeInspector, *fakeBroker, *fakeGateway) {
	t.Helper()
	ins, b, gw := fixture()
	return newDriver(t, testNode(ins, b, gw), opts, 100, 30), ins, b, gw
}

func TestNavigationByKeysPaletteAndBack(t *testing.T) {
	d, _, _, _ := newFixtureDriver(t, plainOptions())
	for i, want := range kindTitles {
		d.keys(tabKey(kind(i)))
		if d.m.active() != kind(i) {
			t.Fatalf("key %s: active view %v", tabKey(kind(i)), d.m.active())
		}
		d.mustContain("[" + tabKey(kind(i)) + " " + want + "]")
		if d.m.views[d.m.active()].capturing() {
			d.keys("esc") // leave the editor
		}
	}
	d.command("pending MESSAGE_CREATE sim-bot")
	if d.m.active() != kPending {
		t.Fatalf("palette: active %v", d.m.active())
	}
	d.mustContain("Pending › MESSAGE_CREATE › group sim-bot", "5 pending in sim-bot", "1700000030000-0")
	d.command("sh")
	if d.m.active() != kShards {
		t.Fatalf(":sh opened %v", d.m.active())
	}
	d.keys("esc")
	if d.m.active() != kPending {
		t.Fatalf("esc went to %v, want pending", d.m.active())
	}
	d.command("bogus")
	d.mustContain(`unknown command "bogus"`)
	p, _, _, _ := newFixtureDriver(t, plainOptions())
	p.command("pending MESSAGE_CREATE")
	p.mustContain("group sim-bot (most pending of 2)")
}

func TestDrillDownStreamsGroupsPending(t *testing.T) {
	d, _, _, _ := newFixtureDriver(t, plainOptions())
	d.keys("2")
	d.mustContain("MESSAGE_CREATE", "TYPING_START", "1,000,000")
	d.keys("enter") // first row: MESSAGE_CREATE
	d.mustContain("Groups › MESSAGE_CREATE", "sim-bot", "audit", "worker-2", "STALE: holds 2")
	d.keys("enter")
	d.mustContain("Pending › MESSAGE_CREATE › group sim-bot")
	d.keys("esc", "esc")
	if d.m.active() != kStreams {
		t.Fatalf("back twice: %v", d.m.active())
	}
	// Filter and sort.
	d.keys("/")
	d.typeText("typ")
	d.mustContain("TYPING_START")
	d.mustNotContain("MESSAGE_CREATE:dlq")
	d.keys("enter")
	d.mustContain("filter: typ")
	d.keys("/", "esc")
	d.mustContain("MESSAGE_CREATE:dlq")
	d.keys("s") // by length, longest first
	rows := d.m.views[kStreams].(*streamsView).shown
	if rows[0].Name != "TYPING_START" {
		t.Fatalf("sorted by length: first %s", rows[0].Name)
	}
}

func TestHelpListsOnlyKeysThatWork(t *testing.T) {
	d, _, _, _ := newFixtureDriver(t, plainOptions())
	d.command("pending MESSAGE_CREATE sim-bot")
	d.keys("?")
	d.mustContain("Keys that work in Pending", "ack", "claim to", "move to dead letters", "filter")
	d.mustNotContain("requeue dead letters", "publish to")
	d.keys("x") // any key closes
	d.keys("1", "?")
	d.mustContain("Keys that work in Overview", "dead letters")
	d.mustNotContain("  ack", "filter")

	ro := plainOptions()
	ro.ReadOnly = true
	r, _, _, _ := newFixtureDriver(t, ro)
	r.command("pending MESSAGE_CREATE sim-bot")
	r.keys("?")
	r.mustContain("READ-ONLY", "payload", "copy id")
	r.mustNotContain("A     ack", "claim to", "move to dead letters")
}

func TestAckAsksAndAnyOtherKeyCancels(t *testing.T) {
	d, ins, _, _ := newFixtureDriver(t, plainOptions())
	d.command("pending MESSAGE_CREATE sim-bot")
	d.keys("A")
	d.mustContain("Acknowledge 1 entry of MESSAGE_CREATE/sim-bot?", "(y/N)")
	d.keys("n")
	d.mustContain("cancelled")
	d.keys("A", "enter") // enter is "any other key" too
	if ins.count("Ack") != 0 {
		t.Fatal("acked without a yes")
	}
	d.keys("A", "y")
	if ins.count("Ack") != 1 || ins.acked[0] != "1700000030000-0" {
		t.Fatalf("acks %d %v", ins.count("Ack"), ins.acked)
	}
	d.mustContain("acknowledged 1 of 1 in MESSAGE_CREATE/sim-bot", "4 pending in sim-bot")
}

func TestClaimMarkedEntriesToTheConsole(t *testing.T) {
	d, ins, _, _ := newFixtureDriver(t, plainOptions())
	d.command("pending MESSAGE_CREATE sim-bot")
	d.keys("space", "space")
	d.mustContain("2 marked")
	// The default target is the group's most recently active consumer;
	// Tab completes from its consumers.
	d.keys("c")
	d.mustContain("Claim 2 entries to consumer", "worker-1", "tab completes · worker-1, worker-2")
	d.keys("enter")
	d.mustContain(`Claim 2 entries of MESSAGE_CREATE/sim-bot to "worker-1"?`)
	d.mustNotContain("claiming creates it")
	d.keys("y")
	if got := ins.claimed["worker-1"]; len(got) != 2 {
		t.Fatalf("claimed %v", ins.claimed)
	}
	d.mustContain(`"worker-1" now owns 2 of 2 entries`)
	// Claim to a name that is no consumer: the confirmation says so.
	d.keys("c")
	d.send(tea.KeyMsg{Type: tea.KeyCtrlU})
	d.typeText("console-ops-box")
	d.keys("enter")
	d.mustContain(`"console-ops-box" is not a consumer of sim-bot: claiming creates it. Claim 1 entry`, "(y/N)")
	d.keys("y")
	if len(ins.claimed["console-ops-box"]) != 1 {
		t.Fatalf("claimed %v", ins.claimed)
	}
	d.keys("D", "y")
	if len(ins.dead) != 1 {
		t.Fatalf("dead-lettered %v", ins.dead)
	}
	d.mustContain("moved 1 of 1 to MESSAGE_CREATE:dlq")
}

func TestReadOnlyDisablesEveryAction(t *testing.T) {
	opts := plainOptions()
	opts.ReadOnly = true
	d, ins, b, gw := newFixtureDriver(t, opts)
	d.mustContain("READ-ONLY")
	d.command("pending MESSAGE_CREATE sim-bot")
	for _, k := range []string{"A", "c", "D"} {
		d.keys(k)
		d.mustContain("read-only")
		d.mustNotContain("(y/N)")
	}
	d.keys("6")
	d.typeText("EVENT")
	d.keys("tab", "tab")
	d.typeText(`{"a":1}`)
	d.keys("ctrl+s")
	d.mustContain("read-only: publish and call are disabled")
	d.keys("esc", "7")
	d.typeText("81384788765712384")
	d.keys("ctrl+s")
	d.keys("esc", "8", "x", "R", "s")
	d.mustContain("read-only: shard control is disabled")
	// A confirmation that reaches the root in read-only mode is refused.
	d.send(confirmMsg{prompt: "danger", acts: []action{testAction(func() tea.Msg { t.Error("ran"); return nil })}})
	d.mustNotContain("danger")
	if ins.count("Ack")+ins.count("Claim")+ins.count("DeadLetter") != 0 || len(b.events()) != 0 || len(gw.actions()) != 0 {
		t.Fatalf("something changed: ins %v broker %v gateway %v", ins.calls, b.events(), gw.actions())
	}
}

func TestOneLoadInFlightAndStaleResultsDropped(t *testing.T) {
	ins, b, gw := fixture()
	ins.gate = make(chan struct{})
	opts := plainOptions()
	m := idleModel(testNode(ins, b, gw), opts)
	v := m.views[kStreams].(*streamsView)
	first := firstLoad(t, v.refresh)
	// The view changed meanwhile: the result is stale, and the load starts again.
	again := dropStale[streamsResult](t, first, ins.gate, &v.load, v.update, func() bool { return len(v.all) != 0 })
	fresh := again().(streamsResult)
	v.update(fresh)
	if len(v.all) != 4 {
		t.Fatalf("fresh result not applied: %d rows", len(v.all))
	}
	// A tick of an old timer does nothing.
	before := ins.count("Streams")
	m.Update(tickMsg{gen: m.tickGen - 1})
	if ins.count("Streams") != before {
		t.Fatal("old tick refreshed")
	}
}

func TestPendingPagesThroughAHundredThousand(t *testing.T) {
	ins, b, gw := fixture()
	big := &fakeStream{name: "BIG", virtual: 1_000_000}
	big.groups = []*fakeGroup{{info: core.GroupInfo{Name: "g", Lag: 0}, virtual: 100_000,
		consumers: []core.ConsumerInfo{{Name: "worker-0"}, {Name: "worker-1"}, {Name: "worker-2"}}}}
	ins.streams["BIG"] = big
	d := newDriver(t, testNode(ins, b, gw), plainOptions(), 100, 30)
	d.command("pending BIG g")
	v := d.m.views[kPending].(*pendingView)
	page := v.tbl.pageRows()
	d.mustContain("100,000 pending in g", "page 1 · rows 1–"+fmtInt(page))
	d.keys("pgdown")
	d.mustContain("page 2 · rows " + fmtInt(page+1) + "–" + fmtInt(2*page))
	if v.rows[0].ID != virtualID(int64(page)) {
		t.Fatalf("page 2 starts at %s", v.rows[0].ID)
	}
	// Moving down past the last row loads the next page.
	d.keys("end", "down")
	d.mustContain("page 3")
	if v.tbl.cursor != 0 {
		t.Fatalf("cursor %d after stepping into a page", v.tbl.cursor)
	}
	d.keys("up")
	d.mustContain("page 2")
	if v.tbl.cursor != len(v.rows)-1 {
		t.Fatalf("cursor %d after stepping back", v.tbl.cursor)
	}
	d.keys("home")
	d.mustContain("page 1")
	// Filter by consumer and idle time.
	d.keys("/")
	d.typeText("worker-1 idle>5m")
	d.keys("enter")
	for _, r := range v.rows {
		if r.Consumer != "worker-1" || r.Idle < 5*time.Minute {
			t.Fatalf("filtered row %+v", r)
		}
	}
	d.mustContain("filter: worker-1 idle>5m")
	if ins.maxCount > page {
		t.Fatalf("asked for %d entries at once; a page is %d", ins.maxCount, page)
	}
}

func fmtInt(n int) string { return fmtCount(int64(n)) }

func TestTailFiltersPausesAndOpensPayloads(t *testing.T) {
	d, ins, _, _ := newFixtureDriver(t, plainOptions())
	d.command("tail MESSAGE_CREATE")
	d.mustContain("41 entries shown", "hello 39", "(raw)")
	v := d.m.views[kTail].(*tailView)
	ins.mu.Lock()
	ins.streams["MESSAGE_CREATE"].entries = append(ins.streams["MESSAGE_CREATE"].entries,
		core.Entry{ID: "1700000041000-0", Raw: mustMsgpack(map[string]any{"content": "brand new"})})
	ins.mu.Unlock()
	d.send(tailTick{gen: v.tickGen})
	d.mustContain("brand new", "42 entries shown")
	d.keys("/")
	d.typeText("hello 3")
	d.keys("enter")
	d.mustContain("11 entries shown of 42", "hello 35")
	d.mustNotContain("brand new")
	d.keys("p")
	d.mustContain("PAUSED")
	before := ins.count("Entries")
	d.send(tailTick{gen: v.tickGen})
	d.send(tickMsg{gen: d.m.tickGen})
	if ins.count("Entries") != before {
		t.Fatal("a paused tail polled")
	}
	d.keys("p", "up", "enter")
	d.mustContain("payload 1700000038000-0", `"content": "hello 38"`)
	d.keys("y")
	if len(d.copy) != 1 || d.copy[0] != "1700000038000-0" {
		t.Fatalf("copied %q", d.copy)
	}
	d.keys("Y")
	if !strings.Contains(d.copy[1], `"hello 38"`) {
		t.Fatalf("copied %q", d.copy[1])
	}
	// An undecodable payload shows its bytes.
	d.keys("esc", "/", "esc", "end", "up", "enter")
	d.mustContain("undecodable", "00000000  c1 ff 00")
}

func TestRequeueDeadLetters(t *testing.T) {
	d, ins, _, _ := newFixtureDriver(t, plainOptions())
	d.command("dlq MESSAGE_CREATE")
	d.mustContain("MESSAGE_CREATE:dlq", "[exceeded max deliveries]")
	d.keys("R")
	d.mustContain("Requeue 1 dead letter to their original events? (y/N)")
	d.keys("y")
	if len(ins.requeue) != 1 || ins.requeue[0] != "1700000050000-0" {
		t.Fatalf("requeued %v", ins.requeue)
	}
	d.mustContain("requeued 1 of 1 to MESSAGE_CREATE as 1700000999999-0")
}

func TestPublishValidatesAndCallShowsReplyOrTimeout(t *testing.T) {
	d, _, b, _ := newFixtureDriver(t, plainOptions())
	d.keys("6")
	d.typeText("echo")
	d.keys("tab")
	if f := d.m.views[kPublish].(*publishView).form.cur; f != pubTimeout {
		t.Fatalf("tab from Event focused field %d, want Timeout (%d), the next on screen", f, pubTimeout)
	}
	d.keys("tab")
	d.typeText(`{"content": "hi"`)
	d.mustContain("invalid JSON")
	d.keys("ctrl+s")
	if len(b.events()) != 0 {
		t.Fatal("published invalid JSON")
	}
	d.typeText("}")
	d.mustContain("✓ valid")
	d.keys("ctrl+s")
	d.mustContain("published echo → id 1700000005000-0")
	d.keys("ctrl+o")
	d.mustContain("reply to echo after", `"content": "hi"`)
	// A call nobody answers times out.
	d.keys("shift+tab", "shift+tab")
	for range 4 {
		d.keys("backspace")
	}
	d.typeText("nobody")
	d.keys("tab")
	for range 2 {
		d.keys("backspace")
	}
	d.typeText("50ms")
	d.keys("ctrl+o")
	d.mustContain("call nobody: no reply within the timeout")
}

func TestSendShowsTheRouteThenSends(t *testing.T) {
	d, _, b, _ := newFixtureDriver(t, plainOptions())
	d.keys("7")
	const guild = "81384788765712384"
	d.typeText(guild)
	want := core.ShardID(81384788765712384, 2)
	d.mustContain("guild 81384788765712384 routes to shard "+string(rune('0'+want))+" of 2", `"guild_id": "`+guild+`"`)
	d.keys("ctrl+s")
	d.mustContain("SEND op 8 for guild " + guild)
	d.keys("y")
	if ev := b.events(); len(ev) != 1 || ev[0] != gateway.SendEvent {
		t.Fatalf("published %v", ev)
	}
	// As spec-tacles/gateway reads SEND: a msgpack str holding JSON.
	raw, err := core.Msgpack{}.Marshal(b.published[0].Data)
	if err != nil || raw[0] != 0xda || !json.Valid(raw[3:]) {
		t.Fatalf("SEND payload %T encodes as %q (%v), want a msgpack str of JSON", b.published[0].Data, raw, err)
	}
	var sent map[string]any
	_ = json.Unmarshal(raw[3:], &sent)
	if sent["guild_id"] != guild {
		t.Fatalf("SEND payload %v", sent)
	}
	d.mustContain("the gateway routes it to shard")
	// Directly to a chosen shard.
	d.keys("tab", "tab")
	d.typeText("1")
	d.keys("ctrl+d", "y")
	if ev := b.events(); len(ev) != 2 || ev[1] != "1" {
		t.Fatalf("published %v", ev)
	}
	if raw, _ := (core.Msgpack{}).Marshal(b.published[1].Data); raw[0]&0xe0 != 0xa0 && raw[0] != 0xda {
		t.Fatalf("shard packet encodes as %q, want a msgpack str of JSON", raw)
	}
}

// TestPublishViewSendsPacketsAsGatewaysReadThem: publishing SEND or a
// shard id from the Publish view writes a msgpack str holding JSON, as
// spec-tacles/gateway reads them; other events keep the codec's map.
func TestPublishViewSendsPacketsAsGatewaysReadThem(t *testing.T) {
	d, _, b, _ := newFixtureDriver(t, plainOptions())
	d.keys("6")
	d.typeText("SEND")
	d.keys("tab", "tab")
	d.typeText(`{"guild_id": "81384788765712384", "packet": {"op": 8, "d": {"guild_id": "81384788765712384", "query": "", "limit": 0}}}`)
	d.mustContain("✓ valid")
	d.keys("ctrl+s")
	d.mustContain("Publish to SEND? group gateway consumes it: each handles it.", "(y/N)")
	d.keys("y")
	d.mustContain("published SEND")
	raw, err := core.Msgpack{}.Marshal(b.published[0].Data)
	if err != nil || raw[0] != 0xda || !json.Valid(raw[3:]) {
		t.Fatalf("SEND encodes as %q (%v), want a msgpack str of JSON", raw, err)
	}
}

func TestShardControl(t *testing.T) {
	d, _, _, gw := newFixtureDriver(t, plainOptions())
	d.keys("8")
	d.mustContain("SIMULATED", "0/2", "ready", "1/2", "resuming", "4000 reconnect")
	d.keys("x")
	d.mustContain("Stop shard 0?")
	d.keys("y")
	d.keys("down", "R", "y", "up", "s")
	if got := strings.Join(gw.actions(), ","); got != "stop 0,reconnect 1,start 0" {
		t.Fatalf("actions %s", got)
	}
}

func TestStartGatewayTokenNeverShown(t *testing.T) {
	ins, b, _ := fixture()
	node := testNode(ins, b, nil)
	var got string
	node.Start = func(ctx context.Context, token string) (GatewayInfo, error) {
		got = token
		return GatewayInfo{}, errors.New("401 Unauthorized for token " + token)
	}
	d := newDriver(t, node, plainOptions(), 100, 30)
	d.keys("8")
	d.mustContain("No gateway runs in this console", "Press g")
	d.keys("g")
	d.mustContain("Bot token")
	d.typeText(testToken)
	d.mustNotContain(testToken, "secret")
	d.mustContain("•••")
	d.keys("enter")
	d.mustContain("Start a local gateway with the token typed?", "(y/N)")
	d.mustNotContain(testToken)
	d.keys("y")
	if got != testToken {
		t.Fatalf("started with %q", got)
	}
	d.mustContain("401 Unauthorized for token xxxxx")
	for _, msg := range d.msgs {
		_ = msg
	}
	d.mustNotContain(testToken)
}

func TestSecretsNeverInAFrame(t *testing.T) {
	ins, b, gw := fixture()
	ins.server.Address = "127.0.0.1:6379"
	node := testNode(ins, b, gw)
	node.Info.BrokerAddress = "redis://xxxxx@127.0.0.1:6379/0"
	d := newDriver(t, node, plainOptions(), 100, 30)
	d.send(statusMsg{text: "dial redis://:hunter2-password@127.0.0.1: refused", err: true})
	d.mustContain("dial redis://:xxxxx@127.0.0.1")
	d.mustNotContain("hunter2-password")
}

func TestTooSmallAndResize(t *testing.T) {
	d, _, _, _ := newFixtureDriver(t, plainOptions())
	d.send(tea.WindowSizeMsg{Width: 60, Height: 15})
	d.mustContain("terminal too small: 60×15", "at least 80×20")
	d.send(tea.WindowSizeMsg{Width: 120, Height: 36})
	d.mustContain("Overview")
	if lines := strings.Count(d.view(), "\n") + 1; lines != 36 {
		t.Fatalf("%d lines at height 36", lines)
	}
}

func TestRefreshIntervalAndPause(t *testing.T) {
	d, ins, _, _ := newFixtureDriver(t, plainOptions())
	d.keys("+")
	if d.m.interval != time.Second {
		t.Fatalf("interval %s", d.m.interval)
	}
	d.keys("-", "-")
	if d.m.interval != 4*time.Second {
		t.Fatalf("interval %s", d.m.interval)
	}
	before := ins.count("Server")
	d.send(tickMsg{gen: d.m.tickGen})
	if ins.count("Server") != before+1 {
		t.Fatal("tick did not refresh")
	}
	d.keys("P")
	d.mustContain("paused")
	d.send(tickMsg{gen: d.m.tickGen})
	if ins.count("Server") != before+1 {
		t.Fatal("paused but refreshed")
	}
	d.command("refresh 10s")
	if d.m.interval != 10*time.Second || d.sh().paused {
		t.Fatalf("interval %s paused %v", d.m.interval, d.sh().paused)
	}
}

func (d *driver) sh() *shared { return d.m.sh }

func TestMouseWheelMovesTheCursor(t *testing.T) {
	d, _, _, _ := newFixtureDriver(t, plainOptions())
	d.keys("2")
	d.send(tea.MouseMsg{Action: tea.MouseActionPress, Button: tea.MouseButtonWheelDown})
	if c := d.m.views[kStreams].(*streamsView).tbl.cursor; c != 1 {
		t.Fatalf("cursor %d", c)
	}
}

func TestDefaultClipboardIsOSC52(t *testing.T) {
	ins, b, gw := fixture()
	var out bytes.Buffer
	opts := plainOptions()
	opts.Clipboard = nil
	opts.Output = &out
	m := New(testNode(ins, b, gw), opts)
	m.Update(copyMsg{what: "x", text: "1700000000000-0"})
	want := "\x1b]52;c;" + base64.StdEncoding.EncodeToString([]byte("1700000000000-0")) + "\x07"
	if out.String() != want {
		t.Fatalf("wrote %q", out.String())
	}
}

func TestNoInspector(t *testing.T) {
	_, b, gw := fixture()
	d := newDriver(t, testNode(nil, b, gw), plainOptions(), 100, 30)
	d.mustContain("no inspection")
	d.keys("2")
	d.mustContain("This broker offers no inspection")
}
