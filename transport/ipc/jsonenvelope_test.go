package ipc

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

var jsonSeeds = []string{
	`{"event":"MESSAGE_CREATE","id":"a-1","data":{"content":"hi","n":[1,2.5e-3,-0,true,false,null]}}`,
	`{"event":"E","reply_to":"x","headers":{"k":"v"},"data_base64":"wf8Aew=="}`,
	`  {"data" : "x" , "event" : "\u0065\n\"" , "extra" : [ { } , [ ] ] }  `,
	`{"event":"E","event":"F","data":1,"data":2}`,
	`{"event":null,"data":1}`,
	`{"event":"E","id":null,"data_base64":null}`,
	`{"event":"E","id":7}`,
	`{"EVENT":"E","data":1}`,
	`{"event":"\xff\xfe","data":"\xff"}`,
	`{"event":"E","data":01}`,
	`{"event":"E","data":1.}`,
	`{"event":"E","data":"\u12"}`,
	`{"event":"E","data":"\x01"}`,
	`{"event":"E",}`,
	`{"event":"E"}x`,
	`[1,2]`,
	`"E"`,
	`{}`,
	``,
	`{"event":"E","data":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
}

// oracleEnvelope parses a line with encoding/json, with exact field names.
func oracleEnvelope(line []byte) (*envelope, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		return nil, err
	}
	if fields == nil {
		return nil, errors.New("null")
	}
	e := &envelope{}
	var event, b64 *string
	for _, f := range []struct {
		name string
		dst  any
	}{{"event", &event}, {"id", &e.id}, {"reply_to", &e.replyTo}, {"data_base64", &b64}, {"headers", &e.headers}} {
		if raw, ok := fields[f.name]; ok {
			if err := json.Unmarshal(raw, f.dst); err != nil {
				return nil, err
			}
		}
	}
	if event == nil || *event == "" {
		return nil, errors.New("no event")
	}
	e.event = *event
	switch {
	case b64 != nil:
		raw, err := decodeBase64(*b64)
		if err != nil {
			return nil, err
		}
		e.data, e.opaque = raw, true
	case fields["data"] != nil:
		e.data = fields["data"]
	default:
		e.data = jsonNull
	}
	return e, nil
}

// FuzzParseJSONEnvelope: the hand-written parser agrees with
// encoding/json.
func FuzzParseJSONEnvelope(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		got, err := parseJSONEnvelope(line)
		want, werr := oracleEnvelope(line)
		if (err == nil) != (werr == nil) {
			t.Fatalf("%q: parser error %v, encoding/json error %v", line, err, werr)
		}
		if err != nil {
			return
		}
		if got.event != want.event || got.id != want.id || got.replyTo != want.replyTo || got.opaque != want.opaque ||
			!bytes.Equal(got.data, want.data) || !reflect.DeepEqual(got.headers, want.headers) {
			t.Fatalf("%q:\nparser        %+v\nencoding/json %+v", line, got, want)
		}
	})
}
