// Package quietterm keeps bubbletea's package initialisation from asking
// the terminal anything.
//
// bubbletea v1 (tea_init.go) calls lipgloss.HasDarkBackground in its init
// function: on a terminal, termenv writes the queries OSC 11 ("\x1b]11;?")
// and CSI 6n and waits up to 5 s for the answers. Every command of a binary
// that links bubbletea paid for it, even --help, and a terminal that does
// not answer (script(1), some multiplexers, a serial console) made each one
// stall for 5 s. The console does not need that answer: it renders through
// its own lipgloss renderer, made when it starts.
//
// Importing this package sets TERM to "dumb", for which termenv asks
// nothing, before bubbletea's init runs; package restore, imported by every
// package that imports bubbletea, puts TERM back after it. The order is the
// one the Go specification gives (packages initialise in import-path order
// once their imports have): this package imports only os, and bubbletea
// imports os/signal, which sorts after this path, so this package
// initialises first. TestNoTerminalQueryOutsideConsole checks it on a
// pseudo-terminal.
package quietterm

import "os"

// saved is TERM as the process got it. Package-level by necessity: it is
// what init changed and Restore undoes, once, before main runs.
var saved struct {
	value    string
	set      bool
	replaced bool
}

func init() {
	saved.value, saved.set = os.LookupEnv("TERM")
	saved.replaced = os.Setenv("TERM", "dumb") == nil
}

// Restore puts TERM back as the process got it. It is called by package
// restore's init; calling it again does nothing.
func Restore() {
	if !saved.replaced {
		return
	}
	saved.replaced = false
	if saved.set {
		_ = os.Setenv("TERM", saved.value)
	} else {
		_ = os.Unsetenv("TERM")
	}
}
