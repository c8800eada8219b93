// Package jsonscan validates and cuts JSON text in one pass, without
// allocating: the hot paths that only need a few fields of a large value
// (a gateway payload's op, t, s and raw d; an IPC line's envelope) use it
// instead of encoding/json, which validates a value in full before decoding
// it and scans a RawMessage twice more.
//
// It accepts exactly what json.Valid accepts (FuzzValid checks it).
package jsonscan

import (
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// MaxDepth is encoding/json's nesting limit.
const MaxDepth = 10000

// ErrSyntax is returned for text that is not valid JSON.
var ErrSyntax = errors.New("invalid JSON")

// stringSafe marks the bytes a JSON string holds as they are.
var stringSafe = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// Space returns the first position at or after i that is not JSON white
// space.
func Space(b []byte, i int) int {
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

// Valid reports whether b is one JSON value, with optional white space
// around it, as json.Valid does.
func Valid(b []byte) bool {
	end, err := Value(b, Space(b, 0))
	return err == nil && Space(b, end) == len(b)
}

// String returns the end of the string that starts at b[i] ('"').
// hasEscape reports a backslash inside it.
func String(b []byte, i int) (end int, hasEscape bool, err error) {
	i++ // the opening quote
	for {
		for i < len(b) && stringSafe[b[i]] {
			i++
		}
		if i >= len(b) {
			return 0, false, ErrSyntax
		}
		switch b[i] {
		case '"':
			return i + 1, hasEscape, nil
		case '\\':
			hasEscape = true
			if i+1 >= len(b) {
				return 0, false, ErrSyntax
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return 0, false, ErrSyntax
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex(h) {
						return 0, false, ErrSyntax
					}
				}
				i += 6
			default:
				return 0, false, ErrSyntax
			}
		default: // a control character
			return 0, false, ErrSyntax
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// skipNumber returns the end of the number that starts at b[i].
func skipNumber(b []byte, i int) (int, error) {
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
		return 0, ErrSyntax
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return 0, ErrSyntax
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
			return 0, ErrSyntax
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i, nil
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, ErrSyntax
	}
	return i + len(lit), nil
}

// skipKey reads `"key" :` at b[i] (after white space) and returns the
// position after the colon.
func skipKey(b []byte, i int) (int, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, ErrSyntax
	}
	i, _, err := String(b, i)
	if err != nil {
		return 0, err
	}
	i = Space(b, i)
	if i >= len(b) || b[i] != ':' {
		return 0, ErrSyntax
	}
	return i + 1, nil
}

// Value validates the value that starts at b[i] (after any white space)
// and returns where it ends. Nesting deeper than MaxDepth is ErrSyntax.
func Value(b []byte, i int) (int, error) {
	var stackBuf [32]byte
	stack := stackBuf[:0] // open containers: '{' or '['
	var err error
	for {
		// A value starts at i (after white space).
		i = Space(b, i)
		if i >= len(b) {
			return 0, ErrSyntax
		}
		switch c := b[i]; {
		case c == '{' || c == '[':
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			if len(stack) >= MaxDepth {
				return 0, ErrSyntax
			}
			j := Space(b, i+1)
			if j < len(b) && b[j] == closer {
				i = j + 1
				break // an empty container: a complete value
			}
			stack = append(stack, c)
			i = j
			if c == '{' {
				if i, err = skipKey(b, i); err != nil {
					return 0, err
				}
			}
			continue // the container's first value
		case c == '"':
			if i, _, err = String(b, i); err != nil {
				return 0, err
			}
		case c == '-' || isDigit(c):
			if i, err = skipNumber(b, i); err != nil {
				return 0, err
			}
		case c == 't':
			if i, err = skipLiteral(b, i, "true"); err != nil {
				return 0, err
			}
		case c == 'f':
			if i, err = skipLiteral(b, i, "false"); err != nil {
				return 0, err
			}
		case c == 'n':
			if i, err = skipLiteral(b, i, "null"); err != nil {
				return 0, err
			}
		default:
			return 0, ErrSyntax
		}
		// A value ended at i: close containers until one goes on.
		for {
			if len(stack) == 0 {
				return i, nil
			}
			i = Space(b, i)
			if i >= len(b) {
				return 0, ErrSyntax
			}
			top := stack[len(stack)-1]
			if b[i] == ',' {
				i = Space(b, i+1)
				if top == '{' {
					if i, err = skipKey(b, i); err != nil {
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
			return 0, ErrSyntax
		}
	}
}

// StringValue returns the Go string of the JSON string raw (quotes
// included), decoding escapes and invalid UTF-8 as encoding/json does.
func StringValue(raw []byte, hasEscape bool) (string, error) {
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
