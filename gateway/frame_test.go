package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

// oraclePayload is json.Unmarshal's view of a payload, keys matched
// exactly: encoding/json picks the members, and each known one is decoded
// into its field.
func oraclePayload(raw []byte) (discord.Payload, error) {
	var p discord.Payload
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return p, err
	}
	if members == nil {
		return p, errNotObjectOracle
	}
	for key, dst := range map[string]any{"op": &p.Op, "s": &p.S, "t": &p.T} {
		if v, ok := members[key]; ok {
			if err := json.Unmarshal(v, dst); err != nil {
				return p, err
			}
		}
	}
	if v, ok := members["d"]; ok {
		p.D = v
	}
	return p, nil
}

// errNotObjectOracle is the oracle's error for a JSON null.
var errNotObjectOracle = errors.New("null is not a payload")

var payloadSeeds = []string{
	`{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250,"_trace":["gw-1"]}}`,
	`{"t":"MESSAGE_CREATE","s":42,"op":0,"d":{"content":"hi \u00e9 \ud83d\ude00","id":"1"}}`,
	`{"op":11}`,
	`{"op":9,"d":false}`,
	`{"op":"1"}`,
	`{"op":1.5}`,
	`{"op":0,"s":-3,"t":"\u0041","t":"B"}`,
	`{"\u006fp":7,"d":null}`,
	`{"op":0,"t":7}`,
	`{"op":99999999999999999999}`,
	` {"op":1} `,
	`{"op":1}x`,
	`[1]`,
	`null`,
}

// FuzzParsePayload: the one-pass payload parser agrees with encoding/json
// (keys matched exactly) on what it accepts and on op, s, t and d.
func FuzzParsePayload(f *testing.F) {
	for _, s := range payloadSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := parsePayload(raw)
		want, werr := oraclePayload(raw)
		if (err == nil) != (werr == nil) {
			t.Fatalf("%q: parsePayload error %v, encoding/json error %v", raw, err, werr)
		}
		if err != nil {
			return
		}
		if !reflect.DeepEqual(got, want) && !(len(got.D) == 0 && len(want.D) == 0 && got.Op == want.Op && got.T == want.T && reflect.DeepEqual(got.S, want.S)) {
			t.Fatalf("%q:\nparsePayload  %+v\nencoding/json %+v", raw, got, want)
		}
	})
}

func TestParsePayloadDIsASliceOfTheFrame(t *testing.T) {
	raw := []byte(`{"t":"X","s":1,"op":0,"d":{"a":` + strings.Repeat("1", 100) + `}}`)
	p, err := parsePayload(raw)
	if err != nil {
		t.Fatal(err)
	}
	if &p.D[0] != &raw[bytes.Index(raw, []byte(`{"a"`))] {
		t.Error("d was copied")
	}
}

func TestParseGuildRef(t *testing.T) {
	for in, want := range map[string]guildRef{
		`{"id":"41771983423143937","unavailable":true,"name":"x"}`: {ID: "41771983423143937", Unavailable: true},
		`{"members":[{"id":"9"}],"id":"1"}`:                        {ID: "1"},
		`{"id":"\u0031"}`:                                          {ID: "1"},
	} {
		got, err := parseGuildRef([]byte(in))
		if err != nil || got != want {
			t.Errorf("%s: %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{`{"id":1}`, `{"id":"1","unavailable":"yes"}`, `{"id":"1"`} {
		if _, err := parseGuildRef([]byte(in)); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}
