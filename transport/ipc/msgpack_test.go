package ipc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

func mustMsgpack(t testing.TB, v any) []byte {
	t.Helper()
	return brokertest.Msgpack(t, v)
}

// TestMsgpackLen checks the value scanner against values the msgpack
// library writes, their truncations, and invalid or oversized input.
func TestMsgpackLen(t *testing.T) {
	values := []any{
		nil, true, false, 0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32 + 1, -1, -32, -33, -129,
		-32769, math.MinInt64, uint64(math.MaxUint64), float32(1.5), 2.5,
		"", "short", strings.Repeat("s", 31), strings.Repeat("s", 32), strings.Repeat("m", 300), strings.Repeat("l", 70000),
		[]byte{}, []byte("bin"), bytes.Repeat([]byte{1}, 300), bytes.Repeat([]byte{2}, 70000),
		[]any{}, []any{1, "a", nil}, make([]any, 20), make([]any, 70000),
		map[string]any{}, map[string]any{"a": 1, "b": []any{map[string]any{"c": "d"}}},
		time.Unix(1700000000, 5), // ext -1 (fixext8 or ext8)
	}
	big := map[string]any{}
	for i := range 20 {
		big[strings.Repeat("k", i+1)] = i
	}
	values = append(values, big)
	for _, v := range values {
		raw := mustMsgpack(t, v)
		n, err := msgpackLen(raw, len(raw))
		if err != nil || n != len(raw) {
			t.Errorf("%T %.40v: len %d, %v; want %d", v, v, n, err, len(raw))
			continue
		}
		// With trailing bytes, only the first value counts.
		if n, err := msgpackLen(append(raw, 0xc0, 0xc1), len(raw)+2); err != nil || n != len(raw) {
			t.Errorf("%T with trailing bytes: %d, %v", v, n, err)
		}
		for _, cut := range []int{0, 1, len(raw) / 2, len(raw) - 1} {
			if cut >= len(raw) || cut < 0 {
				continue
			}
			if _, err := msgpackLen(raw[:cut], len(raw)); !errors.Is(err, errShort) {
				t.Errorf("%T cut to %d of %d: %v, want errShort", v, cut, len(raw), err)
			}
		}
		if len(raw) > 1 {
			if _, err := msgpackLen(raw, len(raw)-1); !errors.Is(err, errTooLarge) {
				t.Errorf("%T (%d bytes) with limit %d: %v, want errTooLarge", v, len(raw), len(raw)-1, err)
			}
		}
	}
	for _, bad := range [][]byte{{0xc1}, {0x91, 0xc1}, {0x81, 0xa1, 'a', 0xc1}} {
		if _, err := msgpackLen(bad, 100); !errors.Is(err, errInvalid) {
			t.Errorf("% x: %v, want errInvalid", bad, err)
		}
	}
	// A header that declares more than the limit fails before the data
	// arrives.
	for _, huge := range [][]byte{{0xdb, 0x40, 0, 0, 0}, {0xdd, 0x40, 0, 0, 0}, {0xdf, 0x10, 0, 0, 0}, {0xde, 0xff, 0xff}} {
		if _, err := msgpackLen(huge, 1<<16); !errors.Is(err, errTooLarge) {
			t.Errorf("% x: %v, want errTooLarge", huge, err)
		}
	}
}

// FuzzMsgpackLen compares the scanner with the msgpack library's Skip.
func FuzzMsgpackLen(f *testing.F) {
	f.Add([]byte{0x82, 0xa5, 'e', 'v', 'e', 'n', 't', 0xa1, 'E', 0xa4, 'd', 'a', 't', 'a', 0x01})
	f.Add([]byte{0xdc, 0x00, 0x02, 0xc0, 0xd4, 0x01, 0x02})
	f.Add([]byte{0xc7, 0x02, 0x05, 0xaa, 0xbb, 0xcb})
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := msgpackLen(b, len(b))
		// Scanning in two pieces, resumed, finds the same.
		if len(b) > 0 {
			var s msgpackScan
			cut := int(b[0]) % len(b)
			n2, err2 := s.scan(b[:cut], len(b))
			if errors.Is(err2, errShort) {
				n2, err2 = s.scan(b, len(b))
			}
			if n2 != n || !errors.Is(err2, err) && (err2 == nil || err == nil || err2.Error() != err.Error()) {
				t.Fatalf("% x: whole %d, %v; cut at %d then resumed %d, %v", b, n, err, cut, n2, err2)
			}
		}
		if err != nil {
			return // the library may be more lenient (it skips 0xc1 as a byte)
		}
		r := bytes.NewReader(b)
		if err := msgpack.NewDecoder(r).Skip(); err != nil {
			t.Fatalf("msgpackLen says %d bytes, library: %v", n, err)
		}
		if used := len(b) - r.Len(); used != n {
			t.Fatalf("msgpackLen says %d bytes, library skipped %d", n, used)
		}
	})
}

// TestMsgpackScanResumes: fed a value one more byte at a time, the scanner
// goes on where it stopped (within the last header), so that a value that
// arrives in many reads is scanned once, not once per read.
func TestMsgpackScanResumes(t *testing.T) {
	value := mustMsgpack(t, map[string]any{
		"a": []any{1, "two", 3.5, nil, []byte{1, 2, 3}, map[string]any{"x": strings.Repeat("y", 300)}},
		"b": make([]any, 70000),
	})
	var s msgpackScan
	for k := 0; k < len(value); k++ {
		n, err := s.scan(value[:k], len(value))
		if !errors.Is(err, errShort) {
			t.Fatalf("prefix of %d bytes: %d, %v; want errShort", k, n, err)
		}
		// It stopped at the value that is cut: an array or map whose
		// header (at most 5 bytes) is cut, or a scalar (a str, a number)
		// that is waited for whole.
		if s.off > k {
			t.Fatalf("prefix of %d bytes: the scan stopped at %d", k, s.off)
		}
		if c := value[s.off]; isContainer(c) && k-s.off >= containerHeaderLen(c) {
			t.Fatalf("prefix of %d bytes: the scan restarted at the container at %d", k, s.off)
		} else if n, _ := msgpackLen(value[s.off:], len(value)); !isContainer(c) && n <= k-s.off {
			t.Fatalf("prefix of %d bytes: the scan stopped at %d, before a whole value of %d bytes", k, s.off, n)
		}
	}
	if n, err := s.scan(value, len(value)); n != len(value) || err != nil {
		t.Fatalf("whole value: %d, %v; want %d", n, err, len(value))
	}
	if s != (msgpackScan{}) {
		t.Errorf("state after a whole value: %+v", s)
	}
}

func isContainer(c byte) bool {
	return c >= 0x80 && c <= 0x9f || c >= 0xdc && c <= 0xdf
}

func containerHeaderLen(c byte) int {
	switch c {
	case 0xdc, 0xde:
		return 3
	case 0xdd, 0xdf:
		return 5
	}
	return 1
}

// TestMsgpackWritten decodes what the Msgpack format writes as
// spec-tacles/go would: a map holding "event" and "data".
func TestMsgpackWritten(t *testing.T) {
	out := &syncBuffer{}
	b := newBroker(t, strings.NewReader(""), out, Config{Options: opts(t, "g", "c"), Format: Msgpack})
	ctx := ctxT(t)
	longEvent := strings.Repeat("E", 40) // str16, not str8
	jsonDoc := []byte(`{"id":"1","content":"hi"}`)
	cases := []struct {
		event    string
		data     any
		wantData []byte // the data value's bytes, or nil for data_bin
		wantBin  []byte
	}{
		{"MAP", map[string]any{"a": 1}, []byte{0x81, 0xa1, 'a', 0x01}, nil},
		{longEvent, "s", []byte{0xa1, 's'}, nil},
		{"RAW", core.Raw{0x93, 0x01, 0x02, 0x03}, []byte{0x93, 0x01, 0x02, 0x03}, nil},
		{"DISPATCH", core.Raw(core.MsgpackJSONString(jsonDoc)), core.MsgpackJSONString(jsonDoc), nil},
		{"JSON", core.Raw(jsonDoc), core.MsgpackJSONString(jsonDoc), nil},
		{"GARBAGE", core.Raw{0xc1, 0xff, 0x00, '{'}, nil, []byte{0xc1, 0xff, 0x00, '{'}},
	}
	ids := make([]string, len(cases))
	for i, c := range cases {
		id, err := b.Publish(ctx, c.event, c.data)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	stream := out.Bytes()
	if bytes.IndexByte(stream, 0xd9) >= 0 {
		t.Errorf("str8 (0xd9) written: % x", stream)
	}
	dec := msgpack.NewDecoder(bytes.NewReader(stream))
	for i, c := range cases {
		var m map[string]msgpack.RawMessage
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		var event, id string
		_ = msgpack.Unmarshal(m["event"], &event)
		_ = msgpack.Unmarshal(m["id"], &id)
		if event != c.event || id != ids[i] {
			t.Errorf("message %d: event %q id %q", i, event, id)
		}
		if c.wantData != nil {
			if !bytes.Equal(m["data"], c.wantData) || m["data_bin"] != nil {
				t.Errorf("message %d: data % x, want % x", i, []byte(m["data"]), c.wantData)
			}
		} else {
			var bin []byte
			_ = msgpack.Unmarshal(m["data_bin"], &bin)
			if !bytes.Equal(bin, c.wantBin) || m["data"] != nil || m["data_bin"][0] != 0xc4 {
				t.Errorf("message %d: data_bin % x, want % x", i, []byte(m["data_bin"]), c.wantBin)
			}
		}
	}
	if _, err := dec.DecodeInterface(); !errors.Is(err, io.EOF) {
		t.Errorf("trailing bytes after the messages: %v", err)
	}
}

// sgGoPacket writes a packet as spec-tacles/go's stdio broker does: a map
// {"event","data"} from a struct, with ugorji's default handle (strings and
// []byte as old-spec raw strings, never str8 or bin).
func sgGoPacket(event string, data []byte) []byte {
	p := appendMsgpackMapHeader(nil, 2)
	p = appendMsgpackStr(p, "event")
	p = appendMsgpackStr(p, event)
	p = appendMsgpackStr(p, "data")
	return append(p, data...)
}

// TestMsgpackReadSgGo reads back-to-back maps as spec-tacles/go writes
// them, delivered in one piece and one byte at a time.
func TestMsgpackReadSgGo(t *testing.T) {
	bigJSON := []byte(`{"content":"` + strings.Repeat("x", 300) + `"}`)
	var stream []byte
	// The gateway's dispatches: json.RawMessage, so a raw string of JSON.
	stream = append(stream, sgGoPacket("MESSAGE_CREATE", core.MsgpackJSONString([]byte(`{"id":"1"}`)))...)
	stream = append(stream, sgGoPacket("MESSAGE_CREATE", core.MsgpackJSONString(bigJSON))...)
	// A native value, as Publish(ctx, event, map) writes.
	stream = append(stream, sgGoPacket("MESSAGE_CREATE", []byte{0x82, 0xa1, 'n', 0x07, 0xa1, 's', 0xa2, 'h', 'i'})...)
	stream = append(stream, sgGoPacket("IGNORED", []byte{0x01})...)
	// Keys in another order, and one we do not know.
	other := appendMsgpackMapHeader(nil, 3)
	other = appendMsgpackStr(other, "data")
	other = append(other, 0xc3)
	other = appendMsgpackStr(other, "extra")
	other = append(other, 0x92, 0x01, 0x02)
	other = appendMsgpackStr(other, "event")
	other = appendMsgpackStr(other, "MESSAGE_CREATE")
	stream = append(stream, other...)
	want := []any{
		map[string]any{"id": "1"},
		map[string]any{"content": strings.Repeat("x", 300)},
		map[string]any{"n": int64(7), "s": "hi"},
		true,
	}

	for _, oneByte := range []bool{false, true} {
		name := "whole"
		if oneByte {
			name = "byte by byte"
		}
		t.Run(name, func(t *testing.T) {
			pr, pw := io.Pipe()
			var in io.Reader = pr
			if oneByte {
				in = iotest.OneByteReader(pr)
			}
			o := opts(t, "bot", "b")
			o.Concurrency = 1
			b := newBroker(t, in, io.Discard, Config{Options: o, Format: Msgpack})
			h, got := collect()
			if err := b.Consume(ctxT(t), []string{"MESSAGE_CREATE"}, h); err != nil {
				t.Fatal(err)
			}
			go func() {
				_, _ = pw.Write(stream)
				_ = pw.Close()
			}()
			for i, w := range want {
				m := next(t, got)
				data, err := m.Data()
				if err != nil || !reflect.DeepEqual(data, w) {
					t.Errorf("message %d: %#v, %v; want %#v", i, data, err, w)
				}
				if m.ID == "" {
					t.Errorf("message %d has no id", i)
				}
			}
			<-b.Done()
			none(t, got, 20*time.Millisecond)
		})
	}
}

// TestMsgpackGarbage: values that are not messages are skipped whole, bytes
// that are not msgpack one at a time, and the stream goes on.
func TestMsgpackGarbage(t *testing.T) {
	log, logs := captureLogger(t)
	o := opts(t, "bot", "b")
	o.Logger = log
	o.Concurrency = 1
	b, in := pipeBroker(t, io.Discard, Config{Options: o, Format: Msgpack, MaxMessageSize: 1 << 10})
	h, got := collect()
	if err := b.Consume(ctxT(t), []string{"E"}, h); err != nil {
		t.Fatal(err)
	}
	good := func(n byte) []byte { return sgGoPacket("E", []byte{n}) }
	noEvent := appendMsgpackMapHeader(nil, 1)
	noEvent = appendMsgpackStr(noEvent, "data")
	noEvent = append(noEvent, 0x01)
	intEvent := appendMsgpackMapHeader(nil, 1)
	intEvent = appendMsgpackStr(intEvent, "event")
	intEvent = append(intEvent, 0x05)

	var stream []byte
	stream = append(stream, good(1)...)
	stream = append(stream, 0xc1, 0xc1) // not msgpack
	stream = append(stream, good(2)...)
	stream = append(stream, 0x05)        // a value, not a map
	stream = append(stream, noEvent...)  // a map without event
	stream = append(stream, intEvent...) // event of the wrong type
	stream = append(stream, good(3)...)
	stream = append(stream, 0xdb, 0x7f, 0xff, 0xff, 0xff) // a 2 GiB string: over MaxMessageSize
	stream = append(stream, good(4)...)
	stream = append(stream, 0xc1)
	stream = append(stream, good(5)...)
	go func() {
		_, _ = in.Write(stream)
	}()
	var seen []int64
	for len(seen) < 5 {
		m := next(t, got)
		d, err := m.Data()
		if err != nil {
			t.Fatalf("data %q: %v", m.Raw, err)
		}
		seen = append(seen, d.(int64))
	}
	if !reflect.DeepEqual(seen, []int64{1, 2, 3, 4, 5}) {
		t.Errorf("got %v", seen)
	}
	if logs.count("skipping input that is not msgpack") < 2 || logs.count("skipping a msgpack value that is not a message") < 3 {
		t.Errorf("garbage not logged:\n%s", logs)
	}
}

// TestMsgpackReplyAndDeadLetter: replies and dead letters in the Msgpack
// format carry reply_to and headers.
func TestMsgpackReplyAndDeadLetter(t *testing.T) {
	out := &syncBuffer{}
	b, in := pipeBroker(t, out, Config{Options: opts(t, "workers", "w1"), Format: Msgpack})
	done := make(chan struct{}, 2)
	err := b.Consume(ctxT(t), []string{"REQUEST"}, func(ctx context.Context, m *core.Message) {
		defer func() { done <- struct{}{} }()
		if err := m.Reply(ctx, map[string]any{"ok": true}); err != nil {
			t.Error(err)
		}
		if err := m.Reject(ctx, "bad"); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	req := appendMsgpackMapHeader(nil, 3)
	req = appendMsgpackStr(req, "event")
	req = appendMsgpackStr(req, "REQUEST")
	req = appendMsgpackStr(req, "id")
	req = appendMsgpackStr(req, "peer-1")
	req = appendMsgpackStr(req, "data")
	req = append(req, 0x2a)
	if _, err := in.Write(req); err != nil {
		t.Fatal(err)
	}
	<-done
	dec := msgpack.NewDecoder(bytes.NewReader(out.Bytes()))
	var reply, dl map[string]any
	if err := dec.Decode(&reply); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&dl); err != nil {
		t.Fatal(err)
	}
	if reply["event"] != "REQUEST:peer-1" || reply["reply_to"] != "peer-1" || !reflect.DeepEqual(reply["data"], map[string]any{"ok": true}) {
		t.Errorf("reply %v", reply)
	}
	h, _ := dl["headers"].(map[string]any)
	if dl["event"] != "REQUEST:dlq" || dl["id"] == nil || h["id"] != "peer-1" || h["reason"] != "bad" || h["group"] != "workers" || fmt.Sprint(dl["data"]) != "42" {
		t.Errorf("dead letter %v", dl)
	}

	// A reply_to map answers a call.
	res := make(chan error, 1)
	go func() {
		p, err := b.Call(ctxT(t), "ASK", 1)
		if err == nil {
			var v any
			v, err = p.Data()
			if err == nil && v != "yes" {
				err = errors.New("wrong reply")
			}
		}
		res <- err
	}()
	var id string
	for deadline := time.Now().Add(5 * time.Second); id == "" && time.Now().Before(deadline); {
		b.calls.mu.Lock()
		for k := range b.calls.waiting {
			id = k
		}
		b.calls.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	ans := appendMsgpackMapHeader(nil, 3)
	ans = appendMsgpackStr(ans, "event")
	ans = appendMsgpackStr(ans, "ASK:"+id)
	ans = appendMsgpackStr(ans, "reply_to")
	ans = appendMsgpackStr(ans, id)
	ans = appendMsgpackStr(ans, "data")
	ans = appendMsgpackStr(ans, "yes")
	if _, err := in.Write(ans); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}
