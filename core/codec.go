package core

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// ErrUndecodable marks a payload that its codec cannot read. The message
// that carries it is still delivered, with its raw bytes, so nothing is lost.
var ErrUndecodable = errors.New("undecodable payload")

// ErrUnknownCodec is returned by CodecByName for a name it does not know.
var ErrUnknownCodec = errors.New("unknown codec")

// Raw is a payload that is already encoded: codecs write it to the wire as
// it is. Use it to publish bytes produced elsewhere.
type Raw []byte

// LegacyJSON is JSON text that a codec writes in spec-tacles/gateway's
// form: Msgpack as a msgpack str holding the text (MsgpackJSONString),
// JSON as the text itself. It is the only form of SEND spec-tacles/gateway
// reads, and every reader of these codecs decodes it back to the JSON
// value. It is honoured as the value published, not nested inside one;
// the text must be valid JSON.
type LegacyJSON []byte

// MarshalJSON returns the text itself, so that JSON encoders write the
// value it holds.
func (l LegacyJSON) MarshalJSON() ([]byte, error) {
	if !json.Valid(l) {
		return nil, errors.New("core.LegacyJSON holds invalid JSON")
	}
	return l, nil
}

// Codec turns values into payload bytes and back.
type Codec interface {
	// Name is the codec's configuration name ("msgpack", "json").
	Name() string
	// Marshal encodes v. A Raw value is returned unchanged.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes raw into v, a pointer. Decoding into *any yields
	// map[string]any, []any, string, bool, int64, uint64, float64, []byte,
	// time.Time (the msgpack timestamp extension) or nil. Failures wrap
	// ErrUndecodable.
	Unmarshal(raw []byte, v any) error
}

// CodecByName returns the codec configured by name: "msgpack" (the default
// when name is empty) or "json".
func CodecByName(name string) (Codec, error) {
	switch strings.ToLower(name) {
	case "", "msgpack":
		return Msgpack{}, nil
	case "json":
		return JSON{}, nil
	}
	return nil, fmt.Errorf("%w %q (want msgpack or json)", ErrUnknownCodec, name)
}

// Msgpack is the default codec, as every existing Spectacles peer writes
// msgpack. Reading is lenient so that it accepts what all peers send: a
// msgpack map, array or scalar; a msgpack str or bin whose content is a
// JSON object or array (spec-tacles/gateway publishes dispatches that way),
// which is decoded as JSON; and plain JSON text.
type Msgpack struct{}

// Name returns "msgpack".
func (Msgpack) Name() string { return "msgpack" }

// Marshal encodes v as msgpack. Struct fields use their msgpack tag, else
// their json tag. json.RawMessage values are re-encoded as msgpack.
func (Msgpack) Marshal(v any) ([]byte, error) {
	switch x := v.(type) {
	case Raw:
		return x, nil
	case LegacyJSON:
		if !json.Valid(x) {
			return nil, errors.New("msgpack encode: core.LegacyJSON holds invalid JSON")
		}
		return MsgpackJSONString(x), nil
	case json.RawMessage:
		parsed, err := DecodeJSON(x)
		if err != nil {
			return nil, err
		}
		v = parsed
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetCustomStructTag("json")
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("msgpack encode: %w", err)
	}
	return buf.Bytes(), nil
}

// Unmarshal decodes raw into v, accepting every form listed on Msgpack.
// The bytes are checked before they are decoded, so that declared lengths
// cannot make decoding allocate more than a small multiple of len(raw), and
// nesting is bounded by MaxDepth: a payload that fails the check is
// undecodable, with an error naming what is wrong and its offset. JSON
// from peers is read as encoding/json reads it (invalid UTF-8 and lone
// surrogates become U+FFFD, integers beyond 64 bits become float64), so
// that their messages stay readable.
func (Msgpack) Unmarshal(raw []byte, v any) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: empty payload", ErrUndecodable)
	}
	// A msgpack str or bin holding JSON: decode the JSON.
	if inner, ok := msgpackStringContent(raw); ok {
		if looksLikeJSONDocument(inner) {
			if err := unmarshalJSON(inner, v, false); err == nil {
				return nil
			}
		}
	}
	err := checkMsgpack(raw)
	if err == nil {
		if err = decodeMsgpack(raw, v); err == nil {
			return nil
		}
	}
	// Plain JSON text (the protocol document's encoding).
	if json.Valid(raw) {
		return unmarshalJSON(raw, v, false)
	}
	return fmt.Errorf("%w: not msgpack (%v) and not JSON", ErrUndecodable, err)
}

// JSON encodes payloads as JSON text, as the protocol document describes.
type JSON struct{}

// Name returns "json".
func (JSON) Name() string { return "json" }

// Marshal encodes v as JSON.
func (JSON) Marshal(v any) ([]byte, error) {
	if r, ok := v.(Raw); ok {
		return r, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("json encode: %w", err)
	}
	return b, nil
}

// Unmarshal decodes JSON text into v. Numbers decoded into *any are int64
// when integral, else float64. Nothing is silently changed: invalid UTF-8,
// a lone surrogate escape, a number beyond float64's range, an integer
// beyond 64 bits and nesting deeper than MaxDepth are errors (wrapping
// ErrUndecodable) that name the byte offset.
func (JSON) Unmarshal(raw []byte, v any) error {
	return unmarshalJSON(raw, v, true)
}

// DecodeJSON parses JSON text into plain Go values, keeping integers as
// int64 (uint64 when too large) instead of float64, so that re-encoding
// them as msgpack keeps them integers. It is as strict as JSON.Unmarshal:
// what encoding/json would silently change is an error.
func DecodeJSON(data []byte) (any, error) {
	var v any
	if err := unmarshalJSON(data, &v, true); err != nil {
		return nil, err
	}
	return v, nil
}

// unmarshalJSON decodes the one JSON value data holds into v. strict
// rejects what checkJSONStrict finds; otherwise numbers that do not fit
// become the nearest float64 (or an infinity).
func unmarshalJSON(data []byte, v any, strict bool) error {
	p, isAny := v.(*any)
	dec := json.NewDecoder(bytes.NewReader(data))
	if isAny {
		dec.UseNumber()
	}
	var out any
	target := v
	if isAny {
		target = &out
	}
	if err := dec.Decode(target); err != nil {
		return fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	if rest := bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return fmt.Errorf("%w: data after the JSON value, at offset %d", ErrUndecodable, len(data)-len(rest))
	}
	if strict {
		if err := checkJSONStrict(data); err != nil {
			return fmt.Errorf("%w: %w", ErrUndecodable, err)
		}
	}
	if isAny {
		*p = normalizeNumbers(out)
	}
	return nil
}

func normalizeNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			if i == 0 && strings.HasPrefix(string(x), "-") {
				// "-0": an integer cannot keep the sign; a float can,
				// and encodes back to "-0".
				return math.Copysign(0, -1)
			}
			return i
		}
		if u, err := parseUint(string(x)); err == nil {
			return u
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = normalizeNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalizeNumbers(e)
		}
	}
	return v
}

func parseUint(s string) (uint64, error) {
	var u uint64
	if s == "" {
		return 0, errors.New("empty")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, errors.New("not an unsigned integer")
		}
		d := uint64(c - '0')
		if u > (math.MaxUint64-d)/10 {
			return 0, errors.New("overflow")
		}
		u = u*10 + d
	}
	return u, nil
}

func decodeMsgpack(raw []byte, v any) error {
	r := bytes.NewReader(raw)
	dec := msgpack.NewDecoder(r)
	dec.SetCustomStructTag("json")
	dec.SetMapDecoder(decodeStringKeyedMap)
	if err := dec.Decode(v); err != nil {
		return err
	}
	if r.Len() != 0 {
		return fmt.Errorf("%d bytes left after the msgpack value", r.Len())
	}
	switch p := v.(type) {
	case *any:
		*p = widenNumbers(*p)
	case *map[string]any:
		widenNumbers(*p)
	case *[]any:
		widenNumbers(*p)
	}
	return nil
}

// widenNumbers turns the sized integers and floats msgpack decodes into
// int64 (uint64 above its range) and float64, so that decoded values do not
// depend on how compactly the peer encoded them. Binary stays []byte.
func widenNumbers(v any) any {
	switch x := v.(type) {
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
		return x
	case float32:
		return float64(x)
	case map[string]any:
		for k, e := range x {
			x[k] = widenNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = widenNumbers(e)
		}
	}
	return v
}

// decodeStringKeyedMap decodes any msgpack map into map[string]any, writing
// non-string keys in decimal or fmt's default form, and keys that are
// arrays or maps as JSON-like text (see appendMsgpackText), so that every
// decoded value can be re-encoded as JSON.
func decodeStringKeyedMap(d *msgpack.Decoder) (any, error) {
	n, err := d.DecodeMapLen()
	if err != nil {
		return nil, err
	}
	if n == -1 {
		return nil, nil
	}
	m := make(map[string]any, min(n, 1024))
	for range n {
		code, err := d.PeekCode()
		if err != nil {
			return nil, err
		}
		if msgpcode.IsFixedMap(code) || msgpcode.IsFixedArray(code) || code >= msgpcode.Array16 && code <= msgpcode.Map32 {
			raw, err := d.DecodeRaw()
			if err != nil {
				return nil, err
			}
			val, err := d.DecodeInterface()
			if err != nil {
				return nil, err
			}
			text, _ := appendMsgpackText(nil, raw)
			m[string(text)] = val
			continue
		}
		k, err := d.DecodeInterface()
		if err != nil {
			return nil, err
		}
		val, err := d.DecodeInterface()
		if err != nil {
			return nil, err
		}
		switch key := k.(type) {
		case string:
			m[key] = val
		case []byte:
			m[string(key)] = val
		default:
			m[fmt.Sprint(key)] = val
		}
	}
	return m, nil
}

// msgpackStringContent returns the content of raw when raw is exactly one
// msgpack str or bin value.
func msgpackStringContent(raw []byte) ([]byte, bool) {
	c := raw[0]
	var n, hdr int
	switch {
	case msgpcode.IsFixedString(c):
		n, hdr = int(c&msgpcode.FixedStrMask), 1
	case c == msgpcode.Str8 || c == msgpcode.Bin8:
		if len(raw) < 2 {
			return nil, false
		}
		n, hdr = int(raw[1]), 2
	case c == msgpcode.Str16 || c == msgpcode.Bin16:
		if len(raw) < 3 {
			return nil, false
		}
		n, hdr = int(raw[1])<<8|int(raw[2]), 3
	case c == msgpcode.Str32 || c == msgpcode.Bin32:
		if len(raw) < 5 {
			return nil, false
		}
		n, hdr = int(raw[1])<<24|int(raw[2])<<16|int(raw[3])<<8|int(raw[4]), 5
	default:
		return nil, false
	}
	if len(raw) != hdr+n {
		return nil, false
	}
	return raw[hdr:], true
}

func looksLikeJSONDocument(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && (b[0] == '{' || b[0] == '[')
}

// MsgpackJSONString wraps JSON text in a msgpack str header the way
// spec-tacles/gateway does (fixstr under 32 bytes, else str16 or str32,
// never str8), so that consumers written for it keep working.
func MsgpackJSONString(jsonText []byte) []byte {
	n := len(jsonText)
	var out []byte
	switch {
	case n < 32:
		out = make([]byte, 0, 1+n)
		out = append(out, msgpcode.FixedStrLow|byte(n))
	case n <= math.MaxUint16:
		out = make([]byte, 0, 3+n)
		out = append(out, msgpcode.Str16, byte(n>>8), byte(n))
	default:
		out = make([]byte, 0, 5+n)
		out = append(out, msgpcode.Str32, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(out, jsonText...)
}

// JSONValue makes a decoded payload encodable as JSON: byte strings (a
// msgpack bin, or a string that is not valid UTF-8, as spec-tacles/go
// writes []byte) become text when they are valid UTF-8 and standard base64
// otherwise, as values and as map keys; non-string map keys become
// strings, NaN and infinities become strings, and times become RFC 3339
// text in UTC (any year; encoding/json fails outside 0 to 9999).
func JSONValue(v any) any {
	switch x := v.(type) {
	case []byte:
		return textOrBase64(string(x))
	case string:
		return textOrBase64(x)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[textOrBase64(k)] = JSONValue(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			key, ok := JSONValue(k).(string)
			if !ok {
				key = fmt.Sprint(k)
			}
			out[key] = JSONValue(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = JSONValue(e)
		}
		return out
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return strconv.FormatFloat(float64(x), 'g', -1, 32)
		}
	}
	return v
}

// textOrBase64 returns s when it is valid UTF-8, else its bytes in standard
// base64: encoding/json would write U+FFFD for each bad byte.
func textOrBase64(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return base64.StdEncoding.EncodeToString([]byte(s))
}
