package ipc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/jsonscan"
)

// envelope is one message on the wire, in either format.
type envelope struct {
	event   string
	id      string // "" on a reply, and on a peer's message that had none
	replyTo string // the id of the message this answers
	headers map[string]string
	// data is the payload: a value of the format ("data"), or, when opaque,
	// bytes that are not one ("data_base64", "data_bin").
	data   []byte
	opaque bool
}

// Field names, shared by both formats.
const (
	fieldEvent      = "event"
	fieldID         = "id"
	fieldReplyTo    = "reply_to"
	fieldHeaders    = "headers"
	fieldData       = "data"
	fieldDataBase64 = "data_base64" // JSONLines: opaque payload, standard base64
	fieldDataBin    = "data_bin"    // Msgpack: opaque payload, a bin value
)

// ---- JSON lines ----

// jsonPayload decides how raw, the bytes of a core.Raw, travels in a JSON
// line: verbatim when it is JSON (compacted when it holds line breaks); as
// the JSON text it holds when it is a msgpack str or bin whose content is
// a JSON object or array (what the gateway publishes with the msgpack
// codec, which core.Msgpack reads as that JSON); otherwise opaque.
func jsonPayload(raw []byte) (data []byte, opaque bool) {
	if jsonscan.Valid(raw) {
		return compactJSON(raw), false
	}
	if n, err := msgpackLen(raw, len(raw)); err == nil && n == len(raw) {
		if inner, ok := msgpackBytes(raw); ok && isJSONDocument(inner) {
			return compactJSON(inner), false
		}
	}
	return raw, true
}

// compactJSON removes the line breaks valid JSON may hold between tokens.
func compactJSON(raw []byte) []byte {
	if bytes.IndexByte(raw, '\n') < 0 && bytes.IndexByte(raw, '\r') < 0 {
		return raw
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return raw // unreachable for valid JSON
	}
	return buf.Bytes()
}

// isJSONDocument reports whether b is valid JSON whose value is an object
// or an array.
func isJSONDocument(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return len(t) > 0 && (t[0] == '{' || t[0] == '[') && jsonscan.Valid(b)
}

func appendJSONEnvelope(dst []byte, e *envelope) []byte {
	dst = append(dst, `{"event":`...)
	dst = appendJSONString(dst, e.event)
	if e.id != "" {
		dst = append(dst, `,"id":`...)
		dst = appendJSONString(dst, e.id)
	}
	if e.replyTo != "" {
		dst = append(dst, `,"reply_to":`...)
		dst = appendJSONString(dst, e.replyTo)
	}
	if len(e.headers) > 0 {
		dst = append(dst, `,"headers":{`...)
		for i, k := range sortedKeys(e.headers) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendJSONString(dst, e.headers[k])
		}
		dst = append(dst, '}')
	}
	if e.opaque {
		dst = append(dst, `,"data_base64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, e.data)
		dst = append(dst, '"')
	} else {
		dst = append(dst, `,"data":`...)
		dst = append(dst, e.data...)
	}
	return append(dst, "}\n"...)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// appendJSONString appends s as a JSON string, as encoding/json writes it.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(dst, q...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

var jsonNull = []byte("null")

// ---- msgpack ----

// msgpackPayload decides how raw, the bytes of a core.Raw, travels in a
// msgpack envelope: verbatim when it is exactly one msgpack value; as a
// str holding it, as spec-tacles/gateway writes dispatches, when it is a
// JSON object or array; otherwise opaque.
func msgpackPayload(raw []byte) (data []byte, opaque bool) {
	if n, err := msgpackLen(raw, len(raw)); err == nil && n == len(raw) {
		return raw, false
	}
	if isJSONDocument(raw) {
		return core.MsgpackJSONString(raw), false
	}
	return raw, true
}

func appendMsgpackEnvelope(dst []byte, e *envelope) []byte {
	n := 2
	if e.id != "" {
		n++
	}
	if e.replyTo != "" {
		n++
	}
	if len(e.headers) > 0 {
		n++
	}
	dst = appendMsgpackMapHeader(dst, n)
	dst = appendMsgpackStr(dst, fieldEvent)
	dst = appendMsgpackStr(dst, e.event)
	if e.id != "" {
		dst = appendMsgpackStr(dst, fieldID)
		dst = appendMsgpackStr(dst, e.id)
	}
	if e.replyTo != "" {
		dst = appendMsgpackStr(dst, fieldReplyTo)
		dst = appendMsgpackStr(dst, e.replyTo)
	}
	if len(e.headers) > 0 {
		dst = appendMsgpackStr(dst, fieldHeaders)
		dst = appendMsgpackMapHeader(dst, len(e.headers))
		for _, k := range sortedKeys(e.headers) {
			dst = appendMsgpackStr(dst, k)
			dst = appendMsgpackStr(dst, e.headers[k])
		}
	}
	if e.opaque {
		dst = appendMsgpackStr(dst, fieldDataBin)
		return appendMsgpackBin(dst, e.data)
	}
	dst = appendMsgpackStr(dst, fieldData)
	return append(dst, e.data...)
}

var msgpackNil = []byte{0xc0}

// parseMsgpackEnvelope reads one whole msgpack value, as msgpackLen cut it.
// The envelope does not share memory with v.
func parseMsgpackEnvelope(v []byte) (*envelope, error) {
	n, off, err := msgpackMapLen(v)
	if err != nil {
		return nil, err
	}
	e := &envelope{}
	hasEvent, hasData := false, false
	for range n {
		kn, err := msgpackLen(v[off:], len(v)-off)
		if err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		key, ok := msgpackBytes(v[off : off+kn])
		if !ok {
			return nil, fmt.Errorf("key of type 0x%02x, want a string", v[off])
		}
		off += kn
		vn, err := msgpackLen(v[off:], len(v)-off)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", key, err)
		}
		val := v[off : off+vn]
		off += vn
		switch string(key) {
		case fieldEvent, fieldID, fieldReplyTo:
			s, ok := msgpackBytes(val)
			if !ok {
				return nil, fmt.Errorf("%q is of type 0x%02x, want a string", key, val[0])
			}
			switch string(key) {
			case fieldEvent:
				e.event, hasEvent = string(s), true
			case fieldID:
				e.id = string(s)
			default:
				e.replyTo = string(s)
			}
		case fieldHeaders:
			h, err := parseMsgpackHeaders(val)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", key, err)
			}
			e.headers = h
		case fieldData:
			if !hasData || !e.opaque {
				e.data, e.opaque, hasData = bytes.Clone(val), false, true
			}
		case fieldDataBin:
			b, ok := msgpackBytes(val)
			if !ok {
				return nil, fmt.Errorf("%q is of type 0x%02x, want bin", key, val[0])
			}
			e.data, e.opaque, hasData = bytes.Clone(b), true, true
		}
	}
	if !hasEvent || e.event == "" {
		return nil, errors.New(`no "event"`)
	}
	if !hasData {
		e.data = msgpackNil
	}
	return e, nil
}

func parseMsgpackHeaders(v []byte) (map[string]string, error) {
	if len(v) == 1 && v[0] == 0xc0 {
		return nil, nil
	}
	n, off, err := msgpackMapLen(v)
	if err != nil {
		return nil, err
	}
	h := make(map[string]string, min(n, 64))
	var kv [2][]byte
	for i := range 2 * n {
		ln, err := msgpackLen(v[off:], len(v)-off)
		if err != nil {
			return nil, err
		}
		s, ok := msgpackBytes(v[off : off+ln])
		if !ok {
			return nil, fmt.Errorf("entry of type 0x%02x, want a string", v[off])
		}
		off += ln
		kv[i%2] = s
		if i%2 == 1 {
			h[string(kv[0])] = string(kv[1])
		}
	}
	return h, nil
}
