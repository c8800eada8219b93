package amqp

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/core/conformance"
)

// TestConformance runs the suite against the shared RabbitMQ, through a
// TCP proxy that Restart cuts (refusing connections for a while), which is
// a server restart as the driver sees it: the shared server itself is
// never restarted.
//
// The suite's identities map onto AMQP so that its semantics hold: one
// exchange for the whole run, shared by every client (AMQP publishers and
// consumers share their group's exchange), and the suite's group as the
// subgroup, so that two suite groups have separate queues (each its own
// copy) and the clients of one group share a queue (each message once).
func TestConformance(t *testing.T) {
	t.Parallel()
	url, proxy, proxied := proxyServer(t)
	adm, exchange, _ := testExchange(t, url, "spectacles-conformance", "")

	var (
		mu        sync.Mutex
		subgroups = map[string][]string{} // by test name
	)
	conformance.Run(t, conformance.Setup{
		New: func(t *testing.T, opts core.Options) core.Broker {
			mu.Lock()
			subgroups[t.Name()] = append(subgroups[t.Name()], opts.Identity.Group)
			mu.Unlock()
			return openBroker(t, Config{
				Options:  opts,
				URL:      proxied,
				Exchange: exchange,
				Subgroup: opts.Identity.Group,
			})
		},
		Features: conformance.Features{Groups: true, Redelivery: true, DeadLetter: true, Restart: true, UnhandledCalls: true},
		Restart: func(t *testing.T) {
			proxy.restart(500 * time.Millisecond)
		},
		Cleanup: func(t *testing.T, events []string) {
			mu.Lock()
			subs := subgroups[t.Name()]
			mu.Unlock()
			var queues []string
			for _, sub := range subs {
				queues = append(queues, spectaclesQueues(exchange, sub, events...)...)
			}
			adm.deleteQueues(queues...)
		},
	})
}

// TestPresence runs the presence checks with the suite's mapping (one
// exchange, each group a subgroup): the presence events go through that
// exchange. The management API is off for the clients: presence works
// through AMQP alone.
func TestPresence(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	adm, exchange, _ := testExchange(t, url, "spectacles-presence", "")
	var (
		mu        sync.Mutex
		subgroups []string
	)
	conformance.RunPresence(t, conformance.Setup{
		New: func(t *testing.T, opts core.Options) core.Broker {
			mu.Lock()
			subgroups = append(subgroups, opts.Identity.Group)
			mu.Unlock()
			return openBroker(t, Config{Options: opts, URL: url, Exchange: exchange, Subgroup: opts.Identity.Group, ManagementURL: ManagementOff})
		},
		Cleanup: func(t *testing.T, events []string) {
			mu.Lock()
			subs := slices.Clone(subgroups)
			mu.Unlock()
			var queues []string
			for _, sub := range subs {
				queues = append(queues, spectaclesQueues(exchange, sub, append(events, core.PresenceEvents()...)...)...)
			}
			adm.deleteQueues(queues...)
		},
	})
}
