package gateway

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/retry"
)

// DispatchSink takes a shard's dispatches (ShardConfig.Dispatches). The
// Manager's sink is its dispatch queue, which publishes to the broker.
type DispatchSink interface {
	// Offer hands over one dispatch, in order, from the shard's reading
	// goroutine. It must not block: it returns false when it cannot take
	// the dispatch now. The shard then sheds its connection without
	// counting that dispatch as received, waits for Room and resumes, so
	// that Discord replays it: reading and heartbeats are never delayed.
	Offer(d Dispatch) bool
	// Room returns a channel that is closed once Offer can take
	// dispatches again.
	Room() <-chan struct{}
	// Delivered returns the session and seq of the newest dispatch of
	// shard that is delivered (published and confirmed, or deliberately
	// dropped) together with every earlier one; "" and 0 when none is. The
	// shard saves that seq, never a newer one, so that a process resuming
	// the session gets everything after it replayed by Discord.
	Delivered(shard int) (session string, seq int64)
}

// mark is a position in a shard's stream of dispatches.
type mark struct {
	session string
	seq     int64
}

// funcSink delivers each dispatch by calling f; f's true means delivered.
type funcSink struct {
	f    func(Dispatch) bool
	room chan struct{} // always closed

	mu   sync.Mutex
	last map[int]mark
}

func newFuncSink(f func(Dispatch) bool) *funcSink {
	room := make(chan struct{})
	close(room)
	return &funcSink{f: f, room: room, last: map[int]mark{}}
}

func (s *funcSink) Offer(d Dispatch) bool {
	if !s.f(d) {
		return false
	}
	s.mu.Lock()
	s.last[d.Shard] = mark{d.Session, d.Seq}
	s.mu.Unlock()
	return true
}

func (s *funcSink) Room() <-chan struct{} { return s.room }

func (s *funcSink) Delivered(shard int) (string, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.last[shard]
	return m.session, m.seq
}

// queueEntry is one dispatch waiting for the broker.
type queueEntry struct {
	d Dispatch
	// sequenced: d's seq is newer than that of the dispatch its shard
	// offered before in the same session (see pending).
	sequenced bool
	// then is what its shard has delivered once this entry is published:
	// the entry itself, or a later dispatch of the shard that was
	// filtered out while this one waited.
	then mark
}

// pending is a dispatch handed to the publish function.
type pending struct {
	Dispatch
	// Sequenced is true when the dispatch's seq is newer than that of the
	// dispatch its shard offered before in the same session (always, as
	// Discord numbers dispatches), so that its (Session, Seq) names it
	// alone and a broker mark can tell whether it was published. A
	// dispatch that repeats the seq before it (one without "s") is not.
	Sequenced bool
}

// publishFunc publishes a batch in order and returns how many of its
// first dispatches the broker confirmed (published now, or found already
// published).
type publishFunc func(ctx context.Context, batch []pending) (int, error)

// dispatchQueue is the Manager's DispatchSink: a bounded FIFO of dispatches
// that its publish loop (run) publishes in batches, in order, retrying
// failures with backoff. It knows, per shard, the last dispatch the broker
// confirmed, which is what the shard saves as its session's seq. Retries
// and replays do not publish a dispatch twice when the publish function
// skips what the broker already holds (Manager.publish, on a broker that
// implements core.SequencedPublisher); a skipped dispatch counts as
// confirmed.
type dispatchQueue struct {
	size    int
	skip    func(Dispatch) bool // filtered out: delivered without publishing
	publish publishFunc
	log     *slog.Logger
	metrics *Metrics

	// stop cancels publishing for good (Drain's deadline passed).
	stopCtx context.Context
	stop    context.CancelFunc

	mu        sync.Mutex
	buf       []queueEntry // ring of size entries; [head, tail) wait
	head      uint64
	tail      uint64
	newest    map[int]uint64 // per shard: 1 + absolute index of its newest entry
	offered   map[int]mark   // per shard: the last dispatch Offer took
	delivered map[int]mark
	room      chan struct{} // closed while at most half full
	wake      chan struct{} // an entry arrived, or draining started
	draining  bool
	drained   chan struct{} // closed when draining and empty
	done      chan struct{} // closed when run returns

	published uint64
	shed      uint64
}

const maxPublishBatch = 512

func newDispatchQueue(size int, skip func(Dispatch) bool, publish publishFunc, log *slog.Logger, metrics *Metrics) *dispatchQueue {
	ctx, cancel := context.WithCancel(context.Background())
	room := make(chan struct{})
	close(room)
	return &dispatchQueue{
		size: size, skip: skip, publish: publish, log: log, metrics: metrics,
		stopCtx: ctx, stop: cancel,
		buf: make([]queueEntry, size), newest: map[int]uint64{}, offered: map[int]mark{}, delivered: map[int]mark{},
		room: room, wake: make(chan struct{}, 1), drained: make(chan struct{}), done: make(chan struct{}),
	}
}

// Offer implements DispatchSink.
func (q *dispatchQueue) Offer(d Dispatch) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	prev, seen := q.offered[d.Shard]
	if q.skip != nil && q.skip(d) {
		q.offered[d.Shard] = mark{d.Session, d.Seq}
		if n := q.newest[d.Shard]; n > q.head {
			q.buf[(n-1)%uint64(q.size)].then = mark{d.Session, d.Seq}
		} else {
			q.delivered[d.Shard] = mark{d.Session, d.Seq}
		}
		return true
	}
	if q.draining || q.tail-q.head == uint64(q.size) {
		q.shed++
		if q.metrics != nil {
			q.metrics.queueFull.Inc()
		}
		return false
	}
	q.offered[d.Shard] = mark{d.Session, d.Seq}
	sequenced := !seen || prev.session != d.Session || d.Seq > prev.seq
	q.buf[q.tail%uint64(q.size)] = queueEntry{d: d, sequenced: sequenced, then: mark{d.Session, d.Seq}}
	q.tail++
	q.newest[d.Shard] = q.tail
	if q.tail-q.head > uint64(q.size/2) && isClosed(q.room) {
		q.room = make(chan struct{})
	}
	q.setLengthLocked()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// Room implements DispatchSink: closed while the queue is at most half full.
func (q *dispatchQueue) Room() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.room
}

// Delivered implements DispatchSink.
func (q *dispatchQueue) Delivered(shard int) (string, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	m := q.delivered[shard]
	return m.session, m.seq
}

// Len returns how many dispatches wait for the broker.
func (q *dispatchQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return int(q.tail - q.head)
}

// Published returns how many dispatches the broker confirmed.
func (q *dispatchQueue) Published() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.published
}

// Shed returns how many dispatches were refused because the queue was full.
func (q *dispatchQueue) Shed() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shed
}

func (q *dispatchQueue) setLengthLocked() {
	if q.metrics != nil {
		q.metrics.queueLength.Set(float64(q.tail - q.head))
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// run publishes until Drain has emptied the queue or given up.
func (q *dispatchQueue) run() {
	defer close(q.done)
	batch := make([]pending, 0, maxPublishBatch)
	for {
		q.mu.Lock()
		n := min(q.tail-q.head, maxPublishBatch)
		batch = batch[:0]
		for i := q.head; i < q.head+n; i++ {
			e := &q.buf[i%uint64(q.size)]
			batch = append(batch, pending{Dispatch: e.d, Sequenced: e.sequenced})
		}
		if n == 0 && q.draining && !isClosed(q.drained) {
			close(q.drained)
		}
		q.mu.Unlock()
		if n == 0 {
			select {
			case <-q.wake:
				continue
			case <-q.stopCtx.Done():
				return
			}
		}
		if !q.publishBatch(batch) {
			return
		}
	}
}

// publishBatch publishes batch, retrying with backoff until the broker
// confirms all of it; it returns false when publishing stopped for good
// (the broker closed, or Drain gave up).
func (q *dispatchQueue) publishBatch(batch []pending) bool {
	var bo retry.Backoff // 50 ms to 5 s
	for len(batch) > 0 {
		ctx, cancel := context.WithTimeout(q.stopCtx, 30*time.Second)
		n, err := q.publish(ctx, batch)
		cancel()
		q.confirm(n)
		batch = batch[n:]
		if err == nil {
			continue
		}
		if q.stopCtx.Err() != nil {
			return false
		}
		if errors.Is(err, core.ErrClosed) {
			q.log.Error("the broker closed; queued dispatches are not published", "waiting", q.Len())
			q.stop()
			return false
		}
		if q.metrics != nil {
			q.metrics.publishErrs.Inc()
		}
		delay := bo.Next()
		q.log.Warn("publishing dispatches failed; retrying", "err", err, "batch", len(batch), "in", delay)
		if !retry.Sleep(q.stopCtx, delay) {
			return false
		}
	}
	return true
}

// confirm records that the broker confirmed the n oldest entries.
func (q *dispatchQueue) confirm(n int) {
	if n == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for range n {
		i := q.head % uint64(q.size)
		e := q.buf[i]
		q.delivered[e.d.Shard] = e.then
		q.buf[i] = queueEntry{}
		q.head++
	}
	q.published += uint64(n)
	if q.metrics != nil {
		q.metrics.published.Add(float64(n))
	}
	if q.tail-q.head <= uint64(q.size/2) && !isClosed(q.room) {
		close(q.room)
	}
	q.setLengthLocked()
}

// Drain refuses new dispatches and waits until every queued one is
// published, or until ctx ends: then it stops publishing (an attempt in
// flight is cancelled) and returns how many were left unpublished. Call
// it once, after the shards stopped offering.
func (q *dispatchQueue) Drain(ctx context.Context) int {
	q.mu.Lock()
	q.draining = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	select {
	case <-q.drained:
	case <-q.done: // the broker closed
	case <-ctx.Done():
	}
	q.stop()
	<-q.done
	return q.Len()
}
