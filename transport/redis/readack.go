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
}

func newAckQueue() *ackQueue { return &ackQueue{wake: make(chan struct{}, 1)} }

// ack queues the acknowledgement of id in stream and waits until the
// reader sent it and Redis answered. It reports false, having done
// nothing, when the reader cannot take it (it blocks or has stopped): the
// caller then acks through the batcher.
func (q *ackQueue) ack(ctx context.Context, bt *batcher, stream, id string) (bool, error) {
	if err := ctx.Err(); err != nil {
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

// ackCmds appends to pipe one XACK per stream for the ops still wanted
// (marking them sent) and returns, per op, its command: nil for an op its
// caller dropped.
func ackCmds(ctx context.Context, pipe goredis.Pipeliner, group string, ops []*op) []*goredis.IntCmd {
	cmds := make([]*goredis.IntCmd, len(ops))
	byStream := make(map[string][]int, 1)
	var order []string
	for i, o := range ops {
		if !atomic.CompareAndSwapInt32(&o.state, opQueued, opSending) {
			continue // its caller stopped waiting: not sent
		}
		if _, ok := byStream[o.stream]; !ok {
			order = append(order, o.stream)
		}
		byStream[o.stream] = append(byStream[o.stream], i)
	}
	for _, stream := range order {
		idx := byStream[stream]
		ids := make([]string, len(idx))
		for j, i := range idx {
			ids[j] = ops[i].id
		}
		cmd := pipe.XAck(ctx, stream, group, ids...)
		for _, i := range idx {
			cmds[i] = cmd
		}
	}
	return cmds
}

// settleAcks signals each sent op with its XACK's result; err, when set,
// is the pipeline's failure for ops whose command has none. A nil reply
// (goredis.Nil) is the pipelined read's, which found nothing: not an ack's
// failure.
func settleAcks(ops []*op, cmds []*goredis.IntCmd, err error) {
	if errors.Is(err, goredis.Nil) {
		err = nil
	}
	for i, o := range ops {
		if cmds[i] == nil {
			continue // dropped unsent: never signalled
		}
		o.err = cmds[i].Err()
		if o.err == nil && err != nil {
			o.err = err
		}
		o.done <- struct{}{}
	}
}

// sendAcks acknowledges ops through client on their own, for acks queued
// when the reader stopped.
func sendAcks(ctx context.Context, client goredis.UniversalClient, group string, ops []*op) {
	if len(ops) == 0 {
		return
	}
	pipe := client.Pipeline()
	cmds := ackCmds(ctx, pipe, group, ops)
	_, err := pipe.Exec(ctx)
	settleAcks(ops, cmds, err)
}
