package amqp

import (
	"math"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// TestHeaderStringFormats: every AMQP field type a header holds prints as
// its plain value.
func TestHeaderStringFormats(t *testing.T) {
	at := time.Date(2026, 12, 1, 13, 0, 0, 5, time.FixedZone("x", 3600))
	for _, c := range []struct {
		in   any
		want string
	}{
		{"s", "s"}, {[]byte("b"), "b"}, {nil, ""}, {true, "true"}, {false, "false"},
		{int8(-8), "-8"}, {int16(-16), "-16"}, {int32(-32), "-32"}, {int64(math.MinInt64), "-9223372036854775808"}, {int(7), "7"},
		{uint8(255), "255"}, {uint16(65535), "65535"}, {uint32(math.MaxUint32), "4294967295"}, {uint64(math.MaxUint64), "18446744073709551615"},
		{float32(0.1), "0.1"}, {float32(1e21), "1e+21"}, {float64(0.1), "0.1"}, {1e6, "1e+06"}, {123456789.0, "1.23456789e+08"}, {1e-7, "1e-07"},
		{math.Inf(1), "+Inf"}, {math.NaN(), "NaN"}, {float32(16777216), "1.6777216e+07"},
		{at, "2026-12-01T12:00:00.000000005Z"},
		{[]any{int32(1), "a"}, "[1 a]"},
	} {
		if got := headerString(c.in); got != c.want {
			t.Errorf("headerString(%#v) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestPriorDeliveriesTypes: the deliveries header counts in any integer
// type and in decimal text; anything else, a negative or a huge count is 0.
func TestPriorDeliveriesTypes(t *testing.T) {
	for _, c := range []struct {
		in   any
		want int
	}{
		{int8(3), 3}, {int16(3), 3}, {int32(3), 3}, {int64(3), 3}, {int(3), 3},
		{uint8(3), 3}, {uint16(3), 3}, {uint32(3), 3}, {"3", 3}, {[]byte("3"), 3},
		{uint64(3), 0}, {float64(3), 0}, {true, 0}, {"x", 0}, {nil, 0},
		{int32(-1), 0}, {int64(1 << 31), 0}, {int64(1 << 30), 1 << 30},
	} {
		if got := priorDeliveries(amqp091.Table{deliveriesHeader: c.in}); got != c.want {
			t.Errorf("priorDeliveries(%#v) = %d, want %d", c.in, got, c.want)
		}
	}
	if got := priorDeliveries(amqp091.Table{}); got != 0 {
		t.Errorf("priorDeliveries without the header = %d, want 0", got)
	}
}
