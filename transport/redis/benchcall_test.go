package redis

import (
	"testing"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/core/conformance"
)

// BenchmarkCall measures call round trips (p50, p99) through the test
// server, beside transport/hub's BenchmarkCall*.
func BenchmarkCall(b *testing.B) {
	url, _ := serverURL(b)
	raw := rawClient(b, url)
	ev := testEvent(b, raw)
	caller := benchBroker(b, url, core.Options{Identity: core.Identity{Group: unique("caller"), Client: "c"}})
	responder := benchBroker(b, url, core.Options{Identity: core.Identity{Group: unique("bench"), Client: "r"}})
	conformance.BenchCall(b, caller, responder, ev, core.Raw(`{"n":1}`), 16)
}
