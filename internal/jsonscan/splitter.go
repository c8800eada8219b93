package jsonscan

import "fmt"

// Splitter finds where one JSON object or array ends in text that arrives
// in pieces (an inflated stream), looking at each byte once and keeping
// only a few counters between pieces. It does not validate: it tracks
// strings and brackets, and a caller validates the complete value once
// (Object, Value). A Splitter is ready to use; Reset it between values.
type Splitter struct {
	depth    int
	started  bool
	inString bool
	escaped  bool
}

// Reset prepares s for the next value.
func (s *Splitter) Reset() { *s = Splitter{} }

// splitPlain marks the bytes that change nothing outside a string.
var splitPlain = func() (t [256]bool) {
	for c := range t {
		switch c {
		case '"', '{', '}', '[', ']':
		default:
			t[c] = true
		}
	}
	return t
}()

// stringPlain marks the bytes that change nothing inside a string.
var stringPlain = func() (t [256]bool) {
	for c := range t {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// Scan reads the next piece b of the value and returns the offset in b
// just past the value's end, or -1 when the value goes on past b. Leading
// white space is skipped; a value that does not start with '{' or '[', a
// closing bracket with nothing open, or nesting deeper than MaxDepth is
// ErrSyntax.
func (s *Splitter) Scan(b []byte) (int, error) {
	i := 0
	if !s.started {
		i = Space(b, 0)
		if i >= len(b) {
			return -1, nil
		}
		if b[i] != '{' && b[i] != '[' {
			return 0, fmt.Errorf("%w: a value that is not an object or array (%q)", ErrSyntax, b[i])
		}
		s.started = true
	}
	for i < len(b) {
		if s.inString {
			if s.escaped {
				s.escaped = false
				i++
				continue
			}
			for i < len(b) && stringPlain[b[i]] {
				i++
			}
			if i >= len(b) {
				return -1, nil
			}
			if b[i] == '\\' {
				s.escaped = true
			} else {
				s.inString = false
			}
			i++
			continue
		}
		for i < len(b) && splitPlain[b[i]] {
			i++
		}
		if i >= len(b) {
			return -1, nil
		}
		switch b[i] {
		case '"':
			s.inString = true
		case '{', '[':
			if s.depth >= MaxDepth {
				return 0, fmt.Errorf("%w: nested deeper than %d", ErrSyntax, MaxDepth)
			}
			s.depth++
		default: // '}' or ']'
			s.depth--
			if s.depth < 0 {
				return 0, fmt.Errorf("%w: a closing bracket with nothing open", ErrSyntax)
			}
			if s.depth == 0 {
				return i + 1, nil
			}
		}
		i++
	}
	return -1, nil
}
