package redact

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:6379":                                      "127.0.0.1:6379",
		"redis://localhost:6379/0":                            "redis://localhost:6379/0",
		"redis://user:hunter2@localhost:6379/0":               "redis://xxxxx@localhost:6379/0",
		"redis://:hunter2@localhost:6379":                     "redis://xxxxx@localhost:6379",
		"user:hunter2@localhost:6379":                         "xxxxx@localhost:6379",
		"redis://a:hunter2@h1:7000,redis://a:hunter2@h2:7001": "redis://xxxxx@h1:7000,redis://xxxxx@h2:7001",
		"redis://h:6379/0?password=hunter2":                   "redis://h:6379/0?...",
		"amqp://guest:guest@127.0.0.1:5672/":                  "amqp://xxxxx@127.0.0.1:5672/",
		"amqps://u:p@rabbit:5671/vh?heartbeat=5":              "amqps://xxxxx@rabbit:5671/vh?...",
		"amqp://u:p@ss@rabbit:5672/":                          "amqp://xxxxx@rabbit:5672/",
		"amqp://token@rabbit/?auth_mechanism=PLAIN":           "amqp://xxxxx@rabbit/?...",
		"amqp://user:pa%40ss@rabbit.example.org/vh1":          "amqp://xxxxx@rabbit.example.org/vh1",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestText(t *testing.T) {
	msg := `parse "redis://u:p%40ss@h": bad port; auth as p@ss failed; also q=secret`
	got := Text(msg, "redis://u:p%40ss@h", "redis://h?q=secret")
	for _, s := range []string{"p%40ss", "p@ss", "q=secret"} {
		if strings.Contains(got, s) {
			t.Errorf("%q left in %q", s, got)
		}
	}
	if Text("nothing to hide", "redis://h:1") != "nothing to hide" {
		t.Error("text without secrets changed")
	}
}

func TestParseError(t *testing.T) {
	for _, raw := range []string{"redis://u:hunter2@h:port"} {
		_, err := url.Parse(raw)
		if err == nil {
			t.Fatal("url.Parse accepted a bad port")
		}
		got := ParseError(raw, err)
		if strings.Contains(got, "hunter2") || strings.Contains(got, "u:") || got == "" {
			t.Errorf("ParseError(%q) = %q: holds a secret or nothing", raw, got)
		}
		if want := `invalid port ":port" after host`; got != want {
			t.Errorf("ParseError(%q) = %q, want %q", raw, got, want)
		}
	}
	if got := ParseError("amqp://u:s3cret@h/", errors.New("bad s3cret")); got != "bad "+Mask {
		t.Errorf("ParseError of a plain error = %q, want the secret masked", got)
	}
}

func TestStrings(t *testing.T) {
	if got := Strings("token Bot.abc.def for Bot.abc", "", "Bot.abc.def", "Bot.abc"); got != "token "+Mask+" for "+Mask {
		t.Errorf("Strings = %q", got)
	}
	if got := Strings("nothing to hide"); got != "nothing to hide" {
		t.Errorf("Strings without secrets = %q", got)
	}
}
