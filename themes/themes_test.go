package themes

import (
	"strings"
	"testing"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestResolve(t *testing.T) {
	cases := []struct {
		flag string
		env  map[string]string
		want string
		err  string
	}{
		{"", nil, "dark", ""},
		{"", map[string]string{EnvVar: "light"}, "light", ""},
		{"hc", map[string]string{EnvVar: "light"}, "high-contrast", ""}, // the flag wins
		{"light", map[string]string{"NO_COLOR": "1"}, "no-color", ""},   // NO_COLOR wins
		{"", map[string]string{"NO_COLOR": ""}, "dark", ""},             // empty NO_COLOR is unset
		{"", map[string]string{EnvVar: "solarized"}, "", EnvVar + `: unknown theme "solarized"`},
		{"neon", nil, "", `--theme: unknown theme "neon" (want one of dark, light, high-contrast, no-color)`},
	}
	for _, c := range cases {
		th, err := Resolve(c.flag, env(c.env))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q %v: err %v, want %q", c.flag, c.env, err, c.err)
			}
			continue
		}
		if err != nil || th.Name != c.want {
			t.Errorf("%q %v: %q, %v; want %q", c.flag, c.env, th.Name, err, c.want)
		}
	}
}

func TestEveryThemeByName(t *testing.T) {
	for _, n := range Names() {
		th, err := ByName(n)
		if err != nil || th.Name != n {
			t.Errorf("%s: %q %v", n, th.Name, err)
		}
		if th.Colorless() != (n == "no-color") {
			t.Errorf("%s: colorless %v", n, th.Colorless())
		}
	}
	if !HighContrast().Reverse || !NoColor().Reverse {
		t.Error("high-contrast and no-color select in reverse video")
	}
}
