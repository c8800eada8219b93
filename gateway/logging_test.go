package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// captureHandler records every record at Info or above with the shard
// attribute it was logged with (-1 without one).
type captureHandler struct {
	mu    *sync.Mutex
	recs  *[]captured
	shard int
}

type captured struct {
	shard int
	msg   string
	level slog.Level
}

func newCapture() *captureHandler {
	return &captureHandler{mu: &sync.Mutex{}, recs: &[]captured{}, shard: -1}
}

func (h *captureHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, captured{shard: h.shard, msg: r.Message, level: r.Level})
	return nil
}

func (h *captureHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	for _, a := range attrs {
		if a.Key == "shard" {
			c.shard = int(a.Value.Int64())
		}
	}
	return &c
}

func (h *captureHandler) WithGroup(string) slog.Handler { return h }

func (h *captureHandler) records() []captured {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]captured(nil), *h.recs...)
}

// TestInfoLogsAreOncePerConnection: at info a shard logs READY, RESUMED
// and each close once, never per dispatch, so that a busy bot's log stays
// readable; and gateway_ping has spec-tacles/gateway's quantiles.
func TestInfoLogsAreOncePerConnection(t *testing.T) {
	const dispatches = 300
	env := newManagerEnv(t, 2, nil)
	logs := newCapture()
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m, stop := env.run(t, func(c *ManagerConfig) {
		c.Logger, c.Metrics, c.Events = slog.New(logs), metrics, []string{"MESSAGE_CREATE"}
	})
	for i := range dispatches {
		g := env.sim.Guilds()[i%len(env.sim.Guilds())]
		if err := env.sim.Dispatch(g.ID, "MESSAGE_CREATE", map[string]any{"guild_id": g.ID, "content": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every dispatch published", func() bool { return m.Published() >= dispatches })
	if err := env.sim.DropConnection(0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "shard 0 resumed", func() bool {
		for _, r := range logs.records() {
			if r.shard == 0 && r.msg == "shard resumed" {
				return true
			}
		}
		return false
	})
	waitFor(t, "a heartbeat round trip on each shard", func() bool {
		return strings.Contains(scrape(t, reg), `gateway_ping_count{id="1"}`) && strings.Contains(scrape(t, reg), `gateway_ping_count{id="0"}`)
	})
	text := scrape(t, reg)
	for _, q := range []string{"0.5", "0.9", "0.95", "0.99"} {
		if !strings.Contains(text, `gateway_ping{id="0",quantile="`+q+`"}`) {
			t.Errorf("gateway_ping has no quantile %s:\n%s", q, grepLines(text, "gateway_ping"))
		}
	}
	stop()

	perShard := map[int][]string{}
	for _, r := range logs.records() {
		perShard[r.shard] = append(perShard[r.shard], r.msg)
	}
	count := func(shard int, msg string) (n int) {
		for _, m := range perShard[shard] {
			if m == msg {
				n++
			}
		}
		return n
	}
	for shard := range 2 {
		if n := count(shard, "shard ready"); n != 1 {
			t.Errorf("shard %d logged READY %d times at info, want once: %q", shard, n, perShard[shard])
		}
		// Bounded, whatever the number of dispatches: ready, the drop
		// (reconnecting), resumed, stopped.
		if n := len(perShard[shard]); n > 6 {
			t.Errorf("shard %d logged %d lines at info for %d dispatches: %q", shard, n, dispatches, perShard[shard])
		}
	}
	if count(0, "shard resumed") != 1 || count(0, "reconnecting") != 1 {
		t.Errorf("shard 0's drop and resume: %q", perShard[0])
	}
	if n := len(perShard[-1]); n > 6 {
		t.Errorf("the manager logged %d lines at info: %q", n, perShard[-1])
	}
}

func scrape(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grepLines(text, sub string) string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
