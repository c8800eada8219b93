package gateway

import (
	"context"
	"time"
)

// NodeStatus is what a gateway node publishes about itself, so that a
// console or `spectacles shards` on another machine can show its shards.
type NodeStatus struct {
	Group      string    `json:"group"`
	Client     string    `json:"client"`
	ShardCount int       `json:"shard_count"`
	Queue      int       `json:"queue"`
	Published  uint64    `json:"published"`
	UpdatedAt  time.Time `json:"updated_at"`
	Shards     []Status  `json:"shards"`
}

// Stale reports a node whose last report (UpdatedAt) is older than
// NodeStaleAfter at time now: its shards' state is its last known one.
func (n NodeStatus) Stale(now time.Time) bool {
	return !n.UpdatedAt.IsZero() && now.Sub(n.UpdatedAt) > NodeStaleAfter
}

// Snapshot returns the node's status now.
func (m *Manager) Snapshot(group, client string) NodeStatus {
	return NodeStatus{Group: group, Client: client, ShardCount: m.ShardCount(), Queue: m.QueueLength(),
		Published: m.Published(), UpdatedAt: time.Now().UTC(), Shards: m.Shards()}
}

// NodeStaleAfter is the age of a node's last report after which a reader
// (the console, `spectacles shards`) shows the node as STALE: it stopped
// reporting (killed, hung, or cut off from Redis). Nodes report every few
// seconds.
const NodeStaleAfter = 10 * time.Second

// NodeStatusTTL is how long a node's last report is kept after it stops
// reporting, so that a node killed without withdrawing its status (kill
// -9, a crash, a lost network) is shown as STALE with its last state for
// that long, rather than vanishing: it outlives NodeStaleAfter by a wide
// margin. A node that stops cleanly removes its status at once.
const NodeStatusTTL = 15 * time.Minute

// StatusReporter publishes a node's status where other processes (a
// console, `spectacles shards`) can read it; gateway/redisgw has one over
// Redis.
type StatusReporter interface {
	// Report publishes status; it is forgotten after ttl unless reported
	// again, so that a dead node disappears in the end.
	Report(ctx context.Context, status NodeStatus, ttl time.Duration) error
	// Remove withdraws the status of the node client of group.
	Remove(ctx context.Context, group, client string) error
}

// ReportStatus reports the node's status to r every interval until ctx
// ends, then removes it. Each report lives NodeStatusTTL (or three
// intervals, if longer): a node that dies without removing it is read as
// STALE, by the age of its UpdatedAt, before it disappears.
func (m *Manager) ReportStatus(ctx context.Context, r StatusReporter, group, name string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		wctx, cancel := context.WithTimeout(ctx, interval)
		err := r.Report(wctx, m.Snapshot(group, name), max(NodeStatusTTL, 3*interval))
		cancel()
		if err != nil && ctx.Err() == nil {
			m.log.Debug("could not report the gateway status", "err", err)
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = r.Remove(dctx, group, name)
			cancel()
			return
		case <-t.C:
		}
	}
}
