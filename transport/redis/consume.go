package redis

import (
	"context"
	"errors"
	"fmt"
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
// CREATE {event} {group} 0 MKSTREAM) and returns; in the background it
// reads the streams with XREADGROUP, takes over messages other clients of
// the group left idle longer than MessageTimeout (XAUTOCLAIM), dead-letters
// those delivered more than MaxDeliveries times, and runs h on up to
// Options.Concurrency goroutines, until ctx is cancelled or the broker
// closes. Handlers get a context that is never cancelled, so that a
// draining handler can still settle its message; Close waits for them.
// Consume needs a valid Options.Identity.
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
	if err := b.createGroups(ctx, streams); err != nil {
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
		work:    make(chan *core.Message, b.cfg.ReadCount),
		settler: &settler{b: b},
	}
	c.start(ctx)
	return nil
}

// createGroups creates the broker's group on each stream, at id 0 so that
// a new group sees the stream's history. An existing group is kept.
func (b *Broker) createGroups(ctx context.Context, streams []string) error {
	group := b.cfg.Identity.Group
	pipe := b.client.Pipeline()
	cmds := make([]*goredis.StatusCmd, len(streams))
	for i, s := range streams {
		cmds[i] = pipe.XGroupCreateMkStream(ctx, s, group, "0")
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
}

func (c *consumer) start(ctx context.Context) {
	runCtx, cancel := context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(c.b.closeCtx, cancel)
	c.runCtx = runCtx

	var workers sync.WaitGroup
	for range c.b.cfg.Concurrency {
		workers.Go(func() {
			for m := range c.work {
				if c.runCtx.Err() != nil {
					continue // stopped: left pending, for redelivery
				}
				core.RunHandler(c.hctx, c.b.log, c.h, m)
			}
		})
	}

	var readers []*reader
	if c.b.cluster {
		// Streams may live on different nodes: one reader each.
		for _, s := range c.streams {
			readers = append(readers, newReader(c, []string{s}))
		}
	} else {
		readers = append(readers, newReader(c, c.streams))
	}
	var loops sync.WaitGroup
	for _, r := range readers {
		loops.Go(r.run)
	}
	loops.Go(c.reclaimLoop)

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
		workers.Wait()
	}()
}

// reader runs XREADGROUP for some streams.
type reader struct {
	c    *consumer
	args goredis.XReadGroupArgs
	done chan struct{}

	mu     sync.Mutex
	node   *goredis.Client // the client a dedicated connection came from
	connID int64           // CLIENT ID of that connection; 0 when unknown
}

func newReader(c *consumer, streams []string) *reader {
	ids := make([]string, 0, 2*len(streams))
	ids = append(ids, streams...)
	for range streams {
		ids = append(ids, ">")
	}
	return &reader{
		c: c,
		args: goredis.XReadGroupArgs{
			Group:    c.b.cfg.Identity.Group,
			Consumer: c.b.cfg.Identity.Client,
			Streams:  ids,
			Count:    int64(c.b.cfg.ReadCount),
			Block:    c.b.cfg.Block,
		},
		done: make(chan struct{}),
	}
}

// streamReader is what XREADGROUP runs on: a dedicated connection or the
// client itself.
type streamReader interface {
	XReadGroup(ctx context.Context, a *goredis.XReadGroupArgs) *goredis.XStreamSliceCmd
}

func (r *reader) run() {
	defer close(r.done)
	c := r.c
	ctx := c.runCtx
	var (
		bo   retry.Backoff
		conn *goredis.Conn
	)
	defer func() {
		if conn != nil {
			_ = conn.Close()
		}
	}()
	for ctx.Err() == nil {
		var rd streamReader = c.b.client
		if node, ok := c.b.client.(*goredis.Client); ok {
			// A dedicated connection whose blocking read Close can
			// interrupt with CLIENT UNBLOCK.
			if conn == nil {
				conn = r.dial(ctx, node)
			}
			rd = conn
		}
		res, err := rd.XReadGroup(ctx, &r.args).Result()
		switch {
		case err == nil:
			bo.Reset()
			for _, st := range res {
				for i := range st.Messages {
					m := c.message(st.Stream, &st.Messages[i], 1)
					if m == nil {
						continue
					}
					select {
					case c.work <- m:
					case <-ctx.Done():
						return
					}
				}
			}
		case errors.Is(err, goredis.Nil):
			bo.Reset() // BLOCK ran out, or CLIENT UNBLOCK
		case ctx.Err() != nil:
			return
		case isNoGroup(err):
			// The server restarted empty or the stream was deleted.
			c.b.log.Warn("consumer group missing; creating it again", "streams", c.streams, "group", r.args.Group)
			if err := c.b.createGroups(ctx, c.streams); err != nil {
				c.b.log.Warn("creating consumer groups failed", "err", err)
				if !retry.Sleep(ctx, bo.Next()) {
					return
				}
			}
		default:
			c.b.log.Warn("reading streams failed; retrying", "streams", c.streams, "err", err)
			if conn != nil {
				r.setConn(nil, 0)
				_ = conn.Close()
				conn = nil
			}
			if !retry.Sleep(ctx, bo.Next()) {
				return
			}
		}
	}
}

// dial takes a dedicated connection from node's pool and learns its CLIENT
// ID. Servers without CLIENT ID (miniredis) leave it 0: a stop then waits
// for BLOCK to end.
func (r *reader) dial(ctx context.Context, node *goredis.Client) *goredis.Conn {
	conn := node.Conn()
	id, err := conn.ClientID(ctx).Result()
	if err != nil {
		id = 0
	}
	r.setConn(node, id)
	return conn
}

func (r *reader) setConn(node *goredis.Client, id int64) {
	r.mu.Lock()
	r.node, r.connID = node, id
	r.mu.Unlock()
}

// interrupt ends the reader's blocking read, if the server allows, and
// returns once the reader has stopped. The consumer's context is already
// cancelled, so the reader stops after its current read.
func (r *reader) interrupt() {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		r.mu.Lock()
		node, id := r.node, r.connID
		r.mu.Unlock()
		if id != 0 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := node.ClientUnblock(ctx, id).Err()
			cancel()
			if err != nil {
				var rerr goredis.Error
				if errors.As(err, &rerr) {
					r.setConn(node, 0) // not allowed here: wait for BLOCK
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

// message builds a delivery from a stream entry; nil for an entry that was
// deleted (it is acknowledged, there is nothing to deliver).
func (c *consumer) message(stream string, xm *goredis.XMessage, deliveries int) *core.Message {
	if xm.Values == nil {
		ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		defer cancel()
		if err := c.b.batch.ack(ctx, stream, xm.ID); err != nil {
			c.b.log.Warn("acknowledging a deleted entry failed", "event", stream, "id", xm.ID, "err", err)
		}
		return nil
	}
	var (
		raw     []byte
		headers map[string]string
	)
	for k, v := range xm.Values {
		s, _ := v.(string)
		if k == dataField {
			raw = []byte(s)
			continue
		}
		if headers == nil {
			headers = make(map[string]string, len(xm.Values)-1)
		}
		headers[k] = s
	}
	m := core.NewMessage(stream, xm.ID, raw, deliveries, c.b.cfg.Codec, c.settler)
	m.Headers = headers
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
			msgs, next, err := c.b.client.XAutoClaim(ctx, &goredis.XAutoClaimArgs{
				Stream:   stream,
				Group:    cfg.Identity.Group,
				Consumer: cfg.Identity.Client,
				MinIdle:  cfg.MessageTimeout,
				Start:    cursor,
				Count:    int64(cfg.ReadCount),
			}).Result()
			if err != nil {
				if isNoGroup(err) && ctx.Err() == nil {
					if cerr := c.b.createGroups(ctx, c.streams); cerr != nil {
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
// others go to the handlers.
func (c *consumer) handleClaimed(ctx context.Context, stream string, msgs []goredis.XMessage) error {
	counts, err := c.deliveryCounts(ctx, stream, msgs)
	if err != nil {
		// They stay pending, claimed by this client, and come back later.
		return err
	}
	maxDeliveries := c.b.cfg.MaxDeliveries
	for i := range msgs {
		n, ok := counts[msgs[i].ID]
		if !ok {
			continue // no longer pending for this client: someone else has it
		}
		m := c.message(stream, &msgs[i], int(n))
		if m == nil {
			continue
		}
		if maxDeliveries > 0 && n > int64(maxDeliveries) {
			reason := fmt.Sprintf("%s (%d)", core.ReasonMaxDeliveries, maxDeliveries)
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
			err := c.settler.DeadLetter(dctx, m, reason)
			cancel()
			if err != nil {
				c.b.log.Warn("dead-lettering failed; will retry", "event", stream, "id", m.ID, "err", err)
			}
			continue
		}
		select {
		case c.work <- m:
		case <-ctx.Done():
			return nil
		}
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
type settler struct{ b *Broker }

// Ack XACKs the message (batched with concurrent acks); it returns once
// Redis confirmed.
func (s *settler) Ack(ctx context.Context, m *core.Message) error {
	if err := s.b.batch.ack(ctx, m.Event, m.ID); err != nil {
		if errors.Is(err, core.ErrClosed) {
			return core.ErrClosed
		}
		return fmt.Errorf("redis: ack %s %s: %w", m.Event, m.ID, err)
	}
	return nil
}

// Reply publishes payload on {event}:{id}.
func (s *settler) Reply(ctx context.Context, m *core.Message, payload []byte) error {
	if s.b.finished.Load() {
		return core.ErrClosed
	}
	if err := s.b.client.Publish(ctx, replyChannel(m.Event, m.ID), payload).Err(); err != nil {
		return fmt.Errorf("redis: reply to %s %s: %w", m.Event, m.ID, err)
	}
	return nil
}

// DeadLetter adds the message, with its metadata, to its event's
// dead-letter stream and acknowledges it (see Broker.deadLetter).
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
// nodes, XADD first and XACK after, so that nothing is lost.
func (b *Broker) deadLetter(ctx context.Context, event, id string, raw []byte, group, client, reason string, deliveries int) error {
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
