// Package redisstore is the Redis restproxy.Store: several proxy processes
// share buckets, learned bucket hashes, each token's global limit, the
// invalid-request count and a Cloudflare ban through one Redis database,
// so that the proxy scales out with the broker's consumer group.
//
// Every decision is one Lua script, so two processes never both take the
// last slot of a bucket. Wake-ups cannot be lost: each process subscribes
// to one channel (PREFIX wake) when the store opens, and a waiter registers
// before it runs the acquire script, so a release that follows the script
// always reaches it; a waiter also stops at the bucket's reset or the
// holder's lease, whichever the script returned. Times are the processes'
// clocks in milliseconds (keep them synchronised, as NTP does). The keys
// are computed inside the scripts, which suits a single Redis server (or
// a primary with replicas), not Redis Cluster.
package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/gateway/restproxy"
)

// DefaultPrefix starts every key the store writes.
const DefaultPrefix = "spectacles:proxy:"

// maxBuckets bounds what Buckets lists.
const maxBuckets = 10000

// Store is a restproxy.Store in Redis. Create it with New.
type Store struct {
	c      goredis.UniversalClient
	prefix string
	sub    *goredis.PubSub
	wg     sync.WaitGroup

	id      string        // this store's random name
	seq     atomic.Uint64 // with id, makes global-limit members unique
	waiters restproxy.Waiters
}

// New subscribes to the store's wake-up channel and returns the store;
// keys start with prefix (DefaultPrefix when empty). Close releases the
// subscription, not the client.
func New(ctx context.Context, c goredis.UniversalClient, prefix string) (*Store, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	s := &Store{c: c, prefix: prefix, id: hex.EncodeToString(id[:])}
	s.sub = c.Subscribe(ctx, prefix+"wake")
	if _, err := s.sub.Receive(ctx); err != nil {
		_ = s.sub.Close()
		return nil, fmt.Errorf("redisstore: subscribing to %swake: %w", prefix, err)
	}
	ch := s.sub.Channel(goredis.WithChannelSize(1024))
	s.wg.Go(func() {
		for msg := range ch {
			s.waiters.Signal(msg.Payload)
		}
	})
	return s, nil
}

// Close stops the subscription.
func (s *Store) Close() error {
	err := s.sub.Close()
	s.wg.Wait()
	return err
}

// Wake implements restproxy.Store.
func (s *Store) Wake(lane string) (<-chan struct{}, func()) { return s.waiters.Listen(lane) }

func ms(t time.Time) int64 { return t.UnixMilli() }

var acquireScript = goredis.NewScript(`
local p, now, lease = ARGV[1], tonumber(ARGV[6]), tonumber(ARGV[7])
local h = redis.call('GET', p .. 'h:' .. ARGV[2])
local key = ARGV[3]
if h then
  key = ARGV[4] .. '|#' .. h .. '|' .. ARGV[5]
  redis.call('PEXPIRE', p .. 'h:' .. ARGV[2], 86400000)
end
local bk = p .. 'b:' .. key
local v = redis.call('HMGET', bk, 'limit', 'remaining', 'reset', 'locked', 'unl')
if v[5] == '1' then return {key, 0, 0} end
local limit = tonumber(v[1]) or 0
local remaining = tonumber(v[2]) or 0
local reset = tonumber(v[3]) or 0
local locked = tonumber(v[4]) or 0
if now < locked then return {'', locked - now, 1} end
if limit > 0 and now >= reset then remaining = limit end
if remaining <= 0 and now < reset then return {'', reset - now, 0} end
if remaining > 0 then remaining = remaining - 1 end
redis.call('HSET', bk, 'remaining', remaining, 'locked', now + lease)
redis.call('PEXPIRE', bk, math.max(reset - now, lease) + 600000)
return {key, 0, 0}
`)

// Acquire implements restproxy.Store.
func (s *Store) Acquire(ctx context.Context, t restproxy.Ticket, now time.Time) (restproxy.Grant, error) {
	lease := t.Lease
	if lease <= 0 {
		lease = 30 * time.Second
	}
	v, err := acquireScript.Run(ctx, s.c, nil, s.prefix, t.MapKey(), t.RouteKey(), t.Identity, t.Major, ms(now), lease.Milliseconds()).Slice()
	if err != nil {
		return restproxy.Grant{}, fmt.Errorf("redisstore: acquire: %w", err)
	}
	if len(v) != 3 {
		return restproxy.Grant{}, errors.New("redisstore: acquire: unexpected reply")
	}
	key, _ := v[0].(string)
	wait, _ := v[1].(int64)
	held, _ := v[2].(int64)
	if wait > 0 {
		return restproxy.Grant{Wait: time.Duration(wait) * time.Millisecond, Held: held == 1}, nil
	}
	return restproxy.Grant{Key: key}, nil
}

var releaseScript = goredis.NewScript(`
local p, now = ARGV[1], tonumber(ARGV[6])
local bk = p .. 'b:' .. ARGV[5]
if redis.call('EXISTS', bk) == 1 then redis.call('HSET', bk, 'locked', 0) end
if ARGV[14] == '1' then
  local v = redis.call('HMGET', bk, 'limit', 'remaining', 'reset')
  local limit, remaining, reset = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
  if limit > 0 and now < reset and remaining < limit then redis.call('HINCRBY', bk, 'remaining', 1) end
else
  local target = bk
  if ARGV[7] ~= '' then
    redis.call('SET', p .. 'h:' .. ARGV[2], ARGV[7], 'PX', 86400000)
    target = p .. 'b:' .. ARGV[3] .. '|#' .. ARGV[7] .. '|' .. ARGV[4]
  end
  if ARGV[8] == '1' then
    redis.call('HSET', target, 'limit', ARGV[9], 'remaining', ARGV[10], 'reset', now + tonumber(ARGV[11]), 'unl', 0)
  elseif ARGV[12] == '1' then
    redis.call('HSET', target, 'unl', 1)
  end
  local pause = tonumber(ARGV[13])
  if pause > 0 then
    local r = tonumber(redis.call('HGET', target, 'reset')) or 0
    redis.call('HSET', target, 'remaining', 0, 'unl', 0)
    if now + pause > r then redis.call('HSET', target, 'reset', now + pause) end
  end
  if redis.call('EXISTS', target) == 1 then
    local r = tonumber(redis.call('HGET', target, 'reset')) or 0
    redis.call('PEXPIRE', target, math.max(r - now, 0) + 600000)
  end
end
redis.call('PUBLISH', p .. 'wake', ARGV[15])
return 1
`)

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Release implements restproxy.Store.
func (s *Store) Release(ctx context.Context, t restproxy.Ticket, key string, u restproxy.Update, now time.Time) error {
	err := releaseScript.Run(ctx, s.c, nil, s.prefix, t.MapKey(), t.Identity, t.Major, key, ms(now),
		u.Hash, flag(u.HasLimits), u.Limit, u.Remaining, u.ResetAfter.Milliseconds(), flag(u.Unlimited),
		u.PauseFor.Milliseconds(), flag(u.Refund), t.Lane()).Err()
	if err != nil {
		return fmt.Errorf("redisstore: release: %w", err)
	}
	return nil
}

// globalScript: a sorted set of slots scored by time, each counting until
// its score plus window; a slot in flight is scored in the future (now +
// lease), so that it counts until settled (SettleGlobal) or its lease ends.
var globalScript = goredis.NewScript(`
local now, window, limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if now < paused then return paused - now end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local first = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
  if first > now then return window end
  return first + window - now + 1
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[4])
redis.call('PEXPIRE', KEYS[1], lease + 2 * window)
return 0
`)

// TakeGlobal implements restproxy.Store: a sliding window in a sorted set
// (score: the slot's time).
func (s *Store) TakeGlobal(ctx context.Context, identity string, limit int, window time.Duration, now time.Time) (string, time.Duration, error) {
	member := s.id + ":" + strconv.FormatUint(s.seq.Add(1), 36)
	w, err := globalScript.Run(ctx, s.c, []string{s.prefix + "g:" + identity, s.prefix + "gp:" + identity},
		ms(now), window.Milliseconds(), limit, member, restproxy.GlobalSlotLease.Milliseconds()).Int64()
	if err != nil {
		return "", 0, fmt.Errorf("redisstore: global limit: %w", err)
	}
	if w > 0 {
		return "", time.Duration(w) * time.Millisecond, nil
	}
	return member, 0, nil
}

var settleScript = goredis.NewScript(`
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
return 1
`)

// SettleGlobal implements restproxy.Store.
func (s *Store) SettleGlobal(ctx context.Context, identity, slot string, at time.Time) error {
	if err := settleScript.Run(ctx, s.c, []string{s.prefix + "g:" + identity}, slot, ms(at)).Err(); err != nil {
		return fmt.Errorf("redisstore: global limit: %w", err)
	}
	return nil
}

// PauseGlobal implements restproxy.Store.
func (s *Store) PauseGlobal(ctx context.Context, identity string, until time.Time) error {
	d := time.Until(until)
	if d <= 0 {
		return nil
	}
	return s.c.Set(ctx, s.prefix+"gp:"+identity, ms(until), d+time.Second).Err()
}

const (
	invalidSlot  = 10 * time.Second
	invalidSlots = int(restproxy.InvalidWindow / invalidSlot)
)

// AddInvalid implements restproxy.Store.
func (s *Store) AddInvalid(ctx context.Context, now time.Time) error {
	key := s.prefix + "inv:" + strconv.FormatInt(now.UnixNano()/int64(invalidSlot), 10)
	pipe := s.c.TxPipeline()
	pipe.Incr(ctx, key)
	pipe.Expire(ctx, key, restproxy.InvalidWindow+time.Minute)
	_, err := pipe.Exec(ctx)
	return err
}

// Invalid implements restproxy.Store.
func (s *Store) Invalid(ctx context.Context, now time.Time) (int, time.Time, error) {
	return ReadInvalid(ctx, s.c, s.prefix, now)
}

// ReadInvalid returns the invalid-request count and ban of the store at
// prefix (DefaultPrefix when empty), without opening a Store.
func ReadInvalid(ctx context.Context, c goredis.UniversalClient, prefix string, now time.Time) (int, time.Time, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	cur := now.UnixNano() / int64(invalidSlot)
	keys := make([]string, 0, invalidSlots+1)
	for i := 0; i < invalidSlots; i++ {
		keys = append(keys, prefix+"inv:"+strconv.FormatInt(cur-int64(i), 10))
	}
	keys = append(keys, prefix+"ban")
	vals, err := c.MGet(ctx, keys...).Result()
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("redisstore: invalid count: %w", err)
	}
	n := 0
	for _, v := range vals[:invalidSlots] {
		if str, ok := v.(string); ok {
			c, _ := strconv.Atoi(str)
			n += c
		}
	}
	var banned time.Time
	if str, ok := vals[invalidSlots].(string); ok {
		if until, err := strconv.ParseInt(str, 10, 64); err == nil && until > ms(now) {
			banned = time.UnixMilli(until)
		}
	}
	return n, banned, nil
}

// Ban implements restproxy.Store.
func (s *Store) Ban(ctx context.Context, until time.Time) error {
	d := time.Until(until)
	if d <= 0 {
		return nil
	}
	return s.c.Set(ctx, s.prefix+"ban", ms(until), d).Err()
}

// Buckets implements restproxy.Store (at most 10,000).
func (s *Store) Buckets(ctx context.Context, now time.Time) ([]restproxy.BucketState, error) {
	return ReadBuckets(ctx, s.c, s.prefix, now)
}

// ReadBuckets lists the buckets of the store at prefix (DefaultPrefix when
// empty), at most 10,000, without opening a Store.
func ReadBuckets(ctx context.Context, c goredis.UniversalClient, prefix string, now time.Time) ([]restproxy.BucketState, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	var out []restproxy.BucketState
	iter := c.Scan(ctx, 0, prefix+"b:*", 500).Iterator()
	for iter.Next(ctx) && len(out) < maxBuckets {
		k := iter.Val()
		v, err := c.HMGet(ctx, k, "limit", "remaining", "reset", "locked", "unl").Result()
		if err != nil {
			return nil, fmt.Errorf("redisstore: buckets: %w", err)
		}
		num := func(i int) int64 {
			str, _ := v[i].(string)
			n, _ := strconv.ParseInt(str, 10, 64)
			return n
		}
		st := restproxy.BucketState{Key: strings.TrimPrefix(k, prefix+"b:"), Limit: int(num(0)), Remaining: int(num(1)),
			InFlight: num(3) > ms(now), Unlimited: num(4) == 1}
		if r := num(2); r > 0 {
			at := time.UnixMilli(r).UTC()
			st.ResetAt = &at
			if st.Limit > 0 && r <= ms(now) {
				st.Remaining = st.Limit
			}
		}
		out = append(out, st)
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("redisstore: buckets: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// maxRecent bounds the 429s the store keeps (a capped list).
const maxRecent = 50

// RecordRateLimit implements restproxy.RecentRecorder: the 429 goes on a
// capped list that every proxy process shares, for `spectacles buckets`
// and the console.
func (s *Store) RecordRateLimit(ctx context.Context, e restproxy.RateLimitEvent) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	pipe := s.c.TxPipeline()
	pipe.RPush(ctx, s.prefix+"recent429", b)
	pipe.LTrim(ctx, s.prefix+"recent429", -maxRecent, -1)
	_, err = pipe.Exec(ctx)
	return err
}

// ReadRecent returns the latest 429s recorded at prefix (DefaultPrefix
// when empty), oldest first, at most maxRecent. An entry that does not
// decode is skipped.
func ReadRecent(ctx context.Context, c goredis.UniversalClient, prefix string) ([]restproxy.RateLimitEvent, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	list, err := c.LRange(ctx, prefix+"recent429", -maxRecent, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: recent 429s: %w", err)
	}
	out := make([]restproxy.RateLimitEvent, 0, len(list))
	for _, item := range list {
		var e restproxy.RateLimitEvent
		if json.Unmarshal([]byte(item), &e) == nil {
			out = append(out, e)
		}
	}
	return out, nil
}
