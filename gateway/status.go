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

// Snapshot returns the node's status now.
func (m *Manager) Snapshot(group, client string) NodeStatus {
	return NodeStatus{Group: group, Client: client, ShardCount: m.ShardCount(), Queue: m.QueueLength(),
		Published: m.Published(), UpdatedAt: time.Now().UTC(), Shards: m.Shards()}
}

// StatusReporter publishes a node's status where other processes (a
// console, `spectacles shards`) can read it; gateway/redisgw has one over
// Redis.
type StatusReporter interface {
	// Report publishes status; it is forgotten after ttl unless reported
	// again, so that a dead node disappears.
	Report(ctx context.Context, status NodeStatus, ttl time.Duration) error
	// Remove withdraws the status of the node client of group.
	Remove(ctx context.Context, group, client string) error
}

// ReportStatus reports the node's status to r every interval (with a time
// to live of three intervals) until ctx ends, then removes it.
func (m *Manager) ReportStatus(ctx context.Context, r StatusReporter, group, name string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		wctx, cancel := context.WithTimeout(ctx, interval)
		err := r.Report(wctx, m.Snapshot(group, name), 3*interval)
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
