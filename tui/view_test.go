package tui

import "testing"

func TestCheckView(t *testing.T) {
	for _, ok := range []string{"streams", ":streams", "pending MESSAGE_CREATE", "shards", "overview"} {
		if err := CheckView(ok); err != nil {
			t.Errorf("CheckView(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"bogus", "", "quit"} {
		if err := CheckView(bad); err == nil {
			t.Errorf("CheckView(%q) = nil, want an error", bad)
		}
	}
}
