package ipc

import (
	"log/slog"
	"sync"
	"testing"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/core/conformance"
)

// features are what IPC supports. Groups: every process on the pipe sees
// every message, so "every group gets a copy" holds but "at most once per
// group" cannot. Redelivery and Restart: there is no server. DeadLetter:
// only Reject applies (its test needs no redelivery); dead-lettering after
// MaxDeliveries needs Redelivery and is not run.
var features = conformance.Features{DeadLetter: true, Fanout: true}

// hubSetup connects the suite to brokers that talk through one hub per
// test, as processes piped together would.
func hubSetup(format Format, codec core.Codec) conformance.Setup {
	var (
		mu   sync.Mutex
		hubs = map[*testing.T]*hub{}
	)
	return conformance.Setup{
		New: func(t *testing.T, opts core.Options) core.Broker {
			mu.Lock()
			h := hubs[t]
			if h == nil {
				h = newHub()
				hubs[t] = h
				t.Cleanup(func() {
					mu.Lock()
					delete(hubs, t)
					mu.Unlock()
				})
			}
			mu.Unlock()
			if opts.Logger == nil {
				opts.Logger = testLogger(t, slog.LevelInfo)
			}
			if codec != nil {
				opts.Codec = codec
			}
			return h.join(t, Config{Options: opts, Format: format})
		},
		Features: features,
	}
}

func TestConformanceJSONLines(t *testing.T) {
	t.Parallel()
	conformance.Run(t, hubSetup(JSONLines, nil))
}

// TestConformanceJSONLinesJSONCodec: Options.Codec only decodes opaque
// payloads (data_base64); with core.JSON they must still arrive intact.
func TestConformanceJSONLinesJSONCodec(t *testing.T) {
	t.Parallel()
	conformance.Run(t, hubSetup(JSONLines, core.JSON{}))
}

func TestConformanceMsgpack(t *testing.T) {
	t.Parallel()
	conformance.Run(t, hubSetup(Msgpack, nil))
}
