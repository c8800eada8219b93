package tui

import (
	"fmt"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/golden"
)

// TestGoldenSizes renders the views at the smallest useful terminal
// (80×24) and a large one (160×48): nothing that has room is cut (ids,
// ":dlq" suffixes, node names), and help lists every command.
func TestGoldenSizes(t *testing.T) {
	steps := []struct {
		name  string
		steps func(d *driver)
	}{
		{"overview", func(d *driver) {}},
		{"streams", func(d *driver) { d.keys("2") }},
		{"groups", func(d *driver) { d.keys("2", "enter") }},
		{"pending", func(d *driver) { d.command("pending MESSAGE_CREATE sim-bot") }},
		{"tail", func(d *driver) { d.command("tail MESSAGE_CREATE,MESSAGE_CREATE:dlq") }},
		{"publish", func(d *driver) { d.keys("6") }},
		{"send", func(d *driver) { d.keys("7") }},
		{"shards", func(d *driver) { d.keys("8") }},
		{"help", func(d *driver) { d.keys("2", "?") }},
	}
	for _, size := range [][2]int{{80, 24}, {160, 48}} {
		for _, s := range steps {
			t.Run(fmt.Sprintf("%s-%dx%d", s.name, size[0], size[1]), func(t *testing.T) {
				d, _, _, _ := newFixtureDriver(t, plainOptions())
				d.send(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
				s.steps(d)
				golden.RequireEqual(t, d.view())
			})
		}
	}
}
