package core

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// checkJSONStrict finds, in valid JSON text, what encoding/json would
// silently change instead of rejecting: invalid UTF-8 and lone surrogate
// escapes (both become U+FFFD), numbers beyond float64's range (+Inf or
// -Inf) and integers beyond 64 bits (rounded to a float64). It also bounds
// nesting at MaxDepth, so that what a user publishes can be read by every
// consumer. The error names the first such place by its byte offset.
//
// data must already be valid JSON: the scan only tells strings, numbers
// and brackets apart.
func checkJSONStrict(data []byte) error {
	depth := 0
	for i := 0; i < len(data); {
		switch c := data[i]; {
		case c == '"':
			end, err := checkJSONString(data, i)
			if err != nil {
				return err
			}
			i = end
		case c == '-' || '0' <= c && c <= '9':
			end := i + 1
			for end < len(data) && isNumberByte(data[end]) {
				end++
			}
			if err := checkJSONNumber(data[i:end], i); err != nil {
				return err
			}
			i = end
		case c == '[' || c == '{':
			depth++
			if depth > MaxDepth {
				return fmt.Errorf("JSON nests deeper than %d levels at offset %d", MaxDepth, i)
			}
			i++
		case c == ']' || c == '}':
			depth--
			i++
		default:
			i++
		}
	}
	return nil
}

func isNumberByte(c byte) bool {
	return '0' <= c && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}

// checkJSONNumber reports a number beyond float64's range, and an integer
// (no fraction, no exponent) that fits in neither int64 nor uint64 unless
// it is how a float64 is written (which decodes to that float64).
func checkJSONNumber(num []byte, off int) error {
	s := string(num)
	integral := true
	for _, c := range num {
		if c == '.' || c == 'e' || c == 'E' {
			integral = false
			break
		}
	}
	if integral {
		if _, err := strconv.ParseInt(s, 10, 64); err == nil {
			return nil
		}
		if _, err := strconv.ParseUint(s, 10, 64); err == nil {
			return nil
		}
		// An integer that is a float64 written out, as encoding/json
		// writes 1e20 ("100000000000000000000"), decodes to that float64
		// and encodes back to the same text: nothing changes.
		if f, err := strconv.ParseFloat(s, 64); err == nil && strconv.FormatFloat(f, 'f', -1, 64) == s {
			return nil
		}
		return fmt.Errorf("JSON integer %s at offset %d does not fit in 64 bits (write it as a string, or as a float with a fraction or an exponent)", shortText(s), off)
	}
	if _, err := strconv.ParseFloat(s, 64); err != nil {
		return fmt.Errorf("JSON number %s at offset %d is out of the range of a 64-bit float", shortText(s), off)
	}
	return nil
}

// shortText cuts s for an error message.
func shortText(s string) string {
	const max = 40
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// checkJSONString checks the string that starts at data[i] (its opening
// quote) and returns the offset after its closing quote.
func checkJSONString(data []byte, i int) (int, error) {
	j := i + 1
	for j < len(data) {
		c := data[j]
		switch {
		case c == '"':
			return j + 1, nil
		case c == '\\':
			if j+1 < len(data) && data[j+1] == 'u' {
				r, ok := hex4(data, j+2)
				if !ok {
					return 0, fmt.Errorf("JSON escape at offset %d is not \\u and 4 hex digits", j)
				}
				switch {
				case r >= 0xd800 && r < 0xdc00: // high surrogate: a low one must follow
					if j+7 < len(data) && data[j+6] == '\\' && data[j+7] == 'u' {
						if lo, ok := hex4(data, j+8); ok && lo >= 0xdc00 && lo < 0xe000 {
							j += 12
							continue
						}
					}
					return 0, fmt.Errorf("JSON string has a lone surrogate \\u%04x at offset %d (a high surrogate not followed by a low one)", r, j)
				case r >= 0xdc00 && r < 0xe000:
					return 0, fmt.Errorf("JSON string has a lone surrogate \\u%04x at offset %d (a low surrogate without a high one)", r, j)
				}
				j += 6
				continue
			}
			j += 2
		case c < utf8.RuneSelf:
			j++
		default:
			r, size := utf8.DecodeRune(data[j:])
			if r == utf8.RuneError && size == 1 {
				return 0, fmt.Errorf("JSON text has invalid UTF-8 (byte 0x%02x) at offset %d", c, j)
			}
			j += size
		}
	}
	return 0, fmt.Errorf("JSON string at offset %d is not terminated", i)
}

// hex4 reads the 4 hex digits at data[i:].
func hex4(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
