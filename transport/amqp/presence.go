package amqp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
)

// Presence on RabbitMQ, through AMQP alone (no management API needed):
//
//   - Every client that consumes (unless Options.Announce.Disabled)
//     declares, on its consuming connection, an exclusive queue
//     PresenceQueuePrefix + "instance." + SESSION, bound to the direct
//     exchange PresenceExchange with the keys "heartbeat", "leave" and
//     "query", and consumes it. RabbitMQ deletes an
//     exclusive queue the moment its connection closes, a process killed
//     with -9 included: the queue exists while the instance lives.
//   - Every heartbeat (Announce.Heartbeat, default 4 s) it publishes its
//     announcement (core.Instance, with its exchange) to PresenceExchange,
//     so that every live instance knows every other. One whose heartbeat
//     is late, each instance checks with a passive declare of its queue:
//     gone (404) means gone, and the departure is published ("lost").
//   - Who is in a group is kept in a durable queue PresenceQueuePrefix +
//     "group." + GROUP holding one message, the group's members; it is
//     changed only under the group's lock, an exclusive queue
//     PresenceQueuePrefix + "lock." + GROUP that one connection at a time
//     can declare (RabbitMQ answers the others RESOURCE_LOCKED) and that
//     dies with its connection. (Deleting a queue cannot decide a race:
//     RabbitMQ answers delete-ok for a queue that does not exist.) Whoever removes an instance from its group
//     publishes its EventInstanceDisconnected, and EventGroupOffline when
//     it was the last; whoever adds one EventInstanceConnected, and
//     EventGroupOnline when it was the first: each event once. A joining
//     instance also removes (and reports) the members whose queue is gone,
//     so a group whose every instance died is cleaned up by the next.
//   - Instances asks every live instance (a "query" message on
//     PresenceExchange) and merges their answers (each its own
//     announcement and the ones it heard); with the management API
//     present, the connections carrying PresenceProperty are added.
//   - A client that publishes without consuming, once it has published
//     a message no queue took, answers queries too (an exclusive,
//     server-named queue bound with "query" alone), with its unhandled
//     counts: UnhandledReports sees them; Instances does not list it.
//
// The presence events are published to the concerned instance's exchange
// with the event name as routing key.
const (
	PresenceExchange    = "spectacles.presence"
	PresenceQueuePrefix = "spectacles.presence."
)

// The routing keys on PresenceExchange (a durable direct exchange).
const (
	keyHeartbeat = "heartbeat"
	keyLeave     = "leave"
	keyQuery     = "query"
)

// declarePresenceExchange declares PresenceExchange.
func declarePresenceExchange(ch *amqp091.Channel) error {
	if err := ch.ExchangeDeclare(PresenceExchange, amqp091.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", PresenceExchange, err)
	}
	return nil
}

// PresenceProperty is the client property of a consuming connection
// carrying its announcement, for the management API's view of presence.
const PresenceProperty = "spectacles_presence"

const (
	// groupStateExpiry drops a group's member queue nobody used for a day.
	groupStateExpiry = 24 * time.Hour
	// maxKnown bounds the instances one instance remembers.
	maxKnown = 10000
	// maxPresenceBody bounds the presence messages read.
	maxPresenceBody = 1 << 20
	// Instances waits for answers until none came for answerQuiet, and
	// at most answerWait.
	answerQuiet = 250 * time.Millisecond
	answerWait  = 2 * time.Second
)

// presenceProps is the JSON of PresenceProperty.
type presenceProps struct {
	Group     string    `json:"group"`
	Client    string    `json:"client"`
	Version   string    `json:"version,omitempty"`
	Calls     []string  `json:"calls,omitempty"`
	Session   string    `json:"session"`
	Exchange  string    `json:"exchange"`
	Subgroup  string    `json:"subgroup,omitempty"`
	Host      string    `json:"host,omitempty"`
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// announcement is what an instance says of itself on PresenceExchange and
// in its group's members.
type announcement struct {
	Instance core.Instance `json:"instance"`
	Exchange string        `json:"exchange"`
}

// groupState is the message of a group's member queue.
type groupState struct {
	Version int64                   `json:"version"`
	Members map[string]announcement `json:"members"`
}

// answer is an instance's answer to a query: itself and the instances it
// heard, or (Publishers) a publisher that does not consume, with its
// unhandled counts.
type answer struct {
	Instances  []announcement `json:"instances,omitempty"`
	Publishers []announcement `json:"publishers,omitempty"`
}

// known is an instance heard of, and when (by this process's clock).
type known struct {
	ann  announcement
	seen time.Time
}

// presence is a broker's announcement and watch.
type presence struct {
	b         *Broker
	props     presenceProps
	heartbeat time.Duration
	ttl       time.Duration

	mu     sync.Mutex
	events []string
	joined bool
	left   bool
	known  map[string]*known
	stop   chan struct{}
	done   chan struct{}

	// The session queue's channel and the connection it is on (loop and
	// leave only).
	sessCh   *amqp091.Channel
	sessConn *amqp091.Connection
	// repCh answers queries for a publisher that does not consume
	// (report; the unhandled loop and Close only).
	repCh   *amqp091.Channel
	repDone sync.WaitGroup
	readers sync.WaitGroup

	lockMu    sync.Mutex // one group lock at a time on this connection
	exMu      sync.Mutex
	exchanges map[string]bool // exchanges known to exist
}

func newPresence(b *Broker) *presence {
	var s [8]byte
	_, _ = rand.Read(s[:])
	host, _ := os.Hostname()
	id := b.cfg.Identity
	a := b.cfg.Announce
	p := &presence{b: b, heartbeat: a.Heartbeat, ttl: a.TTL, known: map[string]*known{}, exchanges: map[string]bool{},
		props: presenceProps{Group: id.Group, Client: id.Client, Version: a.Version,
			Calls: a.Calls, Session: hex.EncodeToString(s[:]), Exchange: b.cfg.Exchange, Subgroup: b.cfg.Subgroup,
			Host: host, PID: os.Getpid(), StartedAt: time.Now().UTC()}}
	if p.heartbeat <= 0 {
		p.heartbeat = core.DefaultHeartbeat
	}
	if p.ttl <= 0 {
		p.ttl = core.DefaultPresenceTTL
	}
	return p
}

func (p *presence) enabled() bool { return !p.b.cfg.Announce.Disabled && p.props.Group != "" }

// property returns the client property value, or "" when presence is off.
func (p *presence) property() string {
	if !p.enabled() {
		return ""
	}
	raw, _ := json.Marshal(p.props)
	return string(raw)
}

func sessionQueue(session string) string { return PresenceQueuePrefix + "instance." + session }

// groupName keeps a group's queue names within AMQP's 255 bytes.
func groupName(group string) string {
	if len(group) <= 200 {
		return group
	}
	sum := sha256.Sum256([]byte(group))
	return "sha256:" + hex.EncodeToString(sum[:])
}
func groupQueue(group string) string { return PresenceQueuePrefix + "group." + groupName(group) }
func lockQueue(group string) string  { return PresenceQueuePrefix + "lock." + groupName(group) }

// instance is this instance's announcement now.
func (p *presence) instance() core.Instance {
	p.mu.Lock()
	events := slices.Clone(p.events)
	p.mu.Unlock()
	pp := p.props
	in := core.Instance{Group: pp.Group, Client: pp.Client, Version: pp.Version, Events: events,
		Calls: callsOf(pp.Calls, events), Session: pp.Session, Host: pp.Host, PID: pp.PID,
		StartedAt: pp.StartedAt, LastSeen: time.Now().UTC(), TTLMs: p.ttl.Milliseconds()}
	p.b.pub.drainReturns()
	if counts := p.b.unhandled.Counts(); len(counts) > 0 {
		in.Unhandled = counts
	}
	return in
}

func (p *presence) announcement() announcement {
	return announcement{Instance: p.instance(), Exchange: p.props.Exchange}
}

func callsOf(calls, events []string) []string {
	var out []string
	for _, ev := range events {
		if slices.Contains(calls, ev) {
			out = append(out, ev)
		}
	}
	return out
}

// consumed records that events are consumed and, the first time, joins
// (declares the session queue, adds the instance to its group, publishing
// the events) and starts the heartbeat. Errors are logged: presence never
// stops consumption; the heartbeat tries again.
func (p *presence) consumed(ctx context.Context, events []string) {
	if !p.enabled() {
		return
	}
	p.mu.Lock()
	if p.left {
		p.mu.Unlock()
		return
	}
	evs := append(slices.Clone(p.events), events...)
	sort.Strings(evs)
	p.events = slices.Compact(evs)
	first := !p.joined
	p.joined = true
	if first {
		p.stop, p.done = make(chan struct{}), make(chan struct{})
	}
	p.mu.Unlock()
	if !first {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := p.ensure(ctx); err != nil {
		p.b.log.Warn("presence: announcing this instance failed; retrying at the next heartbeat", "err", err)
	}
	go p.loop()
}

func (p *presence) loop() {
	defer close(p.done)
	t := time.NewTicker(p.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			step := max(p.heartbeat, 2*time.Second)
			ctx, cancel := context.WithTimeout(p.b.closeCtx, step)
			if err := p.ensure(ctx); err != nil {
				p.b.log.Debug("presence: announcing this instance failed", "err", err)
			}
			cancel()
			ctx, cancel = context.WithTimeout(p.b.closeCtx, step)
			p.beat(ctx)
			cancel()
			ctx, cancel = context.WithTimeout(p.b.closeCtx, step)
			p.watch(ctx)
			cancel()
		}
	}
}

// ensure declares and consumes the session queue when it is missing (the
// first time, and after the consuming connection was lost), and then
// joins the group.
func (p *presence) ensure(ctx context.Context) error {
	conn, err := p.b.subLink.get(ctx, p.b.closeCtx.Done())
	if err != nil {
		return err
	}
	if p.sessCh != nil && !p.sessCh.IsClosed() && p.sessConn == conn {
		return nil
	}
	if p.sessCh != nil {
		_ = p.sessCh.Close()
	}
	p.sessCh, p.sessConn = nil, nil
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("presence: open channel: %w", err)
	}
	q := sessionQueue(p.props.Session)
	setup := func() (<-chan amqp091.Delivery, error) {
		if err := declarePresenceExchange(ch); err != nil {
			return nil, err
		}
		args := amqp091.Table{"x-max-length": int32(1000), "x-message-ttl": int32(min(p.ttl.Milliseconds(), 1<<30))}
		if _, err := ch.QueueDeclare(q, false, true, true, false, args); err != nil {
			return nil, fmt.Errorf("declare queue %s: %w", q, err)
		}
		for _, key := range []string{keyHeartbeat, keyLeave, keyQuery} {
			if err := ch.QueueBind(q, key, PresenceExchange, false, nil); err != nil {
				return nil, fmt.Errorf("bind queue %s: %w", q, err)
			}
		}
		return ch.Consume(q, "", true, true, false, false, nil)
	}
	deliveries, err := setup()
	if err != nil {
		_ = ch.Close()
		return fmt.Errorf("presence: %w", err)
	}
	p.sessCh, p.sessConn = ch, conn
	p.readers.Go(func() { p.read(deliveries) })
	if err := p.join(ctx); err != nil {
		// Joined again at the next heartbeat.
		_ = ch.Close()
		p.sessCh, p.sessConn = nil, nil
		return err
	}
	p.beat(ctx)
	return nil
}

// read handles what comes on the session queue: the other instances'
// heartbeats, and queries, which it answers.
func (p *presence) read(deliveries <-chan amqp091.Delivery) {
	for d := range deliveries {
		if len(d.Body) > maxPresenceBody {
			continue
		}
		switch d.Type {
		case "heartbeat":
			var a announcement
			if json.Unmarshal(d.Body, &a) != nil || a.Instance.Session == "" || a.Instance.Session == p.props.Session {
				continue
			}
			p.mu.Lock()
			if k := p.known[a.Instance.Session]; k != nil {
				k.ann, k.seen = a, time.Now()
			} else if len(p.known) < maxKnown {
				p.known[a.Instance.Session] = &known{ann: a, seen: time.Now()}
			}
			p.mu.Unlock()
		case "leave":
			if d.MessageId != p.props.Session {
				p.mu.Lock()
				delete(p.known, d.MessageId)
				p.mu.Unlock()
			}
		case "query":
			if d.ReplyTo == "" {
				continue
			}
			p.answer(d.ReplyTo)
		}
	}
}

// answer sends this instance's announcement and those it heard to a
// querying reader's queue.
func (p *presence) answer(replyTo string) {
	ans := answer{Instances: []announcement{p.announcement()}}
	p.mu.Lock()
	for _, k := range p.known {
		ans.Instances = append(ans.Instances, k.ann)
	}
	p.mu.Unlock()
	p.send(replyTo, ans)
}

// send publishes ans to a querying reader's queue.
func (p *presence) send(replyTo string, ans answer) {
	raw, err := json.Marshal(ans)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(p.b.closeCtx, 2*time.Second)
	defer cancel()
	msg := amqp091.Publishing{ContentType: "application/json", Type: "answer", Body: raw}
	if err := p.b.pub.publish(ctx, p.b.closeCtx.Done(), "", replyTo, &msg); err != nil {
		p.b.log.Debug("presence: answering a query failed", "err", err)
	}
}

// report makes a publisher that does not consume answer queries with its
// unhandled counts, once it has some: an exclusive, server-named queue
// bound with keyQuery alone. The unhandled loop calls it (alone: repCh is
// its own until Close).
func (p *presence) report(ctx context.Context) {
	if !p.enabled() || (p.repCh != nil && !p.repCh.IsClosed()) || len(p.b.unhandled.Counts()) == 0 {
		return
	}
	p.mu.Lock()
	joined := p.joined || p.left
	p.mu.Unlock()
	if joined {
		return // its session queue answers
	}
	conn, err := p.b.subLink.get(ctx, p.b.closeCtx.Done())
	if err != nil {
		return
	}
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	setup := func() (<-chan amqp091.Delivery, error) {
		if err := declarePresenceExchange(ch); err != nil {
			return nil, err
		}
		q, err := ch.QueueDeclare("", false, true, true, false, amqp091.Table{"x-max-length": int32(100)})
		if err != nil {
			return nil, err
		}
		if err := ch.QueueBind(q.Name, keyQuery, PresenceExchange, false, nil); err != nil {
			return nil, err
		}
		return ch.Consume(q.Name, "", true, true, false, false, nil)
	}
	queries, err := setup()
	if err != nil {
		_ = ch.Close()
		p.b.log.Debug("presence: cannot answer queries with the unhandled counts", "err", err)
		return
	}
	p.repCh = ch
	p.repDone.Go(func() {
		for d := range queries {
			if d.Type == "query" && d.ReplyTo != "" {
				p.send(d.ReplyTo, answer{Publishers: []announcement{p.announcement()}})
			}
		}
	})
}

// stopReport closes the reporter's channel and waits for its reader
// (Close, once the unhandled loop ended).
func (p *presence) stopReport() {
	if p.repCh != nil {
		_ = p.repCh.Close()
	}
	p.repDone.Wait()
}

// beat publishes the heartbeat.
func (p *presence) beat(ctx context.Context) {
	raw, err := json.Marshal(p.announcement())
	if err != nil {
		return
	}
	msg := amqp091.Publishing{ContentType: "application/json", Type: "heartbeat", Body: raw,
		Expiration: fmt.Sprint(max(p.ttl.Milliseconds(), 1))}
	if err := p.b.pub.publish(ctx, p.b.closeCtx.Done(), PresenceExchange, keyHeartbeat, &msg); err != nil {
		p.b.log.Debug("presence: heartbeat failed", "err", err)
	}
}

// late is how long after its latest heartbeat an instance is checked.
func (p *presence) late() time.Duration { return p.heartbeat*3/2 + 500*time.Millisecond }

// watch checks the instances whose heartbeat is late, and reports those
// whose queue is gone.
func (p *presence) watch(ctx context.Context) {
	now := time.Now()
	var check []announcement
	p.mu.Lock()
	for _, k := range p.known {
		late := time.Duration(k.ann.Instance.TTLMs) * time.Millisecond / 3
		if late <= 0 {
			late = p.late()
		}
		if now.Sub(k.seen) > max(late, p.late()) {
			check = append(check, k.ann)
		}
	}
	p.mu.Unlock()
	if len(check) == 0 {
		return
	}
	conn, err := p.b.subLink.get(ctx, p.b.closeCtx.Done())
	if err != nil {
		return
	}
	for _, a := range check {
		gone, err := queueGone(conn, sessionQueue(a.Instance.Session))
		if err != nil {
			p.b.log.Debug("presence: cannot check an instance", "instance", a.Instance.Group+"/"+a.Instance.Client, "err", err)
			continue
		}
		if !gone {
			continue
		}
		if err := p.depart(ctx, a, "lost", true); err != nil {
			p.b.log.Warn("presence: reporting a lost instance failed", "instance", a.Instance.Group+"/"+a.Instance.Client, "err", err)
			continue
		}
		p.mu.Lock()
		if k := p.known[a.Instance.Session]; k != nil && k.seen.Before(now) {
			delete(p.known, a.Instance.Session)
		}
		p.mu.Unlock()
	}
}

// queueGone reports whether queue does not exist, with a passive declare
// on a channel of its own. RabbitMQ (3.10) answers a passive declare of
// another connection's exclusive queue RESOURCE_LOCKED (405): it exists;
// and NOT_FOUND (404) once it is gone. Both close the channel.
func queueGone(conn *amqp091.Connection, queue string) (bool, error) {
	ch, err := conn.Channel()
	if err != nil {
		return false, err
	}
	_, err = ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	var ae *amqp091.Error
	switch {
	case err == nil:
		_ = ch.Close()
		return false, nil
	case isNotFound(err):
		return true, nil
	case errors.As(err, &ae) && ae.Code == amqp091.ResourceLocked:
		return false, nil
	}
	_ = ch.Close()
	return false, err
}

// locked runs fn holding group's lock, on a confirm-mode channel that
// fn may use.
func (p *presence) locked(ctx context.Context, group string, fn func(ch *amqp091.Channel) error) error {
	p.lockMu.Lock()
	defer p.lockMu.Unlock()
	conn, err := p.b.subLink.get(ctx, p.b.closeCtx.Done())
	if err != nil {
		return err
	}
	lq := lockQueue(group)
	wait := 5 * time.Millisecond
	for {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("presence: open channel: %w", err)
		}
		_, err = ch.QueueDeclare(lq, false, false, true, false, nil)
		if err == nil {
			defer ch.Close()
			if err := ch.Confirm(false); err != nil {
				_, _ = ch.QueueDelete(lq, false, false, false)
				return fmt.Errorf("presence: confirm mode: %w", err)
			}
			ferr := fn(ch)
			if _, err := ch.QueueDelete(lq, false, false, false); err != nil && ferr == nil {
				// The channel broke: the lock goes with the connection,
				// or at once if this one closes it.
				_ = ch.Close()
				if ch2, err2 := conn.Channel(); err2 == nil {
					_, _ = ch2.QueueDelete(lq, false, false, false)
					_ = ch2.Close()
				}
			}
			return ferr
		}
		var ae *amqp091.Error
		if !errors.As(err, &ae) || ae.Code != amqp091.ResourceLocked {
			_ = ch.Close()
			return fmt.Errorf("presence: lock group %q: %w", group, err)
		}
		// Another connection holds it (the 405 closed the channel).
		select {
		case <-ctx.Done():
			return fmt.Errorf("presence: lock group %q: %w", group, context.Cause(ctx))
		case <-time.After(wait):
		}
		wait = min(wait*2, 100*time.Millisecond)
	}
}

// readState takes the group's member message (unacknowledged, on ch), the
// highest version if there are several; last is the delivery tag to
// acknowledge once the new state is stored.
func readState(ch *amqp091.Channel, group string) (st groupState, last uint64, err error) {
	q := groupQueue(group)
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp091.Table{"x-expires": int32(groupStateExpiry.Milliseconds())}); err != nil {
		return st, 0, fmt.Errorf("declare queue %s: %w", q, err)
	}
	st.Members = map[string]announcement{}
	for range 100 {
		d, ok, err := ch.Get(q, false)
		if err != nil {
			return st, 0, fmt.Errorf("read %s: %w", q, err)
		}
		if !ok {
			break
		}
		last = d.DeliveryTag
		var s groupState
		if len(d.Body) <= maxPresenceBody && json.Unmarshal(d.Body, &s) == nil && s.Version >= st.Version {
			st = s
			if st.Members == nil {
				st.Members = map[string]announcement{}
			}
		}
	}
	return st, last, nil
}

// writeState stores st (confirmed) and acknowledges the messages read.
func writeState(ctx context.Context, ch *amqp091.Channel, group string, st groupState, last uint64) error {
	q := groupQueue(group)
	if len(st.Members) == 0 {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			return fmt.Errorf("delete %s: %w", q, err)
		}
		return nil
	}
	st.Version++
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false,
		amqp091.Publishing{ContentType: "application/json", DeliveryMode: amqp091.Persistent, Body: raw})
	if err != nil {
		return fmt.Errorf("store %s: %w", q, err)
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		return fmt.Errorf("store %s: not confirmed (%v)", q, err)
	}
	if last > 0 {
		if err := ch.Ack(last, true); err != nil {
			return fmt.Errorf("store %s: %w", q, err)
		}
	}
	return nil
}

// join adds this instance to its group, publishing its connection (and
// the group's coming online when it is the first), and first removes the
// members whose queue is gone, reporting them.
func (p *presence) join(ctx context.Context) error {
	conn, err := p.b.subLink.get(ctx, p.b.closeCtx.Done())
	if err != nil {
		return err
	}
	self := p.props.Session
	return p.locked(ctx, p.props.Group, func(ch *amqp091.Channel) error {
		st, last, err := readState(ch, p.props.Group)
		if err != nil {
			return err
		}
		if _, ok := st.Members[self]; ok {
			return nil
		}
		var gone []announcement
		for s, a := range st.Members {
			if g, err := queueGone(conn, sessionQueue(s)); err == nil && g {
				gone = append(gone, a)
				delete(st.Members, s)
			}
		}
		me := p.announcement()
		first := len(st.Members) == 0
		st.Members[self] = me
		if err := writeState(ctx, ch, p.props.Group, st, last); err != nil {
			return err
		}
		for i, a := range gone {
			p.publish(ctx, a.Exchange, core.EventInstanceDisconnected, a.Instance, "lost")
			if i == len(gone)-1 && first {
				p.publish(ctx, a.Exchange, core.EventGroupOffline, a.Instance, "lost")
			}
		}
		p.publish(ctx, me.Exchange, core.EventInstanceConnected, me.Instance, "")
		if first {
			p.publish(ctx, me.Exchange, core.EventGroupOnline, me.Instance, "")
		}
		return nil
	})
}

// depart removes a from its group and, when it was still a member,
// publishes its disconnection (and its group's going offline when it was
// the last). With lost set, a is another instance found gone: its queue
// is checked again under the lock, since an instance that reconnected
// declares it again before it joins (under the lock too).
func (p *presence) depart(ctx context.Context, a announcement, reason string, lost bool) error {
	return p.locked(ctx, a.Instance.Group, func(ch *amqp091.Channel) error {
		if lost {
			conn, err := p.b.subLink.get(ctx, p.b.closeCtx.Done())
			if err != nil {
				return err
			}
			if gone, err := queueGone(conn, sessionQueue(a.Instance.Session)); err != nil || !gone {
				return err // back: not lost
			}
		}
		st, last, err := readState(ch, a.Instance.Group)
		if err != nil {
			return err
		}
		if _, ok := st.Members[a.Instance.Session]; !ok {
			if last > 0 {
				return ch.Nack(last, true, true)
			}
			if len(st.Members) == 0 {
				return writeState(ctx, ch, a.Instance.Group, st, 0) // the queue just declared
			}
			return nil
		}
		delete(st.Members, a.Instance.Session)
		if err := writeState(ctx, ch, a.Instance.Group, st, last); err != nil {
			return err
		}
		p.publish(ctx, a.Exchange, core.EventInstanceDisconnected, a.Instance, reason)
		if len(st.Members) == 0 {
			p.publish(ctx, a.Exchange, core.EventGroupOffline, a.Instance, reason)
		}
		return nil
	})
}

// leave publishes the instance's departure; Close runs it first, while
// publishing still works.
func (p *presence) leave() {
	p.mu.Lock()
	joined := p.joined && !p.left
	p.left = true
	p.mu.Unlock()
	if !joined {
		return
	}
	close(p.stop)
	<-p.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The others forget it at once, rather than once they find its
	// queue gone.
	bye := amqp091.Publishing{Type: "leave", MessageId: p.props.Session, Expiration: "5000"}
	if p.sessCh != nil {
		_ = p.b.pub.publish(ctx, p.b.closeCtx.Done(), PresenceExchange, keyLeave, &bye)
	}
	if err := p.depart(ctx, p.announcement(), "closed", false); err != nil {
		p.b.log.Warn("presence: reporting this instance's departure failed", "err", err)
	}
	if p.sessCh != nil {
		_ = p.sessCh.Close()
	}
	p.readers.Wait()
}

// eventTimeout bounds the publish of a presence event whose change is
// stored: it gets its own time (the change's may be spent waiting for a
// connection), so that a stored change is not left unreported.
const eventTimeout = 10 * time.Second

// publish sends a presence event to exchange (declared first when it is
// not this broker's), within eventTimeout of its own.
func (p *presence) publish(_ context.Context, exchange, event string, in core.Instance, reason string) {
	ctx, cancel := context.WithTimeout(p.b.closeCtx, eventTimeout)
	defer cancel()
	p.b.publishPresenceEvent(ctx, exchange, core.PresenceEvent{Event: event, Instance: in, Reason: reason, At: time.Now().UTC()})
}

// publishPresenceEvent sends pe to exchange with its name as routing key.
func (b *Broker) publishPresenceEvent(ctx context.Context, exchange string, pe core.PresenceEvent) {
	if exchange == "" {
		exchange = b.cfg.Exchange
	}
	if exchange != b.cfg.Exchange && !b.presence.exchangeExists(ctx, exchange) {
		return
	}
	raw, err := b.cfg.Codec.Marshal(pe)
	if err != nil {
		return
	}
	msg := b.message(raw)
	if err := b.pub.publish(ctx, b.closeCtx.Done(), exchange, pe.Event, &msg); err != nil {
		b.log.Warn("presence: publishing an event failed", "event", pe.Event, "err", err)
	}
}

// exchangeExists declares exchange as every Spectacles client does, on a
// channel of its own (publishing to a missing exchange would close a
// publishing channel).
func (p *presence) exchangeExists(ctx context.Context, exchange string) bool {
	p.exMu.Lock()
	defer p.exMu.Unlock()
	if p.exchanges[exchange] {
		return true
	}
	conn, err := p.b.subLink.get(ctx, p.b.closeCtx.Done())
	if err != nil {
		return false
	}
	ch, err := conn.Channel()
	if err != nil {
		return false
	}
	defer ch.Close()
	if declareExchange(ch, exchange) != nil {
		return false
	}
	if len(p.exchanges) < maxKnown {
		p.exchanges[exchange] = true
	}
	return true
}

// Instances asks every live instance for its announcement and those it
// heard (one "query" on PresenceExchange, which it declares, answered
// within a moment), and
// adds, when the management API answers, the connections carrying
// PresenceProperty. An instance that died without a word is listed by
// the others, stale once its heartbeat is older than its TTL, until one
// of them finds its queue gone and reports it.
func (b *Broker) Instances(ctx context.Context) ([]core.Instance, error) {
	list, _, err := b.ask(ctx)
	return list, err
}

// ask queries the live instances (and the publishers with unhandled
// counts): see Instances.
func (b *Broker) ask(ctx context.Context) (instances, publishers []core.Instance, err error) {
	if b.closed.Load() {
		return nil, nil, core.ErrClosed
	}
	conn, err := b.subLink.get(ctx, b.closeCtx.Done())
	if err != nil {
		return nil, nil, fmt.Errorf("amqp: presence: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, nil, fmt.Errorf("amqp: presence: open channel: %w", err)
	}
	defer ch.Close()
	if err := declarePresenceExchange(ch); err != nil {
		return nil, nil, fmt.Errorf("amqp: presence: %w", err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("amqp: presence: declare a reply queue: %w", err)
	}
	answers, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("amqp: presence: %w", err)
	}
	// On this channel, unconfirmed: a reader (spectacles services opens a
	// passive broker) declares no exchange of its own by asking.
	query := amqp091.Publishing{Type: "query", ReplyTo: q.Name, Expiration: "5000"}
	if err := ch.PublishWithContext(ctx, PresenceExchange, keyQuery, false, false, query); err != nil {
		return nil, nil, fmt.Errorf("amqp: presence: query: %w", err)
	}
	latest := map[string]core.Instance{}
	pubs := map[string]core.Instance{}
	add := func(to map[string]core.Instance, in core.Instance) {
		if in.Session == "" || len(to) >= maxKnown {
			return
		}
		if old, ok := to[in.Session]; !ok || in.LastSeen.After(old.LastSeen) {
			to[in.Session] = in
		}
	}
	deadline := time.NewTimer(answerWait)
	defer deadline.Stop()
	quiet := time.NewTimer(answerQuiet)
	defer quiet.Stop()
collect:
	for {
		select {
		case d, ok := <-answers:
			if !ok {
				break collect
			}
			var a answer
			if len(d.Body) <= maxPresenceBody && json.Unmarshal(d.Body, &a) == nil {
				for _, an := range a.Instances {
					add(latest, an.Instance)
				}
				for _, an := range a.Publishers {
					add(pubs, an.Instance)
				}
			}
			quiet.Reset(answerQuiet)
		case <-quiet.C:
			break collect
		case <-deadline.C:
			break collect
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("amqp: presence: %w", context.Cause(ctx))
		}
	}
	if b.insp.m != nil {
		mctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		list, err := b.managementInstances(mctx)
		cancel()
		if err == nil {
			for _, in := range list {
				if _, ok := latest[in.Session]; !ok {
					latest[in.Session] = in
				}
			}
		}
	}
	out := make([]core.Instance, 0, len(latest))
	for _, in := range latest {
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Session < out[j].Session })
	for _, in := range pubs {
		publishers = append(publishers, in)
	}
	return out, publishers, nil
}

var _ core.PresenceReader = (*Broker)(nil)

// managementInstances lists the live instances from the management API:
// every connection that carries PresenceProperty and has consumers, with
// the events of their queues.
func (b *Broker) managementInstances(ctx context.Context) ([]core.Instance, error) {
	m := b.insp.m
	if m == nil {
		return nil, fmt.Errorf("amqp: presence needs the management API: %w", core.ErrUnsupported)
	}
	var conns []struct {
		Name  string         `json:"name"`
		Props map[string]any `json:"client_properties"`
	}
	if err := m.do(ctx, http.MethodGet, m.path("vhosts", m.vhost, "connections"), url.Values{"columns": {"name,client_properties"}}, nil, &conns); err != nil {
		return nil, fmt.Errorf("amqp: presence: %w", err)
	}
	byConn := map[string]*core.Instance{}
	props := map[string]presenceProps{}
	for _, c := range conns {
		s, _ := c.Props[PresenceProperty].(string)
		var pp presenceProps
		if s == "" || json.Unmarshal([]byte(s), &pp) != nil || pp.Group == "" {
			continue
		}
		props[c.Name] = pp
	}
	if len(props) == 0 {
		return []core.Instance{}, nil
	}
	var consumers []struct {
		Queue struct {
			Name string `json:"name"`
		} `json:"queue"`
		// An object, or [] for a consumer whose channel the API no longer
		// knows (it is closing).
		ChannelDetails json.RawMessage `json:"channel_details"`
	}
	if err := m.do(ctx, http.MethodGet, m.path("consumers", m.vhost), nil, nil, &consumers); err != nil {
		return nil, fmt.Errorf("amqp: presence: %w", err)
	}
	now := time.Now().UTC()
	for _, c := range consumers {
		var details struct {
			ConnectionName string `json:"connection_name"`
		}
		if json.Unmarshal(c.ChannelDetails, &details) != nil {
			continue
		}
		pp, ok := props[details.ConnectionName]
		if !ok {
			continue
		}
		prefix := pp.Exchange + ":"
		if pp.Subgroup != "" {
			prefix += pp.Subgroup + ":"
		}
		ev, ok := strings.CutPrefix(c.Queue.Name, prefix)
		if !ok {
			continue
		}
		in := byConn[details.ConnectionName]
		if in == nil {
			in = &core.Instance{Group: pp.Group, Client: pp.Client, Version: pp.Version, Session: pp.Session,
				Host: pp.Host, PID: pp.PID, StartedAt: pp.StartedAt, LastSeen: now, TTLMs: core.DefaultPresenceTTL.Milliseconds()}
			byConn[details.ConnectionName] = in
		}
		if !slices.Contains(in.Events, ev) {
			in.Events = append(in.Events, ev)
		}
	}
	out := make([]core.Instance, 0, len(byConn))
	for name, in := range byConn {
		sort.Strings(in.Events)
		in.Calls = callsOf(props[name].Calls, in.Events)
		out = append(out, *in)
	}
	return out, nil
}

// UnhandledReports reads, from the live instances' announcements
// (Instances) and the answers of the publishers that do not consume, the
// events they published that no queue took. A process that exited is not
// seen (its core.EventUnhandled events went to its exchange).
func (b *Broker) UnhandledReports(ctx context.Context) ([]core.UnhandledReport, error) {
	list, pubs, err := b.ask(ctx)
	if err != nil {
		return nil, err
	}
	return core.MergeUnhandled(nil, append(list, pubs...)), nil
}

var _ core.UnhandledReader = (*Broker)(nil)
