// Package termtext makes text that comes from outside (stream, group and
// consumer names, dead-letter reasons, payloads, error messages) safe to
// write to a terminal: nothing it returns holds a control character, a
// bidirectional override or invalid UTF-8 that a terminal would act on.
//
// A rune is unsafe when strconv.IsPrint rejects it, as fmt's %q does: C0
// controls and DEL, C1 controls (U+0080–U+009F), format characters such as
// the bidi controls (U+202A–U+202E, U+2066–U+2069) and zero-width ones,
// separators other than the ASCII space, and unassigned code points. A
// byte that is not part of valid UTF-8 is unsafe too.
//
// Unsafe text is written as the escapes of Go and of the shell's $'...'
// quoting: \a \b \f \n \r \t \v, \xHH for other ASCII controls and for
// each invalid byte, \uHHHH or \UHHHHHHHH for other runes. Quote makes a
// name that can be typed back in a shell: `$'x\x1b[2Jy'` names the bytes
// "x", ESC, "[2Jy".
package termtext

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// unsafeRune reports whether r must not reach a terminal raw. size is the
// rune's length in bytes: a RuneError of size 1 is an invalid byte.
func unsafeRune(r rune, size int) bool {
	if r == utf8.RuneError && size <= 1 {
		return true
	}
	if r < utf8.RuneSelf {
		return r < 0x20 || r == 0x7f
	}
	return !strconv.IsPrint(r)
}

// Safe reports whether s can be written to a terminal as it is: valid
// UTF-8 without an unsafe rune. Line breaks and tabs are unsafe too.
func Safe(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if unsafeRune(r, size) {
			return false
		}
		i += size
	}
	return true
}

// writeEscape writes the escape of one unsafe rune (or invalid byte b when
// invalid).
func writeEscape(b *strings.Builder, r rune, invalid bool, raw byte) {
	if invalid {
		b.WriteString(`\x`)
		b.WriteByte(hexDigits[raw>>4])
		b.WriteByte(hexDigits[raw&0xf])
		return
	}
	// The C escapes: controls[k] is written as a backslash and letters[k].
	const controls, letters = "\a\b\f\n\r\t\v", "abfnrtv"
	switch k := strings.IndexRune(controls, r); {
	case k >= 0:
		b.WriteByte('\\')
		b.WriteByte(letters[k])
	case r < utf8.RuneSelf:
		b.WriteString(`\x`)
		b.WriteByte(hexDigits[r>>4])
		b.WriteByte(hexDigits[r&0xf])
	case r <= 0xffff:
		b.WriteString(`\u`)
		for s := 12; s >= 0; s -= 4 {
			b.WriteByte(hexDigits[r>>uint(s)&0xf])
		}
	default:
		b.WriteString(`\U`)
		for s := 28; s >= 0; s -= 4 {
			b.WriteByte(hexDigits[r>>uint(s)&0xf])
		}
	}
}

// escapeMode says what escape keeps or escapes besides the unsafe runes.
type escapeMode struct {
	keepNL  bool // keep line breaks
	quoted  bool // also escape the backslash, the single quote and the space (inside $'...')
	keepSGR bool // keep SGR sequences (see sgrLen)
}

// escape writes s with every unsafe rune escaped, as m says.
func escape(s string, m escapeMode) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		if m.keepSGR && s[i] == 0x1b {
			if n := sgrLen(s[i:]); n > 0 {
				b.WriteString(s[i : i+n])
				i += n
				continue
			}
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case m.keepNL && r == '\n':
			b.WriteByte('\n')
		case m.quoted && (r == '\\' || r == '\''):
			b.WriteByte('\\')
			b.WriteRune(r)
		case m.quoted && r == ' ':
			b.WriteString(`\x20`)
		case unsafeRune(r, size):
			writeEscape(&b, r, r == utf8.RuneError && size <= 1, s[i])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Escape returns s on one line with every unsafe rune and invalid byte
// written as an escape (\x1b, \r, \u202e, \xff), and the rest as it is. It
// is for text shown, such as error messages; for names use Quote, whose
// form can be typed back.
func Escape(s string) string {
	if Safe(s) {
		return s
	}
	return escape(s, escapeMode{})
}

// EscapeLines is Escape that keeps line breaks ("\n"), for text shown on
// several lines (a payload).
func EscapeLines(s string) string {
	if Safe(strings.ReplaceAll(s, "\n", "")) {
		return s
	}
	return escape(s, escapeMode{keepNL: true})
}

// Quote returns a name fit to print: s itself when it is safe, else s in
// the shell's $'...' quoting with every unsafe rune, invalid byte, space,
// backslash and single quote escaped, so that the printed text, typed (or
// pasted) as one shell word, gives back the exact bytes. Quote(s) is
// never the same for two names, and Unquote undoes it.
func Quote(s string) string {
	if Safe(s) && !strings.Contains(s, "$'") {
		return s
	}
	return "$'" + escape(s, escapeMode{quoted: true}) + "'"
}

// Unquote reads a word as Quote writes it: bare text and $'...' parts,
// concatenated as in a shell word ($'x\x1b':dlq is "x", ESC, ":dlq"). It
// returns s unchanged and false when s has no $'...' part or one is not
// well formed.
func Unquote(s string) (string, bool) {
	if !strings.Contains(s, "$'") {
		return s, false
	}
	var b strings.Builder
	rest := s
	for rest != "" {
		i := strings.Index(rest, "$'")
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i])
		rest = rest[i+2:]
		for {
			if rest == "" {
				return s, false // unterminated
			}
			c := rest[0]
			if c == '\'' {
				rest = rest[1:]
				break
			}
			if c != '\\' {
				b.WriteByte(c)
				rest = rest[1:]
				continue
			}
			if len(rest) < 2 {
				return s, false
			}
			n, ok := unescape(&b, rest[1:])
			if !ok {
				return s, false
			}
			rest = rest[1+n:]
		}
	}
	return b.String(), true
}

// unescape writes the value of the escape at the start of e (after the
// backslash) and returns how many bytes of e it took.
func unescape(b *strings.Builder, e string) (int, bool) {
	simple := map[byte]byte{'a': '\a', 'b': '\b', 'e': 0x1b, 'E': 0x1b, 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t', 'v': '\v',
		'\\': '\\', '\'': '\'', '"': '"', '?': '?'}
	if v, ok := simple[e[0]]; ok {
		b.WriteByte(v)
		return 1, true
	}
	digits := func(from, maxN, base int) (uint64, int) {
		n := 0
		var v uint64
		for n < maxN && from+n < len(e) {
			d := strings.IndexByte(hexDigits, lower(e[from+n]))
			if d < 0 || d >= base {
				break
			}
			v = v*uint64(base) + uint64(d)
			n++
		}
		return v, n
	}
	switch e[0] {
	case 'x':
		v, n := digits(1, 2, 16)
		if n == 0 {
			return 0, false
		}
		b.WriteByte(byte(v))
		return 1 + n, true
	case 'u', 'U':
		maxN := 4
		if e[0] == 'U' {
			maxN = 8
		}
		v, n := digits(1, maxN, 16)
		if n == 0 || v > utf8.MaxRune {
			return 0, false
		}
		b.WriteRune(rune(v))
		return 1 + n, true
	case '0', '1', '2', '3', '4', '5', '6', '7':
		v, n := digits(0, 3, 8)
		b.WriteByte(byte(v))
		return n, true
	}
	return 0, false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// JSON makes JSON text (as encoding/json writes it: valid UTF-8, control
// characters below U+0020 already escaped) safe for a terminal by
// escaping, as \uXXXX, every other unsafe rune: DEL, C1 controls, bidi and
// other format characters. Those can only occur inside JSON strings, so
// the result is the same JSON value. Invalid UTF-8 is written as \ufffd,
// as encoding/json would.
func JSON(text []byte) []byte {
	s := string(text)
	if Safe(strings.NewReplacer("\n", "", "\t", "").Replace(s)) {
		return text
	}
	out := make([]byte, 0, len(text)+16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\n' || r == '\t' || !unsafeRune(r, size) {
			out = append(out, s[i:i+size]...)
			i += size
			continue
		}
		if r > 0xffff {
			r1, r2 := surrogates(r)
			out = appendU(appendU(out, r1), r2)
		} else {
			out = appendU(out, r)
		}
		i += size
	}
	return out
}

func surrogates(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff
}

func appendU(out []byte, r rune) []byte {
	out = append(out, '\\', 'u')
	for s := 12; s >= 0; s -= 4 {
		out = append(out, hexDigits[r>>uint(s)&0xf])
	}
	return out
}

// EscapeStyled is EscapeLines for text that holds its own styling: it
// keeps line breaks and SGR sequences (ESC [ parameters m, what lipgloss
// writes for colours), and escapes every other unsafe rune, including an
// ESC that starts anything else. It is a last line of defence for a
// rendered screen whose broker text was escaped already.
func EscapeStyled(s string) string {
	clean := true
	for i := 0; i < len(s); {
		if s[i] == 0x1b {
			if n := sgrLen(s[i:]); n > 0 {
				i += n
				continue
			}
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r != '\n' && unsafeRune(r, size) {
			clean = false
			break
		}
		i += size
	}
	if clean {
		return s
	}
	return escape(s, escapeMode{keepNL: true, keepSGR: true})
}

// sgrLen is the length of the SGR sequence s starts with, or 0.
func sgrLen(s string) int {
	if len(s) < 3 || s[0] != 0x1b || s[1] != '[' {
		return 0
	}
	for i := 2; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 'm':
			return i + 1
		case c >= '0' && c <= '9', c == ';', c == ':':
		default:
			return 0
		}
	}
	return 0
}
