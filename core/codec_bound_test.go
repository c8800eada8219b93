package core

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/vmihailenco/msgpack/v5"
)

// bigStruct is a decoding target with slices and maps of structs, so that
// the library's preallocation of typed slices and maps is exercised too.
type bigStruct struct {
	Name  string            `json:"name"`
	Items []bigStruct       `json:"items"`
	Tags  map[string]string `json:"tags"`
	Raw   []byte            `json:"raw"`
	N     int64             `json:"n"`
}

// repeat concatenates n copies of p.
func repeat(p []byte, n int) []byte { return bytes.Repeat(p, n) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// nestedClaims builds levels array32 headers, each declaring as many
// elements as there are bytes after it: every header alone fits in what
// remains, but not together with what the outer ones still owe.
func nestedClaims(levels int) []byte {
	var b []byte
	for i := range levels {
		n := uint32(5 * (levels - 1 - i))
		b = append(b, 0xdd, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return b
}

// hostileMsgpack are payloads whose headers declare much more than they
// hold, or that nest without end. Each must be undecodable, cheaply.
var hostileMsgpack = []struct {
	name string
	raw  []byte
	want string // in the error
}{
	{"array32 of 4G elements (the 5-byte report)", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}, "array at offset 0 declares 4294967295 elements"},
	{"array32 of 16M elements, 3 present", []byte{0xdd, 0x01, 0x00, 0x00, 0x00, 0xc0, 0xc0, 0xc0}, "array at offset 0 declares 16777216 elements"},
	{"array16 of 65535 elements, none present", []byte{0xdc, 0xff, 0xff}, "array at offset 0"},
	{"map32 of 4G entries", []byte{0xdf, 0xff, 0xff, 0xff, 0xff}, "map at offset 0 declares 4294967295 entries"},
	{"map16 of 3 entries in 5 bytes", []byte{0xde, 0x00, 0x03, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0}, "map at offset 0 declares 3 entries"},
	{"str32 of 4 GiB", []byte{0xdb, 0xff, 0xff, 0xff, 0xff}, "str at offset 0 declares 4294967295 bytes"},
	{"str8 of 200 bytes, 2 present", []byte{0xd9, 200, 'a', 'b'}, "str at offset 0 declares 200 bytes"},
	{"bin32 of 4 GiB", []byte{0xc6, 0xff, 0xff, 0xff, 0xff, 0x00}, "bin at offset 0 declares 4294967295 bytes"},
	{"ext32 of 4 GiB", []byte{0xc9, 0xff, 0xff, 0xff, 0xff, 0x01}, "ext at offset 0 declares 4294967295 bytes"},
	{"ext32 timestamp of 4 GiB", []byte{0xc9, 0xff, 0xff, 0xff, 0xff, 0xff}, "ext at offset 0"},
	{"fixext16 cut short", []byte{0xd8, 0xff, 1, 2, 3}, "ext at offset 0 needs 17 bytes"},
	{"map whose value is a str32 of 4 GiB", []byte{0x81, 0xa1, 'k', 0xdb, 0xff, 0xff, 0xff, 0xff}, "str at offset 3"},
	{"array holding a map32 of 4G entries", []byte{0x91, 0xdf, 0xff, 0xff, 0xff, 0xff}, "map at offset 1"},
	{"nested headers, each claiming what remains", nestedClaims(200), "array at offset 5 declares 990 elements"},
	{"array of 100000 array32 headers of 1G elements", cat([]byte{0xdd, 0x00, 0x01, 0x86, 0xa0}, repeat([]byte{0xdd, 0x40, 0, 0, 0}, 100000)), "array at offset 5"},
	{"100000 nested fixarrays", append(repeat([]byte{0x91}, 100000), 0xc0), "nested deeper than 1000 levels"},
	{"100000 nested fixmaps", append(repeat([]byte{0x81, 0xa0}, 100000), 0xc0), "nested deeper than 1000 levels"},
	{"100000 nested array16 headers", append(repeat([]byte{0xdc, 0x00, 0x01}, 100000), 0xc0), "nested deeper than 1000 levels"},
	{"never-used byte 0xc1", []byte{0x92, 0x01, 0xc1}, "byte 0xc1 at offset 2"},
	{"truncated header", []byte{0x91, 0xdd, 0x00}, "truncated"},
	{"trailing bytes", []byte{0x90, 0x01}, "1 bytes after the msgpack value"},
}

// decodeTarget is a pointer hostile payloads are decoded into, and what
// decoding may allocate per input byte into it.
type decodeTarget struct {
	new     func() any
	perByte uint64
}

// genericPerByte bounds the allocations per input byte of decoding into
// plain Go values: the smallest msgpack and JSON values cost the most (a
// 2-byte nested map is a Go map of a few hundred bytes).
const genericPerByte = 256

// typedPerByte bounds it for typed slices and maps: an element of one
// input byte (nil) costs its Go size, and the libraries may allocate a
// slice twice while growing it.
const typedPerByte = genericPerByte + 4*uint64(unsafe.Sizeof(bigStruct{}))

// decodeTargets are the generic targets every command uses and typed ones
// (Payload.Decode).
func decodeTargets() map[string]decodeTarget {
	return map[string]decodeTarget{
		"*any":            {func() any { return new(any) }, genericPerByte},
		"*map[string]any": {func() any { return new(map[string]any) }, genericPerByte},
		"*[]any":          {func() any { return new([]any) }, genericPerByte},
		"*[]bigStruct":    {func() any { return new([]bigStruct) }, typedPerByte},
		"*bigStruct":      {func() any { return new(bigStruct) }, typedPerByte},
		"*map[string]int": {func() any { return new(map[string]int) }, typedPerByte},
		"*[]string":       {func() any { return new([]string) }, typedPerByte},
		"*string":         {func() any { return new(string) }, genericPerByte},
		"*[]byte":         {func() any { return new([]byte) }, genericPerByte},
	}
}

// allocated returns the bytes f allocates on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// allocBound is what decoding n bytes into target may allocate: a small
// multiple of n, plus a constant for the decoders' fixed buffers.
func allocBound(n int, target decodeTarget) uint64 { return target.perByte*uint64(n) + 256<<10 }

func TestMsgpackHostileLengthsAreUndecodable(t *testing.T) {
	for _, c := range hostileMsgpack {
		for tname, target := range decodeTargets() {
			t.Run(c.name+"/"+tname, func(t *testing.T) {
				var err error
				got := allocated(func() { err = (Msgpack{}).Unmarshal(c.raw, target.new()) })
				if !errors.Is(err, ErrUndecodable) {
					t.Fatalf("err = %v, want ErrUndecodable", err)
				}
				if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "offset") {
					t.Errorf("err = %q, want it to name %q and an offset", err, c.want)
				}
				if limit := allocBound(len(c.raw), target); got > limit {
					t.Errorf("decoding %d bytes allocated %d bytes, over %d", len(c.raw), got, limit)
				}
			})
		}
	}
}

// heavyMsgpack are valid payloads that make the decoder allocate the most
// per input byte.
func heavyMsgpack() map[string][]byte {
	distinctKeys := []byte{0xde, 0x40, 0x00} // map16 of 16384 entries
	for i := range 0x4000 {
		distinctKeys = append(distinctKeys, 0xd1, byte(i>>8), byte(i), 0xc0)
	}
	return map[string][]byte{
		"65535 nils":                     cat([]byte{0xdc, 0xff, 0xff}, repeat([]byte{0xc0}, 0xffff)),
		"65535 one-byte strings":         cat([]byte{0xdc, 0xff, 0xff}, repeat([]byte{0xa1, 'x'}, 0xffff)),
		"65535 empty maps":               cat([]byte{0xdc, 0xff, 0xff}, repeat([]byte{0x80}, 0xffff)),
		"65535 empty arrays":             cat([]byte{0xdc, 0xff, 0xff}, repeat([]byte{0x90}, 0xffff)),
		"65535 timestamps":               cat([]byte{0xdc, 0xff, 0xff}, repeat([]byte{0xd6, 0xff, 0, 0, 0, 1}, 0xffff)),
		"999 nested fixarrays":           append(repeat([]byte{0x91}, 999), 0xc0),
		"999 nested fixmaps":             append(repeat([]byte{0x81, 0xa0}, 999), 0xc0),
		"map of 16384 integer keys":      distinctKeys,
		"999 maps nested as keys":        cat(repeat([]byte{0x81}, 999), []byte{0xc0, 0xc0}, repeat([]byte{0xc0}, 998)),
		"999 arrays nested in a key":     cat([]byte{0x81}, repeat([]byte{0x91}, 998), []byte{0xc0, 0xc0}),
		"1 MiB str":                      cat([]byte{0xdb, 0x00, 0x10, 0x00, 0x00}, repeat([]byte{'a'}, 1<<20)),
		"str32 holding 100000 brackets":  MsgpackJSONString(repeat([]byte{'['}, 100000)),
		"str32 holding deep JSON":        MsgpackJSONString(cat(repeat([]byte{'['}, 9000), repeat([]byte{']'}, 9000))),
		"JSON text nested 9000 levels":   cat(repeat([]byte(`{"":`), 9000), []byte("1"), repeat([]byte{'}'}, 9000)),
		"JSON text of 100000 small ints": cat([]byte("["), repeat([]byte("1,"), 100000), []byte("1]")),
	}
}

func TestMsgpackDecodeAllocatesInProportion(t *testing.T) {
	for name, raw := range heavyMsgpack() {
		for tname, target := range decodeTargets() {
			t.Run(name+"/"+tname, func(t *testing.T) {
				got := allocated(func() { _ = (Msgpack{}).Unmarshal(raw, target.new()) })
				if limit := allocBound(len(raw), target); got > limit {
					t.Errorf("decoding %d bytes allocated %d bytes (%.0f per byte), over %d", len(raw), got, float64(got)/float64(len(raw)), limit)
				}
			})
		}
	}
}

// TestMsgpackCheckAgreesWithLibrary: what the check accepts the library
// reads whole, and the valid forms of every type pass.
func TestMsgpackCheckAgreesWithLibrary(t *testing.T) {
	values := []any{
		nil, true, false, 0, -1, 127, -32, 128, -33, 1 << 15, 1 << 31, 1 << 40, -1 << 40, uint64(1) << 63,
		float32(1.5), 2.5, "", "x", strings.Repeat("s", 31), strings.Repeat("s", 32), strings.Repeat("s", 300), strings.Repeat("s", 70000),
		[]byte{}, []byte{1}, make([]byte, 300), make([]byte, 70000),
		[]any{}, []any{1, "a"}, make([]any, 16), make([]any, 70000),
		map[string]any{}, map[string]any{"a": map[string]any{"b": []any{1}}},
		msgpack.RawMessage{0xd4, 0x05, 0x01}, msgpack.RawMessage{0xc7, 0x03, 0x05, 1, 2, 3},
		msgpack.RawMessage{0xc8, 0x00, 0x01, 0x05, 1}, msgpack.RawMessage{0xc9, 0, 0, 0, 0, 0x05},
		msgpack.RawMessage{0xd5, 1, 1, 2}, msgpack.RawMessage{0xd7, 1, 1, 2, 3, 4, 5, 6, 7, 8}, msgpack.RawMessage{0xd8, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
	}
	for _, v := range values {
		raw := mustMsgpack(v)
		if err := checkMsgpack(raw); err != nil {
			t.Errorf("%.20x: %v", raw, err)
		}
	}
	// The deepest nesting allowed, and one more.
	if err := checkMsgpack(append(repeat([]byte{0x91}, MaxDepth), 0xc0)); err != nil {
		t.Errorf("%d levels: %v", MaxDepth, err)
	}
	if err := checkMsgpack(append(repeat([]byte{0x91}, MaxDepth+1), 0xc0)); !errors.Is(err, errTooDeep) {
		t.Errorf("%d levels: %v, want errTooDeep", MaxDepth+1, err)
	}
	// Exactly enough bytes for what is declared, and one fewer.
	exact := cat([]byte{0xdf, 0, 0, 0, 2}, []byte{0xc0, 0xc0, 0xc0, 0xc0})
	if err := checkMsgpack(exact); err != nil {
		t.Errorf("%x: %v", exact, err)
	}
	if err := checkMsgpack(exact[:len(exact)-1]); err == nil {
		t.Errorf("%x accepted", exact[:len(exact)-1])
	}
}

// The reported message decodes to an error, everywhere it can arrive.
func TestFiveByteArrayHeaderIsUndecodable(t *testing.T) {
	raw := []byte{0xdd, 0xff, 0xff, 0xff, 0xff}
	p := NewPayload(raw, nil)
	if _, err := p.Data(); !errors.Is(err, ErrUndecodable) || !strings.Contains(err.Error(), "offset 0") {
		t.Errorf("Data: %v", err)
	}
	if !bytes.Equal(p.Raw, raw) {
		t.Errorf("raw changed: %x", p.Raw)
	}
	// As the JSON codec reads it (a peer that sends it as a JSON string).
	if err := (JSON{}).Unmarshal(raw, new(any)); !errors.Is(err, ErrUndecodable) {
		t.Errorf("JSON: %v", err)
	}
	var s struct {
		D json.RawMessage `json:"d"`
	}
	if err := (Msgpack{}).Unmarshal(raw, &s); !errors.Is(err, ErrUndecodable) {
		t.Errorf("struct: %v", err)
	}
}

func FuzzCheckMsgpack(f *testing.F) {
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x82, 0xa1, 'a', 0x01, 0xa1, 'b', 0x92, 0xc0, 0xd6, 0xff, 0, 0, 0, 1})
	f.Add([]byte{0xc7, 0x02, 0x05, 0xaa, 0xbb})
	f.Add([]byte{0xde, 0x00, 0x01, 0xa0, 0xdc, 0x00, 0x01, 0xc0})
	f.Add(nestedClaims(4))
	f.Fuzz(func(t *testing.T, raw []byte) {
		err := checkMsgpack(raw)
		r := bytes.NewReader(raw)
		skipErr := msgpack.NewDecoder(r).Skip()
		libOK := skipErr == nil && r.Len() == 0
		switch {
		case err == nil && !libOK:
			t.Fatalf("check accepts % x, library: %v, %d bytes left", raw, skipErr, r.Len())
		case err != nil && libOK && !errors.Is(err, errTooDeep):
			t.Fatalf("check rejects % x (%v), the library reads it whole", raw, err)
		}
		if err == nil {
			// Accepted: decoding may fail (an unknown ext type) but must
			// not panic, and every target gets the same verdict.
			var v any
			_ = (Msgpack{}).Unmarshal(raw, &v)
			var s bigStruct
			_ = (Msgpack{}).Unmarshal(raw, &s)
			// The key text writer reads exactly one value.
			if _, rest := appendMsgpackText(nil, raw); len(rest) != 0 {
				t.Fatalf("% x: the text writer left %d bytes", raw, len(rest))
			}
		}
	})
}

// A msgpack timestamp of any year decodes, and prints as JSON.
func TestMsgpackTimestampPrints(t *testing.T) {
	// timestamp 96: 12 bytes, nanoseconds then seconds; year 10000 and later
	// is where encoding/json gives up on time.Time.
	sec := uint64(253402300800) // 10000-01-01T00:00:00Z
	raw := []byte{0xc7, 12, 0xff, 0, 0, 0, 5}
	for i := 7; i >= 0; i-- {
		raw = append(raw, byte(sec>>(8*i)))
	}
	var v any
	if err := (Msgpack{}).Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(JSONValue(map[string]any{"t": v}))
	if err != nil || string(out) != `{"t":"10000-01-01T00:00:00.000000005Z"}` {
		t.Errorf("%s, %v", out, err)
	}
}

// Keys that are arrays or maps become text once, from their bytes.
func TestMsgpackContainerKeys(t *testing.T) {
	raw := cat(
		[]byte{0x84},
		[]byte{0x92, 0x01, 0xa1, 'a'}, []byte{0x01}, // [1,"a"]: 1
		[]byte{0x81, 0xa1, 'k', 0x81, 0xa1, 'x', 0xc0}, []byte{0x02}, // {"k":{"x":nil}}: 2
		[]byte{0x81, 0xd0, 0xfe, 0xc3}, []byte{0x03}, // {-2:true}: 3
		[]byte{0x91, 0xd4, 0x05, 0x07}, []byte{0x04}, // [ext 5]: 4
	)
	var v any
	if err := (Msgpack{}).Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{`[1,"a"]`: int64(1), `{"k":{"x":null}}`: int64(2), `{-2:true}`: int64(3), `[{"ext":5,"data":"Bw=="}]`: int64(4)}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("got %#v", v)
	}
}
