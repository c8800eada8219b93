package tui

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/themes"
)

// baseMS is the millisecond part of the fake data's ids.
const baseMS = 1700000000000

// fakeStream is a stream of the fake inspector: explicit entries, or a
// virtual stream of n entries whose ids are baseMS+i-0.
type fakeStream struct {
	name    string
	entries []core.Entry
	virtual int64
	groups  []*fakeGroup
}

type fakeGroup struct {
	info      core.GroupInfo
	consumers []core.ConsumerInfo
	pending   []core.PendingEntry
	virtual   int64 // virtual pending entries, ids baseMS+i-0
}

func virtualID(i int64) string { return fmt.Sprintf("%d-0", baseMS+i) }

func virtualIndex(id string) int64 {
	ms, _, _ := parseID(id)
	return int64(ms) - baseMS
}

// fakeInspector is an in-memory core.Inspector and core.PendingInspector;
// it can serve virtual datasets of any size without holding them.
type fakeInspector struct {
	mu      sync.Mutex
	server  core.ServerInfo
	streams map[string]*fakeStream
	calls   map[string]int
	acked   []string
	claimed map[string][]string
	dead    []string
	requeue []string
	gate    chan struct{} // when set, every call waits for it
	// maxCount is the largest page asked of Pending or Entries.
	maxCount int
	// bulkPage is the batch of the bulk methods (default 2); bulkGate,
	// when set, is waited on before each batch (fakebulk_test.go).
	bulkPage int
	bulkGate chan struct{}
}

var (
	_ core.Inspector        = (*fakeInspector)(nil)
	_ core.PendingInspector = (*fakeInspector)(nil)
)

func newFakeInspector() *fakeInspector {
	return &fakeInspector{
		server:  core.ServerInfo{Kind: "redis", Address: "127.0.0.1:6379", Version: "7.2.4", RoundTrip: 210 * time.Microsecond},
		streams: map[string]*fakeStream{}, calls: map[string]int{}, claimed: map[string][]string{},
	}
}

func (f *fakeInspector) call(name string) {
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	f.calls[name]++
	f.mu.Unlock()
}

func (f *fakeInspector) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

func (f *fakeInspector) length(s *fakeStream) int64 {
	if s.virtual > 0 {
		return s.virtual
	}
	return int64(len(s.entries))
}

func (f *fakeInspector) Server(ctx context.Context) (core.ServerInfo, error) {
	f.call("Server")
	return f.server, nil
}

func (f *fakeInspector) Streams(ctx context.Context) ([]core.StreamInfo, error) {
	f.call("Streams")
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []core.StreamInfo
	for _, s := range f.streams {
		info := core.StreamInfo{Name: s.name, Length: f.length(s), Groups: len(s.groups)}
		switch {
		case s.virtual > 0:
			info.FirstID, info.LastID = virtualID(0), virtualID(s.virtual-1)
		case len(s.entries) > 0:
			info.FirstID, info.LastID = s.entries[0].ID, s.entries[len(s.entries)-1].ID
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (f *fakeInspector) stream(name string) (*fakeStream, error) {
	s := f.streams[name]
	if s == nil {
		return nil, fmt.Errorf("no stream %q", name)
	}
	return s, nil
}

func (f *fakeInspector) group(stream, group string) (*fakeGroup, error) {
	s, err := f.stream(stream)
	if err != nil {
		return nil, err
	}
	for _, g := range s.groups {
		if g.info.Name == group {
			return g, nil
		}
	}
	return nil, fmt.Errorf("no group %q", group)
}

func (f *fakeInspector) Groups(ctx context.Context, stream string) ([]core.GroupInfo, error) {
	f.call("Groups")
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := f.stream(stream)
	if err != nil {
		return nil, nil // as Redis: a stream that does not exist has no groups
	}
	var out []core.GroupInfo
	for _, g := range s.groups {
		info := g.info
		info.Consumers = len(g.consumers)
		if g.virtual > 0 {
			info.Pending = g.virtual
		} else {
			info.Pending = int64(len(g.pending))
		}
		out = append(out, info)
	}
	return out, nil
}

func (f *fakeInspector) Consumers(ctx context.Context, stream, group string) ([]core.ConsumerInfo, error) {
	f.call("Consumers")
	f.mu.Lock()
	defer f.mu.Unlock()
	g, err := f.group(stream, group)
	if err != nil {
		return nil, err
	}
	return slices.Clone(g.consumers), nil
}

func (f *fakeInspector) Pending(ctx context.Context, stream, group string, q core.PendingQuery) ([]core.PendingEntry, error) {
	f.call("Pending")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maxCount = max(f.maxCount, q.Count)
	g, err := f.group(stream, group)
	if err != nil {
		return nil, err
	}
	var out []core.PendingEntry
	if g.virtual > 0 {
		start := int64(0)
		if q.After != "" {
			start = virtualIndex(q.After) + 1
		}
		for i := start; i < g.virtual && len(out) < q.Count; i++ {
			e := core.PendingEntry{ID: virtualID(i), Consumer: fmt.Sprintf("worker-%d", i%3), Idle: time.Duration(i%600) * time.Second, Deliveries: 1 + i%4}
			if q.Consumer != "" && e.Consumer != q.Consumer || e.Idle < q.MinIdle {
				continue
			}
			out = append(out, e)
		}
		return out, nil
	}
	for _, p := range g.pending {
		if q.After != "" && compareIDs(p.ID, q.After) <= 0 {
			continue
		}
		if q.Consumer != "" && p.Consumer != q.Consumer || p.Idle < q.MinIdle {
			continue
		}
		out = append(out, p)
		if len(out) == q.Count {
			break
		}
	}
	return out, nil
}

func (f *fakeInspector) Entries(ctx context.Context, stream string, q core.RangeQuery) ([]core.Entry, error) {
	f.call("Entries")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maxCount = max(f.maxCount, q.Count)
	s, err := f.stream(stream)
	if err != nil {
		return nil, err
	}
	var out []core.Entry
	if s.virtual > 0 {
		payload, _ := core.Msgpack{}.Marshal(map[string]any{"content": "virtual", "n": 1})
		if q.Reverse {
			end := s.virtual - 1
			if q.Before != "" {
				end = virtualIndex(q.Before) - 1
			}
			for i := end; i >= 0 && len(out) < q.Count; i-- {
				out = append(out, core.Entry{ID: virtualID(i), Raw: payload})
			}
			return out, nil
		}
		start := int64(0)
		if q.After != "" {
			ms, seq, _ := parseID(q.After)
			start = int64(ms) - baseMS
			if seq == 0 {
				start++
			}
		}
		for i := max(start, 0); i < s.virtual && len(out) < q.Count; i++ {
			out = append(out, core.Entry{ID: virtualID(i), Raw: payload})
		}
		return out, nil
	}
	list := s.entries
	if q.Reverse {
		for i := len(list) - 1; i >= 0 && len(out) < q.Count; i-- {
			if q.Before == "" || compareIDs(list[i].ID, q.Before) < 0 {
				out = append(out, list[i])
			}
		}
		return out, nil
	}
	for _, e := range list {
		if q.After == "" || compareIDs(e.ID, q.After) > 0 {
			out = append(out, e)
			if len(out) == q.Count {
				break
			}
		}
	}
	return out, nil
}

func (f *fakeInspector) removePending(g *fakeGroup, ids []string) int {
	n := 0
	g.pending = slices.DeleteFunc(g.pending, func(p core.PendingEntry) bool {
		if slices.Contains(ids, p.ID) {
			n++
			return true
		}
		return false
	})
	return n
}

func (f *fakeInspector) Ack(ctx context.Context, stream, group string, ids ...string) (int, error) {
	f.call("Ack")
	f.mu.Lock()
	defer f.mu.Unlock()
	g, err := f.group(stream, group)
	if err != nil {
		return 0, err
	}
	f.acked = append(f.acked, ids...)
	return f.removePending(g, ids), nil
}

func (f *fakeInspector) Claim(ctx context.Context, stream, group, consumer string, minIdle time.Duration, ids ...string) ([]string, error) {
	f.call("Claim")
	f.mu.Lock()
	defer f.mu.Unlock()
	g, err := f.group(stream, group)
	if err != nil {
		return nil, err
	}
	var got []string
	for i := range g.pending {
		if slices.Contains(ids, g.pending[i].ID) {
			g.pending[i].Consumer, g.pending[i].Idle = consumer, 0
			got = append(got, g.pending[i].ID)
		}
	}
	f.claimed[consumer] = append(f.claimed[consumer], got...)
	return got, nil
}

func (f *fakeInspector) DeadLetter(ctx context.Context, stream, group, reason string, ids ...string) (int, error) {
	f.call("DeadLetter")
	f.mu.Lock()
	defer f.mu.Unlock()
	g, err := f.group(stream, group)
	if err != nil {
		return 0, err
	}
	f.dead = append(f.dead, ids...)
	return f.removePending(g, ids), nil
}

func (f *fakeInspector) Requeue(ctx context.Context, event string, ids ...string) ([]string, error) {
	f.call("Requeue")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requeue = append(f.requeue, ids...)
	out := make([]string, len(ids))
	for i := range ids {
		out[i] = fmt.Sprintf("%d-%d", baseMS+999999, i)
	}
	return out, nil
}

// fakeBroker records publishes; calls to "echo" are answered.
type fakeBroker struct {
	mu        sync.Mutex
	published []core.Outgoing
}

func (b *fakeBroker) Publish(ctx context.Context, event string, data any) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.published = append(b.published, core.Outgoing{Event: event, Data: data})
	return fmt.Sprintf("%d-%d", baseMS+5000, len(b.published)-1), nil
}

func (b *fakeBroker) Call(ctx context.Context, event string, data any) (*core.Payload, error) {
	if event == "echo" {
		raw, _ := core.Msgpack{}.Marshal(map[string]any{"echo": data})
		return core.NewPayload(raw, nil), nil
	}
	<-ctx.Done()
	return nil, fmt.Errorf("call %s: %w", event, core.ErrTimeout)
}

func (b *fakeBroker) Consume(ctx context.Context, events []string, h core.Handler) error {
	return core.ErrUnsupported
}

func (b *fakeBroker) Close() error { return nil }

func (b *fakeBroker) events() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, o := range b.published {
		out = append(out, o.Event)
	}
	return out
}

// fakeGateway is a Gateway with fixed shards.
type fakeGateway struct {
	mu     sync.Mutex
	shards []gateway.Status
	log    []string
}

func (g *fakeGateway) Shards() []gateway.Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.shards)
}

func (g *fakeGateway) ShardCount() int { return len(g.Shards()) }

func (g *fakeGateway) do(verb string, id int, st gateway.State) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.log = append(g.log, fmt.Sprintf("%s %d", verb, id))
	for i := range g.shards {
		if g.shards[i].ID == id {
			g.shards[i].State = st
		}
	}
	return nil
}

func (g *fakeGateway) StartShard(id int) error     { return g.do("start", id, gateway.Ready) }
func (g *fakeGateway) StopShard(id int) error      { return g.do("stop", id, gateway.Stopped) }
func (g *fakeGateway) ReconnectShard(id int) error { return g.do("reconnect", id, gateway.Resuming) }

func (g *fakeGateway) Published() uint64 { return 12345 }
func (g *fakeGateway) QueueLength() int  { return 0 }

func (g *fakeGateway) actions() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.log)
}

func mustMsgpack(v any) []byte {
	b, err := core.Msgpack{}.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// fixture is a small, fixed system: a few streams, a group with pending
// entries and a stale consumer, dead letters and two shards.
func fixture() (*fakeInspector, *fakeBroker, *fakeGateway) {
	ins := newFakeInspector()
	mc := &fakeStream{name: "MESSAGE_CREATE"}
	for i := range 40 {
		mc.entries = append(mc.entries, core.Entry{ID: fmt.Sprintf("%d-%d", baseMS+int64(i)*1000, 0),
			Raw: mustMsgpack(map[string]any{"id": fmt.Sprint(1000 + i), "content": fmt.Sprintf("hello %d", i), "guild_id": "81384788765712384"})})
	}
	mc.entries = append(mc.entries, core.Entry{ID: fmt.Sprintf("%d-0", baseMS+40000), Raw: []byte{0xc1, 0xff, 0x00}})
	bot := &fakeGroup{info: core.GroupInfo{Name: "sim-bot", LastDeliveredID: mc.entries[39].ID, Lag: 1}}
	bot.consumers = []core.ConsumerInfo{{Name: "worker-1", Pending: 3, Idle: 800 * time.Millisecond}, {Name: "worker-2", Pending: 2, Idle: 7 * time.Minute}}
	for i, c := range []string{"worker-1", "worker-2", "worker-1", "worker-2", "worker-1"} {
		bot.pending = append(bot.pending, core.PendingEntry{ID: mc.entries[30+i].ID, Consumer: c, Idle: time.Duration(i+1) * 90 * time.Second, Deliveries: int64(i%3 + 1)})
	}
	audit := &fakeGroup{info: core.GroupInfo{Name: "audit", LastDeliveredID: mc.entries[40].ID, Lag: 0}}
	mc.groups = []*fakeGroup{bot, audit}
	ins.streams[mc.name] = mc
	typing := &fakeStream{name: "TYPING_START", virtual: 1_000_000}
	ins.streams[typing.name] = typing
	dlq := &fakeStream{name: "MESSAGE_CREATE:dlq"}
	dlq.entries = []core.Entry{{ID: fmt.Sprintf("%d-0", baseMS+50000), Raw: mustMsgpack(map[string]any{"content": "poison"}),
		Headers: map[string]string{core.HeaderReason: core.ReasonMaxDeliveries, core.HeaderEvent: "MESSAGE_CREATE", core.HeaderGroup: "sim-bot"}}}
	ins.streams[dlq.name] = dlq
	send := &fakeStream{name: "SEND", groups: []*fakeGroup{{info: core.GroupInfo{Name: "gateway", Lag: 0}}}}
	ins.streams[send.name] = send
	gw := &fakeGateway{shards: []gateway.Status{
		{ID: 0, Count: 2, State: gateway.Ready, SessionID: "s0", Seq: 1204, Latency: 41 * time.Millisecond, GuildsAvailable: 12, Events: 1204,
			LastHeartbeatACK: time.UnixMilli(baseMS)},
		{ID: 1, Count: 2, State: gateway.Resuming, Seq: 977, Latency: 87 * time.Millisecond, GuildsAvailable: 11, GuildsUnavailable: 1, Reconnects: 2,
			LastCloseCode: 4000, LastCloseReason: "reconnect requested", Events: 980, LastHeartbeatACK: time.UnixMilli(baseMS)},
	}}
	return ins, &fakeBroker{}, gw
}

const testToken = "MTIzNDU2Nzg5.secret-token-value"

// testNode builds a Node from the fixture.
func testNode(ins core.Inspector, b core.Broker, gw Gateway) *Node {
	n := &Node{
		Info: NodeInfo{Name: "ops-box/4242", Client: "console-ops-box", BrokerKind: "redis", BrokerAddress: "127.0.0.1:6379",
			Simulated: true, StaleAfter: 2 * time.Minute},
		Inspect: ins, Publisher: b, Secrets: []string{"hunter2-password"},
	}
	if gw != nil {
		n.SetGateway(GatewayInfo{Gateway: gw, Simulated: true, Target: "ws://127.0.0.1:40001"})
	}
	return n
}

var fixedNow = time.UnixMilli(baseMS + 60000).UTC()

// plainOptions render without colour at a fixed time, for golden files.
func plainOptions() Options {
	r := lipgloss.NewRenderer(nil)
	r.SetColorProfile(termenv.Ascii)
	return Options{Renderer: r, Theme: themes.Dark(), Now: func() time.Time { return fixedNow }, Location: time.UTC,
		Clipboard: func(string) error { return nil }}
}

// driver runs a Model synchronously: commands run at once (ticks are
// never started; tests send tickMsg themselves).
type driver struct {
	t    testing.TB
	m    *Model
	msgs []tea.Msg // every message delivered
	copy []string
}

func newDriver(t testing.TB, b Backend, opts Options, w, h int) *driver {
	t.Helper()
	d := &driver{t: t}
	opts.Clipboard = func(s string) error { d.copy = append(d.copy, s); return nil }
	d.m = New(b, opts)
	d.m.sh.tick = noTick
	d.send(tea.WindowSizeMsg{Width: w, Height: h})
	d.run(d.m.Init())
	return d
}

// run executes cmd and delivers what it returns, recursively.
func (d *driver) run(cmd tea.Cmd) {
	if cmd == nil {
		return
	}
	msg := cmd()
	if msg == nil {
		return
	}
	if batch, ok := msg.(tea.BatchMsg); ok {
		for _, c := range batch {
			d.run(c)
		}
		return
	}
	if v := reflect.ValueOf(msg); v.Kind() == reflect.Slice && v.Type().Elem() == reflect.TypeFor[tea.Cmd]() {
		for i := range v.Len() {
			d.run(v.Index(i).Interface().(tea.Cmd))
		}
		return
	}
	d.send(msg)
}

func (d *driver) send(msg tea.Msg) {
	d.msgs = append(d.msgs, msg)
	_, cmd := d.m.Update(msg)
	d.run(cmd)
}

// keys types each key: names like "enter", "esc", "ctrl+s", "up", "space"
// or single characters.
func (d *driver) keys(keys ...string) {
	for _, k := range keys {
		d.send(keyMsg(k))
	}
}

// typeText types text rune by rune.
func (d *driver) typeText(s string) {
	for _, r := range s {
		d.send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
	}
}

func keyMsg(k string) tea.KeyMsg {
	named := map[string]tea.KeyType{
		"enter": tea.KeyEnter, "esc": tea.KeyEsc, "up": tea.KeyUp, "down": tea.KeyDown, "tab": tea.KeyTab,
		"shift+tab": tea.KeyShiftTab, "pgdown": tea.KeyPgDown, "pgup": tea.KeyPgUp, "home": tea.KeyHome, "end": tea.KeyEnd,
		"ctrl+c": tea.KeyCtrlC, "ctrl+s": tea.KeyCtrlS, "ctrl+d": tea.KeyCtrlD, "ctrl+o": tea.KeyCtrlO, "ctrl+f": tea.KeyCtrlF,
		"space": tea.KeySpace, "backspace": tea.KeyBackspace,
	}
	if t, ok := named[k]; ok {
		return tea.KeyMsg{Type: t}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
}

func (d *driver) view() string { return d.m.View() }

func (d *driver) mustContain(parts ...string) {
	d.t.Helper()
	v := d.view()
	for _, p := range parts {
		if !strings.Contains(v, p) {
			d.t.Fatalf("view lacks %q:\n%s", p, v)
		}
	}
}

func (d *driver) mustNotContain(parts ...string) {
	d.t.Helper()
	v := d.view()
	for _, p := range parts {
		if strings.Contains(v, p) {
			d.t.Fatalf("view has %q:\n%s", p, v)
		}
	}
}

// testAction is an action that runs a function.
type testAction func() tea.Msg

func (a testAction) run(context.Context, Backend) tea.Msg { return a() }

// command runs cmd from the command palette: ":", the text, then enter.
func (d *driver) command(cmd string) {
	d.keys(":")
	d.typeText(cmd)
	d.keys("enter")
}

// noTick stands for the Model's tick scheduler: it never starts a tick.
func noTick(time.Duration, func(time.Time) tea.Msg) tea.Cmd { return nil }

// idleModel returns a Model of b sized 100×30 whose Init has not run and
// whose ticks never start: no load is in flight yet.
func idleModel(b Backend, opts Options) *Model {
	m := New(b, opts)
	m.sh.tick = noTick
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	return m
}

// firstLoad calls refresh and returns the load it starts; it fails the test
// unless one starts and two more calls while it is in flight start none
// (refresh has side effects: each call may start a load).
func firstLoad(t *testing.T, refresh func() tea.Cmd) tea.Cmd {
	t.Helper()
	first := refresh()
	if first == nil {
		t.Fatal("no load started")
	}
	for range 2 {
		if refresh() != nil {
			t.Fatal("a second load started while one is in flight")
		}
	}
	return first
}

// dropStale runs the load first, gated by gate, to its result of type R,
// invalidates l (the view's parameters changed meanwhile) and fails the test
// unless update drops that stale result (applied reports that it did not)
// and starts the load again; it returns that load.
func dropStale[R tea.Msg](t *testing.T, first tea.Cmd, gate chan struct{}, l *loader, update func(tea.Msg) tea.Cmd, applied func() bool) tea.Cmd {
	t.Helper()
	done := make(chan tea.Msg)
	go func() { done <- first() }()
	close(gate)
	msg := <-done
	res, ok := msg.(R)
	if !ok {
		t.Fatalf("the load returned %T", msg)
	}
	l.invalidate()
	again := update(res)
	if applied() {
		t.Fatal("stale result applied")
	}
	if again == nil {
		t.Fatal("the dirty view did not load again")
	}
	return again
}
