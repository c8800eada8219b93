package hub

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"unicode/utf8"
)

// Reserved actions. Every other action names a Spectacles event.
const (
	// ActionResponse answers a command that had a key: the hub's answer to
	// drs.register and drs.subscribe, a handler's reply to a Call (which,
	// sent by a handler, also acknowledges the delivery).
	ActionResponse = "drs.response"
	// ActionError says that a command could not be carried out or
	// delivered; its body is an ErrorBody.
	ActionError = "drs.error"
	// ActionException says that a handler failed while processing a Call;
	// its body is an ErrorBody.
	ActionException = "drs.exception"
	// ActionRegister is the first command of every connection; its body is
	// a Registration.
	ActionRegister = "drs.register"
	// ActionSubscribe asks for deliveries of more actions; its body is a
	// Subscription.
	ActionSubscribe = "drs.subscribe"
	// ActionUnsubscribe stops a subscription; its body is {"sub": id}.
	ActionUnsubscribe = "drs.unsubscribe"
	// ActionAck acknowledges the delivery named by the key.
	ActionAck = "drs.ack"
	// ActionReply answers the Call behind the delivery named by the key,
	// without acknowledging it.
	ActionReply = "drs.reply"
	// ActionReject moves the delivery named by the key to the dead letters;
	// its body is {"reason": text}.
	ActionReject = "drs.reject"
	// ActionBroadcast asks the hub to send the command in its body
	// ({"action", "body"}) to every registered connection.
	ActionBroadcast = "drs.broadcast"
	// ActionPresence asks the hub for the instances it knows; the answer's
	// body is a list of core.Instance.
	ActionPresence = "drs.presence"
	// ActionBye says that the client is leaving: presence reports its
	// disconnection as "closed" rather than "lost".
	ActionBye = "drs.bye"
	// ActionHistory asks the hub for its latest presence events
	// ({"count": n}, default 50); the answer's body is a list of
	// core.PresenceEvent, newest first.
	ActionHistory = "drs.history"
	// ActionUnhandled asks the hub for the connections that fired events no
	// group consumes, consumers or not; the answer's body is a list of
	// core.Instance whose Unhandled holds the counts.
	ActionUnhandled = "drs.unhandled"
)

// IsReserved reports whether action is one of the hub's drs.* actions
// rather than an event.
func IsReserved(action string) bool { return len(action) >= 4 && action[:4] == "drs." }

// DefaultMaxMessageSize bounds one command on the wire (one websocket
// message, one TCP line), in bytes.
const DefaultMaxMessageSize = 4 << 20

// ErrBadCommand marks a command that is not valid: not a JSON object, a
// missing or non-string action, a bad body_base64. The hub answers it with
// drs.error and keeps the connection.
var ErrBadCommand = errors.New("bad command")

// ErrTooLarge marks a command larger than the maximum message size.
var ErrTooLarge = errors.New("command too large")

// Command is one DRS command: one JSON object per websocket message or TCP
// line. Action and Key are the DRS fields; Body is the payload as JSON, or
// BodyBase64 holds payload bytes that are not JSON. The other fields are
// set by the hub on what it delivers.
type Command struct {
	// Action is the event name, or a reserved drs.* action.
	Action string `json:"action"`
	// Body is the payload, JSON text; empty when there is none.
	Body json.RawMessage `json:"body,omitempty"`
	// BodyBase64 holds a payload that is not JSON (msgpack bytes from a Go
	// service), in standard base64. At most one of Body and BodyBase64 is
	// set.
	BodyBase64 string `json:"body_base64,omitempty"`
	// Key pairs a command with its answer. A client sets it on a Call (and
	// on drs.register and drs.subscribe); on a delivery the hub sets it to
	// the delivery's tag, which drs.ack, drs.reply, drs.reject and
	// drs.response name.
	Key string `json:"key,omitempty"`
	// ID is the message id: set by the hub on deliveries; a client may set
	// it on a Fire or Call to choose the id (it must be unique).
	ID string `json:"id,omitempty"`
	// Sub is the subscription a delivery is for.
	Sub string `json:"sub,omitempty"`
	// Deliveries counts the deliveries of this message to its group, this
	// one included.
	Deliveries int `json:"deliveries,omitempty"`
	// Call is true on the delivery of a Call: the handler should answer it.
	Call bool `json:"call,omitempty"`
	// Headers carries metadata (dead letters carry core.Header*).
	Headers map[string]string `json:"headers,omitempty"`
}

// ErrorBody is the body of drs.error and drs.exception.
type ErrorBody struct {
	// Reason says what went wrong, for people.
	Reason string `json:"reason"`
	// Code is a stable word for programs: "unregistered", "unhandled",
	// "bad_command", "unknown_delivery", "handler" (drs.exception from a
	// handler), "closed".
	Code string `json:"code,omitempty"`
	// Action is the action of the command that failed, when known.
	Action string `json:"action,omitempty"`
	// ID is the id of the message that failed, when known.
	ID string `json:"id,omitempty"`
}

// Error codes of ErrorBody.Code.
const (
	CodeUnregistered    = "unregistered"
	CodeUnhandled       = "unhandled"
	CodeBadCommand      = "bad_command"
	CodeUnknownDelivery = "unknown_delivery"
	CodeHandler         = "handler"
)

// Registration is the body of drs.register (the gist's registration): who
// the client is and what it handles. A client without a group only sends
// (a consumer, in the gist's words); it is not announced as a service.
type Registration struct {
	Group   string `json:"group,omitempty"`
	Client  string `json:"client"`
	Version string `json:"version,omitempty"`
	// Actions are the events this client handles, subscribed at once with
	// the defaults of a Subscription.
	Actions []string `json:"actions,omitempty"`
	// Calls are the actions among them it answers (for presence).
	Calls []string `json:"calls,omitempty"`
}

// Subscription is the body of drs.subscribe.
type Subscription struct {
	Actions []string `json:"actions"`
	// Prefetch is how many deliveries may be unacknowledged at once; 0
	// means 64.
	Prefetch int `json:"prefetch,omitempty"`
	// MessageTimeoutMs is how long a delivery may stay unacknowledged
	// before the hub gives it to another instance; 0 means 2 minutes.
	MessageTimeoutMs int64 `json:"message_timeout_ms,omitempty"`
	// MaxDeliveries is how many deliveries a message gets before it moves
	// to EVENT:dlq; 0 means 5, negative disables.
	MaxDeliveries int `json:"max_deliveries,omitempty"`
	// Calls are the actions among them it answers (for presence).
	Calls []string `json:"calls,omitempty"`
}

// DecodeCommand parses one command of at most max bytes. A command that is
// not valid gets an error wrapping ErrBadCommand (or ErrTooLarge), which
// names what is wrong; the returned Command then holds what could be read
// (its Key, to answer it).
func DecodeCommand(data []byte, max int) (Command, error) {
	var c Command
	if max > 0 && len(data) > max {
		return c, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(data), max)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return c, fmt.Errorf("%w: not a JSON object", ErrBadCommand)
	}
	if err := json.Unmarshal(data, &c); err != nil {
		// Recover the key, when there is one, so that the error can be
		// paired with the command.
		var k struct {
			Key string `json:"key"`
		}
		_ = json.Unmarshal(data, &k)
		return Command{Key: k.Key}, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	if c.Action == "" {
		return c, fmt.Errorf("%w: no action", ErrBadCommand)
	}
	if !utf8.ValidString(c.Action) {
		return c, fmt.Errorf("%w: the action is not valid UTF-8", ErrBadCommand)
	}
	if len(c.Body) > 0 && c.BodyBase64 != "" {
		return c, fmt.Errorf("%w: both body and body_base64", ErrBadCommand)
	}
	if c.BodyBase64 != "" {
		if _, err := base64.StdEncoding.DecodeString(c.BodyBase64); err != nil {
			return c, fmt.Errorf("%w: body_base64: %v", ErrBadCommand, err)
		}
	}
	if bytes.Equal(c.Body, []byte("null")) {
		c.Body = nil
	}
	return c, nil
}

// Payload returns the payload bytes of c and whether they are JSON text
// (Body) rather than opaque bytes (BodyBase64).
func (c *Command) Payload() (raw []byte, isJSON bool) {
	if c.BodyBase64 != "" {
		b, err := base64.StdEncoding.DecodeString(c.BodyBase64)
		if err == nil {
			return b, false
		}
	}
	return c.Body, true
}

// SetPayload stores raw in c: as Body when it is valid JSON, else in
// BodyBase64.
func (c *Command) SetPayload(raw []byte) {
	c.Body, c.BodyBase64 = nil, ""
	if len(raw) == 0 {
		return
	}
	if json.Valid(raw) {
		c.Body = compact(raw)
		return
	}
	c.BodyBase64 = base64.StdEncoding.EncodeToString(raw)
}

// compact removes line breaks from valid JSON, so that it fits on one TCP
// line.
func compact(raw []byte) json.RawMessage {
	if bytes.IndexByte(raw, '\n') < 0 && bytes.IndexByte(raw, '\r') < 0 {
		return raw
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return raw
	}
	return buf.Bytes()
}

// Encode returns c as one line of JSON, without the newline. Body must be
// valid JSON (DecodeCommand and SetPayload make sure of it): it is copied
// as it is, without being parsed again.
func (c *Command) Encode() []byte {
	n := 64 + len(c.Action) + len(c.Body) + len(c.BodyBase64) + len(c.Key) + len(c.ID) + len(c.Sub)
	b := make([]byte, 0, n)
	b = append(b, `{"action":`...)
	b = appendString(b, c.Action)
	if len(c.Body) > 0 {
		b = append(b, `,"body":`...)
		b = append(b, c.Body...)
	}
	field := func(name, v string) {
		if v != "" {
			b = append(b, `,"`...)
			b = append(b, name...)
			b = append(b, `":`...)
			b = appendString(b, v)
		}
	}
	field("body_base64", c.BodyBase64)
	field("key", c.Key)
	field("id", c.ID)
	field("sub", c.Sub)
	if c.Deliveries != 0 {
		b = append(b, `,"deliveries":`...)
		b = strconv.AppendInt(b, int64(c.Deliveries), 10)
	}
	if c.Call {
		b = append(b, `,"call":true`...)
	}
	if len(c.Headers) > 0 {
		keys := make([]string, 0, len(c.Headers))
		for k := range c.Headers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = append(b, `,"headers":{`...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, c.Headers[k])
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendString appends s as a JSON string, as encoding/json writes it
// (invalid UTF-8 as U+FFFD, U+2028 and U+2029 escaped) but without
// escaping <, > and &.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// errorCommand builds a drs.error (or drs.exception) answering key.
func errorCommand(action, key string, body ErrorBody) Command {
	raw, _ := json.Marshal(body)
	return Command{Action: action, Key: key, Body: raw}
}

// bodyOf marshals v as a JSON body.
func bodyOf(v any) json.RawMessage {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return raw
}
