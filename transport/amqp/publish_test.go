package amqp

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// TestPublishUnconfirmedIsUncertain: a publish written to RabbitMQ whose
// confirm never comes back (the connection is cut first) fails with
// core.ErrPublishUncertain, and the message did reach the queue.
func TestPublishUnconfirmedIsUncertain(t *testing.T) {
	t.Parallel()
	url, proxy, proxied := proxyServer(t)
	adm, exchange, track := testExchange(t, url, "spectacles-publish-uncertain", "")
	const ev = "EV"
	q := unique("spectacles-publish-uncertain-q")
	track(q)
	// One publishing channel, opened by Open: the held publish needs no
	// answer from RabbitMQ before it is written.
	b := openBroker(t, Config{Options: opts("svc", "pub"), URL: proxied, Exchange: exchange, PublishChannels: 1})
	if _, err := adm.channel().QueueDeclare(q, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := adm.channel().QueueBind(q, ev, exchange, false, nil); err != nil {
		t.Fatal(err)
	}

	proxy.hold.Store(true)
	errc := make(chan error, 1)
	go func() {
		_, err := b.Publish(ctxT(t), ev, "maybe")
		errc <- err
	}()
	// RabbitMQ routed it; its confirm is held back by the proxy.
	eventually(t, 10*time.Second, func() (bool, string) {
		n := queueMessages(t, adm, q)
		return n == 1, "the message did not reach the queue"
	})
	proxy.cut()
	proxy.hold.Store(false)
	err := brokertest.WaitErr(t, errc, "the publish whose confirm was lost", core.ErrPublishUncertain, errUnconfirmed)
	t.Logf("publish: %v", err)

	// Once reconnected, publishing works again.
	if _, err := b.Publish(ctxT(t), ev, "again"); err != nil {
		t.Errorf("publish after reconnecting: %v", err)
	}
}

// TestPublishNotWrittenIsCertain: a publish that gives up before its
// message was written (no connection) does not say it may have been
// published.
func TestPublishNotWrittenIsCertain(t *testing.T) {
	t.Parallel()
	url, proxy, proxied := proxyServer(t)
	_, exchange, _ := testExchange(t, url, "spectacles-publish-certain", "")
	b := openBroker(t, Config{Options: opts("svc", "pub"), URL: proxied, Exchange: exchange})
	proxy.mu.Lock()
	proxy.down = true // refuse new connections
	proxy.mu.Unlock()
	proxy.cut()
	defer func() {
		proxy.mu.Lock()
		proxy.down = false
		proxy.mu.Unlock()
	}()
	// Wait until the broker noticed the cut.
	eventually(t, 10*time.Second, func() (bool, string) {
		b.pubLink.mu.Lock()
		defer b.pubLink.mu.Unlock()
		return b.pubLink.conn == nil, "the publishing connection is still up"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := b.Publish(ctx, "EV", "never")
	if err == nil || errors.Is(err, core.ErrPublishUncertain) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("publish without a connection: %v, want a deadline error without core.ErrPublishUncertain", err)
	}
}

// TestRabbitMQReasonInErrors: errors carry RabbitMQ's own reason (code and
// text), never the password.
func TestRabbitMQReasonInErrors(t *testing.T) {
	t.Parallel()
	const ev = "EV"
	url := serverURL(t)
	adm, exchange, _ := testExchange(t, url, "spectacles-reasons", "", ev)
	// One publishing channel, open (Open opened it) when the exchange is
	// deleted: no new channel declares it again.
	b := openBroker(t, Config{Options: opts("svc", "c"), URL: url, Exchange: exchange, PublishChannels: 1})
	var pass string
	if u, err := amqp091.ParseURI(url); err == nil {
		pass = u.Username + ":" + u.Password + "@"
	}
	noSecret := func(what string, err error) {
		t.Helper()
		if pass != "" && strings.Contains(err.Error(), pass) {
			t.Errorf("%s: the error shows the password: %v", what, err)
		}
	}

	// A queue declared with other arguments: RabbitMQ refuses ours.
	if _, err := adm.channel().QueueDeclare(QueueName(exchange, "", ev), true, false, false, false, amqp091.Table{"x-max-length": int32(10)}); err != nil {
		t.Fatal(err)
	}
	err := b.Consume(ctxT(t), []string{ev}, func(context.Context, *core.Message) {})
	if err == nil || !strings.Contains(err.Error(), "PRECONDITION_FAILED - inequivalent arg 'x-max-length'") {
		t.Errorf("consume of a queue declared with other arguments: %v, want RabbitMQ's PRECONDITION_FAILED reason", err)
	} else {
		noSecret("consume", err)
	}

	// The exchange deleted under a publishing broker: RabbitMQ closes the
	// channel with 404 NOT_FOUND; the message may have been routed for
	// all the driver knows.
	adm.deleteExchange(exchange)
	_, err = b.Publish(ctxT(t), ev, "lost")
	if err == nil || !strings.Contains(err.Error(), "NOT_FOUND - no exchange '"+exchange+"'") || !errors.Is(err, core.ErrPublishUncertain) {
		t.Errorf("publish to a deleted exchange: %v, want RabbitMQ's NOT_FOUND reason and core.ErrPublishUncertain", err)
	} else {
		noSecret("publish", err)
	}
	t.Logf("publish: %v", err)
}
