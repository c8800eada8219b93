package redis

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/retry"
)

const (
	// dataField is the stream entry field holding the payload.
	dataField = "data"
	// maxClaimRounds bounds the XAUTOCLAIM calls on one stream in one pass.
	maxClaimRounds = 1000
	// settleTimeout bounds the driver's own dead-lettering and acks.
	settleTimeout = 10 * time.Second
)

// Consume creates this client's group on each event's stream (XGROUP
// CREATE {event} {group} 0 MKSTREAM; at $ instead of 0 when ctx carries
// core.WithNewGroupsAtEnd) and returns; in the background it
// reads the streams with XREADGROUP, takes over messages left idle longer
// than MessageTimeout (XAUTOCLAIM), dead-letters those delivered more than
// MaxDeliveries times, and runs h on up to Options.Concurrency goroutines,
// until ctx is cancelled or the broker closes. Handlers get a context that
// is never cancelled, so that a draining handler can still settle its
// message; Close waits for them. Consume needs a valid Options.Identity.
//
// It holds no more than 2×Concurrency unacknowledged messages,
// Concurrency running and as many queued behind them, or, when its
// handlers are fast, as many as they finish in about 10 ms, up to
// Config.ReadCount (holdLimit); reads ask for no more than that leaves
// room for, spread over the streams. A message thus waits in the client
// for about one handler's time or 10 ms at most, and stream order holds
// with Concurrency 1. Acks ride on the reads: those
// queued while the reader does not block go in one XACK per stream,
// pipelined before its next XREADGROUP (readack.go), and Ack returns once
// Redis confirmed. A message this client holds, waiting for a handler or
// being handled, is never taken over by this client itself nor counted as
// a new delivery; its idle time is refreshed every MessageTimeout/4
// (XCLAIM ... RETRYCOUNT n JUSTID, which keeps its delivery count), so that
// other clients take it over only when this client has died or lost Redis
// for MessageTimeout. A handler may thus run longer than MessageTimeout
// without its message being handled twice; a handler that hangs holds its
// message until the process ends. If another client did take a message
// over (this one lost Redis for that long), the next refresh claims it
// back while it runs here: both may handle it, and the first Ack settles
// it for the group.
//
// Each Consume call reads on a connection of its own (one per stream on
// Redis Cluster), outside the client's pool, so that any number of Consume
// calls leave the pool to publishes, acknowledgements and reclaims.
//
// Messages of a dead-letter event (core.IsDeadLetterEvent) are never
// dead-lettered again: past MaxDeliveries they are redelivered, and
// Reject fails and leaves them pending (see settler.DeadLetter).
func (b *Broker) Consume(ctx context.Context, events []string, h core.Handler) error {
	if b.closed.Load() {
		return core.ErrClosed
	}
	if h == nil {
		return errors.New("redis: consume: nil handler")
	}
	if err := b.cfg.Identity.Validate(); err != nil {
		return fmt.Errorf("redis: consume: %w", err)
	}
	streams, err := core.ConsumeEvents(events)
	if err != nil {
		return fmt.Errorf("redis: consume: %w", err)
	}
	start := "0"
	if core.NewGroupsAtEnd(ctx) {
		start = "$"
	}
	if err := b.createGroups(ctx, streams, start); err != nil {
		if b.closed.Load() {
			return core.ErrClosed
		}
		return fmt.Errorf("redis: consume: %w", err)
	}
	if !b.beginConsumer() {
		return core.ErrClosed
	}
	c := &consumer{
		b:       b,
		streams: streams,
		h:       h,
		hctx:    context.WithoutCancel(ctx),
		settler: &settler{b: b},
		hold:    newHoldLimit(b.cfg.Concurrency, b.cfg.ReadCount),
	}
	// Readers never wait to queue a message they took: the workers drain
	// work until it closes, and it holds twice what the consumer may hold
	// (a read and a reclaim may each take up to the room they saw).
	c.work = make(chan *core.Message, 2*c.hold.max)
	c.settler.c = c
	c.start(ctx)
	b.presence.consumed(ctx, streams)
	return nil
}

// createGroups creates the broker's group on each stream, at id start: 0
// so that a new group sees the stream's history, $ so that it sees only
// what comes next. An existing group is kept.
func (b *Broker) createGroups(ctx context.Context, streams []string, start string) error {
	group := b.cfg.Identity.Group
	pipe := b.client.Pipeline()
	cmds := make([]*goredis.StatusCmd, len(streams))
	for i, s := range streams {
		cmds[i] = pipe.XGroupCreateMkStream(ctx, s, group, start)
	}
	_, _ = pipe.Exec(ctx)
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return fmt.Errorf("create group %s on %s: %w", group, streams[i], err)
		}
	}
	return nil
}

func isNoGroup(err error) bool {
	return err != nil && strings.Contains(err.Error(), "NOGROUP")
}

// consumer is one Consume call's background machinery.
type consumer struct {
	b       *Broker
	streams []string
	h       core.Handler
	hctx    context.Context // handlers' context: never cancelled
	runCtx  context.Context // ends when Consume's ctx ends or the broker closes
	work    chan *core.Message
	settler *settler
	// acks is, by stream, the ack queue of the reader that reads it
	// (readack.go); set before the readers start, read-only after.
	acks map[string]*ackQueue

	mu       sync.Mutex
	inflight int           // messages taken and not yet finished: queued or running
	freed    chan struct{} // while readers wait for room: closed once there is
	hold     holdLimit     // how many messages the consumer may hold
	// inline is set when the reader runs the handler itself (Concurrency
	// 1, one reader on a single server); work then holds only reclaimed
	// messages, which the reader handles too, and wakeReader ends its
	// blocking read so that it does so at once.
	inline     bool
	wakeReader func()
}

// handle runs the handler on m, unless the consumer stopped (m is then
// left pending, for redelivery), and ends m's hold.
func (c *consumer) handle(m *core.Message) {
	if c.runCtx.Err() == nil {
		core.RunHandler(c.hctx, c.b.log, c.h, m)
	}
	c.done(m)
}

// room returns how many more messages the consumer may take now (see
// holdLimit).
func (c *consumer) room() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hold.limit - c.inflight
}

// waitRoom waits until no more than half the hold limit is held, or until
// acks are queued on q (inline, it does not wait), and returns how many more messages the consumer
// may take (not counting the queued acks' messages) and the limit then.
// Readers thus read again once at least half the limit fits, not once per
// finished handler.
func (c *consumer) waitRoom(ctx context.Context, q *ackQueue) (room, limit int, ok bool) {
	for {
		c.mu.Lock()
		c.hold.adapt(time.Now())
		limit := c.hold.limit
		// Inline, the reader itself finishes what the consumer holds: it
		// never waits for room.
		if c.inline || c.inflight <= limit/2 {
			n := limit - c.inflight
			c.mu.Unlock()
			return n, limit, true
		}
		if c.freed == nil {
			c.freed = make(chan struct{})
		}
		freed := c.freed
		n := limit - c.inflight
		c.mu.Unlock()
		select {
		case <-freed:
		case <-q.wake:
			return n, limit, true
		case <-ctx.Done():
			return 0, limit, false
		}
	}
}

// holdBudget is how long, at the rate its handlers finish messages, the
// messages a consumer holds beyond 2×Concurrency may wait for a handler.
const holdBudget = 10 * time.Millisecond

// holdLimit bounds the messages a consumer holds unacknowledged (running,
// and queued behind them): 2×Concurrency, or as many as its handlers
// finish in holdBudget when that is more, up to max. A message thus waits
// in the client for about one handler's time, or holdBudget, at most
// (with handlers of a few milliseconds and more, 2×Concurrency is the
// limit: Concurrency running and as many behind them), while fast
// handlers are fed by reads of hundreds of entries, one round trip each.
type holdLimit struct {
	limit    int // the current limit
	min, max int
	finished int64     // messages finished so far
	at       time.Time // when the rate was last measured
	atCount  int64     // finished then
}

func newHoldLimit(concurrency, most int) holdLimit {
	return holdLimit{limit: 2 * concurrency, min: 2 * concurrency, max: max(most, 2*concurrency)}
}

// adapt measures the finishing rate every few milliseconds and sets the
// limit from it.
func (h *holdLimit) adapt(now time.Time) {
	if h.at.IsZero() {
		h.at, h.atCount = now, h.finished
		return
	}
	elapsed := now.Sub(h.at)
	if elapsed < holdBudget {
		return
	}
	done := h.finished - h.atCount
	h.at, h.atCount = now, h.finished
	target := int(float64(done) * float64(holdBudget) / float64(elapsed))
	// Rise at once, fall by half at most per measure: a pause in the
	// traffic does not drop the limit to the floor.
	h.limit = min(max(target, h.limit/2, h.min), h.max)
}

// take marks m held by this consumer. It is false when some consumer of
// the broker holds m already (this client's XAUTOCLAIM took it again); m
// must then not be delivered.
func (c *consumer) take(m *core.Message) bool {
	if !c.b.held.add(m.Event, m.ID, c, m.Deliveries) {
		return false
	}
	c.mu.Lock()
	c.inflight++
	c.mu.Unlock()
	return true
}

// takeAll is take for each message of msgs, at once: it returns those
// taken (msgs, filtered in place).
func (c *consumer) takeAll(msgs []*core.Message) []*core.Message {
	msgs = c.b.held.addAll(msgs, c)
	c.mu.Lock()
	c.inflight += len(msgs)
	c.mu.Unlock()
	return msgs
}

// done ends the hold of a message that take accepted.
func (c *consumer) done(m *core.Message) {
	c.b.held.remove(m.Event, m.ID)
	c.mu.Lock()
	c.inflight--
	c.hold.finished++
	if c.freed != nil && c.inflight <= c.hold.limit/2 {
		close(c.freed) // wake the readers
		c.freed = nil
	}
	c.mu.Unlock()
}

func (c *consumer) start(ctx context.Context) {
	runCtx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(c.b.closeCtx, cancel)
	c.runCtx = runCtx

	var readers []*reader
	if c.b.cluster {
		// Streams may live on different nodes: one reader each.
		for _, s := range c.streams {
			readers = append(readers, newReader(c, []string{s}))
		}
	} else {
		readers = append(readers, newReader(c, c.streams))
	}
	c.acks = make(map[string]*ackQueue, len(c.streams))
	for _, r := range readers {
		for _, st := range r.args.Streams[:len(r.args.Streams)/2] {
			c.acks[st] = r.acks
		}
	}
	// With Concurrency 1 on a single server the one reader runs the
	// handler itself, and the handler's Ack goes straight over the
	// reader's connection: no handoff between goroutines per message.
	_, single := c.b.client.(*goredis.Client)
	c.inline = c.b.cfg.Concurrency == 1 && single && len(readers) == 1
	workers := c.b.cfg.Concurrency
	if c.inline {
		workers = 0
		c.wakeReader = readers[0].unblock
	}
	var handlers sync.WaitGroup
	for range workers {
		handlers.Go(func() {
			for m := range c.work {
				c.handle(m)
			}
		})
	}

	var loops sync.WaitGroup
	for _, r := range readers {
		loops.Go(r.run)
	}
	loops.Go(c.reclaimLoop)
	// Held messages are refreshed until the last handler has returned, so
	// that a draining handler keeps its message too.
	handlersDone := make(chan struct{})
	var refresh sync.WaitGroup
	refresh.Go(func() { c.refreshLoop(handlersDone) })

	go func() {
		defer c.b.consumers.Done()
		<-runCtx.Done()
		stopOnClose()
		cancel()
		for _, r := range readers {
			r.interrupt()
		}
		loops.Wait()
		close(c.work)
		if c.inline {
			for m := range c.work {
				c.done(m) // stopped: left pending, for redelivery
			}
		}
		handlers.Wait()
		close(handlersDone)
		refresh.Wait()
	}()
}

// reader runs XREADGROUP for some streams, on a client of its own (see
// Broker.newReaderClient).
type reader struct {
	c    *consumer
	args goredis.XReadGroupArgs
	// now is args without BLOCK: a read that returns at once, pipelined
	// after the queued acks.
	now  goredis.XReadGroupArgs
	acks *ackQueue
	done chan struct{}
	// batch is hold's buffer, and block the messages it builds (one
	// allocation per core.MessageBlockLen messages).
	batch []*core.Message
	block core.MessageBlock

	mu     sync.Mutex
	connID int64 // CLIENT ID of the reader's connection; 0 when unknown
}

func newReader(c *consumer, streams []string) *reader {
	ids := make([]string, 0, 2*len(streams))
	ids = append(ids, streams...)
	for range streams {
		ids = append(ids, ">")
	}
	r := &reader{
		c: c,
		args: goredis.XReadGroupArgs{
			Group:    c.b.cfg.Identity.Group,
			Consumer: c.b.cfg.Identity.Client,
			Streams:  ids,
			Block:    c.b.cfg.Block,
		},
		acks: newAckQueue(c.b.cfg.Identity.Group),
		done: make(chan struct{}),
	}
	r.now = r.args
	r.now.Block = -1 // no BLOCK argument
	return r
}

// readCount is the COUNT of a read when the consumer has room for room
// messages: spread over all the consumer's streams, so that one read
// returns fewer than room + streams entries, and never above
// Config.ReadCount.
func (r *reader) readCount(room int) int64 {
	n := len(r.c.streams)
	return int64(min((room+n-1)/n, r.c.b.cfg.ReadCount))
}

func (r *reader) run() {
	defer close(r.done)
	c := r.c
	ctx := c.runCtx
	client, owned := c.b.newReaderClient()
	var (
		bo      retry.Backoff
		rc      *readConn // the reader's own connection, on a single server
		entries []entry
	)
	defer func() {
		// Acks queued from now on go through the batcher; those queued
		// already are sent here, through the broker's client.
		r.acks.setDirect(true)
		sctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		sendAcks(sctx, c.b.client, r.args.Group, r.acks.take(false))
		cancel()
		if rc != nil {
			_ = rc.Close()
		}
		if owned {
			_ = client.Close()
		}
	}()
	node, single := client.(*goredis.Client)
	single = single && owned
	for ctx.Err() == nil {
		if single && rc == nil {
			// A connection of the reader's own, whose blocking read Close
			// can interrupt with CLIENT UNBLOCK.
			var err error
			if rc, err = dialReadConn(ctx, node.Options()); err != nil {
				rc = nil
				if ctx.Err() != nil {
					return
				}
				c.b.log.Warn("connecting the stream reader failed; retrying", "streams", c.streams, "err", err)
				if !retry.Sleep(ctx, bo.Next()) {
					return
				}
				continue
			}
			r.setConnID(rc.id)
		}
		if c.inline {
			// Only with a connection: a handler run here acks over it (with
			// none, its Ack would wait for this very goroutine).
			r.handleReclaimed(rc)
		}
		room, limit, ok := c.waitRoom(ctx, r.acks)
		if !ok {
			return
		}
		if c.inline && room <= 0 {
			continue // the reclaim loop filled the room meanwhile
		}
		if r.acks.queued() > 0 {
			// Acks are queued: let the other handlers that are about to ack
			// run once, so that this round trip carries theirs too (as the
			// batcher lets its callers run before it flushes).
			runtime.Gosched()
		}
		acks := r.acks.take(false)
		if len(acks) == 0 {
			if limit-room > limit/2 {
				continue // woken by acks that an earlier pass took
			}
			// Nothing queued: block in XREADGROUP, with acks going through
			// the batcher meanwhile.
			acks = r.acks.take(true)
		}
		// The queued acks, and a read: a blocking one when nothing is
		// queued, else one that does not block, when the consumer has room
		// once their messages are done (Redis runs the XACK before the
		// read).
		var read *goredis.XReadGroupArgs
		if len(acks) == 0 {
			r.args.Count = r.readCount(room)
			read = &r.args
		} else if room += len(acks); limit-room <= limit/2 {
			r.now.Count = r.readCount(room)
			read = &r.now
		}
		groups := groupAcks(acks)
		var err error
		switch {
		case read == nil && len(groups) == 0:
			continue // every queued ack was dropped by its caller
		case rc != nil:
			entries, err = rc.exchange(r.args.Group, groups, read, entries[:0])
		default:
			entries, err = r.exchange(ctx, client, groups, read, entries[:0])
		}
		if len(acks) == 0 {
			r.acks.setDirect(false)
		}
		switch {
		case err == nil:
			bo.Reset()
			msgs := r.hold(entries)
			if c.inline {
				r.handleInline(rc, msgs)
			} else {
				for _, m := range msgs {
					c.work <- m // never blocks long: the workers drain work until it closes
				}
			}
			clear(msgs)
		case errors.Is(err, goredis.Nil):
			bo.Reset() // BLOCK ran out, CLIENT UNBLOCK, or nothing to read now
		case ctx.Err() != nil:
			return
		case isNoGroup(err):
			// The server restarted empty or the stream was deleted.
			c.b.log.Warn("consumer group missing; creating it again", "streams", c.streams, "group", r.args.Group)
			// At 0 even for a group first made at $: the stream was
			// deleted or the server restarted empty, so everything on it
			// is newer than this consumer.
			if err := c.b.createGroups(ctx, c.streams, "0"); err != nil {
				c.b.log.Warn("creating consumer groups failed", "err", err)
				if !retry.Sleep(ctx, bo.Next()) {
					return
				}
			}
		default:
			c.b.log.Warn("reading streams failed; retrying", "streams", c.streams, "err", err)
			if rc != nil {
				r.setConnID(0)
				_ = rc.Close()
				rc = nil
			}
			if !retry.Sleep(ctx, bo.Next()) {
				return
			}
		}
	}
}

// hold builds the messages of entries and holds them (consumer.takeAll),
// all at once, so that their idle time is refreshed while they wait. The
// slice is the reader's buffer, valid until the next call.
func (r *reader) hold(entries []entry) []*core.Message {
	batch := r.batch[:0]
	for i := range entries {
		if m := r.c.message(&entries[i], 1, &r.block); m != nil {
			batch = append(batch, m)
		}
	}
	clear(entries) // the messages hold what they need
	r.batch = r.c.takeAll(batch)
	return r.batch
}

// handleInline runs the handler on each message held, in order, on the
// reader's goroutine, each Ack going over rc (ackQueue.inline).
func (r *reader) handleInline(rc *readConn, msgs []*core.Message) {
	c := r.c
	for _, m := range msgs {
		r.acks.inlineDo(rc, func() { c.handle(m) })
	}
}

// handleReclaimed runs the handler, on the reader's goroutine, on the
// messages the reclaim loop queued.
func (r *reader) handleReclaimed(rc *readConn) {
	for {
		select {
		case m := <-r.c.work:
			r.acks.inlineDo(rc, func() { r.c.handle(m) })
		default:
			return
		}
	}
}

// exchange sends groups' XACKs and read through a go-redis client (on
// Redis Cluster, or a client the reader does not own), settles the acks
// and returns the entries read, appended to dst. With no acks the read
// may block, and ends with ctx.
func (r *reader) exchange(ctx context.Context, rd goredis.UniversalClient, groups []streamAcks, read *goredis.XReadGroupArgs, dst []entry) ([]entry, error) {
	var (
		res []goredis.XStream
		err error
	)
	if len(groups) == 0 {
		res, err = rd.XReadGroup(ctx, read).Result()
	} else {
		pipe := rd.Pipeline()
		cmds := pipeAcks(ctx, pipe, r.args.Group, groups)
		var cmd *goredis.XStreamSliceCmd
		if read != nil {
			cmd = pipe.XReadGroup(ctx, read)
		}
		_, perr := pipe.Exec(context.WithoutCancel(ctx))
		settlePiped(groups, cmds, perr)
		switch {
		case cmd != nil:
			res, err = cmd.Result()
		case perr != nil && !errors.Is(perr, goredis.Nil):
			err = perr
		}
	}
	for _, st := range res {
		for i := range st.Messages {
			dst = append(dst, streamEntryOf(st.Stream, &st.Messages[i]))
		}
	}
	return dst, err
}

func (r *reader) setConnID(id int64) {
	r.mu.Lock()
	r.connID = id
	r.mu.Unlock()
}

// unblock ends the reader's blocking read now, if it is in one and the
// server allows (CLIENT UNBLOCK: the read returns nothing, no entry is
// lost). It goes through the broker's client.
func (r *reader) unblock() {
	r.mu.Lock()
	id := r.connID
	r.mu.Unlock()
	if id == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = r.c.b.client.ClientUnblock(ctx, id).Err()
	cancel()
}

// interrupt ends the reader's blocking read, if the server allows, and
// returns once the reader has stopped. The consumer's context is already
// cancelled, so the reader stops after its current read. CLIENT UNBLOCK
// goes through the broker's client: the reader's own is busy reading.
func (r *reader) interrupt() {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		r.mu.Lock()
		id := r.connID
		r.mu.Unlock()
		if id != 0 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := r.c.b.client.ClientUnblock(ctx, id).Err()
			cancel()
			if err != nil {
				var rerr goredis.Error
				if errors.As(err, &rerr) {
					r.setConnID(0) // not allowed here: wait for BLOCK
				}
			}
		}
		select {
		case <-r.done:
			return
		case <-t.C:
		}
	}
}

// streamEntryOf is a stream entry that go-redis read.
func streamEntryOf(stream string, xm *goredis.XMessage) entry {
	e := entry{stream: stream, id: xm.ID, deleted: xm.Values == nil}
	for k, v := range xm.Values {
		s, _ := v.(string)
		if k == dataField {
			e.raw = []byte(s)
			continue
		}
		if e.headers == nil {
			e.headers = make(map[string]string, len(xm.Values)-1)
		}
		e.headers[k] = s
	}
	return e
}

// message builds a delivery from a stream entry, from block (nil: on its
// own, core.MessageBlock.New); nil for an entry that was deleted (it is acknowledged, there is
// nothing to deliver).
func (c *consumer) message(e *entry, deliveries int, block *core.MessageBlock) *core.Message {
	if e.deleted {
		ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		defer cancel()
		if err := c.b.batch.ack(ctx, e.stream, e.id); err != nil {
			c.b.log.Warn("acknowledging a deleted entry failed", "event", e.stream, "id", e.id, "err", err)
		}
		return nil
	}
	m := block.New(e.stream, e.id, e.raw, deliveries, c.b.cfg.Codec, c.settler)
	m.Headers = e.headers
	return m
}

// reclaimLoop runs a reclaim pass at once and then every ReclaimInterval.
func (c *consumer) reclaimLoop() {
	ctx := c.runCtx
	var bo retry.Backoff
	wait := time.Duration(0)
	for retry.Sleep(ctx, wait) {
		if err := c.reclaimPass(ctx); err != nil && ctx.Err() == nil {
			d := bo.Next()
			c.b.log.Warn("reclaiming idle messages failed; retrying", "streams", c.streams, "err", err, "retry_in", d)
			wait = max(c.b.cfg.ReclaimInterval, d)
			continue
		}
		bo.Reset()
		wait = c.b.cfg.ReclaimInterval
	}
}

// reclaimPass claims, on every stream, the messages of the group idle
// longer than MessageTimeout, each stream with its own XAUTOCLAIM cursor.
func (c *consumer) reclaimPass(ctx context.Context) error {
	cfg := &c.b.cfg
	for _, stream := range c.streams {
		cursor := "0-0"
		for range maxClaimRounds {
			// Claim no more than the consumer may hold.
			room := c.room()
			if room <= 0 {
				return nil
			}
			msgs, next, err := c.b.client.XAutoClaim(ctx, &goredis.XAutoClaimArgs{
				Stream:   stream,
				Group:    cfg.Identity.Group,
				Consumer: cfg.Identity.Client,
				MinIdle:  cfg.MessageTimeout,
				Start:    cursor,
				Count:    int64(min(room, cfg.ReadCount)),
			}).Result()
			if err != nil {
				if isNoGroup(err) && ctx.Err() == nil {
					if cerr := c.b.createGroups(ctx, c.streams, "0"); cerr != nil {
						return cerr
					}
					break
				}
				return fmt.Errorf("xautoclaim %s: %w", stream, err)
			}
			if len(msgs) > 0 {
				if err := c.handleClaimed(ctx, stream, msgs); err != nil {
					return err
				}
				if c.inline {
					c.wakeReader()
				}
			}
			if next == "" || next == "0-0" || (next == cursor && len(msgs) == 0) {
				break
			}
			cursor = next
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

// handleClaimed learns the delivery counts of claimed messages (XAUTOCLAIM
// does not return them) and dead-letters those over MaxDeliveries; the
// others go to the handlers. A claimed message that this client holds
// already (its refresh came late) is not delivered again, and its delivery
// count is put back.
func (c *consumer) handleClaimed(ctx context.Context, stream string, msgs []goredis.XMessage) error {
	counts, err := c.deliveryCounts(ctx, stream, msgs)
	if err != nil {
		// They stay pending, claimed by this client, and come back later.
		return err
	}
	maxDeliveries := c.b.cfg.MaxDeliveries
	_, isDLQ := core.IsDeadLetterEvent(stream)
	for i := range msgs {
		n, ok := counts[msgs[i].ID]
		if !ok {
			continue // no longer pending for this client: someone else has it
		}
		if held, ok := c.b.held.deliveries(stream, msgs[i].ID); ok {
			c.b.restoreCount(ctx, stream, msgs[i].ID, held)
			continue
		}
		e := streamEntryOf(stream, &msgs[i])
		m := c.message(&e, int(n), nil)
		if m == nil {
			continue
		}
		// A dead letter is never dead-lettered again: it would only move
		// to EVENT:dlq:dlq, away from where it is looked for.
		if maxDeliveries > 0 && n > int64(maxDeliveries) && !isDLQ {
			reason := fmt.Sprintf("%s (%d)", core.ReasonMaxDeliveries, maxDeliveries)
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
			err := c.settler.DeadLetter(dctx, m, reason)
			cancel()
			if err != nil {
				c.b.log.Warn("dead-lettering failed; will retry", "event", stream, "id", m.ID, "err", err)
			}
			continue
		}
		if !c.take(m) {
			continue
		}
		c.work <- m // the workers drain work until it closes
	}
	return nil
}

// deliveryCounts reads, with XPENDING, the delivery counts of msgs, which
// are pending for this client in ascending id order.
func (c *consumer) deliveryCounts(ctx context.Context, stream string, msgs []goredis.XMessage) (map[string]int64, error) {
	cfg := &c.b.cfg
	counts := make(map[string]int64, len(msgs))
	start, end := msgs[0].ID, msgs[len(msgs)-1].ID
	pageSize := int64(max(len(msgs), 128))
	for range maxClaimRounds {
		pending, err := c.b.client.XPendingExt(ctx, &goredis.XPendingExtArgs{
			Stream:   stream,
			Group:    cfg.Identity.Group,
			Start:    start,
			End:      end,
			Count:    pageSize,
			Consumer: cfg.Identity.Client,
		}).Result()
		if err != nil {
			return nil, fmt.Errorf("xpending %s: %w", stream, err)
		}
		for _, p := range pending {
			counts[p.ID] = p.RetryCount
		}
		if int64(len(pending)) < pageSize || len(counts) >= len(msgs) {
			break
		}
		next, ok := nextStreamID(pending[len(pending)-1].ID)
		if !ok {
			break
		}
		start = next
	}
	return counts, nil
}

// nextStreamID returns the smallest stream id after id.
func nextStreamID(id string) (string, bool) {
	msPart, seqPart, ok := strings.Cut(id, "-")
	if !ok {
		return "", false
	}
	ms, err1 := strconv.ParseUint(msPart, 10, 64)
	seq, err2 := strconv.ParseUint(seqPart, 10, 64)
	if err1 != nil || err2 != nil {
		return "", false
	}
	if seq == ^uint64(0) {
		if ms == ^uint64(0) {
			return "", false
		}
		return strconv.FormatUint(ms+1, 10) + "-0", true
	}
	return msPart + "-" + strconv.FormatUint(seq+1, 10), true
}

// settler settles the messages of a broker's consumers.
type settler struct {
	b *Broker
	c *consumer // the consumer whose messages these are; nil in tests
}

// Ack XACKs the message, pipelined with the next read of the reader of its
// stream, or batched with concurrent acks while that reader blocks
// (readack.go); it returns once Redis confirmed.
func (s *settler) Ack(ctx context.Context, m *core.Message) error {
	err := error(nil)
	handled := false
	if s.c != nil && s.c.acks != nil {
		if q := s.c.acks[m.Event]; q != nil {
			handled, err = q.ack(ctx, s.b.batch, m.Event, m.ID)
		}
	}
	if !handled {
		err = s.b.batch.ack(ctx, m.Event, m.ID)
	}
	if err != nil {
		if errors.Is(err, core.ErrClosed) {
			return core.ErrClosed
		}
		return fmt.Errorf("redis: ack %s %s: %w", m.Event, m.ID, err)
	}
	return nil
}

// Replies are published again while a caller may have missed them.
// @discordjs/brokers and @spectacles/brokers SUBSCRIBE to {event}:{id}
// only after their XADD returned, so a responder that answers at once
// publishes to no one; and a reply that reaches such a caller before it
// processed its subscription's confirmation is dropped by it (it arrives in
// the same read, before the caller registered its waiter). Both callers
// UNSUBSCRIBE as soon as they have their reply: one still subscribed to the
// exact channel a little after a copy reached it has not got it.
const (
	// replyRepublishFor bounds how long a reply is published again.
	replyRepublishFor = time.Second
	// replyRepublishFirst and replyRepublishMax pace the repeats of a
	// reply that reached nobody.
	replyRepublishFirst = 5 * time.Millisecond
	replyRepublishMax   = 100 * time.Millisecond
	// replyUnsubscribeGrace is how long a caller subscribed to the exact
	// channel has, after a copy reached it, to unsubscribe before it gets
	// another copy.
	replyUnsubscribeGrace = 25 * time.Millisecond
)

// Reply publishes payload on {event}:{id}, and again, for up to
// replyRepublishFor in all (or until ctx ends), while a caller may have
// missed it:
//   - when the PUBLISH reached no subscriber (a caller that subscribes
//     after its XADD has not subscribed yet), it is repeated with a growing
//     pause;
//   - when it reached a subscriber of the exact channel {event}:{id} (the
//     peers' callers; this driver's Call uses a pattern subscription,
//     confirmed before its XADD, and is never sent a second copy), Reply
//     watches PUBSUB NUMSUB: a caller that still has not unsubscribed
//     replyUnsubscribeGrace after the copy reached it is sent another.
//
// So Reply returns once the reply was delivered, or after that bound;
// this also holds while the broker closes, which waits for running
// handlers, so that a draining responder's last replies still reach their
// late callers. Giving up is not an error (a message that was published,
// not called, has nobody to answer): it is logged at debug level. A slow
// caller, or another client subscribed to the exact channel, may get more
// than one copy; the peers ignore a reply they no longer wait for. On Redis
// Cluster, where PUBLISH and PUBSUB NUMSUB count only the node that took
// them, the reply is published once.
func (s *settler) Reply(ctx context.Context, m *core.Message, payload []byte) error {
	if s.b.finished.Load() {
		return core.ErrClosed
	}
	channel := replyChannel(m.Event, m.ID)
	started := time.Now()
	deadline := started.Add(replyRepublishFor)
	pause := replyRepublishFirst
	for attempt := 1; ; attempt++ {
		n, err := s.b.client.Publish(ctx, channel, payload).Result()
		if err != nil {
			if attempt > 1 {
				s.b.log.Debug("publishing a reply again failed; giving up", "channel", channel, "attempts", attempt, "err", err)
				return nil
			}
			return fmt.Errorf("redis: reply to %s %s: %w", m.Event, m.ID, err)
		}
		if s.b.cluster {
			return nil
		}
		if n > 0 {
			if !s.stillSubscribed(ctx, channel, deadline) {
				if attempt > 1 {
					s.b.log.Debug("reply received after being published again", "channel", channel, "attempts", attempt)
				}
				return nil
			}
			continue // the caller missed this copy
		}
		left := time.Until(deadline)
		if left <= 0 {
			s.b.log.Debug("nobody received the reply; giving up (not a call, or the caller is gone)",
				"channel", channel, "attempts", attempt, "waited", time.Since(started).Round(time.Millisecond))
			return nil
		}
		if !retry.Sleep(ctx, min(pause, left)) {
			return nil // published; nobody has received it yet
		}
		pause = min(pause*2, replyRepublishMax)
	}
}

// stillSubscribed reports whether a client is still subscribed to the
// exact channel replyUnsubscribeGrace after a copy of its reply reached it
// (and before deadline): it checks PUBSUB NUMSUB at growing intervals and
// returns false as soon as nobody is.
func (s *settler) stillSubscribed(ctx context.Context, channel string, deadline time.Time) bool {
	grace := time.Now().Add(replyUnsubscribeGrace)
	pause := time.Millisecond
	for {
		counts, err := s.b.client.PubSubNumSub(ctx, channel).Result()
		if err != nil {
			s.b.log.Debug("pubsub numsub failed; not publishing the reply again", "channel", channel, "err", err)
			return false
		}
		if counts[channel] == 0 {
			return false
		}
		now := time.Now()
		if !now.Before(deadline) {
			s.b.log.Debug("a caller stays subscribed to the reply channel; giving up", "channel", channel)
			return false
		}
		if !now.Before(grace) {
			return true
		}
		if !retry.Sleep(ctx, min(pause, grace.Sub(now), deadline.Sub(now))) {
			return false
		}
		pause *= 2
	}
}

// DeadLetter adds the message, with its metadata, to its event's
// dead-letter stream and acknowledges it (see Broker.deadLetter). A
// message of a dead-letter event fails with core.ErrRejectDeadLetter.
func (s *settler) DeadLetter(ctx context.Context, m *core.Message, reason string) error {
	if s.b.finished.Load() {
		return core.ErrClosed
	}
	id := s.b.cfg.Identity
	return s.b.deadLetter(ctx, m.Event, m.ID, m.Raw, id.Group, id.Client, reason, m.Deliveries)
}

// deadLetter adds an entry of event, with its metadata, to the event's
// dead-letter stream and acknowledges it for group: in one MULTI/EXEC on a
// single server; in a cluster, where the two keys may live on different
// nodes, XADD first and XACK after, so that nothing is lost. An entry of a
// dead-letter event is left as it is: the error wraps core.ErrRejectDeadLetter.
func (b *Broker) deadLetter(ctx context.Context, event, id string, raw []byte, group, client, reason string, deliveries int) error {
	if _, ok := core.IsDeadLetterEvent(event); ok {
		return fmt.Errorf("redis: dead-letter %s %s: %w", event, id, core.ErrRejectDeadLetter)
	}
	add := &goredis.XAddArgs{
		Stream: core.DeadLetterEvent(event),
		Values: []any{
			dataField, raw,
			core.HeaderEvent, event,
			core.HeaderID, id,
			core.HeaderGroup, group,
			core.HeaderClient, client,
			core.HeaderReason, reason,
			core.HeaderDeliveries, strconv.Itoa(deliveries),
			core.HeaderFailedAt, time.Now().UTC().Format(time.RFC3339Nano),
		},
	}
	if b.cluster {
		if err := b.client.XAdd(ctx, add).Err(); err != nil {
			return fmt.Errorf("redis: dead-letter %s %s: %w", event, id, err)
		}
		if err := b.client.XAck(ctx, event, group, id).Err(); err != nil {
			return fmt.Errorf("redis: dead-letter %s %s: added, but ack failed: %w", event, id, err)
		}
		return nil
	}
	pipe := b.client.TxPipeline()
	pipe.XAdd(ctx, add)
	pipe.XAck(ctx, event, group, id)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("redis: dead-letter %s %s: %w", event, id, err)
	}
	return nil
}

// heldSet is the messages a broker's consumers hold: taken from Redis and
// not yet finished by a handler. This client never takes them over from
// itself, and keeps their idle time low (consumer.refreshLoop).
type heldSet struct {
	mu sync.Mutex
	m  map[heldKey]heldEntry // by value: holding a message allocates nothing beyond the map
}

type heldKey struct{ stream, id string }

type heldEntry struct {
	c          *consumer
	deliveries int       // the delivery count to keep when refreshing
	refreshed  time.Time // when it was delivered or last refreshed
}

func newHeldSet() *heldSet { return &heldSet{m: make(map[heldKey]heldEntry)} }

// add holds id for c; false when it is held already.
func (h *heldSet) add(stream, id string, c *consumer, deliveries int) bool {
	k := heldKey{stream, id}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.m[k]; ok {
		return false
	}
	h.m[k] = heldEntry{c: c, deliveries: deliveries, refreshed: time.Now()}
	return true
}

// addAll holds for c each message of msgs that is not held already, and
// returns those (msgs, filtered in place).
func (h *heldSet) addAll(msgs []*core.Message, c *consumer) []*core.Message {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	out := msgs[:0]
	for _, m := range msgs {
		k := heldKey{m.Event, m.ID}
		if _, ok := h.m[k]; ok {
			continue
		}
		h.m[k] = heldEntry{c: c, deliveries: m.Deliveries, refreshed: now}
		out = append(out, m)
	}
	clear(msgs[len(out):])
	return out
}

func (h *heldSet) remove(stream, id string) {
	h.mu.Lock()
	delete(h.m, heldKey{stream, id})
	h.mu.Unlock()
}

// deliveries returns the delivery count of a held message.
func (h *heldSet) deliveries(stream, id string) (int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.m[heldKey{stream, id}]
	if !ok {
		return 0, false
	}
	return e.deliveries, true
}

// stale returns c's held messages not refreshed since before, by stream
// and delivery count, and marks them refreshed now.
func (h *heldSet) stale(c *consumer, before time.Time) map[heldKey][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out map[heldKey][]string
	now := time.Now()
	for k, e := range h.m {
		if e.c != c || e.refreshed.After(before) {
			continue
		}
		if out == nil {
			out = make(map[heldKey][]string)
		}
		// Keyed by stream and count: one XCLAIM each.
		gk := heldKey{k.stream, strconv.Itoa(e.deliveries)}
		out[gk] = append(out[gk], k.id)
		e.refreshed = now
		h.m[k] = e
	}
	return out
}

// refreshPeriod is how often held messages are refreshed: a quarter of
// MessageTimeout, so that one refresh may fail or come late and the
// message still never looks idle for MessageTimeout.
func (c *consumer) refreshPeriod() time.Duration {
	return max(c.b.cfg.MessageTimeout/4, time.Millisecond)
}

// refreshLoop resets, every refreshPeriod, the idle time of the messages
// this consumer holds for longer than that, until stop is closed (once its
// last handler returned).
func (c *consumer) refreshLoop(stop <-chan struct{}) {
	period := c.refreshPeriod()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		for k, ids := range c.b.held.stale(c, time.Now().Add(-period)) {
			n, _ := strconv.Atoi(k.id)
			ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
			if err := c.b.claimKeep(ctx, k.stream, n, ids...); err != nil {
				c.b.log.Warn("refreshing held messages failed; another client may take them over", "event", k.stream, "ids", len(ids), "err", err)
			}
			cancel()
		}
	}
}

// restoreCount puts back the delivery count of a held message that this
// client's XAUTOCLAIM took again.
func (b *Broker) restoreCount(ctx context.Context, stream, id string, deliveries int) {
	if err := b.claimKeep(ctx, stream, deliveries, id); err != nil {
		b.log.Warn("restoring the delivery count of a held message failed", "event", stream, "id", id, "err", err)
	}
}

// claimKeep claims ids for this client, resetting their idle time and
// setting their delivery count to deliveries: XCLAIM stream group client
// 0 ids... RETRYCOUNT deliveries JUSTID. An id no longer pending (acked
// meanwhile) is left alone.
func (b *Broker) claimKeep(ctx context.Context, stream string, deliveries int, ids ...string) error {
	id := b.cfg.Identity
	args := make([]any, 0, 8+len(ids))
	args = append(args, "xclaim", stream, id.Group, id.Client, 0)
	for _, i := range ids {
		args = append(args, i)
	}
	args = append(args, "retrycount", deliveries, "justid")
	if err := b.client.Do(ctx, args...).Err(); err != nil && !errors.Is(err, goredis.Nil) {
		return fmt.Errorf("xclaim %s: %w", stream, err)
	}
	return nil
}
