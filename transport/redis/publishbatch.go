package redis

import (
	"context"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
)

var _ core.BatchPublisher = (*Broker)(nil)

// PublishBatch publishes msgs in one pipeline, in order, so that their
// entries keep that order within each stream (Publish's batching may
// spread concurrent publishes over several pipelines). It returns the ids
// of the messages published before the first failure, in order. An error
// that may have come after the commands were written wraps
// core.ErrPublishUncertain: later messages may have been published too.
func (b *Broker) PublishBatch(ctx context.Context, msgs []core.Outgoing) ([]string, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	pipe := b.client.Pipeline()
	cmds := make([]*goredis.StringCmd, len(msgs))
	kind, threshold := b.cfg.trim(time.Now())
	for i, m := range msgs {
		if m.Event == "" {
			return nil, errors.New("redis: publish: event name is empty")
		}
		raw, err := b.cfg.Codec.Marshal(m.Data)
		if err != nil {
			return nil, fmt.Errorf("redis: publish %s: %w", m.Event, err)
		}
		args := []any{"xadd", m.Event}
		if kind != "" {
			args = append(args, kind, "~", threshold)
		}
		cmd := goredis.NewStringCmd(ctx, append(args, "*", dataField, raw)...)
		_ = pipe.Process(ctx, cmd)
		cmds[i] = cmd
	}
	_, _ = pipe.Exec(ctx)
	ids := make([]string, 0, len(msgs))
	shard := b.unhandled.batchShard()
	shard.mu.Lock()
	defer shard.mu.Unlock()
	for i, cmd := range cmds {
		id, err := cmd.Result()
		if err != nil {
			return ids, fmt.Errorf("redis: publish %s: %w", msgs[i].Event, publishError(err))
		}
		shard.addLocked(msgs[i].Event, 1)
		ids = append(ids, id)
	}
	return ids, nil
}
