package core

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// What the peers put in the `data` field (wire.md), and what we must read.
func TestMsgpackReadsEveryPeer(t *testing.T) {
	obj := map[string]any{"id": "81384788765712384", "content": "hi", "n": int64(3)}
	jsonText := []byte(`{"id":"81384788765712384","content":"hi","n":3}`)
	jsMap, _ := msgpack.Marshal(obj)
	jsString, _ := msgpack.Marshal("just text")
	long := []byte(`{"content":"` + strings.Repeat("x", 70000) + `"}`)

	cases := []struct {
		name string
		raw  []byte
		want any
	}{
		{"js object as msgpack map", jsMap, obj},
		{"js string as msgpack str", jsString, "just text"},
		{"sg-gateway str16 holding JSON", MsgpackJSONString(jsonText), obj},
		{"sg-gateway fixstr holding JSON", MsgpackJSONString([]byte(`{"a":1}`)), map[string]any{"a": int64(1)}},
		{"sg-gateway str32 holding JSON", MsgpackJSONString(long), map[string]any{"content": strings.Repeat("x", 70000)}},
		{"str8 holding JSON", append([]byte{0xd9, byte(len(jsonText))}, jsonText...), obj},
		{"bin holding JSON", append([]byte{0xc4, byte(len(jsonText))}, jsonText...), obj},
		{"plain JSON text", jsonText, obj},
		{"msgpack array", mustMsgpack([]any{"a", int64(1), true, nil}), []any{"a", int64(1), true, nil}},
		{"msgpack integer", mustMsgpack(uint64(1) << 63), uint64(1) << 63},
		{"msgpack map with integer keys", mustMsgpack(map[int]string{1: "a"}), map[string]any{"1": "a"}},
		{"str that is not JSON despite the brace", MsgpackJSONString([]byte("{not json")), "{not json"},
		{"bin that is not JSON", []byte{0xc4, 3, 1, 2, 3}, []byte{1, 2, 3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got any
			if err := (Msgpack{}).Unmarshal(c.raw, &got); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %#v, want %#v", got, c.want)
			}
		})
	}
}

func mustMsgpack(v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func TestMsgpackUndecodable(t *testing.T) {
	for _, raw := range [][]byte{nil, {0xc1}, {0xc1, 0xff, 0x00, '{'}, {0x82, 0xa1, 'a'}, append(mustMsgpack(1), 0x01)} {
		var v any
		err := (Msgpack{}).Unmarshal(raw, &v)
		if !errors.Is(err, ErrUndecodable) {
			t.Errorf("%x: err = %v, want ErrUndecodable", raw, err)
		}
	}
}

func TestMsgpackStructsUseJSONTags(t *testing.T) {
	type packet struct {
		GuildID string          `json:"guild_id"`
		Packet  json.RawMessage `json:"-"`
		Op      int             `json:"op"`
	}
	in := packet{GuildID: "81384788765712384", Op: 4}
	raw, err := (Msgpack{}).Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var m any
	if err := (Msgpack{}).Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, map[string]any{"guild_id": "81384788765712384", "op": int64(4)}) {
		t.Errorf("encoded as %#v", m)
	}
	// And a struct reads the sg-gateway form (str holding JSON).
	var out packet
	if err := (Msgpack{}).Unmarshal(MsgpackJSONString([]byte(`{"guild_id":"1","op":4}`)), &out); err != nil {
		t.Fatal(err)
	}
	if out.GuildID != "1" || out.Op != 4 {
		t.Errorf("decoded %+v", out)
	}
}

func TestRawPassesThrough(t *testing.T) {
	raw := Raw{0xde, 0xad}
	for _, c := range []Codec{Msgpack{}, JSON{}} {
		b, err := c.Marshal(raw)
		if err != nil || !bytes.Equal(b, raw) {
			t.Errorf("%s: %x %v", c.Name(), b, err)
		}
	}
}

func TestJSONRawMessageBecomesMsgpack(t *testing.T) {
	b, err := (Msgpack{}).Marshal(json.RawMessage(`{"op":1,"d":null}`))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := msgpack.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a msgpack map: %v", err)
	}
	if _, err := (Msgpack{}).Marshal(json.RawMessage(`{bad`)); err == nil {
		t.Error("invalid JSON accepted")
	}
}

func TestDecodeJSONKeepsIntegers(t *testing.T) {
	v, err := DecodeJSON([]byte(`{"a":1,"b":1.5,"c":18446744073709551615,"d":[-2]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"a": int64(1), "b": 1.5, "c": uint64(18446744073709551615), "d": []any{int64(-2)}}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("got %#v", v)
	}
	for _, bad := range []string{"", "{", `{"a":1} {"b":2}`, "nul"} {
		if _, err := DecodeJSON([]byte(bad)); !errors.Is(err, ErrUndecodable) {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
}

func TestJSONCodecRoundTrip(t *testing.T) {
	in := map[string]any{"a": int64(1), "s": "x", "l": []any{true}}
	b, err := (JSON{}).Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := (JSON{}).Unmarshal(b, &out); err != nil || !reflect.DeepEqual(out, in) {
		t.Errorf("round trip: %#v %v", out, err)
	}
	if err := (JSON{}).Unmarshal(mustMsgpack(map[string]any{"a": 1}), &out); !errors.Is(err, ErrUndecodable) {
		t.Errorf("msgpack through the JSON codec: err = %v", err)
	}
}

func TestMsgpackJSONStringHeaders(t *testing.T) {
	for n, hdr := range map[int][]byte{0: {0xa0}, 31: {0xbf}, 32: {0xda, 0, 32}, 65535: {0xda, 0xff, 0xff}, 65536: {0xdb, 0, 1, 0, 0}} {
		got := MsgpackJSONString(bytes.Repeat([]byte{'1'}, n))
		if !bytes.HasPrefix(got, hdr) || len(got) != len(hdr)+n {
			t.Errorf("len %d: header %x, want %x", n, got[:min(len(got), 5)], hdr)
		}
		var s string
		if err := msgpack.Unmarshal(got, &s); err != nil || len(s) != n {
			t.Errorf("len %d: a msgpack reader gets %d bytes, %v", n, len(s), err)
		}
	}
}

func TestCodecByName(t *testing.T) {
	for name, want := range map[string]string{"": "msgpack", "msgpack": "msgpack", "JSON": "json"} {
		c, err := CodecByName(name)
		if err != nil || c.Name() != want {
			t.Errorf("%q: %v %v", name, c, err)
		}
	}
	if _, err := CodecByName("etf"); !errors.Is(err, ErrUnknownCodec) {
		t.Errorf("etf: %v", err)
	}
}

func FuzzMsgpackUnmarshal(f *testing.F) {
	f.Add([]byte{0x81, 0xa1, 'a', 0x01})
	f.Add(MsgpackJSONString([]byte(`{"a":[1,2]}`)))
	f.Add([]byte(`{"a":1}`))
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, raw []byte) {
		// Must not panic nor run out of memory (a declared length is
		// checked before anything is allocated for it); a failure wraps
		// ErrUndecodable.
		var v any
		if err := (Msgpack{}).Unmarshal(raw, &v); err != nil && !errors.Is(err, ErrUndecodable) {
			t.Fatalf("% x: %v", raw, err)
		}
		var s struct {
			A []map[string][]string `json:"a"`
			B any                   `json:"b"`
		}
		if err := (Msgpack{}).Unmarshal(raw, &s); err != nil && !errors.Is(err, ErrUndecodable) {
			t.Fatalf("% x into a struct: %v", raw, err)
		}
	})
}

func TestMsgpackWidensIntoGenericContainers(t *testing.T) {
	raw := mustMsgpack(map[string]any{"i": 1, "l": []any{int8(2)}})
	var m map[string]any
	if err := (Msgpack{}).Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m["i"] != int64(1) || m["l"].([]any)[0] != int64(2) {
		t.Errorf("got %#v", m)
	}
}

func TestJSONValue(t *testing.T) {
	in := map[string]any{"b": []byte("text"), "bin": []byte{0xff, 0x00}, "l": []any{math.NaN()}, "m": map[any]any{1: "x"}}
	out := JSONValue(in).(map[string]any)
	if out["b"] != "text" || out["bin"] != "/wA=" || out["l"].([]any)[0] != "NaN" || out["m"].(map[string]any)["1"] != "x" {
		t.Errorf("got %#v", out)
	}
	if _, err := json.Marshal(out); err != nil {
		t.Errorf("not encodable: %v", err)
	}
}

// TestJSONValueInvalidUTF8String: a str that is not valid UTF-8 (how
// spec-tacles/go writes []byte) gets the treatment of a bin: base64, as
// a value and as a map key, instead of U+FFFD for each bad byte.
func TestJSONValueInvalidUTF8String(t *testing.T) {
	bad := "\xff\x00ok"
	in := map[string]any{"s": bad, "l": []any{bad, "é"}, bad: "k", "m": map[any]any{bad: bad}}
	out := JSONValue(in).(map[string]any)
	const want = "/wBvaw=="
	if out["s"] != want || out["l"].([]any)[0] != want || out["l"].([]any)[1] != "é" || out[want] != "k" ||
		out["m"].(map[string]any)[want] != want {
		t.Errorf("got %#v", out)
	}
	if _, ok := out[bad]; ok {
		t.Errorf("the invalid key is still there: %#v", out)
	}
}
