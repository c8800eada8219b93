package ipc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

func TestConfig(t *testing.T) {
	for name, want := range map[string]Format{"": JSONLines, "json": JSONLines, "JSONL": JSONLines, "msgpack": Msgpack} {
		if f, err := ParseFormat(name); err != nil || f != want {
			t.Errorf("ParseFormat(%q) = %v, %v", name, f, err)
		}
	}
	if _, err := ParseFormat("xml"); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("ParseFormat(xml): %v", err)
	}
	if JSONLines.String() != "json" || Msgpack.String() != "msgpack" {
		t.Error("Format.String")
	}
	for _, c := range []struct {
		r   io.Reader
		w   io.Writer
		cfg Config
	}{
		{nil, io.Discard, Config{}},
		{strings.NewReader(""), nil, Config{}},
		{strings.NewReader(""), io.Discard, Config{Format: 7}},
		{strings.NewReader(""), io.Discard, Config{QueueSize: -1}},
		{strings.NewReader(""), io.Discard, Config{MaxMessageSize: -1}},
	} {
		if b, err := New(c.r, c.w, c.cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New(%v, %v, %+v): %v", c.r, c.w, c.cfg, err)
			if b != nil {
				_ = b.Close()
			}
		}
	}
}

// lineChecker is an output that fails the test when a Write does not
// hold whole messages.
type lineChecker struct {
	t      testing.TB
	format Format
	delay  time.Duration

	mu     sync.Mutex
	writes int
	maxLen int
	ids    map[string]bool
}

func (c *lineChecker) Write(p []byte) (int, error) {
	time.Sleep(c.delay)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	c.maxLen = max(c.maxLen, len(p))
	for len(p) > 0 {
		var msg []byte
		if c.format == Msgpack {
			n, err := msgpackLen(p, len(p))
			if err != nil {
				c.t.Errorf("write %d does not hold whole values: %v", c.writes, err)
				return len(p), nil
			}
			msg, p = p[:n], p[n:]
			e, err := parseMsgpackEnvelope(msg)
			if err != nil {
				c.t.Errorf("bad value: %v", err)
				return len(p), nil
			}
			c.ids[e.id] = true
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.t.Errorf("write %d ends inside a line: %q", c.writes, p)
			return len(p), nil
		}
		msg, p = p[:i], p[i+1:]
		// The line's start is enough (parsing 40 KB lines is slow under
		// -race): {"event":"E","id":"…","data":…}
		rest, ok := bytes.CutPrefix(msg, []byte(`{"event":"E","id":"`))
		id, _, ok2 := bytes.Cut(rest, []byte(`"`))
		if !ok || !ok2 || msg[len(msg)-1] != '}' {
			c.t.Errorf("bad line %.80q", msg)
			return len(p), nil
		}
		c.ids[string(id)] = true
	}
	return len(p), nil
}

// TestConcurrentPublishers: many goroutines publish at once; every write
// holds whole messages, writes are shared, and a slow output bounds the
// batches.
func TestConcurrentPublishers(t *testing.T) {
	for _, format := range []Format{JSONLines, Msgpack} {
		t.Run(format.String(), func(t *testing.T) {
			out := &lineChecker{t: t, format: format, delay: 2 * time.Millisecond, ids: map[string]bool{}}
			b := newBroker(t, strings.NewReader(""), out, Config{Options: opts(t, "", "p"), Format: format})
			// 32 publishers of 40 KB gather more than maxBatch at once.
			const goroutines, each = 32, 15
			payload := core.Raw(`{"content":"` + strings.Repeat("x", 40000) + `"}`)
			var (
				wg  sync.WaitGroup
				mu  sync.Mutex
				ids = map[string]bool{}
			)
			for range goroutines {
				wg.Go(func() {
					for range each {
						id, err := b.Publish(context.Background(), "E", payload)
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						ids[id] = true
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			out.mu.Lock()
			defer out.mu.Unlock()
			if len(ids) != goroutines*each || len(out.ids) != len(ids) {
				t.Fatalf("%d ids returned, %d messages written, want %d", len(ids), len(out.ids), goroutines*each)
			}
			for id := range ids {
				if !out.ids[id] {
					t.Fatalf("id %s returned but not written", id)
				}
			}
			if out.writes >= goroutines*each/4 {
				t.Errorf("%d writes for %d messages: publishes are not batched", out.writes, goroutines*each)
			}
			if out.maxLen > maxBatch+len(payload)+100 {
				t.Errorf("a write of %d bytes, above the batch bound", out.maxLen)
			}
			t.Logf("%d messages in %d writes, largest %d bytes", len(ids), out.writes, out.maxLen)
		})
	}
}

type failingWriter struct{ n atomic.Int32 }

func (w *failingWriter) Write(p []byte) (int, error) {
	w.n.Add(1)
	return 0, errors.New("pipe broke")
}

// TestWriteErrorIsSticky: after a failed write nothing more is written.
func TestWriteErrorIsSticky(t *testing.T) {
	w := &failingWriter{}
	o := opts(t, "", "p")
	o.Logger, _ = captureLogger(t)
	b, _ := pipeBroker(t, w, Config{Options: o})
	for range 3 {
		_, err := b.Publish(ctxT(t), "E", 1)
		if err == nil || !strings.Contains(err.Error(), "pipe broke") {
			t.Fatalf("publish: %v", err)
		}
	}
	if _, err := b.Call(ctxT(t), "E", 1); err == nil || !strings.Contains(err.Error(), "pipe broke") {
		t.Fatalf("call: %v", err)
	}
	if n := w.n.Load(); n != 1 {
		t.Errorf("%d writes, want 1", n)
	}
}

// TestFlushedOutput: an output with a Flush method is flushed before
// Publish returns.
func TestFlushedOutput(t *testing.T) {
	var under syncBuffer
	bw := bufio.NewWriterSize(&under, 1<<16)
	b := newBroker(t, strings.NewReader(""), bw, Config{Options: opts(t, "", "p")})
	id, err := b.Publish(ctxT(t), "E", 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"event":"E","id":"` + id + `","data":1}` + "\n"; under.String() != want {
		t.Fatalf("written %q, want %q", under.String(), want)
	}
}

// TestCloseInterruptsOSPipe: Close interrupts a read on an *os.File pipe
// and waits for the reading goroutine; the broker refuses work afterwards.
func TestCloseInterruptsOSPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	b, err := New(r, io.Discard, Config{Options: opts(t, "g", "c")})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := collect()
	if err := b.Consume(ctxT(t), []string{"E"}, h); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // let the reader block in Read
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on the input")
	}
	select {
	case <-b.readerDone:
	default:
		t.Fatal("Close returned before the reading goroutine ended")
	}
	<-b.Done()
	if !errors.Is(b.Err(), core.ErrClosed) {
		t.Errorf("Err = %v, want ErrClosed", b.Err())
	}
	if err := b.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := b.Publish(ctxT(t), "E", 1); !errors.Is(err, core.ErrClosed) {
		t.Errorf("publish after close: %v", err)
	}
	if _, err := b.PublishBatch(ctxT(t), []core.Outgoing{{Event: "E", Data: 1}}); !errors.Is(err, core.ErrClosed) {
		t.Errorf("batch after close: %v", err)
	}
	if _, err := b.Call(ctxT(t), "E", 1); !errors.Is(err, core.ErrClosed) {
		t.Errorf("call after close: %v", err)
	}
}

// TestConsumersTakeTurns: two Consume calls of one broker on one event
// share its messages, each message once; events nobody asked for are
// dropped; a stopped consumer gets nothing more.
func TestConsumersTakeTurns(t *testing.T) {
	b, in := pipeBroker(t, io.Discard, Config{Options: opts(t, "g", "c")})
	var mu sync.Mutex
	seen := map[string]string{}
	all := make(chan struct{}, 1000)
	handler := func(name string) core.Handler {
		return func(ctx context.Context, m *core.Message) {
			mu.Lock()
			if prev, dup := seen[string(m.Raw)]; dup {
				t.Errorf("message %s delivered to %s and %s", m.Raw, prev, name)
			}
			seen[string(m.Raw)] = name
			mu.Unlock()
			all <- struct{}{}
		}
	}
	ctxA, stopA := context.WithCancel(context.Background())
	defer stopA()
	if err := b.Consume(ctxA, []string{"E", "F"}, handler("a")); err != nil {
		t.Fatal(err)
	}
	if err := b.Consume(ctxT(t), []string{"E"}, handler("b")); err != nil {
		t.Fatal(err)
	}
	var lines strings.Builder
	for i := range 100 {
		lines.WriteString(`{"event":"E","data":` + itoa(i) + "}\n")
		lines.WriteString(`{"event":"NOBODY","data":-1}` + "\n")
	}
	writeString(t, in, lines.String())
	for range 100 {
		select {
		case <-all:
		case <-time.After(10 * time.Second):
			t.Fatal("messages missing")
		}
	}
	mu.Lock()
	count := map[string]int{}
	for _, who := range seen {
		count[who]++
	}
	mu.Unlock()
	if count["a"] != 50 || count["b"] != 50 {
		t.Errorf("shares %v, want 50 each", count)
	}

	// Stop a: b gets everything of E; F has nobody.
	stopA()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		n := len(b.routes["E"].cs)
		_, f := b.routes["F"]
		b.mu.Unlock()
		if n == 1 && !f {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stopped consumer is still routed to")
		}
		time.Sleep(time.Millisecond)
	}
	writeString(t, in, `{"event":"F","data":1000}`+"\n"+`{"event":"E","data":1001}`+"\n")
	<-all
	mu.Lock()
	defer mu.Unlock()
	if seen["1001"] != "b" || seen["1000"] != "" {
		t.Errorf("after a stopped: %v %v", seen["1001"], seen["1000"])
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// TestCloseDropsQueued: Close waits for running handlers and drops, with a
// log, what was queued behind them.
func TestCloseDropsQueued(t *testing.T) {
	log, logs := captureLogger(t)
	o := opts(t, "g", "c")
	o.Logger = log
	o.Concurrency = 1
	pr, pw := io.Pipe()
	b, err := New(pr, io.Discard, Config{Options: o})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	var finished atomic.Int32
	err = b.Consume(ctxT(t), []string{"E"}, func(ctx context.Context, m *core.Message) {
		if finished.Load() == 0 {
			close(started)
		}
		time.Sleep(200 * time.Millisecond)
		finished.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	writeString(t, pw, strings.Repeat(`{"event":"E","data":1}`+"\n", 5))
	<-started
	time.Sleep(20 * time.Millisecond) // the rest is queued
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if n := finished.Load(); n != 1 {
		t.Errorf("%d handlers finished, want the one running", n)
	}
	if logs.count("dropped=4") != 1 {
		t.Errorf("drop not logged:\n%s", logs)
	}
	_ = pw.Close()
	<-b.readerDone
}

// TestHandlerCallDuringEOF: a handler that calls while the input ends gets
// ErrInputEnded instead of hanging the drain.
func TestHandlerCallDuringEOF(t *testing.T) {
	b, in := pipeBroker(t, io.Discard, Config{Options: opts(t, "g", "c")})
	got := make(chan error, 1)
	err := b.Consume(ctxT(t), []string{"E"}, func(ctx context.Context, m *core.Message) {
		<-b.inputDone
		_, err := b.Call(ctx, "ASK", 1)
		got <- err
	})
	if err != nil {
		t.Fatal(err)
	}
	writeString(t, in, `{"event":"E","data":1}`+"\n")
	_ = in.Close()
	brokertest.WaitErr(t, got, "the handler's call", ErrInputEnded)
	<-b.Done()
}

// TestReadingStartsAtConsume: what the peer wrote before the first Consume
// is not lost.
func TestReadingStartsAtConsume(t *testing.T) {
	var lines strings.Builder
	for i := range 100 {
		lines.WriteString(`{"event":"E","data":` + itoa(i) + "}\n")
	}
	b := newBroker(t, strings.NewReader(lines.String()), io.Discard, Config{Options: opts(t, "g", "c")})
	time.Sleep(20 * time.Millisecond)
	select {
	case <-b.readerDone:
		t.Fatal("the input was read before anything asked for it")
	default:
	}
	var n atomic.Int32
	if err := b.Consume(ctxT(t), []string{"E"}, func(context.Context, *core.Message) { n.Add(1) }); err != nil {
		t.Fatal(err)
	}
	<-b.Done()
	if n.Load() != 100 {
		t.Fatalf("%d of 100 messages handled", n.Load())
	}
}

// TestCloseWithoutReading: a broker that never read closes at once.
func TestCloseWithoutReading(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	b, err := New(pr, io.Discard, Config{Options: opts(t, "g", "c")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctxT(t), "E", 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	<-b.Done()
	<-b.readerDone
	if !errors.Is(b.Err(), core.ErrClosed) {
		t.Errorf("Err = %v", b.Err())
	}
}
