package ipc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// calls are the calls of a broker waiting for their reply, by message id.
// A call registers before its message is written, so that no reply, however
// fast, finds nobody waiting.
type calls struct {
	mu      sync.Mutex
	waiting map[string]*pendingCall
	pending atomic.Int64 // len(waiting), read without the lock
}

type pendingCall struct {
	event string
	reply chan *core.Payload // cap 1
}

func (cs *calls) add(id, event string) *pendingCall {
	pc := &pendingCall{event: event, reply: make(chan *core.Payload, 1)}
	cs.mu.Lock()
	cs.waiting[id] = pc
	cs.pending.Store(int64(len(cs.waiting)))
	cs.mu.Unlock()
	return pc
}

func (cs *calls) remove(id string) {
	cs.mu.Lock()
	delete(cs.waiting, id)
	cs.pending.Store(int64(len(cs.waiting)))
	cs.mu.Unlock()
}

// resolve hands a reply to the call waiting under id, and reports whether
// there was one. A non-empty event must also be the call's event.
func (cs *calls) resolve(id, event string, data []byte, codec core.Codec) bool {
	cs.mu.Lock()
	pc := cs.waiting[id]
	if pc == nil || (event != "" && pc.event != event) {
		cs.mu.Unlock()
		return false
	}
	delete(cs.waiting, id)
	cs.pending.Store(int64(len(cs.waiting)))
	cs.mu.Unlock()
	pc.reply <- core.NewPayload(data, codec)
	return true
}

// Call publishes data under event and waits for one reply, until ctx's
// deadline or, without one, Options.CallTimeout. A missing reply is an
// error wrapping core.ErrTimeout (and context.DeadlineExceeded). A reply is
// a message with "reply_to" set to the call's id, or, from a peer that does
// not know that field, a message under the event "{event}:{id}". When the
// input has ended no reply can come, and Call returns an error wrapping
// ErrInputEnded at once.
func (b *Broker) Call(ctx context.Context, event string, data any) (*core.Payload, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	if event == "" {
		return nil, errors.New("ipc: call: event name is empty")
	}
	select {
	case <-b.inputDone:
		return nil, fmt.Errorf("ipc: call %s: %w", event, ErrInputEnded)
	default:
	}
	payload, opaque, err := b.encode(data)
	if err != nil {
		return nil, fmt.Errorf("ipc: call %s: %w", event, err)
	}
	started := time.Now()
	ctx, cancel := b.cfg.CallContext(ctx)
	defer cancel()

	id := b.newID()
	pc := b.calls.add(id, event)
	defer b.calls.remove(id)
	b.startReading()
	if err := b.send(ctx, &envelope{event: event, id: id, data: payload, opaque: opaque}); err != nil {
		if ctx.Err() != nil {
			return nil, core.TimeoutError(event, ctx, started)
		}
		return nil, fmt.Errorf("ipc: call %s: %w", event, err)
	}
	select {
	case p := <-pc.reply:
		return p, nil
	case <-ctx.Done():
		return nil, core.TimeoutError(event, ctx, started)
	case <-b.closeCtx.Done():
		return replyOr(pc, fmt.Errorf("ipc: call %s: %w", event, core.ErrClosed))
	case <-b.inputDone:
		return replyOr(pc, fmt.Errorf("ipc: call %s: %w", event, ErrInputEnded))
	}
}

// replyOr returns the reply if it came after all, else err.
func replyOr(pc *pendingCall, err error) (*core.Payload, error) {
	select {
	case p := <-pc.reply:
		return p, nil
	default:
		return nil, err
	}
}
