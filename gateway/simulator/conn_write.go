package simulator

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/gorilla/websocket"
	"github.com/klauspost/compress/zlib"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

// enqueue hands m to the writer; a client so slow that the control queue
// is full is dropped.
func (c *conn) enqueue(m outMsg) {
	select {
	case c.ctrl <- m:
	default:
		c.s.log.Debug("control queue full: dropping connection", "conn", c.id)
		c.abort()
	}
}

// sendOp queues a non-dispatch payload and records it.
func (c *conn) sendOp(op int, d any) {
	b, err := json.Marshal(struct {
		T  *string `json:"t"`
		S  *int64  `json:"s"`
		Op int     `json:"op"`
		D  any     `json:"d"`
	}{Op: op, D: d})
	if err != nil {
		c.s.log.Error("rendering payload", "op", op, "err", err)
		return
	}
	var raw json.RawMessage
	var p struct {
		D json.RawMessage `json:"d"`
	}
	if json.Unmarshal(b, &p) == nil {
		raw = p.D
	}
	c.mu.Lock()
	shard := c.shardID
	c.mu.Unlock()
	c.s.record(func(r *records) {
		r.sent = append(r.sent, SentRecord{Conn: c.id, ShardID: shard, Time: time.Now(), Op: op, D: raw})
	})
	c.enqueue(outMsg{data: b})
}

// writeLoop owns every write: control payloads first, then the attached
// session's dispatches in sequence order.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	defer func() {
		if c.zst != nil {
			_ = c.zst.Close()
		}
	}()
	batch := make([]entry, 0, 256)
	for {
		select {
		case m := <-c.ctrl:
			if !c.writeOut(m) {
				return
			}
			continue
		case <-c.done:
			return
		default:
		}
		if !c.closing.Load() {
			var overrun bool
			batch, overrun = c.fetch(batch[:0])
			if overrun {
				c.closeWith(discord.CloseUnknownError, "Client too slow: replay buffer overrun.")
				continue
			}
			if len(batch) > 0 {
				if !c.writeBatch(batch) {
					return
				}
				clear(batch)
				select {
				case c.progress <- struct{}{}:
				default:
				}
				continue
			}
		}
		select {
		case m := <-c.ctrl:
			if !c.writeOut(m) {
				return
			}
		case <-c.wake:
		case <-c.done:
			return
		}
	}
}

// fetch appends to dst the next dispatches of the attached session. It
// reports overrun when the next one was already evicted.
func (c *conn) fetch(dst []entry) ([]entry, bool) {
	c.mu.Lock()
	sess, next, gen := c.sess, c.nextSeq, c.gen
	c.mu.Unlock()
	if sess == nil {
		return dst, false
	}
	sess.mu.Lock()
	if sess.conn != c {
		sess.mu.Unlock()
		return dst, false
	}
	if next < sess.firstLocked() {
		sess.mu.Unlock()
		return dst, true
	}
	for next <= sess.seq && len(dst) < cap(dst) {
		dst = append(dst, sess.atLocked(next))
		next++
	}
	sess.mu.Unlock()
	c.mu.Lock()
	if c.gen != gen {
		dst = dst[:0] // detached meanwhile: these belong to a later Resume
	} else {
		c.nextSeq = next
	}
	c.mu.Unlock()
	return dst, false
}

// writeBatch writes dispatches; false means the connection failed.
func (c *conn) writeBatch(batch []entry) bool {
	for _, e := range batch {
		if c.closing.Load() {
			return true
		}
		c.counters.lastSeq.Store(e.seq) // before the write: a heartbeat may follow at once
		if err := c.writeMsg(e.data); err != nil {
			c.s.log.Debug("write failed", "conn", c.id, "err", err)
			c.abort()
			return false
		}
		c.counters.dispatches.Add(1)
	}
	return true
}

// writeOut writes a control payload or a close frame.
func (c *conn) writeOut(m outMsg) bool {
	if c.closeSent {
		return true
	}
	if m.closeCode != 0 {
		c.closeSent = true
		deadline := time.Now().Add(c.s.cfg.WriteTimeout)
		err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(m.closeCode, m.reason), deadline)
		c.mu.Lock()
		if !c.torn {
			c.forceTimer = time.AfterFunc(c.s.cfg.CloseTimeout, c.abort)
		}
		c.mu.Unlock()
		if err != nil {
			c.abort()
			return false
		}
		return true
	}
	if err := c.writeMsg(m.data); err != nil {
		c.s.log.Debug("write failed", "conn", c.id, "err", err)
		c.abort()
		return false
	}
	return true
}

// writeMsg writes one gateway payload with the connection's compression.
func (c *conn) writeMsg(data []byte) error {
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout)); err != nil {
		return fmt.Errorf("set write deadline: %w", err)
	}
	switch c.compress {
	case compressZlib:
		c.zbuf.Reset()
		if _, err := c.zw.Write(data); err != nil {
			return fmt.Errorf("zlib: %w", err)
		}
		if err := c.zw.Flush(); err != nil { // Z_SYNC_FLUSH: ends with 00 00 ff ff
			return fmt.Errorf("zlib flush: %w", err)
		}
		out := c.zbuf.Bytes()
		chunk := c.s.cfg.ZlibChunkSize
		if chunk <= 0 {
			chunk = len(out)
		}
		for len(out) > 0 {
			n := min(chunk, len(out))
			if err := c.ws.WriteMessage(websocket.BinaryMessage, out[:n]); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			out = out[n:]
		}
		return nil
	case compressZstd:
		c.zbuf.Reset()
		if _, err := c.zst.Write(data); err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
		if err := c.zst.Flush(); err != nil { // ends a block, not the frame
			return fmt.Errorf("zstd flush: %w", err)
		}
		if err := c.ws.WriteMessage(websocket.BinaryMessage, c.zbuf.Bytes()); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	}
	if c.payloadZlib.Load() {
		c.zbuf.Reset()
		zw, _ := zlib.NewWriterLevel(&c.zbuf, zlib.DefaultCompression)
		if _, err := zw.Write(data); err != nil {
			return fmt.Errorf("zlib: %w", err)
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("zlib: %w", err)
		}
		if err := c.ws.WriteMessage(websocket.BinaryMessage, c.zbuf.Bytes()); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, data); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// overLimit records a send and reports whether it exceeds SendLimit per
// SendWindow (a sliding window).
func (c *conn) overLimit(now time.Time) bool {
	lim := c.s.cfg.SendLimit
	if len(c.sends) < lim {
		c.sends = append(c.sends, now)
		return false
	}
	oldest := c.sends[c.sendIdx]
	c.sends[c.sendIdx] = now
	c.sendIdx = (c.sendIdx + 1) % lim
	return now.Sub(oldest) < c.s.cfg.SendWindow
}
