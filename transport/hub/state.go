package hub

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// state is the hub's routing state, guarded by mu: the registered
// connections by group, one queue per (event, group), the deliveries
// waiting for an acknowledgement.
type state struct {
	s  *Server
	mu sync.Mutex

	seq       uint64 // message ids and delivery tags
	sessions  uint64
	groups    map[string]map[*conn]struct{} // registered instances by group
	queues    map[string]map[string]*queue  // by event, then group
	published uint64
	unhandled uint64
	stopped   bool
	history   []core.PresenceEvent // the latest, oldest first, at most historyLen
}

// historyLen is how many presence events the hub remembers.
const historyLen = 200

func (st *state) init(s *Server) {
	st.s = s
	st.groups = make(map[string]map[*conn]struct{})
	st.queues = make(map[string]map[string]*queue)
}

// entry is one message waiting for, or out for, delivery to one group.
type entry struct {
	event string
	id    string
	// body and body64 are the payload as the publisher sent it (see
	// Command), passed on unchanged.
	body       json.RawMessage
	body64     string
	headers    map[string]string
	deliveries int
	lastClient string
	// caller and callerKey name the Call this message is, if it is one.
	caller    *conn
	callerKey string
	answered  *bool // shared by the copies of one Call: answered once
}

// queue holds the messages of one event for one group.
type queue struct {
	event, group string
	ready        []*entry // ready[head:] waits, oldest first
	head         int
	subs         []*sub // the subscriptions of the group's instances to event
	next         int    // round-robin position in subs
	inflight     int
}

func (q *queue) len() int { return len(q.ready) - q.head }

func (q *queue) pushBack(e *entry) {
	if q.head > 0 && q.head*2 >= len(q.ready) {
		n := copy(q.ready, q.ready[q.head:])
		clear(q.ready[n:])
		q.ready, q.head = q.ready[:n], 0
	}
	q.ready = append(q.ready, e)
}

func (q *queue) pushFront(e *entry) {
	if q.head > 0 {
		q.head--
		q.ready[q.head] = e
		return
	}
	q.ready = slices.Insert(q.ready, 0, e)
}

func (q *queue) pop() *entry {
	e := q.ready[q.head]
	q.ready[q.head] = nil
	q.head++
	if q.head == len(q.ready) {
		q.ready, q.head = q.ready[:0], 0
	}
	return e
}

// sub is one drs.subscribe of a connection.
type sub struct {
	id            string
	c             *conn
	actions       []string
	calls         []string
	prefetch      int
	timeout       time.Duration
	maxDeliveries int
	inflight      int
	stopped       bool
}

// delivery is a message out to a subscription, waiting for its ack.
type delivery struct {
	tag   string
	e     *entry
	q     *queue
	s     *sub
	timer *time.Timer
}

func (st *state) nextSeq() uint64 { st.seq++; return st.seq }

// queueLocked returns (creating it) the queue of event for group.
func (st *state) queueLocked(event, group string) *queue {
	byGroup := st.queues[event]
	if byGroup == nil {
		byGroup = make(map[string]*queue)
		st.queues[event] = byGroup
	}
	q := byGroup[group]
	if q == nil {
		q = &queue{event: event, group: group}
		byGroup[group] = q
	}
	return q
}

// online reports whether some instance of q's group is subscribed to it.
func (q *queue) online() bool {
	for _, s := range q.subs {
		if !s.stopped {
			return true
		}
	}
	return false
}

// publishLocked routes a message to every group that consumes its event
// and reports how many groups it was queued for. A Call (caller set) is
// queued only for groups that have an instance online, since no other can
// answer in time.
func (st *state) publishLocked(e *entry) int {
	byGroup := st.queues[e.event]
	n := 0
	for _, q := range byGroup {
		if e.caller != nil && !q.online() {
			continue
		}
		cp := *e
		if len(q.ready)-q.head >= st.s.cfg.MaxQueueLength {
			dropped := q.pop()
			st.s.log.Warn("queue full: dropped its oldest message", "event", q.event, "group", q.group, "id", dropped.id,
				"max", st.s.cfg.MaxQueueLength)
		}
		q.pushBack(&cp)
		st.dispatchLocked(q)
		n++
	}
	if n > 0 {
		st.published++
	}
	return n
}

// dispatchLocked hands the waiting messages of q to subscriptions with
// room, in turn.
func (st *state) dispatchLocked(q *queue) {
	for q.len() > 0 && len(q.subs) > 0 {
		var target *sub
		for i := range q.subs {
			s := q.subs[(q.next+i)%len(q.subs)]
			if !s.stopped && s.inflight < s.prefetch {
				target = s
				q.next = (q.next + i + 1) % len(q.subs)
				break
			}
		}
		if target == nil {
			return
		}
		e := q.pop()
		e.deliveries++
		_, isDLQ := core.IsDeadLetterEvent(e.event)
		if !isDLQ && target.maxDeliveries > 0 && e.deliveries > target.maxDeliveries {
			st.deadLetterLocked(e, q.group, e.lastClient, core.ReasonMaxDeliveries)
			continue
		}
		e.lastClient = target.c.client()
		d := &delivery{tag: "d" + strconv.FormatUint(st.nextSeq(), 36), e: e, q: q, s: target}
		target.inflight++
		q.inflight++
		target.c.inflight[d.tag] = d
		d.timer = time.AfterFunc(target.timeout, func() { st.expire(d) })
		cmd := Command{Action: e.event, Key: d.tag, ID: e.id, Sub: target.id, Deliveries: e.deliveries,
			Call: e.caller != nil, Headers: e.headers}
		cmd.Body, cmd.BodyBase64 = e.body, e.body64
		target.c.send(cmd)
	}
}

// settleLocked removes d from what is in flight. It reports false when d
// was already settled (or expired).
func (st *state) settleLocked(d *delivery) bool {
	c := d.s.c
	if c.inflight[d.tag] != d {
		return false
	}
	delete(c.inflight, d.tag)
	d.timer.Stop()
	d.s.inflight--
	d.q.inflight--
	return true
}

// refillLocked dispatches the queues s consumes, after s got room.
func (st *state) refillLocked(s *sub) {
	group := s.c.group()
	for _, ev := range s.actions {
		if q := st.queues[ev][group]; q != nil {
			st.dispatchLocked(q)
		}
	}
}

// expire gives back a delivery not acknowledged within its timeout.
func (st *state) expire(d *delivery) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stopped || !st.settleLocked(d) {
		return
	}
	d.q.pushFront(d.e)
	st.dispatchLocked(d.q)
	st.refillLocked(d.s)
}

// requeueLocked gives back every delivery of the connection c (which left).
func (st *state) requeueLocked(c *conn) {
	ds := make([]*delivery, 0, len(c.inflight))
	for _, d := range c.inflight {
		ds = append(ds, d)
	}
	// Oldest first, so that pushFront leaves them in their order.
	sort.Slice(ds, func(i, j int) bool { return tagLess(ds[j].tag, ds[i].tag) })
	touched := map[*queue]bool{}
	for _, d := range ds {
		st.settleLocked(d)
		d.q.pushFront(d.e)
		touched[d.q] = true
	}
	for q := range touched {
		st.dispatchLocked(q)
	}
}

func tagLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// deadLetterLocked publishes e under its event's dead-letter event, with
// the core.Header* metadata.
func (st *state) deadLetterLocked(e *entry, group, client, reason string) {
	dl := &entry{
		event:  core.DeadLetterEvent(e.event),
		id:     st.newID(),
		body:   e.body,
		body64: e.body64,
		headers: map[string]string{
			core.HeaderEvent:      e.event,
			core.HeaderID:         e.id,
			core.HeaderGroup:      group,
			core.HeaderClient:     client,
			core.HeaderReason:     reason,
			core.HeaderDeliveries: strconv.Itoa(e.deliveries),
			core.HeaderFailedAt:   time.Now().UTC().Format(time.RFC3339Nano),
		},
	}
	if st.publishLocked(dl) == 0 {
		st.s.log.Warn("dead letter dropped: no group consumes its event", "event", dl.event, "id", e.id, "reason", reason)
	}
	if e.caller != nil && !*e.answered {
		*e.answered = true
		e.caller.send(errorCommand(ActionException, e.callerKey, ErrorBody{Reason: "the message was dead-lettered: " + reason,
			Code: CodeHandler, Action: e.event, ID: e.id}))
	}
}

// newID returns a hub-assigned message id.
func (st *state) newID() string { return "h-" + strconv.FormatUint(st.nextSeq(), 10) }

// subscribeLocked adds s to the queues of its actions and starts
// delivering.
func (st *state) subscribeLocked(s *sub) {
	group := s.c.group()
	for _, ev := range s.actions {
		q := st.queueLocked(ev, group)
		q.subs = append(q.subs, s)
		st.dispatchLocked(q)
	}
}

// unsubscribeLocked stops deliveries to s; what it holds stays in flight
// until acknowledged, expired, or its connection leaves.
func (st *state) unsubscribeLocked(s *sub) {
	s.stopped = true
	group := s.c.group()
	for _, ev := range s.actions {
		q := st.queues[ev][group]
		if q == nil {
			continue
		}
		q.subs = slices.DeleteFunc(q.subs, func(o *sub) bool { return o == s })
		if q.next >= len(q.subs) {
			q.next = 0
		}
	}
}

// broadcastLocked sends cmd to every registered connection.
func (st *state) broadcastLocked(cmd Command) {
	frame := cmd.Encode()
	for _, c := range st.s.connList() {
		if c.registered() {
			c.sendFrame(frame)
		}
	}
}

// presenceLocked publishes a presence event about c.
func (st *state) presenceLocked(event string, c *conn, reason string) {
	pe := core.PresenceEvent{Event: event, Instance: c.instanceLocked(), Reason: reason, At: time.Now().UTC()}
	if len(st.history) == historyLen {
		st.history = append(st.history[:0], st.history[1:]...)
	}
	st.history = append(st.history, pe)
	raw, err := json.Marshal(pe)
	if err != nil {
		return
	}
	st.publishLocked(&entry{event: event, id: st.newID(), body: raw})
}

// joinLocked records c, which subscribed, as an instance of its group
// (once): a client that only sends is not announced.
func (st *state) joinLocked(c *conn) {
	g := c.group()
	if g == "" {
		return
	}
	members := st.groups[g]
	if _, ok := members[c]; ok {
		return
	}
	first := len(members) == 0
	if members == nil {
		members = make(map[*conn]struct{})
		st.groups[g] = members
	}
	members[c] = struct{}{}
	st.presenceLocked(core.EventInstanceConnected, c, "")
	if first {
		st.presenceLocked(core.EventGroupOnline, c, "")
	}
}

// leaveLocked forgets c, which disconnected, and gives back what it held.
func (st *state) leaveLocked(c *conn, reason string) {
	for _, s := range c.subs {
		st.unsubscribeLocked(s)
	}
	st.requeueLocked(c)
	g := c.group()
	if g == "" || st.groups[g] == nil {
		return
	}
	if _, ok := st.groups[g][c]; !ok {
		return
	}
	delete(st.groups[g], c)
	st.presenceLocked(core.EventInstanceDisconnected, c, reason)
	if len(st.groups[g]) == 0 {
		delete(st.groups, g)
		st.presenceLocked(core.EventGroupOffline, c, reason)
	}
}

// instancesLocked lists the registered instances that have a group.
func (st *state) instancesLocked() []core.Instance {
	out := []core.Instance{}
	for _, members := range st.groups {
		for c := range members {
			out = append(out, c.instanceLocked())
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		return out[i].Client < out[j].Client
	})
	return out
}

// unhandledLocked describes every registered connection that fired
// events no group consumes, with its counts.
func (st *state) unhandledLocked() []core.Instance {
	out := []core.Instance{}
	for _, c := range st.s.connList() {
		if c.registered() {
			if in := c.instanceLocked(); len(in.Unhandled) > 0 {
				out = append(out, in)
			}
		}
	}
	return out
}

// historyLocked returns up to n of the latest presence events, newest
// first.
func (st *state) historyLocked(n int) []core.PresenceEvent {
	out := make([]core.PresenceEvent, 0, min(n, len(st.history)))
	for i := len(st.history) - 1; i >= 0 && len(out) < n; i-- {
		out = append(out, st.history[i])
	}
	return out
}

// stopTimers stops every delivery timer (the hub is closing).
func (st *state) stopTimers() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.stopped = true
	for _, byGroup := range st.queues {
		for _, q := range byGroup {
			for _, s := range q.subs {
				for _, d := range s.c.inflight {
					d.timer.Stop()
				}
			}
		}
	}
}

func marshalBody(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("hub: encode body: %w", err)
	}
	return raw, nil
}
