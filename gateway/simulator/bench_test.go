package simulator

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"

	"github.com/spectacles-go/spectacles/gateway/discord"
)

// BenchmarkSyntheticDispatch measures how many MESSAGE_CREATE dispatches
// per second the simulator generates and delivers to one connection that
// reads and decompresses them (the client's inflate is part of the cost).
func BenchmarkSyntheticDispatch(b *testing.B) {
	for _, comp := range []string{"", compressZlib, compressZstd} {
		name := comp
		if name == "" {
			name = "json"
		}
		b.Run(name, func(b *testing.B) { benchDispatch(b, comp) })
	}
}

func benchDispatch(b *testing.B, comp string) {
	const guilds = 50
	s, err := New(Config{
		HeartbeatInterval:        time.Minute,
		HeartbeatTimeout:         -1,
		IdentifyInterval:         -1,
		Guilds:                   guilds,
		TrafficEvents:            []string{"MESSAGE_CREATE"},
		AllowedPrivilegedIntents: discord.IntentMessageContent,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	url := s.GatewayURL() + "/?v=10&encoding=json"
	if comp != "" {
		url += "&compress=" + comp
	}
	ws, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		b.Fatal(err)
	}
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	defer ws.Close()
	identify := `{"op":2,"d":{"token":"` + s.Token() + `","intents":33281,"properties":{"os":"linux","browser":"bench","device":"bench"}}}`
	if err := ws.WriteMessage(websocket.TextMessage, []byte(identify)); err != nil {
		b.Fatal(err)
	}

	// Decompress everything in a second goroutine, as a client would.
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	var inflated int64
	if comp != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r io.Reader
			if comp == compressZlib {
				zr, err := zlib.NewReader(pr)
				if err != nil {
					pr.CloseWithError(err)
					return
				}
				r = zr
			} else {
				zr, err := zstd.NewReader(pr, zstd.WithDecoderConcurrency(1))
				if err != nil {
					pr.CloseWithError(err)
					return
				}
				defer zr.Close()
				r = zr
			}
			n, err := io.Copy(io.Discard, r)
			inflated = n
			pr.CloseWithError(err)
		}()
	}
	var wire, totalWire int64
	read := func(n int) {
		for range n {
			_, data, err := ws.ReadMessage()
			if err != nil {
				b.Fatal(err)
			}
			wire += int64(len(data))
			totalWire += int64(len(data))
			if comp == "" {
				inflated += int64(len(data))
				continue
			}
			if _, err := pw.Write(data); err != nil {
				b.Fatal(err)
			}
		}
	}
	read(2 + guilds) // Hello, READY, GUILD_CREATEs
	wire = 0
	b.ResetTimer()
	start := time.Now()
	s.SetTrafficRate(-1)
	read(b.N)
	elapsed := time.Since(start)
	b.StopTimer()
	s.SetTrafficRate(0)
	_ = ws.NetConn().Close()
	pw.Close()
	wg.Wait()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "dispatches/s")
	b.ReportMetric(float64(wire)/float64(b.N), "wire-B/dispatch")
	if comp != "" && inflated > 0 {
		b.ReportMetric(float64(totalWire)/float64(inflated), "wire/json")
	}
}
