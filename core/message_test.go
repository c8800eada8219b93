package core

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type fakeSettler struct {
	acks, replies, dead int
	reason              string
	reply               []byte
	fail                error
}

func (f *fakeSettler) Ack(context.Context, *Message) error {
	f.acks++
	return f.fail
}
func (f *fakeSettler) Reply(_ context.Context, _ *Message, p []byte) error {
	f.replies++
	f.reply = p
	return f.fail
}
func (f *fakeSettler) DeadLetter(_ context.Context, _ *Message, reason string) error {
	f.dead++
	f.reason = reason
	return f.fail
}

func TestMessageSettlesOnce(t *testing.T) {
	ctx := context.Background()
	s := &fakeSettler{}
	m := NewMessage("E", "1-0", mustMsgpack(map[string]any{"a": 1}), 1, nil, s)
	if err := m.Ack(ctx); err != nil || !m.Settled() {
		t.Fatalf("ack: %v settled %v", err, m.Settled())
	}
	_ = m.Ack(ctx)
	_ = m.Reject(ctx, "late")
	if s.acks != 1 || s.dead != 0 {
		t.Errorf("acks %d dead %d after settling twice", s.acks, s.dead)
	}
	if err := m.Reply(ctx, map[string]any{"ok": true}); err != nil || s.replies != 1 {
		t.Errorf("reply after ack: %v (%d)", err, s.replies)
	}
	var v any
	if err := (Msgpack{}).Unmarshal(s.reply, &v); err != nil {
		t.Errorf("reply not msgpack: %v", err)
	}
}

func TestMessageFailedAckStaysUnsettled(t *testing.T) {
	s := &fakeSettler{fail: errors.New("connection reset")}
	m := NewMessage("E", "1-0", []byte{0x01}, 1, nil, s)
	if err := m.Ack(context.Background()); err == nil || m.Settled() {
		t.Fatalf("failed ack: err %v settled %v", err, m.Settled())
	}
	if err := m.Reject(context.Background(), "x"); err == nil || m.Settled() {
		t.Fatalf("failed reject: err %v settled %v", err, m.Settled())
	}
}

func TestPayloadDecodesOnce(t *testing.T) {
	p := NewPayload([]byte{0xc1}, nil)
	_, err1 := p.Data()
	_, err2 := p.Data()
	if !errors.Is(err1, ErrUndecodable) || err1 != err2 {
		t.Errorf("errors %v / %v", err1, err2)
	}
	if p.Codec().Name() != "msgpack" {
		t.Errorf("default codec %s", p.Codec().Name())
	}
}

func TestRunHandlerContainsPanics(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	m := NewMessage("E", "1-0", nil, 1, nil, &fakeSettler{})
	RunHandler(context.Background(), log, func(context.Context, *Message) { panic("boom") }, m)
	if !strings.Contains(buf.String(), "boom") || m.Settled() {
		t.Errorf("log %q settled %v", buf.String(), m.Settled())
	}
}

func TestOptionsDefaultsAndCallContext(t *testing.T) {
	o := Options{}.WithDefaults()
	if o.MessageTimeout != 2*time.Minute || o.MaxDeliveries != 5 || o.CallTimeout != 5*time.Second || o.Codec == nil || o.Logger == nil || o.Concurrency != 256 {
		t.Errorf("defaults: %+v", o)
	}
	if o := (Options{MaxDeliveries: -1}).WithDefaults(); o.MaxDeliveries != -1 {
		t.Errorf("negative MaxDeliveries changed to %d", o.MaxDeliveries)
	}
	o.CallTimeout = time.Millisecond
	ctx, cancel := o.CallContext(context.Background())
	defer cancel()
	<-ctx.Done()
	err := TimeoutError("E", ctx, time.Now())
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout error %v", err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if err := TimeoutError("E", cctx, time.Now()); errors.Is(err, ErrTimeout) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancel error %v", err)
	}
}

func TestConsumeEvents(t *testing.T) {
	got, err := ConsumeEvents([]string{"A", "B", "A"})
	if err != nil || len(got) != 2 || got[0] != "A" || got[1] != "B" {
		t.Errorf("got %v %v", got, err)
	}
	for _, bad := range [][]string{nil, {"A", ""}} {
		if _, err := ConsumeEvents(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A MessageBlock's messages are whole messages of their own: each has its
// fields and payload, settles on its own, and decodes its own payload; and
// they cost one allocation per MessageBlockLen of them.
func TestMessageBlock(t *testing.T) {
	ctx := context.Background()
	var b MessageBlock
	s := &fakeSettler{}
	msgs := make([]*Message, MessageBlockLen+3) // across two blocks
	for i := range msgs {
		msgs[i] = b.New("E", strings.Repeat("x", i), mustMsgpack(map[string]any{"i": i}), i+1, nil, s)
	}
	if err := msgs[1].Ack(ctx); err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		if m.Event != "E" || m.ID != strings.Repeat("x", i) || m.Deliveries != i+1 || m.Headers != nil {
			t.Errorf("message %d: %+v", i, m)
		}
		if m.Settled() != (i == 1) {
			t.Errorf("message %d settled %v: only message 1 was acked", i, m.Settled())
		}
		var v map[string]int
		if err := m.Decode(&v); err != nil || v["i"] != i {
			t.Errorf("message %d decodes to %v, %v", i, v, err)
		}
		if m.Codec().Name() != "msgpack" {
			t.Errorf("message %d codec %s, want the default", i, m.Codec().Name())
		}
	}
	var none *MessageBlock
	if m := none.New("E", "1-0", []byte{0x01}, 2, nil, s); m.ID != "1-0" || m.Deliveries != 2 || m.Codec().Name() != "msgpack" {
		t.Errorf("nil block's message: %+v", m)
	}
	raw := []byte{0x01}
	if n := testing.AllocsPerRun(4*MessageBlockLen, func() { _ = b.New("E", "1-0", raw, 1, nil, s) }); n != 0 {
		t.Errorf("%v allocations per message, want one per block", n)
	}
}
