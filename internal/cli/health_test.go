package cli

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/gateway/simulator"
	"github.com/spectacles-go/spectacles/transport/redis/embedded"
)

// get returns the status and body of a GET, or 0 when it failed.
func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestGatewayHealthAndReadiness: beside the metrics, /healthz answers 200
// while the process is up, and /readyz 200 only when the broker answers
// and every shard is ready, else 503 with the reason.
func TestGatewayHealthAndReadiness(t *testing.T) {
	const token = "sekret-token-health-0123456789"
	sim := startSimulator(t, simulator.Config{Token: token, Shards: 2, Guilds: 4, MaxConcurrency: 2,
		HeartbeatInterval: time.Second, IdentifyInterval: 10 * time.Millisecond})
	// A Redis of its own, to stop it.
	e, err := embedded.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	prom := freeAddr(t)
	env := map[string]string{
		"REDIS_URL": e.URL(), "DISCORD_TOKEN": token, "DISCORD_API_PROTOCOL": "http",
		"DISCORD_API_HOST": strings.TrimPrefix(sim.URL(), "http://"), "PROMETHEUS_ADDRESS": prom,
		"GATEWAY_DRAIN_TIMEOUT": "1s",
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"gateway"}, strings.NewReader(""), io.Discard, &stderr, mapLookup(env))
	}()
	eventually(t, "/healthz 200", func() bool { code, _ := get("http://" + prom + "/healthz"); return code == 200 })
	eventually(t, "/readyz 200", func() bool { code, _ := get("http://" + prom + "/readyz"); return code == 200 })
	// The container healthcheck, as deploy/compose.yaml runs it (":port").
	_, port, _ := strings.Cut(prom, ":")
	hc := invocation{env: map[string]string{"PROMETHEUS_ADDRESS": ":" + port}}
	if r := hc.run(t.Context(), "healthcheck", "--ready"); r.code != 0 || !strings.Contains(r.stdout, "ready") {
		t.Errorf("healthcheck --ready on a ready node: %d %q %q", r.code, r.stdout, r.stderr)
	}

	// Discord gone: the shards reconnect, the node is not ready.
	_ = sim.Close()
	var body string
	eventually(t, "/readyz 503 for the shards", func() bool {
		var code int
		code, body = get("http://" + prom + "/readyz")
		return code == 503 && strings.Contains(body, "shard ")
	})
	if code, _ := get("http://" + prom + "/healthz"); code != 200 {
		t.Errorf("/healthz %d while the process is up", code)
	}
	if r := hc.run(t.Context(), "healthcheck", "--ready"); r.code == 0 || !strings.Contains(r.stderr, "503") {
		t.Errorf("healthcheck --ready on a node that is not ready: %d %q", r.code, r.stderr)
	}
	if r := hc.run(t.Context(), "healthcheck"); r.code != 0 {
		t.Errorf("healthcheck (liveness): %d %q", r.code, r.stderr)
	}
	// The broker gone: that is the reason given.
	e.Close()
	eventually(t, "/readyz 503 for the broker", func() bool {
		var code int
		code, body = get("http://" + prom + "/readyz")
		return code == 503 && strings.Contains(body, "broker unreachable")
	})
	if strings.Contains(body, token) || strings.Count(body, "\n") != 1 {
		t.Errorf("/readyz body %q: want one line, no secret", body)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the gateway did not stop")
	}
	if strings.Contains(stderr.String(), token) {
		t.Error("token in the log")
	}
}
