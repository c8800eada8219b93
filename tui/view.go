package tui

import "fmt"

// CheckView reports whether text names a view the console can open first
// (Options.View): a ":" command that navigates, such as "streams",
// "pending MESSAGE_CREATE" or "shards". The error says why not.
func CheckView(text string) error {
	c, err := parseCommand(text)
	if err != nil || c.special != cmdNav {
		return fmt.Errorf("%q is not a view (try streams, groups STREAM, pending STREAM GROUP, tail EVENT, shards)", text)
	}
	return nil
}
