package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// pair returns the two ends of a new in-process connection, closed when t
// ends.
func pair(t *testing.T) (a, b *conn) {
	t.Helper()
	a, b = newConnPair("client", "server")
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

// isTimeout reports whether err is a deadline's, as net.Conn documents it.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

// TestConnCarriesBytesBothWays: what one end writes the other reads, in
// order, in both directions at once, beyond the buffer's bound.
func TestConnCarriesBytesBothWays(t *testing.T) {
	t.Parallel()
	a, b := pair(t)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 3*pipeLimit/16+7) // over pipeLimit
	var wg sync.WaitGroup
	for _, dir := range [][2]*conn{{a, b}, {b, a}} {
		w, r := dir[0], dir[1]
		wg.Go(func() {
			if n, err := w.Write(payload); err != nil || n != len(payload) {
				t.Errorf("write: %d, %v", n, err)
			}
		})
		wg.Go(func() {
			got := make([]byte, len(payload))
			if _, err := io.ReadFull(r, got); err != nil {
				t.Errorf("read: %v", err)
				return
			}
			if !bytes.Equal(got, payload) {
				t.Error("read other bytes than were written")
			}
		})
	}
	wg.Wait()
	if n, err := a.Read(nil); n != 0 || err != nil {
		t.Errorf("empty read: %d, %v", n, err)
	}
}

// TestConnClose: after one end closes, the other reads what was written
// before, then io.EOF; its writes fail with an error go-redis retries on a
// new connection (io.EOF underneath); the closed end's own operations fail
// with net.ErrClosed, and a second Close reports it.
func TestConnClose(t *testing.T) {
	t.Parallel()
	a, b := pair(t)
	if _, err := a.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "last words" {
		t.Errorf("read after the other end closed: %q, %v", got, err)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, io.EOF) {
		t.Errorf("write to a closed end: %v, want io.EOF underneath", err)
	}
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read on the closed end: %v", err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write on the closed end: %v", err)
	}
	if err := a.SetDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetDeadline on the closed end: %v", err)
	}
	if err := a.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

// TestConnCloseWakesBlocked: Close ends this end's blocked Read and Write
// at once, and the other end's blocked Read (io.EOF) and Write.
func TestConnCloseWakesBlocked(t *testing.T) {
	t.Parallel()
	for _, closer := range []string{"same end", "other end"} {
		t.Run(closer, func(t *testing.T) {
			t.Parallel()
			a, b := pair(t)
			// Fill a→b so that a's next write blocks.
			if _, err := a.Write(make([]byte, pipeLimit)); err != nil {
				t.Fatal(err)
			}
			errs := make(chan error, 2)
			go func() { _, err := a.Write([]byte("blocked")); errs <- err }()
			go func() { _, err := a.Read(make([]byte, 1)); errs <- err }()
			time.Sleep(20 * time.Millisecond) // let both block
			c := a
			if closer == "other end" {
				c = b
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				select {
				case err := <-errs:
					if err == nil {
						t.Error("a blocked operation ended without an error")
					}
				case <-time.After(5 * time.Second):
					t.Fatal("a blocked operation still blocked 5 s after Close")
				}
			}
		})
	}
}

// TestConnDeadlines: a passed deadline fails Read and Write at once with a
// timeout error, data or not; a future one ends a blocked operation when
// it passes; moving it while an operation waits applies to that one; the
// zero time clears it.
func TestConnDeadlines(t *testing.T) {
	t.Parallel()
	a, b := pair(t)
	if _, err := b.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	_ = a.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := a.Read(make([]byte, 4)); !isTimeout(err) {
		t.Errorf("read past the deadline: %v", err)
	}
	_ = a.SetDeadline(time.Time{})
	if n, err := a.Read(make([]byte, 4)); n != 4 || err != nil {
		t.Errorf("read after clearing the deadline: %d, %v", n, err)
	}

	// A future deadline ends a blocked read.
	_ = a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	if _, err := a.Read(make([]byte, 1)); !isTimeout(err) {
		t.Errorf("blocked read at its deadline: %v", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("read timed out after %s, before its deadline", d)
	}

	// Moving the deadline of a blocked read: later, then into the past.
	_ = a.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, err := a.Read(make([]byte, 1)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	_ = a.SetReadDeadline(time.Now().Add(time.Hour))
	select {
	case err := <-done:
		t.Fatalf("read ended when its deadline moved an hour ahead: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	_ = a.SetReadDeadline(time.Now())
	select {
	case err := <-done:
		if !isTimeout(err) {
			t.Errorf("read whose deadline moved to now: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read still blocked 5 s after its deadline moved to now")
	}

	// A blocked write times out; what it wrote stays written.
	_ = b.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := b.Write(make([]byte, pipeLimit+10))
	if !isTimeout(err) || n != pipeLimit {
		t.Errorf("write over the bound at its deadline: %d, %v", n, err)
	}
	_ = b.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := b.Write([]byte("x")); !isTimeout(err) {
		t.Errorf("write past the deadline: %v", err)
	}
	// A read deadline does not touch writes, nor a write one reads.
	_ = a.SetReadDeadline(time.Time{})
	if _, err := io.ReadFull(a, make([]byte, pipeLimit)); err != nil {
		t.Errorf("read with no deadline while the other end's write deadline passed: %v", err)
	}
}

// TestConnConcurrentUse: many goroutines reading and writing one
// connection, and setting its deadlines, under the race detector: every
// byte arrives once, and every reader sees the end.
func TestConnConcurrentUse(t *testing.T) {
	t.Parallel()
	a, b := pair(t)
	const writers, each, chunk = 8, 200, 512
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			buf := bytes.Repeat([]byte{1}, chunk)
			for range each {
				_ = a.SetWriteDeadline(time.Now().Add(time.Minute))
				if _, err := a.Write(buf); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		})
	}
	total := make(chan int, 4)
	for range 4 {
		go func() {
			n := 0
			buf := make([]byte, 1000)
			for {
				_ = b.SetReadDeadline(time.Now().Add(time.Minute))
				k, err := b.Read(buf)
				n += k
				if err != nil {
					total <- n
					return
				}
			}
		}()
	}
	wg.Wait()
	_ = a.Close()
	sum := 0
	for range 4 {
		select {
		case n := <-total:
			sum += n
		case <-time.After(5 * time.Second):
			t.Fatal("a reader still blocked 5 s after the writing end closed")
		}
	}
	if sum != writers*each*chunk {
		t.Errorf("read %d bytes, wrote %d", sum, writers*each*chunk)
	}
}

// TestDialInProcess: go-redis clients dialing in-process run commands,
// blocking ones and pipelines on many connections at once, and see the
// same server as TCP clients.
func TestDialInProcess(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := ctxT(t)
	c := goredis.NewClient(&goredis.Options{Addr: e.Addr(), Dialer: e.DialContext, PoolSize: 16})
	t.Cleanup(func() { _ = c.Close() })
	tcp := client(t, e)
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			p := c.Pipeline()
			for j := range 50 {
				p.XAdd(ctx, &goredis.XAddArgs{Stream: "s", Values: []any{"k", fmt.Sprint(i, "-", j)}})
			}
			if _, err := p.Exec(ctx); err != nil {
				t.Errorf("pipeline: %v", err)
			}
		})
	}
	wg.Wait()
	if n, err := tcp.XLen(ctx, "s").Result(); err != nil || n != 32*50 {
		t.Errorf("XLEN over TCP: %d, %v", n, err)
	}
	// A blocked read is ended by a write from a TCP client.
	got := make(chan error, 1)
	go func() {
		got <- c.XRead(ctx, &goredis.XReadArgs{Streams: []string{"t", "$"}, Block: 10 * time.Second}).Err()
	}()
	waitUntil(t, 5*time.Second, "the in-process client blocks", func() bool { return e.blockedClients() > 0 })
	if err := tcp.XAdd(ctx, &goredis.XAddArgs{Stream: "t", Values: []any{"k", "v"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Errorf("blocked XREAD: %v", err)
	}
}

// TestDialRestartAndClose: in-process clients reconnect after Restart
// (the data kept), and dials fail once the server is closed, as refused
// TCP dials do, without leaving goroutines behind.
func TestDialRestartAndClose(t *testing.T) {
	t.Parallel()
	e, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := ctxT(t)
	c := goredis.NewClient(&goredis.Options{Addr: e.Addr(), Dialer: e.DialContext})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.Restart(); err != nil {
		t.Fatal(err)
	}
	// The pooled connection was closed by the server: go-redis retries
	// on a new one.
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Errorf("GET after Restart: %q, %v", v, err)
	}
	e.Close()
	_, err = e.DialContext(ctx, "tcp", e.Addr())
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Errorf("dial after Close: %v, want a dial *net.OpError", err)
	}
	if err := c.Get(ctx, "k").Err(); err == nil {
		t.Error("GET after Close succeeded")
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.DialContext(cancelled, "tcp", e.Addr()); !errors.Is(err, context.Canceled) {
		t.Errorf("dial with an ended context: %v", err)
	}
}
