package unhandled

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/spectacles-go/spectacles/core"
)

func TestTally(t *testing.T) {
	var tl Tally
	if d := tl.Due(); len(d) != 0 {
		t.Fatalf("due %v on an empty tally", d)
	}
	tl.Add("A", 2)
	tl.Add("A", 3)
	tl.Add("B", 0)
	if c := tl.Counts(); len(c) != 1 || c["A"] != 5 {
		t.Fatalf("counts %v", c)
	}
	if d := tl.Due(); len(d) != 1 || d[0] != (Report{"A", 5, 5}) {
		t.Fatalf("due %v", d)
	}
	if d := tl.Due(); len(d) != 0 {
		t.Fatalf("due again %v", d)
	}
	tl.Add("A", 1)
	if d := tl.Due(); len(d) != 1 || d[0] != (Report{"A", 1, 6}) {
		t.Fatalf("due %v", d)
	}
}

func TestTallyBounded(t *testing.T) {
	var tl Tally
	for i := range MaxEvents + 5 {
		tl.Add(fmt.Sprint("E", i), 1)
	}
	c := tl.Counts()
	if len(c) != MaxEvents+1 || c[Overflow] != 5 {
		t.Fatalf("%d events, overflow %d", len(c), c[Overflow])
	}
}

// ReportDue publishes one event per event that grew, with the count since
// the previous report and the total, warns only the first time, and
// leaves the reporter's events and calls out.
func TestReportDue(t *testing.T) {
	var tl Tally
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var got []core.PresenceEvent
	publish := func(_ context.Context, pe core.PresenceEvent) { got = append(got, pe) }
	from := core.Instance{Group: "g", Client: "c", Events: []string{"A"}, Calls: []string{"B"}}

	tl.ReportDue(context.Background(), log, from, "no group consumes it", publish)
	if len(got) != 0 {
		t.Fatalf("nothing counted, %d reported", len(got))
	}
	tl.Add("E", 3)
	tl.ReportDue(context.Background(), log, from, "no group consumes it", publish)
	tl.Add("E", 2)
	tl.ReportDue(context.Background(), log, from, "no group consumes it", publish)
	if len(got) != 2 {
		t.Fatalf("%d reports, want 2: %+v", len(got), got)
	}
	first, second := got[0], got[1]
	if first.Event != core.EventUnhandled || first.Unhandled != "E" || first.Count != 3 || first.Total != 3 ||
		second.Count != 2 || second.Total != 5 {
		t.Errorf("reports %+v, %+v", first, second)
	}
	if first.Reason != "published, but no group consumes it" || first.Instance.Events != nil || first.Instance.Calls != nil ||
		first.Instance.Group != "g" {
		t.Errorf("first report %+v", first)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings, want 1 (the first report):\n%s", n, logs.String())
	}
}
