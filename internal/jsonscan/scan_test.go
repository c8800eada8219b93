package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var seeds = []string{
	`{"event":"MESSAGE_CREATE","id":"a-1","data":{"content":"hi","n":[1,2.5e-3,-0,true,false,null]}}`,
	`{"t":"GUILD_CREATE","s":2,"op":0,"d":{"id":"41771983423143937","unavailable":false}}`,
	`{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250,"_trace":["x"]}}`,
	`  {"data" : "x" , "event" : "\u0065\n\"" , "extra" : [ { } , [ ] ] }  `,
	`{"event":"E","event":"F","data":1,"data":2}`,
	`{"\u006fp":1}`,
	`{"event":"\xff\xfe","data":"\xff"}`,
	`{"event":"E","data":01}`,
	`{"event":"E","data":1.}`,
	`{"event":"E","data":"\u12"}`,
	`{"event":"E","data":"\x01"}`,
	`{"event":"E",}`,
	`{"event":"E"}x`,
	`{"a":"}"}{"b":"\"{"}`,
	`[1,2]`,
	`"E"`,
	`{}`,
	``,
	`-1.5E+10`,
	` "\ud83d\ude00" `,
	`{"event":"E","data":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
}

// FuzzValid: the scanner accepts exactly what json.Valid accepts.
func FuzzValid(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := Valid(b), json.Valid(b); got != want {
			t.Fatalf("Valid(%q) = %v, json.Valid = %v", b, got, want)
		}
	})
}

type member struct {
	Key   string
	Value string
}

// objectMembers is Object's view of b, keys decoded.
func objectMembers(b []byte) ([]member, error) {
	var ms []member
	err := Object(b, func(k []byte, esc bool, v []byte) error {
		key, err := StringValue(append(append([]byte{'"'}, k...), '"'), esc)
		if err != nil {
			return err
		}
		if !KeyIs(k, esc, key) {
			return errors.New("KeyIs disagrees with StringValue")
		}
		ms = append(ms, member{key, string(v)})
		return nil
	})
	return ms, err
}

// oracleMembers is encoding/json's view of b: its members in order.
func oracleMembers(b []byte) ([]member, bool, error) {
	if !json.Valid(b) {
		return nil, false, errors.New("invalid")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, false, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, false, nil // valid, not an object
	}
	var ms []member
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, true, err
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, true, err
		}
		ms = append(ms, member{k.(string), string(raw)})
	}
	return ms, true, nil
}

// FuzzObject: Object accepts the objects encoding/json accepts, and reports
// the same members, in order, with their exact text.
func FuzzObject(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := objectMembers(b)
		want, isObject, werr := oracleMembers(b)
		switch {
		case werr != nil:
			if err == nil {
				t.Fatalf("%q: Object accepted what encoding/json refuses (%v)", b, werr)
			}
		case !isObject:
			if !errors.Is(err, ErrNotObject) {
				t.Fatalf("%q: valid JSON that is not an object: got %v, want ErrNotObject", b, err)
			}
		case err != nil:
			t.Fatalf("%q: Object refused a valid object: %v", b, err)
		default:
			// The oracle's RawMessage is the value's text as written; ours too.
			if len(got) != len(want) || (len(got) > 0 && !reflect.DeepEqual(got, want)) {
				t.Fatalf("%q:\nObject        %q\nencoding/json %q", b, got, want)
			}
			checkObjectPrefix(t, b)
		}
	})
}

// checkObjectPrefix: ObjectPrefix finds where the valid object b ends
// whatever follows it, and refuses every text that stops before its end
// (the gateway relies on that to cut payloads from a stream).
func checkObjectPrefix(t *testing.T, b []byte) {
	t.Helper()
	want := len(strings.TrimRight(string(b), jsonSpace))
	noop := func([]byte, bool, []byte) error { return nil }
	for _, tail := range []string{"", "{", `{"op":1}`, "]]", "x"} {
		end, err := ObjectPrefix(append(slices.Clip(b), tail...), noop)
		if err != nil || end != want {
			t.Fatalf("%q followed by %q: ObjectPrefix = %d, %v; want %d", b, tail, end, err, want)
		}
	}
	for k := range want {
		if end, err := ObjectPrefix(b[:k], noop); err == nil {
			t.Fatalf("%q cut at %d: ObjectPrefix accepted it, ending at %d", b, k, end)
		}
	}
}

// jsonSpace is JSON's white space.
const jsonSpace = " \t\r\n"

// splitAll cuts a stream of values with a Splitter, fed in pieces of n bytes.
func splitAll(stream []byte, n int) ([]string, error) {
	var (
		out   []string
		s     Splitter
		start = 0
		pos   = 0
	)
	for pos < len(stream) {
		end := min(pos+n, len(stream))
		at, err := s.Scan(stream[pos:end])
		if err != nil {
			return out, err
		}
		if at < 0 {
			pos = end
			continue
		}
		out = append(out, string(stream[start:pos+at]))
		pos += at
		start = pos
		s.Reset()
	}
	if strings.Trim(string(stream[start:]), jsonSpace) != "" {
		return out, errors.New("an unfinished value")
	}
	return out, nil
}

// FuzzSplitter: fed in pieces of any size, the Splitter cuts a stream of
// valid objects and arrays exactly where json.Decoder does.
func FuzzSplitter(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s), uint8(1))
		f.Add([]byte(s+" "+s+"\n"+s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, stream []byte, piece uint8) {
		dec := json.NewDecoder(bytes.NewReader(stream))
		var want []string
		for {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				break
			}
			if raw[0] != '{' && raw[0] != '[' {
				return // the Splitter is for objects and arrays only
			}
			want = append(want, string(raw))
		}
		if _, err := dec.Token(); err == nil {
			return // the stream does not end in valid values: nothing to compare
		}
		if strings.Trim(string(stream[dec.InputOffset():]), jsonSpace) != "" {
			return
		}
		got, err := splitAll(stream, int(piece)+1)
		if err != nil {
			t.Fatalf("%q in pieces of %d: %v (decoder found %q)", stream, int(piece)+1, err, want)
		}
		for i := range got {
			got[i] = strings.TrimLeft(got[i], " \t\r\n")
		}
		if !reflect.DeepEqual(got, want) && (len(got) > 0 || len(want) > 0) {
			t.Fatalf("%q in pieces of %d:\nSplitter %q\ndecoder  %q", stream, int(piece)+1, got, want)
		}
	})
}

func TestDepth(t *testing.T) {
	deep := strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)
	if !Valid([]byte(deep)) {
		t.Error("nesting at the limit rejected")
	}
	deeper := "[" + deep + "]"
	if Valid([]byte(deeper)) || json.Valid([]byte(deeper)) {
		t.Error("nesting over the limit accepted")
	}
	var s Splitter
	if end, err := s.Scan([]byte(deep)); err != nil || end != len(deep) {
		t.Errorf("Splitter at the limit: %d, %v", end, err)
	}
	s.Reset()
	if _, err := s.Scan([]byte(deeper)); !errors.Is(err, ErrSyntax) {
		t.Errorf("Splitter over the limit: %v, want ErrSyntax", err)
	}
}

func TestSplitterRefuses(t *testing.T) {
	for _, in := range []string{`1`, `"x"`, `]`, `{}}`} {
		var s Splitter
		_, err := s.Scan([]byte(in))
		if in == `{}}` {
			// The first value ends after "{}"; the stray bracket is the next value's error.
			end, _ := (&Splitter{}).Scan([]byte(in))
			_, err = (&Splitter{}).Scan([]byte(in[end:]))
		}
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("Scan(%q): %v, want ErrSyntax", in, err)
		}
	}
}

func TestObjectStopsOnFieldError(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := Object([]byte(`{"a":1,"b":2}`), func([]byte, bool, []byte) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("Object: %v after %d fields, want stop after 1", err, n)
	}
}

func BenchmarkObject(b *testing.B) {
	payload := []byte(`{"t":"MESSAGE_CREATE","s":42,"op":0,"d":{"id":"1","content":"` + strings.Repeat("hello world ", 80) + `","nested":{"a":[1,2,3],"b":null}}}`)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Object(payload, func([]byte, bool, []byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
