package amqp

import (
	"context"
	"log/slog"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// Unhandled publishes: Publish and PublishBatch set the mandatory flag
// (on every publish of an event known to be unrouted, and once per
// interval on the others: see routes in publish.go), so that RabbitMQ
// returns (basic.return) a message no queue is bound to take; every
// return of the broker's exchange is counted, per routing key
// (presence events and dead letters excepted: core.CountsAsUnhandled, and
// calls, which fail with core.ErrUnhandled instead), as
// the publishers drain them after their confirms. Every
// Config.UnhandledInterval (and at Close) each event that gained some is
// reported once, as a core.EventUnhandled published to the exchange and
// logged, and the totals go in the instance's presence announcement
// (core.Instance.Unhandled).

// UnhandledCounts returns, per event, how many messages this broker
// published since it opened that RabbitMQ returned because no queue was
// bound to take them.
func (b *Broker) UnhandledCounts() map[string]uint64 {
	b.pub.drainReturns()
	return b.unhandled.Counts()
}

var _ core.UnhandledCounter = (*Broker)(nil)

func (b *Broker) unhandledEvery() time.Duration {
	if b.cfg.UnhandledInterval == 0 {
		return core.UnhandledInterval
	}
	return b.cfg.UnhandledInterval
}

// unhandledLoop reports every interval until the broker closes.
func (b *Broker) unhandledLoop() {
	defer close(b.unhandledDone)
	every := b.unhandledEvery()
	if every < 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.closeCtx.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(b.closeCtx, max(every, time.Second))
			b.reportUnhandled(ctx)
			cancel()
		}
	}
}

// reportUnhandled publishes a core.EventUnhandled for each event whose
// count grew since its previous report.
func (b *Broker) reportUnhandled(ctx context.Context) {
	b.pub.drainReturns()
	if !b.closed.Load() {
		b.presence.report(ctx)
	}
	due := b.unhandled.Due()
	if len(due) == 0 {
		return
	}
	in := b.presence.instance()
	in.Events, in.Calls = nil, nil
	for _, r := range due {
		// Warned of the first time, then counted quietly.
		level := slog.LevelDebug
		if r.Count == r.Total {
			level = slog.LevelWarn
		}
		b.log.Log(ctx, level, "published an event no queue takes (counted in UnhandledCounts and reported as "+core.EventUnhandled+")", "event", r.Event, "count", r.Count, "total", r.Total)
		b.publishPresenceEvent(ctx, "", core.PresenceEvent{Event: core.EventUnhandled, Instance: in,
			Reason: "published, but no queue is bound to take it", Unhandled: r.Event, Count: r.Count, Total: r.Total,
			At: time.Now().UTC()})
	}
}
