package amqp

import (
	"time"
)

// Prefetched deliveries wait in the consumer's work queue for a worker.
// RabbitMQ sends up to Config.Prefetch of them ahead to each subscription,
// for throughput; behind a stalled handler they would wait for as long as
// it is stuck, out of reach of the other clients of the group. So a
// delivery waits at most Options.MessageTimeout: once one has waited that
// long without a worker, the consumer is stalled, and it cancels its
// subscriptions (RabbitMQ sends it nothing more) and gives every waiting
// delivery back to its queue, in order, for the other clients: published
// again to its queue with its delivery count unchanged (no handler saw
// it) and the original acknowledged, as a hand-over does; a dead letter
// with basic.nack (requeue), in place. As soon as a worker is free and
// nothing waits, the consumer subscribes again.

// push queues dl for a worker. One timer watches the oldest waiting
// delivery.
func (c *consumer) push(dl *delivery) {
	q := &c.work
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return // RabbitMQ requeues it when the channel closes
	}
	q.items = append(q.items, dl)
	if q.timer == nil {
		q.timer = time.AfterFunc(c.b.cfg.MessageTimeout, c.giveBackWaiting)
	}
	q.cond.Signal()
}

// pop returns the next delivery for a worker, waiting for one; nil once
// the queue is closed. A worker that finds nothing to do subscribes a
// paused session again.
func (c *consumer) pop() *delivery {
	q := &c.work
	q.mu.Lock()
	for {
		if q.closed {
			q.mu.Unlock()
			return nil
		}
		if len(q.items) > 0 {
			dl := q.items[0]
			q.items[0] = nil
			q.items = q.items[1:]
			q.mu.Unlock()
			return dl
		}
		if s := q.paused; s != nil {
			q.paused = nil
			q.mu.Unlock()
			s.resume()
			q.mu.Lock()
			continue
		}
		q.cond.Wait()
	}
}

// close ends the queue: the workers return, and the deliveries still
// waiting are left to RabbitMQ, which requeues them when their channel
// closes.
func (q *workQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	if q.timer != nil {
		q.timer.Stop()
		q.timer = nil
	}
	q.items = nil
	q.paused = nil
	q.cond.Broadcast()
}

// giveBackWaiting runs when the oldest waiting delivery may have waited
// MessageTimeout for a worker. If it did, the consumer is stalled: it
// pauses the sessions of the waiting deliveries and gives all of them
// back to their queues, in the order they came. Otherwise it watches the
// oldest one still waiting.
func (c *consumer) giveBackWaiting() {
	c.giving.Lock()
	defer c.giving.Unlock()
	q := &c.work
	q.mu.Lock()
	q.timer = nil
	if q.closed || len(q.items) == 0 {
		q.mu.Unlock()
		return
	}
	if left := c.b.cfg.MessageTimeout - time.Since(q.items[0].arrived); left > 0 {
		q.timer = time.AfterFunc(left, c.giveBackWaiting)
		q.mu.Unlock()
		return
	}
	var sessions []*session
	for _, dl := range q.items {
		if !dl.s.isClosing() && (len(sessions) == 0 || sessions[len(sessions)-1] != dl.s) {
			sessions = append(sessions, dl.s)
		}
	}
	q.mu.Unlock()

	// No more deliveries; those RabbitMQ sent before arrive meanwhile.
	for _, s := range sessions {
		s.pause()
	}
	q.mu.Lock()
	waiting := q.items
	q.items = nil
	if len(sessions) > 0 && !q.closed {
		q.paused = sessions[len(sessions)-1]
	}
	q.mu.Unlock()
	c.b.log.Warn("every worker is busy: giving the prefetched messages back to their queues for the other clients",
		"events", c.events, "messages", len(waiting), "waited", c.b.cfg.MessageTimeout)
	for _, dl := range waiting {
		dl.s.giveBack(dl)
	}
	// A worker freed meanwhile found nothing and no paused session yet:
	// wake one to subscribe again.
	q.mu.Lock()
	q.cond.Signal()
	q.mu.Unlock()
}

// giveBack returns a delivery no handler saw to its queue, unless the
// session or consumer is ending (closing the channel requeues it).
func (s *session) giveBack(dl *delivery) {
	s.mu.Lock()
	if s.closing.Load() || s.c.runCtx.Err() != nil {
		s.mu.Unlock()
		return
	}
	s.ops.Add(1)
	s.mu.Unlock()
	defer s.ops.Done()
	dl.giveBack()
}

// giveBack returns dl, which no handler saw, to its queue: a dead letter
// with basic.nack (requeue), in place; any other message published again
// with its delivery count unchanged (a lost delivery RabbitMQ flagged as
// redelivered counted, as recount does) and the original acknowledged,
// or, when that publish fails, with basic.nack (requeue).
func (dl *delivery) giveBack() {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.state != pending || dl.s.ch.IsClosed() {
		return
	}
	log := dl.s.c.b.log.With("event", dl.m.Event, "id", dl.m.ID)
	if dl.dead {
		if err := dl.s.ch.Nack(dl.d.DeliveryTag, false, true); err != nil {
			log.Warn("giving a prefetched dead letter back failed; it returns when the channel closes", "err", err)
			return
		}
		dl.state = handedOver
		return
	}
	if err := dl.republish(dl.m.Deliveries - 1); err != nil {
		// Publishing failed: back in place instead, marked redelivered
		// (which its next client counts as one more delivery).
		if nerr := dl.s.ch.Nack(dl.d.DeliveryTag, false, true); nerr != nil {
			log.Warn("giving a prefetched message back failed; it returns when the channel closes", "err", err, "nack_err", nerr)
			return
		}
		dl.state = handedOver
		log.Debug("publishing a prefetched message again failed; gave it back with basic.nack", "err", err)
	}
}
