package gateway

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

// liveConn is an open connection and what it needs to write.
type liveConn struct {
	shard     int
	metrics   *Metrics
	ws        *websocket.Conn
	writeMu   sync.Mutex
	limiter   *sendLimiter
	closeOnce sync.Once
	// goroutines are the connection's own (heartbeat, closer): joined
	// before the shard leaves the connection.
	goroutines sync.WaitGroup
}

func (s *Shard) gatewayURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("gateway URL: %w", err)
	}
	if u.Path == "" {
		u.Path = "/"
	}
	q := url.Values{}
	q.Set("v", fmt.Sprint(s.cfg.Version))
	q.Set("encoding", "json")
	if c := s.cfg.Compress.query(); c != "" {
		q.Set("compress", c)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// connect runs one connection from dial to close.
func (s *Shard) connect(ctx context.Context) outcome {
	sess := s.Session()
	resume := sess.Resumable()
	base := s.cfg.URL
	if resume && sess.ResumeURL != "" {
		base = sess.ResumeURL
	}
	if !resume {
		// Wait for an identify slot before connecting, so that the wait
		// never stalls a live connection.
		s.setState(WaitingIdentify)
		if err := s.cfg.Identify.Wait(ctx, s.cfg.ID); err != nil {
			return outcome{action: discord.Resume, reason: "identify wait: " + err.Error()}
		}
	}
	target, err := s.gatewayURL(base)
	if err != nil {
		return outcome{action: discord.Fatal, reason: err.Error()}
	}
	s.setState(Connecting)
	ws, _, err := s.cfg.Dialer.DialContext(ctx, target, nil)
	if err != nil {
		return outcome{action: discord.Resume, reason: "dial: " + err.Error()}
	}
	// The connection's limiter keeps room for about two heartbeats per
	// window besides ordinary sends.
	lc := &liveConn{shard: s.cfg.ID, metrics: s.cfg.Metrics, ws: ws, limiter: newSendLimiter(s.cfg.SendLimit, 3, s.cfg.SendWindow)}
	s.mu.Lock()
	s.conn = lc
	s.status.Latency = 0 // this connection's is not measured yet
	s.mu.Unlock()
	connCtx, cancel := context.WithCancel(ctx)
	// The connection is left only once its goroutines (heartbeat, closer)
	// have returned: cancelling stops their waits and closing the socket
	// ends a write in progress.
	defer func() {
		cancel()
		s.mu.Lock()
		s.conn = nil
		s.mu.Unlock()
		_ = ws.Close()
		lc.goroutines.Wait()
	}()

	reader, err := newPayloadReader(ws, s.cfg.Compress, MaxInboundPayload)
	if err != nil {
		return outcome{action: discord.Fatal, reason: err.Error()}
	}
	defer reader.close()

	// Closing from outside: shutdown or a requested reconnect.
	var shutdown atomic.Bool
	lc.goroutines.Go(func() {
		select {
		case <-connCtx.Done():
			if ctx.Err() != nil {
				shutdown.Store(true)
				lc.close(discord.CloseResumable, "shutting down")
			}
		case <-s.reconnectC:
			lc.close(discord.CloseResumable, "reconnect requested")
		}
	})

	return s.readLoop(connCtx, lc, reader, resume, sess, &shutdown)
}

// close sends a close frame with code and closes the socket.
func (lc *liveConn) close(code int, reason string) {
	lc.closeOnce.Do(func() {
		msg := websocket.FormatCloseMessage(code, reason)
		_ = lc.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		_ = lc.ws.Close()
	})
}

// write sends one payload with opcode op, within the send limit.
func (lc *liveConn) write(ctx context.Context, op int, payload []byte, priority bool) error {
	token, err := lc.limiter.wait(ctx, priority)
	if err != nil {
		return err
	}
	lc.writeMu.Lock()
	defer lc.writeMu.Unlock()
	_ = lc.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err = lc.ws.WriteMessage(websocket.TextMessage, payload)
	lc.limiter.sentAt(token, time.Now())
	if err != nil {
		return err
	}
	lc.metrics.sent(lc.shard, op, "")
	return nil
}

// Send writes a worker's packet ({"op":…,"d":…}) to the gateway once the
// shard is ready, within the send limit. It refuses packets a worker may
// not send (see discord.ValidatePacket).
func (s *Shard) Send(ctx context.Context, packet []byte) error {
	op, err := discord.ValidatePacket(packet)
	if err != nil {
		return err
	}
	for {
		s.mu.Lock()
		ready, lc, st := s.ready, s.conn, s.state
		s.mu.Unlock()
		if st == Failed || st == Stopped {
			return fmt.Errorf("shard %d is %s: %w", s.cfg.ID, st, ErrNotReady)
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return fmt.Errorf("shard %d: waiting to be ready: %w", s.cfg.ID, ctx.Err())
		}
		if lc == nil {
			// Ready was observed with an older snapshot; look again.
			s.mu.Lock()
			lc = s.conn
			s.mu.Unlock()
			if lc == nil {
				continue
			}
		}
		return lc.write(ctx, op, packet, false)
	}
}
