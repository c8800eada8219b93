package tui

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
)

// owners are the fixture group's pending entries' owners, by id.
func owners(ins *fakeInspector) map[string]string {
	ins.mu.Lock()
	defer ins.mu.Unlock()
	g, _ := ins.group("MESSAGE_CREATE", "sim-bot")
	out := map[string]string{}
	for _, p := range g.pending {
		out[p.ID] = p.Consumer
	}
	return out
}

func TestBulkAckOfTheFilterNamesCountAndRule(t *testing.T) {
	d, ins, _, _ := newFixtureDriver(t, plainOptions())
	d.command("pending MESSAGE_CREATE sim-bot")
	d.keys("/")
	d.typeText("ker-2")
	d.keys("enter")
	d.mustContain("filtered: consumer containing \"ker-2\"")
	d.keys("B")
	d.mustContain("A ack · c claim · D dead letters")
	d.keys("A")
	d.mustContain(`Acknowledge 2 pending entries matching consumer containing "ker-2"? An ack cannot be undone.`, "(y/N)")
	d.keys("n")
	if n := ins.count("AckPending"); n != 0 {
		t.Fatalf("%d bulk acks without a yes", n)
	}
	d.keys("B", "A", "y")
	if len(ins.acked) != 2 {
		t.Fatalf("acked %v", ins.acked)
	}
	for id, owner := range owners(ins) {
		if owner == "worker-2" {
			t.Fatalf("%s of worker-2 still pending", id)
		}
	}
	d.mustContain(`acknowledged 2 entries (consumer containing "ker-2") · an ack cannot be undone`, "3 pending in sim-bot")
	d.keys("B")
	d.mustContain(`bulk: nothing pending matches consumer containing "ker-2"`)
	// Any other key after B cancels.
	d.keys("/", "esc", "B", "x")
	d.mustContain("bulk action cancelled")
}

func TestBulkClaimTabCompletesAndUndoes(t *testing.T) {
	d, ins, _, _ := newFixtureDriver(t, plainOptions())
	d.command("pending MESSAGE_CREATE sim-bot")
	d.keys("/")
	d.typeText("consumer=worker-2")
	d.keys("enter")
	d.keys("B", "c")
	// The default is the live consumer that is not the one claimed from.
	d.mustContain("Claim 2 entries (consumer worker-2) to consumer: worker-1", "tab completes · worker-1, worker-2")
	d.send(tea.KeyMsg{Type: tea.KeyCtrlU})
	d.typeText("work")
	d.keys("tab")
	d.mustContain("to consumer: worker-1")
	d.keys("enter")
	d.mustContain(`Claim 2 pending entries matching consumer worker-2 to "worker-1"?`)
	d.keys("y")
	if got := ins.claimed["worker-1"]; len(got) != 2 {
		t.Fatalf("claimed %v", ins.claimed)
	}
	d.mustContain(`"worker-1" now owns 2 entries`, "u undoes (back to worker-2)")
	// Undo: what worker-1 still holds goes back to worker-2.
	d.keys("/")
	d.send(tea.KeyMsg{Type: tea.KeyCtrlU})
	d.keys("enter")
	d.keys("u")
	d.mustContain(`Claim back 2 entries that "worker-1" still holds to worker-2?`)
	d.keys("y")
	d.mustContain("undone: 2 entries back to worker-2")
	n := 0
	for _, owner := range owners(ins) {
		if owner == "worker-2" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("worker-2 owns %d after the undo: %v", n, owners(ins))
	}
	d.keys("u")
	d.mustContain("nothing to undo: only a claim can be undone")
}

func TestClaimToANewNameWarnsAndAckSaysItIsFinal(t *testing.T) {
	d, _, _, _ := newFixtureDriver(t, plainOptions())
	d.command("pending MESSAGE_CREATE sim-bot")
	d.keys("B", "c")
	d.send(tea.KeyMsg{Type: tea.KeyCtrlU})
	d.typeText("rescuer")
	d.keys("enter")
	d.mustContain(`"rescuer" is not a consumer of sim-bot: claiming creates it.`, "(y/N)")
	d.keys("n", "A", "y")
	d.mustContain("acknowledged 1 of 1", "an ack cannot be undone")
}

func TestMarksSurviveACancelledConfirmation(t *testing.T) {
	d, ins, _, _ := newFixtureDriver(t, plainOptions())
	d.command("pending MESSAGE_CREATE sim-bot")
	d.keys("space", "space", "A", "n")
	d.mustContain("cancelled", "2 marked")
	d.keys("D", "esc")
	d.mustContain("2 marked")
	d.keys("c", "esc")
	d.mustContain("2 marked")
	d.keys("A", "y")
	if len(ins.acked) != 2 {
		t.Fatalf("acked %v", ins.acked)
	}
	d.mustNotContain("marked")
}

func TestPendingFilterDeliveriesAndSort(t *testing.T) {
	d, _, _, _ := newFixtureDriver(t, plainOptions())
	d.command("pending MESSAGE_CREATE sim-bot")
	v := d.m.views[kPending].(*pendingView)
	d.keys("/")
	d.typeText("ker-1 dlv>=2")
	d.keys("enter")
	if len(v.rows) != 2 {
		t.Fatalf("rows %+v", v.rows)
	}
	for _, r := range v.rows {
		if r.Consumer != "worker-1" || r.Deliveries < 2 {
			t.Fatalf("filtered row %+v", r)
		}
	}
	d.mustContain(`filtered: consumer containing "ker-1"`, "filter: ker-1 dlv>=2")
	d.keys("/")
	d.send(tea.KeyMsg{Type: tea.KeyCtrlU})
	d.typeText("deliveries>x")
	d.keys("enter")
	d.mustContain(`filter: "x" is not a count (deliveries>=3)`)
	d.keys("/", "esc") // clears the filter
	if len(v.rows) != 5 {
		t.Fatalf("%d rows unfiltered", len(v.rows))
	}
	// s: idle, largest first; again: deliveries; S reverses.
	d.keys("s")
	d.mustContain("IDLE ▼", "page sorted by idle ▼")
	if !slices.IsSortedFunc(v.rows, func(a, b core.PendingEntry) int { return int(b.Idle - a.Idle) }) {
		t.Fatalf("not sorted by idle: %+v", v.rows)
	}
	d.keys("s", "S")
	d.mustContain("DELIVERIES ▲")
	if !slices.IsSortedFunc(v.rows, func(a, b core.PendingEntry) int { return int(a.Deliveries - b.Deliveries) }) {
		t.Fatalf("not sorted by deliveries: %+v", v.rows)
	}
	d.keys("s")
	d.mustContain("CONSUMER ▲")
	d.keys("s")
	d.mustNotContain("▲", "▼")
	if v.rows[0].ID != "1700000030000-0" {
		t.Fatalf("back in id order, first %s", v.rows[0].ID)
	}
}

func TestPendingJumpsToTheLastPage(t *testing.T) {
	ins, b, gw := bigFixture()
	d := newDriver(t, testNode(ins, b, gw), plainOptions(), 100, 30)
	d.command("pending BIG g")
	v := d.m.views[kPending].(*pendingView)
	page := v.tbl.pageRows()
	d.keys("G")
	first := (100_000 - 1) / page * page
	d.mustContain(fmt.Sprintf("page %d · rows %s–100,000", first/page+1, fmtInt(first+1)))
	if last := v.rows[len(v.rows)-1].ID; last != virtualID(99_999) || v.tbl.cursor != len(v.rows)-1 {
		t.Fatalf("last row %s, cursor %d", last, v.tbl.cursor)
	}
	d.keys("up")
	if v.tbl.cursor != len(v.rows)-2 {
		t.Fatalf("cursor %d", v.tbl.cursor)
	}
	d.keys("g")
	d.mustContain("page 1 · rows 1–")
	// end: the page's last row first, then the last page.
	d.keys("end")
	d.mustContain("page 1 · rows 1–")
	d.keys("end")
	d.mustContain("rows " + fmtInt(first+1) + "–100,000")
}

// TestBulkProgressIsMessagesAndEscCancels steps a bulk claim by hand: the
// job waits on the broker between batches while the model handles keys
// and renders; esc cancels it after the batch in flight.
func TestBulkProgressIsMessagesAndEscCancels(t *testing.T) {
	ins, b, gw := fixture()
	g, _ := ins.group("MESSAGE_CREATE", "sim-bot")
	for i := range 10 {
		g.pending = append(g.pending, core.PendingEntry{ID: fmt.Sprintf("%d-%d", baseMS+35000, i), Consumer: "dead", Deliveries: 1})
	}
	ins.bulkPage = 4
	gate := make(chan struct{})
	ins.bulkGate = gate
	d := newDriver(t, testNode(ins, b, gw), plainOptions(), 120, 30)
	d.command("pending MESSAGE_CREATE sim-bot")
	d.keys("/")
	d.typeText("consumer=dead")
	d.keys("enter", "B", "c", "enter")
	d.mustContain(`Claim 10 pending entries matching consumer dead to "worker-1"?`)

	// y: the confirmation's command hands the view the job, whose start
	// is the one command that does not return at once.
	start := confirmBulk(t, d)
	got := make(chan tea.Msg)
	go func() { got <- start() }()
	msg := <-got // the count, before the first batch
	_, next := d.m.Update(msg)
	d.mustContain("claiming 0 / 10", "esc cancels")
	// The console stays responsive while the broker works.
	d.keys("down", "up")
	d.mustContain("claiming 0 / 10")
	go func() { got <- next() }()
	gate <- struct{}{} // one batch of 4
	msg = <-got
	_, next = d.m.Update(msg)
	d.mustContain("claiming 4 / 10", "40%")
	d.m.Update(keyMsg("esc"))
	d.mustContain("cancelling after this batch")
	go func() { got <- next() }()
	close(gate) // the next batch finds the context cancelled
	for {
		msg = <-got
		if done, ok := msg.(bulkDoneMsg); ok {
			d.send(done)
			break
		}
		_, next = d.m.Update(msg)
		go func() { got <- next() }()
	}
	d.mustContain(`cancelled: "worker-1" now owns 4 entries`, "u undoes (back to dead)")
	if n := len(ins.claimed["worker-1"]); n != 4 {
		t.Fatalf("claimed %d, want the one batch before esc", n)
	}
	if v := d.m.views[kPending]; v.capturing() {
		t.Fatal("the view still captures keys after the job ended")
	}
}

// confirmBulk answers y to a bulk action's confirmation and returns the
// command that starts its job, without running it.
func confirmBulk(t testing.TB, d *driver) tea.Cmd {
	t.Helper()
	_, cmd := d.m.Update(keyMsg("y"))
	var start tea.Cmd
	for _, m := range expand(cmd) {
		if s, ok := m.(bulkStartMsg); ok {
			_, start = d.m.Update(s)
		} else if m != nil {
			d.send(m)
		}
	}
	if start == nil {
		t.Fatalf("no job started:\n%s", d.view())
	}
	return start
}

// expand runs cmd and the batches it returns, and lists the messages.
func expand(cmd tea.Cmd) []tea.Msg {
	if cmd == nil {
		return nil
	}
	msg := cmd()
	if batch, ok := msg.(tea.BatchMsg); ok {
		var out []tea.Msg
		for _, c := range batch {
			out = append(out, expand(c)...)
		}
		return out
	}
	return []tea.Msg{msg}
}

func TestBulkKeysNeedARuleBroker(t *testing.T) {
	opts := plainOptions()
	opts.ReadOnly = true
	d, ins, _, _ := newFixtureDriver(t, opts)
	d.command("pending MESSAGE_CREATE sim-bot")
	d.keys("B")
	d.mustContain("read-only")
	d.keys("A")
	if len(ins.acked) != 0 || strings.Contains(d.view(), "(y/N)") {
		t.Fatal("a read-only console asked to acknowledge")
	}
}

func TestDefaultClaimTargetIsALiveConsumer(t *testing.T) {
	cs := []core.ConsumerInfo{{Name: "old", Idle: time.Hour}, {Name: "busy", Idle: time.Second}, {Name: "recent", Idle: 10 * time.Millisecond}}
	for _, c := range []struct {
		owner, want string
		stale       time.Duration
	}{
		{"", "recent", time.Minute},
		{"recent", "busy", time.Minute},
		{"busy", "recent", time.Minute},
		{"recent", "busy", 0},
		{"recent", "console", 500 * time.Millisecond}, // busy and old are stale
	} {
		if got := defaultTarget(cs, c.owner, c.stale, "console"); got != c.want {
			t.Errorf("owner %q, stale after %s: %q, want %q", c.owner, c.stale, got, c.want)
		}
	}
	if got := claimTargets(cs); !slices.Equal(got, []string{"recent", "busy", "old"}) {
		t.Errorf("completions %v, most recently active first", got)
	}
}
