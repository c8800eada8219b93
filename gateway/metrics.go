package gateway

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spectacles-go/spectacles/core"
)

// Metrics are the gateway's Prometheus metrics, named as spec-tacles/gateway
// names them so that existing dashboards keep working, plus the broker
// side. A nil *Metrics records nothing.
type Metrics struct {
	packetsReceived *prometheus.CounterVec
	packetsSent     *prometheus.CounterVec
	shardsAlive     *prometheus.GaugeVec
	shardState      *prometheus.GaugeVec
	totalShards     prometheus.Gauge
	ping            *prometheus.SummaryVec

	queueLength  prometheus.Gauge
	queueFull    prometheus.Counter
	published    prometheus.Counter
	publishErrs  prometheus.Counter
	deadLettered *prometheus.CounterVec
	routed       *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		packetsReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_packets_received", Help: "Packets received from Discord, by event, opcode and shard.",
		}, []string{"t", "op", "shard"}),
		packetsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_packets_sent", Help: "Packets sent to Discord, by event, opcode and shard.",
		}, []string{"t", "op", "shard"}),
		shardsAlive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_shards_alive", Help: "1 while the shard is connected and ready.",
		}, []string{"id"}),
		shardState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_shard_state", Help: "1 for the state a shard is in (idle, waiting_identify, connecting, identifying, resuming, ready, reconnecting, stopped, failed), 0 for the others it was in.",
		}, []string{"id", "state"}),
		totalShards: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_total_shards", Help: "Shards this process runs.",
		}),
		ping: prometheus.NewSummaryVec(prometheus.SummaryOpts{
			Name: "gateway_ping", Help: "Heartbeat round trip in milliseconds.",
			// spec-tacles/gateway's quantiles, for existing dashboards.
			Objectives: map[float64]float64{0.5: 0.05, 0.9: 0.01, 0.95: 0.005, 0.99: 0.001},
		}, []string{"id"}),
		queueLength: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_dispatch_queue_length", Help: "Dispatches waiting to be published to the broker.",
		}),
		queueFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_dispatch_queue_full_total", Help: "Times a shard found the dispatch queue full: it shed its connection and resumed once the broker caught up.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_broker_published_total", Help: "Dispatches published to the broker.",
		}),
		publishErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_broker_publish_errors_total", Help: "Failed publish attempts (retried).",
		}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_packets_dead_lettered_total", Help: "Worker packets refused and dead-lettered, by event.",
		}, []string{"event"}),
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_packets_routed_total", Help: "Worker packets routed, by where they went (local, republished).",
		}, []string{"to"}),
	}
	for _, c := range []prometheus.Collector{m.packetsReceived, m.packetsSent, m.shardsAlive, m.shardState, m.totalShards, m.ping,
		m.queueLength, m.queueFull, m.published, m.publishErrs, m.deadLettered, m.routed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) received(shard, op int, t string) {
	if m != nil {
		m.packetsReceived.WithLabelValues(t, strconv.Itoa(op), strconv.Itoa(shard)).Inc()
	}
}

func (m *Metrics) sent(shard, op int, t string) {
	if m != nil {
		m.packetsSent.WithLabelValues(t, strconv.Itoa(op), strconv.Itoa(shard)).Inc()
	}
}

func (m *Metrics) alive(shard int, up bool) {
	if m != nil {
		v := 0.0
		if up {
			v = 1
		}
		m.shardsAlive.WithLabelValues(strconv.Itoa(shard)).Set(v)
	}
}

// state moves shard's gateway_shard_state from one state to another.
func (m *Metrics) state(shard int, from, to State) {
	if m != nil {
		id := strconv.Itoa(shard)
		m.shardState.WithLabelValues(id, from.String()).Set(0)
		m.shardState.WithLabelValues(id, to.String()).Set(1)
	}
}

func (m *Metrics) pingMS(shard int, ms float64) {
	if m != nil {
		m.ping.WithLabelValues(strconv.Itoa(shard)).Observe(ms)
	}
}

// unhandledCollector exports a broker's unhandled counts.
type unhandledCollector struct {
	c    core.UnhandledCounter
	desc *prometheus.Desc
}

// UnhandledCollector exports c's counts (core.UnhandledCounter: the
// messages the broker published that no group consumes) as the counter
// gateway_broker_unhandled_total, by event. The Redis driver counts them
// at its checks, every core.UnhandledInterval, so the counter lags that
// much.
func UnhandledCollector(c core.UnhandledCounter) prometheus.Collector {
	return &unhandledCollector{c: c, desc: prometheus.NewDesc("gateway_broker_unhandled_total",
		"Dispatches published to the broker that no group consumes, by event.", []string{"event"}, nil)}
}

// Describe implements prometheus.Collector.
func (u *unhandledCollector) Describe(ch chan<- *prometheus.Desc) { ch <- u.desc }

// Collect implements prometheus.Collector.
func (u *unhandledCollector) Collect(ch chan<- prometheus.Metric) {
	for ev, n := range u.c.UnhandledCounts() {
		ch <- prometheus.MustNewConstMetric(u.desc, prometheus.CounterValue, float64(n), ev)
	}
}
