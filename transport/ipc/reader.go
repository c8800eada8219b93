package ipc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"

	"github.com/spectacles-go/spectacles/core"
)

const (
	// readChunk is the size of the reads from the input.
	readChunk = 64 << 10
	// maxLogExcerpt bounds the bytes of a malformed message put in a log.
	maxLogExcerpt = 160
)

// read runs on its own goroutine for the broker's life: it reads the input
// until EOF, a read error or Close, then ends the input.
func (b *Broker) read() {
	defer close(b.readerDone)
	var err error
	if b.cfg.Format == Msgpack {
		err = b.readMsgpack()
	} else {
		err = b.readLines()
	}
	switch {
	case b.closed.Load():
		err = core.ErrClosed
	case err == nil:
		err = io.EOF
		b.log.Info("input ended")
	default:
		b.log.Error("reading the input failed; no more messages will arrive", "err", err)
	}
	b.endInput(err)
}

// endInput records why reading stopped, lets the consumers finish what
// they received, fails the calls still waiting, and closes Done once the
// consumers are done.
func (b *Broker) endInput(why error) {
	b.mu.Lock()
	b.readErr = why
	b.inputEnded = true
	waitFor := make([]*consumer, 0, len(b.live))
	for c := range b.live {
		close(c.queue) // the reading goroutine is the only sender
		waitFor = append(waitFor, c)
	}
	b.mu.Unlock()
	close(b.inputDone)
	for _, c := range waitFor {
		<-c.done
	}
	b.closeDone()
}

// readLines reads JSONLines input. It returns nil at EOF.
func (b *Broker) readLines() error {
	br := bufio.NewReaderSize(b.in, readChunk)
	limit := b.cfg.MaxMessageSize
	var (
		long     []byte // a line longer than the reader's buffer, so far
		skipping bool   // inside a line longer than limit
		lineNo   int
	)
	for {
		chunk, err := br.ReadSlice('\n')
		if b.closed.Load() {
			return nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if !skipping {
				if len(long)+len(chunk) > limit {
					skipping = true
					long = nil
				} else {
					long = append(long, chunk...)
				}
			}
			continue
		}
		if len(chunk) > 0 || len(long) > 0 || skipping {
			lineNo++
			line := chunk
			if len(long) > 0 {
				long = append(long, chunk...)
				line = long
			}
			switch {
			case skipping || len(line) > limit+2: // +2: the line break
				b.log.Warn("skipping a line longer than MaxMessageSize", "line", lineNo, "max", limit)
			default:
				b.handleLine(line, lineNo)
			}
			skipping = false
			if cap(long) > readChunk*4 {
				long = nil
			} else {
				long = long[:0]
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// handleLine parses and dispatches one line; a malformed line is logged
// and skipped.
func (b *Broker) handleLine(line []byte, lineNo int) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return
	}
	e, err := parseJSONEnvelope(line)
	if err != nil {
		b.log.Warn("skipping a malformed line", "line", lineNo, "err", err, "text", excerpt(line))
		return
	}
	b.receive(e)
}

func excerpt(p []byte) string {
	if len(p) > maxLogExcerpt {
		return strconv.Quote(string(p[:maxLogExcerpt])) + "…"
	}
	return strconv.Quote(string(p))
}

// readMsgpack reads Msgpack input: msgpack values back to back. A value
// that is not an envelope is logged and skipped whole; bytes that are not
// msgpack, or a value longer than MaxMessageSize, are skipped one byte at
// a time until a value parses again. It returns nil at EOF.
func (b *Broker) readMsgpack() error {
	limit := b.cfg.MaxMessageSize
	buf := make([]byte, 0, readChunk)
	start := 0
	skipped := 0 // bytes skipped since the last good value
	var offset int64
	var scan msgpackScan // of the value at buf[start:], resumed as more arrives
	for {
		for start < len(buf) {
			n, err := scan.scan(buf[start:], limit)
			if errors.Is(err, errShort) {
				break
			}
			scan = msgpackScan{}
			if err != nil {
				if skipped == 0 {
					b.log.Warn("skipping input that is not msgpack, until a value parses", "offset", offset, "err", err)
				}
				skipped++
				start++
				offset++
				continue
			}
			value := buf[start : start+n]
			e, perr := parseMsgpackEnvelope(value)
			if perr != nil {
				b.log.Warn("skipping a msgpack value that is not a message", "offset", offset, "err", perr, "bytes", excerpt(value))
			} else {
				if skipped > 0 {
					b.log.Info("input parses again", "skipped_bytes", skipped)
					skipped = 0
				}
				b.receive(e)
			}
			start += n
			offset += int64(n)
		}
		// Keep the unparsed tail at the start of buf, and room to read.
		if start > 0 {
			buf = buf[:copy(buf, buf[start:])]
			start = 0
		}
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*cap(buf), limit+readChunk))
			copy(grown, buf)
			buf = grown
		} else if cap(buf) > 4*readChunk && len(buf) < readChunk {
			buf = append(make([]byte, 0, readChunk), buf...)
		}
		n, err := b.in.Read(buf[len(buf):cap(buf)])
		if b.closed.Load() {
			return nil
		}
		buf = buf[:len(buf)+n]
		if err != nil {
			if errors.Is(err, io.EOF) {
				if len(buf) > 0 {
					b.log.Warn("input ended inside a msgpack value", "bytes", len(buf))
				}
				return nil
			}
			return err
		}
	}
}

// receive routes one envelope: to the call it answers, or to a consumer
// of its event.
func (b *Broker) receive(e *envelope) {
	codec := b.payloadCodec(e.opaque)
	if e.replyTo != "" {
		if !b.calls.resolve(e.replyTo, "", e.data, codec) {
			b.log.Debug("reply to no call of this broker ignored", "event", e.event, "reply_to", e.replyTo)
		}
		return
	}
	// A peer that only knows {"event","data"} may answer a call by writing
	// the event {event}:{id}, as Redis replies are published.
	if b.calls.pending.Load() > 0 {
		if i := lastColon(e.event); i >= 0 && b.calls.resolve(e.event[i+1:], e.event[:i], e.data, codec) {
			return
		}
	}
	id := e.id
	if id == "" {
		id = b.newID()
	}
	m := core.NewMessage(e.event, id, e.data, 1, codec, b.settler)
	m.Headers = e.headers
	b.deliver(m)
}

func lastColon(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ':' {
			return i
		}
	}
	return -1
}

// deliver queues m for one consumer of its event (taking turns when
// several asked for it); m is dropped when none did.
func (b *Broker) deliver(m *core.Message) {
	b.mu.Lock()
	var c *consumer
	if r := b.routes[m.Event]; r != nil {
		c = r.cs[r.next%uint64(len(r.cs))]
		r.next++
	}
	b.mu.Unlock()
	if c == nil {
		return
	}
	select {
	case c.queue <- m:
	case <-c.runCtx.Done(): // the consumer is stopping: dropped
	}
}
