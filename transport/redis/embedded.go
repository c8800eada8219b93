package redis

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// Embedded is the no-configuration broker server: an in-process miniredis
// listening on 127.0.0.1 at a free port, keeping nothing on disk. It speaks
// enough of Redis for every feature of this driver (streams, consumer
// groups, XAUTOCLAIM, pubsub), for development and tests; it is not a
// production server.
type Embedded struct {
	mu   sync.Mutex
	srv  *miniredis.Miniredis
	addr string
}

// StartEmbedded starts an embedded server.
func StartEmbedded() (*Embedded, error) {
	srv := miniredis.NewMiniRedis()
	if err := srv.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("redis: start embedded server: %w", err)
	}
	return &Embedded{srv: srv, addr: srv.Addr()}, nil
}

// Addr returns the server's address, "127.0.0.1:PORT".
func (e *Embedded) Addr() string { return e.addr }

// URL returns the server's URL, "redis://127.0.0.1:PORT".
func (e *Embedded) URL() string { return "redis://" + e.addr }

// Restart stops the server, dropping every connection, and starts it again
// at the same address. The data is kept, as miniredis keeps it.
func (e *Embedded) Restart() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.srv.Close()
	// miniredis cancels its context on Close and does not renew it on
	// Restart, after which every blocking command (XREADGROUP BLOCK) would
	// never answer. Renew it while no connection is served.
	e.srv.Lock()
	e.srv.Ctx, e.srv.CtxCancel = context.WithCancel(context.Background())
	e.srv.Unlock()
	// The port was just released; retry briefly in case the system has
	// not made it available again yet.
	var err error
	for range 50 {
		if err = e.srv.Restart(); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis: restart embedded server at %s: %w", e.addr, err)
}

// Close stops the server. It is idempotent.
func (e *Embedded) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.srv.Close()
}
