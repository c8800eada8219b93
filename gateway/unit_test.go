package gateway

import (
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/gorilla/websocket"
	"github.com/klauspost/compress/zstd"
)

func TestSendLimiterReservesHeartbeats(t *testing.T) {
	l := newSendLimiter(5, 2, time.Minute)
	now := time.Now()
	for i := range 3 {
		if d := l.take(now, false); d != 0 {
			t.Fatalf("send %d waited %s", i, d)
		}
	}
	if d := l.take(now, false); d <= 0 {
		t.Fatal("a fourth ordinary send was allowed into the heartbeat reserve")
	}
	for i := range 2 {
		if d := l.take(now, true); d != 0 {
			t.Fatalf("heartbeat %d waited %s", i, d)
		}
	}
	if d := l.take(now, true); d <= time.Minute || d > time.Minute+2*time.Second {
		t.Fatalf("sixth send in the window: wait %s", d)
	}
	if d := l.take(now.Add(time.Minute+2*time.Second), false); d != 0 {
		t.Fatalf("after the window: wait %s", d)
	}
	if n := l.used(now.Add(time.Minute + 2*time.Second)); n != 1 {
		t.Errorf("used %d", n)
	}
}

// TestSendLimiterCountsFromTheWriteEnd: a send counts from when its write
// finished, not from when it was allowed; the server counts arrivals, and
// a write can wait (for the connection's write lock, on a loaded machine).
func TestSendLimiterCountsFromTheWriteEnd(t *testing.T) {
	l := newSendLimiter(3, 1, time.Second) // two ordinary sends per window
	now := time.Now()
	d0, first := l.takeToken(now, false)
	d1, second := l.takeToken(now, false)
	if d0 != 0 || d1 != 0 {
		t.Fatalf("waits %s %s", d0, d1)
	}
	l.sentAt(first, now.Add(400*time.Millisecond)) // a slow write
	l.sentAt(second, now.Add(time.Millisecond))
	// The window and margin after the allowance have passed, not after
	// the writes.
	if d := l.take(now.Add(1100*time.Millisecond), false); d <= 0 {
		t.Fatal("a send was allowed within a window of a write that ended later")
	}
	if d := l.take(now.Add(1500*time.Millisecond), false); d != 0 {
		t.Fatalf("after the window of the writes: wait %s", d)
	}
}

func TestLocalIdentifyLimiterBucketsAndOrder(t *testing.T) {
	const interval = 150 * time.Millisecond
	l := NewLocalIdentifyLimiter(2, interval, -1, 0)
	ctx := context.Background()
	var mu sync.Mutex
	var order []int
	times := map[int]time.Time{}
	var wg sync.WaitGroup
	// Occupy both buckets, so that the shards below all have to wait.
	for _, id := range []int{10, 11} {
		if err := l.Wait(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// Shards 0,2,4 share bucket 0; 1,3 bucket 1. They queue out of order.
	for _, id := range []int{4, 2, 3, 0, 1} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Wait(ctx, id); err != nil {
				t.Error(err)
			}
			mu.Lock()
			order = append(order, id)
			times[id] = time.Now()
			mu.Unlock()
		}()
		time.Sleep(2 * time.Millisecond)
	}
	wg.Wait()
	pos := map[int]int{}
	for i, id := range order {
		pos[id] = i
	}
	if !(pos[0] < pos[2] && pos[2] < pos[4] && pos[1] < pos[3]) {
		t.Errorf("identify order %v: each bucket must go lowest shard first", order)
	}
	for _, pair := range [][2]int{{0, 2}, {2, 4}, {1, 3}} {
		if gap := times[pair[1]].Sub(times[pair[0]]); gap < interval-5*time.Millisecond {
			t.Errorf("shards %d and %d identified %s apart, want at least %s", pair[0], pair[1], gap, interval)
		}
	}
}

func TestLocalIdentifyLimiterSessionStartLimit(t *testing.T) {
	l := NewLocalIdentifyLimiter(1, time.Millisecond, 1, time.Hour)
	if err := l.Wait(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("identify past the session start limit: err = %v", err)
	}
}

// frames is a fake connection that yields given websocket messages.
type frames struct{ msgs [][]byte }

func (f *frames) ReadMessage() (int, []byte, error) {
	if len(f.msgs) == 0 {
		return 0, nil, io.EOF
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return 2, m, nil
}

func payloads(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"op":0,"s":%d,"t":"MESSAGE_CREATE","d":{"content":"%s"}}`, i+1, strings.Repeat("x", i*37%500))
	}
	return out
}

// readAll reads every payload of conn, and returns them and the error that
// ended the stream.
func readAll(t *testing.T, conn frameReader, c Compression) ([]string, error) {
	t.Helper()
	r, err := newPayloadReader(conn, c, MaxInboundPayload)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	var got []string
	for {
		p, err := r.next()
		if err != nil {
			return got, err
		}
		got = append(got, string(p))
	}
}

func TestZlibStreamAcrossSplitFrames(t *testing.T) {
	want := payloads(50)
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	f := &frames{}
	for i, p := range want {
		_, _ = zw.Write([]byte(p))
		_ = zw.Flush() // Z_SYNC_FLUSH: ends with 00 00 ff ff
		msg := append([]byte(nil), buf.Bytes()...)
		buf.Reset()
		if !bytes.HasSuffix(msg, []byte{0, 0, 0xff, 0xff}) {
			t.Fatal("flush did not end with the zlib suffix")
		}
		if i%3 == 0 && len(msg) > 4 { // one payload over two frames
			f.msgs = append(f.msgs, msg[:len(msg)/2], msg[len(msg)/2:])
		} else {
			f.msgs = append(f.msgs, msg)
		}
	}
	got, _ := readAll(t, f, CompressZlib)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %d payloads, want %d", len(got), len(want))
	}
}

// zstdMessages returns a function that compresses text into the next
// message of one zstd-stream (one compression context), as Discord does:
// each message ends a block, not the frame. Call it in stream order.
func zstdMessages(t *testing.T) func(text string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return func(text string) []byte {
		_, _ = zw.Write([]byte(text))
		_ = zw.Flush()
		m := append([]byte(nil), buf.Bytes()...)
		buf.Reset()
		return m
	}
}

func TestZstdStream(t *testing.T) {
	want := payloads(50)
	message := zstdMessages(t)
	f := &frames{}
	for _, p := range want {
		f.msgs = append(f.msgs, message(p))
	}
	got, _ := readAll(t, f, CompressZstd)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %d payloads, want %d", len(got), len(want))
	}
}

// streamFrames is a fake connection that offers each message as a reader
// (gorilla's NextReader), one byte per Read, and then fails with err.
type streamFrames struct {
	frames
	err error
}

func (f *streamFrames) NextReader() (int, io.Reader, error) {
	if len(f.msgs) == 0 {
		return 0, nil, f.err
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return 2, iotest.OneByteReader(bytes.NewReader(m)), nil
}

// A compressed stream is read from one message after the other, on the
// reader's goroutine: from each message's reader when the connection
// offers one (gorilla's NextReader), else from each message read whole;
// empty messages are skipped, and the connection's error (here a close
// frame) reaches the caller as it is, after the last payload.
func TestMessageStreamReadsMessagesInTurn(t *testing.T) {
	want := payloads(40)
	message := zstdMessages(t)
	var msgs [][]byte
	for i, p := range want {
		m := message(p)
		if i%4 == 0 {
			msgs = append(msgs, m[:len(m)/2], nil, m[len(m)/2:])
		} else {
			msgs = append(msgs, m)
		}
	}
	closed := &websocket.CloseError{Code: 4004, Text: "Authentication failed."}
	for _, tc := range []struct {
		name string
		conn frameReader
	}{
		{"NextReader", &streamFrames{frames: frames{msgs: msgs}, err: closed}},
		{"ReadMessage", &closingFrames{frames: frames{msgs: msgs}, err: closed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(t, tc.conn, CompressZstd)
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 4004 {
				t.Errorf("after the last payload: err = %v, want the close frame 4004", err)
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("got %d payloads, want %d", len(got), len(want))
			}
		})
	}
}

// A payload that a message holds whole is cut and parsed in the one pass
// that validates it (streamPayloads.parsed); one split over messages, or
// an invalid one, is cut by the Splitter and parsed once complete, and the
// stream goes on after an invalid payload.
func TestStreamParsesWholePayloadsOnce(t *testing.T) {
	message := zstdMessages(t)
	whole := `{"op":0,"s":1,"t":"MESSAGE_CREATE","d":{"content":"one"}}`
	split := `{"t":"TYPING_START","s":2,"op":0,"d":{"user_id":"` + strings.Repeat("7", 3000) + `"}}`
	invalid := `{"op":0,"s":3,"t":"X","d":{"a":tru}}`
	last := `{"op":11,"d":null}`
	// In stream order: one compression context; split's halves are
	// flushed one message each.
	msgs := [][]byte{message(whole), message(split[:1000]), message(split[1000:]), message(invalid), message(last)}
	f := &streamFrames{frames: frames{msgs: msgs}, err: io.EOF}
	r, err := newPayloadReader(f, CompressZstd, MaxInboundPayload)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	for i, want := range []struct {
		raw        string
		parsedOnce bool
		op         int
		t          string
		bad        bool
	}{
		{whole, true, 0, "MESSAGE_CREATE", false},
		{split, false, 0, "TYPING_START", false},
		{invalid, false, 0, "", true},
		{last, true, 11, "", false},
	} {
		raw, err := r.next()
		if err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		if string(raw) != want.raw {
			t.Fatalf("payload %d: %.60q, want %.60q", i, raw, want.raw)
		}
		if got := r.stream.parsedOK; got != want.parsedOnce {
			t.Errorf("payload %d: parsed while cut = %v, want %v", i, got, want.parsedOnce)
		}
		p, err := r.parse(raw)
		if want.bad {
			if err == nil {
				t.Errorf("payload %d: invalid JSON parsed", i)
			}
			continue
		}
		if err != nil || p.Op != want.op || p.T != want.t {
			t.Errorf("payload %d: op %d t %q err %v; want op %d t %q", i, p.Op, p.T, err, want.op, want.t)
		}
		if want.raw == split && len(p.D) != 3000+len(`{"user_id":""}`) {
			t.Errorf("payload %d: d of %d bytes", i, len(p.D))
		}
	}
}

// closingFrames yields its messages whole, then fails with err.
type closingFrames struct {
	frames
	err error
}

func (f *closingFrames) ReadMessage() (int, []byte, error) {
	if len(f.msgs) == 0 {
		return 0, nil, f.err
	}
	return f.frames.ReadMessage()
}

func TestParseCompression(t *testing.T) {
	for in, want := range map[string]Compression{"": CompressNone, "none": CompressNone, "ZSTD-stream": CompressZstd, "zlib-stream": CompressZlib} {
		if got, err := ParseCompression(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	if _, err := ParseCompression("gzip"); !errors.Is(err, ErrUnknownCompression) {
		t.Errorf("gzip: %v", err)
	}
}

func TestAPIBase(t *testing.T) {
	if got := APIBase("", "", 0); got != "https://discord.com/api/v10" {
		t.Errorf("default %q", got)
	}
	if got := APIBase("http", "127.0.0.1:8080", 10); got != "http://127.0.0.1:8080/api/v10" {
		t.Errorf("local %q", got)
	}
}

func TestStateText(t *testing.T) {
	for st := Idle; st <= Failed; st++ {
		b, _ := st.MarshalText()
		var back State
		if err := back.UnmarshalText(b); err != nil || back != st {
			t.Errorf("%s: %v %v", b, back, err)
		}
	}
	var s State
	if err := s.UnmarshalText([]byte("dancing")); err == nil {
		t.Error("unknown state accepted")
	}
}

// A compressed payload that inflates past the bound (kilobytes on the wire,
// 64 MiB inflated, against a 1 MiB bound here) ends the stream with
// ErrPayloadTooLarge after allocating a few times the bound, not the
// inflated size.
func TestCompressedPayloadBombIsBounded(t *testing.T) {
	const limit, inflated = 1 << 20, 64 << 20
	for _, c := range []Compression{CompressZlib, CompressZstd} {
		t.Run(string(c), func(t *testing.T) {
			var buf bytes.Buffer
			var w io.WriteCloser
			var flush func() error
			switch c {
			case CompressZlib:
				zw, _ := zlib.NewWriterLevel(&buf, zlib.BestCompression)
				w, flush = zw, zw.Flush
			default:
				zw, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest))
				if err != nil {
					t.Fatal(err)
				}
				w, flush = zw, zw.Flush
			}
			_, _ = w.Write([]byte(`{"op":0,"t":"X","s":1,"d":"`))
			chunk := bytes.Repeat([]byte("a"), 1<<20)
			for range inflated >> 20 {
				_, _ = w.Write(chunk)
			}
			_, _ = w.Write([]byte(`"}`))
			_ = flush()
			wire := buf.Len()
			f := &frames{msgs: [][]byte{append([]byte(nil), buf.Bytes()...)}}
			buf.Reset()

			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			r, err := newPayloadReader(f, c, limit)
			if err != nil {
				t.Fatal(err)
			}
			defer r.close()
			p, err := r.next()
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrPayloadTooLarge) {
				t.Fatalf("next: %d bytes, err %v; want ErrPayloadTooLarge", len(p), err)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16*limit {
				t.Errorf("%d bytes on the wire inflating to %d allocated %d bytes; want at most %d", wire, inflated, alloc, 16*limit)
			}
		})
	}
}
