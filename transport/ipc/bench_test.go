package ipc

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/core/conformance"
)

// Benchmarks write through a real OS pipe. Payloads are 1 KiB of core.Raw
// that the format carries as it is (a JSON object for JSONLines, a msgpack
// map for Msgpack), so that the codec is not measured. Publishers are many
// goroutines, as in a gateway with many shards.
//
//	go test -bench . -run '^$' ./transport/ipc
const (
	benchPayload    = 1024
	benchPublishers = 64
)

func benchPayloadFor(b *testing.B, f Format) core.Raw {
	b.Helper()
	if f == Msgpack {
		// fixmap, "content", str16 of the rest.
		n := benchPayload - 1 - 8 - 3
		p := appendMsgpackMapHeader(nil, 1)
		p = appendMsgpackStr(p, "content")
		p = appendMsgpackStr(p, strings.Repeat("x", n))
		if len(p) != benchPayload {
			b.Fatalf("payload of %d bytes", len(p))
		}
		return p
	}
	p := core.Raw(`{"content":"` + strings.Repeat("x", benchPayload-14) + `"}`)
	if len(p) != benchPayload {
		b.Fatalf("payload of %d bytes", len(p))
	}
	return p
}

func benchOptions(b *testing.B, group string) core.Options {
	return core.Options{
		Identity: core.Identity{Group: group, Client: "c"},
		Logger:   testLogger(b, slog.LevelWarn),
	}
}

func osPipe(b *testing.B) (*os.File, *os.File) {
	b.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = r.Close()
		_ = w.Close()
	})
	return r, w
}

// BenchmarkPublish: concurrent Publish calls into an OS pipe drained by
// another goroutine.
func BenchmarkPublish(b *testing.B) {
	for _, format := range []Format{JSONLines, Msgpack} {
		b.Run(format.String(), func(b *testing.B) {
			r, w := osPipe(b)
			drained := make(chan struct{})
			go func() {
				_, _ = io.Copy(io.Discard, r)
				close(drained)
			}()
			br := newBroker(b, strings.NewReader(""), w, Config{Options: benchOptions(b, "bench"), Format: format})
			conformance.BenchPublish(b, br, "E", benchPayloadFor(b, format), benchPublishers)
			_ = br.Close()
			_ = w.Close()
			<-drained
		})
	}
}

// BenchmarkEndToEnd: concurrent publishers on one broker, an OS pipe, and
// a consuming broker that handles (and acks) every message.
func BenchmarkEndToEnd(b *testing.B) {
	for _, format := range []Format{JSONLines, Msgpack} {
		b.Run(format.String(), func(b *testing.B) {
			r, w := osPipe(b)
			con := newBroker(b, r, io.Discard, Config{Options: benchOptions(b, "bench"), Format: format})
			pub := newBroker(b, strings.NewReader(""), w, Config{Options: benchOptions(b, "publisher"), Format: format})

			conformance.BenchEndToEnd(b, pub, con, "E", benchPayloadFor(b, format), benchPublishers, 30*time.Second)
		})
	}
}
