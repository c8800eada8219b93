package core

import (
	"errors"
	"testing"
	"time"
)

// Real guild ids: Discord API, Discord Developers, discord.js, Discord Testers.
func TestShardIDRealSnowflakes(t *testing.T) {
	cases := []struct {
		guild  string
		counts map[int]int // shard count -> expected shard
		born   string
	}{
		{"81384788765712384", map[int]int{1: 0, 2: 0, 9: 1, 16: 2, 100: 98}, "2015-08-13T13:54:05.698Z"},
		{"613425648685547541", map[int]int{1: 0, 2: 0, 9: 5, 16: 8, 100: 44}, "2019-08-20T17:34:31.544Z"},
		{"222078108977594368", map[int]int{1: 0, 2: 0, 9: 1, 16: 8, 100: 92}, "2016-09-04T19:39:07.192Z"},
		{"175928847299117063", map[int]int{1: 0, 2: 0, 9: 2, 16: 4, 100: 96}, "2016-04-30T11:18:25.796Z"},
	}
	for _, c := range cases {
		id, err := ParseSnowflake(c.guild)
		if err != nil {
			t.Fatalf("parse %s: %v", c.guild, err)
		}
		for count, want := range c.counts {
			if got := ShardID(id, count); got != want {
				t.Errorf("ShardID(%s, %d) = %d, want %d", c.guild, count, got, want)
			}
		}
		born, _ := time.Parse(time.RFC3339Nano, c.born)
		if got := SnowflakeTime(id); !got.Equal(born) {
			t.Errorf("SnowflakeTime(%s) = %s, want %s", c.guild, got, born)
		}
	}
}

func TestShardIDEdges(t *testing.T) {
	if got := ShardID(0, 16); got != 0 {
		t.Errorf("DM (guild 0) went to shard %d, want 0", got)
	}
	if got := ShardID(81384788765712384, 0); got != 0 {
		t.Errorf("shard count 0 gave shard %d, want 0", got)
	}
	if got := ShardID(^uint64(0), 7); got < 0 || got >= 7 {
		t.Errorf("max id gave shard %d", got)
	}
}

func TestParseSnowflakeRejects(t *testing.T) {
	for _, s := range []string{"", "0", "-1", "abc", "12.5", " 123", "18446744073709551616"} {
		if _, err := ParseSnowflake(s); !errors.Is(err, ErrInvalidSnowflake) {
			t.Errorf("ParseSnowflake(%q) err = %v, want ErrInvalidSnowflake", s, err)
		}
	}
}

func TestIdentity(t *testing.T) {
	if err := (Identity{Group: "gateway", Client: "host-1"}).Validate(); err != nil {
		t.Errorf("valid identity: %v", err)
	}
	for _, id := range []Identity{{"", "c"}, {"g", ""}, {"g g", "c"}, {"g", "c\n"}} {
		if err := id.Validate(); !errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("%+v: err = %v, want ErrInvalidIdentity", id, err)
		}
	}
	a, b := DefaultClient(), DefaultClient()
	if a == "" || a != b {
		t.Errorf("DefaultClient not stable: %q %q", a, b)
	}
	if err := (Identity{Group: "g", Client: a}).Validate(); err != nil {
		t.Errorf("DefaultClient %q is not a valid name: %v", a, err)
	}
}
