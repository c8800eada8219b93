package ipc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// A validating JSON scanner for the JSONLines hot path: encoding/json
// validates a line in full before decoding it and scans a RawMessage twice
// more, which made it most of the cost of a message. This scanner accepts
// exactly what json.Valid accepts (FuzzJSONScan checks it) and finds where
// a value ends in one pass, without allocating.

// maxJSONDepth is encoding/json's nesting limit.
const maxJSONDepth = 10000

var errJSONSyntax = errors.New("invalid JSON")

// jsonStringSafe marks the bytes a JSON string holds as they are.
var jsonStringSafe = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func skipJSONSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// jsonValid reports whether b is one JSON value, with optional white space
// around it, as json.Valid does.
func jsonValid(b []byte) bool {
	end, err := skipJSONValue(b, skipJSONSpace(b, 0))
	return err == nil && skipJSONSpace(b, end) == len(b)
}

// skipJSONString returns the end of the string that starts at b[i] ('"').
// hasEscape reports a backslash inside it.
func skipJSONString(b []byte, i int) (end int, hasEscape bool, err error) {
	i++ // the opening quote
	for {
		for i < len(b) && jsonStringSafe[b[i]] {
			i++
		}
		if i >= len(b) {
			return 0, false, errJSONSyntax
		}
		switch b[i] {
		case '"':
			return i + 1, hasEscape, nil
		case '\\':
			hasEscape = true
			if i+1 >= len(b) {
				return 0, false, errJSONSyntax
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return 0, false, errJSONSyntax
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex(h) {
						return 0, false, errJSONSyntax
					}
				}
				i += 6
			default:
				return 0, false, errJSONSyntax
			}
		default: // a control character
			return 0, false, errJSONSyntax
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// skipJSONNumber returns the end of the number that starts at b[i].
func skipJSONNumber(b []byte, i int) (int, error) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return 0, errJSONSyntax
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return 0, errJSONSyntax
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return 0, errJSONSyntax
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i, nil
}

func skipJSONLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, errJSONSyntax
	}
	return i + len(lit), nil
}

// skipJSONKey reads `"key" :` at b[i] (after white space) and returns the
// position after the colon.
func skipJSONKey(b []byte, i int) (int, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, errJSONSyntax
	}
	i, _, err := skipJSONString(b, i)
	if err != nil {
		return 0, err
	}
	i = skipJSONSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return 0, errJSONSyntax
	}
	return i + 1, nil
}

// skipJSONValue validates the value that starts at b[i] (no white space
// before it) and returns where it ends.
func skipJSONValue(b []byte, i int) (int, error) {
	var stackBuf [32]byte
	stack := stackBuf[:0] // open containers: '{' or '['
	var err error
	for {
		// A value starts at i (after white space).
		i = skipJSONSpace(b, i)
		if i >= len(b) {
			return 0, errJSONSyntax
		}
		switch c := b[i]; {
		case c == '{' || c == '[':
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			if len(stack) >= maxJSONDepth {
				return 0, errJSONSyntax
			}
			j := skipJSONSpace(b, i+1)
			if j < len(b) && b[j] == closer {
				i = j + 1
				break // an empty container: a complete value
			}
			stack = append(stack, c)
			i = j
			if c == '{' {
				if i, err = skipJSONKey(b, i); err != nil {
					return 0, err
				}
			}
			continue // the container's first value
		case c == '"':
			if i, _, err = skipJSONString(b, i); err != nil {
				return 0, err
			}
		case c == '-' || isDigit(c):
			if i, err = skipJSONNumber(b, i); err != nil {
				return 0, err
			}
		case c == 't':
			if i, err = skipJSONLiteral(b, i, "true"); err != nil {
				return 0, err
			}
		case c == 'f':
			if i, err = skipJSONLiteral(b, i, "false"); err != nil {
				return 0, err
			}
		case c == 'n':
			if i, err = skipJSONLiteral(b, i, "null"); err != nil {
				return 0, err
			}
		default:
			return 0, errJSONSyntax
		}
		// A value ended at i: close containers until one goes on.
		for {
			if len(stack) == 0 {
				return i, nil
			}
			i = skipJSONSpace(b, i)
			if i >= len(b) {
				return 0, errJSONSyntax
			}
			top := stack[len(stack)-1]
			if b[i] == ',' {
				i = skipJSONSpace(b, i+1)
				if top == '{' {
					if i, err = skipJSONKey(b, i); err != nil {
						return 0, err
					}
				}
				break // the next value
			}
			if (top == '{' && b[i] == '}') || (top == '[' && b[i] == ']') {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			return 0, errJSONSyntax
		}
	}
}

// jsonStringValue returns the Go string of the JSON string raw (quotes
// included), decoding escapes and invalid UTF-8 as encoding/json does.
func jsonStringValue(raw []byte, hasEscape bool) (string, error) {
	inner := raw[1 : len(raw)-1]
	if !hasEscape && utf8.Valid(inner) {
		return string(inner), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

// parseJSONEnvelope reads one line (white space around it allowed): an
// object whose known fields have the right types. Unknown fields are
// skipped; of repeated fields the last counts.
func parseJSONEnvelope(line []byte) (*envelope, error) {
	i := skipJSONSpace(line, 0)
	if i >= len(line) || line[i] != '{' {
		// Say what encoding/json would, for a useful log.
		if jsonValid(line) {
			return nil, errors.New("not a JSON object")
		}
		return nil, errJSONSyntax
	}
	e := &envelope{}
	var (
		event, dataB64       string
		hasEvent, hasDataB64 bool
		data                 []byte
	)
	i = skipJSONSpace(line, i+1)
	if i < len(line) && line[i] == '}' {
		i++
	} else {
		for {
			if i >= len(line) || line[i] != '"' {
				return nil, errJSONSyntax
			}
			kEnd, kEsc, err := skipJSONString(line, i)
			if err != nil {
				return nil, err
			}
			key, err := jsonStringValue(line[i:kEnd], kEsc)
			if err != nil {
				return nil, err
			}
			i = skipJSONSpace(line, kEnd)
			if i >= len(line) || line[i] != ':' {
				return nil, errJSONSyntax
			}
			vStart := skipJSONSpace(line, i+1)
			vEnd, err := skipJSONValue(line, vStart)
			if err != nil {
				return nil, err
			}
			val := line[vStart:vEnd]
			switch key {
			case fieldEvent, fieldID, fieldReplyTo, fieldDataBase64:
				s, isNull, err := jsonStringField(key, val)
				if err != nil {
					return nil, err
				}
				switch key {
				case fieldEvent:
					event, hasEvent = s, !isNull
				case fieldID:
					e.id = s
				case fieldReplyTo:
					e.replyTo = s
				default:
					dataB64, hasDataB64 = s, !isNull
				}
			case fieldHeaders:
				var h map[string]string
				if err := json.Unmarshal(val, &h); err != nil {
					return nil, fmt.Errorf("%q: %w", key, err)
				}
				e.headers = h
			case fieldData:
				data = val
			}
			i = skipJSONSpace(line, vEnd)
			if i < len(line) && line[i] == ',' {
				i = skipJSONSpace(line, i+1)
				continue
			}
			if i < len(line) && line[i] == '}' {
				i++
				break
			}
			return nil, errJSONSyntax
		}
	}
	if skipJSONSpace(line, i) != len(line) {
		return nil, errors.New("data after the JSON object")
	}
	if !hasEvent || event == "" {
		return nil, errors.New(`no "event"`)
	}
	e.event = event
	switch {
	case hasDataB64:
		raw, err := decodeBase64(dataB64)
		if err != nil {
			return nil, fmt.Errorf(`"data_base64": %w`, err)
		}
		e.data, e.opaque = raw, true
	case data != nil:
		e.data = append([]byte(nil), data...)
	default:
		e.data = jsonNull
	}
	return e, nil
}

// jsonStringField reads a field that must be a string (or null, which
// leaves it unset, as encoding/json does).
func jsonStringField(key string, val []byte) (s string, isNull bool, err error) {
	if len(val) == 4 && string(val) == "null" {
		return "", true, nil
	}
	if val[0] != '"' {
		return "", false, fmt.Errorf("%q is not a string", key)
	}
	s, err = jsonStringValue(val, bytes.IndexByte(val, '\\') >= 0)
	return s, false, err
}

// decodeBase64 decodes standard base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if raw, err2 := base64.RawStdEncoding.DecodeString(s); err2 == nil {
			return raw, nil
		}
		return nil, err
	}
	return raw, nil
}
