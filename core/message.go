package core

import (
	"context"
	"sync"
	"sync/atomic"
)

// Payload is an encoded value together with the codec that reads it. A
// call's reply is a Payload; a Message carries one.
type Payload struct {
	// Raw is the payload exactly as it was on the wire.
	Raw []byte

	codec Codec
	once  sync.Once
	data  any
	err   error
}

// NewPayload wraps raw bytes written with codec (msgpack when nil).
func NewPayload(raw []byte, codec Codec) *Payload {
	if codec == nil {
		codec = Msgpack{}
	}
	return &Payload{Raw: raw, codec: codec}
}

// Data decodes the payload into plain Go values (see Codec.Unmarshal). The
// result is computed once. An error wraps ErrUndecodable; Raw still holds
// the bytes.
func (p *Payload) Data() (any, error) {
	p.once.Do(func() { p.err = p.codec.Unmarshal(p.Raw, &p.data) })
	return p.data, p.err
}

// Decode decodes the payload into v, a pointer to any type the codec
// supports (structs use their msgpack or json tags).
func (p *Payload) Decode(v any) error { return p.codec.Unmarshal(p.Raw, v) }

// Codec returns the codec that reads this payload.
func (p *Payload) Codec() Codec { return p.codec }

// Handler processes one message. It runs on a goroutine of the consumer's
// pool; a panic inside it is recovered, logged and leaves the message
// unacknowledged.
type Handler func(ctx context.Context, m *Message)

// Settler is what a driver gives each message so that it can be settled.
// Drivers implement it; users call the Message methods instead.
type Settler interface {
	// Ack marks the message as handled for the consumer's group.
	Ack(ctx context.Context, m *Message) error
	// Reply sends an encoded payload to whoever called with this message.
	Reply(ctx context.Context, m *Message, payload []byte) error
	// DeadLetter moves the message to the dead-letter place with a reason
	// and acknowledges it in its source.
	DeadLetter(ctx context.Context, m *Message, reason string) error
}

// Message is one delivery of an event to a consumer.
type Message struct {
	*Payload
	// Event is the event name (the Redis stream, the AMQP routing key).
	Event string
	// ID is the broker's id for the message, as Publish returned it.
	ID string
	// Deliveries counts how many times the message has been delivered to
	// this group, this delivery included (1 for a first delivery).
	Deliveries int
	// Headers holds metadata besides the payload. Dead-lettered messages
	// carry the Header* keys.
	Headers map[string]string

	settler Settler
	settled atomic.Bool
}

// NewMessage assembles a message for a driver.
func NewMessage(event, id string, raw []byte, deliveries int, codec Codec, settler Settler) *Message {
	// One allocation for the message and its payload: a consumer makes one
	// per message.
	var mp messageAndPayload
	mp.init(event, id, raw, deliveries, codec, settler)
	return &mp.m
}

// messageAndPayload is a message with its payload, allocated together.
type messageAndPayload struct {
	m Message
	p Payload
}

func (mp *messageAndPayload) init(event, id string, raw []byte, deliveries int, codec Codec, settler Settler) {
	if codec == nil {
		codec = Msgpack{}
	}
	mp.p = Payload{Raw: raw, codec: codec}
	mp.m = Message{Payload: &mp.p, Event: event, ID: id, Deliveries: deliveries, settler: settler}
}

// MessageBlockLen is how many messages a MessageBlock allocates at once.
const MessageBlockLen = 64

// MessageBlock assembles messages, as NewMessage does, for a driver that
// makes many at once (a read of a batch of stream entries): it allocates
// them MessageBlockLen at a time, so that a batch costs one allocation per
// MessageBlockLen messages instead of one per message. The messages are
// never reused (a handler may keep its message as long as it likes); one
// that is kept keeps its block in memory, and with it the other messages
// of the block and their payloads, until it is dropped. The zero value is
// ready to use, and a nil *MessageBlock assembles each message on its own
// (NewMessage); a MessageBlock is not safe for concurrent use.
type MessageBlock struct {
	free []messageAndPayload
}

// New assembles a message, as NewMessage does, from the current block.
func (b *MessageBlock) New(event, id string, raw []byte, deliveries int, codec Codec, settler Settler) *Message {
	if b == nil {
		return NewMessage(event, id, raw, deliveries, codec, settler)
	}
	if len(b.free) == 0 {
		b.free = make([]messageAndPayload, MessageBlockLen)
	}
	mp := &b.free[0]
	b.free = b.free[1:]
	mp.init(event, id, raw, deliveries, codec, settler)
	return &mp.m
}

// Ack acknowledges the message: it leaves the group's pending list and is
// never re-delivered to the group. It returns once the broker confirmed.
// Acking a settled message again does nothing.
func (m *Message) Ack(ctx context.Context) error {
	if m.settled.Load() {
		return nil
	}
	if err := m.settler.Ack(ctx, m); err != nil {
		return err
	}
	m.settled.Store(true)
	return nil
}

// Reply answers the message's caller with data, encoded with the message's
// codec. It does not acknowledge the message.
func (m *Message) Reply(ctx context.Context, data any) error {
	raw, err := m.codec.Marshal(data)
	if err != nil {
		return err
	}
	return m.settler.Reply(ctx, m, raw)
}

// Reject moves the message to the dead-letter place with a reason, where it
// can be inspected and requeued, and acknowledges it. Use it for poison
// messages that no retry can fix.
func (m *Message) Reject(ctx context.Context, reason string) error {
	if m.settled.Load() {
		return nil
	}
	if err := m.settler.DeadLetter(ctx, m, reason); err != nil {
		return err
	}
	m.settled.Store(true)
	return nil
}

// Settled reports whether Ack or Reject succeeded on this message.
func (m *Message) Settled() bool { return m.settled.Load() }
