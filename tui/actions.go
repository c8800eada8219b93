package tui

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway"
)

// action is one change to the broker or the gateway, as a value: a view
// builds it from what is selected, the root asks to confirm it (confirmMsg)
// or a view starts it (shared.start), and run, in a command off the UI
// goroutine, does it and returns one result message.
type action interface {
	run(ctx context.Context, b Backend) tea.Msg
}

// timedAction is an action with its own time limit instead of the
// console's request timeout; 0 means none (the console's context only).
type timedAction interface {
	timeout() time.Duration
}

// inputAction is an action that needs a line of text first (promptMsg).
type inputAction interface {
	// withInput returns the action for text, the question that confirms
	// it ("" runs it at once), or why text does not do.
	withInput(text string) (a action, confirm string, err error)
}

// confirmedMsg tells the active view that the operator confirmed acts
// (it clears its marks); a cancelled confirmation tells it nothing, so a
// selection survives it.
type confirmedMsg struct{ acts []action }

// submittedMsg tells the view a prompt came from that its action was
// accepted (it clears its marks, shows that it is starting…).
type submittedMsg struct{ act action }

// errNoInspector is the result of an inspection action on a broker that
// offers none.
var errNoInspector = errors.New("this broker offers no inspection")

// errNoGateway is the result of a shard action when no gateway runs.
var errNoGateway = errors.New("no gateway runs in this console")

// start returns the command that runs a, with a context of its own.
func (s *shared) start(a action) tea.Cmd {
	base, limit, b := s.base, s.timeout, s.backend
	if t, ok := a.(timedAction); ok {
		limit = t.timeout()
	}
	return func() tea.Msg {
		ctx, cancel := context.WithCancel(base)
		if limit > 0 {
			ctx, cancel = context.WithTimeout(base, limit)
		}
		defer cancel()
		return a.run(ctx, b)
	}
}

// startAll runs acts one after the other.
func (s *shared) startAll(acts []action) tea.Cmd {
	if len(acts) == 1 {
		return s.start(acts[0])
	}
	cmds := make([]tea.Cmd, len(acts))
	for i, a := range acts {
		cmds[i] = s.start(a)
	}
	return tea.Sequence(cmds...)
}

// ackAction acknowledges pending entries of a group.
type ackAction struct {
	stream, group string
	ids           []string
}

func (a ackAction) run(ctx context.Context, b Backend) tea.Msg {
	ins := pendingInspector(b)
	if ins == nil {
		return actionMsg{from: kPending, err: fmt.Errorf("%s: %w", noPendingWhy, core.ErrUnsupported)}
	}
	n, err := ins.Ack(ctx, a.stream, a.group, a.ids...)
	return actionMsg{from: kPending, text: fmt.Sprintf("acknowledged %d of %d in %s/%s · an ack cannot be undone", n, len(a.ids), a.stream, a.group), err: err}
}

// claimAction gives pending entries of a group to the consumer to;
// consumers are the group's, to warn that claiming to another name
// creates a consumer.
type claimAction struct {
	stream, group string
	ids           []string
	to            string
	consumers     []string
}

func (a claimAction) withInput(text string) (action, string, error) {
	a.to = strings.TrimSpace(text)
	if a.to == "" {
		return nil, "", errors.New("claim: a consumer name is required")
	}
	q := fmt.Sprintf("Claim %s of %s/%s to %q?", plural(len(a.ids), "entry"), a.stream, a.group, a.to)
	return a, newConsumerWarning(a.consumers, a.to, a.group) + q, nil
}

// run claims by rule (only these ids) when the broker can, which tells
// the previous owners, for an undo.
func (a claimAction) run(ctx context.Context, b Backend) tea.Msg {
	if bi := bulkInspector(b); bi != nil {
		res, err := bi.ClaimPending(ctx, a.stream, a.group, a.to, core.PendingRule{IDs: a.ids}, nil)
		return claimedMsg{actionMsg: actionMsg{from: kPending, text: fmt.Sprintf("%q now owns %d of %d entries", a.to, res.Count, len(a.ids)), err: err},
			undo: newUndoClaim(a.stream, a.group, a.to, res.Previous)}
	}
	ins := pendingInspector(b)
	if ins == nil {
		return actionMsg{from: kPending, err: fmt.Errorf("%s: %w", noPendingWhy, core.ErrUnsupported)}
	}
	got, err := ins.Claim(ctx, a.stream, a.group, a.to, 0, a.ids...)
	return actionMsg{from: kPending, text: fmt.Sprintf("%q now owns %d of %d entries", a.to, len(got), len(a.ids)), err: err}
}

// deadLetterAction moves pending entries to the stream's dead letters.
type deadLetterAction struct {
	stream, group, reason string
	ids                   []string
}

func (a deadLetterAction) run(ctx context.Context, b Backend) tea.Msg {
	ins := pendingInspector(b)
	if ins == nil {
		return actionMsg{from: kPending, err: fmt.Errorf("%s: %w", noPendingWhy, core.ErrUnsupported)}
	}
	n, err := ins.DeadLetter(ctx, a.stream, a.group, a.reason, a.ids...)
	return actionMsg{from: kPending, text: fmt.Sprintf("moved %d of %d to %s", n, len(a.ids), dlqOf(a.stream)), err: err}
}

// requeueAction publishes dead letters of source again and, when group is
// set, acknowledges them in the dead-letter stream's group.
type requeueAction struct {
	from          kind
	source, group string
	ids           []string
}

func (a requeueAction) run(ctx context.Context, b Backend) tea.Msg {
	ins := b.Inspector()
	if ins == nil {
		return actionMsg{from: a.from, err: errNoInspector}
	}
	newIDs, err := ins.Requeue(ctx, a.source, a.ids...)
	if err == nil && a.group != "" {
		if pi := pendingInspector(b); pi != nil {
			_, err = pi.Ack(ctx, dlqOf(a.source), a.group, a.ids...)
		} else {
			err = fmt.Errorf("requeued, but not acknowledged in %s: %s: %w", dlqOf(a.source), noPendingWhy, core.ErrUnsupported)
		}
	}
	text := fmt.Sprintf("requeued %d of %d to %s", len(newIDs), len(a.ids), a.source)
	if len(newIDs) > 0 {
		text += " as " + strings.Join(newIDs[:min(len(newIDs), 3)], ", ")
		if len(newIDs) > 3 {
			text += ", …"
		}
	}
	msg := actionMsg{from: a.from, text: text, err: err}
	if err == nil {
		msg.dlq, msg.requeued = dlqOf(a.source), a.ids
	}
	return msg
}

// shardOp is what a shardAction does.
type shardOp int

const (
	shardStart shardOp = iota
	shardStop
	shardReconnect
)

// shardAction starts, stops or reconnects a shard of the local gateway.
type shardAction struct {
	id int
	op shardOp
}

func (a shardAction) run(_ context.Context, b Backend) tea.Msg {
	g := b.Gateway().Gateway
	verb := [...]string{shardStart: "started", shardStop: "stopped", shardReconnect: "reconnecting"}[a.op]
	var err error
	switch {
	case g == nil:
		err = errNoGateway
	case a.op == shardStart:
		err = g.StartShard(a.id)
	case a.op == shardStop:
		err = g.StopShard(a.id)
	default:
		err = g.ReconnectShard(a.id)
	}
	return actionMsg{from: kShards, text: fmt.Sprintf("shard %d: %s", a.id, verb), err: err}
}

// startGatewayAction starts a local gateway with the token typed (or the
// environment's).
type startGatewayAction struct {
	token    string
	envToken bool
}

func (a startGatewayAction) withInput(text string) (action, string, error) {
	a.token = strings.TrimPrefix(strings.TrimSpace(text), "Bot ")
	if a.token == "" && !a.envToken {
		return nil, "", errors.New("a token is required (DISCORD_TOKEN is not set)")
	}
	which := "the token typed"
	if a.token == "" {
		which = "DISCORD_TOKEN from the environment"
	}
	return a, "Start a local gateway with " + which + "? Its shards connect and publish their events to this broker.", nil
}

// timeout is none: the gateway lives as long as the console's context.
func (startGatewayAction) timeout() time.Duration { return 0 }

func (a startGatewayAction) run(ctx context.Context, b Backend) tea.Msg {
	return gatewayStartedMsg{err: b.StartGateway(ctx, a.token)}
}

// publishTimeout bounds a publish (a call waits for its own timeout).
const publishTimeout = 10 * time.Second

// publishAction publishes an event, or calls it and waits for the reply.
type publishAction struct {
	seq   uint64
	call  bool
	event string
	data  any
	wait  time.Duration // a call's timeout
}

func (a publishAction) timeout() time.Duration {
	if a.call {
		return a.wait
	}
	return publishTimeout
}

func (a publishAction) run(ctx context.Context, b Backend) tea.Msg {
	r := publishResult{seq: a.seq, call: a.call, event: a.event}
	br := b.Broker()
	if br == nil {
		r.err = errors.New("no broker to publish to")
		return r
	}
	start := time.Now()
	if a.call {
		p, err := br.Call(ctx, a.event, a.data)
		r.elapsed, r.err = time.Since(start), err
		if err == nil {
			r.reply = decodePayload(p.Raw).Pretty
		}
		return r
	}
	r.id, r.err = br.Publish(ctx, a.event, a.data)
	r.elapsed = time.Since(start)
	return r
}

// sendAction publishes a Discord packet: SEND (routed by guild) or
// straight to one shard's event.
type sendAction struct {
	seq           uint64
	event         string
	data          any
	routed, count int
}

func (sendAction) timeout() time.Duration { return publishTimeout }

func (a sendAction) run(ctx context.Context, b Backend) tea.Msg {
	br := b.Broker()
	if br == nil {
		return sendResult{seq: a.seq, err: errors.New("no broker to publish to")}
	}
	data, err := gateway.EncodePacket(a.event, a.data)
	if err != nil {
		return sendResult{seq: a.seq, err: err}
	}
	id, err := br.Publish(ctx, a.event, data)
	text := fmt.Sprintf("published %s → id %s", a.event, id)
	if a.event == gateway.SendEvent {
		text += fmt.Sprintf(" · the gateway routes it to shard %d of %d", a.routed, a.count)
	}
	return sendResult{seq: a.seq, text: text, err: err}
}
