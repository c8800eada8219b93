package gateway

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

func TestParseShardIDs(t *testing.T) {
	got, err := ParseShardIDs("0-3, 12,2,7-7")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 2, 3, 7, 12}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v want %v", got, want)
	}
	for _, bad := range []string{"a", "3-1", "-1", "1,,2", "0-99999999"} {
		if _, err := ParseShardIDs(bad); !errors.Is(err, ErrInvalidShardIDs) {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
	if ids, err := ParseShardIDs(""); err != nil || ids != nil {
		t.Errorf("empty: %v %v", ids, err)
	}
	if all, err := ResolveShardIDs(nil, 3); err != nil || !reflect.DeepEqual(all, []int{0, 1, 2}) {
		t.Errorf("all: %v %v", all, err)
	}
	if _, err := ResolveShardIDs([]int{0, 12}, 12); !errors.Is(err, ErrInvalidShardIDs) {
		t.Errorf("out of range: %v", err)
	}
}
