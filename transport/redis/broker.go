// Package redis is the Redis-streams driver of Spectacles: a core.Broker
// that speaks the wire protocol of the other Spectacles clients
// (@spectacles/brokers, @discordjs/brokers, spec-tacles/go).
//
// Publish is XADD {event} * data {payload}; each group reads with
// XREADGROUP, acknowledges with XACK and takes over messages another client
// left idle for Options.MessageTimeout with XAUTOCLAIM; a reply is PUBLISH
// {event}:{id} {payload}. Messages delivered more than
// Options.MaxDeliveries times, or rejected, move to the stream
// core.DeadLetterEvent(event) with the core.Header* fields.
//
// Concurrent Publish and Ack calls are coalesced into pipelines, so that
// throughput does not depend on one round trip per message. A publish
// that failed after its XADD was written wraps core.ErrPublishUncertain.
//
// A consumer reads no more than its free handlers can start; the messages
// it holds (waiting for or in a handler) it never takes over from itself,
// and it keeps them from looking idle to the other clients of its group
// (see Broker.Consume).
//
// The in-process server for development and tests (miniredis) is the
// package transport/redis/embedded, so that this one does not link it.
//
// It needs Redis 6.2 or later (XAUTOCLAIM); Redis 7 is what it is tested
// with. A comma list of addresses in the URL selects Redis Cluster.
package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
)

// Broker is a Spectacles broker over Redis streams. It is safe for
// concurrent use. Make one with Open or NewWithClient.
type Broker struct {
	client     goredis.UniversalClient
	ownsClient bool
	cluster    bool
	cfg        Config
	log        *slog.Logger

	// closeCtx is cancelled when Close starts: consumers stop, calls end.
	closeCtx    context.Context
	closeCancel context.CancelFunc
	closed      atomic.Bool
	// finished is set once the consumers have drained: settling is over.
	finished atomic.Bool

	mu        sync.Mutex // guards consumers.Add against Close
	consumers sync.WaitGroup

	batch *batcher
	// batchConns are PublishBatch's own connections (batchconn.go).
	batchConns *batchConns
	replies    *replies
	held       *heldSet
	// presence announces the broker once it consumes (presence.go).
	presence *presence
	// unhandled counts publishes no group reads (unhandled.go).
	unhandled *unhandledState

	closeOnce sync.Once
	closeErr  error
}

var _ core.Broker = (*Broker)(nil)

// Open connects to cfg.URL (see NewClient), checks the server answers PING
// within ctx, and returns a broker that closes the client when it closes.
func Open(ctx context.Context, cfg Config) (*Broker, error) {
	if _, err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	client, err := newClient(cfg.URL, cfg.PoolSize, cfg.Dialer)
	if err != nil {
		return nil, err
	}
	if err := client.Ping(ctx).Err(); err != nil {
		err = explainPing(ctx, client, err)
		_ = client.Close()
		where := describeAddrs(client)
		if strings.Contains(err.Error(), where) {
			return nil, fmt.Errorf("redis: %w", err) // it names the server already
		}
		return nil, fmt.Errorf("redis: cannot reach %s: %w", where, err)
	}
	b, err := NewWithClient(client, cfg)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	b.ownsClient = true
	return b, nil
}

// NewWithClient returns a broker over client, which the caller owns: Close
// does not close it. cfg.URL and cfg.PoolSize are not used.
func NewWithClient(client goredis.UniversalClient, cfg Config) (*Broker, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: nil client", ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	_, cluster := client.(*goredis.ClusterClient)
	b := &Broker{
		client:  client,
		cluster: cluster,
		cfg:     cfg,
		log:     cfg.Logger.With("broker", "redis"),
	}
	b.closeCtx, b.closeCancel = context.WithCancel(context.Background())
	every := cfg.UnhandledInterval
	if every == 0 {
		every = core.UnhandledInterval
	}
	b.unhandled = newUnhandledState(flushers(), every)
	b.batch = newBatcher(b)
	b.batchConns = newBatchConns(b.client)
	b.replies = newReplies(b)
	b.held = newHeldSet()
	b.presence = newPresence(b)
	go b.unhandledLoop()
	return b, nil
}

// newReaderClient returns the client a consumer's reader runs its
// blocking XREADGROUP on, and whether the reader owns (and closes) it: a
// client of its own, with the broker client's settings and a pool of one
// connection (two per node on Redis Cluster, where a node's pool also
// serves slot lookups), so that blocked reads never take connections from
// the broker's pool, however many Consume calls there are. The copy has
// the client's Options, not the hooks added to it with AddHook. Other
// client types read through the broker's client.
func (b *Broker) newReaderClient() (goredis.UniversalClient, bool) {
	switch c := b.client.(type) {
	case *goredis.Client:
		o := *c.Options()
		if o.MaintNotificationsConfig != nil {
			mc := *o.MaintNotificationsConfig
			o.MaintNotificationsConfig = &mc
		}
		o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns = 1, 0, 1, 0
		return goredis.NewClient(&o), true
	case *goredis.ClusterClient:
		o := *c.Options()
		o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns = 2, 0, 2, 0
		return goredis.NewClusterClient(&o), true
	}
	return b.client, false
}

// Client returns the go-redis client the broker uses.
func (b *Broker) Client() goredis.UniversalClient { return b.client }

// Publish appends data, encoded with the codec (core.Raw passes through),
// to the stream named event and returns the entry id. An error that may
// have come after the XADD was written (no reply before a read timeout or
// ctx ended, the connection broke) wraps core.ErrPublishUncertain: the
// message may have been published, and publishing it again may add a
// second copy. Errors before anything was sent (no connection, a full
// pool, a reply error) do not.
func (b *Broker) Publish(ctx context.Context, event string, data any) (string, error) {
	if b.closed.Load() {
		return "", core.ErrClosed
	}
	if event == "" {
		return "", errors.New("redis: publish: event name is empty")
	}
	raw, err := b.cfg.Codec.Marshal(data)
	if err != nil {
		return "", fmt.Errorf("redis: publish %s: %w", event, err)
	}
	id, err := b.publishRaw(ctx, event, raw, false)
	if err != nil {
		return "", fmt.Errorf("redis: publish %s: %w", event, err)
	}
	return id, nil
}

// publishRaw XADDs raw through the batcher; call marks a call's.
func (b *Broker) publishRaw(ctx context.Context, event string, raw []byte, call bool) (string, error) {
	o := b.batch.get()
	o.kind = opXAdd
	o.call = call
	o.stream = event
	o.data = raw
	if err := b.batch.do(ctx, o); err != nil {
		return "", err
	}
	id := o.result
	b.batch.put(o)
	return id, nil
}

// Close stops every consumer, waits for their running handlers (whose
// Acks still work), flushes pending publishes and acknowledgements, closes
// the reply subscription and, when Open made the client, the client. It is
// idempotent; afterwards every method returns core.ErrClosed. Calls in
// progress return core.ErrClosed. A handler must not call Close: Close
// waits for the handler.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed.Store(true)
		b.mu.Unlock()
		b.closeCancel()
		<-b.unhandled.done
		b.consumers.Wait()
		b.finished.Store(true)
		b.presence.leave()
		b.batch.stop()
		b.batchConns.close()
		if b.unhandled.every >= 0 {
			// What was published since the last check is checked now.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			b.checkUnhandled(ctx)
			cancel()
		}
		b.replies.close()
		if b.ownsClient {
			if err := b.client.Close(); err != nil && !errors.Is(err, goredis.ErrClosed) {
				b.closeErr = fmt.Errorf("redis: close client: %w", err)
			}
		}
	})
	return b.closeErr
}

// beginConsumer registers a consumer goroutine unless the broker is
// closed.
func (b *Broker) beginConsumer() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return false
	}
	b.consumers.Add(1)
	return true
}
