package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/spectacles-go/spectacles/core"
)

// On a single server PublishBatch writes its XADDs over a connection of
// its own, in RESP2 (resp.go), and reads the ids straight from the
// replies: no command objects, argument boxing or pool between. The
// connections are kept in a small free list (batchConns). When none can be
// had (a dial failed in the last second, or as many are busy as the pool
// may hold), or when one fails before every reply was read, the batch (or
// what of it was not answered) goes through go-redis as before, which
// retries as it is configured to: a connection that broke is thus handled
// as go-redis handles its own.

// batchConns is a broker's free list of PublishBatch connections.
type batchConns struct {
	opts *goredis.Options // the client's; nil on Redis Cluster: none is made

	mu      sync.Mutex
	free    []*batchConn
	open    int       // connections made and not closed
	retryAt time.Time // no dial before this, after one failed
	closed  bool
}

// batchConn is one PublishBatch connection.
type batchConn struct {
	rc     *readConn
	usedAt time.Time
}

const (
	// batchRedial is how long PublishBatch goes through go-redis after a
	// dial of its own connection failed.
	batchRedial = time.Second
	// batchIdleCheck is how long a connection may sit in the free list
	// before a PING checks it: one the server closed meanwhile (a restart,
	// an idle timeout) is replaced before a batch is written to it.
	batchIdleCheck = time.Second
	// batchMaxBuffer bounds the write buffer a free connection keeps.
	batchMaxBuffer = 1 << 20
)

func newBatchConns(client goredis.UniversalClient) *batchConns {
	p := &batchConns{}
	if c, ok := client.(*goredis.Client); ok {
		p.opts = c.Options()
	}
	return p
}

// limit is how many connections the free list may hold open: the client's
// pool size (go-redis sets its default, 10 per CPU, when the client is made).
func (p *batchConns) limit() int { return max(p.opts.PoolSize, 1) }

// get returns a connection to publish a batch over, or nil when the batch
// must go through go-redis.
func (p *batchConns) get(ctx context.Context) *batchConn {
	if p.opts == nil {
		return nil
	}
	now := time.Now()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil
		}
		if n := len(p.free); n > 0 {
			c := p.free[n-1]
			p.free = p.free[:n-1]
			p.mu.Unlock()
			if now.Sub(c.usedAt) >= batchIdleCheck {
				if err := c.rc.simple("PING"); err != nil {
					p.discard(c)
					continue
				}
			}
			return c
		}
		if now.Before(p.retryAt) || p.open >= p.limit() {
			p.mu.Unlock()
			return nil
		}
		p.open++
		p.mu.Unlock()
		rc, err := dialReadConn(ctx, p.opts)
		if err != nil {
			p.mu.Lock()
			p.open--
			p.retryAt = now.Add(batchRedial)
			p.mu.Unlock()
			return nil
		}
		rc.use = "batch publishing"
		return &batchConn{rc: rc}
	}
}

// put returns c to the free list, or closes it when it broke (or the list
// closed).
func (p *batchConns) put(c *batchConn) {
	if c.rc.broken != nil {
		p.discard(c)
		return
	}
	if cap(c.rc.w) > batchMaxBuffer {
		c.rc.w = nil
	}
	c.usedAt = time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.discard(c)
		return
	}
	p.free = append(p.free, c)
	p.mu.Unlock()
}

// discard closes c.
func (p *batchConns) discard(c *batchConn) {
	_ = c.rc.Close()
	p.mu.Lock()
	p.open--
	p.mu.Unlock()
}

// close closes the free connections; those in use are closed when put.
func (p *batchConns) close() {
	p.mu.Lock()
	free := p.free
	p.free, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range free {
		p.discard(c)
	}
}

// publishBatchOwn writes one XADD per message of msgs, with its payload
// from raws, over c and reads their ids.
// It returns the ids read, in order; a reply error for message len(ids)
// (which stops the batch: the caller reports it, not uncertain); or a
// connection failure (c is then broken), after which the messages from
// len(ids) on may or may not have been added.
func publishBatchOwn(ctx context.Context, c *batchConn, msgs []core.Outgoing, raws [][]byte, trimKind, trimAt string) (ids []string, replyErr, connErr error) {
	rc := c.rc
	w := rc.w[:0]
	for i, raw := range raws {
		if trimKind == "" {
			w = appendArrayHeader(w, 5)
			w = appendBulk(w, "XADD")
			w = appendBulk(w, msgs[i].Event)
		} else {
			w = appendArrayHeader(w, 8)
			w = appendBulk(w, "XADD")
			w = appendBulk(w, msgs[i].Event)
			w = appendBulk(w, trimKind)
			w = appendBulk(w, "~")
			w = appendBulk(w, trimAt)
		}
		w = appendBulk(w, "*")
		w = appendBulk(w, dataField)
		w = appendBulk(w, raw)
	}
	rc.w = w
	// The caller's context ends a wait for the replies.
	stop := context.AfterFunc(ctx, func() { _ = rc.nc.SetDeadline(time.Now()) })
	defer func() {
		if !stop() && rc.broken == nil {
			// The deadline was cut short, maybe after the last reply: the
			// connection is not put back with it.
			cause := context.Cause(ctx)
			rc.markBroken(&cause)
		}
	}()
	ids = make([]string, 0, len(raws))
	err := rc.flush(0)
	for err == nil && len(ids) < len(raws) {
		var id []byte
		id, err = rc.rr.bulkScratch()
		var rerr respError
		switch {
		case errors.As(err, &rerr):
			return ids, err, nil // the reply was read whole: the connection is fine
		case err == nil && id == nil:
			err = fmt.Errorf("%w: XADD answered nil", errRESPProtocol)
		case err == nil:
			ids = append(ids, string(id))
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		rc.markBroken(&err)
		return ids, nil, err
	}
	return ids, nil, nil
}
