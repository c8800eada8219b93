package restproxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/gateway/simulator"
	"github.com/spectacles-go/spectacles/transport/redis"
	"github.com/spectacles-go/spectacles/transport/redis/redistest"
)

// measure runs op b.N times on 16 goroutines and reports requests/s and
// the p50/p99 latency of one op.
func measure(b *testing.B, op func(i int) error) {
	b.Helper()
	var (
		mu    sync.Mutex
		lat   []time.Duration
		next  atomic.Int64
		errs  atomic.Int64
		wg    sync.WaitGroup
		start = time.Now()
	)
	b.ResetTimer()
	for w := 0; w < 16; w++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				t0 := time.Now()
				if err := op(i); err != nil {
					errs.Add(1)
					continue
				}
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if errs.Load() > 0 {
		b.Fatalf("%d of %d requests failed", errs.Load(), b.N)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50_µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99_µs")
}

// BenchmarkOverhead compares a direct HTTP client with the proxy's three
// ways in (the library, the HTTP side, the broker side over Redis), on the
// same fake, with limits that never bind (a route without a bucket and a
// global limit far above the rate), so that the figures are the proxy's
// own cost.
func BenchmarkOverhead(b *testing.B) {
	rest, err := simulator.NewREST(simulator.RESTConfig{GlobalLimit: 1 << 30, MaxRecords: -1})
	if err != nil {
		b.Fatal(err)
	}
	fakeSrv := httptest.NewServer(rest)
	defer fakeSrv.Close()
	base := fakeSrv.URL + "/api/v10"
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	get := func(url string) error {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", testBot)
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			return io.ErrUnexpectedEOF
		}
		return nil
	}
	p, err := New(Config{APIBase: base, GlobalLimit: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()

	b.Run("direct", func(b *testing.B) {
		measure(b, func(int) error { return get(base + "/voice/regions") })
	})
	b.Run("library", func(b *testing.B) {
		measure(b, func(int) error {
			res, err := p.Do(context.Background(), &Request{Method: "GET", Path: "/voice/regions", Header: http.Header{"Authorization": {testBot}}})
			if err == nil && res.Status != 200 {
				return io.ErrUnexpectedEOF
			}
			return err
		})
	})
	b.Run("http", func(b *testing.B) {
		srv := httptest.NewServer(NewHTTPHandler(p, HTTPConfig{}))
		defer srv.Close()
		measure(b, func(int) error { return get(srv.URL + "/api/v10/voice/regions") })
	})
	b.Run("broker", func(b *testing.B) {
		addr, _ := redistest.Addr(b)
		event := redistest.Unique("REQUEST")
		raw := redistest.Client(b, addr)
		redistest.DeleteKeys(b, raw, event)
		server, err := redis.Open(context.Background(), redis.Config{URL: addr, Options: core.Options{
			Identity: core.Identity{Group: "proxy", Client: "bench"}, Concurrency: 64}})
		if err != nil {
			b.Fatal(err)
		}
		defer server.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := server.Consume(ctx, []string{event}, NewBrokerServer(p, BrokerConfig{}).Handle); err != nil {
			b.Fatal(err)
		}
		caller, err := redis.Open(context.Background(), redis.Config{URL: addr, Options: core.Options{
			Identity: core.Identity{Group: "caller", Client: "bench"}}})
		if err != nil {
			b.Fatal(err)
		}
		defer caller.Close()
		req, _ := msgpack.Marshal(map[string]any{"method": "GET", "path": "/voice/regions", "headers": map[string]any{"Authorization": testBot}})
		measure(b, func(int) error {
			reply, err := caller.Call(context.Background(), event, core.Raw(req))
			if err != nil {
				return err
			}
			var r struct {
				Status int `msgpack:"status"`
				Body   struct {
					Status int `msgpack:"status"`
				} `msgpack:"body"`
			}
			if err := msgpack.Unmarshal(reply.Raw, &r); err != nil || r.Status != 0 || r.Body.Status != 200 {
				return io.ErrUnexpectedEOF
			}
			return nil
		})
	})
}

// BenchmarkBurstWithinLimits sends, per iteration, a burst that Discord's
// default limits allow (200 messages over 40 channels: 5 per channel, the
// bucket's limit, and 4 s of the 50/s global limit) through the proxy and
// reports the fake's 429s (must be 0) and the most requests it saw in any
// one second (must be at most 50).
func BenchmarkBurstWithinLimits(b *testing.B) {
	for b.Loop() {
		rest, err := simulator.NewREST(simulator.RESTConfig{})
		if err != nil {
			b.Fatal(err)
		}
		srv := httptest.NewServer(rest)
		p, err := New(Config{APIBase: srv.URL + "/api/v10"})
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := 0; i < 200; i++ {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				res, err := p.Do(ctx, &Request{Method: "POST", Path: "/channels/" + chanID(i%40) + "/messages",
					Header: http.Header{"Authorization": {testBot}, "Content-Type": {"application/json"}}, Body: []byte(`{"content":"x"}`)})
				if err != nil || res.Status != 200 {
					b.Errorf("%v %v", err, res)
				}
			})
		}
		wg.Wait()
		s := rest.Stats()
		b.ReportMetric(float64(s.ByStatus[429]), "429s")
		b.ReportMetric(float64(rest.MaxGlobalWindow(simulator.IdentityOf(testBot))), "max/1s")
		_ = p.Close()
		srv.Close()
	}
}
