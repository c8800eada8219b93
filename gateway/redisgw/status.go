package redisgw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/gateway"
)

// StatusKeyPrefix starts the Redis keys under which gateway nodes publish
// their shards' health: {prefix}{group}:{client}.
const StatusKeyPrefix = "spectacles:gateway:"

// StatusReporter publishes a gateway node's status to Redis under
// StatusKeyPrefix (gateway.StatusReporter, for Manager.ReportStatus).
type StatusReporter struct {
	client goredis.UniversalClient
}

// NewStatusReporter makes a reporter writing to client.
func NewStatusReporter(client goredis.UniversalClient) *StatusReporter {
	return &StatusReporter{client: client}
}

func statusKey(group, client string) string { return StatusKeyPrefix + group + ":" + client }

// Report implements gateway.StatusReporter: it sets the node's key to its
// status as JSON, expiring after ttl.
func (r *StatusReporter) Report(ctx context.Context, status gateway.NodeStatus, ttl time.Duration) error {
	b, err := json.Marshal(status)
	if err != nil {
		return fmt.Errorf("encode the gateway status: %w", err)
	}
	if err := r.client.Set(ctx, statusKey(status.Group, status.Client), b, ttl).Err(); err != nil {
		return fmt.Errorf("report the gateway status: %w", err)
	}
	return nil
}

// Remove implements gateway.StatusReporter: it deletes the node's key.
func (r *StatusReporter) Remove(ctx context.Context, group, client string) error {
	if err := r.client.Del(ctx, statusKey(group, client)).Err(); err != nil {
		return fmt.Errorf("remove the gateway status: %w", err)
	}
	return nil
}

// ReadNodeStatuses returns the statuses gateway nodes published to Redis,
// sorted by group and client.
func ReadNodeStatuses(ctx context.Context, client goredis.UniversalClient) ([]gateway.NodeStatus, error) {
	var keys []string
	iter := client.Scan(ctx, 0, StatusKeyPrefix+"*", 500).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("scan gateway statuses: %w", err)
	}
	var out []gateway.NodeStatus
	for _, k := range keys {
		b, err := client.Get(ctx, k).Bytes()
		if errors.Is(err, goredis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", k, err)
		}
		var ns gateway.NodeStatus
		if err := json.Unmarshal(b, &ns); err != nil {
			return nil, fmt.Errorf("read %s: %w", k, err)
		}
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b gateway.NodeStatus) int {
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
