package discord

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseIntents(t *testing.T) {
	got, err := ParseIntents("guilds, GUILD_MESSAGES,message_content,GUILD_BANS")
	if err != nil {
		t.Fatal(err)
	}
	want := Intent(1<<0 | 1<<9 | 1<<15 | 1<<2)
	if got != want {
		t.Errorf("got %d (%s), want %d", got, got, want)
	}
	if got&PrivilegedIntents != 1<<15 {
		t.Errorf("privileged part %d", got&PrivilegedIntents)
	}
	if _, err := ParseIntents("GUILDS,GUILD_MESAGES"); !errors.Is(err, ErrUnknownIntent) {
		t.Errorf("typo: err = %v", err)
	}
	if v, err := ParseIntents(""); err != nil || v != 0 {
		t.Errorf("empty: %d %v", v, err)
	}
	if v, err := ParseRawIntents("33281"); err != nil || v != 33281 {
		t.Errorf("raw: %d %v", v, err)
	}
	for _, bad := range []string{"x", "-1", "4194304" /* bit 22 */} {
		if _, err := ParseRawIntents(bad); err == nil {
			t.Errorf("raw %q accepted", bad)
		}
	}
	if s := Intent(1<<0 | 1<<9).String(); s != "GUILDS,GUILD_MESSAGES" {
		t.Errorf("String = %q", s)
	}
}

// TestAllIntents: the defined bits are 0–16, 20, 21, 24 and 25; the
// privileged ones are members, presences and message content; every
// name parses back to its bit, and the old names still parse.
func TestAllIntents(t *testing.T) {
	if want := Intent(1<<17 - 1 | 1<<20 | 1<<21 | 1<<24 | 1<<25); AllIntents() != want {
		t.Errorf("AllIntents() = %#x, want %#x", uint64(AllIntents()), uint64(want))
	}
	if PrivilegedIntents != 1<<1|1<<8|1<<15 {
		t.Errorf("PrivilegedIntents = %#x", uint64(PrivilegedIntents))
	}
	names := IntentNames(AllIntents())
	if len(names) != 21 || names[0] != "GUILDS" || names[20] != "DIRECT_MESSAGE_POLLS" {
		t.Errorf("names %v", names)
	}
	for i, name := range names {
		got, err := ParseIntents(name)
		if err != nil || IntentNames(got)[0] != name || len(IntentNames(got)) != 1 {
			t.Errorf("%s: %s %v", name, got, err)
		}
		if i > 0 && got <= mustParse(t, names[i-1]) {
			t.Errorf("%s is not after %s in bit order", name, names[i-1])
		}
	}
	aliases := map[string]Intent{"GUILD_BANS": IntentGuildModeration, "guild_emojis": IntentGuildExpressions,
		"GUILD_EMOJIS_AND_STICKERS": IntentGuildExpressions}
	for name, want := range aliases {
		if got := mustParse(t, name); got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
	if got := IntentNames(1 << 30); !reflect.DeepEqual(got, []string(nil)) {
		t.Errorf("undefined bit named %v", got)
	}
}

func mustParse(t *testing.T, s string) Intent {
	t.Helper()
	i, err := ParseIntents(s)
	if err != nil {
		t.Fatal(err)
	}
	return i
}
