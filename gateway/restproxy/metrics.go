package restproxy

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// maxRouteLabels bounds the distinct route labels; later routes are
// counted as "other".
const maxRouteLabels = 500

// Metrics are the proxy's Prometheus metrics. Labels are bounded: the
// route template (at most 500, then "other"), the HTTP status and the 429
// scope; never a raw path, an id or a token. A nil *Metrics records
// nothing.
type Metrics struct {
	requests  *prometheus.CounterVec
	responses *prometheus.CounterVec
	limited   *prometheus.CounterVec
	upstreamS *prometheus.HistogramVec
	waitS     *prometheus.HistogramVec
	invalidG  prometheus.Gauge

	mu     sync.Mutex
	routes map[string]bool
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spectacles_proxy_requests_total", Help: "Requests received by the REST proxy, by route template.",
		}, []string{"route"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spectacles_proxy_responses_total", Help: "Discord's answers, by route template and HTTP status.",
		}, []string{"route", "status"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spectacles_proxy_ratelimited_total", Help: "429s from Discord, by scope (user, shared, global, sublimit, cloudflare).",
		}, []string{"scope"}),
		upstreamS: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spectacles_proxy_upstream_seconds", Help: "Time of one request to Discord, by route template.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"route"}),
		waitS: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spectacles_proxy_wait_seconds", Help: "Time a request waited on rate limits before it was sent, by route template.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12),
		}, []string{"route"}),
		invalidG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spectacles_proxy_invalid_requests", Help: "Invalid requests (401, 403, non-shared 429) in the last 10 minutes.",
		}),
		routes: map[string]bool{},
	}
	for _, c := range []prometheus.Collector{m.requests, m.responses, m.limited, m.upstreamS, m.waitS, m.invalidG} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// RegisterBuckets adds the gauge spectacles_proxy_buckets, read from f at
// each scrape.
func RegisterBuckets(reg prometheus.Registerer, f func() float64) error {
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "spectacles_proxy_buckets", Help: "Rate-limit buckets the store holds.",
	}, f))
}

// label bounds a route label.
func (m *Metrics) label(route string) string {
	if m == nil {
		return route
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.routes[route] {
		return route
	}
	if len(m.routes) >= maxRouteLabels {
		return "other"
	}
	m.routes[route] = true
	return route
}

func (m *Metrics) request(route string) {
	if m != nil {
		m.requests.WithLabelValues(route).Inc()
	}
}

func (m *Metrics) response(route string, status int) {
	if m != nil {
		m.responses.WithLabelValues(route, strconv.Itoa(status)).Inc()
	}
}

func (m *Metrics) rateLimited(scope string) {
	if m != nil {
		m.limited.WithLabelValues(scope).Inc()
	}
}

func (m *Metrics) upstream(route string, d time.Duration) {
	if m != nil {
		m.upstreamS.WithLabelValues(route).Observe(d.Seconds())
	}
}

func (m *Metrics) waited(route string, d time.Duration) {
	if m != nil {
		m.waitS.WithLabelValues(route).Observe(d.Seconds())
	}
}

func (m *Metrics) invalid(n int) {
	if m != nil {
		m.invalidG.Set(float64(n))
	}
}
