package redis

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	goredis "github.com/redis/go-redis/v9"
)

// Acknowledgements ride on the reads. A consumer's handlers queue their
// acks on the reader that delivered the message; the reader sends what is
// queued as one XACK per stream, pipelined with its next XREADGROUP (which
// then does not block), and signals each Ack once Redis confirmed it. A
// batch of messages thus costs one round trip for its acks and the next
// read together, instead of a read plus a round trip per handful of acks.
// While the reader blocks in XREADGROUP (nothing to read, nothing queued),
// or after it stopped, acks go through the broker's batcher as before, so
// an Ack never waits for a blocking read.

// ackQueue is a reader's queue of acknowledgements.
type ackQueue struct {
	mu      sync.Mutex
	pending []*op
	// direct is set while the reader is in a blocking read and once it has
	// stopped: acks then go through the batcher.
	direct bool
	// wake holds a token while acks are pending, to wake a reader that
	// waits for room.
	wake chan struct{}

	// inline is the reader's connection while the reader runs a handler
	// itself (Concurrency 1): an Ack then sends its XACK over it at once.
	// connMu guards inline and the connection's use by an Ack.
	connMu sync.Mutex
	inline *readConn
	group  string
}

func newAckQueue(group string) *ackQueue {
	return &ackQueue{wake: make(chan struct{}, 1), group: group}
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
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
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

// take returns the queued acks, leaving the queue empty. With block set
// and nothing queued, it marks the queue direct (the reader is about to
// block) and returns nil.
func (q *ackQueue) take(block bool) []*op {
	q.mu.Lock()
	defer q.mu.Unlock()
	ops := q.pending
	q.pending = nil
	if len(ops) == 0 && block {
		q.direct = true
	}
	return ops
}

// queued reports how many acks wait for the reader.
func (q *ackQueue) queued() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
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
