package redis

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Acknowledgements ride on the reads. A consumer's handlers queue their
// acks on the reader that delivered the message; the reader sends what is
// queued as one XACK per stream, pipelined with its next XREADGROUP (which
// then does not block), and signals each Ack once Redis confirmed it.
//
// The reader sends queued acks once they are due (ackQueue.due): when
// every handler still running waits for its ack (nothing more can come
// before they are sent), when the consumer has room for a read anyway, or
// when the oldest has waited ackDelay (a slow handler does not hold back
// the others' acks for longer). With fast handlers a read's messages are
// thus acknowledged by one XACK, pipelined with the next read, and Redis
// gets one round trip per read batch instead of a read plus a round trip
// per handful of acks.
//
// While the reader blocks in XREADGROUP (nothing to read, nothing queued),
// or after it stopped, acks go through the broker's batcher instead, so
// an Ack never waits for a blocking read.

// ackDelay is how long a queued ack waits at most for the acks of the
// handlers still running, to go in the same XACK.
const ackDelay = time.Millisecond

// ackQueue is a reader's queue of acknowledgements.
type ackQueue struct {
	mu      sync.Mutex
	pending []*op
	// direct is set while the reader is in a blocking read and once it has
	// stopped: acks then go through the batcher.
	direct bool
	// since is when the oldest queued ack was queued.
	since time.Time
	// wake holds a token when acks may be due, to wake a reader that
	// waits for room: when the first is queued, and when the acks queued
	// catch up with the handlers running.
	wake chan struct{}
	// waiting counts the acks queued on all the consumer's queues, and
	// running the consumer's handlers that are running (consumer.handle).
	waiting, running *atomic.Int32
	// delay is how long the oldest queued ack waits at most (ackDelay).
	delay time.Duration

	// inline is the reader's connection while the reader runs a handler
	// itself (Concurrency 1): an Ack then sends its XACK over it at once.
	// connMu guards inline and the connection's use by an Ack.
	connMu sync.Mutex
	inline *readConn
	group  string
}

func newAckQueue(group string, waiting, running *atomic.Int32, delay time.Duration) *ackQueue {
	return &ackQueue{wake: make(chan struct{}, 1), group: group, waiting: waiting, running: running, delay: delay}
}

// inlineDo runs f, a handler the reader runs itself, with acks going
// straight over rc meanwhile. Once it returns no Ack uses rc any more.
func (q *ackQueue) inlineDo(rc *readConn, f func()) {
	q.connMu.Lock()
	q.inline = rc
	q.connMu.Unlock()
	defer func() {
		q.connMu.Lock()
		q.inline = nil
		q.connMu.Unlock()
	}()
	f()
}

// ackInline sends the XACK of id over the reader's connection when the
// reader runs a handler itself, and reports whether it did.
func (q *ackQueue) ackInline(stream, id string) (bool, error) {
	q.connMu.Lock()
	defer q.connMu.Unlock()
	if q.inline == nil {
		return false, nil
	}
	return true, q.inline.ack(q.group, stream, id)
}

// ack queues the acknowledgement of id in stream and waits until the
// reader sent it and Redis answered. It reports false, having done
// nothing, when the reader cannot take it (it blocks or has stopped): the
// caller then acks through the batcher.
func (q *ackQueue) ack(ctx context.Context, bt *batcher, stream, id string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return true, err
	}
	if ok, err := q.ackInline(stream, id); ok {
		return true, err
	}
	q.mu.Lock()
	if q.direct {
		q.mu.Unlock()
		return false, nil
	}
	o := bt.get()
	o.kind, o.ctx, o.stream, o.id = opXAck, ctx, stream, id
	q.pending = append(q.pending, o)
	first := len(q.pending) == 1
	if first {
		q.since = time.Now()
	}
	q.mu.Unlock()
	if n := q.waiting.Add(1); first || n >= q.running.Load() {
		q.notify()
	}
	select {
	case <-o.done:
		err := o.err
		bt.put(o)
		return true, err
	case <-ctx.Done():
		// Never sent, or sent and not yet answered: either way the caller
		// stops waiting, and o may still be in use by the reader.
		atomic.CompareAndSwapInt32(&o.state, opQueued, opDropped)
		return true, ctx.Err()
	}
}

// notify wakes the reader if it waits.
func (q *ackQueue) notify() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns the queued acks, leaving the queue empty. With block set
// and nothing queued, it marks the queue direct (the reader is about to
// block) and returns nil.
func (q *ackQueue) take(block bool) []*op {
	q.mu.Lock()
	defer q.mu.Unlock()
	ops := q.pending
	q.pending = nil
	q.waiting.Add(-int32(len(ops)))
	if len(ops) == 0 && block {
		q.direct = true
	}
	return ops
}

// due reports whether the queued acks should be sent now: some are queued
// and every running handler waits for its ack, or the oldest has waited
// its delay. When they are not due yet, at is when they will be (zero when
// none are queued).
func (q *ackQueue) due() (due bool, at time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return false, time.Time{}
	}
	at = q.since.Add(q.delay)
	return q.waiting.Load() >= q.running.Load() || !time.Now().Before(at), at
}

// setDirect sets whether acks bypass the reader.
func (q *ackQueue) setDirect(direct bool) {
	q.mu.Lock()
	q.direct = direct
	q.mu.Unlock()
}

// streamAcks are the acks of one stream that a reader sends as one XACK.
type streamAcks struct {
	stream string
	ops    []*op
}

// groupAcks groups the ops still wanted by stream, in the order their
// streams first appear, marking them sent; an op its caller dropped is
// left out (and never signalled).
func groupAcks(ops []*op) []streamAcks {
	var groups []streamAcks
	for _, o := range ops {
		if !atomic.CompareAndSwapInt32(&o.state, opQueued, opSending) {
			continue // its caller stopped waiting: not sent
		}
		i := 0
		for i < len(groups) && groups[i].stream != o.stream {
			i++
		}
		if i == len(groups) {
			groups = append(groups, streamAcks{stream: o.stream})
		}
		groups[i].ops = append(groups[i].ops, o)
	}
	return groups
}

// settle signals each op of g with err, its XACK's result.
func (g streamAcks) settle(err error) {
	for _, o := range g.ops {
		o.err = err
		o.done <- struct{}{}
	}
}

// settleGroups signals every op of groups with err.
func settleGroups(groups []streamAcks, err error) {
	for _, g := range groups {
		g.settle(err)
	}
}

// pipeAcks appends to pipe one XACK per group and returns their commands.
func pipeAcks(ctx context.Context, pipe goredis.Pipeliner, group string, groups []streamAcks) []*goredis.IntCmd {
	cmds := make([]*goredis.IntCmd, len(groups))
	for i, g := range groups {
		ids := make([]string, len(g.ops))
		for j, o := range g.ops {
			ids[j] = o.id
		}
		cmds[i] = pipe.XAck(ctx, g.stream, group, ids...)
	}
	return cmds
}

// settlePiped signals each group with its XACK's result; err, when set,
// is the pipeline's failure for commands that have none. A nil reply
// (goredis.Nil) is the pipelined read's, which found nothing: not an
// ack's failure.
func settlePiped(groups []streamAcks, cmds []*goredis.IntCmd, err error) {
	if errors.Is(err, goredis.Nil) {
		err = nil
	}
	for i, g := range groups {
		cerr := cmds[i].Err()
		if cerr == nil {
			cerr = err
		}
		g.settle(cerr)
	}
}

// sendAcks acknowledges ops through client on their own, for acks queued
// when the reader stopped.
func sendAcks(ctx context.Context, client goredis.UniversalClient, group string, ops []*op) {
	groups := groupAcks(ops)
	if len(groups) == 0 {
		return
	}
	pipe := client.Pipeline()
	cmds := pipeAcks(ctx, pipe, group, groups)
	_, err := pipe.Exec(ctx)
	settlePiped(groups, cmds, err)
}
