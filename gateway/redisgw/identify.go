package redisgw

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/gateway"
	"github.com/spectacles-go/spectacles/internal/retry"
)

// IdentifyLimiter (a gateway.IdentifyLimiter) coordinates identifies between processes that share
// a token through Redis: a bucket's slot is a key set with NX for the
// interval, so at most one identify per bucket per interval happens across
// all of them.
type IdentifyLimiter struct {
	client         goredis.UniversalClient
	prefix         string
	maxConcurrency int
	interval       time.Duration
	owner          string
}

// NewIdentifyLimiter makes a limiter over max_concurrency buckets.
// prefix namespaces the keys (use one per bot); owner names this process
// in the keys' values, for operators.
func NewIdentifyLimiter(client goredis.UniversalClient, prefix string, maxConcurrency int, interval time.Duration, owner string) *IdentifyLimiter {
	if maxConcurrency < 1 {
		maxConcurrency = 1
	}
	return &IdentifyLimiter{client: client, prefix: prefix, maxConcurrency: maxConcurrency, interval: gateway.WithIdentifyMargin(interval), owner: owner}
}

// Wait implements gateway.IdentifyLimiter.
func (l *IdentifyLimiter) Wait(ctx context.Context, shard int) error {
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

// IdentifyLimiters returns, for gateway.ManagerConfig.SharedIdentify, a
// maker of IdentifyLimiters that coordinate the identifies of every
// process of the bot whose token is token through client: keys
// "spectacles:identify:" + the first 8 bytes of the token's SHA-256 in hex
// + ":identify:" + bucket, one identify per bucket per 5 s, owned by
// host/pid. It returns nil when client is nil.
func IdentifyLimiters(client goredis.UniversalClient, token string) func(maxConcurrency int) gateway.IdentifyLimiter {
	if client == nil {
		return nil
	}
	return func(maxConcurrency int) gateway.IdentifyLimiter {
		host, _ := os.Hostname()
		sum := sha256.Sum256([]byte(token))
		return NewIdentifyLimiter(client, "spectacles:identify:"+hex.EncodeToString(sum[:8])+":",
			maxConcurrency, 5*time.Second, fmt.Sprintf("%s/%d", host, os.Getpid()))
	}
}
