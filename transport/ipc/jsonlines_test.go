package ipc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// TestJSONLinesWritten checks the exact lines Publish and PublishBatch
// write for each kind of payload.
func TestJSONLinesWritten(t *testing.T) {
	out := &syncBuffer{}
	b := newBroker(t, strings.NewReader(""), out, Config{Options: opts(t, "g", "c")})
	ctx := ctxT(t)

	msgpackJSON := core.MsgpackJSONString([]byte(`{"id":"1","content":"hi"}`))
	cases := []struct {
		name  string
		event string
		data  any
		want  string // the line, with ID standing for the returned id
	}{
		{"map", "MESSAGE_CREATE", map[string]any{"content": "spectacles is awesome", "n": 42},
			`{"event":"MESSAGE_CREATE","id":"ID","data":{"content":"spectacles is awesome","n":42}}`},
		{"struct", "MEMBER", struct {
			GuildID string `json:"guild_id"`
		}{"81384788765712384"}, `{"event":"MEMBER","id":"ID","data":{"guild_id":"81384788765712384"}}`},
		{"string", "S", "text", `{"event":"S","id":"ID","data":"text"}`},
		{"nil", "N", nil, `{"event":"N","id":"ID","data":null}`},
		{"raw JSON", "R", core.Raw(`{"a": [1, 2]}`), `{"event":"R","id":"ID","data":{"a": [1, 2]}}`},
		{"raw JSON with line breaks", "R", core.Raw("{\n  \"a\": [1,\r\n 2]\n}"), `{"event":"R","id":"ID","data":{"a":[1,2]}}`},
		{"raw msgpack str holding JSON", "DISPATCH", core.Raw(msgpackJSON), `{"event":"DISPATCH","id":"ID","data":{"id":"1","content":"hi"}}`},
		{"raw msgpack map", "M", core.Raw{0x81, 0xa1, 'a', 0x01}, `{"event":"M","id":"ID","data_base64":"gaFhAQ=="}`},
		{"raw garbage", "G", core.Raw{0xc1, 0xff, 0x00, '{'}, `{"event":"G","id":"ID","data_base64":"wf8Aew=="}`},
		{"raw empty", "E", core.Raw{}, `{"event":"E","id":"ID","data_base64":""}`},
		{"event escaped", "a \"quoted\"\n<event>", 1, `{"event":"a \"quoted\"\n\u003cevent\u003e","id":"ID","data":1}`},
	}
	var want strings.Builder
	for _, c := range cases {
		id, err := b.Publish(ctx, c.event, c.data)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !strings.HasPrefix(id, b.idPrefix) {
			t.Fatalf("%s: id %q", c.name, id)
		}
		want.WriteString(strings.Replace(c.want, `"ID"`, `"`+id+`"`, 1) + "\n")
	}
	ids, err := b.PublishBatch(ctx, []core.Outgoing{{Event: "B", Data: 1}, {Event: "B", Data: 2}})
	if err != nil {
		t.Fatal(err)
	}
	want.WriteString(`{"event":"B","id":"` + ids[0] + `","data":1}` + "\n")
	want.WriteString(`{"event":"B","id":"` + ids[1] + `","data":2}` + "\n")
	if got := out.String(); got != want.String() {
		t.Fatalf("output:\n%s\nwant:\n%s", got, want.String())
	}

	// Errors: nothing is written.
	if _, err := b.Publish(ctx, "", 1); err == nil {
		t.Error("publish with no event succeeded")
	}
	if _, err := b.Publish(ctx, "X", func() {}); err == nil {
		t.Error("publish of a func succeeded")
	}
	if _, err := b.PublishBatch(ctx, []core.Outgoing{{Event: "B", Data: 3}, {Event: "B", Data: make(chan int)}}); err == nil {
		t.Error("batch with an unencodable value succeeded")
	}
	if got := out.String(); got != want.String() {
		t.Fatalf("failed publishes wrote:\n%s", strings.TrimPrefix(got, want.String()))
	}
}

// TestJSONLinesReplyAndDeadLetter checks the lines a consumer's Reply and
// Reject write.
func TestJSONLinesReplyAndDeadLetter(t *testing.T) {
	out := &syncBuffer{}
	b, in := pipeBroker(t, out, Config{Options: opts(t, "workers", "w1")})
	done := make(chan struct{}, 2)
	err := b.Consume(ctxT(t), []string{"REQUEST", "BAD"}, func(ctx context.Context, m *core.Message) {
		defer func() { done <- struct{}{} }()
		if m.Event == "REQUEST" {
			if err := m.Reply(ctx, map[string]any{"ok": true}); err != nil {
				t.Error(err)
			}
			return
		}
		if err := m.Reject(ctx, "invalid packet"); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	writeString(t, in, `{"event":"REQUEST","id":"peer-1","data":{"n":1}}`+"\n")
	<-done
	writeString(t, in, `{"event":"BAD","id":"peer-2","data_base64":"wf8Aew=="}`+"\n")
	<-done

	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("output %q, want two lines", out.String())
	}
	if want := `{"event":"REQUEST:peer-1","reply_to":"peer-1","data":{"ok":true}}`; lines[0] != want {
		t.Errorf("reply line\n%s\nwant\n%s", lines[0], want)
	}
	var dl struct {
		Event      string            `json:"event"`
		ID         string            `json:"id"`
		Headers    map[string]string `json:"headers"`
		DataBase64 string            `json:"data_base64"`
	}
	if err := json.Unmarshal([]byte(lines[1]), &dl); err != nil {
		t.Fatalf("dead letter line %s: %v", lines[1], err)
	}
	if dl.Event != "BAD:dlq" || dl.ID == "" || dl.DataBase64 != "wf8Aew==" {
		t.Errorf("dead letter line %s", lines[1])
	}
	failedAt := dl.Headers[core.HeaderFailedAt]
	if _, err := time.Parse(time.RFC3339Nano, failedAt); err != nil {
		t.Errorf("failed_at %q: %v", failedAt, err)
	}
	wantHeaders := map[string]string{
		"event": "BAD", "id": "peer-2", "group": "workers", "client": "w1",
		"reason": "invalid packet", "deliveries": "1", "failed_at": failedAt,
	}
	if !reflect.DeepEqual(dl.Headers, wantHeaders) {
		t.Errorf("headers %v, want %v", dl.Headers, wantHeaders)
	}
	// Header keys are written sorted.
	if !strings.Contains(lines[1], `"headers":{"client":"w1","deliveries":"1","event":"BAD","failed_at":`) {
		t.Errorf("headers not in key order: %s", lines[1])
	}
}

// TestJSONLinesReadPlainPeer feeds lines as a peer that knows only
// {"event","data"} writes them. The input is a pipe written after Consume:
// lines read before a Consume asks for their event are dropped.
func TestJSONLinesReadPlainPeer(t *testing.T) {
	input := strings.Join([]string{
		`{"event":"MESSAGE_CREATE","data":{"id":"1","content":"hi","n":3,"ratio":0.5,"big":18446744073709551615}}`,
		``,
		`   `,
		`{"event":"OTHER","data":{"not":"asked for"}}`,
		`{"data":"fields in any order","event":"MESSAGE_CREATE","extra":[1,2,3]}` + "\r",
		`{"event":"MESSAGE_CREATE"}`,
		`{"event":"MESSAGE_CREATE","id":"given-id","headers":{"k":"v"},"data":[1,"a",null,true]}`,
		`{"event":"MESSAGE_CREATE","data_base64":"gaFhAQ"}`, // msgpack {"a":1}, unpadded
		`{"event":"MESSAGE_CREATE","data":"last line, no line break"}`,
	}, "\n")
	pr, pw := io.Pipe()
	o := opts(t, "bot", "b")
	o.Concurrency = 1 // in order
	b := newBroker(t, pr, io.Discard, Config{Options: o})
	h, got := collect()
	if err := b.Consume(ctxT(t), []string{"MESSAGE_CREATE"}, h); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = io.WriteString(pw, input)
		_ = pw.Close()
	}()
	want := []any{
		map[string]any{"id": "1", "content": "hi", "n": int64(3), "ratio": 0.5, "big": uint64(18446744073709551615)},
		"fields in any order",
		nil,
		[]any{int64(1), "a", nil, true},
		map[string]any{"a": int64(1)},
		"last line, no line break",
	}
	ids := map[string]bool{}
	for i, w := range want {
		m := next(t, got)
		if m.Event != "MESSAGE_CREATE" || m.Deliveries != 1 || m.ID == "" || ids[m.ID] {
			t.Fatalf("message %d: event %q id %q deliveries %d", i, m.Event, m.ID, m.Deliveries)
		}
		ids[m.ID] = true
		data, err := m.Data()
		if err != nil {
			t.Fatalf("message %d: %v (raw %q)", i, err, m.Raw)
		}
		if !reflect.DeepEqual(data, w) {
			t.Errorf("message %d: data %#v, want %#v", i, data, w)
		}
		switch i {
		case 3:
			if m.ID != "given-id" || m.Headers["k"] != "v" {
				t.Errorf("message %d: id %q headers %v", i, m.ID, m.Headers)
			}
		case 4:
			if _, ok := m.Codec().(core.Msgpack); !ok {
				t.Errorf("opaque payload read with %T, want Options.Codec", m.Codec())
			}
		default:
			if _, ok := m.Codec().(core.JSON); !ok {
				t.Errorf("message %d read with %T, want core.JSON", i, m.Codec())
			}
		}
	}
	select {
	case <-b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed at the end of the input")
	}
	none(t, got, 50*time.Millisecond)
}

// TestJSONLinesMalformed: bad lines are logged and skipped, and the lines
// after them still arrive.
func TestJSONLinesMalformed(t *testing.T) {
	log, logs := captureLogger(t)
	o := opts(t, "bot", "b")
	o.Logger = log
	b, in := pipeBroker(t, io.Discard, Config{Options: o, MaxMessageSize: 256 << 10})
	h, got := collect()
	if err := b.Consume(ctxT(t), []string{"E"}, h); err != nil {
		t.Fatal(err)
	}
	bad := []string{
		`not json`,
		`{"event":5,"data":1}`,
		`{"data":1}`,
		`{"event":"","data":1}`,
		`[{"event":"E"}]`,
		`"E"`,
		`{"event":"E","data":{"a":1}`,
		`{"event":"E","data_base64":"not base64!"}`,
		`{"event":"E","headers":{"k":1},"data":1}`,
		`{"event":"E","id":7,"data":1}`,
		"\x00\xff\xfe",
	}
	for _, l := range bad {
		writeString(t, in, l+"\n")
	}
	big := strings.Repeat("x", 200<<10) // longer than the read buffer, within the limit
	tooBig := strings.Repeat("y", 300<<10)
	writeString(t, in, `{"event":"E","data":"`+tooBig+`"}`+"\n")
	writeString(t, in, `{"event":"E","data":"`+big+`"}`+"\n")
	writeString(t, in, `{"event":"E","data":"ok"}`+"\n")

	if d, _ := next(t, got).Data(); d != big {
		t.Fatalf("long line: got %d bytes", len(d.(string)))
	}
	if d, _ := next(t, got).Data(); d != "ok" {
		t.Fatalf("after the bad lines: got %v", d)
	}
	none(t, got, 50*time.Millisecond)
	if n := logs.count("skipping a malformed line"); n != len(bad) {
		t.Errorf("%d malformed lines logged, want %d:\n%s", n, len(bad), logs)
	}
	if n := logs.count("skipping a line longer than MaxMessageSize"); n != 1 {
		t.Errorf("%d long lines logged, want 1", n)
	}
}

// TestCallAnsweredByPlainPeer: a peer answers a call with reply_to, or by
// writing the event {event}:{id} with only "event" and "data".
func TestCallAnsweredByPlainPeer(t *testing.T) {
	outR, outW := io.Pipe()
	b, in := pipeBroker(t, outW, Config{Options: opts(t, "", "caller")})
	t.Cleanup(func() { _ = outR.Close() })
	lines := bufio.NewScanner(outR)

	for _, style := range []string{"reply_to", "event"} {
		type result struct {
			p   *core.Payload
			err error
		}
		res := make(chan result, 1)
		go func() {
			p, err := b.Call(context.Background(), "REQUEST", map[string]any{"q": style})
			res <- result{p, err}
		}()
		if !lines.Scan() {
			t.Fatal("no line written")
		}
		var req struct {
			Event string         `json:"event"`
			ID    string         `json:"id"`
			Data  map[string]any `json:"data"`
		}
		if err := json.Unmarshal(lines.Bytes(), &req); err != nil || req.Event != "REQUEST" || req.ID == "" || req.Data["q"] != style {
			t.Fatalf("call line %s: %v", lines.Bytes(), err)
		}
		// Replies for other calls, or other events, are not taken.
		writeString(t, in, `{"event":"REQUEST:nobody","data":1}`+"\n")
		writeString(t, in, `{"event":"OTHER:`+req.ID+`","data":2}`+"\n")
		writeString(t, in, `{"event":"x","reply_to":"nobody","data":3}`+"\n")
		if style == "reply_to" {
			writeString(t, in, `{"event":"whatever","reply_to":"`+req.ID+`","data":{"answer":"r"}}`+"\n")
		} else {
			writeString(t, in, `{"event":"REQUEST:`+req.ID+`","data":{"answer":"e"}}`+"\n")
		}
		r := <-res
		if r.err != nil {
			t.Fatal(r.err)
		}
		data, err := r.p.Data()
		if err != nil || !reflect.DeepEqual(data, map[string]any{"answer": style[:1]}) {
			t.Fatalf("%s: reply %v, %v", style, data, err)
		}
	}
	if n := b.calls.pending.Load(); n != 0 {
		t.Errorf("%d calls still registered", n)
	}
}

// TestEndOfInput: at EOF consumers handle every message already read, Done
// closes, calls fail fast, publishing still works.
func TestEndOfInput(t *testing.T) {
	const n = 500
	pr, pw := io.Pipe()
	out := &syncBuffer{}
	o := opts(t, "bot", "b")
	o.Concurrency = 4
	b := newBroker(t, pr, out, Config{Options: o, QueueSize: 16})
	handled := make(chan struct{}, n)
	err := b.Consume(ctxT(t), []string{"E"}, func(ctx context.Context, m *core.Message) {
		time.Sleep(100 * time.Microsecond)
		handled <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	callErr := make(chan error, 1)
	go func() {
		_, err := b.Call(context.Background(), "REQUEST", 1)
		callErr <- err
	}()
	var lines bytes.Buffer
	for i := range n {
		lines.WriteString(`{"event":"E","data":` + strings.Repeat("1", 1+i%5) + "}\n")
	}
	go func() {
		_, _ = pw.Write(lines.Bytes())
		_ = pw.Close()
	}()
	select {
	case <-b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed")
	}
	if len(handled) != n {
		t.Fatalf("%d of %d messages handled when Done closed", len(handled), n)
	}
	if !errors.Is(b.Err(), io.EOF) {
		t.Errorf("Err = %v, want EOF", b.Err())
	}
	brokertest.WaitErr(t, callErr, "the waiting call", ErrInputEnded)
	if _, err := b.Call(context.Background(), "REQUEST", 1); !errors.Is(err, ErrInputEnded) {
		t.Errorf("call after EOF: %v, want ErrInputEnded", err)
	}
	// Consume still succeeds; nothing more arrives.
	if err := b.Consume(ctxT(t), []string{"E"}, func(context.Context, *core.Message) { t.Error("delivery after EOF") }); err != nil {
		t.Errorf("consume after EOF: %v", err)
	}
	if _, err := b.Publish(ctxT(t), "AFTER", 1); err != nil {
		t.Errorf("publish after EOF: %v", err)
	}
	if !strings.HasSuffix(out.String(), `"data":1}`+"\n") {
		t.Errorf("output %q", out.String())
	}
}
