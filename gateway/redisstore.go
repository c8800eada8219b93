package gateway

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/internal/retry"
)

// RedisStore keeps sessions in Redis under spec-tacles/gateway's keys,
// {prefix}{shard}session and {prefix}{shard}seq, plus
// {prefix}{shard}resume_url for the resume URL it did not keep. Sessions
// are written on READY, RESUMED, disconnects, shutdown and every few
// seconds while connected, never once per dispatch.
type RedisStore struct {
	client goredis.UniversalClient
	prefix string
}

// NewRedisStore makes a store with the key prefix (SHARD_STORE_PREFIX,
// "gateway" by default).
func NewRedisStore(client goredis.UniversalClient, prefix string) *RedisStore {
	if prefix == "" {
		prefix = "gateway"
	}
	return &RedisStore{client: client, prefix: prefix}
}

func (r *RedisStore) keys(shard int) (session, seq, resume string) {
	base := r.prefix + strconv.Itoa(shard)
	return base + "session", base + "seq", base + "resume_url"
}

// Load implements SessionStore.
func (r *RedisStore) Load(ctx context.Context, shard int) (Session, error) {
	ks, kq, kr := r.keys(shard)
	// Separate GETs: in a cluster the keys may live in different slots.
	pipe := r.client.Pipeline()
	gs, gq, gr := pipe.Get(ctx, ks), pipe.Get(ctx, kq), pipe.Get(ctx, kr)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
		return Session{}, fmt.Errorf("load session of shard %d: %w", shard, err)
	}
	s := Session{ID: gs.Val(), ResumeURL: gr.Val()}
	if v := gq.Val(); v != "" {
		seq, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return Session{}, fmt.Errorf("load session of shard %d: %s holds %q, not a number", shard, kq, v)
		}
		s.Seq = seq
	}
	return s, nil
}

// Save implements SessionStore.
func (r *RedisStore) Save(ctx context.Context, shard int, s Session) error {
	ks, kq, kr := r.keys(shard)
	pipe := r.client.Pipeline()
	if !s.Resumable() {
		pipe.Del(ctx, ks)
		pipe.Del(ctx, kq)
		pipe.Del(ctx, kr)
	} else {
		pipe.Set(ctx, ks, s.ID, 0)
		pipe.Set(ctx, kq, s.Seq, 0)
		pipe.Set(ctx, kr, s.ResumeURL, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("save session of shard %d: %w", shard, err)
	}
	return nil
}

// RedisIdentifyLimiter coordinates identifies between processes that share
// a token through Redis: a bucket's slot is a key set with NX for the
// interval, so at most one identify per bucket per interval happens across
// all of them.
type RedisIdentifyLimiter struct {
	client         goredis.UniversalClient
	prefix         string
	maxConcurrency int
	interval       time.Duration
	owner          string
}

// NewRedisIdentifyLimiter makes a limiter over max_concurrency buckets.
// prefix namespaces the keys (use one per bot); owner names this process
// in the keys' values, for operators.
func NewRedisIdentifyLimiter(client goredis.UniversalClient, prefix string, maxConcurrency int, interval time.Duration, owner string) *RedisIdentifyLimiter {
	if maxConcurrency < 1 {
		maxConcurrency = 1
	}
	return &RedisIdentifyLimiter{client: client, prefix: prefix, maxConcurrency: maxConcurrency, interval: withIdentifyMargin(interval), owner: owner}
}

// Wait implements IdentifyLimiter.
func (l *RedisIdentifyLimiter) Wait(ctx context.Context, shard int) error {
	key := fmt.Sprintf("%sidentify:%d", l.prefix, shard%l.maxConcurrency)
	var bo retry.Backoff // Redis errors: 50 ms to 5 s
	for {
		ok, err := l.client.SetNX(ctx, key, fmt.Sprintf("%s shard %d", l.owner, shard), l.interval).Result()
		var delay time.Duration
		switch {
		case err != nil:
			delay = bo.Next()
		case ok:
			return nil
		default:
			ttl, err := l.client.PTTL(ctx, key).Result()
			if err != nil || ttl <= 0 {
				ttl = 10 * time.Millisecond
			}
			delay = ttl
		}
		if !retry.Sleep(ctx, delay) {
			return ctx.Err()
		}
	}
}
