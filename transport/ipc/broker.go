package ipc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// Broker is a Spectacles broker over a pair of byte streams. It is safe for
// concurrent use. Make one with New or Stdio.
type Broker struct {
	cfg Config
	log *slog.Logger
	in  io.Reader
	out *outWriter

	idPrefix string
	idSeq    atomic.Uint64

	// closeCtx is cancelled when Close starts: consumers stop, calls end.
	closeCtx    context.Context
	closeCancel context.CancelFunc
	closed      atomic.Bool
	// finished is set once the consumers have drained: replying is over.
	finished atomic.Bool

	mu         sync.Mutex // guards the fields below, and consumers.Add against Close
	consumers  sync.WaitGroup
	routes     map[string]*route // consumers by event
	live       map[*consumer]struct{}
	inputEnded bool
	readErr    error

	readOnce   sync.Once     // starts the reading goroutine, or marks it never started
	inputDone  chan struct{} // closed when the input ended (EOF or read error)
	readerDone chan struct{} // closed when the reading goroutine returned (or never ran)
	done       chan struct{} // see Done
	doneOnce   sync.Once

	calls   calls
	settler *settler
	bufs    sync.Pool // *[]byte encoding buffers

	closeOnce sync.Once
	closeErr  error
}

var (
	_ core.Broker         = (*Broker)(nil)
	_ core.BatchPublisher = (*Broker)(nil)
)

// New returns a broker that reads messages from r and writes them to w, in
// cfg.Format. It starts reading r at the first Consume or Call, so that a
// process that consumes loses nothing its peer wrote before it was ready;
// from then on, messages for events no Consume asked for are dropped. (A
// broker that only publishes never reads: a peer writing to it is held
// back by the full pipe.) The broker does not close r or w.
func New(r io.Reader, w io.Writer, cfg Config) (*Broker, error) {
	if r == nil || w == nil {
		return nil, fmt.Errorf("%w: a reader and a writer are required", ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	b := &Broker{
		cfg:        cfg,
		log:        cfg.Logger.With("broker", "ipc"),
		in:         r,
		idPrefix:   hex.EncodeToString(seed[:]) + "-",
		routes:     make(map[string]*route),
		live:       make(map[*consumer]struct{}),
		inputDone:  make(chan struct{}),
		readerDone: make(chan struct{}),
		done:       make(chan struct{}),
		calls:      calls{waiting: make(map[string]*pendingCall)},
	}
	b.settler = &settler{b: b}
	b.closeCtx, b.closeCancel = context.WithCancel(context.Background())
	b.out = newOutWriter(w, b.log)
	return b, nil
}

// startReading starts the reading goroutine, once.
func (b *Broker) startReading() { b.readOnce.Do(func() { go b.read() }) }

// Stdio returns a broker that reads os.Stdin and writes os.Stdout, for a
// process that is one end of a pipe (spectacles gateway | my-bot). Nothing
// else may write to os.Stdout; logs go to os.Stderr.
func Stdio(cfg Config) (*Broker, error) {
	return New(os.Stdin, os.Stdout, cfg)
}

// newID returns a message id unique to this broker and, through its random
// prefix, to the other processes on the pipe.
func (b *Broker) newID() string {
	buf := make([]byte, 0, 40)
	buf = append(buf, b.idPrefix...)
	buf = strconv.AppendUint(buf, b.idSeq.Add(1), 10)
	return string(buf)
}

// Publish writes data under event to the output and returns the message's
// id once the message was written (and, when the output has a Flush
// method, flushed). See the package documentation for how data is encoded.
// It waits for a peer only as far as a full pipe makes it wait.
func (b *Broker) Publish(ctx context.Context, event string, data any) (string, error) {
	if b.closed.Load() {
		return "", core.ErrClosed
	}
	if event == "" {
		return "", errors.New("ipc: publish: event name is empty")
	}
	payload, opaque, err := b.encode(data)
	if err != nil {
		return "", fmt.Errorf("ipc: publish %s: %w", event, err)
	}
	id := b.newID()
	if err := b.send(ctx, &envelope{event: event, id: id, data: payload, opaque: opaque}); err != nil {
		return "", fmt.Errorf("ipc: publish %s: %w", event, err)
	}
	return id, nil
}

// PublishBatch writes msgs in order with one write and returns their ids.
// Nothing is written when one of them cannot be encoded.
func (b *Broker) PublishBatch(ctx context.Context, msgs []core.Outgoing) ([]string, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	ids := make([]string, len(msgs))
	var buf []byte
	for i, m := range msgs {
		if m.Event == "" {
			return nil, errors.New("ipc: publish: event name is empty")
		}
		payload, opaque, err := b.encode(m.Data)
		if err != nil {
			return nil, fmt.Errorf("ipc: publish %s: %w", m.Event, err)
		}
		ids[i] = b.newID()
		buf = b.appendEnvelope(buf, &envelope{event: m.Event, id: ids[i], data: payload, opaque: opaque})
	}
	batch, err := b.out.enqueue(ctx, buf)
	if err == nil {
		err = b.out.wait(ctx, batch)
	}
	if err != nil {
		return nil, fmt.Errorf("ipc: publish %d messages: %w", len(msgs), err)
	}
	return ids, nil
}

// encode turns a value to publish into a payload of the format: a core.Raw
// as jsonPayload or msgpackPayload decide, anything else encoded with JSON
// (JSONLines) or core.Msgpack (Msgpack), whatever Options.Codec says.
func (b *Broker) encode(v any) (data []byte, opaque bool, err error) {
	if r, ok := v.(core.Raw); ok {
		return b.classify(r)
	}
	if b.cfg.Format == Msgpack {
		data, err = core.Msgpack{}.Marshal(v)
		return data, false, err
	}
	data, err = json.Marshal(v)
	if err != nil {
		return nil, false, fmt.Errorf("json encode: %w", err)
	}
	return data, false, nil
}

// classify decides how already encoded bytes travel.
func (b *Broker) classify(raw []byte) (data []byte, opaque bool, err error) {
	if b.cfg.Format == Msgpack {
		data, opaque = msgpackPayload(raw)
	} else {
		data, opaque = jsonPayload(raw)
	}
	return data, opaque, nil
}

// payloadCodec is the codec that reads a received payload: the format's
// for a value, Options.Codec for opaque bytes.
func (b *Broker) payloadCodec(opaque bool) core.Codec {
	switch {
	case opaque:
		return b.cfg.Codec
	case b.cfg.Format == Msgpack:
		return core.Msgpack{}
	default:
		return core.JSON{}
	}
}

func (b *Broker) appendEnvelope(dst []byte, e *envelope) []byte {
	if b.cfg.Format == Msgpack {
		return appendMsgpackEnvelope(dst, e)
	}
	return appendJSONEnvelope(dst, e)
}

// maxPooledBuf bounds the encoding buffers kept for reuse.
const maxPooledBuf = 64 << 10

// send encodes e and writes it, returning once it was written.
func (b *Broker) send(ctx context.Context, e *envelope) error {
	bp, _ := b.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	buf := b.appendEnvelope((*bp)[:0], e)
	batch, err := b.out.enqueue(ctx, buf)
	if cap(buf) <= maxPooledBuf {
		*bp = buf
		b.bufs.Put(bp)
	}
	if err != nil {
		return err
	}
	return b.out.wait(ctx, batch)
}

// Done returns a channel that is closed when nothing more will be
// delivered: the input ended (EOF or a read error) and every consumer has
// finished handling what was read, or Close was called. A process at the
// end of a pipe can wait for it and then Close. The input is read only
// once Consume or Call was called.
func (b *Broker) Done() <-chan struct{} { return b.done }

// Err reports why reading stopped: nil while the input is being read (or
// before it is), io.EOF after a clean end of input, core.ErrClosed after
// Close, or the read error.
func (b *Broker) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.readErr
}

func (b *Broker) closeDone() { b.doneOnce.Do(func() { close(b.done) }) }

// Close stops every consumer, waits for their running handlers (whose
// Replies and Acks still work), writes what was being written, and stops
// reading. Messages received but not yet handled are dropped (IPC cannot
// redeliver them). Calls in progress return core.ErrClosed. It is
// idempotent; afterwards Publish, Call and Consume return core.ErrClosed.
//
// An input with a SetReadDeadline method (an *os.File pipe, a net.Conn)
// is interrupted with a past deadline and Close waits for the reading
// goroutine. Other inputs (os.Stdin is usually one) cannot be interrupted:
// their reading goroutine ends, discarding what it read, when a pending
// Read returns. A handler must not call Close: Close waits for handlers.
// Close returns the error of writing what was pending, if any.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed.Store(true)
		b.mu.Unlock()
		b.closeCancel()
		b.readOnce.Do(func() { // never started: nothing to stop
			b.mu.Lock()
			b.readErr = core.ErrClosed
			b.mu.Unlock()
			close(b.readerDone)
		})
		waitReader := b.interruptReader()
		b.consumers.Wait()
		b.finished.Store(true)
		b.closeErr = b.out.stop()
		b.closeDone()
		if waitReader {
			<-b.readerDone
		}
	})
	return b.closeErr
}

// interruptReader makes a pending Read return when the input allows it,
// and reports whether the reading goroutine will now end.
func (b *Broker) interruptReader() bool {
	select {
	case <-b.readerDone:
		return false
	default:
	}
	d, ok := b.in.(interface{ SetReadDeadline(time.Time) error })
	return ok && d.SetReadDeadline(time.Unix(1, 0)) == nil
}

// beginConsumer registers c unless the broker is closed. When the input
// has already ended, c gets a closed queue and ends at once.
func (b *Broker) beginConsumer(c *consumer) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return false
	}
	b.consumers.Add(1)
	if b.inputEnded {
		close(c.queue)
		return true
	}
	b.live[c] = struct{}{}
	for _, ev := range c.events {
		r := b.routes[ev]
		nr := &route{}
		if r != nil {
			nr.cs = append(nr.cs, r.cs...)
			nr.next = r.next
		}
		nr.cs = append(nr.cs, c)
		b.routes[ev] = nr
	}
	return true
}

// endConsumer unregisters c.
func (b *Broker) endConsumer(c *consumer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.live[c]; !ok {
		return
	}
	delete(b.live, c)
	for _, ev := range c.events {
		r := b.routes[ev]
		if r == nil {
			continue
		}
		nr := &route{next: r.next}
		for _, o := range r.cs {
			if o != c {
				nr.cs = append(nr.cs, o)
			}
		}
		if len(nr.cs) == 0 {
			delete(b.routes, ev)
		} else {
			b.routes[ev] = nr
		}
	}
}
