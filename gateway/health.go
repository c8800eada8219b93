package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spectacles-go/spectacles/core"
)

// errShardsNotReady is wrapped by the errors of Manager.Ready for shards.
var errShardsNotReady = errors.New("not ready")

// Ready returns nil once Run has started and every shard this process runs
// is connected and ready; otherwise an error saying, in a few words, which
// is not ("shard 1 is resuming").
func (m *Manager) Ready() error {
	select {
	case <-m.started:
	default:
		return fmt.Errorf("shards are starting: %w", errShardsNotReady)
	}
	ids, err := ResolveShardIDs(m.cfg.ShardIDs, m.ShardCount())
	if err != nil {
		return err
	}
	for _, id := range ids {
		s := m.shard(id)
		if s == nil {
			return fmt.Errorf("shard %d is not running: %w", id, errShardsNotReady)
		}
		if st := s.Status().State; st != Ready {
			return fmt.Errorf("shard %d is %s: %w", id, st, errShardsNotReady)
		}
	}
	return nil
}

// BrokerReachable checks that b answers, within timeout, when it can be
// asked (it implements core.Inspector); a broker that cannot be asked is
// taken as reachable.
func BrokerReachable(ctx context.Context, b core.Broker, timeout time.Duration) error {
	ins, ok := b.(core.Inspector)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := ins.Server(ctx); err != nil {
		return fmt.Errorf("broker unreachable: %w", err)
	}
	return nil
}

// HealthHandler serves /healthz (200 while the process is up) and /readyz
// (200 when ready returns nil, else 503 with its error as a short plain
// text reason), for container healthchecks and load balancers.
func HealthHandler(ready func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := ready(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}
