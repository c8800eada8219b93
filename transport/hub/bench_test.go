package hub

import (
	"os"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/core/conformance"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// Benchmarks run against a hub in this process, or the one at
// $SPECTACLES_HUB_URL (a `spectacles hub` process, as Redis is one), with
// the payloads and publishers of transport/redis's benchmarks, so that
// the two compare on one machine:
//
//	go test -bench . -run '^$' ./transport/hub ./transport/redis
const (
	benchPayload    = 1024
	benchPublishers = 256
	benchCallers    = 16
)

func benchURL(b *testing.B, scheme string) string {
	if u := os.Getenv("SPECTACLES_HUB_URL"); u != "" {
		return u
	}
	_, addr := startHub(b)
	return scheme + "://" + addr
}

func benchClients(b *testing.B, scheme string) (pub, con *Broker) {
	url := benchURL(b, scheme)
	pub = openClient(b, url, core.Options{Identity: core.Identity{Group: brokertest.Unique("pub"), Client: "p"}})
	con = openClient(b, url, core.Options{Identity: core.Identity{Group: brokertest.Unique("bench"), Client: "c"}})
	return pub, con
}

func benchmarkEndToEnd(b *testing.B, scheme string) {
	pub, con := benchClients(b, scheme)
	conformance.BenchEndToEnd(b, pub, con, brokertest.Unique("bench"), core.Raw(make([]byte, benchPayload)), benchPublishers, 60*time.Second)
}

func benchmarkCall(b *testing.B, scheme string) {
	caller, responder := benchClients(b, scheme)
	conformance.BenchCall(b, caller, responder, brokertest.Unique("call"), core.Raw(`{"n":1}`), benchCallers)
}

func BenchmarkEndToEndWebsocket(b *testing.B) { benchmarkEndToEnd(b, "ws") }
func BenchmarkEndToEndTCP(b *testing.B)       { benchmarkEndToEnd(b, "tcp") }
func BenchmarkCallWebsocket(b *testing.B)     { benchmarkCall(b, "ws") }
func BenchmarkCallTCP(b *testing.B)           { benchmarkCall(b, "tcp") }

func BenchmarkPublish(b *testing.B) {
	pub, _ := benchClients(b, "tcp")
	conformance.BenchPublish(b, pub, brokertest.Unique("bench"), core.Raw(make([]byte, benchPayload)), benchPublishers)
}
