package embedded

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// pipeLimit bounds the bytes one direction of an in-process connection
// holds unread, as a socket buffer does: a writer waits while it is full.
const pipeLimit = 1 << 20

// keepCap is the buffer capacity a drained direction keeps for its next
// writes; a larger one (after a burst) is given back.
const keepCap = 512 << 10

// errPeerClosed is what a write to a connection whose other end has closed
// returns, wrapped in a *net.OpError. It is io.EOF underneath, so that
// go-redis retries the command on a new connection, as it does when a TCP
// server has closed the connection (the write lands in the socket, the
// read sees EOF): nothing of the write reached the server.
var errPeerClosed = fmt.Errorf("connection closed by the other end: %w", io.EOF)

// addr is the address of either end of an in-process connection.
type addr string

// Network returns "embedded".
func (a addr) Network() string { return "embedded" }

// String returns the address: the server's "127.0.0.1:PORT", or the
// client end's name.
func (a addr) String() string { return string(a) }

// halfPipe is one direction of an in-process connection: what one end
// writes and the other reads. Either end's operations may run
// concurrently.
type halfPipe struct {
	mu      sync.Mutex
	buf     []byte // unread bytes are buf[off:]
	off     int
	wClosed bool // the writing end has closed: the reader sees EOF once drained
	rClosed bool // the reading end has closed: writes fail, what is unread is dropped

	readable chan struct{} // cap 1: bytes arrived, or an end closed
	writable chan struct{} // cap 1: room was made, or an end closed
}

func newHalfPipe() *halfPipe {
	return &halfPipe{readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
}

// notify wakes one waiter on ch, if none is woken already.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// read copies unread bytes to b: n > 0, or eof when the writer has closed
// and nothing is left, or neither when it must wait for readable.
func (p *halfPipe) read(b []byte) (n int, eof bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.off == len(p.buf) {
		if p.wClosed {
			notify(p.readable) // every other reader sees EOF too
		}
		return 0, p.wClosed
	}
	n = copy(b, p.buf[p.off:])
	p.off += n
	if p.off == len(p.buf) {
		p.off = 0
		if cap(p.buf) > keepCap {
			p.buf = nil
		} else {
			p.buf = p.buf[:0]
		}
	} else {
		notify(p.readable) // more for another reader
	}
	notify(p.writable)
	return n, false
}

// write appends as much of b as there is room for: n, or closed when the
// reader has closed, or neither when it must wait for writable.
func (p *halfPipe) write(b []byte) (n int, closed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rClosed || p.wClosed {
		notify(p.writable) // every other writer sees it too
		return 0, true
	}
	room := pipeLimit - (len(p.buf) - p.off)
	if room <= 0 {
		return 0, false
	}
	if p.off > 0 && len(p.buf)+min(room, len(b)) > cap(p.buf) {
		// Move the unread bytes to the front rather than grow.
		p.buf = p.buf[:copy(p.buf, p.buf[p.off:])]
		p.off = 0
	}
	n = min(room, len(b))
	p.buf = append(p.buf, b[:n]...)
	notify(p.readable)
	if len(p.buf)-p.off < pipeLimit {
		notify(p.writable) // room for another writer
	}
	return n, false
}

// closeWrite is the writing end closing: the reader drains, then sees EOF.
func (p *halfPipe) closeWrite() {
	p.mu.Lock()
	p.wClosed = true
	p.mu.Unlock()
	notify(p.readable)
	notify(p.writable)
}

// closeRead is the reading end closing: unread bytes are dropped and
// writes fail.
func (p *halfPipe) closeRead() {
	p.mu.Lock()
	p.rClosed = true
	p.buf, p.off = nil, 0
	p.mu.Unlock()
	notify(p.readable)
	notify(p.writable)
}

// deadline is a read or write deadline of one end. Setting it costs no
// timer: only an operation that waits arms one, and a change wakes the
// operations waiting.
type deadline struct {
	mu      sync.Mutex
	t       time.Time     // zero: none
	waiters int           // operations waiting under t
	changed chan struct{} // closed (and replaced) when t changes while some wait
	timer   *time.Timer   // reused by one waiter at a time
	busy    bool          // timer is in use
}

// set sets the deadline; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	d.t = t
	if d.waiters > 0 && d.changed != nil {
		close(d.changed)
		d.changed = nil
	}
	d.mu.Unlock()
}

// passed reports whether the deadline has passed.
func (d *deadline) passed() bool {
	d.mu.Lock()
	t := d.t
	d.mu.Unlock()
	return !t.IsZero() && !time.Now().Before(t)
}

// waiter is one operation waiting under a deadline (begin to end).
type waiter struct {
	changed <-chan struct{}
	expired <-chan time.Time // nil without a deadline
	timer   *time.Timer
	owned   bool // timer is the deadline's own
}

// begin starts a wait: ok is false when the deadline has passed already.
func (d *deadline) begin() (w waiter, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.t.IsZero() {
		dur := time.Until(d.t)
		if dur <= 0 {
			return w, false
		}
		switch {
		case d.timer != nil && !d.busy:
			d.timer.Reset(dur)
			w.timer, w.owned = d.timer, true
			d.busy = true
		case d.timer == nil:
			d.timer = time.NewTimer(dur)
			w.timer, w.owned = d.timer, true
			d.busy = true
		default:
			w.timer = time.NewTimer(dur)
		}
		w.expired = w.timer.C
	}
	if d.changed == nil {
		d.changed = make(chan struct{})
	}
	d.waiters++
	w.changed = d.changed
	return w, true
}

// end ends a wait begun with begin.
func (d *deadline) end(w waiter) {
	if w.timer != nil {
		w.timer.Stop()
	}
	d.mu.Lock()
	d.waiters--
	if w.owned {
		d.busy = false
	}
	d.mu.Unlock()
}

// conn is one end of an in-process connection (see newConnPair): a
// net.Conn with buffered directions, deadlines, and close as on TCP: what
// an end wrote before it closed is still read by the other, which then
// sees io.EOF; writes to an end that has closed fail.
type conn struct {
	in, out       *halfPipe
	local, remote addr
	rDead, wDead  deadline
	closeOnce     sync.Once
	closed        chan struct{} // closed by Close: wakes this end's waiters
}

// newConnPair returns the two ends of a new in-process connection.
func newConnPair(clientAddr, serverAddr string) (client, server *conn) {
	c2s, s2c := newHalfPipe(), newHalfPipe()
	client = &conn{in: s2c, out: c2s, local: addr(clientAddr), remote: addr(serverAddr),
		closed: make(chan struct{})}
	server = &conn{in: c2s, out: s2c, local: addr(serverAddr), remote: addr(clientAddr),
		closed: make(chan struct{})}
	return client, server
}

func (c *conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "embedded", Source: c.local, Addr: c.remote, Err: err}
}

// Read reads what the other end wrote, waiting for some when there is
// none.
func (c *conn) Read(b []byte) (int, error) {
	for {
		switch {
		case isClosed(c.closed):
			return 0, c.opError("read", net.ErrClosed)
		case c.rDead.passed():
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
		if len(b) == 0 {
			return 0, nil
		}
		n, eof := c.in.read(b)
		if n > 0 {
			return n, nil
		}
		if eof {
			return 0, io.EOF
		}
		w, ok := c.rDead.begin()
		if !ok {
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
		select {
		case <-c.in.readable:
		case <-c.closed:
		case <-w.changed:
		case <-w.expired:
		}
		c.rDead.end(w)
	}
}

// Write writes all of b for the other end, waiting for room as needed.
func (c *conn) Write(b []byte) (int, error) {
	written := 0
	for {
		switch {
		case isClosed(c.closed):
			return written, c.opError("write", net.ErrClosed)
		case c.wDead.passed():
			return written, c.opError("write", os.ErrDeadlineExceeded)
		}
		n, closed := c.out.write(b[written:])
		written += n
		if closed {
			return written, c.opError("write", errPeerClosed)
		}
		if written == len(b) {
			return written, nil
		}
		if n > 0 {
			continue
		}
		w, ok := c.wDead.begin()
		if !ok {
			return written, c.opError("write", os.ErrDeadlineExceeded)
		}
		select {
		case <-c.out.writable:
		case <-c.closed:
		case <-w.changed:
		case <-w.expired:
		}
		c.wDead.end(w)
	}
}

// Close closes this end: the other reads what was written before, then
// io.EOF, and its writes fail. A second Close returns an error.
func (c *conn) Close() error {
	err := c.opError("close", net.ErrClosed)
	c.closeOnce.Do(func() {
		err = nil
		close(c.closed)
		c.out.closeWrite()
		c.in.closeRead()
	})
	return err
}

// LocalAddr returns this end's address.
func (c *conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the other end's address.
func (c *conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read and write deadlines.
func (c *conn) SetDeadline(t time.Time) error {
	if isClosed(c.closed) {
		return c.opError("set", net.ErrClosed)
	}
	c.rDead.set(t)
	c.wDead.set(t)
	return nil
}

// SetReadDeadline sets the deadline of Read, waiting ones included.
func (c *conn) SetReadDeadline(t time.Time) error {
	if isClosed(c.closed) {
		return c.opError("set", net.ErrClosed)
	}
	c.rDead.set(t)
	return nil
}

// SetWriteDeadline sets the deadline of Write, waiting ones included.
func (c *conn) SetWriteDeadline(t time.Time) error {
	if isClosed(c.closed) {
		return c.opError("set", net.ErrClosed)
	}
	c.wDead.set(t)
	return nil
}

// isClosed reports whether ch is closed.
func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
