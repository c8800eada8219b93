package jsonscan

import (
	"errors"
	"unicode/utf8"
)

// ErrNotObject is returned by Object for valid JSON that is not an object.
var ErrNotObject = errors.New("not a JSON object")

// ErrTrailing is returned by Object for data after the object.
var ErrTrailing = errors.New("data after the JSON object")

// Object validates b, one JSON object with optional white space around it,
// in one pass and calls field for each member in order: key is the key's
// JSON text without its quotes (escaped reports a backslash in it, to be
// decoded with StringValue) and value the member's JSON text. A repeated
// key is reported each time. An error from field stops the scan and is
// returned.
func Object(b []byte, field func(key []byte, escaped bool, value []byte) error) error {
	i := Space(b, 0)
	if i >= len(b) || b[i] != '{' {
		if Valid(b) {
			return ErrNotObject
		}
		return ErrSyntax
	}
	end, err := ObjectPrefix(b, field)
	if err != nil {
		return err
	}
	if Space(b, end) != len(b) {
		return ErrTrailing
	}
	return nil
}

// ObjectPrefix is Object for the object that starts b (after optional
// white space), whatever follows it: it returns the offset just past the
// object's closing brace. Text that does not start with an object, or
// ends before the object does, is ErrSyntax.
func ObjectPrefix(b []byte, field func(key []byte, escaped bool, value []byte) error) (int, error) {
	i := Space(b, 0)
	if i >= len(b) || b[i] != '{' {
		return 0, ErrSyntax
	}
	i = Space(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return 0, ErrSyntax
		}
		kEnd, kEsc, err := String(b, i)
		if err != nil {
			return 0, err
		}
		key := b[i+1 : kEnd-1]
		i = Space(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return 0, ErrSyntax
		}
		vStart := Space(b, i+1)
		vEnd, err := Value(b, vStart)
		if err != nil {
			return 0, err
		}
		if err := field(key, kEsc, b[vStart:vEnd]); err != nil {
			return 0, err
		}
		i = Space(b, vEnd)
		if i < len(b) && b[i] == ',' {
			i = Space(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return i + 1, nil
		}
		return 0, ErrSyntax
	}
}

// KeyIs reports whether the key Object passed, with its escaped flag, is
// name as encoding/json decodes it: compared as bytes when it is valid
// UTF-8 without escapes, decoded otherwise.
func KeyIs(key []byte, escaped bool, name string) bool {
	if !escaped && utf8.Valid(key) {
		return string(key) == name
	}
	s, err := Key(key, escaped)
	return err == nil && s == name
}

// Key decodes a key Object passed, with its escaped flag, as
// encoding/json does (escapes, and U+FFFD for invalid UTF-8).
func Key(key []byte, escaped bool) (string, error) {
	if !escaped && utf8.Valid(key) {
		return string(key), nil
	}
	return StringValue(append(append(make([]byte, 0, len(key)+2), '"'), append(key, '"')...), true)
}
