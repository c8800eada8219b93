package amqp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/redact"
	"github.com/spectacles-go/spectacles/internal/retry"
)

// stableConnection is how long a connection must have lasted for the next
// one to be dialled at once after it is lost.
const stableConnection = 5 * time.Second

// closeTimeout bounds the wait for RabbitMQ to confirm a connection's
// close.
const closeTimeout = 5 * time.Second

// link keeps one AMQP connection open: after the connection is lost it
// dials again, with backoff, until it is stopped. The channels opened on a
// connection die with it; their users notice (their deliveries end, their
// confirms fail) and open new ones on the connection get returns next.
//
// A broker has two links, as RabbitMQ advises: one for publishing and one
// for consuming, so that flow control blocking a publishing connection
// never holds back the acknowledgements that would relieve it.
type link struct {
	cfg  *Config
	log  *slog.Logger
	role string // "publish" or "consume"
	// presence is the PresenceProperty value the connection carries ("":
	// none).
	presence string

	ctx    context.Context // ends when the link is stopped
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	mu    sync.Mutex
	conn  *amqp091.Connection // nil while disconnected
	ready chan struct{}       // closed while conn is set
}

func newLink(cfg *Config, log *slog.Logger, role string) *link {
	l := &link{
		cfg:   cfg,
		log:   log.With("connection", role),
		role:  role,
		done:  make(chan struct{}),
		ready: make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

// connect dials the first connection, within ctx, and starts keeping it.
func (l *link) connect(ctx context.Context) error {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(l.ctx, cancel)()
	conn, err := l.dial(dctx)
	if err != nil {
		l.cancel()
		close(l.done)
		return err
	}
	go l.run(conn)
	return nil
}

// dial opens a connection, giving up when ctx ends or after
// ConnectTimeout. Its errors never contain the URL's password.
func (l *link) dial(ctx context.Context) (*amqp091.Connection, error) {
	timeout := l.cfg.ConnectTimeout
	var (
		mu    sync.Mutex
		stops []func() bool
	)
	props := amqp091.NewConnectionProperties()
	props.SetClientConnectionName(l.connectionName())
	if l.presence != "" {
		props[PresenceProperty] = l.presence
	}
	cfg := amqp091.Config{
		Heartbeat:  l.cfg.Heartbeat,
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: timeout}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// The handshake has a deadline (cleared once it succeeded) and
			// ends at once when ctx does.
			if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
				_ = c.Close()
				return nil, err
			}
			stop := context.AfterFunc(ctx, func() { _ = c.Close() })
			mu.Lock()
			stops = append(stops, stop)
			mu.Unlock()
			return c, nil
		},
	}
	if l.cfg.TLS != nil {
		cfg.TLSClientConfig = l.cfg.TLS.Clone()
	}
	conn, err := amqp091.DialConfig(l.cfg.URL, cfg)
	mu.Lock()
	for _, stop := range stops {
		stop()
	}
	mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to %s: %w", redact.URL(l.cfg.URL), context.Cause(ctx))
		}
		return nil, fmt.Errorf("connect to %s: %w", redact.URL(l.cfg.URL), err)
	}
	if ctx.Err() != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("connect to %s: %w", redact.URL(l.cfg.URL), context.Cause(ctx))
	}
	return conn, nil
}

func (l *link) connectionName() string {
	id := l.cfg.Identity
	name := "spectacles"
	switch {
	case id.Group != "" && id.Client != "":
		name += " " + id.String()
	case id.Group != "":
		name += " " + id.Group
	case id.Client != "":
		name += " " + id.Client
	}
	return name + " (" + l.role + ")"
}

// run keeps the connection: it publishes conn, waits for its loss, and
// dials again, until the link is stopped.
func (l *link) run(conn *amqp091.Connection) {
	defer close(l.done)
	var (
		bo       retry.Backoff
		failures int
	)
	for {
		if conn == nil {
			c, err := l.dial(l.ctx)
			if err != nil {
				if l.ctx.Err() != nil {
					return
				}
				failures++
				d := bo.Next()
				// The first failure, and every tenth, at Warn: a long outage
				// does not flood the log.
				level := slog.LevelDebug
				if failures%10 == 1 {
					level = slog.LevelWarn
				}
				l.log.Log(l.ctx, level, "reconnecting to RabbitMQ failed; retrying", "err", err, "attempt", failures, "retry_in", d)
				if !retry.Sleep(l.ctx, d) {
					return
				}
				continue
			}
			l.log.Info("reconnected to RabbitMQ", "server", redact.URL(l.cfg.URL), "attempts", failures+1)
			conn, failures = c, 0
		}
		connected := time.Now()
		closed := conn.NotifyClose(make(chan *amqp091.Error, 1))
		blocked := conn.NotifyBlocked(make(chan amqp091.Blocking, 4))
		l.set(conn)
		lost := l.watch(closed, blocked)
		l.set(nil)
		if !lost {
			_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
			return
		}
		conn = nil
		if time.Since(connected) > stableConnection {
			// A connection that lasted is retried at once: a cut to a
			// healthy server (a restarted proxy, a closed idle connection)
			// heals fastest so.
			bo.Reset()
			continue
		}
		// One that died young waits, so that a server that drops every
		// connection is not dialled in a tight loop.
		if !retry.Sleep(l.ctx, bo.Next()) {
			return
		}
	}
}

// watch waits until the connection is lost (true) or the link stopped
// (false), logging flow control on the way.
func (l *link) watch(closed chan *amqp091.Error, blocked chan amqp091.Blocking) bool {
	for {
		select {
		case err, ok := <-closed:
			if ok && err != nil {
				l.log.Warn("connection to RabbitMQ lost; reconnecting", "err", err)
			} else {
				l.log.Warn("connection to RabbitMQ closed; reconnecting")
			}
			return true
		case b, ok := <-blocked:
			if !ok {
				blocked = nil
				continue
			}
			if b.Active {
				l.log.Warn("RabbitMQ blocks this connection (flow control)", "reason", b.Reason)
			} else {
				l.log.Info("RabbitMQ unblocked this connection")
			}
		case <-l.ctx.Done():
			return false
		}
	}
}

func (l *link) set(conn *amqp091.Connection) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if conn != nil {
		l.conn = conn
		close(l.ready)
		return
	}
	if l.conn != nil {
		l.conn = nil
		l.ready = make(chan struct{})
	}
}

// get returns the open connection, waiting for one while disconnected,
// until ctx ends, or abort is closed or the link stops (core.ErrClosed).
func (l *link) get(ctx context.Context, abort <-chan struct{}) (*amqp091.Connection, error) {
	for {
		l.mu.Lock()
		conn, ready := l.conn, l.ready
		l.mu.Unlock()
		if conn != nil && !conn.IsClosed() {
			return conn, nil
		}
		var poll <-chan time.Time
		if conn != nil {
			// Lost, and run has not noticed yet: it will in a moment.
			ready, poll = nil, time.After(5*time.Millisecond)
		}
		select {
		case <-ready:
		case <-poll:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-abort:
			return nil, core.ErrClosed
		case <-l.ctx.Done():
			return nil, core.ErrClosed
		}
	}
}

// stop closes the connection and ends run.
func (l *link) stop() {
	l.cancel()
	<-l.done
}
