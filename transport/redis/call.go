package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/retry"
)

// Replies to calls arrive on PUBLISH {event}:{id}. The other clients
// SUBSCRIBE to that channel only after their XADD returned, so a fast
// responder's reply is lost. Here one pubsub connection per broker holds a
// pattern subscription {event}:* made, and confirmed, before the first
// XADD of a call on event; a reply that arrives before its caller has
// registered (between the XADD and the registration) is kept for it.
const (
	// pingInterval is how often the pubsub connection is pinged and idle
	// subscriptions are retired.
	pingInterval = 5 * time.Second
	// idleSubscription is how long a pattern stays subscribed without calls.
	idleSubscription = 5 * time.Minute
	// stashMaxAge and stashMaxLen bound the replies kept for callers that
	// have not registered yet.
	stashMaxAge = time.Minute
	stashMaxLen = 8192
)

// replies is a broker's pubsub side of Call.
type replies struct {
	b *Broker

	// subMu serialises PSUBSCRIBE and PUNSUBSCRIBE so that they reach the
	// server in the order the state below changed.
	subMu sync.Mutex

	mu        sync.Mutex
	ps        *goredis.PubSub // nil until the first call
	loopDone  chan struct{}
	maintDone chan struct{}
	closed    bool
	events    map[string]*eventSub // by event
	byPattern map[string]*eventSub
	waiters   map[string]chan []byte // by reply channel
	stashQ    []stashRef             // stashed replies, oldest first
}

// eventSub is the subscription for one event's replies.
type eventSub struct {
	event, pattern string
	ready          chan struct{} // closed once the server confirmed the pattern
	confirmed      bool
	inflight       int                     // calls on event in progress
	unregistered   int                     // of those, calls not yet waiting for their reply
	stash          map[string]stashedReply // replies that came before their caller registered
	idleSince      time.Time
}

type stashedReply struct {
	payload []byte
	at      time.Time
}

type stashRef struct {
	sub     *eventSub
	channel string
	at      time.Time
}

func newReplies(b *Broker) *replies {
	return &replies{
		b:         b,
		events:    make(map[string]*eventSub),
		byPattern: make(map[string]*eventSub),
		waiters:   make(map[string]chan []byte),
	}
}

// replyPattern is the glob matching every reply channel of event.
func replyPattern(event string) string {
	var sb strings.Builder
	sb.Grow(len(event) + 4)
	for _, r := range event {
		switch r {
		case '*', '?', '[', ']', '\\':
			sb.WriteByte('\\')
		}
		sb.WriteRune(r)
	}
	sb.WriteString(":*")
	return sb.String()
}

// replyChannel is the channel of the reply to message id of event.
func replyChannel(event, id string) string { return event + ":" + id }

// Call publishes data under event and waits for one reply, until ctx's
// deadline or, without one, Options.CallTimeout. A missing reply is an error
// wrapping core.ErrTimeout (and context.DeadlineExceeded). A failed XADD
// that may still have added the message wraps core.ErrPublishUncertain, as
// for Publish.
func (b *Broker) Call(ctx context.Context, event string, data any) (*core.Payload, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	if event == "" {
		return nil, errors.New("redis: call: event name is empty")
	}
	raw, err := b.cfg.Codec.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("redis: call %s: %w", event, err)
	}
	started := time.Now()
	ctx, cancel := b.cfg.CallContext(ctx)
	defer cancel()

	r := b.replies
	sub, err := r.acquire(ctx, event)
	if err != nil {
		return nil, r.callError(ctx, event, started, err)
	}
	registered := false
	defer func() { r.release(sub, registered) }()

	id, err := b.publishRaw(ctx, event, raw, true)
	if err != nil {
		return nil, r.callError(ctx, event, started, err)
	}
	ch := r.register(sub, replyChannel(event, id))
	registered = true
	defer r.unregister(replyChannel(event, id), ch)
	unhandled, stopCheck := b.checkConsumed(ctx, event)
	defer stopCheck()

	select {
	case payload := <-ch:
		return core.NewPayload(payload, b.cfg.Codec), nil
	case err := <-unhandled:
		return nil, fmt.Errorf("redis: call %s: %w", event, err)
	case <-ctx.Done():
		return nil, core.TimeoutError(event, ctx, started)
	case <-b.closeCtx.Done():
		return nil, core.ErrClosed
	}
}

func (r *replies) callError(ctx context.Context, event string, started time.Time, err error) error {
	switch {
	case errors.Is(err, core.ErrClosed):
		return core.ErrClosed
	case ctx.Err() != nil:
		te := core.TimeoutError(event, ctx, started)
		if errors.Is(err, core.ErrPublishUncertain) {
			// The deadline came while waiting for the XADD's reply.
			return fmt.Errorf("%w: %w", te, core.ErrPublishUncertain)
		}
		return te
	}
	return fmt.Errorf("redis: call %s: %w", event, err)
}

// acquire counts a call on event and returns once the reply pattern is
// subscribed and confirmed.
func (r *replies) acquire(ctx context.Context, event string) (*eventSub, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, core.ErrClosed
	}
	if r.ps == nil {
		// An empty PubSub: it connects when the loop first receives.
		r.ps = r.b.client.PSubscribe(context.Background())
		r.loopDone = make(chan struct{})
		r.maintDone = make(chan struct{})
		go r.loop(r.ps, r.loopDone)
		go r.maintain(r.ps, r.maintDone)
	}
	sub := r.events[event]
	fresh := sub == nil
	if fresh {
		sub = &eventSub{event: event, pattern: replyPattern(event), ready: make(chan struct{})}
		r.events[event] = sub
		r.byPattern[sub.pattern] = sub
	}
	sub.inflight++
	sub.unregistered++
	ready := sub.ready
	confirmed := sub.confirmed
	r.mu.Unlock()

	if confirmed {
		return sub, nil
	}
	// Subscribe (the first caller), then wait for the confirmation. A
	// write that failed is repeated while waiting; a repeated PSUBSCRIBE
	// is harmless and confirmed again.
	subscribe := fresh
	retry := time.NewTimer(time.Second)
	defer retry.Stop()
	for {
		if subscribe {
			r.psubscribe(sub.pattern)
		}
		select {
		case <-ready:
			return sub, nil
		case <-ctx.Done():
			r.release(sub, false)
			return nil, ctx.Err()
		case <-r.b.closeCtx.Done():
			r.release(sub, false)
			return nil, core.ErrClosed
		case <-retry.C:
			subscribe = true
			retry.Reset(time.Second)
		}
	}
}

// psubscribe sends PSUBSCRIBE; the confirmation arrives in the loop.
func (r *replies) psubscribe(patterns ...string) {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	if err := r.ps.PSubscribe(context.Background(), patterns...); err != nil {
		r.b.log.Debug("psubscribe failed; will retry", "patterns", patterns, "err", err)
	}
}

// release ends a call on sub.
func (r *replies) release(sub *eventSub, registered bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sub.inflight--
	if !registered {
		sub.unregistered--
	}
	if sub.inflight == 0 {
		sub.stash = nil
		sub.idleSince = time.Now()
	}
}

// register starts waiting for the reply on channel, taking it from the
// stash when it came early.
func (r *replies) register(sub *eventSub, channel string) chan []byte {
	ch := make(chan []byte, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	sub.unregistered--
	if s, ok := sub.stash[channel]; ok {
		delete(sub.stash, channel)
		ch <- s.payload
		return ch
	}
	r.waiters[channel] = ch
	return ch
}

func (r *replies) unregister(channel string, ch chan []byte) {
	r.mu.Lock()
	if r.waiters[channel] == ch {
		delete(r.waiters, channel)
	}
	r.mu.Unlock()
}

// deliver hands a reply to its waiter, or stashes it while calls on its
// event have not registered yet.
func (r *replies) deliver(pattern, channel, payload string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.waiters[channel]; ok {
		delete(r.waiters, channel)
		ch <- []byte(payload)
		return
	}
	sub := r.byPattern[pattern]
	if sub == nil || sub.unregistered == 0 {
		return // a reply to someone else's call, or one nobody waits for
	}
	now := time.Now()
	if sub.stash == nil {
		sub.stash = make(map[string]stashedReply)
	}
	sub.stash[channel] = stashedReply{payload: []byte(payload), at: now}
	r.stashQ = append(r.stashQ, stashRef{sub: sub, channel: channel, at: now})
	r.pruneLocked(now)
}

// pruneLocked drops stashed replies older than stashMaxAge, and the oldest
// ones beyond stashMaxLen.
func (r *replies) pruneLocked(now time.Time) {
	drop := 0
	for drop < len(r.stashQ) && (len(r.stashQ)-drop > stashMaxLen || now.Sub(r.stashQ[drop].at) > stashMaxAge) {
		ref := r.stashQ[drop]
		if s, ok := ref.sub.stash[ref.channel]; ok && s.at.Equal(ref.at) {
			delete(ref.sub.stash, ref.channel)
		}
		r.stashQ[drop] = stashRef{}
		drop++
	}
	if drop > 0 {
		r.stashQ = r.stashQ[drop:]
		if len(r.stashQ) == 0 {
			r.stashQ = nil
		}
	}
}

// confirm marks pattern subscribed.
func (r *replies) confirm(pattern string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sub := r.byPattern[pattern]; sub != nil && !sub.confirmed {
		sub.confirmed = true
		close(sub.ready)
	}
}

// unconfirmAll is called when the connection failed: until the server
// confirms the patterns again (go-redis subscribes them again on its new
// connection), new calls wait.
func (r *replies) unconfirmAll() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	patterns := make([]string, 0, len(r.byPattern))
	for p, sub := range r.byPattern {
		if sub.confirmed {
			sub.confirmed = false
			sub.ready = make(chan struct{})
		}
		patterns = append(patterns, p)
	}
	return patterns
}

// retireIdle unsubscribes the patterns of events without calls for
// idleSubscription.
func (r *replies) retireIdle(ps *goredis.PubSub) {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	var idle []string
	r.mu.Lock()
	now := time.Now()
	for ev, sub := range r.events {
		if sub.inflight == 0 && now.Sub(sub.idleSince) > idleSubscription {
			delete(r.events, ev)
			delete(r.byPattern, sub.pattern)
			idle = append(idle, sub.pattern)
		}
	}
	r.pruneLocked(now)
	r.mu.Unlock()
	if len(idle) > 0 {
		if err := ps.PUnsubscribe(context.Background(), idle...); err != nil {
			r.b.log.Debug("punsubscribe failed", "err", err)
		}
	}
}

func (r *replies) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// loop receives replies and subscription confirmations until ps closes.
// It never reads with a deadline: a read cut by a deadline can lose part
// of a message and desynchronise the connection. maintain pings instead.
func (r *replies) loop(ps *goredis.PubSub, done chan struct{}) {
	defer close(done)
	ctx := context.Background()
	var bo retry.Backoff
	for {
		msg, err := ps.Receive(ctx)
		if r.isClosed() {
			return
		}
		if err != nil {
			// The connection failed; go-redis dials again and subscribes
			// to the patterns it knows. Until the server confirms them,
			// new calls wait; subscribe again anyway so that a
			// confirmation surely follows.
			r.b.log.Warn("reply subscription connection failed; reconnecting", "err", err)
			patterns := r.unconfirmAll()
			if !retry.Sleep(r.b.closeCtx, bo.Next()) {
				return
			}
			if len(patterns) > 0 {
				r.psubscribe(patterns...)
			}
			continue
		}
		bo.Reset()
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "psubscribe" {
				r.confirm(m.Channel)
			}
		case *goredis.Message:
			r.deliver(m.Pattern, m.Channel, m.Payload)
		}
	}
}

// maintain pings the pubsub connection, so that a dead one is noticed and
// replaced, and retires idle subscriptions, until the broker closes.
func (r *replies) maintain(ps *goredis.PubSub, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(pingInterval)
	defer t.Stop()
	for {
		select {
		case <-r.b.closeCtx.Done():
			return
		case <-t.C:
			r.retireIdle(ps)
			ctx, cancel := context.WithTimeout(r.b.closeCtx, pingInterval)
			_ = ps.Ping(ctx)
			cancel()
		}
	}
}

// close ends the pubsub connection and its loop. Waiting calls return
// core.ErrClosed (they watch the broker's close context).
func (r *replies) close() {
	r.mu.Lock()
	r.closed = true
	ps, loopDone, maintDone := r.ps, r.loopDone, r.maintDone
	r.mu.Unlock()
	if ps == nil {
		return
	}
	_ = ps.Close()
	<-loopDone
	<-maintDone
}

// unhandledCheckAfter is how long a call waits for its reply before it
// looks for a group on its stream: a call answered sooner costs no extra
// command.
const unhandledCheckAfter = 50 * time.Millisecond

// checkConsumed looks, once a call has waited unhandledCheckAfter for its
// reply, for a group on the call's stream: with none, nobody can ever read
// the call, and the channel yields an error wrapping core.ErrUnhandled, so
// that the call fails then instead of at its timeout. A group whose
// consumers are all gone still counts (its service reads the call when it
// comes back), and a server that cannot tell (an error) lets the call
// wait. stop cancels a check not yet started.
func (b *Broker) checkConsumed(ctx context.Context, event string) (unhandled <-chan error, stop func() bool) {
	out := make(chan error, 1)
	t := time.AfterFunc(unhandledCheckAfter, func() {
		groups, err := b.client.XInfoGroups(ctx, event).Result()
		if err == nil && len(groups) == 0 {
			out <- fmt.Errorf("%w (no consumer group reads its stream)", core.ErrUnhandled)
		}
	})
	return out, t.Stop
}
