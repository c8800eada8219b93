package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// readConn is a reader's own connection to one Redis server (not Redis
// Cluster): it sends the reader's XACKs and XREADGROUPs in RESP2 and
// parses the replies itself (resp.go), with no general client between.
// PublishBatch's own connections are readConns too (batchconn.go).
// It dials and authenticates as the broker's go-redis options say (their
// Dialer, so TLS and the embedded server's dialer apply). One goroutine
// uses it at a time; after any error it must be closed.
type readConn struct {
	nc           net.Conn
	rr           *respReader
	w            []byte
	readTimeout  time.Duration
	writeTimeout time.Duration
	arena        arena
	id           int64 // CLIENT ID; 0 when the server has none (miniredis)
	// broken is the error that left the connection unusable (a reply may
	// be half read): every exchange after it fails with it.
	broken error
	// use names what the connection is for, in broken's text.
	use string
}

// readConnBuffer is the size of a reader connection's read buffer.
const readConnBuffer = 64 << 10

// dialReadConn opens and prepares a reader connection with opt.
func dialReadConn(ctx context.Context, opt *goredis.Options) (*readConn, error) {
	dial := opt.Dialer
	if dial == nil {
		dial = goredis.NewDialer(opt)
	}
	network := opt.Network
	if network == "" {
		network = "tcp"
	}
	dctx := ctx
	if opt.DialTimeout > 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithTimeout(ctx, opt.DialTimeout)
		defer cancel()
	}
	nc, err := dial(dctx, network, opt.Addr)
	if err != nil {
		return nil, err
	}
	c := &readConn{nc: nc, rr: newRESPReader(nc, readConnBuffer), use: "stream reader",
		readTimeout: timeoutOf(opt.ReadTimeout), writeTimeout: timeoutOf(opt.WriteTimeout)}
	if err := c.hello(ctx, opt); err != nil {
		_ = nc.Close()
		return nil, err
	}
	return c, nil
}

// timeoutOf is a go-redis read or write timeout as a deadline's distance:
// 3 s for the default (0), none for -1 and -2.
func timeoutOf(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return 3 * time.Second
	case d < 0:
		return 0
	}
	return d
}

// hello authenticates, selects the database, names the connection and
// learns its CLIENT ID.
func (c *readConn) hello(ctx context.Context, opt *goredis.Options) error {
	user, pass := opt.Username, opt.Password
	switch {
	case opt.CredentialsProviderContext != nil:
		u, p, err := opt.CredentialsProviderContext(ctx)
		if err != nil {
			return fmt.Errorf("redis: credentials: %w", err)
		}
		user, pass = u, p
	case opt.CredentialsProvider != nil:
		user, pass = opt.CredentialsProvider()
	}
	if pass != "" {
		args := []string{"AUTH", pass}
		if user != "" {
			args = []string{"AUTH", user, pass}
		}
		if err := c.simple(args...); err != nil {
			return fmt.Errorf("redis: AUTH: %w", err)
		}
	}
	if opt.DB != 0 {
		if err := c.simple("SELECT", strconv.Itoa(opt.DB)); err != nil {
			return fmt.Errorf("redis: SELECT: %w", err)
		}
	}
	if opt.ClientName != "" {
		_ = c.simple("CLIENT", "SETNAME", opt.ClientName) // a name is a nicety
	}
	c.w = appendCommand(c.w[:0], "CLIENT", "ID")
	if err := c.flush(0); err != nil {
		return err
	}
	id, err := c.rr.integer()
	var rerr respError
	switch {
	case errors.As(err, &rerr):
		id = 0 // not offered (miniredis): stops wait for BLOCK
	case err != nil:
		return err
	}
	c.id = id
	return nil
}

// simple sends one command and reads a status reply; a reply error is
// returned as it is, the connection staying usable.
func (c *readConn) simple(args ...string) error {
	c.w = appendCommand(c.w[:0], args...)
	if err := c.flush(0); err != nil {
		return err
	}
	_, err := c.rr.status()
	return err
}

// flush writes the buffered commands and sets the read deadline for
// their replies, extra beyond the read timeout (a BLOCK).
func (c *readConn) flush(extra time.Duration) error {
	if c.writeTimeout > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	if _, err := c.nc.Write(c.w); err != nil {
		return err
	}
	if c.readTimeout > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.readTimeout + extra))
	} else {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	return nil
}

// appendRead appends an XREADGROUP with a's group, consumer, count,
// block (none when negative) and streams.
func (c *readConn) appendRead(a *goredis.XReadGroupArgs) {
	n := 5 + len(a.Streams)
	if a.Count > 0 {
		n += 2
	}
	if a.Block >= 0 {
		n += 2
	}
	c.w = appendArrayHeader(c.w, n)
	c.w = appendBulk(c.w, "XREADGROUP")
	c.w = appendBulk(c.w, "GROUP")
	c.w = appendBulk(c.w, a.Group)
	c.w = appendBulk(c.w, a.Consumer)
	if a.Count > 0 {
		c.w = appendBulk(c.w, "COUNT")
		c.w = appendBulk(c.w, strconv.FormatInt(a.Count, 10))
	}
	if a.Block >= 0 {
		c.w = appendBulk(c.w, "BLOCK")
		c.w = appendBulk(c.w, strconv.FormatInt(a.Block.Milliseconds(), 10))
	}
	c.w = appendBulk(c.w, "STREAMS")
	for _, s := range a.Streams {
		c.w = appendBulk(c.w, s)
	}
}

// appendAcks appends one XACK per group of acks.
func (c *readConn) appendAcks(group string, acks []streamAcks) {
	for _, g := range acks {
		c.w = appendArrayHeader(c.w, 3+len(g.ops))
		c.w = appendBulk(c.w, "XACK")
		c.w = appendBulk(c.w, g.stream)
		c.w = appendBulk(c.w, group)
		for _, o := range g.ops {
			c.w = appendBulk(c.w, o.id)
		}
	}
}

// exchange sends acks' XACKs and then, when read is set, the XREADGROUP,
// in one write; it settles each ack with its XACK's reply and returns the
// entries read (appended to dst). An error other than a reply error of
// the read leaves the connection unusable; the acks are then settled with
// it.
func (c *readConn) exchange(group string, acks []streamAcks, read *goredis.XReadGroupArgs, dst []entry) (_ []entry, err error) {
	if c.broken != nil {
		settleGroups(acks, c.broken)
		return dst, c.broken
	}
	defer c.markBroken(&err)
	c.w = c.w[:0]
	c.appendAcks(group, acks)
	block := time.Duration(0)
	if read != nil {
		c.appendRead(read)
		block = max(read.Block, 0)
	}
	if err := c.flush(block); err != nil {
		settleGroups(acks, err)
		return dst, err
	}
	for i, g := range acks {
		_, err := c.rr.integer()
		var rerr respError
		if err != nil && !errors.As(err, &rerr) {
			settleGroups(acks[i:], err)
			return dst, err
		}
		g.settle(err)
	}
	if read == nil {
		return dst, nil
	}
	return c.rr.streams(dst, &c.arena, read.Streams[:len(read.Streams)/2])
}

// ack sends the XACK of one id and reads its reply: the reader's own
// handler acking while the reader runs it (Concurrency 1).
func (c *readConn) ack(group, stream, id string) (err error) {
	if c.broken != nil {
		return c.broken
	}
	defer c.markBroken(&err)
	c.w = appendCommand(c.w[:0], "XACK", stream, group, id)
	if err := c.flush(0); err != nil {
		return err
	}
	_, err = c.rr.integer()
	return err
}

// markBroken marks the connection unusable after *err, unless it is a
// reply error (the reply was read whole).
func (c *readConn) markBroken(err *error) {
	var rerr respError
	if *err != nil && !errors.As(*err, &rerr) {
		c.broken = fmt.Errorf("redis: %s connection: %w", c.use, *err)
	}
}

// Close closes the connection.
func (c *readConn) Close() error { return c.nc.Close() }
