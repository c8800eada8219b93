package core

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// What a user gives is never silently changed: each of these would have
// decoded to something else than what was written.
func TestDecodeJSONRejectsWhatItWouldChange(t *testing.T) {
	cases := []struct {
		in   string
		want string // in the error
	}{
		{`1e400`, "number 1e400 at offset 0 is out of the range"},
		{`{"a":-1e400}`, "number -1e400 at offset 5"},
		{`[1, 123456789012345678901234567890]`, "integer 123456789012345678901234567890 at offset 4 does not fit in 64 bits"},
		{`-9223372036854775809`, "integer -9223372036854775809 at offset 0"},
		{`18446744073709551616`, "integer 18446744073709551616 at offset 0"},
		{`"` + strings.Repeat("9", 100) + `"`, ""}, // a string of digits is fine: see below
		{`"\ud800"`, `lone surrogate \ud800 at offset 1`},
		{`{"k":"ab\udc00"}`, `lone surrogate \udc00 at offset 8`},
		{`"\ud800\u0041"`, `lone surrogate \ud800 at offset 1`},
		{`"\ud800\ud800"`, `lone surrogate \ud800 at offset 1`},
		{"\"a\xffb\"", "invalid UTF-8 (byte 0xff) at offset 2"},
		{"[\"\xed\xa0\x80\"]", "invalid UTF-8 (byte 0xed) at offset 2"}, // an encoded surrogate
		{"\"\xc3\"", "invalid UTF-8 (byte 0xc3) at offset 1"},
		{strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), "deeper than 1000 levels at offset 1000"},
		{`{"a":1}]`, "data after the JSON value, at offset 7"},
		{`{"a":1} {"b":2}`, "data after the JSON value, at offset 8"},
	}
	for _, c := range cases {
		_, err := DecodeJSON([]byte(c.in))
		if c.want == "" {
			if err != nil {
				t.Errorf("%.40q: %v", c.in, err)
			}
			continue
		}
		if !errors.Is(err, ErrUndecodable) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.40q: err = %v, want ErrUndecodable naming %q", c.in, err, c.want)
		}
		// The JSON codec is as strict, into any target.
		var s struct {
			A any `json:"a"`
			K any `json:"k"`
		}
		for _, target := range []any{new(any), &s} {
			if err := (JSON{}).Unmarshal([]byte(c.in), target); !errors.Is(err, ErrUndecodable) {
				t.Errorf("JSON codec into %T, %.40q: err = %v", target, c.in, err)
			}
		}
	}
}

func TestDecodeJSONKeepsWhatFits(t *testing.T) {
	cases := []struct {
		in   string
		want any
	}{
		{`"\ud83d\ude00"`, "😀"},
		{`"\uD83D\uDE00 and \u00e9"`, "😀 and é"},
		{`"😀 \ufffd �"`, "😀 \ufffd \ufffd"}, // U+FFFD written by the user stays
		{`-9223372036854775808`, int64(math.MinInt64)},
		{`9223372036854775807`, int64(math.MaxInt64)},
		{`18446744073709551615`, uint64(math.MaxUint64)},
		{`1.7976931348623157e308`, math.MaxFloat64},
		{`-0`, math.Copysign(0, -1)}, // a float keeps the sign an integer would lose (found by FuzzDecodeJSON: "-0e0")
		{`1e-400`, 0.0},              // below the smallest float64: rounds to zero, as every float rounds
		{`123456789012345678901234567890.0`, 1.2345678901234568e29},
		{`1E3`, 1000.0},
		{`100000000000000000000`, 1e20}, // how encoding/json writes the float64 1e20
		{`-123456789012345680000`, -1.2345678901234568e20},
		{strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth), nested(MaxDepth)},
	}
	for _, c := range cases {
		got, err := DecodeJSON([]byte(c.in))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%.40q: got %#v, %v; want %#v", c.in, got, err, c.want)
		}
	}
}

func nested(depth int) any {
	var v any = []any{}
	for range depth - 1 {
		v = []any{v}
	}
	return v
}

// Peers' JSON inside msgpack strings, and plain JSON payloads, are read
// leniently, as before: a strict error there would dead-letter messages
// that existing peers send today.
func TestMsgpackReadsPeersJSONLeniently(t *testing.T) {
	doc := []byte(`{"s":"\ud800","big":123456789012345678901234567890,"inf":1e400}`)
	for _, raw := range [][]byte{MsgpackJSONString(doc), doc} {
		var v any
		if err := (Msgpack{}).Unmarshal(raw, &v); err != nil {
			t.Fatalf("%.10x: %v", raw, err)
		}
		m := v.(map[string]any)
		if m["s"] != "\ufffd" || m["big"] != 1.2345678901234568e29 || m["inf"] != math.Inf(1) {
			t.Errorf("got %#v", m)
		}
		if _, err := json.Marshal(JSONValue(v)); err != nil {
			t.Errorf("not printable: %v", err)
		}
	}
}

func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(`{"a":[1,-2.5e3,"\ud83d\ude00"],"b":null}`))
	f.Add([]byte(`"\ud800"`))
	f.Add([]byte(`1e400`))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := DecodeJSON(data)
		if err != nil {
			return
		}
		// Accepted: encoding/json reads it too, and what it encodes to is
		// accepted and stays the same.
		var std any
		if err := json.Unmarshal(data, &std); err != nil {
			t.Fatalf("DecodeJSON accepts %q, encoding/json: %v", data, err)
		}
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%q decodes to %#v, which does not encode: %v", data, v, err)
		}
		again, err := DecodeJSON(out)
		if err != nil {
			t.Fatalf("%q → %#v → %s, which DecodeJSON rejects: %v", data, v, out, err)
		}
		if out2, _ := json.Marshal(again); string(out2) != string(out) {
			t.Fatalf("%q → %s → %s", data, out, out2)
		}
	})
}
