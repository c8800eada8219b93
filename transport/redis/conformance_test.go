package redis

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/core/conformance"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// setupFor connects the conformance suite to the server at url.
func setupFor(t *testing.T, url string, block time.Duration, features conformance.Features, restart func(*testing.T)) conformance.Setup {
	return setupDialer(t, url, nil, block, features, restart)
}

// setupDialer is setupFor with the brokers' connections made by dialer
// (Config.Dialer) when it is not nil.
func setupDialer(t *testing.T, url string, dialer func(context.Context, string, string) (net.Conn, error), block time.Duration, features conformance.Features, restart func(*testing.T)) conformance.Setup {
	raw := rawClient(t, url)
	return conformance.Setup{
		New: func(t *testing.T, opts core.Options) core.Broker {
			if opts.Logger == nil {
				opts.Logger = testLogger(t)
			}
			return openBroker(t, url, Config{Options: opts, Block: block, Dialer: dialer})
		},
		Features: features,
		Restart:  restart,
		Cleanup: func(t *testing.T, events []string) {
			deleteKeys(t, raw, events...)
		},
	}
}

var allFeatures = conformance.Features{Groups: true, Redelivery: true, DeadLetter: true, Restart: true, UnhandledCalls: true}

// TestConformanceRedis runs the suite against the shared real Redis (or,
// outside CI, an embedded server when there is none). A shared server
// cannot be restarted: TestConformanceRedisRestart covers that.
func TestConformanceRedis(t *testing.T) {
	t.Parallel()
	url, real := serverURL(t)
	f := allFeatures
	f.Restart = false
	block := time.Duration(0) // the default; stops use CLIENT UNBLOCK
	if !real {
		block = 100 * time.Millisecond
	}
	conformance.Run(t, setupFor(t, url, block, f, nil))
}

// TestConformanceRedisRestart runs the suite against a redis-server child
// process, which Restart kills and starts again, empty.
func TestConformanceRedisRestart(t *testing.T) {
	t.Parallel()
	child, ok := startChildRedis(t)
	if !ok {
		if brokertest.InCI() {
			t.Fatal("CI=true and redis-server is not installed")
		}
		t.Log("redis-server not installed; running against an embedded server")
		e := startEmbedded(t)
		conformance.Run(t, setupFor(t, e.URL(), 100*time.Millisecond, allFeatures, func(t *testing.T) {
			if err := e.Restart(); err != nil {
				t.Fatal(err)
			}
		}))
		return
	}
	conformance.Run(t, setupFor(t, "redis://"+child.addr(), 0, allFeatures, func(t *testing.T) {
		child.restart(t)
	}))
}

// TestConformanceEmbedded runs the suite against the embedded server, with
// the brokers connected in-process (Server.DialContext), as the spectacles
// command connects to its own embedded server.
func TestConformanceEmbedded(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t)
	conformance.Run(t, setupDialer(t, e.URL(), e.DialContext, 100*time.Millisecond, allFeatures, func(t *testing.T) {
		if err := e.Restart(); err != nil {
			t.Fatal(err)
		}
	}))
}

// TestConformanceEmbeddedTCP runs the suite against the embedded server
// over TCP, as other processes reach the local node.
func TestConformanceEmbeddedTCP(t *testing.T) {
	t.Parallel()
	e := startEmbedded(t)
	conformance.Run(t, setupFor(t, e.URL(), 100*time.Millisecond, allFeatures, func(t *testing.T) {
		if err := e.Restart(); err != nil {
			t.Fatal(err)
		}
	}))
}
