package hub

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// FuzzDecodeCommand: any bytes decode to a command or an error wrapping
// ErrBadCommand or ErrTooLarge, never a panic; a decoded command encodes
// and decodes again to the same action, key and payload.
func FuzzDecodeCommand(f *testing.F) {
	for _, s := range []string{
		`{"action":"PING","body":{"n":1},"key":"k"}`,
		`{"action":"drs.register","body":{"group":"g","client":"c"}}`,
		`{"action":"X","body_base64":"wf8A"}`,
		`{"action":"X","body":null}`,
		`{"action":1}`, `[]`, `{`, ``, `{"action":"X","body":{"a":"\u0000"},"headers":{"a":"b"},"deliveries":3}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data, 1<<16)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v wraps neither ErrBadCommand nor ErrTooLarge", err)
			}
			return
		}
		again, err := DecodeCommand(c.Encode(), 0)
		if err != nil {
			t.Fatalf("re-decoding %q: %v", c.Encode(), err)
		}
		raw1, j1 := c.Payload()
		raw2, j2 := again.Payload()
		if again.Action != c.Action || again.Key != c.Key || j1 != j2 || (!j1 && !bytes.Equal(raw1, raw2)) {
			t.Fatalf("round trip changed %+v into %+v", c, again)
		}
	})
}

// FuzzTCPFrames: the line reader returns each line within the limit,
// reports longer ones with ErrTooLarge and keeps reading after them.
func FuzzTCPFrames(f *testing.F) {
	f.Add([]byte("{\"action\":\"a\"}\n\n{\"action\":\"b\"}\r\n"), 8)
	f.Add([]byte(strings.Repeat("x", 100)+"\n{}\n"), 10)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		if max < 1 || max > 1<<12 {
			return
		}
		fr := &tcpFramer{r: bufio.NewReaderSize(bytes.NewReader(data), 16), max: max}
		for range len(data) + 1 {
			line, err := fr.ReadFrame()
			if err != nil {
				if errors.Is(err, ErrTooLarge) {
					continue
				}
				return
			}
			if len(line) > max+2 {
				t.Fatalf("line of %d bytes over the limit %d", len(line), max)
			}
			if bytes.ContainsAny(line, "\n") {
				t.Fatalf("line %q holds a newline", line)
			}
		}
	})
}

func TestDecodeCommandErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`[1]`, "not a JSON object"},
		{`{"key":"k"}`, "no action"},
		{`{"action":"X","body":{},"body_base64":"AA=="}`, "both body and body_base64"},
		{`{"action":"X","body_base64":"!!"}`, "body_base64"},
		{`{"action":5,"key":"k"}`, "bad command"},
		{`{"action":"X","body":}`, "bad command"}, // a syntax error: no key to recover
	} {
		c, err := DecodeCommand([]byte(tc.in), 100)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.in, err, tc.want)
		}
		if strings.Contains(tc.in, `"key":"k"`) && c.Key != "k" {
			t.Errorf("%s: key %q not recovered", tc.in, c.Key)
		}
	}
	if _, err := DecodeCommand([]byte(`{"action":"`+strings.Repeat("x", 200)+`"}`), 100); !errors.Is(err, ErrTooLarge) {
		t.Errorf("large: %v", err)
	}
}

// FuzzEncode: Encode writes what encoding/json would: the same value once
// parsed, for any strings in any field.
func FuzzEncode(f *testing.F) {
	f.Add("PING", "k\n\"\\", "id\x00", "h\u2028", "\xff\xfe", 3)
	f.Fuzz(func(t *testing.T, action, key, id, hk, hv string, deliveries int) {
		c := Command{Action: action, Key: key, ID: id, Sub: hv, BodyBase64: hk, Deliveries: deliveries, Call: deliveries%2 == 0,
			Headers: map[string]string{hk: hv, "b": key}, Body: json.RawMessage(`{"a":[1,"x"]}`)}
		want, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		got := c.Encode()
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("Encode wrote invalid JSON %q: %v", got, err)
		}
		_ = json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("Encode %q, encoding/json %q", got, want)
		}
	})
}
