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
// On a single server the batch is written over a connection of the
// broker's own (batchconn.go); when that connection breaks before every
// reply was read, the rest is sent through go-redis, which retries as the
// client's MaxRetries says (with retries off, the error is returned).
func (b *Broker) PublishBatch(ctx context.Context, msgs []core.Outgoing) ([]string, error) {
	if b.closed.Load() {
		return nil, core.ErrClosed
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	raws := make([][]byte, len(msgs))
	for i, m := range msgs {
		if m.Event == "" {
			return nil, errors.New("redis: publish: event name is empty")
		}
		raw, err := b.cfg.Codec.Marshal(m.Data)
		if err != nil {
			return nil, fmt.Errorf("redis: publish %s: %w", m.Event, err)
		}
		raws[i] = raw
	}
	kind, threshold := b.cfg.trim(time.Now())
	var ids []string
	if c := b.batchConns.get(ctx); c != nil {
		got, replyErr, connErr := publishBatchOwn(ctx, c, msgs, raws, kind, threshold)
		b.batchConns.put(c)
		b.countPublished(msgs[:len(got)])
		ids = got
		switch {
		case replyErr != nil:
			return ids, fmt.Errorf("redis: publish %s: %w", msgs[len(ids)].Event, replyErr)
		case connErr == nil:
			return ids, nil
		case ctx.Err() != nil || b.batchConns.opts.MaxRetries <= 0:
			// What was written may have been added; go-redis would not
			// retry either.
			return ids, fmt.Errorf("redis: publish %s: %w: %w", msgs[len(ids)].Event, core.ErrPublishUncertain, connErr)
		}
		// The connection broke: the rest goes through go-redis, which
		// retries on a fresh connection as it would with its own.
		b.log.Debug("batch publishing connection failed; sending the rest through the pool", "err", connErr)
		msgs, raws = msgs[len(ids):], raws[len(ids):]
	}
	more, err := b.publishBatchClient(ctx, msgs, raws, kind, threshold)
	return append(ids, more...), err
}

// publishBatchClient publishes raws, msgs' payloads, as one go-redis
// pipeline.
func (b *Broker) publishBatchClient(ctx context.Context, msgs []core.Outgoing, raws [][]byte, kind, threshold string) ([]string, error) {
	pipe := b.client.Pipeline()
	cmds := make([]*goredis.StringCmd, len(msgs))
	for i, m := range msgs {
		args := []any{"xadd", m.Event}
		if kind != "" {
			args = append(args, kind, "~", threshold)
		}
		cmd := goredis.NewStringCmd(ctx, append(args, "*", dataField, raws[i])...)
		_ = pipe.Process(ctx, cmd)
		cmds[i] = cmd
	}
	_, _ = pipe.Exec(ctx)
	ids := make([]string, 0, len(msgs))
	for i, cmd := range cmds {
		id, err := cmd.Result()
		if err != nil {
			b.countPublished(msgs[:i])
			return ids, fmt.Errorf("redis: publish %s: %w", msgs[i].Event, publishError(err))
		}
		ids = append(ids, id)
	}
	b.countPublished(msgs)
	return ids, nil
}

// countPublished counts msgs as published, for the unhandled check.
func (b *Broker) countPublished(msgs []core.Outgoing) {
	if len(msgs) == 0 {
		return
	}
	shard := b.unhandled.batchShard()
	shard.mu.Lock()
	for _, m := range msgs {
		shard.addLocked(m.Event, 1)
	}
	shard.mu.Unlock()
}
