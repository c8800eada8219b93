package amqp

import (
	"context"
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
	b.unhandled.ReportDue(ctx, b.log, b.presence.instance(), "no queue is bound to take it",
		func(ctx context.Context, pe core.PresenceEvent) { b.publishPresenceEvent(ctx, "", pe) })
}
