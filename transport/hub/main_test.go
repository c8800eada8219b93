package hub

import (
	"context"
	"log/slog"
	"testing"

	"go.uber.org/goleak"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// TestMain fails the package when a goroutine outlives the tests: every
// hub and client the tests start must be closed.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startHub serves a hub on a free local port until the test ends and
// returns it with its address.
func startHub(t testing.TB) (*Server, string) {
	t.Helper()
	s := NewServer(ServerConfig{Logger: brokertest.Logger(t, slog.LevelInfo)})
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		_ = s.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, ln.Addr().String()
}

// openClient opens a client of the hub at url and closes it when the test
// ends.
func openClient(t testing.TB, url string, opts core.Options) *Broker {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = brokertest.Logger(t, slog.LevelInfo)
	}
	b, err := Open(brokertest.Context(t), Config{Options: opts, URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
