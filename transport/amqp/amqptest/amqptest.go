// Package amqptest gives tests the RabbitMQ they talk to: the server at
// $SPECTACLES_AMQP_URL, or DefaultURL, and its management API (the
// rabbitmq_management plugin, which a fresh RabbitMQ has off). Each is
// probed once per test binary, with short timeouts, so that a missing one
// costs a test a few seconds at most. Outside CI (the CI environment
// variable not "true") a missing server or API skips the test with the
// reason; under CI=true it fails the test: a missing broker under CI is a
// failure, never a skip.
//
// Tests share the server: they must use unique exchange and queue names
// and delete what they declare.
package amqptest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/spectacles-go/spectacles/internal/brokertest"
	"github.com/spectacles-go/spectacles/internal/redact"
)

// DefaultURL is the server used when $SPECTACLES_AMQP_URL is empty: a
// local RabbitMQ with its stock guest account (the driver's DefaultURL,
// which this package cannot import: the driver's own tests use it).
const DefaultURL = "amqp://guest:guest@127.0.0.1:5672/"

const (
	// dialTimeout bounds the probe's AMQP dial and handshake.
	dialTimeout = 3 * time.Second
	// httpTimeout bounds the probe's management API request.
	httpTimeout = 2 * time.Second
)

// enableHint tells how to turn the management API on.
const enableHint = "`rabbitmq-plugins enable rabbitmq_management` turns it on"

// probe holds the results of looking for the server and its API, once per
// test binary; it holds no test's state.
type probe struct {
	serverOnce sync.Once
	serverErr  error
	mgmtOnce   sync.Once
	mgmtErr    error
}

var shared probe

// InCI reports whether the tests run under CI (CI=true), where a missing
// server or management API is a failure.
func InCI() bool { return brokertest.InCI() }

// ServerURL returns the AMQP URL the tests use, without probing it.
func ServerURL() string {
	if u := os.Getenv("SPECTACLES_AMQP_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// ManagementURL returns the management API the driver derives from raw
// (its host, port 15672 and http; 15671 and https for amqps://), without
// credentials.
func ManagementURL(raw string) (string, error) {
	u, err := amqp091.ParseURI(raw)
	if err != nil {
		return "", fmt.Errorf("AMQP URL %q: %s", redact.URL(raw), redact.Text(err.Error(), raw))
	}
	scheme, port := "http", 15672
	if u.Scheme == "amqps" {
		scheme, port = "https", 15671
	}
	return scheme + "://" + net.JoinHostPort(u.Host, strconv.Itoa(port)), nil
}

func (p *probe) server() error {
	p.serverOnce.Do(func() {
		raw := ServerURL()
		conn, err := amqp091.DialConfig(raw, amqp091.Config{Dial: amqp091.DefaultDial(dialTimeout)})
		if err != nil {
			p.serverErr = fmt.Errorf("no RabbitMQ at %s (set SPECTACLES_AMQP_URL): %s", redact.URL(raw), redact.Text(err.Error(), raw))
			return
		}
		_ = conn.Close()
	})
	return p.serverErr
}

func (p *probe) management() error {
	p.mgmtOnce.Do(func() { p.mgmtErr = probeManagement(ServerURL()) })
	return p.mgmtErr
}

// probeManagement asks the API of raw's server for /api/overview with
// raw's credentials.
func probeManagement(raw string) error {
	base, err := ManagementURL(raw)
	if err != nil {
		return err
	}
	u, err := amqp091.ParseURI(raw)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), httpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/overview", nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(u.Username, u.Password)
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("no RabbitMQ management API at %s (%s): %s", base, enableHint, redact.Text(err.Error(), raw))
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the RabbitMQ management API at %s answers %s to user %q", base, resp.Status, u.Username)
	}
	return nil
}

// missing skips t outside CI and fails it under CI=true.
func missing(t testing.TB, err error) {
	t.Helper()
	brokertest.Missing(t, err)
}

// URL returns the RabbitMQ URL for t, skipping t (outside CI) or failing
// it (under CI=true) when no server answers.
func URL(t testing.TB) string {
	t.Helper()
	if err := shared.server(); err != nil {
		missing(t, err)
	}
	return ServerURL()
}

// ManagementErr reports whether the management API of the test server
// answers with the URL's credentials: nil when it does, else why not.
func ManagementErr() error {
	if err := shared.server(); err != nil {
		return err
	}
	return shared.management()
}

// WithManagement returns the RabbitMQ URL for t after checking that its
// management API answers, skipping t (outside CI) or failing it (under
// CI=true) when the server or the API is missing. Use it in every test
// that needs the API.
func WithManagement(t testing.TB) string {
	t.Helper()
	url := URL(t)
	if err := shared.management(); err != nil {
		missing(t, err)
	}
	return url
}
