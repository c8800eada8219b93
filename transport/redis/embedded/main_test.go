package embedded

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when any goroutine outlives the tests: every
// server, connection and client the tests make must be closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
