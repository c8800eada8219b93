package termtext

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"
)

// hostile holds every kind of unsafe text.
var hostile = []string{
	"x\x1b[2Jy",           // ESC: clear the screen
	"a\rb",                // carriage return
	"bell\a",              // BEL
	"c1\u0085\u009bz",     // C1 controls (NEL, CSI)
	"bidi\u202eevil",      // right-to-left override
	"iso\u2066x\u2069",    // bidi isolates
	"bad\xff\xfe utf8",    // invalid UTF-8
	"tab\there\nnl",       // tab and line break
	"del\x7f",             // DEL
	"osc\x1b]52;c;aGk=\a", // OSC 52
	"zw\u200bsp\ufeff",    // zero-width space, BOM
	"quote's \\ $'x'",     // what Quote must escape
	"\U000e0001tag",       // an unprintable rune above the BMP
}

// CheckSafe fails t when out holds a byte or rune a terminal acts on:
// anything below 0x20 but allowed, DEL, C1, a format character, invalid
// UTF-8.
func checkSafe(t *testing.T, out string, allowed string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("not valid UTF-8: %q", out)
	}
	for _, r := range out {
		if strings.ContainsRune(allowed, r) {
			continue
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) ||
			r == 0x200b || r == 0xfeff || r == 0x200e || r == 0x200f || r == 0x061c || r == 0xe0001 {
			t.Fatalf("unsafe rune %U in %q", r, out)
		}
	}
}

func TestEscapeLeavesNoUnsafeRune(t *testing.T) {
	for _, s := range hostile {
		checkSafe(t, Escape(s), "")
		checkSafe(t, Quote(s), "")
		checkSafe(t, EscapeLines(s), "\n")
		checkSafe(t, EscapeStyled(s), "\n")
		if Safe(s) && !strings.Contains(s, "$'") {
			t.Errorf("Safe(%q) = true", s)
		}
	}
	if got := Escape("x\x1b[2Jy"); got != `x\x1b[2Jy` {
		t.Errorf("Escape = %s", got)
	}
	if got := Escape("bidi\u202e\xff"); got != `bidi\u202e\xff` {
		t.Errorf("Escape = %s", got)
	}
	if got := Quote("x\x1b[2Jy"); got != `$'x\x1b[2Jy'` {
		t.Errorf("Quote = %s", got)
	}
	if got := EscapeLines("a\nb\rc"); got != "a\nb\\rc" {
		t.Errorf("EscapeLines = %q", got)
	}
}

func TestSafeTextIsUnchanged(t *testing.T) {
	for _, s := range []string{"MESSAGE_CREATE", "MESSAGE_CREATE:dlq", "grüße 日本 🎉", "a b", `back\slash`, ""} {
		if Escape(s) != s || Quote(s) != s || EscapeLines(s) != s || EscapeStyled(s) != s {
			t.Errorf("%q changed: %q %q", s, Escape(s), Quote(s))
		}
	}
	styled := "\x1b[1;38;2;10;20;30mbold\x1b[0m\nnext"
	if EscapeStyled(styled) != styled {
		t.Errorf("EscapeStyled changed SGR: %q", EscapeStyled(styled))
	}
	if got := EscapeStyled("\x1b[31mred\x1b[2J\x1b]0;t\a"); got != "\x1b[31mred\\x1b[2J\\x1b]0;t\\a" {
		t.Errorf("EscapeStyled = %q", got)
	}
}

func TestQuoteRoundTrips(t *testing.T) {
	for _, s := range append(hostile, "plain", "$'", "a$'b'c") {
		q := Quote(s)
		got, ok := Unquote(q)
		if q != s && (!ok || got != s) {
			t.Errorf("Unquote(Quote(%q)) = %q, %v (quoted %s)", s, got, ok, q)
		}
		if q == s {
			if got, _ := Unquote(q); got != s {
				t.Errorf("Unquote(%q) = %q", q, got)
			}
		}
	}
	// Concatenated as in a shell word.
	if got, ok := Unquote(`$'x\x1b':dlq`); !ok || got != "x\x1b:dlq" {
		t.Errorf("concatenation: %q %v", got, ok)
	}
	for _, bad := range []string{`$'open`, `$'bad\q'`, `$'\x'`} {
		if got, ok := Unquote(bad); ok || got != bad {
			t.Errorf("Unquote(%q) = %q, %v", bad, got, ok)
		}
	}
}

// TestQuoteTypesBackInBash checks the quoted form with the shell itself:
// printf '%s' WORD gives back the exact bytes.
func TestQuoteTypesBackInBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash:", err)
	}
	for _, s := range hostile {
		out, err := exec.Command(bash, "-c", "printf '%s' "+Quote(s)).Output()
		if err != nil {
			t.Fatalf("bash: %v", err)
		}
		if string(out) != s {
			t.Errorf("bash read %s as %q, want %q", Quote(s), out, s)
		}
	}
}

func TestJSONStaysTheSameValue(t *testing.T) {
	for _, s := range hostile {
		raw, err := json.Marshal(map[string]string{"name": s})
		if err != nil {
			t.Fatal(err)
		}
		out := JSON(raw)
		checkSafe(t, string(out), "")
		var back, want map[string]string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		_ = json.Unmarshal(raw, &want)
		if back["name"] != want["name"] {
			t.Errorf("JSON changed the value: %q, want %q", back["name"], want["name"])
		}
	}
}
