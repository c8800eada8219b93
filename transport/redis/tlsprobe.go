package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// ErrServerNotTLS is wrapped by the error of a rediss:// connection whose
// server answers in plain RESP.
var ErrServerNotTLS = errors.New("the server does not speak TLS (use redis:// instead of rediss://)")

// ErrServerTLS is wrapped by the error of a redis:// connection whose
// server speaks TLS.
var ErrServerTLS = errors.New("the server speaks TLS (use rediss:// instead of redis://)")

const (
	// plaintextProbeAfter is how long a TLS handshake may go unanswered
	// before the dialer checks whether the server speaks plain RESP (a
	// plaintext Redis never answers a ClientHello: it waits for the end of
	// an inline command that never comes).
	plaintextProbeAfter = 300 * time.Millisecond
	// probeTimeout bounds each probe.
	probeTimeout       = 2 * time.Second
	defaultDialTimeout = 5 * time.Second // go-redis's
)

// tlsDialer returns the dialer of a rediss:// server: go-redis's (TCP, then
// a TLS handshake bounded by the dial timeout), except that a server that
// speaks plain RESP is found out within plaintextProbeAfter and reported
// as ErrServerNotTLS, an error go-redis does not retry as a timeout.
func tlsDialer(o *goredis.Options) func(ctx context.Context, network, addr string) (net.Conn, error) {
	cfg, timeout := o.TLSConfig, o.DialTimeout
	if timeout <= 0 {
		timeout = defaultDialTimeout
	}
	var plaintext atomic.Bool // the last dial found a plaintext server
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := &net.Dialer{Timeout: timeout, KeepAlive: 5 * time.Minute}
		notTLS := func() error { return fmt.Errorf("TLS handshake with %s failed: %w", addr, ErrServerNotTLS) }
		if plaintext.Load() {
			// Check again at once rather than after plaintextProbeAfter:
			// go-redis dials up to five times.
			if speaksRESP(ctx, d, network, addr) {
				return nil, notTLS()
			}
			plaintext.Store(false)
		}
		raw, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c := cfg.Clone()
		if c.ServerName == "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				c.ServerName = host
			}
		}
		conn := tls.Client(raw, c)
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- conn.HandshakeContext(hctx) }()
		probe := time.NewTimer(plaintextProbeAfter)
		defer probe.Stop()
		for {
			select {
			case err := <-done:
				if err == nil {
					return conn, nil
				}
				_ = raw.Close()
				if speaksRESP(ctx, d, network, addr) {
					plaintext.Store(true)
					return nil, notTLS()
				}
				return nil, fmt.Errorf("TLS handshake with %s failed: %w", addr, err)
			case <-probe.C:
				if speaksRESP(ctx, d, network, addr) {
					cancel()
					<-done
					_ = raw.Close()
					plaintext.Store(true)
					return nil, notTLS()
				}
			}
		}
	}
}

// speaksRESP reports whether the server at addr answers a PING in plain
// RESP ("+PONG", or an error such as "-NOAUTH ...").
func speaksRESP(ctx context.Context, d *net.Dialer, network, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	// A RESP array, not the inline form: the embedded server reads arrays
	// only, and every Redis reads both.
	if _, err := io.WriteString(conn, "*1\r\n$4\r\nPING\r\n"); err != nil {
		return false
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return false
	}
	return b[0] == '+' || b[0] == '-'
}

// speaksTLS reports whether the server at addr answers a TLS handshake:
// it completes, or fails on the server's certificate or an alert the
// server sent. Nothing is sent after the handshake.
func speaksTLS(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	d := &tls.Dialer{Config: &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		_ = conn.Close()
		return true
	}
	var cve *tls.CertificateVerificationError
	var alert tls.AlertError
	return errors.As(err, &cve) || errors.As(err, &alert)
}

// explainPing adds to err, the failed PING of a client without TLS, that
// its server speaks TLS when it does. A dial error (nothing listens) or an
// ended ctx is returned as it is.
func explainPing(ctx context.Context, client goredis.UniversalClient, err error) error {
	c, ok := client.(*goredis.Client)
	if !ok || ctx.Err() != nil {
		return err
	}
	o := c.Options()
	var op *net.OpError
	if o.TLSConfig != nil || o.Network != "tcp" || (errors.As(err, &op) && op.Op == "dial") {
		return err
	}
	if speaksTLS(ctx, o.Addr) {
		return fmt.Errorf("%w (%w)", ErrServerTLS, err)
	}
	return err
}
