package hub

import (
	"testing"

	"github.com/spectacles-go/spectacles/core/conformance"
)

func TestPresence(t *testing.T) {
	t.Parallel()
	conformance.RunPresence(t, setup("ws"))
}
