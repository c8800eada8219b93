package ipc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/spectacles-go/spectacles/core"
)

// maxBatch is the size above which writers wait for the batch being
// gathered to be written before adding to the next one: it bounds the
// memory a slow reader of the output can make the broker hold.
const maxBatch = 1 << 20

// outWriter serialises every write of a broker onto its output. Callers
// append whole encoded messages to the batch being gathered; one goroutine
// writes each batch with a single Write call (and Flush, when the output
// has one) and then wakes the callers whose messages it held. Messages
// never interleave, and concurrent callers share one system call.
type outWriter struct {
	w     io.Writer
	flush func() error // the output's Flush, if any
	log   *slog.Logger

	mu      sync.Mutex
	cur     *outBatch // being gathered
	stopped bool
	err     error // sticky: the first write failure

	kick  chan struct{} // cap 1: there is something to write
	quit  chan struct{} // closed by stop
	done  chan struct{} // closed when the loop has returned
	spare []byte        // buffer of the last written batch, for reuse
	final error         // error of the write made by stop; read after done
}

type outBatch struct {
	buf  []byte
	done chan struct{} // closed once buf was written (or failed)
	err  error         // set before done is closed
}

func newOutWriter(w io.Writer, log *slog.Logger) *outWriter {
	o := &outWriter{
		w:    w,
		log:  log,
		cur:  &outBatch{done: make(chan struct{})},
		kick: make(chan struct{}, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	if f, ok := w.(interface{ Flush() error }); ok {
		o.flush = f.Flush
	}
	go o.loop()
	return o
}

// enqueue appends the encoded messages in p (one or more, complete) to
// the batch being gathered and returns it; p may be reused at once. When
// that batch is already full it first waits, within ctx, for it to be
// written.
func (o *outWriter) enqueue(ctx context.Context, p []byte) (*outBatch, error) {
	o.mu.Lock()
	for {
		if o.err != nil {
			err := o.err
			o.mu.Unlock()
			return nil, err
		}
		if o.stopped {
			o.mu.Unlock()
			return nil, core.ErrClosed
		}
		if len(o.cur.buf) == 0 || len(o.cur.buf)+len(p) <= maxBatch {
			break
		}
		full := o.cur
		o.mu.Unlock()
		select {
		case <-full.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		o.mu.Lock()
	}
	b := o.cur
	b.buf = append(b.buf, p...)
	o.mu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
	return b, nil
}

// wait returns once batch was written, with the write's error. When ctx
// ends first it returns ctx's error; the batch may still be written.
func (o *outWriter) wait(ctx context.Context, batch *outBatch) error {
	select {
	case <-batch.done:
		return batch.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (o *outWriter) loop() {
	defer close(o.done)
	for {
		select {
		case <-o.kick:
			o.writeBatch()
		case <-o.quit:
			o.final = o.writeBatch() // what was gathered before stop
			return
		}
	}
}

// writeBatch takes the batch being gathered, writes it and returns the
// error of writing it.
func (o *outWriter) writeBatch() error {
	o.mu.Lock()
	b := o.cur
	if len(b.buf) == 0 {
		o.mu.Unlock()
		return nil
	}
	o.cur = &outBatch{buf: o.spare, done: make(chan struct{})}
	o.spare = nil
	err := o.err
	o.mu.Unlock()

	if err == nil {
		_, err = o.w.Write(b.buf)
		if err == nil && o.flush != nil {
			err = o.flush()
		}
		if err != nil {
			err = fmt.Errorf("ipc: write output: %w", err)
			o.log.Error("writing the output failed; the broker can no longer send", "err", err)
			o.mu.Lock()
			o.err = err
			o.mu.Unlock()
		}
	}
	b.err = err
	buf := b.buf[:0]
	close(b.done)
	if cap(buf) <= maxBatch*2 {
		o.mu.Lock()
		o.spare = buf
		o.mu.Unlock()
	}
	return err
}

// stop writes what was gathered, refuses further writes and returns once
// the writing goroutine has ended, with the error of that last write. A
// Write blocked on an output nobody reads blocks stop too. It is called
// once.
func (o *outWriter) stop() error {
	o.mu.Lock()
	o.stopped = true
	o.mu.Unlock()
	close(o.quit)
	<-o.done
	return o.final
}
