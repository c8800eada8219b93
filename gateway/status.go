package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// StatusKeyPrefix starts the Redis keys under which gateway nodes publish
// their shards' health: {prefix}{group}:{client}.
const StatusKeyPrefix = "spectacles:gateway:"

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

// ReportStatus writes the node's status to Redis every interval (with a
// time to live of three intervals, so that a dead node disappears) until
// ctx ends, then deletes it.
func (m *Manager) ReportStatus(ctx context.Context, client goredis.UniversalClient, group, name string, interval time.Duration) {
	key := StatusKeyPrefix + group + ":" + name
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		b, err := json.Marshal(m.Snapshot(group, name))
		if err == nil {
			wctx, cancel := context.WithTimeout(ctx, interval)
			err = client.Set(wctx, key, b, 3*interval).Err()
			cancel()
		}
		if err != nil && ctx.Err() == nil {
			m.log.Debug("could not report the gateway status", "err", err)
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = client.Del(dctx, key).Err()
			cancel()
			return
		case <-t.C:
		}
	}
}

// ReadNodeStatuses returns the statuses gateway nodes published to Redis,
// sorted by group and client.
func ReadNodeStatuses(ctx context.Context, client goredis.UniversalClient) ([]NodeStatus, error) {
	var keys []string
	iter := client.Scan(ctx, 0, StatusKeyPrefix+"*", 500).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("scan gateway statuses: %w", err)
	}
	var out []NodeStatus
	for _, k := range keys {
		b, err := client.Get(ctx, k).Bytes()
		if errors.Is(err, goredis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", k, err)
		}
		var ns NodeStatus
		if err := json.Unmarshal(b, &ns); err != nil {
			return nil, fmt.Errorf("read %s: %w", k, err)
		}
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int {
		if a.Group != b.Group {
			if a.Group < b.Group {
				return -1
			}
			return 1
		}
		if a.Client < b.Client {
			return -1
		}
		if a.Client > b.Client {
			return 1
		}
		return 0
	})
	return out, nil
}
