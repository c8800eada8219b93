// Package redisgw holds the gateway's Redis pieces, behind the interfaces
// package gateway defines: a session store (gateway.SessionStore), identify
// coordination between processes (gateway.IdentifyLimiter) and status
// reporting (gateway.StatusReporter), so that package gateway itself does
// not depend on a Redis client.
package redisgw

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/gateway"
)

// SessionStore keeps sessions (gateway.SessionStore) in Redis under spec-tacles/gateway's keys,
// {prefix}{shard}session and {prefix}{shard}seq, plus
// {prefix}{shard}resume_url for the resume URL it did not keep. Sessions
// are written on READY, RESUMED, disconnects, shutdown and every few
// seconds while connected, never once per dispatch.
type SessionStore struct {
	client goredis.UniversalClient
	prefix string
}

// NewSessionStore makes a store with the key prefix (SHARD_STORE_PREFIX,
// "gateway" by default).
func NewSessionStore(client goredis.UniversalClient, prefix string) *SessionStore {
	if prefix == "" {
		prefix = "gateway"
	}
	return &SessionStore{client: client, prefix: prefix}
}

func (r *SessionStore) keys(shard int) (session, seq, resume string) {
	base := r.prefix + strconv.Itoa(shard)
	return base + "session", base + "seq", base + "resume_url"
}

// Load implements gateway.SessionStore.
func (r *SessionStore) Load(ctx context.Context, shard int) (gateway.Session, error) {
	ks, kq, kr := r.keys(shard)
	// Separate GETs: in a cluster the keys may live in different slots.
	pipe := r.client.Pipeline()
	gs, gq, gr := pipe.Get(ctx, ks), pipe.Get(ctx, kq), pipe.Get(ctx, kr)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
		return gateway.Session{}, fmt.Errorf("load session of shard %d: %w", shard, err)
	}
	s := gateway.Session{ID: gs.Val(), ResumeURL: gr.Val()}
	if v := gq.Val(); v != "" {
		seq, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return gateway.Session{}, fmt.Errorf("load session of shard %d: %s holds %q, not a number", shard, kq, v)
		}
		s.Seq = seq
	}
	return s, nil
}

// Save implements gateway.SessionStore.
func (r *SessionStore) Save(ctx context.Context, shard int, s gateway.Session) error {
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
