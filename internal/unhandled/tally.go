// Package unhandled keeps a broker's counts of the messages it published
// that no group consumes, and says which of them are due to be reported
// (core.EventUnhandled, at most once per event per interval).
package unhandled

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// MaxEvents bounds the events a Tally keeps apart: the counts of further
// events are kept under Overflow.
const MaxEvents = 10000

// Overflow is the name the counts of events beyond MaxEvents are kept
// under.
const Overflow = "(other events)"

// Tally counts, per event, unhandled publishes. It is safe for concurrent
// use; it is only touched for messages found unhandled, never on the
// publish path of a handled one.
type Tally struct {
	mu       sync.Mutex
	totals   map[string]uint64
	reported map[string]uint64
}

// Add counts n more unhandled messages of event and returns the event's
// total (Overflow's, once MaxEvents events are kept).
func (t *Tally) Add(event string, n uint64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.totals == nil {
		t.totals = map[string]uint64{}
	}
	if _, ok := t.totals[event]; !ok {
		if n == 0 {
			return 0
		}
		if len(t.totals) >= MaxEvents {
			event = Overflow
		}
	}
	t.totals[event] += n
	return t.totals[event]
}

// Counts returns the totals, per event (a new map).
func (t *Tally) Counts() map[string]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]uint64, len(t.totals))
	maps.Copy(out, t.totals)
	return out
}

// Report is one event due to be reported: Count since its previous
// report, Total since the start.
type Report struct {
	Event        string
	Count, Total uint64
}

// Due returns the events whose totals grew since the previous call, and
// marks them reported.
func (t *Tally) Due() []Report {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Report
	for ev, total := range t.totals {
		if t.reported == nil {
			t.reported = map[string]uint64{}
		}
		if prev := t.reported[ev]; total > prev {
			out = append(out, Report{Event: ev, Count: total - prev, Total: total})
			t.reported[ev] = total
		}
	}
	return out
}

// ReportDue logs and publishes one core.EventUnhandled for each event
// whose count grew since the previous report (Due): a warning the first
// time, at debug level after. from is the reporting instance (its Events
// and Calls are left out of the event); nobody says why nobody got the
// messages, as in "no group consumes it".
func (t *Tally) ReportDue(ctx context.Context, log *slog.Logger, from core.Instance, nobody string, publish func(context.Context, core.PresenceEvent)) {
	due := t.Due()
	if len(due) == 0 {
		return
	}
	from.Events, from.Calls = nil, nil
	for _, r := range due {
		level := slog.LevelDebug
		if r.Count == r.Total {
			level = slog.LevelWarn
		}
		log.Log(ctx, level, "published an event, but "+nobody+" (counted in UnhandledCounts and reported as "+core.EventUnhandled+")",
			"event", r.Event, "count", r.Count, "total", r.Total)
		publish(ctx, core.PresenceEvent{Event: core.EventUnhandled, Instance: from,
			Reason: "published, but " + nobody, Unhandled: r.Event, Count: r.Count, Total: r.Total, At: time.Now().UTC()})
	}
}
