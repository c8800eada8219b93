package hub

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// TestTooLargeKeepsConnection: a command over the hub's limit is answered
// with drs.error and the connection keeps working, on both transports.
func TestTooLargeKeepsConnection(t *testing.T) {
	s := NewServer(ServerConfig{MaxMessageSize: 1024, Logger: brokertest.Logger(t, slog.LevelInfo)})
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), ln) }()
	t.Cleanup(func() { _ = s.Close(); <-done })
	for _, peer := range []func(*testing.T, string) *rawPeer{wsPeer, tcpPeer} {
		p := peer(t, ln.Addr().String())
		p.send(`{"action":"drs.register","key":"r","body":{"client":"big","note":"` + strings.Repeat("x", 5000) + `"}}`)
		if m := p.expect(ActionError, ""); !strings.Contains(reason(m), "longer than 1024 bytes") {
			t.Errorf("too large: %v", m)
		}
		p.send(`{"action":"drs.register","key":"r2","body":{"client":"small"}}`)
		p.expect(ActionResponse, "r2")
	}
}

// TestOrigin: a page of another site cannot open a websocket; programs
// (no Origin), pages of this machine and allowed sites can.
func TestOrigin(t *testing.T) {
	s := NewServer(ServerConfig{AllowOrigins: []string{"https://ok.example"}, Logger: brokertest.Logger(t, slog.LevelInfo)})
	for origin, want := range map[string]bool{"": true, "http://localhost:8080": true, "http://127.0.0.1": true,
		"https://ok.example": true, "https://evil.example": false, "null": false} {
		r, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:7700/", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if got := s.checkOrigin(r); got != want {
			t.Errorf("origin %q: allowed %v, want %v", origin, got, want)
		}
	}
}
