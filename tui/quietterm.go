package tui

// bubbletea's init asks the terminal for its background colour; these keep
// it from doing so in every command of the binary (see package quietterm).
import _ "github.com/spectacles-go/spectacles/internal/quietterm/restore"
