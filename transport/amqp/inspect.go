package amqp

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/redact"
)

// The Inspector of the AMQP driver; the package doc ("Inspection") gives
// the mapping. It is no core.PendingInspector: AMQP lists no message
// delivered to another consumer, and only the channel a message was
// delivered on can settle it.

var (
	_ core.Inspector    = (*Broker)(nil)
	_ core.StatsChecker = (*Broker)(nil)
)

// StatsErr implements core.StatsChecker: nil while the management API
// answers, else why it does not (it is off, does not answer, refuses the
// login…), wrapping core.ErrStatsUnavailable; the URL it names has no
// password.
func (b *Broker) StatsErr() error {
	err := b.insp.m.lastErr()
	if err == nil {
		return nil
	}
	return b.scrub(fmt.Errorf("%w: %w", core.ErrStatsUnavailable, err))
}

const (
	// entriesMaxCount bounds the page size of Entries.
	entriesMaxCount = 1000
	// entriesMaxPeek bounds how many dead letters Entries reads from the
	// head of a queue to find a page.
	entriesMaxPeek = 2000
	// entriesFirstPeek is the first window Entries reads when it must find
	// an id; it doubles up to entriesMaxPeek.
	entriesFirstPeek = 100
	// requeueMaxScan bounds the dead letters Requeue takes from the head of
	// the queue looking for the ids.
	requeueMaxScan = 10000
)

// inspectState is a broker's inspection state.
type inspectState struct {
	m *mgmt // nil when the management API is off

	mu     sync.Mutex
	events map[string]struct{} // events whose queues this broker declared
}

// noteDeclared records that Consume declared the queues of events and of
// their dead letters.
func (b *Broker) noteDeclared(events []string) {
	b.insp.mu.Lock()
	defer b.insp.mu.Unlock()
	if b.insp.events == nil {
		b.insp.events = make(map[string]struct{})
	}
	for _, ev := range events {
		b.insp.events[ev] = struct{}{}
		if _, dead := core.IsDeadLetterEvent(ev); !dead {
			b.insp.events[core.DeadLetterEvent(ev)] = struct{}{}
		}
	}
}

func (b *Broker) declaredEvents() []string {
	b.insp.mu.Lock()
	defer b.insp.mu.Unlock()
	return slices.Sorted(maps.Keys(b.insp.events))
}

// scrubbedError is an error whose message had secrets removed.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// scrub removes the passwords of the AMQP and management URLs from err's
// message.
func (b *Broker) scrub(err error) error {
	if err == nil {
		return nil
	}
	msg := redact.Text(err.Error(), b.cfg.URL, b.cfg.ManagementURL)
	if msg == err.Error() {
		return err
	}
	return &scrubbedError{msg: msg, err: err}
}

// unsupported builds the error of an operation AMQP cannot do.
func unsupported(op, why string) error {
	return fmt.Errorf("amqp: %s: %w: %s", op, core.ErrUnsupported, why)
}

// needsMgmt builds the error of an operation that needs the management
// API, which is unavailable for cause.
func needsMgmt(op string, cause error) error {
	return fmt.Errorf("amqp: %s: %w without the RabbitMQ management API (%w): %w", op, core.ErrUnsupported, core.ErrStatsUnavailable, cause)
}

// runBounded runs fn (AMQP calls take no context) and returns its error,
// or ctx's cause when ctx ends first; fn then finishes in the background
// and its results must be left alone.
func runBounded(ctx context.Context, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		select {
		case err := <-done:
			return err
		default:
			return context.Cause(ctx)
		}
	}
}

// withChannel runs fn on a channel of its own on the consuming
// connection, closed afterwards, within ctx.
func (b *Broker) withChannel(ctx context.Context, fn func(conn *amqp091.Connection, ch *amqp091.Channel) error) error {
	conn, err := b.subLink.get(ctx, b.closeCtx.Done())
	if err != nil {
		return err
	}
	return runBounded(ctx, func() error {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open channel: %w", err)
		}
		defer func() { _ = ch.Close() }()
		return fn(conn, ch)
	})
}

func isNotFound(err error) bool {
	var ae *amqp091.Error
	return errors.As(err, &ae) && ae.Code == amqp091.NotFound
}

// passive declares queues passively and returns those that exist with
// their ready messages and consumers. A missing queue closes the channel
// (404), so the next one gets a new channel.
func (b *Broker) passive(ctx context.Context, queues []string) (map[string]amqp091.Queue, error) {
	out := make(map[string]amqp091.Queue, len(queues))
	if len(queues) == 0 {
		return out, nil
	}
	err := b.withChannel(ctx, func(conn *amqp091.Connection, ch *amqp091.Channel) error {
		for _, q := range queues {
			if err := ctx.Err(); err != nil {
				return context.Cause(ctx)
			}
			if ch.IsClosed() {
				next, err := conn.Channel()
				if err != nil {
					return fmt.Errorf("open channel: %w", err)
				}
				defer func() { _ = next.Close() }()
				ch = next
			}
			info, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
			if isNotFound(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("passive declare of queue %q: %w", q, err)
			}
			out[q] = info
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Server implements core.Inspector: kind "amqp", the URL without its
// credentials and query, the server's version (from the AMQP handshake,
// else the management API) and the round trip of opening a channel.
func (b *Broker) Server(ctx context.Context) (core.ServerInfo, error) {
	info := core.ServerInfo{Kind: "amqp", Address: redact.URL(b.cfg.URL)}
	if b.closed.Load() {
		return info, core.ErrClosed
	}
	conn, err := b.subLink.get(ctx, b.closeCtx.Done())
	if err != nil {
		return info, b.scrub(fmt.Errorf("amqp: server: %w", err))
	}
	var rt time.Duration
	err = runBounded(ctx, func() error {
		start := time.Now()
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		rt = time.Since(start)
		_ = ch.Close()
		return nil
	})
	if err != nil {
		return info, b.scrub(fmt.Errorf("amqp: server: open channel: %w", err))
	}
	info.RoundTrip = rt
	if v, ok := conn.Properties["version"]; ok {
		info.Version = headerString(v)
	}
	if info.Version == "" && b.insp.m.unavailable() == nil {
		info.Version, _ = b.insp.m.version(ctx)
	}
	return info, nil
}

// Streams implements core.Inspector. With the management API: one stream
// per routing key bound on the exchange (each event, and each event's
// dead letters), its length the messages (ready and unacknowledged) of
// all its queues, its groups the number of those queues. Without it (off,
// or failing): the events this broker consumed, with the ready messages
// of its own queue (a passive declare) and one group.
func (b *Broker) Streams(ctx context.Context) ([]core.StreamInfo, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	if b.insp.m.unavailable() == nil {
		out, err := b.mgmtStreams(ctx)
		if err == nil || !isMgmtDown(err) {
			return out, b.scrub(err)
		}
	}
	out, err := b.amqpStreams(ctx)
	return out, b.scrub(err)
}

func (b *Broker) mgmtStreams(ctx context.Context) ([]core.StreamInfo, error) {
	m := b.insp.m
	bds, err := m.bindings(ctx, b.cfg.Exchange)
	if err != nil {
		return nil, fmt.Errorf("amqp: streams: %w", err)
	}
	byEvent := map[string][]string{}
	var names []string
	for _, bd := range bds {
		if !slices.Contains(byEvent[bd.RoutingKey], bd.Destination) {
			byEvent[bd.RoutingKey] = append(byEvent[bd.RoutingKey], bd.Destination)
		}
		names = append(names, bd.Destination)
	}
	slices.Sort(names)
	stats, err := m.queues(ctx, slices.Compact(names))
	if err != nil {
		return nil, fmt.Errorf("amqp: streams: %w", err)
	}
	out := make([]core.StreamInfo, 0, len(byEvent))
	for _, ev := range slices.Sorted(maps.Keys(byEvent)) {
		info := core.StreamInfo{Name: ev, Groups: len(byEvent[ev])}
		for _, q := range byEvent[ev] {
			info.Length += stats[q].length()
		}
		out = append(out, info)
	}
	return out, nil
}

// length is a queue's messages, ready and unacknowledged; 0 when unknown.
func (q mgmtQueue) length() int64 {
	switch {
	case q.Messages != nil:
		return *q.Messages
	case q.Ready != nil && q.Unacknowledged != nil:
		return *q.Ready + *q.Unacknowledged
	}
	return 0
}

func (b *Broker) amqpStreams(ctx context.Context) ([]core.StreamInfo, error) {
	events := b.declaredEvents()
	queues := make([]string, len(events))
	for i, ev := range events {
		queues[i] = b.QueueName(ev)
	}
	found, err := b.passive(ctx, queues)
	if err != nil {
		return nil, fmt.Errorf("amqp: streams: %w", err)
	}
	out := make([]core.StreamInfo, 0, len(events))
	for i, ev := range events {
		if q, ok := found[queues[i]]; ok {
			out = append(out, core.StreamInfo{Name: ev, Length: int64(q.Messages), Groups: 1})
		}
	}
	return out, nil
}

// Groups implements core.Inspector: one group per queue bound to the
// exchange with routing key stream, named by the queue's name. With the
// management API: its consumers, its unacknowledged messages (Pending)
// and its ready ones (Lag: not yet delivered to any consumer), -1 for
// what the server has not reported yet. Without it: this broker's own
// queue alone, with a passive declare's consumers and ready messages
// (Lag) and Pending -1 (unknown).
func (b *Broker) Groups(ctx context.Context, stream string) ([]core.GroupInfo, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	if b.insp.m.unavailable() == nil {
		out, err := b.mgmtGroups(ctx, stream)
		if err == nil || !isMgmtDown(err) {
			return out, b.scrub(err)
		}
	}
	q := b.QueueName(stream)
	found, err := b.passive(ctx, []string{q})
	if err != nil {
		return nil, b.scrub(fmt.Errorf("amqp: groups %s: %w", stream, err))
	}
	info, ok := found[q]
	if !ok {
		return nil, nil
	}
	return []core.GroupInfo{{Name: q, Consumers: info.Consumers, Pending: -1, Lag: int64(info.Messages)}}, nil
}

func (b *Broker) mgmtGroups(ctx context.Context, stream string) ([]core.GroupInfo, error) {
	m := b.insp.m
	bds, err := m.bindings(ctx, b.cfg.Exchange)
	if err != nil {
		return nil, fmt.Errorf("amqp: groups %s: %w", stream, err)
	}
	var names []string
	for _, bd := range bds {
		if bd.RoutingKey == stream {
			names = append(names, bd.Destination)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	stats, err := m.queues(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("amqp: groups %s: %w", stream, err)
	}
	out := make([]core.GroupInfo, 0, len(names))
	for _, n := range names {
		q, ok := stats[n]
		if !ok {
			continue // deleted meanwhile
		}
		g := core.GroupInfo{Name: n, Pending: -1, Lag: -1}
		if q.Consumers != nil {
			g.Consumers = int(*q.Consumers)
		}
		if q.Unacknowledged != nil {
			g.Pending = *q.Unacknowledged
		}
		if q.Ready != nil {
			g.Lag = *q.Ready
		}
		out = append(out, g)
	}
	return out, nil
}

// Consumers implements core.Inspector with the management API (without
// it, it is unsupported): the consumers of the queue named group, as
// Groups names them (a queue not named <exchange>:… only when it is bound
// to the exchange with routing key stream), or of this exchange's queue
// of stream for subgroup group. Each is named by its consumer tag (this driver's start
// with the client name) and, when its connection has a name (this
// driver's is "spectacles <group>/<client> (consume)"), " @ " and that
// name. Its Pending is the unacknowledged messages of its channel when it
// is the channel's only consumer, else -1: RabbitMQ does not count them
// per consumer. Idle is unknown (0).
func (b *Broker) Consumers(ctx context.Context, stream, group string) ([]core.ConsumerInfo, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	op := "consumers " + stream + " " + group
	m := b.insp.m
	if err := m.unavailable(); err != nil {
		return nil, b.scrub(needsMgmt(op, err))
	}
	list, err := b.mgmtConsumers(ctx, stream, group)
	switch {
	case isMgmtDown(err):
		return nil, b.scrub(needsMgmt(op, err))
	case errors.Is(err, errMgmtNotFound):
		return nil, fmt.Errorf("amqp: %s: no queue %q bound to exchange %q with routing key %q, nor subgroup %q",
			op, group, b.cfg.Exchange, stream, group)
	case err != nil:
		return nil, b.scrub(fmt.Errorf("amqp: %s: %w", op, err))
	}
	channels := map[string]*mgmtChannel{}
	conns := map[string]string{}
	lookups := 0
	out := make([]core.ConsumerInfo, 0, len(list))
	for _, c := range list {
		info := core.ConsumerInfo{Name: c.Tag, Pending: -1}
		ch, conn := c.ChannelDetails.Name, c.ChannelDetails.ConnectionName
		if _, seen := channels[ch]; !seen && ch != "" && lookups < mgmtMaxLookups && m.unavailable() == nil {
			lookups++
			channels[ch] = nil
			if got, err := m.channel(ctx, ch); err == nil {
				channels[ch] = &got
			}
		}
		if got := channels[ch]; got != nil && got.ConsumerCount != nil && *got.ConsumerCount == 1 && got.Unacknowledged != nil {
			info.Pending = *got.Unacknowledged
		}
		if _, seen := conns[conn]; !seen && conn != "" && lookups < mgmtMaxLookups && m.unavailable() == nil {
			lookups++
			conns[conn], _ = m.connectionName(ctx, conn)
		}
		if name := conns[conn]; name != "" {
			info.Name += " @ " + name
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b core.ConsumerInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// mgmtConsumers returns the consumers of group's queue: group itself when
// it is named as this exchange's queues are, else the queue of subgroup
// group, else the queue named group if it is bound to the exchange with
// routing key stream (a peer's queue of its own name).
func (b *Broker) mgmtConsumers(ctx context.Context, stream, group string) ([]mgmtConsumer, error) {
	m := b.insp.m
	if strings.HasPrefix(group, b.cfg.Exchange+":") {
		return m.consumers(ctx, group)
	}
	list, err := m.consumers(ctx, QueueName(b.cfg.Exchange, group, stream))
	if !errors.Is(err, errMgmtNotFound) || group == "" {
		return list, err
	}
	bound, err := m.bound(ctx, b.cfg.Exchange, group, stream)
	if err != nil {
		return nil, err
	}
	if !bound {
		return nil, errMgmtNotFound
	}
	return m.consumers(ctx, group)
}

// Entries implements core.Inspector for dead letters (EVENT:dlq) only,
// with the management API: it reads messages from the head of this
// exchange's and subgroup's dead-letter queue and leaves them there (the
// API's "get" with ackmode ack_requeue_true). Ids are message ids.
// Paging: After and Before are looked up among the first messages (at
// most entriesMaxPeek); an id not among them is compared as text (this
// driver's ids are UUIDv7, so in time order). Reverse needs the whole
// queue within entriesMaxPeek messages. Messages delivered to a consumer
// of the dead-letter queue and not yet acknowledged are not seen. Live
// events are unsupported: reading one would mark its messages
// redelivered, which this driver counts as a delivery.
func (b *Broker) Entries(ctx context.Context, stream string, q core.RangeQuery) ([]core.Entry, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	if _, ok := core.IsDeadLetterEvent(stream); !ok {
		return nil, unsupported("entries "+stream, "AMQP queues cannot be read without consuming them; only dead letters (EVENT"+core.DeadLetterSuffix+") can be listed")
	}
	op := "entries " + stream
	m := b.insp.m
	if err := m.unavailable(); err != nil {
		return nil, b.scrub(needsMgmt(op, err))
	}
	count := q.Count
	if count <= 0 {
		count = 100
	}
	count = min(count, entriesMaxCount)
	queue := b.QueueName(stream)
	window := count
	if q.Reverse || q.After != "" {
		window = max(entriesFirstPeek, 2*count)
	}
	window = min(window, entriesMaxPeek)
	for {
		msgs, err := m.peek(ctx, queue, window)
		if isMgmtDown(err) {
			return nil, b.scrub(needsMgmt(op, err))
		}
		if err != nil {
			return nil, b.scrub(fmt.Errorf("amqp: %s: %w", op, err))
		}
		complete := len(msgs) < window || len(msgs) == 0 || msgs[len(msgs)-1].MessageCount == 0
		last := complete || window >= entriesMaxPeek
		if q.Reverse && last && !complete {
			return nil, unsupported(op, fmt.Sprintf("%s holds more than %d dead letters: AMQP reads a queue from its head only, so the newest cannot be reached; page forward with After", queue, entriesMaxPeek))
		}
		if page, ok := pageOf(msgs, q, count, complete, last); ok {
			out := make([]core.Entry, len(page))
			for i := range page {
				out[i] = entryOfMessage(&page[i])
			}
			return out, nil
		}
		window = min(2*window, entriesMaxPeek)
	}
}

// pageOf selects q's page of msgs, the head of a queue: the whole queue
// when complete, and all that will be read when last. ok is false when a
// longer head is needed.
func pageOf(msgs []mgmtMessage, q core.RangeQuery, count int, complete, last bool) ([]mgmtMessage, bool) {
	index := func(id string) int {
		return slices.IndexFunc(msgs, func(m mgmtMessage) bool { return m.Properties.MessageID == id })
	}
	if q.Reverse {
		if !complete {
			return nil, false
		}
		end := len(msgs)
		if q.Before != "" {
			if i := index(q.Before); i >= 0 {
				end = i
			} else {
				// Not there: by text, which is time for UUIDv7 ids.
				end = 0
				for end < len(msgs) && msgs[end].Properties.MessageID < q.Before {
					end++
				}
			}
		}
		page := slices.Clone(msgs[max(0, end-count):end])
		slices.Reverse(page)
		return page, true
	}
	start := 0
	if q.After != "" {
		i := index(q.After)
		switch {
		case i >= 0:
			start = i + 1
		case !last:
			return nil, false
		default:
			// Not there: by text, which is time for UUIDv7 ids.
			start = len(msgs)
			for j, m := range msgs {
				if m.Properties.MessageID > q.After {
					start = j
					break
				}
			}
		}
	}
	end := min(start+count, len(msgs))
	return msgs[start:end], end-start == count || last
}

// entryOfMessage turns a message of the API's "get" into an entry: its
// message id, payload and headers (all of them, as text, but the driver's
// delivery count).
func entryOfMessage(m *mgmtMessage) core.Entry {
	e := core.Entry{ID: m.Properties.MessageID}
	if m.PayloadEncoding == "base64" {
		e.Raw, _ = base64.StdEncoding.DecodeString(m.Payload)
	} else {
		e.Raw = []byte(m.Payload)
	}
	for k, v := range m.Properties.Headers {
		if k == deliveriesHeader {
			continue
		}
		if e.Headers == nil {
			e.Headers = make(map[string]string, len(m.Properties.Headers))
		}
		e.Headers[k] = headerText(v)
	}
	return e
}

// deadLetterHeaders are the headers dead-lettering adds, which Requeue
// removes.
var deadLetterHeaders = []string{core.HeaderEvent, core.HeaderID, core.HeaderGroup, core.HeaderClient,
	core.HeaderReason, core.HeaderDeliveries, core.HeaderFailedAt, deliveriesHeader}

// Requeue implements core.Inspector with AMQP alone: it takes messages
// from the head of this exchange's and subgroup's dead-letter queue of
// event on a channel of its own (basic.get, at most requeueMaxScan), and
// for each whose message id is among ids publishes its payload again to
// the exchange with routing key event (persistent, confirmed, a new
// message id, the dead-letter headers and delivery count removed: every
// queue of the event gets it, with no delivery counted) and then
// acknowledges it. Every other message it took goes back in place
// (basic.nack with requeue, marked redelivered). It returns the new ids,
// in the order of ids; ids not found are an error, after the others were
// requeued.
func (b *Broker) Requeue(ctx context.Context, event string, ids ...string) ([]string, error) {
	if event == "" {
		return nil, errors.New("amqp: requeue: event name is empty")
	}
	want := map[string]bool{}
	for _, id := range ids {
		if id != "" {
			want[id] = true
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	if !b.beginPublish() {
		return nil, core.ErrClosed
	}
	defer b.publishing.Done()
	queue := b.QueueName(core.DeadLetterEvent(event))
	done := map[string]string{} // old id → new id
	scanned := 0
	err := b.withChannel(ctx, func(_ *amqp091.Connection, ch *amqp091.Channel) error {
		var (
			others uint64 // highest delivery tag to give back
			err    error
		)
		for len(done) < len(want) && scanned < requeueMaxScan {
			if ctx.Err() != nil {
				err = context.Cause(ctx)
				break
			}
			d, ok, gerr := ch.Get(queue, false)
			if gerr != nil {
				if isNotFound(gerr) {
					return fmt.Errorf("no dead-letter queue %q", queue)
				}
				return fmt.Errorf("basic.get from %q: %w", queue, gerr)
			}
			if !ok {
				break // empty
			}
			scanned++
			if !want[d.MessageId] || done[d.MessageId] != "" {
				others = d.DeliveryTag
				continue
			}
			msg := b.requeueMessage(&d)
			if perr := b.pub.publish(ctx, b.closeCtx.Done(), b.cfg.Exchange, event, &msg); perr != nil {
				others = d.DeliveryTag
				err = fmt.Errorf("publish %s again: %w", d.MessageId, perr)
				break
			}
			done[d.MessageId] = msg.MessageId
			if aerr := ch.Ack(d.DeliveryTag, false); aerr != nil {
				err = fmt.Errorf("%s was published again as %s, but removing the dead letter failed (it stays in %s): %w", d.MessageId, msg.MessageId, queue, aerr)
				break
			}
		}
		if others > 0 && !ch.IsClosed() {
			if nerr := ch.Nack(others, true, true); nerr != nil && err == nil {
				err = fmt.Errorf("giving back the other dead letters: %w", nerr)
			}
		}
		return err
	})
	out := make([]string, 0, len(want))
	var missing []string
	seen := map[string]bool{}
	for _, id := range ids {
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		if n, ok := done[id]; ok {
			out = append(out, n)
		} else {
			missing = append(missing, id)
		}
	}
	if err != nil {
		if errors.Is(err, core.ErrClosed) {
			return out, core.ErrClosed
		}
		return out, b.scrub(fmt.Errorf("amqp: requeue %s: %w", event, err))
	}
	if len(missing) > 0 {
		return out, fmt.Errorf("amqp: requeue %s: no dead letter %s among the %d ready in %s",
			event, strings.Join(missing, ", "), scanned, queue)
	}
	return out, nil
}

// requeueMessage builds the message that puts dead letter d back under
// its event.
func (b *Broker) requeueMessage(d *amqp091.Delivery) amqp091.Publishing {
	msg := b.message(d.Body)
	if d.ContentType != "" {
		msg.ContentType = d.ContentType
	}
	msg.ContentEncoding, msg.Type, msg.AppId = d.ContentEncoding, d.Type, d.AppId
	headers := copyHeaders(d.Headers, 0)
	for _, k := range deadLetterHeaders {
		delete(headers, k)
	}
	if len(headers) > 0 {
		msg.Headers = headers
	}
	return msg
}
