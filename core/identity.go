package core

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode"
)

// ErrInvalidIdentity is returned when a group or client name is missing or
// unusable as a broker name.
var ErrInvalidIdentity = errors.New("invalid identity")

// Identity names a service instance. Group is shared by every instance of a
// service: each message is delivered at most once to one client of each
// group. Client names this instance within its group.
type Identity struct {
	// Group is the service's name, shared by all its instances. Required.
	Group string
	// Client is this instance's name. It should be stable across restarts:
	// a client that comes back under the same name keeps its pending
	// messages instead of stranding them. DefaultClient gives such a name.
	Client string
}

// Validate reports whether both names are present and contain no whitespace
// or control characters.
func (id Identity) Validate() error {
	if err := validName("group", id.Group); err != nil {
		return err
	}
	return validName("client", id.Client)
}

// String formats the identity as group/client.
func (id Identity) String() string { return id.Group + "/" + id.Client }

func validName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s name is required", ErrInvalidIdentity, what)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%w: %s name %q contains whitespace or control characters", ErrInvalidIdentity, what, name)
		}
	}
	return nil
}

// DefaultClient returns a client name that stays the same across restarts
// of this machine's process: the host name, cleaned of characters brokers
// dislike, or "spectacles" when the host name is unknown. Instances that
// share a host should set their own names.
func DefaultClient() string {
	host, err := os.Hostname()
	if err != nil {
		return "spectacles"
	}
	return cleanName(host, "spectacles")
}

func cleanName(s, fallback string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	if s == "" {
		return fallback
	}
	return s
}
