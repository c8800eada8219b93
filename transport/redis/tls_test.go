package redis

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// hostPort returns the host:port of a server URL such as serverURL's.
func hostPort(url string) string {
	if _, rest, ok := strings.Cut(url, "://"); ok {
		url = rest
	}
	if i := strings.LastIndex(url, "@"); i >= 0 {
		url = url[i+1:]
	}
	addr, _, _ := strings.Cut(url, "/")
	return addr
}

// TestRedissToPlaintextServer: rediss:// to a server that speaks plain
// RESP fails at once and says what to change, rather than waiting out the
// dial timeouts and their retries (25 s) to say "context deadline exceeded".
func TestRedissToPlaintextServer(t *testing.T) {
	url, _ := serverURL(t)
	addr := hostPort(url)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	b, err := Open(ctx, Config{URL: "rediss://" + addr})
	took := time.Since(start)
	if err == nil {
		b.Close()
		t.Fatal("Open over TLS to a plaintext server succeeded")
	}
	want := "TLS handshake with " + addr + " failed: the server does not speak TLS (use redis:// instead of rediss://)"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if strings.Count(err.Error(), addr) != 1 {
		t.Errorf("error %q names the server more than once", err)
	}
	// A bound on a hang (the handshake used to wait for the dial timeout,
	// four times), not a speed measure.
	if took > 15*time.Second {
		t.Errorf("Open took %s to fail", took)
	}
}

// TestRedisToTLSServer: redis:// to a server that speaks TLS says so.
func TestRedisToTLSServer(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	b, err := Open(ctx, Config{URL: "redis://" + addr})
	took := time.Since(start)
	if err == nil {
		b.Close()
		t.Fatal("Open in plaintext to a TLS server succeeded")
	}
	want := "the server speaks TLS (use rediss:// instead of redis://)"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if took > 15*time.Second {
		t.Errorf("Open took %s to fail", took)
	}
}
