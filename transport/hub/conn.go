package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/unhandled"
)

// ActionPing is answered with drs.response (with the same key): a client
// may use it to keep a quiet TCP connection alive or to measure the hub.
const ActionPing = "drs.ping"

// conn is one client connection on the hub. Its fields other than f, out
// and the once values are guarded by the state's mutex.
type conn struct {
	s   *Server
	st  *state
	f   framer
	out *outbox

	session   string
	reg       *Registration
	subs      map[string]*sub
	inflight  map[string]*delivery
	startedAt time.Time
	lastSeen  time.Time
	// unhandled counts, per event, what this connection fired that no
	// group consumes (announced in its Instance).
	unhandled unhandled.Tally

	writerDone chan struct{}
	killOnce   sync.Once
	dead       chan struct{}
}

func newConn(s *Server, f framer) *conn {
	now := time.Now().UTC()
	return &conn{s: s, st: &s.st, f: f, out: newOutbox(s.cfg.MaxQueuedBytes), subs: make(map[string]*sub),
		inflight: make(map[string]*delivery), startedAt: now, lastSeen: now,
		writerDone: make(chan struct{}), dead: make(chan struct{})}
}

func (c *conn) group() string {
	if c.reg == nil {
		return ""
	}
	return c.reg.Group
}

func (c *conn) client() string {
	if c.reg == nil {
		return ""
	}
	return c.reg.Client
}

// registered is read by broadcast with the state's lock held.
func (c *conn) registered() bool { return c.reg != nil }

// kill ends the connection: its read loop returns.
func (c *conn) kill() {
	c.killOnce.Do(func() {
		close(c.dead)
		_ = c.f.Close()
	})
}

// serve reads and handles commands until the connection ends.
func (c *conn) serve() {
	go c.write()
	reason := "lost"
	for {
		frame, err := c.f.ReadFrame()
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				c.send(errorCommand(ActionError, "", ErrorBody{Reason: err.Error(), Code: CodeBadCommand}))
				continue
			}
			if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
				reason = "closed" // a websocket closed properly
			}
			if !isCleanEnd(err) {
				c.s.log.Debug("connection ended", "remote", c.f.Remote(), "err", err)
			}
			break
		}
		cmd, err := DecodeCommand(frame, c.s.cfg.MaxMessageSize)
		if err == nil && cmd.Action == ActionBye {
			reason = "closed"
			continue
		}
		c.st.mu.Lock()
		c.lastSeen = time.Now().UTC()
		if err != nil {
			c.send(errorCommand(ActionError, cmd.Key, ErrorBody{Reason: err.Error(), Code: CodeBadCommand, Action: cmd.Action}))
		} else {
			c.handleLocked(&cmd)
		}
		c.st.mu.Unlock()
	}
	c.st.mu.Lock()
	c.st.leaveLocked(c, reason)
	c.st.mu.Unlock()
	c.out.close()
	<-c.writerDone
	c.kill()
}

func isCleanEnd(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway)
}

// write drains the outbox to the peer.
func (c *conn) write() {
	defer close(c.writerDone)
	for {
		frames, ok := c.out.take(c.dead)
		if !ok {
			return
		}
		if err := c.f.WriteFrames(frames); err != nil {
			c.kill()
			return
		}
	}
}

func (c *conn) send(cmd Command) { c.sendFrame(cmd.Encode()) }

func (c *conn) sendFrame(frame []byte) {
	if !c.out.push(frame) {
		select {
		case <-c.dead:
		default:
			c.s.log.Warn("disconnecting a client that reads nothing", "remote", c.f.Remote(), "client", c.client(),
				"err", errSlowPeer)
			c.kill()
		}
	}
}

func (c *conn) fail(key, action, code, format string, args ...any) {
	c.send(errorCommand(ActionError, key, ErrorBody{Reason: fmt.Sprintf(format, args...), Code: code, Action: action}))
}

func (c *conn) respond(key string, body any) {
	if key == "" {
		return
	}
	raw, _ := marshalBody(body)
	c.send(Command{Action: ActionResponse, Key: key, Body: raw})
}

// handleLocked carries out one command.
func (c *conn) handleLocked(cmd *Command) {
	if c.reg == nil && cmd.Action != ActionRegister && cmd.Action != ActionPing {
		c.fail(cmd.Key, cmd.Action, CodeUnregistered, "register first: send %s with your group, client, version and actions", ActionRegister)
		return
	}
	switch cmd.Action {
	case ActionRegister:
		c.registerLocked(cmd)
	case ActionSubscribe:
		var s Subscription
		if err := decodeBody(cmd, &s); err != nil {
			c.fail(cmd.Key, cmd.Action, CodeBadCommand, "%v", err)
			return
		}
		id, err := c.subscribeLocked(s)
		if err != nil {
			c.fail(cmd.Key, cmd.Action, CodeBadCommand, "%v", err)
			return
		}
		c.respond(cmd.Key, map[string]string{"sub": id})
	case ActionUnsubscribe:
		var u struct {
			Sub string `json:"sub"`
		}
		if err := decodeBody(cmd, &u); err != nil {
			c.fail(cmd.Key, cmd.Action, CodeBadCommand, "%v", err)
			return
		}
		s := c.subs[u.Sub]
		if s == nil {
			c.fail(cmd.Key, cmd.Action, CodeBadCommand, "no subscription %q", u.Sub)
			return
		}
		c.st.unsubscribeLocked(s)
		delete(c.subs, u.Sub)
		c.respond(cmd.Key, map[string]string{"sub": u.Sub})
	case ActionAck, ActionReply, ActionResponse, ActionReject, ActionError, ActionException:
		c.settleLocked(cmd)
	case ActionBroadcast:
		var b struct {
			Action string          `json:"action"`
			Body   json.RawMessage `json:"body"`
		}
		if err := decodeBody(cmd, &b); err != nil || b.Action == "" {
			c.fail(cmd.Key, cmd.Action, CodeBadCommand, "%s needs a body {\"action\": ..., \"body\": ...}", ActionBroadcast)
			return
		}
		c.st.broadcastLocked(Command{Action: b.Action, Body: b.Body})
		c.respond(cmd.Key, map[string]any{})
	case ActionPresence:
		c.respond(cmd.Key, c.st.instancesLocked())
	case ActionUnhandled:
		c.respond(cmd.Key, c.st.unhandledLocked())
	case ActionHistory:
		h := struct {
			Count int `json:"count"`
		}{Count: 50}
		if len(cmd.Body) > 0 {
			_ = json.Unmarshal(cmd.Body, &h)
		}
		c.respond(cmd.Key, c.st.historyLocked(min(max(h.Count, 1), historyLen)))
	case ActionPing:
		c.respond(cmd.Key, map[string]any{})
	default:
		if IsReserved(cmd.Action) {
			c.fail(cmd.Key, cmd.Action, CodeBadCommand, "unknown action %q (actions starting with drs. are reserved)", cmd.Action)
			return
		}
		c.publishLocked(cmd)
	}
}

func decodeBody(cmd *Command, v any) error {
	if len(cmd.Body) == 0 {
		return fmt.Errorf("%s needs a JSON body", cmd.Action)
	}
	if err := json.Unmarshal(cmd.Body, v); err != nil {
		return fmt.Errorf("%s: body: %v", cmd.Action, err)
	}
	return nil
}

func (c *conn) registerLocked(cmd *Command) {
	if c.reg != nil {
		c.fail(cmd.Key, cmd.Action, CodeBadCommand, "already registered as %s/%s", c.reg.Group, c.reg.Client)
		return
	}
	var r Registration
	if err := decodeBody(cmd, &r); err != nil {
		c.fail(cmd.Key, cmd.Action, CodeBadCommand, "%v", err)
		return
	}
	group := r.Group
	if group == "" {
		group = "x" // a client without a group only sends
	}
	if err := (core.Identity{Group: group, Client: r.Client}).Validate(); err != nil {
		c.fail(cmd.Key, cmd.Action, CodeBadCommand, "%v", err)
		return
	}
	if len(r.Actions) > 0 && r.Group == "" {
		c.fail(cmd.Key, cmd.Action, CodeBadCommand, "handling actions needs a group")
		return
	}
	c.st.sessions++
	c.session = newSession(c.st.sessions)
	c.reg = &r
	var subID string
	if len(r.Actions) > 0 {
		id, err := c.subscribeLocked(Subscription{Actions: r.Actions, Calls: r.Calls})
		if err != nil {
			c.reg = nil
			c.fail(cmd.Key, cmd.Action, CodeBadCommand, "%v", err)
			return
		}
		subID = id
	}
	c.respond(cmd.Key, map[string]any{"session": c.session, "sub": subID, "max_message_size": c.s.cfg.MaxMessageSize})
}

func (c *conn) subscribeLocked(s Subscription) (string, error) {
	if c.group() == "" {
		return "", errors.New("subscribing needs a group: register with one")
	}
	evs, err := core.ConsumeEvents(s.Actions)
	if err != nil {
		return "", err
	}
	for _, ev := range evs {
		if IsReserved(ev) {
			return "", fmt.Errorf("%q is a reserved action", ev)
		}
	}
	sb := &sub{id: "u" + strconv.FormatUint(c.st.nextSeq(), 36), c: c, actions: evs, calls: s.Calls,
		prefetch: s.Prefetch, timeout: time.Duration(s.MessageTimeoutMs) * time.Millisecond, maxDeliveries: s.MaxDeliveries}
	if sb.prefetch <= 0 {
		sb.prefetch = core.DefaultConcurrency
	}
	if sb.timeout <= 0 {
		sb.timeout = core.DefaultMessageTimeout
	}
	if sb.maxDeliveries == 0 {
		sb.maxDeliveries = core.DefaultMaxDeliveries
	}
	c.subs[sb.id] = sb
	c.st.subscribeLocked(sb)
	c.st.joinLocked(c) // announced from its first subscription on
	return sb.id, nil
}

// settleLocked handles what a handler sends about one of its deliveries.
func (c *conn) settleLocked(cmd *Command) {
	d := c.inflight[cmd.Key]
	if d == nil {
		c.fail(cmd.Key, cmd.Action, CodeUnknownDelivery,
			"no delivery %q is waiting on this connection (already settled, or given to another instance after its timeout)", cmd.Key)
		return
	}
	e := d.e
	switch cmd.Action {
	case ActionReply, ActionResponse:
		if e.caller != nil && !*e.answered {
			*e.answered = true
			r := Command{Action: ActionResponse, Key: e.callerKey, ID: e.id, Body: cmd.Body, BodyBase64: cmd.BodyBase64}
			e.caller.send(r)
		}
		if cmd.Action == ActionReply {
			return
		}
	case ActionError, ActionException:
		if e.caller != nil && !*e.answered {
			*e.answered = true
			var eb ErrorBody
			_ = json.Unmarshal(cmd.Body, &eb)
			if eb.Reason == "" {
				eb.Reason = string(cmd.Body)
			}
			eb.Code, eb.Action, eb.ID = CodeHandler, e.event, e.id
			e.caller.send(errorCommand(ActionException, e.callerKey, eb))
		}
	case ActionReject:
		if _, ok := core.IsDeadLetterEvent(e.event); ok {
			c.fail(cmd.Key, cmd.Action, CodeBadCommand, "%v", core.ErrRejectDeadLetter)
			return
		}
		var r struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(cmd.Body, &r)
		c.st.settleLocked(d)
		c.st.deadLetterLocked(e, d.q.group, c.client(), r.Reason)
		c.st.refillLocked(d.s)
		return
	}
	c.st.settleLocked(d)
	c.st.refillLocked(d.s)
}

// publishLocked routes a Fire (no key) or a Call (a key).
func (c *conn) publishLocked(cmd *Command) {
	e := &entry{event: cmd.Action, id: cmd.ID, body: cmd.Body, body64: cmd.BodyBase64}
	if e.id == "" {
		e.id = c.st.newID()
	}
	if cmd.Key != "" {
		e.caller, e.callerKey, e.answered = c, cmd.Key, new(bool)
	}
	if c.st.publishLocked(e) > 0 {
		return
	}
	c.st.unhandled++
	reason := fmt.Sprintf("no group consumes %q", cmd.Action)
	if e.caller != nil {
		reason = fmt.Sprintf("no online instance of any group handles %q", cmd.Action)
	}
	c.send(errorCommand(ActionError, cmd.Key, ErrorBody{Reason: reason, Code: CodeUnhandled, Action: cmd.Action, ID: e.id}))
	if !core.IsPresenceEvent(cmd.Action) {
		pe := core.PresenceEvent{Event: core.EventUnhandled, Reason: reason, Unhandled: cmd.Action, At: time.Now().UTC()}
		if e.caller == nil && core.CountsAsUnhandled(cmd.Action) {
			// Calls fail with their drs.error instead of being counted.
			pe.Count, pe.Total = 1, c.unhandled.Add(cmd.Action, 1)
		}
		pe.Instance = c.instanceLocked()
		if raw, err := json.Marshal(pe); err == nil {
			c.st.publishLocked(&entry{event: core.EventUnhandled, id: c.st.newID(), body: raw})
		}
	}
}

// instanceLocked describes c for presence.
func (c *conn) instanceLocked() core.Instance {
	// Connected is alive: LastSeen is now (a quiet consumer sends nothing).
	in := core.Instance{Session: c.session, Host: c.f.Remote(), StartedAt: c.startedAt, LastSeen: time.Now().UTC(),
		TTLMs: wsPongWait.Milliseconds()}
	if c.reg != nil {
		in.Group, in.Client, in.Version = c.reg.Group, c.reg.Client, c.reg.Version
	}
	var events, calls []string
	for _, s := range c.subs {
		if s.stopped {
			continue
		}
		events = append(events, s.actions...)
		calls = append(calls, s.calls...)
	}
	if c.reg != nil {
		calls = append(calls, c.reg.Calls...)
	}
	sort.Strings(events)
	sort.Strings(calls)
	in.Events, in.Calls = slices.Compact(events), slices.Compact(calls)
	if counts := c.unhandled.Counts(); len(counts) > 0 {
		in.Unhandled = counts
	}
	return in
}
