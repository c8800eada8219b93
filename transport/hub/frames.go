package hub

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// framer reads and writes whole commands over one connection: websocket
// messages, or newline-terminated lines on TCP.
type framer interface {
	// ReadFrame returns the next command's bytes, valid until the next
	// call. A frame larger than the limit is skipped and reported with an
	// error wrapping ErrTooLarge; the connection stays usable.
	ReadFrame() ([]byte, error)
	// WriteFrames writes each frame as one command.
	WriteFrames(frames [][]byte) error
	// Close closes the connection.
	Close() error
	// Remote is the peer's address.
	Remote() string
}

// tcpFramer speaks newline-delimited JSON on a stream. Concurrent writers
// commit together: while one writes, the others append to the next batch,
// which one of them then writes, so that many publishers share syscalls.
type tcpFramer struct {
	c   net.Conn
	r   *bufio.Reader
	max int
	buf []byte

	wmu      sync.Mutex
	wcond    *sync.Cond
	pending  []byte // the next batch
	spare    []byte
	appended uint64 // frames appended to batches
	written  uint64 // frames of batches written
	writing  bool
	werr     error
}

func newTCPFramer(c net.Conn, r *bufio.Reader, max int) *tcpFramer {
	if r == nil {
		r = bufio.NewReaderSize(c, 64<<10)
	}
	f := &tcpFramer{c: c, r: r, max: max}
	f.wcond = sync.NewCond(&f.wmu)
	return f
}

func (f *tcpFramer) ReadFrame() ([]byte, error) {
	f.buf = f.buf[:0]
	tooLarge := false
	for {
		chunk, err := f.r.ReadSlice('\n')
		if !tooLarge {
			if len(f.buf)+len(chunk) > f.max+2 { // the limit, plus "\r\n"
				tooLarge = true
				f.buf = f.buf[:0]
			} else {
				f.buf = append(f.buf, chunk...)
			}
		}
		switch {
		case err == nil:
			if tooLarge {
				return nil, fmt.Errorf("%w: a line longer than %d bytes", ErrTooLarge, f.max)
			}
			line := bytes.TrimRight(f.buf, "\r\n")
			if len(bytes.TrimSpace(line)) == 0 {
				f.buf = f.buf[:0]
				continue // blank lines are allowed between commands
			}
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(bytes.TrimSpace(f.buf)) > 0 && !tooLarge:
			return bytes.TrimRight(f.buf, "\r\n"), nil // a last line without a newline
		default:
			return nil, err
		}
	}
}

func (f *tcpFramer) WriteFrames(frames [][]byte) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	for _, fr := range frames {
		f.pending = append(f.pending, fr...)
		f.pending = append(f.pending, '\n')
	}
	f.appended += uint64(len(frames))
	mine := f.appended
	for f.written < mine && f.werr == nil {
		if f.writing {
			f.wcond.Wait()
			continue
		}
		batch, upTo := f.pending, f.appended
		f.pending, f.spare = f.spare[:0], nil
		f.writing = true
		f.wmu.Unlock()
		_, err := f.c.Write(batch)
		f.wmu.Lock()
		f.writing = false
		if cap(batch) <= 1<<20 {
			f.spare = batch[:0]
		}
		if err != nil {
			f.werr = err
		}
		f.written = upTo
		f.wcond.Broadcast()
	}
	return f.werr
}

func (f *tcpFramer) Close() error   { return f.c.Close() }
func (f *tcpFramer) Remote() string { return f.c.RemoteAddr().String() }

// wsFramer speaks one command per websocket message (text or binary).
type wsFramer struct {
	c   *websocket.Conn
	max int
	buf bytes.Buffer

	wmu sync.Mutex
}

// wsPongWait is how long a websocket peer may stay silent (no message, no
// pong) before the connection is considered dead; pings go out every
// wsPingEvery.
const (
	wsPongWait  = 15 * time.Second
	wsPingEvery = 5 * time.Second
	writeWait   = 10 * time.Second
)

// newWSFramer wraps c. A peer silent for wsPongWait (no message, no ping
// or pong: the hub pings every wsPingEvery, and its clients answer) is
// taken as gone.
func newWSFramer(c *websocket.Conn, max int) *wsFramer {
	f := &wsFramer{c: c, max: max}
	alive := func() error { return c.SetReadDeadline(time.Now().Add(wsPongWait)) }
	_ = alive()
	c.SetPongHandler(func(string) error { return alive() })
	c.SetPingHandler(func(data string) error {
		_ = alive()
		err := c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeWait))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	return f
}

func (f *wsFramer) ReadFrame() ([]byte, error) {
	for {
		typ, r, err := f.c.NextReader()
		if err != nil {
			return nil, err
		}
		_ = f.c.SetReadDeadline(time.Now().Add(wsPongWait))
		if typ != websocket.TextMessage && typ != websocket.BinaryMessage {
			continue
		}
		f.buf.Reset()
		n, err := f.buf.ReadFrom(io.LimitReader(r, int64(f.max)+1))
		if err != nil {
			return nil, err
		}
		if n > int64(f.max) {
			if _, err := io.Copy(io.Discard, r); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("%w: a message longer than %d bytes", ErrTooLarge, f.max)
		}
		return f.buf.Bytes(), nil
	}
}

func (f *wsFramer) WriteFrames(frames [][]byte) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	_ = f.c.SetWriteDeadline(time.Now().Add(writeWait))
	for _, fr := range frames {
		if err := f.c.WriteMessage(websocket.TextMessage, fr); err != nil {
			return err
		}
	}
	return nil
}

// ping sends a websocket ping.
func (f *wsFramer) ping() error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return f.c.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait))
}

// Close sends a normal close frame, then closes the connection.
func (f *wsFramer) Close() error {
	f.wmu.Lock()
	_ = f.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	f.wmu.Unlock()
	return f.c.Close()
}

func (f *wsFramer) Remote() string { return f.c.RemoteAddr().String() }

// outbox queues what is to be written to one connection, so that the hub
// never waits on a slow peer while it holds its lock. A writer goroutine
// drains it.
type outbox struct {
	mu     sync.Mutex
	frames [][]byte
	bytes  int
	max    int
	closed bool
	wake   chan struct{} // cap 1
}

func newOutbox(max int) *outbox { return &outbox{max: max, wake: make(chan struct{}, 1)} }

// push queues a frame; it reports false when the outbox is closed or over
// its byte bound (the peer does not read).
func (o *outbox) push(frame []byte) bool {
	o.mu.Lock()
	if o.closed || o.bytes+len(frame) > o.max {
		o.mu.Unlock()
		return false
	}
	o.frames = append(o.frames, frame)
	o.bytes += len(frame)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return true
}

// take returns what is queued, waiting until there is something or the
// outbox closes (then it returns what is left, and false once empty).
func (o *outbox) take(done <-chan struct{}) ([][]byte, bool) {
	for {
		o.mu.Lock()
		if len(o.frames) > 0 {
			fs := o.frames
			o.frames, o.bytes = nil, 0
			o.mu.Unlock()
			return fs, true
		}
		closed := o.closed
		o.mu.Unlock()
		if closed {
			return nil, false
		}
		select {
		case <-o.wake:
		case <-done:
			o.close()
		}
	}
}

// close stops accepting frames; take returns what is left, then false.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}
