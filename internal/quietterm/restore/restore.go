// Package restore undoes package quietterm once bubbletea has initialised:
// it puts TERM back and replaces the terminal state that bubbletea's init
// computed while TERM was "dumb" (lipgloss's default renderer and termenv's
// default output), so that they detect the terminal afresh, when first
// used. Import it (for its side effect) wherever bubbletea is imported.
package restore

import (
	"os"

	_ "github.com/charmbracelet/bubbletea" // must initialise before this package
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/spectacles-go/spectacles/internal/quietterm"
)

func init() {
	quietterm.Restore()
	termenv.SetDefaultOutput(termenv.NewOutput(os.Stdout))
	lipgloss.SetDefaultRenderer(lipgloss.NewRenderer(os.Stdout))
}
