package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway/simulator"
	"github.com/spectacles-go/spectacles/internal/brokertest"
	"github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

// TestManagerUncertainPublishRetryDoesNotDuplicate: a batch of dispatches
// reaches Redis but its reply is lost, so the publish fails with
// core.ErrPublishUncertain and the dispatch queue retries it; the stream
// still holds every dispatch Discord sent once, in order.
func TestManagerUncertainPublishRetryDoesNotDuplicate(t *testing.T) {
	env := newManagerEnv(t, 1, func(c *simulator.Config) {
		c.TrafficRate = 300
		c.TrafficEvents = []string{"MESSAGE_CREATE"}
	})
	// Load the script, so that the proxy sees the EVALSHA of a publish.
	warm := redistest.Unique("spectacles-test-warm")
	redistest.DeleteKeys(t, env.raw, warm)
	if _, err := env.broker.PublishSequenced(context.Background(), []core.SequencedOutgoing{{Outgoing: core.Outgoing{Event: warm, Data: "x"}}}); err != nil {
		t.Fatal(err)
	}
	opts, err := goredis.ParseURL(env.url)
	if err != nil {
		t.Fatal(err)
	}
	// The proxy forwards the first publishing command (XADD, or the
	// EVALSHA of a sequenced publish) and then, once Redis has had time
	// to run it, closes the client's connection instead of passing the
	// reply on: the publisher gets an error that says the publish may
	// have happened, and it did.
	p := brokertest.StartReplyEater(t, opts.Addr, brokertest.EaterConfig{
		Triggers: []string{"xadd", "evalsha"}, Drop: true, Once: true, Settle: 200 * time.Millisecond,
	})
	opts.Addr = p.Addr()
	opts.MaxRetries = -1 // the queue retries, not the client
	opts.ReadTimeout = time.Second
	client := goredis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	broker, err := redis.NewWithClient(client, redis.Config{Options: core.Options{
		Identity: core.Identity{Group: env.group, Client: "test"}, MessageTimeout: 500 * time.Millisecond, MaxDeliveries: 3,
		Logger: testLogger(t),
		// No presence: its XADD of spectacles.instance.connected would be
		// the publish the proxy eats.
		Announce: core.Announcement{Disabled: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = broker.Close() })
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m, stop := env.run(t, func(c *ManagerConfig) {
		c.Broker, c.Events, c.Metrics = broker, []string{"MESSAGE_CREATE"}, metrics
	})
	waitFor(t, "a publish whose reply was lost", func() bool { return p.Eaten.Load() > 0 })
	waitFor(t, "the queue to retry and go on", func() bool {
		return publishErrors(t, reg) >= 1 && env.raw.XLen(context.Background(), "MESSAGE_CREATE").Val() >= 200
	})
	env.sim.SetTrafficRate(0)
	n := checkStreamExact(t, env, m, stop)
	t.Logf("%d dispatches, once each, through %v failed publish", n, publishErrors(t, reg))
}

// publishErrors reads gateway_broker_publish_errors_total.
func publishErrors(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "gateway_broker_publish_errors_total" && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
