package tui

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/x/exp/teatest"
	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

// clock is a settable Options.Now.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// clockDriver drives the fixture at 120×30 on a clock the test sets.
func clockDriver(t *testing.T) (*driver, *clock) {
	ins, b, gw := fixture()
	c := &clock{t: fixedNow}
	opts := plainOptions()
	opts.Now = c.now
	return newDriver(t, testNode(ins, b, gw), opts, 120, 30), c
}

// TestOverviewWarnsLagAndJumps: a group with a large lag is a warning;
// the warnings can be selected, and enter opens the view of the selected
// one (Groups of the stream; Pending of a stale consumer's group).
func TestOverviewWarnsLagAndJumps(t *testing.T) {
	ins, b, gw := fixture()
	ins.streams["MESSAGE_CREATE"].groups[1].info.Lag = 12_345 // audit
	d := newDriver(t, testNode(ins, b, gw), plainOptions(), 120, 30)
	d.mustContain("MESSAGE_CREATE/audit: lag 12,345 (entries not yet delivered to the group)", "▸ ⚠ TYPING_START")
	// The first warning: TYPING_START has no group.
	d.keys("enter")
	if d.m.active() != kGroups || d.m.views[kGroups].(*groupsView).stream != "TYPING_START" {
		t.Fatalf("enter on the first warning opened %s", kindNames[d.m.active()])
	}
	d.keys("esc", "down")
	d.mustContain("▸ ⚠ MESSAGE_CREATE/sim-bot: consumer worker-2 idle")
	d.keys("enter")
	if p := d.m.views[kPending].(*pendingView); d.m.active() != kPending || p.stream != "MESSAGE_CREATE" || p.group != "sim-bot" {
		t.Fatalf("enter on the stale consumer's warning opened %s", kindNames[d.m.active()])
	}
	d.keys("esc", "down")
	d.mustContain("▸ ⚠ MESSAGE_CREATE/audit: lag 12,345")
	d.keys("down", "enter") // the last stays selected
	if d.m.active() != kGroups || d.m.views[kGroups].(*groupsView).stream != "MESSAGE_CREATE" {
		t.Fatalf("enter on the lag warning opened %s", kindNames[d.m.active()])
	}
}

// TestHeaderShowsDataAge: the header says how old the data shown is, and
// marks it when the loads no longer come back.
func TestHeaderShowsDataAge(t *testing.T) {
	d, c := clockDriver(t)
	d.mustContain("updated 0s ago · every 2s")
	c.t = c.t.Add(4 * time.Second)
	d.mustContain("updated 4s ago · every 2s")
	d.mustNotContain("⚠ updated")
	c.t = c.t.Add(time.Minute)
	d.mustContain("⚠ updated 1m04s ago")
	d.keys("r")
	d.mustContain("updated 0s ago")
}

// TestStatusAgesOutErrorsStay: a status message disappears after a
// while; an error stays until another message replaces it.
func TestStatusAgesOutErrorsStay(t *testing.T) {
	d, c := clockDriver(t)
	d.keys("P")
	d.mustContain("live refresh paused (P resumes)")
	c.t = c.t.Add(statusTTL + time.Second)
	d.mustNotContain("live refresh paused (P resumes)")
	d.m.setStatus("working…", false)
	c.t = c.t.Add(statusTTL + time.Second)
	d.mustContain("working…")
	d.command("nosuchcommand")
	errLine := d.m.status
	if !d.m.statusErr || errLine == "" {
		t.Fatalf("no error status: %q", errLine)
	}
	c.t = c.t.Add(time.Hour)
	if !strings.Contains(d.view(), errLine) {
		t.Fatalf("the error aged out: %q", errLine)
	}
}

// TestPendingOpensBusiestGroup: Pending opened with no group chosen shows
// the group holding the most pending entries (it once showed an empty page
// explaining how to pick one), and says so.
func TestPendingOpensBusiestGroup(t *testing.T) {
	ins, b, gw := fixture()
	d := newDriver(t, testNode(ins, b, gw), plainOptions(), 120, 30)
	d.keys("4")
	p := d.m.views[kPending].(*pendingView)
	if p.stream != "MESSAGE_CREATE" || p.group != "sim-bot" {
		t.Fatalf("Pending shows %q/%q, want MESSAGE_CREATE/sim-bot", p.stream, p.group)
	}
	d.mustContain("Pending › MESSAGE_CREATE › group sim-bot", "5 pending in sim-bot", "showing sim-bot, the group holding the most pending entries")
	d.mustNotContain("No group chosen")
	if len(d.m.stack) != 2 {
		t.Fatalf("stack %v: the pick pushed another Pending", d.m.stack)
	}
}

// TestPendingNothingPendingExplains: with nothing pending anywhere, the
// Pending view still explains how to pick a group.
func TestPendingNothingPendingExplains(t *testing.T) {
	ins, b, gw := fixture()
	for _, s := range ins.streams {
		for _, g := range s.groups {
			g.pending = nil
		}
	}
	d := newDriver(t, testNode(ins, b, gw), plainOptions(), 120, 30)
	d.keys("4")
	d.mustContain("No group chosen")
}

// TestGroupsFilterAndSort: Groups filters groups and consumers by
// substring, sorts by pending (default), idle and name, marks the sorted
// column in the header, and esc clears the filter before it goes back.
func TestGroupsFilterAndSort(t *testing.T) {
	ins, b, gw := fixture()
	d := newDriver(t, testNode(ins, b, gw), plainOptions(), 120, 30)
	d.command("groups MESSAGE_CREATE")
	d.mustContain("sorted by pending ↓", "PENDING ↓")
	v := d.m.views[kGroups].(*groupsView)
	names := func(tbl table) string {
		var out []string
		for _, r := range tbl.rows {
			out = append(out, r[0])
		}
		return strings.Join(out, ",")
	}
	if got := names(v.gt) + "|" + names(v.ct); got != "sim-bot,audit|worker-1,worker-2" {
		t.Fatalf("by pending: %s", got)
	}
	d.keys("s")
	d.mustContain("sorted by idle ↓", "IDLE ↓")
	if got := names(v.ct); got != "worker-2,worker-1" {
		t.Fatalf("consumers by idle: %s", got)
	}
	d.keys("s")
	d.mustContain("sorted by name", "GROUP ↑", "CONSUMER ↑")
	if got := names(v.gt); got != "audit,sim-bot" {
		t.Fatalf("groups by name: %s", got)
	}
	d.keys("S")
	if got := names(v.gt); got != "sim-bot,audit" {
		t.Fatalf("groups by name, reversed: %s", got)
	}
	// A substring of a consumer keeps its group and that consumer.
	d.keys("/")
	d.mustContain("text: the groups, and consumers, whose name contains it")
	d.typeText("KER-2")
	d.keys("enter")
	if got := names(v.gt) + "|" + names(v.ct); got != "sim-bot|worker-2" {
		t.Fatalf("filtered: %s", got)
	}
	d.mustContain("filter: KER-2")
	d.keys("/")
	d.typeText("nothing-like-it")
	d.keys("enter")
	d.mustContain("no group or consumer matches KER-2nothing-like-it")
	// esc clears the filter, then goes back.
	d.keys("esc")
	if d.m.active() != kGroups || v.filter != "" || names(v.gt) == "" {
		t.Fatalf("esc with a filter: view %s, filter %q", kindNames[d.m.active()], v.filter)
	}
	d.mustContain("filter cleared")
	d.keys("esc")
	if d.m.active() != kOverview {
		t.Fatalf("second esc: %s", kindNames[d.m.active()])
	}
}

// TestShardsFilter: the Shards view filters by substring of node, id,
// state and last close.
func TestShardsFilter(t *testing.T) {
	node, _, _ := remoteNode(true, fixedNodes)
	d := newDriver(t, node, plainOptions(), 120, 30)
	d.keys("8", "/")
	d.typeText("FAILED")
	d.keys("enter")
	v := d.m.views[kShards].(*shardsView)
	if len(v.rows) != 1 || v.rows[0].node != "gateway/host-a" || v.rows[0].s.ID != 1 {
		t.Fatalf("rows matching failed: %+v", v.rows)
	}
	d.keys("esc")
	if len(v.rows) != 6 {
		t.Fatalf("%d rows after esc cleared the filter", len(v.rows))
	}
}

// TestHelpListsEveryCommandAt80: at 80 columns the help shows every
// command of the palette and the view's filter syntax, wrapped, not cut.
func TestHelpListsEveryCommandAt80(t *testing.T) {
	ins, b, gw := fixture()
	d := newDriver(t, testNode(ins, b, gw), plainOptions(), 80, 24)
	d.keys("2", "?")
	text := strings.Join(strings.Fields(d.view()), " ")
	for _, c := range commandNames() {
		if !strings.Contains(text, c) {
			t.Errorf("help at 80 columns lacks the command %q", c)
		}
	}
	if !strings.Contains(text, "Filter (/) text: the streams whose name contains it") {
		t.Error("help lacks the filter syntax")
	}
}

// TestThenByNameKeepsTiesInNameOrder: reversing a sort reverses the
// figures, not the order of rows whose figures tie (unknown ones, at first).
func TestThenByNameKeepsTiesInNameOrder(t *testing.T) {
	if thenByName(0, "a", "b", true) >= 0 || thenByName(0, "b", "a", false) <= 0 {
		t.Error("ties are not in name order")
	}
	if thenByName(1, "a", "b", true) >= 0 || thenByName(-1, "a", "b", false) >= 0 {
		t.Error("the figures' order is not followed")
	}
}

// TestOverviewWarnsLagOnRedis: on a real Redis (7: XINFO GROUPS reports
// lag), a group that has not been delivered lagWarnAt entries is a
// warning, and enter on it opens the stream's groups.
func TestOverviewWarnsLagOnRedis(t *testing.T) {
	addr, real := redistest.Addr(t)
	addr = redistest.LeaseDB(t, addr) // a database of its own: only its streams are listed
	raw := redistest.Client(t, addr)
	ctx := context.Background()
	stream := redistest.Unique("lag")
	redistest.DeleteKeys(t, raw, stream)
	pipe := raw.Pipeline()
	for i := range lagWarnAt + 5 {
		pipe.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: []any{"data", i}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := raw.XGroupCreate(ctx, stream, "slow", "0").Err(); err != nil {
		t.Fatal(err)
	}
	b, err := redis.Open(ctx, redis.Config{URL: addr, Options: core.Options{Identity: core.Identity{Group: "console", Client: "lag-test"}, Logger: quiet()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	// The embedded server reports no true lag: the console shows it unknown
	// and must not warn from it.
	node := &Node{Info: NodeInfo{Name: "lag", Client: "lag-test", BrokerKind: "redis", Embedded: !real}, Inspect: b, Publisher: b}
	opts := plainOptions()
	opts.Now = time.Now
	d := newDriver(t, node, opts, 160, 48)
	want := fmt.Sprintf("%s/slow: lag %s (entries not yet delivered to the group)", stream, fmtCount(lagWarnAt+5))
	if !real {
		d.mustNotContain(stream + "/slow: lag")
		return
	}
	d.mustContain(want)
	for range d.m.views[kOverview].(*overviewView).warnings() {
		if strings.Contains(d.view(), "▸ ⚠ "+want) {
			break
		}
		d.keys("down")
	}
	d.keys("enter")
	if d.m.active() != kGroups || d.m.views[kGroups].(*groupsView).stream != stream {
		t.Fatalf("enter on the lag warning opened %s", kindNames[d.m.active()])
	}
}

// TestQuitDoesNotWaitForTheBroker: q ends the console at once while a
// load is stuck on the broker (a request that would wait out its
// deadline): quitting waits for no round trip. The stuck request ends with
// the context the console was given.
func TestQuitDoesNotWaitForTheBroker(t *testing.T) {
	ins, b, gw := fixture()
	ins.gate = make(chan struct{}) // every broker call blocks until released
	opts := plainOptions()
	opts.RequestTimeout = time.Hour
	opts.Refresh = 250 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	opts.Context = ctx
	tm := teatest.NewTestModel(t, New(testNode(ins, b, gw), opts), teatest.WithInitialTermSize(100, 30))
	waitOutput(t, tm, "loading…")
	tm.Send(keyMsg("q"))
	tm.WaitFinished(t, teatest.WithFinalTimeout(time.Minute))
	if n := ins.count("Server"); n != 0 {
		t.Fatalf("the broker answered %d calls: the load was not stuck when the console quit", n)
	}
	// Release the stuck request, and let the refresh timer fire, so that no
	// goroutine outlives the test.
	cancel()
	close(ins.gate)
	time.Sleep(opts.Refresh + 300*time.Millisecond)
}
