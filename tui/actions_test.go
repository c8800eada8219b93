package tui

import (
	"context"
	"reflect"
	"testing"

	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
)

// lastConfirm is the last confirmation the driver saw.
func lastConfirm(t *testing.T, d *driver) confirmMsg {
	t.Helper()
	for i := len(d.msgs) - 1; i >= 0; i-- {
		if c, ok := d.msgs[i].(confirmMsg); ok {
			return c
		}
	}
	t.Fatal("no confirmation asked")
	return confirmMsg{}
}

func TestActionsAreValues(t *testing.T) {
	d, ins, _, _ := newFixtureDriver(t, plainOptions())
	d.command("pending MESSAGE_CREATE sim-bot")
	d.keys("A")
	want := []action{ackAction{stream: "MESSAGE_CREATE", group: "sim-bot", ids: []string{"1700000030000-0"}}}
	if got := lastConfirm(t, d).acts; !reflect.DeepEqual(got, want) {
		t.Fatalf("ack asks to run %#v, want %#v", got, want)
	}
	d.keys("n", "c", "enter")
	// The default target is a live consumer other than the entry's owner
	// (worker-1); worker-2 is stale (idle 7m, more than StaleAfter), so it
	// is the console.
	claim := claimAction{stream: "MESSAGE_CREATE", group: "sim-bot", ids: []string{"1700000030000-0"}, to: "console-ops-box",
		consumers: []string{"worker-1", "worker-2"}}
	if got := lastConfirm(t, d).acts; !reflect.DeepEqual(got, []action{claim}) {
		t.Fatalf("claim asks to run %#v, want %#v", got, claim)
	}
	d.keys("n")
	if n := ins.count("Claim") + ins.count("Ack"); n != 0 {
		t.Fatalf("%d calls before any yes", n)
	}
	// An action runs on its own, with one result message.
	msg := claim.run(context.Background(), d.m.sh.backend)
	if a, ok := msg.(claimedMsg); !ok || a.err != nil || a.from != kPending || a.undo == nil {
		t.Fatalf("claim returned %#v", msg)
	}
	if got := ins.claimed["console-ops-box"]; len(got) != 1 {
		t.Fatalf("claimed %v", ins.claimed)
	}
	// The prompt refuses an empty consumer, and runs nothing.
	if _, _, err := claim.withInput("  "); err == nil {
		t.Fatal("an empty consumer was accepted")
	}
}

func TestFormFocusCyclesLeavesAndEdits(t *testing.T) {
	a, b, c := textinput.New(), textinput.New(), textinput.New()
	f := newFormFocus(1, &a, &b, &c)
	focused := func() []bool { return []bool{a.Focused(), b.Focused(), c.Focused()} }
	step := func(k string, want int) {
		t.Helper()
		f.keys()
		if !f.key(keyMsg(k)) {
			t.Fatalf("%s is not a focus key", k)
		}
		if f.cur != want {
			t.Fatalf("%s: focus %d, want %d", k, f.cur, want)
		}
		for i, on := range focused() {
			if on != (i == want) {
				t.Fatalf("%s: field %d focused %v", k, i, on)
			}
		}
	}
	step("tab", 1)
	step("tab", 2)
	step("tab", 0)
	step("shift+tab", 2)
	step("esc", -1)
	if f.editing() || f.key(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("x")}) {
		t.Fatal("x moved the focus, or esc did not leave")
	}
	step("i", 1)
	f.keys()
	if f.key(keyMsg("enter")) {
		t.Fatal("enter in a field moved the focus")
	}
}
