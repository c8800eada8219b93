package amqp

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// deliveriesHeader is the message header in which the driver counts the
// deliveries a message had before it was last published: a message taken
// back from a client after Options.MessageTimeout is published again to
// its queue with the count raised, so that counting changes no queue's
// arguments (RabbitMQ's x-delivery-count needs quorum queues, which peers
// do not declare).
const deliveriesHeader = "spectacles-deliveries"

// newID returns a message id: a UUIDv7 (time-ordered, random below the
// millisecond) in its canonical text form.
func newID() string {
	var u [16]byte
	_, _ = rand.Read(u[6:])
	ms := uint64(time.Now().UnixMilli())
	binary.BigEndian.PutUint16(u[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(u[2:6], uint32(ms))
	u[6] = u[6]&0x0f | 0x70 // version 7
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], u[10:16])
	return string(s[:])
}

// priorDeliveries reads the deliveries header: 0 when absent or unreadable.
func priorDeliveries(h amqp091.Table) int {
	v, ok := h[deliveriesHeader]
	if !ok {
		return 0
	}
	var n int64
	switch v.(type) {
	case int8, int16, int32, int64, int, uint8, uint16, uint32, string, []byte:
		n, _ = strconv.ParseInt(headerString(v), 10, 64)
	}
	if n < 0 || n > 1<<30 {
		return 0
	}
	return int(n)
}

// stringHeaders turns an AMQP header table into core.Message.Headers,
// leaving out the driver's own bookkeeping. Nil when nothing is left.
func stringHeaders(h amqp091.Table) map[string]string {
	if len(h) == 0 {
		return nil
	}
	var out map[string]string
	for k, v := range h {
		if k == deliveriesHeader {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(h))
		}
		out[k] = headerString(v)
	}
	return out
}

// headerString formats one AMQP field value: bytes as text, no value as
// "", times in RFC 3339, and the rest (booleans, numbers, arrays) as fmt
// prints them.
func headerString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case nil:
		return ""
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}

// contentType names a codec's payloads for the AMQP content_type property.
func contentType(codec string) string {
	switch codec {
	case "msgpack":
		return "application/msgpack"
	case "json":
		return "application/json"
	}
	return ""
}
