package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
)

// Batching of XADD and XACK. Callers put an op on a channel and wait for
// it; a few flusher goroutines each take whatever is queued (up to
// maxBatch) and run it as one pipeline, so that concurrent callers share
// round trips while a lone caller waits for no timer. Several flushers let
// several pipelines be in flight at once.
const (
	maxBatch   = 512
	queueDepth = 4 * maxBatch
)

type opKind uint8

const (
	opXAdd opKind = iota // XADD stream [trim] * data payload
	opXAck               // XACK stream group id
)

// op is one queued command and, once done is signalled, its result.
type op struct {
	kind   opKind
	ctx    context.Context
	stream string
	data   []byte // opXAdd: the payload
	id     string // opXAck: the entry id
	// call marks the XADD of a call: not counted as an unhandled publish
	// (a call nobody reads fails with core.ErrUnhandled instead).
	call bool

	result string // opXAdd: the new entry id
	err    error
	done   chan struct{} // capacity 1; signalled once per use
	// state is opQueued until a flusher takes the op to send it
	// (opSending) or drops it unsent because its context ended
	// (opDropped, also set by a caller that stops waiting first). A
	// dropped op is never signalled.
	state int32
}

const (
	opQueued int32 = iota
	opSending
	opDropped
)

// payloadArg hands an op's payload to go-redis without boxing a slice.
type payloadArg op

// MarshalBinary returns the payload.
func (p *payloadArg) MarshalBinary() ([]byte, error) { return p.data, nil }

type batcher struct {
	b    *Broker
	ch   chan *op
	pool sync.Pool

	mu      sync.RWMutex // held shared while sending on ch; exclusively to close it
	stopped bool
	wg      sync.WaitGroup
	// sending counts the flushers with a pipeline in flight.
	sending atomic.Int32
}

func newBatcher(b *Broker) *batcher {
	bt := &batcher{b: b, ch: make(chan *op, queueDepth)}
	bt.pool.New = func() any { return &op{done: make(chan struct{}, 1)} }
	// Two pipelines in flight are best on two cores; more cores keep more
	// in flight.
	for i := range flushers() {
		bt.wg.Add(1)
		go bt.run(b.unhandled.shards[i])
	}
	return bt
}

// flushers is how many flusher goroutines a batcher runs.
func flushers() int { return min(max(runtime.GOMAXPROCS(0), 2), 8) }

func (bt *batcher) get() *op { return bt.pool.Get().(*op) }

// put recycles an op whose done signal has been received.
func (bt *batcher) put(o *op) {
	*o = op{done: o.done}
	bt.pool.Put(o)
}

// do queues o and waits for its result. When do returns an error other
// than o.err, o may still be in use by a flusher and must not be recycled.
func (bt *batcher) do(ctx context.Context, o *op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o.ctx = ctx
	bt.mu.RLock()
	if bt.stopped {
		bt.mu.RUnlock()
		return core.ErrClosed
	}
	select {
	case bt.ch <- o:
	case <-ctx.Done():
		bt.mu.RUnlock()
		return ctx.Err()
	}
	bt.mu.RUnlock()
	select {
	case <-o.done:
		return o.err
	case <-ctx.Done():
		if atomic.CompareAndSwapInt32(&o.state, opQueued, opDropped) || atomic.LoadInt32(&o.state) == opDropped {
			return ctx.Err() // never sent
		}
		if o.kind == opXAdd {
			return fmt.Errorf("%w: %w", core.ErrPublishUncertain, ctx.Err())
		}
		return ctx.Err()
	}
}

// publishError marks err, the failure of an XADD, with
// core.ErrPublishUncertain unless it shows that the command was not
// carried out: Redis answered with an error, or the command never left
// (no connection could be dialled or taken from the pool, the client was
// closed, or its context ended before a connection was found). Any other
// failure (a timeout reading the reply, a connection reset or closed after
// the write) may have come after Redis added the entry.
func publishError(err error) error {
	if err == nil || !mayHaveSent(err) {
		return err
	}
	return fmt.Errorf("%w: %w", core.ErrPublishUncertain, err)
}

func mayHaveSent(err error) bool {
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		return false
	}
	switch {
	case errors.Is(err, goredis.ErrPoolTimeout), errors.Is(err, goredis.ErrPoolExhausted),
		errors.Is(err, goredis.ErrClosed), errors.Is(err, core.ErrClosed),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	return true
}

// ack XACKs id in stream for the broker's group, returning once Redis
// confirmed.
func (bt *batcher) ack(ctx context.Context, stream, id string) error {
	o := bt.get()
	o.kind = opXAck
	o.stream = stream
	o.id = id
	if err := bt.do(ctx, o); err != nil {
		return err
	}
	bt.put(o)
	return nil
}

// stop lets the flushers finish what is queued, then waits for them.
// Later ops fail with core.ErrClosed.
func (bt *batcher) stop() {
	bt.mu.Lock()
	if !bt.stopped {
		bt.stopped = true
		close(bt.ch)
	}
	bt.mu.Unlock()
	bt.wg.Wait()
}

func (bt *batcher) run(published *pubShard) {
	defer bt.wg.Done()
	f := &flusher{
		b:         bt.b,
		published: published,
		pipe:      bt.b.client.Pipeline(),
		acks:      make(map[string]*ackGroup),
	}
	batch := make([]*op, 0, maxBatch)
	for o := range bt.ch {
		batch = append(batch[:0], o)
		batch = bt.fill(batch)
		if len(batch) < maxBatch && (len(batch) > 1 || bt.sending.Load() > 0) {
			// Others are queueing too, or another flusher's pipeline is in
			// flight (its callers, once answered, queue again): let them
			// run once so that this pipeline carries more. A lone op with
			// nothing else under way is sent at once.
			runtime.Gosched()
			batch = bt.fill(batch)
		}
		bt.sending.Add(1)
		f.flush(batch)
		bt.sending.Add(-1)
		clear(batch)
	}
}

// fill adds to batch what is queued, without waiting.
func (bt *batcher) fill(batch []*op) []*op {
	for len(batch) < maxBatch {
		select {
		case o, ok := <-bt.ch:
			if !ok {
				return batch
			}
			batch = append(batch, o)
		default:
			return batch
		}
	}
	return batch
}

// flusher is one flushing goroutine's reusable state.
type flusher struct {
	b    *Broker
	pipe goredis.Pipeliner
	cmds []goredis.Cmder
	args []any // backing store for the commands' arguments
	acks map[string]*ackGroup
	// published counts the entries this flusher added, per stream
	// (unhandled.go).
	published *pubShard
	// ackOrder lists the streams of acks in the order first seen.
	ackOrder []string
	spare    []*ackGroup
}

// ackGroup is the XACK of one stream in a batch.
type ackGroup struct {
	cmd *goredis.IntCmd
	ops []*op
}

// arg appends vs to f.args and returns them as one command's arguments.
func (f *flusher) arg(vs ...any) []any {
	start := len(f.args)
	f.args = append(f.args, vs...)
	return f.args[start:len(f.args):len(f.args)]
}

func (f *flusher) flush(batch []*op) {
	ctx := context.Background()
	f.cmds = f.cmds[:0]
	f.args = f.args[:0]
	cfg := &f.b.cfg
	group := cfg.Identity.Group

	var trim []any
	if kind, threshold := cfg.trim(time.Now()); kind != "" {
		trim = []any{kind, "~", threshold}
	}

	live := 0
	for i, o := range batch {
		// A caller that stopped waiting may no longer want it sent.
		if o.ctx.Err() != nil {
			atomic.CompareAndSwapInt32(&o.state, opQueued, opDropped)
		}
		if !atomic.CompareAndSwapInt32(&o.state, opQueued, opSending) {
			batch[i] = nil // dropped unsent; its caller returned
			continue
		}
		live++
		switch o.kind {
		case opXAdd:
			var args []any
			if trim == nil {
				args = f.arg("xadd", &o.stream, "*", "data", (*payloadArg)(o))
			} else {
				args = f.arg("xadd", &o.stream, trim[0], trim[1], trim[2], "*", "data", (*payloadArg)(o))
			}
			f.cmds = append(f.cmds, goredis.NewStringCmd(ctx, args...))
		case opXAck:
			g := f.acks[o.stream]
			if g == nil {
				if n := len(f.spare); n > 0 {
					g, f.spare = f.spare[n-1], f.spare[:n-1]
				} else {
					g = &ackGroup{}
				}
				f.acks[o.stream] = g
				f.ackOrder = append(f.ackOrder, o.stream)
			}
			g.ops = append(g.ops, o)
		}
	}
	if live == 0 {
		return
	}
	for _, stream := range f.ackOrder {
		g := f.acks[stream]
		start := len(f.args)
		f.args = append(f.args, "xack", &g.ops[0].stream, group)
		for _, o := range g.ops {
			f.args = append(f.args, &o.id)
		}
		g.cmd = goredis.NewIntCmd(ctx, f.args[start:len(f.args):len(f.args)]...)
		f.cmds = append(f.cmds, g.cmd)
	}

	if len(f.cmds) == 1 {
		_ = f.b.client.Process(ctx, f.cmds[0])
	} else {
		_ = f.pipe.BatchProcess(ctx, f.cmds...)
		_, _ = f.pipe.Exec(ctx)
	}

	// Deliver: XADDs in batch order, then each stream's acks.
	n := 0
	f.published.mu.Lock()
	for _, o := range batch {
		if o == nil || o.kind != opXAdd {
			continue
		}
		cmd := f.cmds[n].(*goredis.StringCmd)
		n++
		o.result, o.err = cmd.Result()
		o.err = publishError(o.err)
		if o.err == nil && !o.call {
			f.published.addLocked(o.stream, 1)
		}
		o.done <- struct{}{}
	}
	f.published.mu.Unlock()
	for _, stream := range f.ackOrder {
		g := f.acks[stream]
		err := g.cmd.Err()
		for i, o := range g.ops {
			o.err = err
			o.done <- struct{}{}
			g.ops[i] = nil
		}
		g.ops = g.ops[:0]
		g.cmd = nil
		f.spare = append(f.spare, g)
		delete(f.acks, stream)
	}
	f.ackOrder = f.ackOrder[:0]
	clear(f.cmds)
	clear(f.args)
}
