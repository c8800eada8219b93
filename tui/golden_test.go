package tui

import (
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/golden"
)

// TestGolden renders every view of the fixed system at 100×30 with the
// plain colour profile and compares it with testdata/TestGolden/*.golden
// (go test ./tui -run TestGolden -update rewrites them).
func TestGolden(t *testing.T) {
	cases := []struct {
		name     string
		readOnly bool
		steps    func(d *driver)
	}{
		{"overview", false, func(d *driver) {}},
		{"streams", false, func(d *driver) { d.keys("2") }},
		{"groups", false, func(d *driver) { d.keys("2", "enter") }},
		{"pending", false, func(d *driver) { d.command("pending MESSAGE_CREATE sim-bot"); d.keys("space") }},
		{"payload", false, func(d *driver) { d.command("pending MESSAGE_CREATE sim-bot"); d.keys("enter") }},
		{"confirm", false, func(d *driver) { d.command("pending MESSAGE_CREATE sim-bot"); d.keys("A") }},
		{"tail", false, func(d *driver) { d.command("tail MESSAGE_CREATE,MESSAGE_CREATE:dlq") }},
		{"publish", false, func(d *driver) {
			d.keys("6")
			d.typeText("MESSAGE_CREATE")
			d.keys("tab", "tab")
			d.typeText(`{"content": "hi"}`)
		}},
		{"send", false, func(d *driver) { d.keys("7"); d.typeText("81384788765712384"); d.keys("esc") }},
		{"shards", false, func(d *driver) { d.keys("8") }},
		{"help", false, func(d *driver) { d.keys("2", "?") }},
		{"palette", false, func(d *driver) { d.keys(":"); d.typeText("pe") }},
		{"read-only", true, func(d *driver) { d.command("pending MESSAGE_CREATE sim-bot"); d.keys("?") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := plainOptions()
			opts.ReadOnly = c.readOnly
			d, _, _, _ := newFixtureDriver(t, opts)
			c.steps(d)
			golden.RequireEqual(t, d.view())
		})
	}
	t.Run("too-small", func(t *testing.T) {
		d, _, _, _ := newFixtureDriver(t, plainOptions())
		d.send(tea.WindowSizeMsg{Width: 70, Height: 16})
		golden.RequireEqual(t, d.view())
	})
}
