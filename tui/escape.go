package tui

import (
	"context"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/gateway/restproxy"
	"github.com/spectacles-go/spectacles/internal/termtext"
)

// Broker text enters the console in one place: shownBackend, which wraps
// the Backend the console is given. Every name and id it returns (streams,
// groups, consumers, ids, gateway nodes) is in termtext.Quote's form: the
// name itself when it is safe to show, else the shell's $'...' quoting
// with its control characters, bidi controls and invalid bytes escaped.
// Other text (headers such as a dead letter's reason, server details,
// shard close reasons, error messages) is termtext.Escape'd. Every name
// the views give back (to list, ack, claim, requeue, publish) is read with
// termtext.Unquote first, so it reaches the broker as its exact bytes;
// that is also how a name typed in the palette or a field may be given in
// $'...' form. Payloads are escaped where they are decoded (decodePayload),
// and the rendered screen passes termtext.EscapeStyled as a last line of
// defence.

// unquote reads back a name the console shows.
func unquote(s string) string {
	raw, _ := termtext.Unquote(s)
	return raw
}

func unquoteAll(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = unquote(s)
	}
	return out
}

func quoteAll(list []string) []string {
	if list == nil {
		return nil
	}
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = termtext.Quote(s)
	}
	return out
}

// dlqSource is core.IsDeadLetterEvent for a name as the console shows it.
func dlqSource(shown string) (string, bool) {
	source, ok := core.IsDeadLetterEvent(unquote(shown))
	return termtext.Quote(source), ok
}

// dlqOf is core.DeadLetterEvent for a name as the console shows it.
func dlqOf(shown string) string { return termtext.Quote(core.DeadLetterEvent(unquote(shown))) }

// shownError is an error whose message is escaped; errors.Is and As still
// see the error it wraps.
type shownError struct{ err error }

func (e shownError) Error() string { return termtext.Escape(e.err.Error()) }
func (e shownError) Unwrap() error { return e.err }

func shownErr(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(shownError); ok {
		return err
	}
	return shownError{err}
}

// shownBackend is a Backend whose text is fit to show (see above).
type shownBackend struct{ b Backend }

func (s shownBackend) Node() NodeInfo {
	n := s.b.Node()
	n.Name = termtext.Escape(n.Name)
	n.Client, n.Group = termtext.Quote(n.Client), termtext.Quote(n.Group)
	n.BrokerKind, n.BrokerAddress = termtext.Escape(n.BrokerKind), termtext.Escape(n.BrokerAddress)
	return n
}

func (s shownBackend) Inspector() core.Inspector {
	ins := s.b.Inspector()
	if ins == nil {
		return nil
	}
	if p, ok := ins.(core.PendingInspector); ok {
		sp := shownPendingInspector{shownInspector{ins}, p}
		if bp, ok := ins.(core.BulkPendingInspector); ok {
			return shownBulkPendingInspector{sp, bp}
		}
		return sp
	}
	return shownInspector{ins}
}

func (s shownBackend) Broker() core.Broker {
	b := s.b.Broker()
	if b == nil {
		return nil
	}
	return shownBroker{b}
}

func (s shownBackend) Gateway() GatewayInfo {
	g := s.b.Gateway()
	g.Err = shownErr(g.Err)
	g.Target = termtext.Escape(g.Target)
	if g.Gateway != nil {
		if pc, ok := g.Gateway.(publishCounter); ok {
			g.Gateway = shownCountingGateway{shownGateway{g.Gateway}, pc}
		} else {
			g.Gateway = shownGateway{g.Gateway}
		}
	}
	return g
}

func (s shownBackend) StartGateway(ctx context.Context, token string) error {
	return shownErr(s.b.StartGateway(ctx, token))
}

func (s shownBackend) GatewayNodes(ctx context.Context) ([]gateway.NodeStatus, error) {
	list, err := s.b.GatewayNodes(ctx)
	for i := range list {
		n := &list[i]
		n.Group, n.Client = termtext.Quote(n.Group), termtext.Quote(n.Client)
		n.Shards = shownStatuses(n.Shards)
	}
	return list, shownErr(err)
}

func (s shownBackend) Redact(text string) string { return s.b.Redact(text) }

// Presence returns the wrapped backend's presence reader (the Services
// view escapes what it shows), nil when it has none.
func (s shownBackend) Presence() core.PresenceReader { return presenceOf(s.b) }

// Buckets reads the wrapped backend's REST proxy buckets (the view escapes
// what it shows), or fails with errNoBuckets.
func (s shownBackend) Buckets(ctx context.Context) (restproxy.Snapshot, error) {
	if br, ok := s.b.(bucketReader); ok {
		return br.Buckets(ctx)
	}
	return restproxy.Snapshot{}, errNoBuckets
}

func shownStatuses(list []gateway.Status) []gateway.Status {
	out := make([]gateway.Status, len(list))
	for i, st := range list {
		st.SessionID = termtext.Escape(st.SessionID)
		st.LastCloseReason = termtext.Escape(st.LastCloseReason)
		st.Err = termtext.Escape(st.Err)
		out[i] = st
	}
	return out
}

type shownGateway struct{ Gateway }

func (g shownGateway) Shards() []gateway.Status { return shownStatuses(g.Gateway.Shards()) }

type shownCountingGateway struct {
	shownGateway
	pc publishCounter
}

func (g shownCountingGateway) Published() uint64 { return g.pc.Published() }
func (g shownCountingGateway) QueueLength() int  { return g.pc.QueueLength() }

// shownBroker publishes to the exact names the console shows quoted.
type shownBroker struct{ b core.Broker }

func (s shownBroker) Publish(ctx context.Context, event string, data any) (string, error) {
	id, err := s.b.Publish(ctx, unquote(event), data)
	return termtext.Quote(id), shownErr(err)
}

func (s shownBroker) Call(ctx context.Context, event string, data any) (*core.Payload, error) {
	p, err := s.b.Call(ctx, unquote(event), data)
	return p, shownErr(err)
}

func (s shownBroker) Consume(ctx context.Context, events []string, h core.Handler) error {
	return shownErr(s.b.Consume(ctx, unquoteAll(events), h))
}

func (s shownBroker) Close() error { return shownErr(s.b.Close()) }

// StatsErr implements core.StatsChecker: the wrapped inspector's, escaped;
// nil when it has none.
func (s shownInspector) StatsErr() error {
	if c, ok := s.in.(core.StatsChecker); ok {
		return shownErr(c.StatsErr())
	}
	return nil
}

// shownInspector is a core.Inspector whose names are quoted and whose
// text is escaped.
type shownInspector struct{ in core.Inspector }

func (s shownInspector) Server(ctx context.Context) (core.ServerInfo, error) {
	info, err := s.in.Server(ctx)
	info.Kind, info.Address, info.Version = termtext.Escape(info.Kind), termtext.Escape(info.Address), termtext.Escape(info.Version)
	return info, shownErr(err)
}

func (s shownInspector) Streams(ctx context.Context) ([]core.StreamInfo, error) {
	list, err := s.in.Streams(ctx)
	for i := range list {
		x := &list[i]
		x.Name, x.FirstID, x.LastID = termtext.Quote(x.Name), termtext.Quote(x.FirstID), termtext.Quote(x.LastID)
	}
	return list, shownErr(err)
}

func (s shownInspector) Groups(ctx context.Context, stream string) ([]core.GroupInfo, error) {
	list, err := s.in.Groups(ctx, unquote(stream))
	for i := range list {
		x := &list[i]
		x.Name, x.LastDeliveredID = termtext.Quote(x.Name), termtext.Quote(x.LastDeliveredID)
	}
	return list, shownErr(err)
}

func (s shownInspector) Consumers(ctx context.Context, stream, group string) ([]core.ConsumerInfo, error) {
	list, err := s.in.Consumers(ctx, unquote(stream), unquote(group))
	for i := range list {
		list[i].Name = termtext.Quote(list[i].Name)
	}
	return list, shownErr(err)
}

func (s shownInspector) Entries(ctx context.Context, stream string, q core.RangeQuery) ([]core.Entry, error) {
	q.After, q.Before = unquote(q.After), unquote(q.Before)
	list, err := s.in.Entries(ctx, unquote(stream), q)
	for i := range list {
		e := &list[i]
		e.ID = termtext.Quote(e.ID)
		if len(e.Headers) > 0 {
			h := make(map[string]string, len(e.Headers))
			for k, v := range e.Headers {
				h[termtext.Escape(k)] = termtext.Escape(v)
			}
			e.Headers = h
		}
	}
	return list, shownErr(err)
}

func (s shownInspector) Requeue(ctx context.Context, event string, ids ...string) ([]string, error) {
	got, err := s.in.Requeue(ctx, unquote(event), unquoteAll(ids)...)
	return quoteAll(got), shownErr(err)
}

// shownPendingInspector is a shownInspector whose broker is also a
// core.PendingInspector, and which is one too.
type shownPendingInspector struct {
	shownInspector
	p core.PendingInspector
}

func (s shownPendingInspector) Pending(ctx context.Context, stream, group string, q core.PendingQuery) ([]core.PendingEntry, error) {
	q.After, q.Consumer = unquote(q.After), unquote(q.Consumer)
	list, err := s.p.Pending(ctx, unquote(stream), unquote(group), q)
	for i := range list {
		x := &list[i]
		x.ID, x.Consumer = termtext.Quote(x.ID), termtext.Quote(x.Consumer)
	}
	return list, shownErr(err)
}

func (s shownPendingInspector) Ack(ctx context.Context, stream, group string, ids ...string) (int, error) {
	n, err := s.p.Ack(ctx, unquote(stream), unquote(group), unquoteAll(ids)...)
	return n, shownErr(err)
}

func (s shownPendingInspector) Claim(ctx context.Context, stream, group, consumer string, minIdle time.Duration, ids ...string) ([]string, error) {
	got, err := s.p.Claim(ctx, unquote(stream), unquote(group), unquote(consumer), minIdle, unquoteAll(ids)...)
	return quoteAll(got), shownErr(err)
}

func (s shownPendingInspector) DeadLetter(ctx context.Context, stream, group, reason string, ids ...string) (int, error) {
	n, err := s.p.DeadLetter(ctx, unquote(stream), unquote(group), reason, unquoteAll(ids)...)
	return n, shownErr(err)
}
