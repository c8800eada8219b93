package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"

	"github.com/spectacles-go/spectacles/gateway/discord"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// payload is a gateway payload as a client sees it.
type payload struct {
	Op int             `json:"op"`
	D  json.RawMessage `json:"d"`
	S  *int64          `json:"s"`
	T  *string         `json:"t"`
}

func (p payload) String() string {
	t := "null"
	if p.T != nil {
		t = *p.T
	}
	s := "null"
	if p.S != nil {
		s = fmt.Sprint(*p.S)
	}
	return fmt.Sprintf("op=%d t=%s s=%s", p.Op, t, s)
}

func (p payload) event() string {
	if p.T == nil {
		return ""
	}
	return *p.T
}

// testClient is a minimal gateway client for the tests: it decodes plain,
// zlib-stream and zstd-stream connections into payloads.
type testClient struct {
	t        testing.TB
	ws       *websocket.Conn
	compress string
	msgs     chan payload

	wsMessages atomic.Int64 // websocket messages read
	decoded    atomic.Int64 // payloads decoded
	wg         sync.WaitGroup
	done       chan struct{}
	mu         sync.Mutex
	err        error // the read error that ended the connection
	closeOnce  sync.Once
}

// dial connects to base (a ws:// URL without query) with compress ("",
// zlib-stream or zstd-stream).
func dial(t testing.TB, base, compress string) *testClient {
	t.Helper()
	q := "/?v=10&encoding=json"
	if compress != "" {
		q += "&compress=" + compress
	}
	return dialRaw(t, base+q, compress)
}

// dialRaw connects to a full URL.
func dialRaw(t testing.TB, url, compress string) *testClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	c := &testClient{t: t, ws: ws, compress: compress, msgs: make(chan payload, 1<<16), done: make(chan struct{})}
	c.start()
	t.Cleanup(c.Close)
	return c
}

func (c *testClient) setErr(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

func (c *testClient) start() {
	if c.compress == "" {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer close(c.msgs)
			defer close(c.done)
			for {
				_, data, err := c.ws.ReadMessage()
				if err != nil {
					c.setErr(err)
					return
				}
				c.wsMessages.Add(1)
				var p payload
				if err := json.Unmarshal(data, &p); err != nil {
					c.setErr(fmt.Errorf("decode: %w", err))
					return
				}
				c.decoded.Add(1)
				c.msgs <- p
			}
		}()
		return
	}
	pr, pw := io.Pipe()
	c.wg.Add(2)
	go func() { // websocket → pipe
		defer c.wg.Done()
		defer close(c.done)
		var buf []byte
		suffix := []byte{0, 0, 0xff, 0xff}
		for {
			_, data, err := c.ws.ReadMessage()
			if err != nil {
				c.setErr(err)
				pw.CloseWithError(err)
				return
			}
			c.wsMessages.Add(1)
			if c.compress == compressZlib {
				buf = append(buf, data...)
				if !bytes.HasSuffix(buf, suffix) {
					continue // a gateway message split over websocket messages
				}
				data, buf = buf, nil
			}
			if _, err := pw.Write(data); err != nil {
				return
			}
		}
	}()
	go func() { // pipe → decompressor → JSON
		defer c.wg.Done()
		defer close(c.msgs)
		var r io.Reader
		switch c.compress {
		case compressZlib:
			zr, err := zlib.NewReader(pr)
			if err != nil {
				c.setErr(fmt.Errorf("zlib header: %w", err))
				pr.CloseWithError(err)
				return
			}
			r = zr
		case compressZstd:
			zr, err := zstd.NewReader(pr, zstd.WithDecoderConcurrency(1))
			if err != nil {
				c.setErr(err)
				pr.CloseWithError(err)
				return
			}
			defer zr.Close()
			r = zr
		}
		dec := json.NewDecoder(r)
		for {
			var p payload
			if err := dec.Decode(&p); err != nil {
				pr.CloseWithError(err)
				return
			}
			c.decoded.Add(1)
			c.msgs <- p
		}
	}()
}

// Close drops the connection and waits for the client's goroutines.
func (c *testClient) Close() {
	c.closeOnce.Do(func() {
		_ = c.ws.NetConn().Close()
		c.wg.Wait()
	})
}

// next returns the next payload, failing the test after timeout or when
// the connection ends.
func (c *testClient) next(timeout time.Duration) payload {
	c.t.Helper()
	select {
	case p, ok := <-c.msgs:
		if !ok {
			c.t.Fatalf("connection ended while waiting for a payload: %v", c.readErr())
		}
		return p
	case <-time.After(timeout):
		c.t.Fatalf("no payload within %v", timeout)
	}
	return payload{}
}

// tryNext returns the next payload, or false after timeout or at the end.
func (c *testClient) tryNext(timeout time.Duration) (payload, bool) {
	select {
	case p, ok := <-c.msgs:
		return p, ok
	case <-time.After(timeout):
		return payload{}, false
	}
}

// expect returns the next payload and fails unless it has op (and, for a
// dispatch, event t when t is not empty).
func (c *testClient) expect(op int, t string) payload {
	c.t.Helper()
	p := c.next(5 * time.Second)
	if p.Op != op || (t != "" && p.event() != t) {
		c.t.Fatalf("got %v, want op %d %s", p, op, t)
	}
	return p
}

// skipUntil discards payloads until one with op (and event t) arrives.
func (c *testClient) skipUntil(op int, t string) payload {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p := c.next(time.Until(deadline))
		if p.Op == op && (t == "" || p.event() == t) {
			return p
		}
	}
}

func (c *testClient) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// closeCode waits until the connection ends and returns the close code
// received (1006 for a dropped connection), draining payloads meanwhile.
func (c *testClient) closeCode(timeout time.Duration) int {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case _, ok := <-c.msgs:
			if ok {
				continue
			}
			<-c.done
			var ce *websocket.CloseError
			if errors.As(c.readErr(), &ce) {
				return ce.Code
			}
			return websocket.CloseAbnormalClosure
		case <-deadline:
			c.t.Fatalf("connection still open after %v", timeout)
			return 0
		}
	}
}

func (c *testClient) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatalf("marshal: %v", err)
	}
	c.sendRaw(b)
}

func (c *testClient) sendRaw(b []byte) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// sendClose sends a close frame with code.
func (c *testClient) sendClose(code int) {
	c.t.Helper()
	msg := websocket.FormatCloseMessage(code, "")
	if err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
		c.t.Fatalf("send close: %v", err)
	}
}

func (c *testClient) identify(token string, shard, count int, intents discord.Intent) {
	c.t.Helper()
	c.send(map[string]any{"op": 2, "d": map[string]any{
		"token": token, "intents": intents, "shard": []int{shard, count},
		"properties": map[string]string{"os": "linux", "browser": "spectacles-test", "device": "spectacles-test"},
	}})
}

func (c *testClient) resume(token, sessionID string, seq int64) {
	c.t.Helper()
	c.send(map[string]any{"op": 6, "d": map[string]any{"token": token, "session_id": sessionID, "seq": seq}})
}

func (c *testClient) heartbeat(seq any) {
	c.t.Helper()
	c.send(map[string]any{"op": 1, "d": seq})
}

// readyInfo is the part of READY the tests check.
type readyInfo struct {
	V                int    `json:"v"`
	SessionID        string `json:"session_id"`
	ResumeGatewayURL string `json:"resume_gateway_url"`
	Shard            []int  `json:"shard"`
	User             struct {
		ID  string `json:"id"`
		Bot bool   `json:"bot"`
	} `json:"user"`
	Application struct {
		ID string `json:"id"`
	} `json:"application"`
	Guilds []struct {
		ID          string `json:"id"`
		Unavailable bool   `json:"unavailable"`
	} `json:"guilds"`
}

// start dials, reads Hello, identifies and returns READY (the payload and
// its parsed d).
func startShard(t testing.TB, s *Server, compress string, shard, count int, intents discord.Intent) (*testClient, payload, readyInfo) {
	t.Helper()
	c := dial(t, s.GatewayURL(), compress)
	c.expect(discord.OpHello, "")
	c.identify(s.Token(), shard, count, intents)
	p := c.expect(discord.OpDispatch, "READY")
	var r readyInfo
	if err := json.Unmarshal(p.D, &r); err != nil {
		t.Fatalf("READY: %v", err)
	}
	return c, p, r
}

// dialWS opens a raw websocket connection.
func dialWS(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	return ws
}

// syncWriter is a goroutine-safe log sink.
type syncWriter = brokertest.SyncBuffer

func zlibNewReader(r io.Reader) (io.ReadCloser, error) { return zlib.NewReader(r) }
