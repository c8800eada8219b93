package termtext

import "testing"

// TestEscapeCEscapes: every control with a C escape is written as that
// escape, the others in hex.
func TestEscapeCEscapes(t *testing.T) {
	for in, want := range map[string]string{
		"\a": `\a`, "\b": `\b`, "\f": `\f`, "\n": `\n`, "\r": `\r`, "\t": `\t`, "\v": `\v`,
		"\x00": `\x00`, "\x1b": `\x1b`, "\x7f": `\x7f`, "\u202e": `\u202e`,
	} {
		if got := Escape("a" + in + "b"); got != "a"+want+"b" {
			t.Errorf("Escape(%q) = %q, want %q", "a"+in+"b", got, "a"+want+"b")
		}
	}
}
