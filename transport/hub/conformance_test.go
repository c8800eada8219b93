package hub

import (
	"sync"
	"testing"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/core/conformance"
)

// features are what the hub gives: groups, redelivery (after
// MessageTimeout, and at once when an instance disconnects), dead letters.
// Not Restart: the hub keeps its queues in memory, so a restart loses
// them (and what is published before a consumer has subscribed again);
// clients do reconnect (TestReconnect).
var features = conformance.Features{Groups: true, Redelivery: true, DeadLetter: true, UnhandledCalls: true}

// setup connects the suite to one hub per test, through scheme ("ws" or
// "tcp").
func setup(scheme string) conformance.Setup {
	var (
		mu   sync.Mutex
		hubs = map[*testing.T]string{}
	)
	return conformance.Setup{
		New: func(t *testing.T, opts core.Options) core.Broker {
			mu.Lock()
			addr, ok := hubs[t]
			if !ok {
				_, addr = startHub(t)
				hubs[t] = addr
				t.Cleanup(func() {
					mu.Lock()
					delete(hubs, t)
					mu.Unlock()
				})
			}
			mu.Unlock()
			return openClient(t, scheme+"://"+addr, opts)
		},
		Features: features,
	}
}

func TestConformanceWebsocket(t *testing.T) {
	t.Parallel()
	conformance.Run(t, setup("ws"))
}

func TestConformanceTCP(t *testing.T) {
	t.Parallel()
	conformance.Run(t, setup("tcp"))
}
