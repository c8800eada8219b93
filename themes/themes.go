// Package themes holds the colour themes of the spectacles console: dark,
// light, high-contrast and no-color (chosen when NO_COLOR is set). A theme
// is plain data, colours by role; the console turns it into styles.
package themes

import (
	"fmt"
	"slices"
	"strings"

	"github.com/charmbracelet/lipgloss"
)

// EnvVar is the environment variable that chooses a theme by name when no
// flag does.
const EnvVar = "SPECTACLES_THEME"

// Default is the theme used when neither the flag nor EnvVar names one.
const Default = "dark"

// Theme is a set of colours by role. A nil colour means "the terminal's
// own" (no colour is emitted). Colours are ANSI 256 indexes or hex values,
// so that they degrade on terminals with fewer colours.
type Theme struct {
	// Name is the theme's name, as --theme and SPECTACLES_THEME spell it.
	Name string
	// Text is ordinary text; Muted is secondary text (ids, hints, borders).
	Text, Muted lipgloss.TerminalColor
	// Accent marks keys, the active tab and titles.
	Accent lipgloss.TerminalColor
	// HeaderFg and HeaderBg colour the top bar.
	HeaderFg, HeaderBg lipgloss.TerminalColor
	// SelectedFg and SelectedBg colour the row under the cursor.
	SelectedFg, SelectedBg lipgloss.TerminalColor
	// Marked colours rows marked for a bulk action.
	Marked lipgloss.TerminalColor
	// Good, Warn and Bad colour health: ready, degraded, failed.
	Good, Warn, Bad lipgloss.TerminalColor
	// BadgeFg and BadgeBg colour the SIMULATED and READ-ONLY badges.
	BadgeFg, BadgeBg lipgloss.TerminalColor
	// Reverse draws the selected row in reverse video instead of (or on top
	// of) SelectedFg/SelectedBg: the no-color and high-contrast themes use it.
	Reverse bool
	// Bold makes titles and headers bold.
	Bold bool
}

// Dark is the default theme, for dark terminal backgrounds.
func Dark() Theme {
	return Theme{
		Name: "dark", Text: lipgloss.Color("252"), Muted: lipgloss.Color("245"), Accent: lipgloss.Color("86"),
		HeaderFg: lipgloss.Color("230"), HeaderBg: lipgloss.Color("24"),
		SelectedFg: lipgloss.Color("231"), SelectedBg: lipgloss.Color("25"), Marked: lipgloss.Color("213"),
		Good: lipgloss.Color("78"), Warn: lipgloss.Color("214"), Bad: lipgloss.Color("203"),
		BadgeFg: lipgloss.Color("16"), BadgeBg: lipgloss.Color("214"), Bold: true,
	}
}

// Light is for light terminal backgrounds: dark text, saturated accents.
func Light() Theme {
	return Theme{
		Name: "light", Text: lipgloss.Color("235"), Muted: lipgloss.Color("242"), Accent: lipgloss.Color("25"),
		HeaderFg: lipgloss.Color("231"), HeaderBg: lipgloss.Color("25"),
		SelectedFg: lipgloss.Color("16"), SelectedBg: lipgloss.Color("153"), Marked: lipgloss.Color("127"),
		Good: lipgloss.Color("28"), Warn: lipgloss.Color("130"), Bad: lipgloss.Color("160"),
		BadgeFg: lipgloss.Color("231"), BadgeBg: lipgloss.Color("130"), Bold: true,
	}
}

// HighContrast uses only the 16 base colours at full intensity, bold
// titles and reverse-video selection.
func HighContrast() Theme {
	return Theme{
		Name: "high-contrast", Text: lipgloss.Color("15"), Muted: lipgloss.Color("15"), Accent: lipgloss.Color("11"),
		HeaderFg: lipgloss.Color("0"), HeaderBg: lipgloss.Color("15"),
		Marked: lipgloss.Color("14"),
		Good:   lipgloss.Color("10"), Warn: lipgloss.Color("11"), Bad: lipgloss.Color("9"),
		BadgeFg: lipgloss.Color("0"), BadgeBg: lipgloss.Color("11"), Reverse: true, Bold: true,
	}
}

// NoColor emits no colour at all (https://no-color.org): only bold and
// reverse video, and the console's text markers, show state.
func NoColor() Theme {
	return Theme{Name: "no-color", Reverse: true, Bold: true}
}

// Names lists the themes a user may choose, in display order.
func Names() []string { return []string{"dark", "light", "high-contrast", "no-color"} }

// ByName returns the theme called name (case-insensitive; "hc" is
// high-contrast).
func ByName(name string) (Theme, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "", "dark":
		return Dark(), nil
	case "light":
		return Light(), nil
	case "high-contrast", "highcontrast", "hc", "contrast":
		return HighContrast(), nil
	case "no-color", "nocolor", "none", "plain":
		return NoColor(), nil
	}
	return Theme{}, fmt.Errorf("unknown theme %q (want one of %s)", name, strings.Join(Names(), ", "))
}

// Resolve chooses the theme: the flag value when given, else EnvVar, else
// Default. When NO_COLOR is set to anything but the empty string, the
// no-color theme wins whatever was asked. An unknown name is an error that
// says where it came from.
func Resolve(flag string, env func(string) (string, bool)) (Theme, error) {
	if v, ok := env("NO_COLOR"); ok && v != "" {
		return NoColor(), nil
	}
	name, source := Default, ""
	if flag != "" {
		name, source = flag, "--theme"
	} else if v, ok := env(EnvVar); ok && v != "" {
		name, source = v, EnvVar
	}
	t, err := ByName(name)
	if err != nil {
		return Theme{}, fmt.Errorf("%s: %w", source, err)
	}
	return t, nil
}

// Colorless reports whether the theme emits no colour.
func (t Theme) Colorless() bool {
	return !slices.ContainsFunc([]lipgloss.TerminalColor{t.Text, t.Muted, t.Accent, t.HeaderFg, t.HeaderBg,
		t.SelectedFg, t.SelectedBg, t.Marked, t.Good, t.Warn, t.Bad, t.BadgeFg, t.BadgeBg},
		func(c lipgloss.TerminalColor) bool { return c != nil })
}
